"""benchmarks/bench_real.py on a tiny folder of simulated images in the real-data layout."""

import dataclasses
import json
import os
import sys

import numpy as np
import pytest

from sklatom.datasets import make_lattice_images
from sklatom.pretrained import GENERAL_LABELS

try:
    from benchmarks import bench_real
except ImportError:  # plain `pytest` does not put the repository root on sys.path
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks import bench_real

PIXEL_SIZE = 0.15  # Å/px, inside the pretrained model's range (it rescales)
REGION = (24.0, 72.0, 24.0, 72.0)  # row_min, row_max, col_min, col_max (px) of 96 px images


@pytest.fixture(scope="module")
def real_layout(tmp_path_factory):
    """A DIR with three sets of the same two MoS2 images (96 px), references (row, col) and
    species: ``sim_lattice`` (all atoms), ``sim_coarse`` (pixel size 0.6 Å/px, which the
    model refuses), ``sim_region`` (references only inside ``label_region_rc``, as when only
    part of an image was labelled); plus a folder without .npz files."""
    X, _, coords = make_lattice_images(2, "MoS2", shape=(96, 96), pixel_size=PIXEL_SIZE,
                                       labels=GENERAL_LABELS, random_state=0)
    root = tmp_path_factory.mktemp("realdata")
    for name in ("sim_lattice", "sim_coarse", "sim_region", "notes_only"):
        (root / name).mkdir()
    (root / "notes_only" / "README.md").write_text("no images here")
    for k, (x, c) in enumerate(zip(X, coords)):
        species = np.where(c[:, 2] == 2, "Mo", "S2")  # class 2 = heavy
        common = dict(image=x, coords=c[:, :2], species=species)
        np.savez(root / "sim_lattice" / f"img{k}.npz", pixel_size_A=PIXEL_SIZE, **common)
        np.savez(root / "sim_coarse" / f"img{k}.npz", pixel_size_A=0.6, **common)
        inside = bench_real.in_region(c[:, :2], REGION)
        np.savez(root / "sim_region" / f"img{k}.npz", image=x, pixel_size_A=PIXEL_SIZE,
                 coords=c[inside, :2], species=species[inside], label_region_rc=REGION)
    return root


def test_in_region_inclusive():
    points = np.array([[24.0, 24.0], [72.0, 72.0], [23.9, 50.0], [50.0, 72.1], [50.0, 50.0]])
    assert bench_real.in_region(points, REGION).tolist() == [True, True, False, False, True]
    assert bench_real.in_region(points, None).all()


def test_main_writes_scores_and_files(real_layout, tmp_path):
    out = tmp_path / "out"
    bench_real.main([str(real_layout), "--out", str(out), "--plots",
                     "--sets", "sim_coarse,sim_lattice"])
    with open(out / "real_results.json") as f:
        sets = {s["name"]: s for s in json.load(f)["sets"]}
    assert sorted(sets) == ["sim_coarse", "sim_lattice"]
    lattice = sets["sim_lattice"]
    # MoS2: Mo-S2 columns 1.82 Å apart in projection -> tolerance 0.4 x 1.82 Å
    assert lattice["tolerance_A"] == pytest.approx(0.73, abs=0.02)
    assert "median NN" in lattice["tolerance_rule"]
    sk = lattice["sklatom"]
    assert sk["status"] == "ok" and sk["seconds_per_image"] > 0
    assert sk["scores"]["recall"] > 0.95 and sk["scores"]["f1"] > 0.9
    assert sk["scores"]["rmse_A"] < 0.1
    cl = lattice["classical"]
    assert cl["method"] in ("gauss+plm", "DoG+plm") and cl["scores"]["f1"] > 0.8
    assert {"sigma_A", "min_distance_A", "threshold"} <= set(cl["params"])
    summary = lattice["class_summary"]
    n_ref = summary["reference"]["Mo"] + summary["reference"]["S2"]
    assert n_ref == sk["scores"]["n_true"]
    assert summary["matched"]["Mo"].get("heavy", 0) > 0.9 * summary["reference"]["Mo"]
    coarse = sets["sim_coarse"]["sklatom"]
    assert coarse["status"] == "refused" and coarse["scores"]["f1"] == 0.0
    assert "pixel_size" in coarse["message"]
    md = (out / "real_results.md").read_text()
    assert "refused" in md and "reference in hand" in md
    assert (out / "real_overlay_sim_lattice.png").stat().st_size > 1000


def test_label_region_restricts_scoring(real_layout):
    images = bench_real.load_set(real_layout / "sim_region")
    assert all(im.region == REGION for im in images)
    found = [bench_real.sklatom_atoms(im.image, im.pixel_size) for im in images]
    tol, _ = bench_real.set_tolerance("sim_region", images)
    inside = bench_real.score_set(found, images, tol)
    assert inside.n_true == sum(len(im.coords) for im in images)
    assert inside.n_pred == sum(int(bench_real.in_region(f, REGION).sum()) for f in found)
    assert inside.precision > 0.95 and inside.f1 > 0.95
    # the same detections scored over the whole image: the atoms found outside the labelled
    # rectangle become false detections
    whole = bench_real.score_set(found, [dataclasses.replace(im, region=None) for im in images],
                                 tol)
    assert whole.n_pred == sum(len(f) for f in found) > 2 * inside.n_pred
    assert whole.precision < 0.5 and whole.f1 < inside.f1 - 0.3
    result, _, _ = bench_real.evaluate_set("sim_region", images, log=lambda msg: None)
    assert result.sklatom.scores == inside


def test_tuned_f1_is_the_detectors(real_layout):
    """The grid search filters one peak_local_max call by threshold; the tuned detector, run
    on its own, must score exactly what the search found."""
    images = bench_real.load_set(real_layout / "sim_lattice")
    for kind in ("gauss", "dog"):
        f1, params, n_tried = bench_real.tune_classical(images, 0.7, kind)
        found = [bench_real.classical_atoms(im.image, im.pixel_size, **params) for im in images]
        assert bench_real.score_set(found, images, 0.7).f1 == pytest.approx(f1, abs=1e-12)
        assert n_tried == len(bench_real.SIGMA_A) * len(bench_real.MIN_DISTANCE_A) * len(
            bench_real.THRESHOLDS[kind]) * (1 if kind == "gauss" else len(bench_real.DOG_RATIOS))


def test_tolerance_table_and_unknown_set(real_layout, tmp_path):
    images = bench_real.load_set(real_layout / "sim_lattice")
    assert bench_real.set_tolerance("pt_single_atoms", images) == (1.0, "table")
    with pytest.raises(SystemExit):
        bench_real.main([str(real_layout), "--out", str(tmp_path), "--sets", "nope"])
