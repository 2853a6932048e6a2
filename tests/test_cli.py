"""Tests of the ``sklatom`` command line on small real files of every supported format.

The atom-finding tests use the shipped pretrained model (``load_pretrained()``, via
``--model general``); set ``SKLATOM_TEST_MODEL`` to a ``.safetensors`` file to run them with
another model with the same classes.
"""

import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from sklatom.cli import main
from sklatom.datasets import DATASET_FORMAT, load_dataset, make_lattice_images
from sklatom.metrics import atom_scores
from sklatom.pretrained import GENERAL_LABELS

pytest.importorskip("rsciio")  # the .dm3/.dm4/.ser/.emd/.hspy files below need it

from file_writers import ALL_EXTENSIONS, write_format  # noqa: E402  (see conftest.py)

MODEL = os.environ.get("SKLATOM_TEST_MODEL", "general")
PIXEL_SIZE = 0.1  # Å/px
TOLERANCE = 0.5  # Å
BORDER = 0.5  # Å: atoms cut by the image edge are not scored (as in the model card)


def run_cli(*args, env=None, timeout=300):
    """Run ``python -m sklatom.cli ARGS`` and return the completed process."""
    environ = dict(os.environ)
    environ.setdefault("MPLBACKEND", "Agg")
    if env:
        environ.update(env)
    return subprocess.run([sys.executable, "-m", "sklatom.cli", *map(str, args)],
                          capture_output=True, text=True, env=environ, timeout=timeout)


@pytest.fixture(scope="module")
def mos2():
    """A 96x96 px MoS2 image at 0.1 Å/px and its true atoms (general model classes)."""
    X, _, coords = make_lattice_images(1, "MoS2", shape=(96, 96), pixel_size=PIXEL_SIZE,
                                       labels=GENERAL_LABELS, random_state=3)
    return X[0], coords[0]


@pytest.fixture(scope="module")
def batch(tmp_path_factory, mos2):
    """One find-atoms run over the image in every format plus a corrupt file."""
    image, _ = mos2
    folder = tmp_path_factory.mktemp("inputs")
    paths, stated = [], {}
    for ext in ALL_EXTENSIONS:
        path = folder / f"mos2_{ext[1:]}{ext}"
        stated[ext] = write_format(path, image, PIXEL_SIZE)
        paths.append(path)
    corrupt = folder / "corrupt.dm3"
    corrupt.write_bytes(b"\x00\x00\x00\x03" + b"\x01" * 64)
    paths.insert(3, corrupt)
    paths.insert(6, folder / "missing.tif")
    out = tmp_path_factory.mktemp("results")
    t0 = time.perf_counter()
    proc = run_cli("find-atoms", *paths, "--output", out, "--model", MODEL)
    return {"proc": proc, "out": out, "stated": stated, "seconds": time.perf_counter() - t0}


def _scores(found, truth, shape):
    return atom_scores(found, truth, tolerance=TOLERANCE, pixel_size=PIXEL_SIZE,
                       ignore_border=BORDER, image_shape=shape)


def _atoms(path):
    table = pd.read_csv(path)
    return table, table[["row", "col", "class"]].to_numpy(float)


# --------------------------------------------------------------------------------------------
# find-atoms
# --------------------------------------------------------------------------------------------
def test_batch_with_bad_files_exits_1_and_keeps_the_rest(batch):
    proc = batch["proc"]
    assert proc.returncode == 1, proc.stderr
    assert "corrupt.dm3 as a DigitalMicrograph file" in proc.stderr
    assert "no such file: " in proc.stderr and "missing.tif" in proc.stderr
    assert "Traceback" not in proc.stderr  # user errors are one-line messages
    assert "8 done, 0 skipped, 2 failed" in proc.stdout
    written = sorted(os.listdir(batch["out"]))
    assert written == sorted(f"mos2_{e[1:]}_{kind}" for e in ALL_EXTENSIONS
                             for kind in ("atoms.csv", "overlay.png"))
    assert not any(name.startswith("corrupt") for name in written)


