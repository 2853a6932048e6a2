"""Train the lattice-specific models that ship in sklatom/models, and measure them.

    python scripts/train_lattice_models.py graphene            # one model, as shipped
    python scripts/train_lattice_models.py graphene --quick    # a small smoke run (minutes)
    python scripts/train_lattice_models.py graphene --evaluate-only

A lattice model is the shipped "general" model fine-tuned on one lattice family only (its
point defects, edges, holes and grain boundaries, on vacuum or a support), down to doses where
a single column is lost in the shot noise. The periodicity is learnt, not imposed: the labels
(``label_policy="lattice"``, :mod:`sklatom.datasets`) mark every column that stands out from
its neighbours whatever the dose, so the network learns to place a faint column from the
lattice around it, while the dense planted vacancies (several per 25 Å square, at every
dose) and substitutions teach it that an empty site stays empty and a dopant keeps its class.
The classes are the general model's (background, light, heavy).

Recording as for the general model (``train_pretrained.random_acquisition``: blur, jitter,
drift, backgrounds, pedestals, artefacts), random optics from MAADF to HAADF at 60-300 kV,
recorded pixel sizes 0.05-0.2 Å/px resampled to 0.1 Å/px, doses log-uniform over
:data:`TRAIN_DOSES`.

The held-out evaluation (other seeds; the training distribution of optics and recordings,
clean images) scores every lattice the model serves per dose against every column of the
structure, and counts planted vacancy sites where an atom is found, for this model and for the
general one on the same images; results go to sklatom/models/<name>.metrics.json.
"""

import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np
import torch
from train_pretrained import (ARTEFACTS, CLASSES, PIXEL_SIZE, PIXEL_SIZES, log_uniform,
                              random_acquisition, random_simulator, training_defects)

from sklatom.datasets import load_dataset, make_scene_images, save_dataset
from sklatom.metrics import EDGE_BAND, TOLERANCE, atom_scores, sites_filled
from sklatom.peaks import PeakFinder
from sklatom.pretrained import GENERAL_LABELS, LATTICE_MODELS, _pretrained_file
from sklatom.segmentation import FCNSegmenter
from sklatom.simulation import AcquisitionModel
from sklatom.structures import LATTICES, empty_sites

#: Scene kinds of a lattice model's training set and their shares (2-D lattices; a lattice
#: with depth, SrTiO3 [001], is trained on "lattice" scenes only).
SHEET_MIX = {"lattice": 0.6, "flake": 0.25, "grain_boundary": 0.1, "vacuum": 0.05}
#: Doses of the training set (e/Å², log-uniform), and of the held-out evaluation.
TRAIN_DOSES = (3e3, 3e6)
TEST_DOSES = (5e3, 1e4, 2e4, 5e4, 1e5, 1e6)
N_IMAGES = 600


#: Beam energies (eV) of the 2-D lattices' images: below or near their knock-on thresholds, as
#: beam-sensitive sheets are imaged (SrTiO3 keeps the general model's 60-300 kV).
SHEET_ENERGIES = (60e3, 80e3, 80e3, 100e3)


def lattice_simulator(rng, lattice):
    """Random optics (:func:`train_pretrained.random_simulator`: probe, MAADF to HAADF) at
    the energies ``lattice`` is imaged at."""
    sim = random_simulator(rng)
    if LATTICES[lattice].depth == 0:
        sim.set_params(energy=float(rng.choice(SHEET_ENERGIES)))
    return sim


def scene_item(rng, lattices):
    """One randomly drawn training scene of one of ``lattices``: (kind, options, recorded
    pixel size, shape, simulator, acquisition)."""
    lattice = lattices[rng.randint(len(lattices))]
    mix = SHEET_MIX if LATTICES[lattice].depth == 0 else {"lattice": 1.0}
    kind = rng.choice(list(mix), p=np.array(list(mix.values())) / sum(mix.values()))
    ps = float(rng.choice([p for p in PIXEL_SIZES if p <= 0.2]))
    n = int(round(rng.uniform(19.2, 38.4) / ps))
    options = {}
    if kind in ("lattice", "flake"):
        options = {"lattice": lattice, "defects": training_defects(lattice, (n * ps, n * ps))}
    elif kind == "grain_boundary":
        options = {"lattice": lattice}
    dose = log_uniform(rng, *TRAIN_DOSES)
    return (kind, options, ps, (n, n), lattice_simulator(rng, lattice),
            random_acquisition(rng, dose, kind))


