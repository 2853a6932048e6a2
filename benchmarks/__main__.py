"""Evaluate sklatom's pretrained pipeline against classical baselines and peer packages.

    python -m benchmarks                 # the full benchmark (run from the repository root)
    python -m benchmarks --quick         # a tiny smoke run (96 px, one image per set, no PRISM)
    python -m benchmarks --peers atomap  # only some peers ("none" for sklatom + baselines)

Held-out test sets with ground truth are simulated here with seeds the training never used
(training: 0, 1000, 2000, 3000; here: 5000+ for test, 7000+ for validation):

* dose sets: graphene, hBN, MoS2, SrTiO3-001 at 3e7, 5e6, 1e6 and 3e5 e/Å² (3e5 is below the
  training range of 1e6 to 3e7), incoherent simulator at 80 kV, recording inside the training
  ranges (blur 0.15 Å, scan jitter 0.02 Å, drift 0.001 Å/row, background 0.2);
* distribution-shift sets (5e6 e/Å², settings outside the training ranges): 200 kV (training:
  60/80/100 kV), defocus 60 Å (training: ±20 Å), strong scan distortion (jitter 0.08 Å, drift
  0.006 Å/row; training: up to 0.04 Å and 0.002 Å/row), and PRISM multislice at 200 kV
  (128 px images, a third as many as the other sets: PRISM is slow; training saw PRISM only
  at 60-100 kV).

Methods, all scored with the same :func:`sklatom.metrics.atom_scores` (0.5 Å tolerance, a 0.5 Å
"don't care" band along the image edge, classes ignored):

* ``sklatom``: ``load_pretrained()`` then ``PeakFinder()`` with its defaults (nothing tuned);
* ``LoG``: ``skimage.feature.blob_log`` on the raw image, tuned per lattice on the validation set;
* ``gauss+plm``: Gaussian filter then ``skimage.feature.peak_local_max``, tuned the same way;
* ``atomap``: in its own virtualenv, ``get_atom_positions`` (separation and threshold tuned per
  lattice on the validation set) then centre-of-mass and 2-D Gaussian refinement;
* ``atomai``: in its own virtualenv, AtomAI 0.8.1 ``Segmentor("Unet")`` trained on sklatom's
  training set for the wall time sklatom's model trained, then its ``Locator``.

Results (CSV, JSON, Markdown tables, F1-versus-dose plot) go to ``--out``.
"""

import argparse
import csv
import hashlib
import itertools
import json
import os
import platform
import sys
import tempfile
import time
import traceback

import numpy as np

from benchmarks import peers
from benchmarks.classical import log_detect, plm_detect
from benchmarks.common import protocol_scores
from sklatom.metrics import EDGE_BAND as IGNORE_BORDER, TOLERANCE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIXEL_SIZE = 0.1  # Å/px, the pretrained model's sampling
LATTICES = ("graphene", "hBN", "MoS2", "SrTiO3-001")
DOSES = (3e7, 5e6, 1e6, 3e5)  # e/Å², high to low
SHIFT_DOSE = 5e6
TEST_SEED, VALIDATION_SEED = 5000, 7000  # training used 0/1000/2000/3000
METHODS = ("sklatom", "LoG", "gauss+plm", "atomap", "atomai")

#: Recording inside the training ranges (used by the dose sets and the validation set).
BASE_ACQUISITION = dict(blur=0.15, scan_jitter=0.02, drift=(0.001, 0.001), background=0.2)