@pytest.mark.parametrize("ext", ALL_EXTENSIONS)
def test_found_atoms_match_the_truth_in_every_format(batch, mos2, ext):
    image, truth = mos2
    table, found = _atoms(batch["out"] / f"mos2_{ext[1:]}_atoms.csv")
    assert list(table.columns[:4]) == ["row", "col", "class", "class_name"]
    assert "confidence" in table and table["confidence"].between(0, 1).all()
    assert set(table["class_name"]) <= {"light", "heavy"}
    assert np.all(table["class_name"].map({"light": 1, "heavy": 2}) == table["class"])
    scores = _scores(found, truth, image.shape)
    assert scores["f1"] > 0.9, scores
    assert scores["rmse"] < 0.1, scores  # Å
    if batch["stated"][ext] is None:  # png, npy: no calibration in the file
        assert "x_A" not in table and "y_A" not in table
        assert f"mos2_{ext[1:]}{ext}: no pixel size in the file" in batch["proc"].stderr
    else:
        np.testing.assert_allclose(table["x_A"], table["col"] * PIXEL_SIZE, atol=2e-4)
        np.testing.assert_allclose(table["y_A"], table["row"] * PIXEL_SIZE, atol=2e-4)


def test_formats_agree_with_each_other(batch):
    reference = _atoms(batch["out"] / "mos2_npy_atoms.csv")[1]
    for ext in ALL_EXTENSIONS:
        if ext == ".png":  # 8-bit quantised: may differ slightly
            continue
        found = _atoms(batch["out"] / f"mos2_{ext[1:]}_atoms.csv")[1]
        np.testing.assert_allclose(found, reference, atol=1e-3, err_msg=ext)


@pytest.fixture
def npy_image(tmp_path, mos2):
    path = tmp_path / "scan.npy"
    np.save(path, mos2[0])
    return path


def test_existing_results_are_not_overwritten(tmp_path, npy_image, capsys):
    out = tmp_path / "out"
    args = ["find-atoms", str(npy_image), "--output", str(out), "--model", MODEL,
            "--pixel-size", "0.1"]
    assert main(args) == 0
    csv = out / "scan_atoms.csv"
    original = csv.read_text()
    csv.write_text(original + "# edited by hand\n")
    capsys.readouterr()
    assert main(args) == 1  # skipped: the results were not made by this run
    err = capsys.readouterr().err
    assert "skipped" in err and "scan_atoms.csv" in err and "--overwrite" in err
    assert csv.read_text().endswith("# edited by hand\n")
    assert main(args + ["--overwrite"]) == 0
    assert csv.read_text() == original
    assert sorted(os.listdir(out)) == ["scan_atoms.csv", "scan_overlay.png"]


def test_defects_column_and_table(tmp_path, npy_image, capsys):
    out = tmp_path / "out"
    code = main(["find-atoms", str(npy_image), "--output", str(out), "--model", MODEL,
                 "--pixel-size", "0.1", "--defects", "--species", "S2,Mo", "--quiet"])
    assert code == 0
    assert capsys.readouterr().out == ""  # --quiet
    atoms = pd.read_csv(out / "scan_atoms.csv")
    assert list(atoms.columns) == ["row", "col", "class", "class_name", "species", "x_A", "y_A",
                                   "confidence", "defect"]
    assert set(atoms["species"]) <= {"S2", "Mo"}
    assert np.all((atoms["species"] == "Mo") == (atoms["class_name"] == "heavy"))
    assert (atoms["defect"] == "lattice").mean() > 0.5
    defects = pd.read_csv(out / "scan_defects.csv")
    assert list(defects.columns) == ["name", "row", "col", "n_atoms", "x_A", "y_A"]
    assert set(defects["name"]) <= set(atoms["defect"]) - {"lattice"}
    assert (out / "scan_overlay.png").stat().st_size > 0


@pytest.mark.skipif(MODEL != "general", reason="the calibration is the shipped model's")
def test_uncertainty_columns_and_report(tmp_path, npy_image, mos2, capsys):
    out = tmp_path / "out"
    assert main(["find-atoms", str(npy_image), "--output", str(out), "--model", MODEL,
                 "--pixel-size", "0.1", "--uncertainty"]) == 0
    report = capsys.readouterr().out
    assert "out-of-distribution score" in report and "threshold 1" in report
    atoms = pd.read_csv(out / "scan_atoms.csv")
    assert list(atoms.columns)[-3:] == ["existence", "class_probability", "sigma_A"]
    assert atoms["existence"].between(0, 1).all() and (atoms["sigma_A"] > 0).all()
    _, found = _atoms(out / "scan_atoms.csv")
    assert _scores(found, mos2[1], mos2[0].shape)["f1"] > 0.9
    # the atoms the ensemble is sure of are nearly all of them on a clean image
    assert (atoms["existence"] >= 0.5).mean() > 0.9


