"""Train the pretrained models that ship in sklatom/models, and measure them for the model card.

    python scripts/train_pretrained.py                      # the "general" model, as shipped
    python scripts/train_pretrained.py --quick              # a small smoke run (minutes)

The training set is simulated here: every lattice of sklatom.structures, random rotation, strain,
field of view and point defects; most images with the fast incoherent simulator and a share with
PRISM multislice (so the network also sees dynamical contrast), at several beam energies,
probe angles and defoci; recorded at doses from 1e6 to 3e7 e/Å² with probe blur, scan jitter,
drift and background. The held-out test set is drawn with other seeds, per lattice and dose,
and scored with PeakFinder + sklatom.metrics. Results go to a JSON file next to the model
(sklatom/models/<name>.metrics.json), which docs/conf.py turns into the model card's table.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

from sklatom.datasets import make_lattice_images
from sklatom.pretrained import GENERAL_LABELS, PRETRAINED
from sklatom.segmentation import FCNSegmenter
from sklatom.simulation import AcquisitionModel, MultisliceSimulator
from sklatom.structures import LATTICES

PIXEL_SIZE = 0.1  # Å/px of the training images
LATTICE_NAMES = sorted(LATTICES)
TRAIN_DOSES = (1e6, 2e6, 5e6, 1e7, 3e7)  # e/Å²
TEST_DOSES = (2e6, 5e6, 2e7)
#: Training set of the shipped model: images per lattice, every k-th one simulated with PRISM.
N_PER_LATTICE, PRISM_EVERY = 60, 2


def random_acquisition(rng, dose):
    """A plausible, randomly imperfect recording at the given dose."""
    return AcquisitionModel(
        dose=dose,
        blur=rng.uniform(0.05, 0.3),
        scan_jitter=rng.uniform(0.0, 0.04),
        drift=(rng.uniform(0, 0.002), rng.uniform(0, 0.002)),
        background=rng.uniform(0.0, 0.5),
    )


def random_simulator(rng, method):
    return MultisliceSimulator(
        method=method,
        energy=float(rng.choice([60e3, 80e3, 100e3])),
        semiangle_cutoff=rng.uniform(20, 30),
        defocus=rng.uniform(-20, 20),
        progress=False,
        n_jobs=2,
    )


#: Point defects per 25.6 x 25.6 Å of training image: several times the "default" mix, so the
#: network learns that an empty lattice site is background, not an atom it should fill in.
TRAIN_DEFECTS = {
    "graphene": {"vacancy": 4, "divacancy": 2, "stone_wales": 1, "substitution": 2},
    "Si-graphene": {"vacancy": 3, "divacancy": 1, "substitution": 5},
    "hBN": {"vacancy": 4, "divacancy": 2, "substitution": 2},
    "MoS2": {"vacancy": 6, "substitution": 3},
    "WS2": {"vacancy": 6, "substitution": 3},
    "SrTiO3-001": None,
}


def training_defects(lattice, shape):
    """The training defect mix for an image of ``shape`` px (scaled by area, at least 1)."""
    mix = TRAIN_DEFECTS[lattice]
    if not mix:
        return None
    area = shape[0] * shape[1] * PIXEL_SIZE**2 / 25.6**2
    return {kind: max(1, int(round(n * area))) for kind, n in mix.items()}


def make_set(n_per_lattice, seed, doses, shape=(256, 256), prism_every=0, lattices=None,
             simulator=None, verbose=True, defects="training"):
    """Images, masks, coordinates and per-image (lattice, dose) of a labelled set."""
    rng = np.random.RandomState(seed)
    images, masks, coords, meta = [], [], [], []
    lattices = lattices or LATTICE_NAMES
    t0 = time.time()
    for lattice in lattices:
        for i in range(n_per_lattice):
            dose = doses[i % len(doses)]
            prism = prism_every and i % prism_every == 0
            sim = simulator or random_simulator(rng, "prism" if prism else "incoherent")
            size = (128, 128) if prism else shape  # PRISM images are small: it is slow
            mix = training_defects(lattice, size) if defects == "training" else defects
            X, y, c = make_lattice_images(
                1, lattice, shape=size, pixel_size=PIXEL_SIZE, labels=GENERAL_LABELS,
                simulator=sim, acquisition=random_acquisition(rng, dose), defects=mix,
                min_defect_separation=4.0, random_state=rng.randint(2**31 - 1))
            images.append(X[0])
            masks.append(y[0])
            coords.append(c[0])
            meta.append({"lattice": lattice, "dose": dose, "method": sim.method})
        if verbose:
            print(f"  {lattice}: {n_per_lattice} images ({time.time() - t0:.0f} s so far)",
                  flush=True)
    return images, masks, coords, meta


def save_training_set(path, images, masks, meta):
    """Store a training set (lists of images and masks, per-image dicts) in one .npz file."""
    np.savez_compressed(path, n=len(images), meta=json.dumps(meta),
                        **{f"X{i}": x for i, x in enumerate(images)},
                        **{f"y{i}": m for i, m in enumerate(masks)})


def load_training_set(path):
    """The lists of images and masks and the per-image dicts :func:`save_training_set` wrote."""
    with np.load(path, allow_pickle=False) as data:
        n = int(data["n"])
        return ([data[f"X{i}"] for i in range(n)], [data[f"y{i}"] for i in range(n)],
                json.loads(str(data["meta"])))


def evaluate(segmenter, images, coords, meta, tolerance=0.5, ignore_border=0.5):
    """Atom F1 / RMSE (Å) per lattice and dose with the default PeakFinder.

    Atoms within ``ignore_border`` Å (the label radius) of the image edge are left out of the
    scores, predicted and true alike: a column cut by the edge is half visible.
    """
    from sklatom.metrics import atom_scores
    from sklatom.peaks import PeakFinder

    proba = segmenter.transform(images)
    found = PeakFinder().fit(proba).transform(proba)
    groups = {}
    for f, c, m, x in zip(found, coords, meta, images):
        for key in (m["lattice"], f"{m['lattice']} @ {m['dose']:.0e}", "all"):
            groups.setdefault(key, ([], [], []))
            groups[key][0].append(f)
            groups[key][1].append(c)
            groups[key][2].append(x.shape)
    table = {}
    for key, (pred, true, shapes) in sorted(groups.items()):
        s = atom_scores(pred, true, tolerance=tolerance, pixel_size=PIXEL_SIZE,
                        ignore_border=ignore_border, image_shape=shapes)
        table[key] = {k: float(s[k]) for k in ("precision", "recall", "f1", "rmse",
                                                "class_accuracy")}
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="general", choices=sorted(PRETRAINED))
    parser.add_argument("--n-per-lattice", type=int, default=N_PER_LATTICE)
    parser.add_argument("--prism-every", type=int, default=PRISM_EVERY,
                        help="every k-th training image is simulated with PRISM")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--patches-per-epoch", type=int, default=640)
    parser.add_argument("--base-filters", type=int, default=12)
    parser.add_argument("--space-to-depth", type=int, default=2,
                        help="the U-Net runs at 1/s of the image resolution")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="model file (default: the shipped one)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 is fastest on a busy 2-core machine)")
    parser.add_argument("--data-cache", default=None,
                        help="an .npz file to store the simulated training set in and reuse")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="measure the existing model file again (no training)")
    parser.add_argument("--n-test", type=int, default=6,
                        help="held-out images per lattice and method")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_per_lattice, args.epochs, args.patches_per_epoch = 4, 2, 32
    out = args.out or os.path.join(os.path.dirname(__file__), "..", "sklatom", "models",
                                   PRETRAINED[args.name][0])

    torch.set_num_threads(args.threads)
    t0 = time.time()
    report_path = os.path.splitext(out)[0] + ".metrics.json"
    if args.evaluate_only:
        seg = FCNSegmenter.load(out)
        with open(report_path) as f:
            report = json.load(f)
        write_metrics(seg, args, report, report_path)
        return
    if args.data_cache and os.path.exists(args.data_cache):
        X, y, meta = load_training_set(args.data_cache)
        print(f"loaded the training set from {args.data_cache}", flush=True)
    else:
        print("simulating the training set", flush=True)
        X, y, _, meta = make_set(args.n_per_lattice, args.seed, TRAIN_DOSES,
                                 prism_every=args.prism_every)
        if args.data_cache:
            save_training_set(args.data_cache, X, y, meta)
    n_prism = sum(m["method"] == "prism" for m in meta)
    print(f"{len(X)} training images ({n_prism} PRISM) in {time.time() - t0:.0f} s",
          flush=True)
    classes = ["background", "light", "heavy"]
    # square root of "balanced" weights: rare classes count more, but not so much that the
    # network prefers to see atoms where the lattice has holes
    counts = np.bincount(np.concatenate([m.ravel() for m in y]), minlength=len(classes))
    class_weight = np.sqrt(counts.sum() / (len(classes) * np.maximum(counts, 1)))
    seg = FCNSegmenter(
        module__depth=3, module__base_filters=args.base_filters, module__dilation=2,
        module__space_to_depth=args.space_to_depth,
        module__dropout=0.1, lr=2e-3, max_epochs=args.epochs, batch_size=8, patch_size=128,
        patches_per_epoch=args.patches_per_epoch, validation_fraction=0.1,
        early_stopping_patience=8, lr_schedule="cosine", augment=True,
        augment_zoom=(0.8, 1.2), class_weight=class_weight, classes=classes,
        training_pixel_size=PIXEL_SIZE, device="auto", verbose=1, random_state=args.seed,
    )
    t1 = time.time()
    seg.fit(X, y)
    train_time = time.time() - t1
    seg.set_params(verbose=0)
    seg.save(out)
    print(f"trained in {train_time:.0f} s; saved {out} ({os.path.getsize(out) / 1e6:.1f} MB)",
          flush=True)

    report = {
        "name": args.name, "pixel_size": PIXEL_SIZE, "classes": classes,
        "train_images": len(X), "train_prism_images": n_prism, "train_doses": TRAIN_DOSES,
        "train_seconds": round(train_time), "epochs_run": len(seg.net_.history),
        "params": {k: (v if isinstance(v, (int, float, str, bool, type(None), list, tuple))
                       else str(v)) for k, v in seg.get_params().items()},
        "command": "python scripts/train_pretrained.py " + " ".join(sys.argv[1:]),
    }
    write_metrics(seg, args, report, report_path)
    print(f"total {time.time() - t0:.0f} s")


def empty_sites_filled(seg, seed, n_images=4, tolerance=0.5):
    """Per lattice: the fraction of vacancy sites where the model reports an atom anyway.

    Undistorted images (dose 5e6 e/Å², 0.15 Å blur) of structures with planted single
    vacancies; a site counts as filled when a found atom lies within ``tolerance`` Å of it.
    """
    from sklatom.peaks import PeakFinder
    from sklatom.structures import make_structure

    rng = np.random.RandomState(seed)
    sim = MultisliceSimulator(method="incoherent", progress=False)
    out = {}
    for lattice in ("graphene", "hBN"):  # (a TMD "vacancy" may leave one S of an S2 column)
        structures = [make_structure(lattice, (25.6, 25.6), defects={"vacancy": 4},
                                     random_state=rng.randint(2**31 - 1))
                      for _ in range(n_images)]
        images = AcquisitionModel(dose=5e6, blur=0.15, random_state=0).transform(
            sim.transform(structures))
        found = PeakFinder().transform(seg.transform(images))
        filled = total = 0
        for atoms, f in zip(structures, found):
            y0, x0 = atoms.info["scan_region"][:2]
            for d in atoms.info["defects"]:
                site = (np.array(d["position"]) - (y0, x0)) / PIXEL_SIZE
                total += 1
                if len(f) and np.hypot(*(f[:, :2] - site).T).min() * PIXEL_SIZE < tolerance:
                    filled += 1
        out[lattice] = round(filled / total, 3)
    return out


def write_metrics(seg, args, report, path):
    """Score the model on held-out sets (other seeds) and store the table in ``path``."""
    print("simulating the held-out test sets", flush=True)
    Xt, _, ct, mt = make_set(args.n_test, args.seed + 1000, TEST_DOSES, verbose=False)
    Xp, _, cp, mp = make_set(args.n_test, args.seed + 2000, (5e6,),
                             prism_every=1, verbose=False)
    report.update(
        test_doses=TEST_DOSES, test_images=len(Xt), test_prism_images=len(Xp),
        test_incoherent=evaluate(seg, Xt, ct, mt), test_prism=evaluate(seg, Xp, cp, mp),
        test_incoherent_whole_image=evaluate(seg, Xt, ct, mt, ignore_border=0.0),
        scoring="PeakFinder() defaults; matches within 0.5 Å; atoms within 0.5 Å of the "
                "image edge left out (test_incoherent_whole_image keeps them)",
    )
    report["empty_sites_filled"] = empty_sites_filled(seg, args.seed + 3000)
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    print("empty lattice sites where an atom was found:", report["empty_sites_filled"])
    for name in ("test_incoherent", "test_prism"):
        for key, m in report[name].items():
            print(f"{name:16s} {key:24s} F1 {m['f1']:.3f}  RMSE {m['rmse']:.3f} Å  "
                  f"class acc {m['class_accuracy']:.3f}")


if __name__ == "__main__":
    main()
