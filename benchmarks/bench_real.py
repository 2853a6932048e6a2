"""Score sklatom's pretrained pipeline on real images with reference coordinates.

    python benchmarks/bench_real.py DIR [--out OUTDIR] [--sets a,b] [--plots]

``DIR`` holds one subfolder per set; a set is every ``.npz`` file of a subfolder, each with
``image`` (2-D, raw intensities), ``pixel_size_A`` (Å/px), ``coords`` ((N, 2) reference row,
col in px), optionally ``species`` ((N,) strings) and ``label_region_rc`` ((row_min, row_max,
col_min, col_max) px: the references cover only this rectangle, so predicted and reference
atoms are scored only inside it). The images are read from ``DIR``, never copied.

Two methods per set, scored with :func:`sklatom.metrics.atom_scores` on row/col only (classes
ignored), counts pooled over the set's images:

* ``sklatom``: :func:`sklatom_atoms`, the pretrained pipeline with the set's pixel size and
  nothing tuned. A pixel size the model refuses (ValueError) makes the set "refused" (F1 0).
* ``classical (tuned)``: Gaussian filter or difference of Gaussians on the image normalised by
  its 1st and 99.9th percentiles, then ``skimage.feature.peak_local_max`` with an absolute
  threshold; widths and separations in Å, converted to px per image. The grid is searched on
  the set itself, with the reference in hand, for the best pooled F1: an upper bound for such
  a detector, not a fair competitor. The better of the two filters is reported, both are
  listed.

The matching tolerance of a set is :data:`TOLERANCE_A` when it names the set, else
min(1 Å, 0.4 x the median nearest-neighbour distance of the reference atoms).

Writes ``OUTDIR/real_results.md`` and ``OUTDIR/real_results.json`` (default
``benchmarks/results/``); with ``--plots`` one overlay PNG per set as well.
"""

import argparse
import dataclasses
import functools
import glob
import hashlib
import itertools
import json
import os
import platform
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run as a script: this checkout's benchmarks and sklatom
    sys.path.insert(0, REPO)

from benchmarks.classical import filter_image, local_maxima, robust_normalize  # noqa: E402

#: Matching tolerance (Å) of sets whose source states one; other sets use the rule of
#: :func:`set_tolerance`.
TOLERANCE_A = {
    "pt_single_atoms": 1.0,  # the folder's README: "a matching tolerance of about 1 Å"
}
DEFAULT_MAX_TOLERANCE_A = 1.0
DEFAULT_NN_FRACTION = 0.4

