"""The names of the files ``sklatom find-atoms`` writes: unique within a run, fixed before anything
is written, never replacing a result of the same run, an input, or (without ``--overwrite``) a
result of an earlier run (issue 18)."""

import os

import pandas as pd
import pytest

from sklatom.cli import _output_stems, main
from sklatom.datasets import make_lattice_images
from sklatom.metrics import atom_scores
from sklatom.pretrained import GENERAL_LABELS

pytest.importorskip("tifffile")

from file_writers import write_format  # noqa: E402  (see conftest.py)

MODEL = os.environ.get("SKLATOM_TEST_MODEL", "general")
PIXEL_SIZE = 0.1  # Å/px
TOLERANCE = 0.5  # Å
BORDER = 0.5  # Å

#: Three different images, so that results written under the wrong name are detectable.
IMAGES = {"mos2_96": ("MoS2", (96, 96), 3), "graphene_80": ("graphene", (80, 80), 4),
          "mos2_64": ("MoS2", (64, 64), 5)}


@pytest.fixture(scope="module")
def images():
    """Name -> (image, true atoms) of three different simulated images at 0.1 Å/px."""
    out = {}
    for name, (lattice, shape, seed) in IMAGES.items():
        X, _, coords = make_lattice_images(1, lattice, shape=shape, pixel_size=PIXEL_SIZE,
                                           labels=GENERAL_LABELS, random_state=seed)
        out[name] = X[0], coords[0]
    return out


def find_atoms(*args):
    return main(["find-atoms", *map(str, args), "--model", MODEL, "--pixel-size", "0.1"])


def f1(csv, truth, shape):
    found = pd.read_csv(csv)[["row", "col", "class"]].to_numpy(float)
    return atom_scores(found, truth, tolerance=TOLERANCE, pixel_size=PIXEL_SIZE,
                       ignore_border=BORDER, image_shape=shape)["f1"]


def assert_results_belong(out, expected, images, kinds=("atoms.csv", "overlay.png")):
    """``expected`` maps each output stem to the image its results must come from; nothing
    else is in ``out``."""
    assert sorted(os.listdir(out)) == sorted(f"{stem}_{kind}" for stem in expected
                                             for kind in kinds)
    for stem, name in expected.items():
        image, truth = images[name]
        assert f1(out / f"{stem}_atoms.csv", truth, image.shape) > 0.9, (stem, name)
        for other, (other_image, other_truth) in images.items():
            if other != name:  # the test would notice a mix-up
                assert f1(out / f"{stem}_atoms.csv", other_truth, other_image.shape) < 0.5