def conditions(quick):
    """Test conditions: name -> kind, dose, simulator and acquisition settings, image size."""
    out = {}
    for dose in (DOSES if not quick else (5e6, 3e5)):
        out[f"dose {dose:.0e}"] = dict(kind="dose", dose=dose, simulator={},
                                       acquisition=BASE_ACQUISITION, size=None)
    out["shift: 200 kV"] = dict(kind="shift", dose=SHIFT_DOSE, simulator={"energy": 200e3},
                                acquisition=BASE_ACQUISITION, size=None)
    out["shift: defocus 60 Å"] = dict(kind="shift", dose=SHIFT_DOSE, simulator={"defocus": 60.0},
                                      acquisition=BASE_ACQUISITION, size=None)
    out["shift: scan distortion"] = dict(
        kind="shift", dose=SHIFT_DOSE, simulator={},
        acquisition=dict(BASE_ACQUISITION, scan_jitter=0.08, drift=(0.006, 0.006)), size=None)
    out["shift: PRISM 200 kV"] = dict(
        kind="shift", dose=SHIFT_DOSE,
        simulator={"method": "prism", "energy": 200e3, "n_jobs": 2},
        acquisition=BASE_ACQUISITION, size=128)
    return out


def simulate(lattice, n_images, seed, shape, dose, simulator, acquisition):
    """Images and ground-truth coordinates (row, col px, class) of one lattice and condition."""
    from sklatom.datasets import make_lattice_images
    from sklatom.pretrained import GENERAL_LABELS
    from sklatom.simulation import AcquisitionModel, MultisliceSimulator

    sim = MultisliceSimulator(**{"method": "incoherent", "progress": False, **simulator})
    acq = AcquisitionModel(dose=dose, **acquisition)
    X, _, coords = make_lattice_images(n_images, lattice, shape=shape, pixel_size=PIXEL_SIZE,
                                       labels=GENERAL_LABELS, simulator=sim, acquisition=acq,
                                       random_state=seed)
    return list(X), coords


def make_sets(quick, n_images, lattices, skip_prism, log):
    """The test sets (condition x lattice) and the validation set (per lattice, all doses)."""
    size = 96 if quick else 256
    test = []
    for ci, (cond, spec) in enumerate(conditions(quick).items()):
        if (skip_prism or quick) and "PRISM" in cond:  # PRISM takes minutes even small
            continue
        shape = (min(size, spec["size"] or size),) * 2
        # PRISM images are slow: a third as many
        n = 1 if quick else (max(1, n_images // 3) if spec["size"] else n_images)
        for li, lattice in enumerate(lattices):
            t0 = time.time()
            X, c = simulate(lattice, n, TEST_SEED + 100 * ci + li, shape, spec["dose"],
                            spec["simulator"], spec["acquisition"])
            test.append(dict(condition=cond, kind=spec["kind"], dose=spec["dose"],
                             lattice=lattice, images=X, coords=c))
            log(f"  test  {cond:24s} {lattice:11s} {n} x {shape[0]} px "
                f"({time.time() - t0:.1f} s)")
    validation = {}
    for li, lattice in enumerate(lattices):
        X, c = [], []
        for di, dose in enumerate(DOSES):
            x, cc = simulate(lattice, 1, VALIDATION_SEED + 100 * di + li, (size, size), dose, {},
                             BASE_ACQUISITION)
            X += x
            c += cc
        validation[lattice] = (X, c)
    log(f"  validation: {len(DOSES)} images per lattice (one per dose)")
    return test, validation


def score(pred, true, images):
    """Scores with classes ignored (the peers have none of sklatom's classes)."""
    s = protocol_scores([np.asarray(p)[:, :2] for p in pred], [t[:, :2] for t in true],
                        images, PIXEL_SIZE)
    del s["class_accuracy"]
    return s


# ------------------------------------------------------------------ methods in this process

class Sklatom:
    """The pretrained pipeline (sklatom.AtomFinder), defaults only."""

    name = "sklatom"

    def __init__(self):
        from sklatom.finder import AtomFinder

        self.finder = AtomFinder(device="cpu", pixel_size=PIXEL_SIZE).fit()
        self.params = "AtomFinder(pixel_size=0.1) defaults (the pretrained model)"
        self.find([np.random.default_rng(0).random((64, 64), dtype=np.float32)])  # warm-up

    def find_many(self, sets):
        return [self.find(images) for images, _ in sets]

    def find(self, images, lattice=None):
        coords, seconds = [], []
        for img in images:
            t0 = time.perf_counter()
            coords.append(self.finder.transform(img[None])[0])
            seconds.append(time.perf_counter() - t0)
        return coords, seconds


class Classical:
    """A scikit-image detector with a parameter grid tuned per lattice on the validation set."""

    def __init__(self, name, grid, detect):
        self.name, self.grid, self.detect = name, grid, detect
        self.best = {}

    def tune(self, validation):
        for lattice, (X, c) in validation.items():
            results = []
            for params in self.grid:
                pred = [self.detect(x, **params) for x in X]
                results.append((score(pred, c, X)["f1"], params))
            f1, self.best[lattice] = max(results, key=lambda r: r[0])
        return self

    @property
    def params(self):
        return "; ".join(f"{k}: {v}" for k, v in self.best.items())

    def find_many(self, sets):
        return [self.find(images, lattice) for images, lattice in sets]

    def find(self, images, lattice):
        coords, seconds = [], []
        for img in images:
            t0 = time.perf_counter()
            coords.append(self.detect(img, **self.best[lattice]))
            seconds.append(time.perf_counter() - t0)
        return coords, seconds


def classical_methods(quick):
    log_grid = [dict(min_sigma=a, max_sigma=b, threshold=t)
                for (a, b), t in itertools.product(((1, 3), (2, 5), (3, 8)),
                                                   (0.01, 0.03, 0.06, 0.1, 0.2))]
    plm_grid = [dict(sigma=s, min_distance=d, threshold_rel=t)
                for s, d, t in itertools.product((1, 2, 3, 4), (4, 7, 10),
                                                 (0.02, 0.05, 0.1, 0.2, 0.3, 0.45))]
    if quick:
        log_grid, plm_grid = log_grid[::4], plm_grid[::6]
    return [Classical("LoG", log_grid, log_detect), Classical("gauss+plm", plm_grid, plm_detect)]


# ------------------------------------------------------------------ peers in their venvs

def _write_request(path, **arrays):
    np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})


