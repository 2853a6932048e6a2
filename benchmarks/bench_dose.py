"""Atom finding against dose, beside the physical limit of precision.

For each lattice and dose, held-out incoherent HAADF images (80 kV, 0.1 Å/px, the lattice's
point defects planted, a new seed) are scored (match within :data:`sklatom.metrics.TOLERANCE`,
the edge band ignored) against every column of the structure, however faint at that dose
(``label_policy="all"``: what is there is what a low-dose method should find; columns too close
to resolve stay "don't care"), for:

* each model of ``--models`` (pretrained names or .safetensors files), untuned; ``lattice``
  stands for the lattice-specific model that serves each row's lattice
  (:data:`sklatom.pretrained.LATTICE_MODELS`), ``lattice:DIR`` for its file
  ``DIR/<name>.safetensors`` (a candidate not shipped yet);
* a classical detector (difference of Gaussians + ``peak_local_max`` on the image normalised by
  robust percentiles), tuned per lattice and dose with the truth in hand: an upper bound on
  what that detector can do, not a blind competitor.

Beside the measured position RMSE of each method stands the Cramér-Rao bound
(:func:`sklatom.cramer_rao.column_position_bounds`): the smallest position error any unbiased
estimator can reach from the counts of the noise-free image (Poisson statistics), as the root
mean square over the labelled columns of the per-coordinate bound. Planted vacancy sites left
empty (no atom within 0.3 Å) count as filled where a method reports an atom within the
tolerance.

    python benchmarks/bench_dose.py                       # 4 lattices, 1e6 .. 5e3 e/Å²
    python benchmarks/bench_dose.py --quick               # smoke run

Writes ``dose_results.json``, ``dose_results.md`` and ``dose_curve.png`` into ``--out``.
"""

import argparse
import itertools
import json
import os
import time
import warnings

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LATTICES = ("graphene", "hBN", "MoS2", "WS2")
DOSES = (1e6, 3e5, 1e5, 5e4, 2e4, 1e4, 5e3)
PIXEL_SIZE = 0.1
#: The classical detector's grid: filter sigma (Å), DoG background width (x sigma), smallest
#: separation (Å) and absolute thresholds on the normalised filtered image.
SIGMA_A = (0.2, 0.3, 0.45, 0.6)
DOG_RATIOS = (2.0, 4.0)
MIN_DISTANCE_A = (0.8, 1.1, 1.5)
THRESHOLDS = (0.0, 0.005, 0.01, 0.015, 0.02, 0.03, 0.045, 0.06, 0.08, 0.1, 0.15, 0.2)


def make_set(lattice, dose, n_images, size, seed):
    """Held-out images of one lattice at one dose: images, coords, uncertain, CRB (Å),
    empty vacancy sites per image."""
    from scipy.spatial import cKDTree

    from sklatom.cramer_rao import column_position_bounds
    from sklatom.datasets import make_lattice_images
    from sklatom.simulation import AcquisitionModel, MultisliceSimulator
    from sklatom.structures import empty_sites

    sim = MultisliceSimulator(method="incoherent", energy=80e3, semiangle_cutoff=25.0,
                              detector="HAADF", pixel_size=PIXEL_SIZE, progress=False)
    blur = 0.15
    X, _, coords, info = make_lattice_images(
        n_images, lattice, shape=(size, size), pixel_size=PIXEL_SIZE, simulator=sim,
        acquisition=AcquisitionModel(dose=dose, blur=blur), label_policy="all", return_info=True,
        random_state=seed)
    settings = sim._settings()
    bounds = []
    for atoms, c in zip(info.structures, coords):
        pos, b = column_position_bounds(atoms, settings, dose=dose, blur=blur)
        # the bounds of the labelled columns
        if len(c) and len(pos):
            bounds.append(b[cKDTree(pos).query(c[:, :2])[1]])
    crb = float(np.sqrt(np.mean(np.concatenate(bounds) ** 2))) if bounds else float("nan")
    return list(X), coords, info.uncertain, crb, [empty_sites(a) / PIXEL_SIZE
                                                  for a in info.structures]