#: The classical detector's grid (Å, and threshold on the robust-normalised filtered image).
SIGMA_A = (0.25, 0.4, 0.6, 0.9)
MIN_DISTANCE_A = (0.7, 1.0, 1.6, 2.5, 4.0)
DOG_RATIOS = (1.6, 4.0)  # background Gaussian width / sigma
THRESHOLDS = {
    "gauss": (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    "dog": (0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.045, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3),
}
KIND_NAMES = {"gauss": "gauss+plm", "dog": "DoG+plm"}

PLOT_WARNING = ("the figures show the images of DIR (other people's data): never commit "
                "them")


# ------------------------------------------------------------------ data

@dataclasses.dataclass
class RealImage:
    """One image of a set and its reference atoms (row, col px)."""

    name: str
    image: np.ndarray
    pixel_size: float  # Å/px
    coords: np.ndarray  # (n, 2) row, col px
    species: np.ndarray | None  # (n,) strings
    region: tuple | None  # (row_min, row_max, col_min, col_max) px, inclusive


@dataclasses.dataclass
class Scores:
    """Pooled scores of one method on one set (RMSE over matched atoms, Å)."""

    precision: float
    recall: float
    f1: float
    rmse_A: float
    n_pred: int
    n_true: int
    n_matched: int


@dataclasses.dataclass
class MethodResult:
    """One method on one set: ``status`` is "ok" or "refused" (then ``message`` says why)."""

    method: str
    status: str
    scores: Scores
    seconds_per_image: float | None
    params: dict
    message: str = ""


@dataclasses.dataclass
class SetResult:
    """Both methods on one set, with the set's protocol."""

    name: str
    n_images: int
    pixel_sizes_A: list
    tolerance_A: float
    tolerance_rule: str
    has_region: bool
    sklatom: MethodResult
    classical: MethodResult  # the better of the tuned filters
    classical_by_kind: dict  # kind -> MethodResult
    class_summary: dict | None  # where the references have species


def load_set(folder):
    """The images of one set folder, sorted by file name."""
    images = []
    for path in sorted(glob.glob(os.path.join(folder, "*.npz"))):
        with np.load(path, allow_pickle=False) as d:
            coords = np.asarray(d["coords"], dtype=np.float64).reshape(-1, 2)
            species = np.asarray(d["species"]).astype(str) if "species" in d.files else None
            region = (tuple(float(v) for v in d["label_region_rc"])
                      if "label_region_rc" in d.files else None)
            images.append(RealImage(os.path.splitext(os.path.basename(path))[0],
                                    np.asarray(d["image"], dtype=np.float32),
                                    float(d["pixel_size_A"]), coords, species, region))
    return images


def find_sets(root, names=None):
    """{set name: folder} of the subfolders of ``root`` holding .npz files (or of ``names``)."""
    found = {name: os.path.join(root, name) for name in sorted(os.listdir(root))
             if glob.glob(os.path.join(root, name, "*.npz"))}
    if names is None:
        return found
    missing = [n for n in names if n not in found]
    if missing:
        raise ValueError(f"--sets: no set {missing} in {root}; found {sorted(found)}")
    return {n: found[n] for n in names}


def in_region(coords, region):
    """Mask of the (row, col) points inside the rectangle ``region`` (all when None)."""
    coords = np.asarray(coords, dtype=np.float64)
    coords = coords if coords.ndim == 2 else coords.reshape(-1, 2)
    if region is None:
        return np.ones(len(coords), dtype=bool)
    r0, r1, c0, c1 = region
    return ((coords[:, 0] >= r0) & (coords[:, 0] <= r1)
            & (coords[:, 1] >= c0) & (coords[:, 1] <= c1))


def set_tolerance(name, images):
    """Matching tolerance (Å) of a set and how it was chosen."""
    if name in TOLERANCE_A:
        return TOLERANCE_A[name], "table"
    from scipy.spatial import cKDTree

    nn = []
    for im in images:
        c = im.coords[in_region(im.coords, im.region)]
        if len(c) > 1:
            nn.append(cKDTree(c).query(c, k=2)[0][:, 1] * im.pixel_size)
    if not nn:
        return DEFAULT_MAX_TOLERANCE_A, f"{DEFAULT_MAX_TOLERANCE_A:g} Å (too few atoms for NN)"
    median = float(np.median(np.concatenate(nn)))
    tol = min(DEFAULT_MAX_TOLERANCE_A, DEFAULT_NN_FRACTION * median)
    return tol, (f"min({DEFAULT_MAX_TOLERANCE_A:g} Å, {DEFAULT_NN_FRACTION:g} x median NN "
                 f"{median:.2f} Å)")


# ------------------------------------------------------------------ scoring

def score_set(found, images, tolerance):
    """Pooled scores of ``found`` ((k, 2+) row, col px per image) inside each image's region."""
    from sklatom.metrics import atom_scores

    n_pred = n_true = n_matched = 0
    sq = 0.0
    for pred, im in zip(found, images):
        pred = np.asarray(pred, dtype=np.float64)
        pred = (pred if pred.ndim == 2 else pred.reshape(-1, 2))[:, :2]
        pred = pred[in_region(pred, im.region)]
        true = im.coords[in_region(im.coords, im.region)]
        s = atom_scores(pred, true, tolerance=tolerance, pixel_size=im.pixel_size,
                        zero_division=0.0)
        n_pred, n_true, n_matched = n_pred + s["n_pred"], n_true + s["n_true"], \
            n_matched + s["n_matched"]
        if s["n_matched"]:
            sq += s["rmse"] ** 2 * s["n_matched"]
    p = n_matched / n_pred if n_pred else 0.0
    r = n_matched / n_true if n_true else 0.0
    return Scores(p, r, 2 * p * r / (p + r) if p + r else 0.0,
                  float(np.sqrt(sq / n_matched)) if n_matched else float("nan"),
                  n_pred, n_true, n_matched)


# ------------------------------------------------------------------ sklatom

#: The model the benchmark runs: a pretrained name or a .safetensors path (``--model``).
MODEL = "general"


@functools.lru_cache(maxsize=2)
def _pretrained(model=None):
    """The pipeline (:class:`sklatom.AtomFinder`) of ``model`` (default :data:`MODEL`),
    loaded once and run once (warm-up, untimed)."""
    from sklatom.finder import AtomFinder

    finder = AtomFinder(model or MODEL, device="cpu").fit()
    finder.find(np.random.default_rng(0).random((1, 64, 64), dtype=np.float32))
    return finder


def sklatom_atoms(image, pixel_size):
    """sklatom's pretrained pipeline on one raw image: the atoms it reports.

    The one place of the pipeline in this benchmark (model loaded once per process).

    Parameters
    ----------
    image : ndarray of shape (height, width)
        Raw intensities.
    pixel_size : float
        Å/px of ``image``.

    Returns
    -------
    atoms : ndarray of shape (k, 3)
        Row (px), column (px) and class index (>= 1, see ``load_pretrained().classes_``).

    Raises
    ------
    ValueError
        If the model refuses ``pixel_size`` (outside the range it can rescale from).
    """
    return _pretrained().find(np.asarray(image)[np.newaxis], pixel_size)[0][0]


def run_sklatom(images, tolerance):
    """sklatom on every image of a set: (MethodResult, atoms per image or None if refused)."""
    _pretrained()  # loading and warm-up are not timed
    found, seconds = [], []
    for im in images:
        t0 = time.perf_counter()
        try:
            found.append(sklatom_atoms(im.image, im.pixel_size))
        except ValueError as exc:
            n_true = sum(int(in_region(im.coords, im.region).sum()) for im in images)
            return MethodResult("sklatom", "refused",
                                Scores(0.0, 0.0, 0.0, float("nan"), 0, n_true, 0), None,
                                {}, message=f"{im.name}: {exc}"), None
        seconds.append(time.perf_counter() - t0)
    return MethodResult("sklatom", "ok", score_set(found, images, tolerance),
                        float(np.mean(seconds)),
                        {"pipeline": "AtomFinder() defaults: the pretrained model, images "
                                     "rescaled from their pixel size, PeakFinder with classes "
                                     "checked against column intensities"}), found


# ------------------------------------------------------------------ classical, tuned per set

def _px(pixel_size, sigma_A, min_distance_A):
    return sigma_A / pixel_size, max(1, int(round(min_distance_A / pixel_size)))


def classical_atoms(image, pixel_size, kind, sigma_A, min_distance_A, threshold,
                    dog_ratio=None):
    """The classical detector on one raw image: (k, 2) row, col px.

    Parameters
    ----------
    image : ndarray of shape (height, width)
        Raw intensities; normalised by their 1st and 99.9th percentiles.
    pixel_size : float
        Å/px of ``image``.
    kind : {"gauss", "dog"}
        Gaussian filter, or difference of Gaussians (``sigma_A`` minus ``dog_ratio * sigma_A``).
    sigma_A : float
        Filter width in Å.
    min_distance_A : float
        Smallest separation of two atoms in Å (rounded to px, at least 1 px).
    threshold : float
        Absolute threshold on the filtered normalised image.
    dog_ratio : float, default=None
        Background width of ``"dog"`` in units of ``sigma_A``.
    """
    sigma, md = _px(pixel_size, sigma_A, min_distance_A)
    extra = {} if kind == "gauss" else {"dog_ratio": dog_ratio}
    return local_maxima(filter_image(robust_normalize(image), kind, sigma, **extra), md,
                        threshold_abs=threshold)


def tune_classical(images, tolerance, kind):
    """Best pooled F1 of ``kind`` over the grid: (F1, params, number of settings tried).

    Each (sigma, min_distance, dog_ratio) runs ``peak_local_max`` once per image at the
    lowest threshold; a higher threshold keeps the peaks above it (exactly what
    ``peak_local_max`` would return, see :func:`benchmarks.classical.local_maxima`).
    """
    thresholds = THRESHOLDS[kind]
    norm = [robust_normalize(im.image) for im in images]
    ratios = (None,) if kind == "gauss" else DOG_RATIOS
    best, n_tried = (-1.0, None), 0
    for sigma_A, dog_ratio in itertools.product(SIGMA_A, ratios):
        extra = {} if dog_ratio is None else {"dog_ratio": dog_ratio}
        filtered = [filter_image(x, kind, sigma_A / im.pixel_size, **extra)
                    for x, im in zip(norm, images)]
        for min_distance_A in MIN_DISTANCE_A:
            peaks = [local_maxima(f, _px(im.pixel_size, sigma_A, min_distance_A)[1],
                                  threshold_abs=thresholds[0], return_values=True)
                     for f, im in zip(filtered, images)]
            for t in thresholds:
                f1 = score_set([c[v > t] for c, v in peaks], images, tolerance).f1
                n_tried += 1
                if f1 > best[0]:  # the first setting on a tie
                    best = (f1, dict(kind=kind, sigma_A=sigma_A, min_distance_A=min_distance_A,
                                     threshold=t, dog_ratio=dog_ratio))
    return best[0], best[1], n_tried


def run_classical(images, tolerance, kind):
    """Tune ``kind`` on the set, then run the tuned detector on it: MethodResult, atoms."""
    t0 = time.perf_counter()
    _, params, n_tried = tune_classical(images, tolerance, kind)
    tune_seconds = time.perf_counter() - t0
    found, seconds = [], []
    for im in images:
        t0 = time.perf_counter()
        found.append(classical_atoms(im.image, im.pixel_size, **params))
        seconds.append(time.perf_counter() - t0)
    params = {k: v for k, v in params.items() if v is not None}
    params.update(n_settings_tried=n_tried, tuning_seconds=round(tune_seconds, 1))
    return MethodResult(KIND_NAMES[kind], "ok", score_set(found, images, tolerance),
                        float(np.mean(seconds)), params), found


# ------------------------------------------------------------------ classes (informational)

def class_summary(images, found, tolerance, class_names):
    """Reference species against sklatom's classes inside the regions: counts per reference
    species, per sklatom class, and of matched pairs (species -> class -> count)."""
    from sklatom.metrics import match_atoms

    if any(im.species is None for im in images):
        return None
    ref = {}
    for im in images:
        for s in im.species[in_region(im.coords, im.region)].tolist():
            ref[s] = ref.get(s, 0) + 1
    out = dict(reference=ref)
    if found is None:
        return out
    per_class, pairs = {}, {}
    for atoms, im in zip(found, images):
        atoms = atoms[in_region(atoms, im.region)]
        keep = in_region(im.coords, im.region)
        true, species = im.coords[keep], im.species[keep]
        for c in atoms[:, 2].astype(int):
            per_class[class_names[c]] = per_class.get(class_names[c], 0) + 1
        m = match_atoms(atoms[:, :2], true, tolerance=tolerance, pixel_size=im.pixel_size)
        for pi, ti in zip(m.pred_index, m.true_index):
            row = pairs.setdefault(str(species[ti]), {})
            name = class_names[int(atoms[pi, 2])]
            row[name] = row.get(name, 0) + 1
    return dict(reference=ref, sklatom=per_class, matched=pairs)


# ------------------------------------------------------------------ one set, all sets

def evaluate_set(name, images, log=print):
    """Both methods on one set: a :class:`SetResult` (and the atoms, for the plots)."""
    tol, rule = set_tolerance(name, images)
    log(f"{name}: {len(images)} images, tolerance {tol:.2f} Å ({rule})")
    t0 = time.perf_counter()
    sk, sk_found = run_sklatom(images, tol)
    log(f"  sklatom: {sk.status}, F1 {sk.scores.f1:.3f} ({time.perf_counter() - t0:.1f} s)"
        + (f": {sk.message}" if sk.message else ""))
    by_kind, found_by_kind = {}, {}
    for kind in THRESHOLDS:
        t0 = time.perf_counter()
        by_kind[kind], found_by_kind[kind] = run_classical(images, tol, kind)
        log(f"  {KIND_NAMES[kind]} tuned: F1 {by_kind[kind].scores.f1:.3f} "
            f"{by_kind[kind].params} ({time.perf_counter() - t0:.1f} s)")
    best = max(by_kind, key=lambda k: by_kind[k].scores.f1)  # first kind on a tie
    result = SetResult(name, len(images), sorted({im.pixel_size for im in images}), tol, rule,
                       any(im.region is not None for im in images), sk, by_kind[best], by_kind,
                       class_summary(images, sk_found, tol, _pretrained().classes_))
    return result, sk_found, found_by_kind[best]


def evaluate(root, sets=None, plots_dir=None, log=print):
    """Every set of ``root`` (or the named ``sets``): a list of :class:`SetResult`.

    With ``plots_dir``, an overlay PNG of each set's first image is written there.
    """
    results = []
    for name, folder in find_sets(root, sets).items():
        images = load_set(folder)
        result, sk_found, cl_found = evaluate_set(name, images, log)
        results.append(result)
        if plots_dir:
            path = os.path.join(plots_dir, f"real_overlay_{name}.png")
            plot_overlay(images[0], sk_found[0] if sk_found else None, cl_found[0], result,
                         path)
            log(f"  wrote {path}")
    return results


# ------------------------------------------------------------------ output

def _f(v, spec=".3f"):
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)