def test_pixel_size_option_overrides_the_file(tmp_path, mos2, capsys):
    path = tmp_path / "cal.hspy"
    write_format(path, mos2[0], 0.2)  # the file claims 0.2 Å/px
    out = tmp_path / "out"
    assert main(["find-atoms", str(path), "--output", str(out), "--model", MODEL,
                 "--pixel-size", "0.1"]) == 0
    assert "pixel size 0.1 Å/px (--pixel-size)" in capsys.readouterr().out
    table, found = _atoms(out / "cal_atoms.csv")
    assert _scores(found, mos2[1], mos2[0].shape)["f1"] > 0.9


def test_colliding_stems_keep_their_extension(tmp_path, mos2, capsys):
    for ext in (".npy", ".tif"):
        write_format(tmp_path / f"same{ext}", mos2[0], PIXEL_SIZE)
    out = tmp_path / "out"
    assert main(["find-atoms", str(tmp_path / "same.npy"), str(tmp_path / "same.tif"),
                 "--output", str(out), "--model", MODEL, "--pixel-size", "0.1",
                 "--quiet"]) == 0
    assert sorted(os.listdir(out)) == ["same_npy_atoms.csv", "same_npy_overlay.png",
                                       "same_tif_atoms.csv", "same_tif_overlay.png"]


def test_stack_uses_the_first_frame_or_frame_option(tmp_path, mos2, capsys):
    import tifffile

    path = tmp_path / "series.tif"
    blank = np.full_like(mos2[0], float(np.median(mos2[0])))
    tifffile.imwrite(path, np.stack([mos2[0], blank]), photometric="minisblack")
    out = tmp_path / "out"
    common = ["--output", str(out), "--model", MODEL, "--pixel-size", "0.1"]
    assert main(["find-atoms", str(path)] + common) == 0
    assert "holds 2 frames" in capsys.readouterr().err
    first = pd.read_csv(out / "series_atoms.csv")
    assert main(["find-atoms", str(path), "--frame", "1", "--overwrite"] + common) == 0
    assert "frames" not in capsys.readouterr().err
    assert len(pd.read_csv(out / "series_atoms.csv")) < len(first) // 2  # the blank frame


@pytest.mark.parametrize("args, match", [
    (["--pixel-size", "5"], "--pixel-size=5.0 Å/px is outside the 0.05-0.5 Å/px"),
    (["--model", "no-such-model"], "neither a pretrained model"),
    (["--species", "C,Si,N", "--defects"], "--species names 3 classes"),
])
def test_user_errors_exit_1_with_a_message(tmp_path, npy_image, capsys, args, match):
    code = main(["find-atoms", str(npy_image), "--output", str(tmp_path / "o")] + args
                + ([] if "--model" in args else ["--model", MODEL]))
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("sklatom: error: find-atoms: ") and match in err


def test_bad_files_are_reported_per_file(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    code = main(["find-atoms", str(tmp_path / "missing.tif"), str(tmp_path / "notes.txt"),
                 "--output", str(tmp_path / "o"), "--model", MODEL])
    assert code == 1
    err = capsys.readouterr().err
    assert "no such file: " in err and "missing.tif" in err
    assert "unsupported file extension '.txt'" in err and ".dm3" in err


def test_file_pixel_size_out_of_model_range(tmp_path, mos2, capsys):
    path = tmp_path / "coarse.tif"
    write_format(path, mos2[0], 1.0)
    assert main(["find-atoms", str(path), "--output", str(tmp_path / "o"),
                 "--model", MODEL]) == 1
    err = capsys.readouterr().err
    assert "the pixel size (ImageJ metadata)=1.0 Å/px is outside the 0.05-0.5 Å/px" in err
    assert "record the image at a finer sampling" in err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["find-atoms", "x.tif", "--pixel-size", "abc"])
    assert info.value.code == 2
    assert "expected a positive number; got 'abc'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["find-atoms"])
    assert info.value.code == 2