def _read_result(path):
    """Coordinates and seconds per image; an image the peer failed on raises for its set."""
    with np.load(path, allow_pickle=False) as d:
        coords = [d[f"coords_{i}"] for i in range(int(d["n"]))]
        errors = [str(e) for e in d["errors"]] if "errors" in d.files else [""] * len(coords)
        return coords, list(d["seconds"]), errors


def _split(coords, seconds, errors, sets):
    """Cut the flat per-image results of one peer call back into (coords, seconds) per set;
    a set with an image the peer failed on gets the PeerUnavailable instead."""
    out, k = [], 0
    for imgs, _ in sets:
        sl = slice(k, k + len(imgs))
        bad = [e for e in errors[sl] if e]
        out.append(peers.PeerUnavailable(bad[0]) if bad else (coords[sl], seconds[sl]))
        k += len(imgs)
    return out


class Atomap:
    name = "atomap"
    SEPARATIONS = (4, 6, 8, 10, 12)  # px
    THRESHOLDS = (0.02, 0.15, 0.3)  # 0.02 is atomap's default

    def __init__(self, cache, workdir, log):
        self.python = peers.ensure_venv("atomap", cache, log=log)
        self.version = peers.peer_version(self.python, "atomap")
        self.workdir, self.best = workdir, {}

    def _call(self, images, seps, thrs, refine, timeout):
        """One atomap subprocess; images of different sizes go in separate calls."""
        coords, secs, errs = [None] * len(images), [None] * len(images), [""] * len(images)
        for shape in dict.fromkeys(x.shape for x in images):
            idx = [i for i, x in enumerate(images) if x.shape == shape]
            req = os.path.join(self.workdir, "atomap_request.npz")
            res = os.path.join(self.workdir, "atomap_result.npz")
            _write_request(req, images=np.stack([images[i] for i in idx]).astype(np.float32),
                           separation=[seps[i] for i in idx],
                           threshold_rel=[thrs[i] for i in idx], refine=int(refine))
            peers.run_in_venv(self.python, "atomap-find", req, res, timeout)
            c, t, e = _read_result(res)
            for j, i in enumerate(idx):
                coords[i], secs[i], errs[i] = c[j], t[j], e[j]
        return coords, secs, errs

    def tune(self, validation):
        """Separation and threshold per lattice, by peak finding alone (one subprocess)."""
        combos = list(itertools.product(self.SEPARATIONS, self.THRESHOLDS))
        imgs, seps, thrs, keys = [], [], [], []
        for lattice, (X, _) in validation.items():
            for sep, thr in combos:
                for x in X:
                    imgs.append(x)
                    seps.append(sep)
                    thrs.append(thr)
                    keys.append((lattice, sep, thr))
        coords, _, _ = self._call(imgs, seps, thrs, refine=False, timeout=1800)
        for lattice, (X, c) in validation.items():
            results = []
            for sep, thr in combos:
                pred = [p for p, k in zip(coords, keys) if k == (lattice, sep, thr)]
                results.append((score(pred, c, X)["f1"], (sep, thr)))
            self.best[lattice] = max(results, key=lambda r: r[0])[1]
        return self

    @property
    def params(self):
        return (f"atomap {self.version}; " + "; ".join(
            f"{k}: separation={s} px, threshold_rel={t}" for k, (s, t) in self.best.items())
            + "; then centre-of-mass + 2-D Gaussian refinement")

    def find_many(self, sets):
        images = [x for imgs, _ in sets for x in imgs]
        seps = [self.best[lat][0] for imgs, lat in sets for _ in imgs]
        thrs = [self.best[lat][1] for imgs, lat in sets for _ in imgs]
        return _split(*self._call(images, seps, thrs, refine=True, timeout=5400), sets)