def snapshot(folder):
    """Name -> (bytes, mtime in ns, inode) of every file in ``folder``."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino)
            for p in sorted(folder.iterdir())}


@pytest.fixture
def three_inputs(tmp_path, images):
    """``a.tif``, ``a.npy`` and ``a_tif.npy`` of three different images: a.tif and a.npy share
    the stem ``a``, and ``a_tif`` is both a.tif's file name and a_tif.npy's stem."""
    folder = tmp_path / "in"
    folder.mkdir()
    paths = []
    for file_name, name in (("a.tif", "mos2_96"), ("a.npy", "graphene_80"),
                            ("a_tif.npy", "mos2_64")):
        write_format(folder / file_name, images[name][0], PIXEL_SIZE)
        paths.append(folder / file_name)
    return paths


@pytest.mark.parametrize("options", [[], ["--overwrite"], ["--defects"]])
def test_three_clashing_names_give_three_complete_result_sets(tmp_path, three_inputs, images,
                                                              capsys, options):
    out = tmp_path / "out"
    assert find_atoms(*three_inputs, "--output", out, *options) == 0
    expected = {"a_tif": "mos2_96", "a_npy": "graphene_80", "a_tif_npy": "mos2_64"}
    kinds = ("atoms.csv", "overlay.png") + (("defects.csv",) if "--defects" in options else ())
    assert_results_belong(out, expected, images, kinds)
    captured = capsys.readouterr()
    assert "3 done, 0 skipped, 0 failed" in captured.out
    a_tif, a_npy, a_tif_npy = three_inputs
    for path, stem in ((a_tif, "a_tif"), (a_npy, "a_npy"), (a_tif_npy, "a_tif_npy")):
        assert f"  {path} -> {out / stem}_*\n" in captured.err  # the mapping is printed


def test_second_run_without_overwrite_keeps_every_file_and_says_so(
        tmp_path, three_inputs, images, capsys):
    out = tmp_path / "out"
    assert find_atoms(*three_inputs, "--output", out, "--defects") == 0
    before = snapshot(out)
    capsys.readouterr()
    assert find_atoms(*three_inputs, "--output", out, "--defects") == 1
    assert snapshot(out) == before  # same bytes, mtimes and inodes; no temporary files left
    captured = capsys.readouterr()
    for path, stem in zip(three_inputs, ("a_tif", "a_npy", "a_tif_npy")):
        assert (f"{path}: results exist ({out / stem}_atoms.csv, {out / stem}_overlay.png, "
                f"{out / stem}_defects.csv); kept them and skipped this image (pass "
                "--overwrite to recompute them)") in captured.err
    assert "0 done, 3 skipped, 0 failed (skipped: their results exist" in captured.out
    # --overwrite recomputes them, into the same names
    assert find_atoms(*three_inputs, "--output", out, "--defects", "--overwrite") == 0
    expected = {"a_tif": "mos2_96", "a_npy": "graphene_80", "a_tif_npy": "mos2_64"}
    assert_results_belong(out, expected, images, ("atoms.csv", "overlay.png", "defects.csv"))


def test_an_image_with_some_results_from_before_is_skipped(tmp_path, three_inputs, images,
                                                           capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_npy_overlay.png").write_bytes(b"from an earlier run")
    assert find_atoms(*three_inputs, "--output", out) == 1
    assert (out / "a_npy_overlay.png").read_bytes() == b"from an earlier run"
    (out / "a_npy_overlay.png").unlink()  # a.npy's set is not completed: no a_npy_atoms.csv
    assert_results_belong(out, {"a_tif": "mos2_96", "a_tif_npy": "mos2_64"}, images)
    captured = capsys.readouterr()
    assert f"{three_inputs[1]}: results exist ({out / 'a_npy_overlay.png'})" in captured.err
    assert "2 done, 1 skipped, 0 failed" in captured.out


@pytest.mark.parametrize("options", [[], ["--overwrite"]])
def test_same_file_name_in_two_directories(tmp_path, images, capsys, options):
    for folder, name in (("x", "mos2_96"), ("y", "graphene_80")):
        (tmp_path / folder).mkdir()
        write_format(tmp_path / folder / "a.tif", images[name][0], PIXEL_SIZE)
    out = tmp_path / "out"
    assert find_atoms(tmp_path / "x" / "a.tif", tmp_path / "y" / "a.tif", "--output", out,
                      *options) == 0
    assert_results_belong(out, {"x_a_tif": "mos2_96", "y_a_tif": "graphene_80"}, images)
    err = capsys.readouterr().err
    assert f"  {tmp_path / 'x' / 'a.tif'} -> {out / 'x_a_tif'}_*" in err
    assert f"  {tmp_path / 'y' / 'a.tif'} -> {out / 'y_a_tif'}_*" in err


def test_the_same_file_twice_is_analysed_once(tmp_path, images, capsys):
    path = tmp_path / "a.tif"
    write_format(path, images["mos2_96"][0], PIXEL_SIZE)
    out = tmp_path / "out"
    (tmp_path / "x").mkdir()
    again = os.path.join(str(tmp_path), "x", "..", "a.tif")  # the same file, spelt otherwise
    assert find_atoms(path, again, "--output", out) == 0
    assert_results_belong(out, {"a": "mos2_96"}, images)
    assert f"{again} is the same file as {path}; analysing it once" in capsys.readouterr().err


def test_a_result_never_replaces_an_input(tmp_path, images, capsys):
    # a.png's overlay would be a_overlay.png, which is also an input of the run
    write_format(tmp_path / "a.png", images["mos2_96"][0], PIXEL_SIZE)
    write_format(tmp_path / "a_overlay.png", images["graphene_80"][0], PIXEL_SIZE)
    before = (tmp_path / "a_overlay.png").read_bytes()
    assert find_atoms(tmp_path / "a.png", tmp_path / "a_overlay.png", "--output", tmp_path,
                      "--overwrite") == 1
    assert (tmp_path / "a_overlay.png").read_bytes() == before
    assert f"{tmp_path / 'a_overlay.png'} would replace an input of this run" in \
        capsys.readouterr().err
    assert not (tmp_path / "a_atoms.csv").exists()
    assert f1(tmp_path / "a_overlay_atoms.csv", images["graphene_80"][1],
              images["graphene_80"][0].shape) > 0.9


@pytest.mark.parametrize("paths, stems", [
    (["scan.tif", "other.npy"], ["scan", "other"]),
    (["a.tif", "a.npy", "a_tif.npy"], ["a_tif", "a_npy", "a_tif_npy"]),
    (["a_tif.npy", "a.npy", "a.tif"], ["a_tif_npy", "a_npy", "a_tif"]),  # order-independent
    (["x/a.tif", "y/a.tif"], ["x_a_tif", "y_a_tif"]),
    (["w/x/a.tif", "v/x/a.tif", "b.tif"], ["w_x_a_tif", "v_x_a_tif", "b"]),
    (["x/A.tif", "y/a.tif"], ["x_A_tif", "y_a_tif"]),  # one file on case-insensitive disks
    (["x/A.tif", "x/a.tif"], ["A_tif_1", "a_tif_2"]),  # the last resort: the position
    (["a", "a.tif"], ["a", "a_tif"]),
])
def test_output_stems(tmp_path, monkeypatch, paths, stems):
    monkeypatch.chdir(tmp_path)
    assert _output_stems(paths) == stems


def test_train_refuses_to_write_the_model_over_its_data(tmp_path, capsys):
    data = tmp_path / "data.npz"
    assert main(["simulate", "--lattice", "graphene", "--n-images", "2", "--shape", "32", "32",
                 "--output", str(data), "--quiet"]) == 0
    before = data.read_bytes()
    for overwrite in ([], ["--overwrite"]):
        assert main(["train", str(data), "--output", str(data), "--epochs", "1",
                     "--base-filters", "4", "--patch-size", "16", "--quiet", *overwrite]) == 1
        assert "is the training data file" in capsys.readouterr().err
    assert data.read_bytes() == before