@pytest.mark.parametrize("command", [[], ["demo"], ["find-atoms"], ["simulate"], ["train"]])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main(command + ["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: sklatom {' '.join(command)}".rstrip())
    for word in {(): ["find-atoms", "simulate", "train", "demo"], ("demo",): ["--output"],
                 ("find-atoms",): ["--pixel-size", "--defects", "--overwrite", ".dm4"],
                 ("simulate",): ["--lattice", "--n-images", "--method", "--dose"],
                 ("train",): ["--epochs", "--base-filters"]}[tuple(command)]:
        assert word in out


def test_help_through_python_m():
    proc = run_cli("--help")
    assert proc.returncode == 0 and "find-atoms" in proc.stdout


# --------------------------------------------------------------------------------------------
# simulate and train
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim") / "data.npz"
    env = {"TQDM_DISABLE": ""}  # show the progress bar (conftest disables it)
    proc = run_cli("simulate", "--lattice", "graphene", "--n-images", "3", "--shape", "32",
                   "40", "--seed", "1", "--output", path, env=env)
    return path, proc


def test_simulate_writes_the_data_set(simulated):
    path, proc = simulated
    assert proc.returncode == 0, proc.stderr
    assert "simulating graphene" in proc.stderr and "3/3" in proc.stderr  # the progress bar
    with np.load(path, allow_pickle=False) as data:
        assert data["images"].shape == (3, 32, 40) and data["images"].dtype == np.float32
        assert data["masks"].shape == (3, 32, 40)
        assert list(data["classes"]) == ["background", "C", "Si"]
        coords = data["coordinates"]
        assert coords.shape[1] == 4 and set(np.unique(coords[:, 0])) == {0, 1, 2}
        assert float(data["pixel_size"]) == 0.1
        assert str(data["format"]) == DATASET_FORMAT
        # every true atom lies on a labelled pixel of its class
        for i, r, c, k in coords:
            assert data["masks"][int(i), int(round(r)), int(round(c))] == k
    loaded = load_dataset(path)  # what the library reads back
    assert loaded.metadata["method"] == "incoherent" and loaded.metadata["seed"] == 1
    assert loaded.metadata["lattices"] == ["graphene"] * 3
    assert [len(c) for c in loaded.coordinates] == [
        int((coords[:, 0] == i).sum()) for i in range(3)]


def test_simulate_is_reproducible_and_quiet(tmp_path, simulated, capsys):
    path = tmp_path / "again.npz"
    assert main(["simulate", "--lattice", "graphene", "--n-images", "3", "--shape", "32",
                 "40", "--seed", "1", "--output", str(path), "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")
    with np.load(path) as a, np.load(simulated[0]) as b:
        np.testing.assert_array_equal(a["images"], b["images"])
        np.testing.assert_array_equal(a["coordinates"], b["coordinates"])


def test_simulate_errors(tmp_path, simulated, capsys):
    assert main(["simulate", "--lattice", "graphene", "--n-images", "1",
                 "--output", str(simulated[0])]) == 1
    assert "exists; use --overwrite" in capsys.readouterr().err
    assert main(["simulate", "--lattice", "graphene", "--n-images", "1",
                 "--output", str(tmp_path / "x.txt")]) == 1
    assert "--output must be a .npz file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["simulate", "--lattice", "diamond", "--n-images", "1", "--output", "x.npz"])
    assert info.value.code == 2


def test_train_then_find_atoms_with_the_model(tmp_path, simulated, capsys):
    from sklatom.segmentation import FCNSegmenter

    model = tmp_path / "tiny.safetensors"
    proc = run_cli("train", simulated[0], "--output", model, "--epochs", "1",
                   "--base-filters", "4", "--patch-size", "16", "--quiet",
                   env={"OMP_NUM_THREADS": "1"})  # 512 tiny patches: one torch thread is fastest
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    seg = FCNSegmenter.load(model)
    assert seg.classes_ == ["background", "C", "Si"] and seg.pixel_size_ == 0.1
    image = tmp_path / "img.npy"
    with np.load(simulated[0]) as data:
        np.save(image, data["images"][0])
    assert main(["find-atoms", str(image), "--model", str(model), "--output",
                 str(tmp_path / "o"), "--quiet"]) == 0
    assert list(pd.read_csv(tmp_path / "o" / "img_atoms.csv").columns) == [
        "row", "col", "class", "class_name", "confidence"]
    capsys.readouterr()
    assert main(["train", str(simulated[0]), "--output", str(model)]) == 1
    assert "exists; use --overwrite" in capsys.readouterr().err


@pytest.mark.usefixtures("one_torch_thread")
def test_train_patches_follow_the_network_and_the_images(tmp_path, capsys):
    from sklatom.datasets import make_lattice_images, save_dataset
    from sklatom.pretrained import GENERAL_LABELS
    from sklatom.segmentation import FCNSegmenter

    X, y, _ = make_lattice_images(2, "MoS2", shape=(88, 88), labels=GENERAL_LABELS,
                                  random_state=0)
    data = tmp_path / "mos2.npz"
    save_dataset(data, X, y, classes=["background", "light", "heavy"], pixel_size=0.1)
    # 88 px images and the pretrained model (multiples of 16 px): 80 px patches, not 88
    out = tmp_path / "tuned.safetensors"
    assert main(["train", str(data), "--init", "general", "--output", str(out),
                 "--epochs", "1", "--quiet"]) == 0
    assert FCNSegmenter.load(out).patch_size == 80
    # images smaller than one patch of the network: an error that says so
    small = tmp_path / "small.npz"
    save_dataset(small, X[:, :12, :12], y[:, :12, :12],
                 classes=["background", "light", "heavy"], pixel_size=0.1)
    capsys.readouterr()
    assert main(["train", str(small), "--init", "general", "--output",
                 str(tmp_path / "x.safetensors"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "12x12 px" in err and "at least 16 px" in err


@pytest.mark.usefixtures("one_torch_thread")  # 512 tiny patches per epoch
def test_train_init_fine_tunes_a_model(tmp_path, simulated, capsys):
    import torch

    from sklatom.segmentation import FCNSegmenter

    base = tmp_path / "base.safetensors"
    assert main(["train", str(simulated[0]), "--output", str(base), "--epochs", "1",
                 "--base-filters", "4", "--patch-size", "16", "--quiet"]) == 0
    tuned = tmp_path / "tuned.safetensors"
    assert main(["train", str(simulated[0]), "--init", str(base), "--output", str(tuned),
                 "--epochs", "1", "--patch-size", "16", "--quiet"]) == 0
    a, b = FCNSegmenter.load(base), FCNSegmenter.load(tuned)
    assert b.classes_ == a.classes_ and b.module__base_filters == 4  # same network, retrained
    wa, wb = a.net_.module_.state_dict(), b.net_.module_.state_dict()
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)
    assert b.init_model == str(base)  # the fine-tuned file records where it started
    # the pretrained model has light/heavy classes; these data are C/Si/background (3 too).
    # Its patches are multiples of 16 px (space_to_depth 2, depth 3): 24 px rounds down to 16
    general = tmp_path / "general.safetensors"
    assert main(["train", str(simulated[0]), "--init", "general", "--output", str(general),
                 "--epochs", "1", "--patch-size", "24", "--quiet"]) == 0
    assert FCNSegmenter.load(general).patch_size == 16
    # but a 2-class data set cannot fine-tune it
    two = tmp_path / "two.npz"
    with np.load(simulated[0]) as data:
        arrays = dict(data)
    arrays["classes"] = np.array(["background", "atom"])
    arrays["masks"] = (arrays["masks"] > 0).astype(arrays["masks"].dtype)
    np.savez(two, **arrays)
    capsys.readouterr()
    assert main(["train", str(two), "--init", "general", "--output",
                 str(tmp_path / "x.safetensors"), "--quiet"]) == 1
    assert "has classes ['background', 'light', 'heavy']" in capsys.readouterr().err


def test_train_rejects_a_bad_data_file(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((2, 8, 8)))
    assert main(["train", str(bad), "--output", str(tmp_path / "m.safetensors")]) == 1
    assert "lacks the arrays ['masks', 'classes']" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "none.npz"), "--output", "m.safetensors"]) == 1
    assert "no such file" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    proc = run_cli("demo", "--output", tmp_path / "demo", "--model", MODEL, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for title in ("graphene", "MoS2"):
        assert f"== {title}: 256x256 px at 0.1 Å/px, PRISM" in out
        assert (tmp_path / "demo" / f"{title}_atoms.csv").stat().st_size > 0
        assert (tmp_path / "demo" / f"{title}_overlay.png").stat().st_size > 0
    f1 = [float(line.split("F1")[1].split()[0]) for line in out.splitlines()
          if line.strip().startswith("precision")]
    assert len(f1) == 2 and min(f1) > 0.8, out
    assert "RMSE" in out and "defects" in out and "light = C, heavy = Si" in out
    # rerunning without --overwrite refuses before simulating anything
    again = run_cli("demo", "--output", tmp_path / "demo", "--model", MODEL)
    assert again.returncode == 1 and "--overwrite" in again.stderr