def _training_data(path, quick, log):
    """sklatom's training images and masks, cut into 128 x 128 px tiles for AtomAI (which
    needs one image size). Read from ``path``, the training-set cache of
    scripts/train_pretrained.py; when missing, simulated with that script's settings and seed
    (about 8 minutes) and stored there for the next run."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "train_pretrained", os.path.join(REPO, "scripts", "train_pretrained.py"))
    tp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tp)
    if quick:
        X, y, _ = tp.make_training_set(12, 1, 0, 0, verbose=False)
        source = "12 scenes and 1 lattice image per lattice (--quick)"
    else:
        if not os.path.exists(path):
            log(f"  simulating sklatom's training set for AtomAI (cached in {path})")
            X, y, meta = tp.make_training_set(tp.N_SCENES, tp.N_CLASSIC_PER_LATTICE,
                                              tp.N_PRISM_PER_LATTICE, 0, verbose=False)
            tp.save_training_set(path, X, y, meta)
        X, y, _ = tp.load_training_set(path)
        source = f"{path} ({len(X)} images, the shipped model's training set)"
    tiles, masks = [], []
    for x, m in zip(X, y):
        for r in range(0, x.shape[0] - 127, 128):
            for c in range(0, x.shape[1] - 127, 128):
                tiles.append(x[r:r + 128, c:c + 128])
                # AtomAI's loss has no "don't care" label: those pixels count as background
                masks.append(np.maximum(m[r:r + 128, c:c + 128], 0))
    log(f"  AtomAI training data: {source} -> {len(tiles)} tiles of 128 px")
    return np.stack(tiles).astype(np.float32), np.stack(masks).astype(np.int64), source


class AtomAI:
    name = "atomai"

    def __init__(self, cache, workdir, log, train_data, budget, quick, threads):
        self.python = peers.ensure_venv("atomai", cache, log=log)
        self.version = peers.peer_version(self.python, "atomai")
        self.workdir, self.env = workdir, {"SKLATOM_BENCH_THREADS": str(threads)}
        X, y, source = _training_data(train_data, quick, log)
        key = hashlib.sha1(X[:: max(1, len(X) // 16)].tobytes() + y.tobytes()
                           + f"{budget}-{len(X)}-{self.version}".encode()).hexdigest()[:12]
        model_dir = os.path.join(cache, "atomai-models", key)
        os.makedirs(model_dir, exist_ok=True)
        self.model = os.path.join(model_dir, "segmentor.tar")
        info_path = os.path.join(model_dir, "segmentor.json")
        if not os.path.exists(info_path):
            log(f"  training AtomAI Segmentor('Unet') for {budget:.0f} s (cached in {model_dir})")
            req = os.path.join(workdir, "atomai_train.npz")
            _write_request(req, images=X, masks=y, budget_seconds=budget, seed=0, batch_size=8)
            peers.run_in_venv(self.python, "atomai-train", req,
                              os.path.join(model_dir, "segmentor.tar"),
                              timeout=budget * 3 + 600, env=self.env)
        with open(info_path) as f:
            self.train_info = json.load(f)
        self.train_info["data"] = source
        self.train_info["budget_seconds"] = budget

    @property
    def params(self):
        i = self.train_info
        return (f"atomai {self.version}; Segmentor('Unet') trained {i['iterations']} iterations "
                f"(batch {i['batch_size']}) in {i['train_seconds']:.0f} s (budget "
                f"{i['budget_seconds']:.0f} s) on {i['data']}; Locator threshold 0.5")

    def tune(self, validation):
        return self

    def find_many(self, sets):
        """All sets in one subprocess; images of different sizes go in separate calls."""
        out = [None] * len(sets)
        for shape in dict.fromkeys(imgs[0].shape for imgs, _ in sets):
            idx = [i for i, (imgs, _) in enumerate(sets) if imgs[0].shape == shape]
            req = os.path.join(self.workdir, "atomai_request.npz")
            res = os.path.join(self.workdir, "atomai_result.npz")
            _write_request(req, images=np.stack([x for i in idx for x in sets[i][0]])
                           .astype(np.float32), model=self.model, threshold=0.5, refine=0)
            peers.run_in_venv(self.python, "atomai-find", req, res, timeout=3600, env=self.env)
            for i, r in zip(idx, _split(*_read_result(res), [sets[i] for i in idx])):
                out[i] = r
        return out


# ------------------------------------------------------------------ reporting

def _fmt(v, spec=".3f"):
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)


def pooled_rows(rows):
    """One row per condition and method, pooled over lattices (counts summed)."""
    out = []
    keys = sorted({(r["condition"], r["method"]) for r in rows},
                  key=lambda k: (list(dict.fromkeys(r["condition"] for r in rows)).index(k[0]),
                                 METHODS.index(k[1])))
    for cond, method in keys:
        group = [r for r in rows if r["condition"] == cond and r["method"] == method]
        bad = [r for r in group if r["status"] != "ok"]
        base = dict(condition=cond, kind=group[0]["kind"], dose=group[0]["dose"],
                    lattice="all", method=method)
        if bad:
            out.append(base | dict(status=bad[0]["status"]))
            continue
        n_pred, n_true, n_m = (sum(r[k] for r in group) for k in ("n_pred", "n_true",
                                                                  "n_matched"))
        p = n_m / n_pred if n_pred else 0.0
        rec = n_m / n_true if n_true else 0.0
        sq = sum(r["rmse"] ** 2 * r["n_matched"] for r in group if r["n_matched"])
        n_img = sum(r["n_images"] for r in group)
        out.append(base | dict(
            status="ok", precision=p, recall=rec, f1=2 * p * rec / (p + rec) if p + rec else 0.0,
            rmse=float(np.sqrt(sq / n_m)) if n_m else float("nan"), n_pred=n_pred,
            n_true=n_true, n_matched=n_m, n_images=n_img,
            seconds_per_image=sum(r["seconds_per_image"] * r["n_images"] for r in group) / n_img))
    return out


def markdown_table(rows, value, spec, methods, title, notes, lattice_col=False):
    """A Markdown table set x method; a method that did not run shows "not measured [n]" with
    its reason stored as note n in ``notes`` (reason -> number)."""
    conds = list(dict.fromkeys(r["condition"] for r in rows))
    head = ["set"] + (["lattice"] if lattice_col else []) + list(methods)
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |",
             "|" + "|".join("---" for _ in head) + "|"]
    groups = [(c, lat) for c in conds for lat in dict.fromkeys(
        r["lattice"] for r in rows if r["condition"] == c)]
    for cond, lat in groups:
        cells = [cond] + ([lat] if lattice_col else [])
        for m in methods:
            r = next((r for r in rows if (r["condition"], r["lattice"], r["method"])
                      == (cond, lat, m)), None)
            if r is None:
                cells.append("–")
            elif r["status"] != "ok":
                n = notes.setdefault(f"{m}: {r['status']}", len(notes) + 1)
                cells.append(f"not measured [{n}]")
            else:
                cells.append(_fmt(r[value], spec))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def targets(pooled, per_lattice, methods):
    """The issue's targets, measured (True/False per set), as Markdown lines."""
    lines = ["### Targets", ""]
    others = [m for m in methods if m != "sklatom"]
    peer_names = [m for m in ("atomap", "atomai") if m in methods]
    for label, rows in (("pooled", pooled), ("per lattice", per_lattice)):
        sets = list(dict.fromkeys((r["condition"], r["lattice"]) for r in rows))
        fails, total = [], 0
        fails_peer = []
        for cond, lat in sets:
            get = {r["method"]: r for r in rows if (r["condition"], r["lattice"]) == (cond, lat)
                   and r["status"] == "ok"}
            if "sklatom" not in get:
                continue
            total += 1
            best = max((get[m]["f1"], m) for m in others if m in get) if any(
                m in get for m in others) else None
            if best and get["sklatom"]["f1"] < best[0]:
                fails.append(f"{cond} / {lat}: sklatom {get['sklatom']['f1']:.3f} < "
                             f"{best[1]} {best[0]:.3f}")
            peer_best = [(get[m]["f1"], m) for m in peer_names if m in get]
            if peer_best and get["sklatom"]["f1"] < max(peer_best)[0]:
                fails_peer.append(f"{cond} / {lat}: sklatom {get['sklatom']['f1']:.3f} < "
                                  f"{max(peer_best)[1]} {max(peer_best)[0]:.3f}")
        lines.append(f"- sklatom F1 >= every other method's ({label}): "
                     f"{total - len(fails)}/{total} sets"
                     + ("" if not fails else "; not on: " + "; ".join(fails)))
        lines.append(f"- sklatom F1 >= the best measured peer's (atomap/AtomAI, {label}): "
                     f"{total - len(fails_peer)}/{total} sets"
                     + ("" if not fails_peer else "; not on: " + "; ".join(fails_peer)))
    for cond in dict.fromkeys(r["condition"] for r in pooled):
        get = {r["method"]: r for r in pooled if r["condition"] == cond and r["status"] == "ok"}
        if "sklatom" in get and len(get) > 1 and (
                cond.startswith("shift") or "3e+05" in cond or "1e+06" in cond):
            best = max((get[m]["f1"], m) for m in get if m != "sklatom")
            lines.append(f"- {cond}: sklatom F1 {get['sklatom']['f1']:.3f} vs best other "
                         f"{best[1]} {best[0]:.3f} (margin {get['sklatom']['f1'] - best[0]:+.3f})")
    sk = [r for r in pooled if r["method"] == "sklatom" and r["status"] == "ok"]
    ai = [r for r in pooled if r["method"] == "atomai" and r["status"] == "ok"]
    if sk and ai:
        t_sk = np.mean([r["seconds_per_image"] for r in sk])
        t_ai = np.mean([r["seconds_per_image"] for r in ai])
        lines.append(f"- speed: sklatom {t_sk:.3f} s/image vs AtomAI {t_ai:.3f} s/image "
                     f"({t_ai / t_sk:.1f}x)")
    else:
        lines.append("- speed vs AtomAI: not measured (AtomAI did not run)")
    return "\n".join(lines) + "\n"


