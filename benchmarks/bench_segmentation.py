"""Benchmark the pretrained FCNSegmenter: CPU inference against AtomAI, and training time.

1. Inference. Held-out images (incoherent HAADF, 0.1 Å/px, 5e6 e/Å², graphene and MoS2; seeds
   not used for training) of 256 x 256 and 1024 x 1024 px. Per image, in one run:

   * sklatom: ``load_pretrained().transform`` (probability maps), and the same plus
     ``PeakFinder()`` (atoms);
   * AtomAI 0.8.1: ``Segmentor("Unet").predict`` (maps with ``compute_coords=False``, and maps
     plus its ``Locator`` atoms), run in the
     virtualenv that ``python -m benchmarks`` uses (created here when missing). When that
     command has trained AtomAI models on sklatom's training data (one per time budget and
     training set), the one with the best F1 on validation images (256 px, both lattices,
     other seeds than the test images; ``--atomai-model`` picks one instead) is used, so that
     F1 is compared against AtomAI at its best; otherwise an untrained default
     ``Segmentor("Unet")`` is timed (same network, same compute) and its F1 is reported as
     not measured. F1 leaves out a 0.5 Å band along the image edge (a "don't care" zone, see
     ``sklatom.metrics.atom_scores``).

   Both sides use the same number of torch threads (``--threads``) and the same allocator
   state (a 30 MiB block freed before timing, as sklatom does itself, see
   ``sklatom._inference._raise_malloc_threshold``). The first image of each size is run once
   untimed on both sides; each image is then run ``--repeats`` times and its time is the
   fastest run (this shared machine's timings vary by 20-30 % between runs).

2. Training from scratch to F1 >= 0.98 on one lattice (``--lattice``, default MoS2: two
   classes, Mo and S2 columns; 2 torch threads): a small simulated training set at the
   pretrained model's doses (1e6 to 3e7 e/Å²), the pretrained model's recipe, and fits of 1,
   2, 4, ... epochs from scratch until one reaches the target F1 on held-out images at 5e6
   e/Å²; the time of that fit is the time to the target. Class accuracy is printed too.

Usage::

    python benchmarks/bench_segmentation.py                 # both parts (about 10 minutes)
    python benchmarks/bench_segmentation.py --skip-training
"""

import argparse
import glob
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run as a script
import peers  # noqa: E402
from common import protocol_scores  # noqa: E402

from sklatom.datasets import make_lattice_images  # noqa: E402
from sklatom.peaks import PeakFinder  # noqa: E402
from sklatom.pretrained import GENERAL_LABELS, load_pretrained  # noqa: E402
from sklatom.segmentation import FCNSegmenter  # noqa: E402
from sklatom.simulation import AcquisitionModel, MultisliceSimulator  # noqa: E402

PIXEL_SIZE = 0.1
TRAIN_DOSES = (1e6, 2e6, 5e6, 1e7, 3e7)  # e/Å², as the pretrained model's


def held_out(lattice, size, n, seed, dose=5e6, defects="default"):
    """``n`` recorded images of ``size`` px with ground-truth (row, col, class) per image."""
    X, y, coords = make_lattice_images(
        n, lattice, shape=(size, size), pixel_size=PIXEL_SIZE, labels=GENERAL_LABELS,
        simulator=MultisliceSimulator(method="incoherent", progress=False),
        acquisition=AcquisitionModel(dose=dose, blur=0.15, scan_jitter=0.01, random_state=seed),
        defects=defects, random_state=seed)
    return list(X), list(y), coords


def score(found, truth, images, with_classes=False):
    s = protocol_scores(found, truth, images, PIXEL_SIZE)
    return (s["f1"], s["rmse"]) + ((s["class_accuracy"],) if with_classes else ())


def time_sklatom(images, repeats):
    """Seconds per image (maps, maps + atoms; each the fastest of ``repeats`` runs) and atoms."""
    seg, finder = load_pretrained(device="cpu"), PeakFinder()
    seg.transform(images[0][None])  # warm-up
    maps_s, atoms_s, found = [], [], []
    for img in images:
        best_maps = best_atoms = np.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            proba = seg.transform(img[None])
            t1 = time.perf_counter()
            atoms = finder.transform(proba)[0]
            t2 = time.perf_counter()
            best_maps, best_atoms = min(best_maps, t1 - t0), min(best_atoms, t2 - t0)
        maps_s.append(best_maps)
        atoms_s.append(best_atoms)
        found.append(atoms)
    return np.mean(maps_s), np.mean(atoms_s), found