def scores(found, images, coords, uncertain):
    """The model card's protocol (:func:`benchmarks.common.protocol_scores`), classes ignored."""
    from benchmarks.common import protocol_scores

    s = protocol_scores([np.asarray(f)[:, :2] for f in found], [c[:, :2] for c in coords],
                        images, PIXEL_SIZE, dont_care=uncertain)
    return {k: s[k] for k in ("f1", "precision", "recall", "rmse")}


def classical_tuned(images, coords, uncertain):
    """Best F1 of the DoG + peak_local_max grid on this set: (scores, params, atoms)."""
    from benchmarks.classical import filter_image, local_maxima, robust_normalize

    norm = [robust_normalize(x) for x in images]
    best = ({"f1": -1.0}, None, None)
    for sigma_A, ratio in itertools.product(SIGMA_A, DOG_RATIOS):
        filtered = [filter_image(x, "dog", sigma_A / PIXEL_SIZE, dog_ratio=ratio) for x in norm]
        for md in MIN_DISTANCE_A:
            md_px = max(1, int(round(md / PIXEL_SIZE)))
            peaks = [local_maxima(f, md_px, threshold_abs=THRESHOLDS[0], return_values=True)
                     for f in filtered]
            for t in THRESHOLDS:
                found = [p[v > t] for p, v in peaks]
                s = scores(found, images, coords, uncertain)
                if s["f1"] > best[0]["f1"]:
                    best = (s, {"sigma_A": sigma_A, "dog_ratio": ratio, "min_distance_A": md,
                                "threshold": t}, found)
    return best


def lattice_model(model, lattice):
    """The model that scores ``lattice`` for the ``--models`` entry ``model``: itself, or for
    "lattice" / "lattice:DIR" the lattice model serving ``lattice`` (shipped, or its file in
    DIR); None when none serves it (or, for "lattice", none that serves it ships)."""
    from sklatom.pretrained import LATTICE_MODELS, PRETRAINED

    if model != "lattice" and not model.startswith("lattice:"):
        return model
    name = next((n for n, served in LATTICE_MODELS.items() if lattice in served), None)
    if name is None or model == "lattice":
        return name if name in PRETRAINED else None
    return os.path.join(model.partition(":")[2], f"{name}.safetensors")


def model_atoms(model, images):
    from sklatom import FCNSegmenter, load_pretrained
    from sklatom.peaks import PeakFinder

    seg = FCNSegmenter.load(model) if model.endswith(".safetensors") else load_pretrained(model)
    seg.set_params(pixel_size=PIXEL_SIZE, device="cpu")
    return PeakFinder().transform(seg.transform(images))


def run(models, lattices, doses, n_images, size, seed, log=print):
    from sklatom.metrics import TOLERANCE, sites_filled

    def filled(found):
        return sites_filled(found, sites, TOLERANCE, PIXEL_SIZE)[0]

    rows = []
    for (k, lattice), dose in itertools.product(enumerate(lattices), doses):
        t0 = time.perf_counter()
        images, coords, uncertain, crb, sites = make_set(
            lattice, dose, n_images, size, seed + 1000 * k + int(np.log10(dose) * 10))
        row = {"lattice": lattice, "dose": dose, "n_images": n_images,
               "n_atoms": int(sum(len(c) for c in coords)), "crb_A": crb,
               "n_empty_sites": int(sum(len(s) for s in sites)), "methods": {}}
        for model in models:
            if lattice_model(model, lattice) is None:
                continue
            found = model_atoms(lattice_model(model, lattice), images)
            row["methods"][model] = scores(found, images, coords, uncertain) | {
                "vacancies_filled": filled(found)}
        s, params, found = classical_tuned(images, coords, uncertain)
        row["methods"]["classical (tuned)"] = s | {"params": params,
                                                   "vacancies_filled": filled(found)}
        rows.append(row)
        log(f"{lattice:9s} {dose:8.0e}: " + "  ".join(
            f"{m} F1 {r['f1']:.3f} RMSE {r['rmse']:.3f}" for m, r in row["methods"].items())
            + f"  CRB {crb:.3f} Å  ({time.perf_counter() - t0:.0f} s)")
    return rows