def plot(pooled, methods, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(6, 4))
    for m in methods:
        pts = sorted((r["dose"], r["f1"]) for r in pooled
                     if r["method"] == m and r["kind"] == "dose" and r["status"] == "ok")
        if pts:
            ax.plot(*zip(*pts), marker="o", label=m)
        else:
            ax.plot([], [], label=f"{m} (not measured)")
    ax.set_xscale("log")
    doses = sorted({r["dose"] for r in pooled if r["kind"] == "dose"})
    ax.set_xticks(doses, [f"{d:.0e}" for d in doses])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("dose (e/Å²)")
    ax.set_ylabel("F1 (0.5 Å tolerance, all lattices)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------ main

def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    parser.add_argument("--n-images", type=int, default=6,
                        help="test images per lattice and condition (default 6; a third as "
                             "many for the PRISM set)")
    parser.add_argument("--peers", default="atomap,atomai",
                        help="comma-separated peers to run: atomap, atomai, or none")
    parser.add_argument("--cache", default=peers.DEFAULT_CACHE,
                        help="folder of the peer virtualenvs and trained peer models")
    parser.add_argument("--train-data", default=None,
                        help="the .npz training-set cache of scripts/train_pretrained.py "
                             "(--data-cache), used to train AtomAI (default: "
                             "<cache>/general_train_v2.npz, simulated there when missing)")
    parser.add_argument("--atomai-budget", type=float, default=None,
                        help="AtomAI training seconds (default: sklatom's train_seconds)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, every method")
    parser.add_argument("--no-prism", action="store_true", help="skip the PRISM shift set")
    args = parser.parse_args(argv)
    chosen = [] if args.peers == "none" else [p.strip() for p in args.peers.split(",") if p]
    for p in chosen:
        if p not in peers.PEERS:
            parser.error(f"--peers: unknown peer {p!r}; expected some of {sorted(peers.PEERS)}")

    import torch

    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    t_start = time.time()

    def log(msg):
        print(msg, flush=True)

    lattices = LATTICES if not args.quick else ("graphene", "MoS2")
    log("simulating the test and validation sets")
    test, validation = make_sets(args.quick, args.n_images, lattices, args.no_prism, log)

    methods, failed = [], {}
    methods.append(Sklatom())
    for m in classical_methods(args.quick):
        t0 = time.time()
        methods.append(m.tune(validation))
        log(f"tuned {m.name} on the validation set in {time.time() - t0:.0f} s: {m.params}")
    workdir = tempfile.mkdtemp(prefix="sklatom-bench-")
    with open(os.path.join(REPO, "sklatom", "models", "general.metrics.json")) as f:
        sk_train_seconds = float(json.load(f)["train_seconds"])
    with open(os.path.join(REPO, "sklatom", "models", "general.safetensors"), "rb") as f:
        model_sha = hashlib.sha256(f.read()).hexdigest()
    budget = args.atomai_budget or (20.0 if args.quick else sk_train_seconds)
    for name in ("atomap", "atomai"):
        if name not in chosen:
            failed[name] = "not measured: not selected (--peers)"
            continue
        t0 = time.time()
        try:
            if name == "atomap":
                m = Atomap(args.cache, workdir, log).tune(validation)
            else:
                train_data = args.train_data or os.path.join(args.cache, "general_train_v2.npz")
                m = AtomAI(args.cache, workdir, log, train_data, budget, args.quick,
                           args.threads)
            methods.append(m)
            log(f"set up {name} in {time.time() - t0:.0f} s: {m.params}")
        except Exception as exc:  # a peer that fails is reported, never dropped
            reason = str(exc) if isinstance(exc, peers.PeerUnavailable) else \
                f"{type(exc).__name__}: {exc}"
            failed[name] = "not measured: " + reason
            log(f"{name}: {failed[name]}")
            if not isinstance(exc, peers.PeerUnavailable):
                traceback.print_exc()

    rows = []
    for m in methods:
        t0 = time.time()
        try:  # one call per method over all sets (a peer's subprocess starts once)
            found = m.find_many([(s["images"], s["lattice"]) for s in test])
            errors = [None] * len(test)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, peers.PeerUnavailable) else \
                f"{type(exc).__name__}: {exc}"
            found, errors = [None] * len(test), ["not measured: " + peers._short(reason, 200)] \
                * len(test)
        for s, res, err in zip(test, found, errors):
            base = dict(condition=s["condition"], kind=s["kind"], dose=s["dose"],
                        lattice=s["lattice"], method=m.name)
            if isinstance(res, Exception):
                err = "not measured: " + peers._short(res, 200)
            if err:
                rows.append(base | dict(status=err))
                continue
            pred, secs = res
            rows.append(base | dict(status="ok", n_images=len(s["images"]),
                                    seconds_per_image=float(np.mean(secs)),
                                    **score(pred, s["coords"], s["images"])))
        log(f"ran {m.name} on {len(test)} sets in {time.time() - t0:.0f} s")
    for s in test:
        for name, reason in failed.items():
            rows.append(dict(condition=s["condition"], kind=s["kind"], dose=s["dose"],
                             lattice=s["lattice"], method=name, status=reason))

    pooled = pooled_rows(rows)
    names = [m for m in METHODS if any(r["method"] == m for r in rows)]
    fields = ["condition", "kind", "dose", "lattice", "method", "status", "precision", "recall",
              "f1", "rmse", "n_pred", "n_true", "n_matched", "n_images", "seconds_per_image"]
    with open(os.path.join(args.out, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, restval="")
        w.writeheader()
        w.writerows(pooled + rows)
    meta = dict(
        command="python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:]),
        runtime_seconds=round(time.time() - t_start), python=platform.python_version(),
        quick=args.quick, n_images_per_lattice_and_condition=args.n_images,
        tolerance_A=TOLERANCE, ignore_border_A=IGNORE_BORDER, pixel_size_A=PIXEL_SIZE,
        test_seed=TEST_SEED, validation_seed=VALIDATION_SEED, torch_threads=args.threads,
        tuning="classical baselines and atomap tuned per lattice on the validation set "
               "(one image per lattice and dose, seeds 7000+), best F1 on the grid",
        sklatom_model_sha256=model_sha,
        parameters={m.name: m.params for m in methods}, not_measured=failed)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(dict(meta=meta, pooled=pooled, per_lattice=rows), f, indent=1, default=float)
    md = [f"# sklatom benchmark{' (--quick)' if args.quick else ''}", "",
          f"`{meta['command']}`, {meta['runtime_seconds']} s. F1/precision/recall with "
          f"{TOLERANCE} Å tolerance, classes ignored, a {IGNORE_BORDER} Å \"don't care\" band "
          f"along the image edge; RMSE of matched atoms in Å; time per image on {args.threads} "
          "torch thread(s).", ""]
    notes = {}
    md.append(markdown_table(pooled, "f1", ".3f", names, "F1, all lattices pooled", notes))
    md.append(markdown_table(pooled, "rmse", ".3f", names, "RMSE (Å), all lattices pooled",
                             notes))
    md.append(markdown_table(pooled, "precision", ".3f", names, "Precision, pooled", notes))
    md.append(markdown_table(pooled, "recall", ".3f", names, "Recall, pooled", notes))
    md.append(markdown_table(pooled, "seconds_per_image", ".3f", names,
                             "Seconds per image (mean)", notes))
    md.append(markdown_table(rows, "f1", ".3f", names, "F1 per lattice", notes,
                             lattice_col=True))
    md.append(targets(pooled, rows, names))
    if notes:
        md.append("### Not measured\n")
        md += [f"{n}. {reason}" for reason, n in notes.items()]
        md.append("")
    md.append("### Parameters\n")
    md += [f"- {k}: {v}" for k, v in meta["parameters"].items()]
    text = "\n".join(md) + "\n"
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(text)
    plot(pooled, names, os.path.join(args.out, "f1_vs_dose.png"))
    print()
    print(text)
    log(f"wrote {args.out}/results.csv, results.json, results.md, f1_vs_dose.png "
        f"in {time.time() - t_start:.0f} s")


if __name__ == "__main__":
    main()