def atomai_models(cache, choice=None):
    """AtomAI models that ``python -m benchmarks`` trained: {path: training record}.

    ``choice`` is a model directory's name (its key) or a path to a ``segmentor.tar``; None
    lists every model in the cache.
    """
    if choice:
        path = choice if os.path.isfile(choice) else os.path.join(
            cache, "atomai-models", choice, "segmentor.tar")
        if not os.path.isfile(path):
            raise SystemExit(f"--atomai-model {choice!r}: no such model ({path})")
        paths = [path]
    else:
        paths = sorted(glob.glob(os.path.join(cache, "atomai-models", "*", "segmentor.tar")))
    records = {}
    for path in paths:
        try:
            with open(os.path.join(os.path.dirname(path), "segmentor.json")) as f:
                records[path] = json.load(f)
        except (OSError, ValueError):
            records[path] = {}
    return records


def best_atomai_model(python, models, threads):
    """The model of ``models`` with the best F1 on validation images (printed per model)."""
    if len(models) < 2:
        return next(iter(models), None)
    images, truth = [], []
    for k, lattice in enumerate(("graphene", "MoS2")):
        X, _, t = held_out(lattice, 256, 3, seed=9500 + k)  # not a test seed
        images, truth = images + X, truth + [c[:, :2] for c in t]
    f1 = {}
    for path, record in models.items():
        _, found = time_atomai(python, path, images, threads, repeats=1)
        f1[path] = score(found, truth, images)[0]
        print(f"#   AtomAI model {os.path.basename(os.path.dirname(path))}: "
              f"{record.get('iterations', '?')} iterations in "
              f"{record.get('train_seconds', float('nan')):.0f} s, validation F1 "
              f"{f1[path]:.3f}", flush=True)
    return max(f1, key=f1.get)


def time_atomai(python, model, images, threads, repeats, coords=True):
    """AtomAI's predict per image in its venv, with its Locator (``coords``) or the maps only:
    (seconds per image, each the fastest of ``repeats`` runs; atoms or None)."""
    with tempfile.TemporaryDirectory() as tmp:
        req, res = os.path.join(tmp, "req.npz"), os.path.join(tmp, "res.npz")
        np.savez(req, images=np.stack(images).astype(np.float32), model=model or "",
                 nb_classes=3, threshold=0.5, refine=0, coords=int(coords), repeats=repeats)
        peers.run_in_venv(python, "atomai-find", req, res, timeout=3600,
                          env={"SKLATOM_BENCH_THREADS": str(threads)})
        with np.load(res) as d:
            found = [d[f"coords_{i}"] for i in range(int(d["n"]))] if coords else None
            return float(np.mean(d["seconds"])), found


def inference(args):
    torch.set_num_threads(args.threads)
    try:
        python = peers.ensure_venv("atomai", args.cache)
        version = peers.peer_version(python, "atomai")
        models = atomai_models(args.cache, args.atomai_model)
        model = best_atomai_model(python, models, args.threads)
        atomai_note = (f"AtomAI {version}, model {model} (trained by python -m benchmarks: "
                       f"{models[model].get('iterations', '?')} iterations, "
                       f"{models[model].get('train_seconds', float('nan')):.0f} s)"
                       if model else f"AtomAI {version}, untrained default Segmentor('Unet') "
                       "(timing only: run `python -m benchmarks` first for its F1)")
    except peers.PeerUnavailable as exc:
        python, atomai_note = None, f"AtomAI not measured: {exc}"
    print(f"# inference, {args.threads} torch thread(s); {atomai_note}")
    print(f"{'size':>6} {'lattice':<9} {'sklatom maps':>13} {'+atoms':>8} {'F1':>6} "
          f"{'RMSE Å':>7} | {'AtomAI maps':>11} {'+atoms':>8} {'F1':>6} {'RMSE Å':>7} | "
          f"{'speed-up maps':>13} {'atoms':>6}")
    for size in args.sizes:
        for k, lattice in enumerate(("graphene", "MoS2")):
            X, _, truth = held_out(lattice, size, args.n_images, seed=9000 + 10 * size + k)
            t_maps, t_atoms, found = time_sklatom(X, args.repeats)
            f1, rmse = score(found, truth, X)
            line = (f"{size:>6} {lattice:<9} {t_maps:>12.3f}s {t_atoms:>7.3f}s {f1:>6.3f} "
                    f"{rmse:>7.3f} | ")
            if python is None:
                print(line + "not measured")
                continue
            t_ai_maps, _ = time_atomai(python, model, X, args.threads, args.repeats,
                                       coords=False)
            t_ai, found_ai = time_atomai(python, model, X, args.threads, args.repeats)
            f1_ai, rmse_ai = score(found_ai, [t[:, :2] for t in truth], X) if model else (
                np.nan, np.nan)
            print(line + f"{t_ai_maps:>6.3f}s {t_ai:>7.3f}s {f1_ai:>6.3f} {rmse_ai:>7.3f} | "
                  f"{t_ai_maps / t_maps:>12.1f}x {t_ai / t_atoms:>5.1f}x", flush=True)
    print("speed-up = AtomAI seconds per image / sklatom seconds per image (maps: sklatom's "
          "transform against AtomAI's predict(compute_coords=False); atoms: transform + "
          "PeakFinder against predict with its Locator)")