def make_training_set(lattices, n_images, seed, verbose=True):
    """Images and masks at 0.1 Å/px, and per-image metadata."""
    rng = np.random.RandomState(seed)
    images, masks, meta = [], [], []
    t0 = time.time()
    for i in range(n_images):
        kind, options, ps, shape, sim, acq = scene_item(rng, lattices)
        X, y, _ = make_scene_images(1, kind, shape=shape, pixel_size=ps,
                                    output_pixel_size=PIXEL_SIZE, scene_options=options,
                                    label_policy="lattice", artefacts=ARTEFACTS,
                                    simulator=sim, acquisition=acq,
                                    random_state=rng.randint(2**31 - 1))
        images.append(X[0])
        masks.append(y[0].astype(np.int8))
        meta.append({"kind": str(kind), "lattice": options.get("lattice"),
                     "pixel_size": round(ps, 4), "dose": acq.dose,
                     "detector": list(sim.detector), "energy": sim.energy})
        if verbose and (i + 1) % 50 == 0:
            print(f"  {i + 1}/{n_images} images ({time.time() - t0:.0f} s)", flush=True)
    return images, masks, meta


# --------------------------------------------------------------------------------------------
# held-out evaluation
# --------------------------------------------------------------------------------------------
def test_images(lattice, dose, n_images, seed):
    """Held-out images of one lattice at one dose (random optics, a clean recording at
    0.1 Å/px): images, the columns labelled and "don't care" under the lattice label policy,
    the empty vacancy sites (px)."""
    from sklatom.datasets import make_lattice_images

    rng = np.random.RandomState(seed)
    images, truth, doubt, sites = [], [], [], []
    for _ in range(n_images):
        acq = AcquisitionModel(dose=dose, blur=rng.uniform(0.05, 0.3),
                               scan_jitter=rng.uniform(0, 0.03))
        X, _, c, info = make_lattice_images(
            1, lattice, shape=(192, 192), pixel_size=PIXEL_SIZE, labels=GENERAL_LABELS,
            simulator=lattice_simulator(rng, lattice), acquisition=acq, label_policy="lattice",
            defects=training_defects(lattice, (19.2, 19.2)), min_defect_separation=4.0,
            return_info=True, random_state=rng.randint(2**31 - 1))
        images.append(X[0])
        truth.append(c[0])
        doubt.append(info.uncertain[0])
        sites.append(empty_sites(info.structures[0]) / PIXEL_SIZE)
    return images, truth, doubt, sites


def evaluate(models, lattices, n_images, seed):
    """Per lattice and dose and per model: pooled scores and vacancy sites filled."""
    table = {}
    for i, lattice in enumerate(lattices):
        for j, dose in enumerate(TEST_DOSES):
            images, truth, doubt, sites = test_images(lattice, dose, n_images,
                                                      seed + 100 * i + j)
            row = {}
            for name, seg in models.items():
                found = PeakFinder().transform(seg.transform(np.stack(images)))
                s = atom_scores(found, truth, tolerance=TOLERANCE, pixel_size=PIXEL_SIZE,
                                ignore_border=EDGE_BAND,
                                image_shape=[x.shape for x in images], zero_division=1.0,
                                dont_care=doubt)
                filled, total = sites_filled(found, sites, TOLERANCE, PIXEL_SIZE)
                row[name] = {k: float(s[k]) for k in ("precision", "recall", "f1", "rmse",
                                                      "class_accuracy")} | {
                    "n_true": int(s["n_true"]), "vacancies_filled": filled,
                    "vacancy_sites": total}
            table[f"{lattice} @ {dose:.0e}"] = row
            print(f"{lattice:12s} {dose:8.0e} " + "  ".join(
                f"{n}: F1 {r['f1']:.3f} filled {r['vacancies_filled']}/{r['vacancy_sites']}"
                for n, r in row.items()), flush=True)
    return table