def _params_text(r):
    p = r.params
    text = (f"sigma {p['sigma_A']:g} Å, min_distance {p['min_distance_A']:g} Å, "
            f"threshold {p['threshold']:g}")
    return text + (f", background {p['dog_ratio']:g} x sigma" if "dog_ratio" in p else "")


def markdown(results, meta):
    """The report: scores table, tuned parameters, class summary, notes."""
    lines = ["# sklatom on real images with reference coordinates", "",
             f"`{meta['command']}`, {meta['runtime_seconds']} s, {meta['torch_threads']} torch "
             "thread(s). Precision/recall/F1 pooled over a set's images, classes ignored, "
             "matching tolerance per set (column tol); only atoms inside `label_region_rc` "
             "count where a set has one. RMSE of matched atoms in Å; s/image is the method's "
             "own time per image (model loading and tuning excluded).", "",
             "**classical (tuned)** is tuned on each set with the reference in hand (grid "
             "search for the best pooled F1): an upper bound for a Gaussian/DoG + "
             "`peak_local_max` detector, not a blind competitor; sklatom runs untuned.", "",
             "| set | images | Å/px | tol Å | method | precision | recall | F1 | RMSE Å | "
             "n_pred | n_true | s/image |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for r in results:
        ps = ", ".join(f"{p:.3g}" for p in r.pixel_sizes_A)
        for label, m in (("sklatom", r.sklatom),
                         (f"classical (tuned): {r.classical.method}", r.classical)):
            s = m.scores
            if m.status != "ok":
                notes.append(f"{r.name}, {m.method}: {m.status}: {m.message}")
                label += f" **{m.status}** [{len(notes)}]"
            lines.append(f"| {r.name} | {r.n_images} | {ps} | {r.tolerance_A:.2f} | {label} | "
                         f"{_f(s.precision)} | {_f(s.recall)} | {_f(s.f1)} | {_f(s.rmse_A)} | "
                         f"{s.n_pred} | {s.n_true} | {_f(m.seconds_per_image)} |")
    lines += ["", "### Tolerance per set", ""]
    lines += [f"- {r.name}: {r.tolerance_A:.2f} Å ({r.tolerance_rule})"
              + ("; scored inside `label_region_rc`" if r.has_region else "") for r in results]
    lines += ["", "### Tuned classical detectors (best pooled F1 on the set itself)", "",
              "| set | filter | F1 | parameters | settings tried |", "|---|---|---|---|---|"]
    for r in results:
        for kind, m in r.classical_by_kind.items():
            best = " (best)" if m is r.classical else ""
            lines.append(f"| {r.name} | {m.method}{best} | {_f(m.scores.f1)} | "
                         f"{_params_text(m)} | {m.params['n_settings_tried']} |")
    summaries = [r for r in results if r.class_summary]
    if summaries:
        lines += ["", "### Classes (informational; reference species against sklatom's "
                  "classes, inside the regions)", ""]
        for r in summaries:
            c = r.class_summary
            text = f"- {r.name}: reference {c['reference']}"
            if "sklatom" in c:
                text += f"; sklatom found per class {c['sklatom']}; matched pairs " + \
                    "; ".join(f"{sp} -> {row}" for sp, row in c["matched"].items())
            else:
                text += f"; sklatom {r.sklatom.status}"
            lines.append(text)
    if notes:
        lines += ["", "### Notes", ""] + [f"{i}. {n}" for i, n in enumerate(notes, 1)]
    lines += ["", "### Grid of the classical detectors", "",
              f"Image normalised by its 1st/99.9th percentiles; sigma {SIGMA_A} Å, "
              f"min_distance {MIN_DISTANCE_A} Å (rounded to px, >= 1 px), DoG background width "
              f"{DOG_RATIOS} x sigma, absolute thresholds gauss {THRESHOLDS['gauss']}, DoG "
              f"{THRESHOLDS['dog']}.", ""]
    return "\n".join(lines)


def plot_overlay(im, sk_found, cl_found, result, path):
    """The image with the reference, sklatom and the tuned classical detections."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 7 * im.image.shape[0] / im.image.shape[1]))
    ax.imshow(np.clip(robust_normalize(im.image), 0, 1), cmap="gray")
    ax.scatter(im.coords[:, 1], im.coords[:, 0], s=40, facecolors="none", edgecolors="lime",
               linewidths=0.8, label=f"reference ({len(im.coords)})")
    if sk_found is not None:
        ax.scatter(sk_found[:, 1], sk_found[:, 0], s=12, marker="x", c="red", linewidths=0.6,
                   label=f"sklatom ({len(sk_found)})")
    ax.scatter(cl_found[:, 1], cl_found[:, 0], s=18, marker="+", c="cyan", linewidths=0.6,
               label=f"{result.classical.method} tuned ({len(cl_found)})")
    if im.region is not None:
        r0, r1, c0, c1 = im.region
        ax.add_patch(matplotlib.patches.Rectangle((c0, r0), c1 - c0, r1 - r0, fill=False,
                                                  edgecolor="yellow", linestyle="--"))
    sk = (f"F1 {result.sklatom.scores.f1:.2f}" if result.sklatom.status == "ok"
          else result.sklatom.status)
    ax.set_title(f"{result.name} / {im.name}: sklatom {sk}, tuned {result.classical.method} "
                 f"F1 {result.classical.scores.f1:.2f} (whole set)", fontsize=9)
    ax.legend(loc="lower right", fontsize=7)
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python benchmarks/bench_real.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", metavar="DIR", help="folder with one subfolder of .npz per set")
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"),
                        help="output folder (default: benchmarks/results/)")
    parser.add_argument("--sets", default=None, help="comma-separated set names (default: all)")
    parser.add_argument("--plots", action="store_true",
                        help="also write real_overlay_<set>.png per set into --out; "
                             + PLOT_WARNING)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--model", default="general",
                        help="pretrained name or .safetensors file to score (default: the "
                             "shipped general model)")
    args = parser.parse_args(argv)
    global MODEL
    MODEL = args.model

    import torch

    torch.set_num_threads(args.threads)
    t_start = time.time()
    os.makedirs(args.out, exist_ok=True)
    sets = [s.strip() for s in args.sets.split(",") if s.strip()] if args.sets else None
    if args.plots:
        print(f"warning: --plots: {PLOT_WARNING}")
    try:
        results = evaluate(args.dir, sets, plots_dir=args.out if args.plots else None,
                           log=lambda msg: print(msg, flush=True))
    except ValueError as exc:
        parser.error(str(exc))
    from sklatom.pretrained import PRETRAINED

    model_file = (os.path.join(REPO, "sklatom", "models", PRETRAINED[args.model][0])
                  if args.model in PRETRAINED else args.model)
    with open(model_file, "rb") as f:
        model_sha = hashlib.sha256(f.read()).hexdigest()
    meta = dict(
        command="python benchmarks/bench_real.py " + " ".join(
            argv if argv is not None else sys.argv[1:]),
        runtime_seconds=round(time.time() - t_start), python=platform.python_version(),
        torch_threads=args.threads, sklatom_model_sha256=model_sha,
        tolerance_table_A=TOLERANCE_A,
        tolerance_rule=f"min({DEFAULT_MAX_TOLERANCE_A} Å, {DEFAULT_NN_FRACTION} x median "
                       "nearest-neighbour distance of the reference atoms)",
        classical="tuned on each set with the reference in hand (best pooled F1 on the grid): "
                  "an upper bound for such a detector",
        grid=dict(sigma_A=SIGMA_A, min_distance_A=MIN_DISTANCE_A, dog_ratio=DOG_RATIOS,
                  thresholds=THRESHOLDS, normalisation="1st/99.9th percentiles"))
    text = markdown(results, meta)
    with open(os.path.join(args.out, "real_results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "real_results.json"), "w") as f:
        json.dump(dict(meta=meta, sets=[dataclasses.asdict(r) for r in results]), f, indent=1,
                  default=float)
    print()
    print(text)
    print(f"wrote {args.out}/real_results.md, real_results.json in "
          f"{time.time() - t_start:.0f} s")
    return results


if __name__ == "__main__":
    main()