def training(args):
    """Fits of 1, 2, 4, ... epochs from scratch until held-out F1 >= target."""
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    X, y = [], []
    for k, dose in enumerate(TRAIN_DOSES):
        Xd, yd, _ = held_out(args.lattice, 256, args.n_train // len(TRAIN_DOSES),
                             seed=7100 + k, dose=dose)
        X, y = X + Xd, y + yd
    Xv, _, cv = held_out(args.lattice, 256, 6, seed=7200)
    print(f"\n# training from scratch on {args.lattice}: {len(X)} images of 256 px at "
          f"{TRAIN_DOSES} e/Å² (simulated in {time.perf_counter() - t0:.0f} s), held-out 6 "
          f"images at 5e6 e/Å²; 2 threads")
    pretrained = load_pretrained().get_params()
    recipe = {k: pretrained[k] for k in pretrained if k.startswith("module__")}
    recipe.update(lr=pretrained["lr"], batch_size=8, patch_size=128, patches_per_epoch=320,
                  augment=True, classes=pretrained["classes"],
                  class_weight=pretrained["class_weight"],
                  training_pixel_size=PIXEL_SIZE, validation_fraction=None,
                  early_stopping_patience=None, verbose=0, random_state=0)
    print(f"{'epochs':>7} {'train s':>8} {'F1':>6} {'RMSE Å':>7} {'class acc':>9}")
    # reference: one epoch with a zero learning rate leaves the random weights (only the batch
    # norm statistics adapt), so the scores below are learned, not given by the pipeline
    seg = FCNSegmenter(max_epochs=1, **dict(recipe, lr=0.0)).fit(X, y)
    f1, rmse, acc = score(PeakFinder().transform(seg.transform(Xv)), cv, Xv, True)
    print(f"{'0 (lr=0)':>7} {0:>8.0f} {f1:>6.3f} {rmse:>7.3f} {acc:>9.3f}", flush=True)
    epochs = 1
    while epochs <= args.max_epochs:
        seg = FCNSegmenter(max_epochs=epochs, lr_schedule="cosine", **recipe)
        t = time.perf_counter()
        seg.fit(X, y)
        dt = time.perf_counter() - t
        f1, rmse, acc = score(PeakFinder().transform(seg.transform(Xv)), cv, Xv, True)
        print(f"{epochs:>7} {dt:>8.0f} {f1:>6.3f} {rmse:>7.3f} {acc:>9.3f}", flush=True)
        if f1 >= args.target:
            print(f"time to F1 >= {args.target}: {dt:.0f} s ({dt / 60:.1f} min; target "
                  f"<= 10 min)")
            return
        epochs *= 2
    print(f"F1 {args.target} not reached within {args.max_epochs} epochs")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--n-images", type=int, default=6, help="per size and lattice")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, both sides")
    parser.add_argument("--repeats", type=int, default=5,
                        help="runs per image; its time is the fastest (both sides)")
    parser.add_argument("--cache", default=peers.DEFAULT_CACHE, help="peer venvs and models")
    parser.add_argument("--atomai-model", default=None,
                        help="AtomAI model: key under <cache>/atomai-models or a segmentor.tar "
                        "path (default: the best on validation images of those in the cache)")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--lattice", default="MoS2")
    parser.add_argument("--n-train", type=int, default=25, help="training images")
    parser.add_argument("--target", type=float, default=0.98)
    parser.add_argument("--max-epochs", type=int, default=32)
    args = parser.parse_args(argv)
    inference(args)
    if not args.skip_training:
        training(args)


if __name__ == "__main__":
    main()