def code_commit():
    """The git commit of this checkout (the training recipe), or None outside git."""
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.abspath(__file__)),
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def file_sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(LATTICE_MODELS))
    parser.add_argument("--n-images", type=int, default=N_IMAGES)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--patches-per-epoch", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", default=None,
                        help="model to fine-tune (default: the shipped general model)")
    parser.add_argument("--out", default=None, help="model file (default: the shipped one)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--data-cache", default=None,
                        help="an .npz file to store the simulated training set in and reuse")
    parser.add_argument("--n-test", type=int, default=4,
                        help="held-out images per lattice and dose")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="measure the existing model file again (no training)")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_images, args.epochs, args.patches_per_epoch, args.n_test = 12, 1, 16, 1
    lattices = LATTICE_MODELS[args.name]
    out = args.out or os.path.join(os.path.dirname(__file__), "..", "sklatom", "models",
                                   f"{args.name}.safetensors")
    init = args.init or str(_pretrained_file("general"))
    report_path = os.path.splitext(out)[0] + ".metrics.json"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    if args.evaluate_only:
        seg = FCNSegmenter.load(out)
        with open(report_path) as f:
            report = json.load(f)
    else:
        if args.data_cache and os.path.exists(args.data_cache):
            data = load_dataset(args.data_cache)
            X, y, meta = list(data.images), list(data.masks), data.metadata["images"]
            simulation_seconds = None
        else:
            print(f"simulating {args.n_images} training images of {lattices}", flush=True)
            X, y, meta = make_training_set(lattices, args.n_images, args.seed)
            simulation_seconds = round(time.time() - t0)
            if args.data_cache:
                save_dataset(args.data_cache, X, y, classes=CLASSES, pixel_size=PIXEL_SIZE,
                             metadata={"images": meta}, overwrite=True)
        seg = FCNSegmenter(init_model=init, fine_tune_batch_norm=True, lr=5e-4,
                           max_epochs=args.epochs, batch_size=8, patch_size=128,
                           patches_per_epoch=args.patches_per_epoch,
                           validation_fraction=0.1, early_stopping_patience=8,
                           lr_schedule="cosine", augment=True, augment_zoom=(0.8, 1.2),
                           device="auto", verbose=1, random_state=args.seed)
        t1 = time.time()
        seg.fit(X, y)
        train_seconds = round(time.time() - t1)
        seg.set_params(verbose=0, init_model=None)
        seg.save(out)
        print(f"trained in {train_seconds} s; saved {out}", flush=True)
        kinds = sorted({m["kind"] for m in meta})
        report = {
            "name": args.name, "lattices": list(lattices), "pixel_size": PIXEL_SIZE,
            "classes": CLASSES, "init_model": os.path.basename(init),
            "init_model_sha256": file_sha256(init), "label_policy": "lattice",
            "train_images": len(X),
            "train_kinds": {k: sum(m["kind"] == k for m in meta) for k in kinds},
            "train_doses": [float(min(m["dose"] for m in meta)),
                            float(max(m["dose"] for m in meta))],
            "train_pixel_sizes": [float(min(m["pixel_size"] for m in meta)),
                                  float(max(m["pixel_size"] for m in meta))],
            "train_seed": args.seed, "simulation_seconds": simulation_seconds,
            "train_seconds": train_seconds, "epochs_run": len(seg.net_.history),
            "torch_threads": args.threads, "code_commit": code_commit(),
            "command": "python scripts/train_lattice_models.py " + " ".join(sys.argv[1:]),
        }
    print("held-out evaluation", flush=True)
    t2 = time.time()
    general = FCNSegmenter.load(init)
    report["test_doses"] = list(TEST_DOSES)
    report["test"] = evaluate({args.name: seg, "general": general}, lattices, args.n_test,
                              args.seed + 1000)
    report["evaluation_seconds"] = round(time.time() - t2)
    with open(report_path, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {report_path}; total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