def _methods(rows):
    """Every method of any row, in the order they first appear."""
    return list(dict.fromkeys(m for r in rows for m in r["methods"]))


def markdown(rows, meta):
    methods = _methods(rows)
    head = ["lattice", "dose e/Å²", "n atoms"] + [f"{m} F1" for m in methods] + [
        f"{m} RMSE Å" for m in methods] + ["CRB Å"] + [
        f"{m} vacancies filled" for m in methods]
    out = ["# F1 and position error against dose", "",
           f"Held-out incoherent HAADF images, 80 kV, {PIXEL_SIZE} Å/px, "
           f"{meta['n_images']} images of {meta['size']} px per lattice and dose, seed "
           f"{meta['seed']}. CRB: Cramér-Rao bound on the position error (RMS over labelled "
           "columns of the per-coordinate bound). The classical detector is tuned per row with "
           "the truth in hand.", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        m = r["methods"]
        cells = lambda fmt: [fmt(m[k]) if k in m else "—" for k in methods]  # noqa: E731
        out.append("| " + " | ".join(
            [r["lattice"], f"{r['dose']:.0e}", str(r["n_atoms"])]
            + cells(lambda s: f"{s['f1']:.3f}") + cells(lambda s: f"{s['rmse']:.3f}")
            + [f"{r['crb_A']:.3f}"]
            + cells(lambda s: f"{s['vacancies_filled']} / {r['n_empty_sites']}")) + " |")
    return "\n".join(out) + "\n"


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lattices = list(dict.fromkeys(r["lattice"] for r in rows))
    methods = _methods(rows)
    fig, axes = plt.subplots(2, len(lattices), figsize=(4 * len(lattices), 7), squeeze=False)
    for j, lattice in enumerate(lattices):
        sub = [r for r in rows if r["lattice"] == lattice]
        dose = [r["dose"] for r in sub]
        for m in methods:
            value = lambda r, k: r["methods"].get(m, {}).get(k, np.nan)  # noqa: E731
            axes[0, j].semilogx(dose, [value(r, "f1") for r in sub], "o-", label=m)
            axes[1, j].loglog(dose, [value(r, "rmse") for r in sub], "o-", label=m)
        axes[1, j].loglog(dose, [r["crb_A"] for r in sub], "k--", label="Cramér-Rao bound")
        axes[0, j].set_title(lattice)
        axes[0, j].set_ylim(0, 1.02)
        axes[1, j].set_xlabel("dose (e/Å²)")
    axes[0, 0].set_ylabel("F1")
    axes[1, 0].set_ylabel("position RMSE (Å)")
    axes[1, -1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_dose.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="general",
                        help="comma-separated pretrained names, .safetensors files, \"lattice\" "
                             "or \"lattice:DIR\"")
    parser.add_argument("--lattices", default=",".join(LATTICES))
    parser.add_argument("--n-images", type=int, default=4)
    parser.add_argument("--size", type=int, default=192, help="image side in px")
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 doses, 1 image")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    doses = (1e5, 1e4) if args.quick else DOSES
    n_images, size = (1, 96) if args.quick else (args.n_images, args.size)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    lattices = [s.strip() for s in args.lattices.split(",") if s.strip()]
    warnings.simplefilter("ignore")  # image-quality warnings at the lowest doses
    t0 = time.time()
    rows = run(models, lattices, doses, n_images, size, args.seed)
    meta = {"n_images": n_images, "size": size, "seed": args.seed, "models": models,
            "seconds": round(time.time() - t0)}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "dose_results.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    with open(os.path.join(args.out, "dose_results.md"), "w") as f:
        f.write(markdown(rows, meta))
    plot(rows, os.path.join(args.out, "dose_curve.png"))
    print(f"wrote {args.out}/dose_results.{{json,md}} and dose_curve.png "
          f"({meta['seconds']} s)")


if __name__ == "__main__":
    main()
