"""Tests of sklatom.io: every format on small real files written here, units, stacks, errors.

DigitalMicrograph (.dm3/.dm4) and TIA (.ser) files cannot be written by RosettaSciIO; the
minimal writers in ``tests/file_writers.py`` follow the published layouts (shared with
``tests/test_cli.py``).
"""

import os
import sys
import warnings

import numpy as np
import pytest

from sklatom._validation import SklatomWarning
from sklatom.io import SUPPORTED_EXTENSIONS, atomic_path, read_image, write_csv_atomic

pytest.importorskip("rsciio")
tifffile = pytest.importorskip("tifffile")

from file_writers import (  # noqa: E402  (tests/ is on sys.path, see conftest.py)
    ALL_EXTENSIONS, write_dm, write_emd, write_format, write_hspy, write_png, write_ser)


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return (rng.random((24, 40)) * 1000).astype(np.float32)


# --------------------------------------------------------------------------------------------
# every format
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", ALL_EXTENSIONS)
def test_read_every_format(tmp_path, image, ext):
    path = tmp_path / f"image{ext}"
    stated = write_format(path, image, 0.12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean single image reads without warnings
        out, pixel_size, meta = read_image(path)
    assert out.shape == image.shape and out.dtype == np.float32
    if ext == ".png":
        expected = write_png(tmp_path / "again.png", image).astype(np.float32)
        np.testing.assert_array_equal(out, expected)
    else:
        np.testing.assert_allclose(out, image, rtol=1e-6)
    if stated is None:
        assert pixel_size is None and meta["pixel_size_source"] is None
    else:
        assert pixel_size == stated  # DM stores float32 scales: rounded to 7 digits
    assert meta["format"] == SUPPORTED_EXTENSIONS[ext]
    assert meta["n_frames"] == 1 and meta["frame"] == 0
    assert meta["path"] == str(path)


def test_extension_is_case_insensitive(tmp_path, image):
    path = tmp_path / "IMAGE.TIF"
    write_format(tmp_path / "image.tif", image, 0.1)
    os.replace(tmp_path / "image.tif", path)
    assert read_image(path)[1] == pytest.approx(0.1)


# --------------------------------------------------------------------------------------------
# pixel size and units
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("units, scale, expected", [
    ("nm", 0.01, 0.1), ("Å", 0.2, 0.2), ("A", 0.2, 0.2), ("pm", 15.0, 0.15),
    ("µm", 1e-5, 0.1), ("um", 2e-5, 0.2), ("m", 1e-11, 0.1), ("nanometer", 0.01, 0.1),
])
def test_axes_units_convert_to_angstrom(tmp_path, image, units, scale, expected):
    path = tmp_path / "image.hspy"
    write_hspy(path, image, units, scale)
    assert read_image(path)[1] == pytest.approx(expected)


@pytest.mark.parametrize("units", ["1/nm", "nm^-1", "1 / nm"])
def test_reciprocal_units_give_no_pixel_size(tmp_path, image, units):
    path = tmp_path / "diffraction.hspy"
    write_hspy(path, image, units, 0.05)
    with pytest.warns(SklatomWarning, match="reciprocal"):
        _, pixel_size, _ = read_image(path)
    assert pixel_size is None


def test_unknown_unit_gives_no_pixel_size(tmp_path, image):
    path = tmp_path / "odd.emd"
    write_emd(path, image, "furlong", 1.0)
    with pytest.warns(SklatomWarning, match="unknown length unit"):
        assert read_image(path)[1] is None


def test_uncalibrated_axes_give_no_pixel_size(tmp_path, image):
    path = tmp_path / "raw.hspy"
    write_hspy(path, image, "", 1.0)
    assert read_image(path)[1] is None


def test_tiff_pixel_size_sources(tmp_path, image):
    cases = {
        "imagej_um.tif": dict(imagej=True, resolution=(1e5, 1e5), metadata={"unit": "micron"}),
        "ome_pm.tif": dict(ome=True, metadata={"PhysicalSizeX": 12.5, "PhysicalSizeXUnit": "pm"}),
        "cm.tif": dict(resolution=(1e9, 1e9), resolutionunit="CENTIMETER"),
        "json.tif": dict(metadata={"pixel_size": 0.3, "unit": "Å"}),
    }
    expected = {"imagej_um.tif": (0.1, "ImageJ"), "ome_pm.tif": (0.125, "OME"),
                "cm.tif": (0.1, "resolution tags"), "json.tif": (0.3, "description")}
    for name, kwargs in cases.items():
        tifffile.imwrite(tmp_path / name, image, **kwargs)
        _, pixel_size, meta = read_image(tmp_path / name)
        assert pixel_size == pytest.approx(expected[name][0]), name
        assert expected[name][1] in meta["pixel_size_source"], name


def test_tiff_print_resolution_is_not_a_pixel_size(tmp_path, image):
    tifffile.imwrite(tmp_path / "plain.tif", image)
    assert read_image(tmp_path / "plain.tif")[1] is None
    tifffile.imwrite(tmp_path / "dpi.tif", image, resolution=(300, 300), resolutionunit="INCH")
    with pytest.warns(SklatomWarning, match="print resolution"):
        assert read_image(tmp_path / "dpi.tif")[1] is None


def test_dm_and_ser_calibration_of_another_pixel_size(tmp_path, image):
    write_dm(tmp_path / "a.dm4", image, 25.0, "pm", version=4)
    write_ser(tmp_path / "a.ser", image, 7.5e-12)
    assert read_image(tmp_path / "a.dm4")[1] == pytest.approx(0.25)
    assert read_image(tmp_path / "a.ser")[1] == pytest.approx(0.075)


# --------------------------------------------------------------------------------------------
# stacks, colour, dtypes
# --------------------------------------------------------------------------------------------
def _write_stack(path, stack):
    ext = os.path.splitext(str(path))[1]
    if ext == ".tif":
        tifffile.imwrite(path, stack, photometric="minisblack")
    elif ext == ".npy":
        np.save(path, stack)
    elif ext == ".hspy":
        write_hspy(path, stack)
    elif ext == ".emd":
        write_emd(path, stack)
    elif ext == ".dm4":
        write_dm(path, stack, version=4)
    elif ext == ".ser":
        write_ser(path, stack)


@pytest.mark.parametrize("ext", [".tif", ".npy", ".hspy", ".emd", ".dm4", ".ser"])
def test_stack_first_frame_with_warning_or_chosen_frame(tmp_path, image, ext):
    stack = np.stack([image, image + 1, image + 2]).astype(np.float32)
    path = tmp_path / f"stack{ext}"
    _write_stack(path, stack)
    with pytest.warns(SklatomWarning, match="3 frames"):
        first, _, meta = read_image(path)
    np.testing.assert_allclose(first, stack[0])
    assert meta["n_frames"] == 3 and meta["frame"] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second, _, meta = read_image(path, frame=1)
        last, _, _ = read_image(path, frame=-1)
    np.testing.assert_allclose(second, stack[1])
    np.testing.assert_allclose(last, stack[2])
    assert meta["frame"] == 1
    with pytest.raises(ValueError, match=r"frame=3 is out of range.*3 frame"):
        read_image(path, frame=3)


def test_frame_must_be_an_integer(tmp_path, image):
    np.save(tmp_path / "a.npy", image)
    with pytest.raises(TypeError, match="frame must be an integer"):
        read_image(tmp_path / "a.npy", frame="1")


def test_rgb_png_and_tiff_become_luminance(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([rgb, np.full((10, 12), 255, np.uint8)])).save(
        tmp_path / "rgba.png")
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(rgb, -1, 0), photometric="rgb",
                     planarconfig="separate")
    expected = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.float32)
    for name in ("rgb.png", "rgba.png", "rgb.tif", "planar.tif"):
        out = read_image(tmp_path / name)[0]
        assert out.shape == (10, 12)
        np.testing.assert_allclose(out, expected, atol=1.0)  # Pillow rounds to integers


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float64, bool])
def test_dtypes_become_float32(tmp_path, dtype):
    data = (np.arange(20).reshape(4, 5) % 2).astype(dtype)
    np.save(tmp_path / "a.npy", data)
    out = read_image(tmp_path / "a.npy")[0]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, data.astype(np.float32))


def test_16_bit_png_keeps_its_range(tmp_path):
    from PIL import Image

    data = np.array([[0, 1000], [40000, 65535]], dtype=np.uint16)
    Image.fromarray(data).save(tmp_path / "deep.png")
    np.testing.assert_array_equal(read_image(tmp_path / "deep.png")[0], data.astype(np.float32))


def test_some_nan_pixels_are_filled_with_a_warning(tmp_path, image):
    data = image.copy()
    data[0, :3] = np.nan
    np.save(tmp_path / "a.npy", data)
    with pytest.warns(SklatomWarning, match="3 of 960 pixels are NaN"):
        out = read_image(tmp_path / "a.npy")[0]
    assert np.all(np.isfinite(out))
    assert out[0, 0] == pytest.approx(np.median(image.ravel()[3:]), rel=1e-3)


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------
def test_unknown_extension_lists_the_supported_ones(tmp_path):
    path = tmp_path / "image.jpg"
    path.write_bytes(b"\xff\xd8")
    with pytest.raises(ValueError, match=r"image\.jpg.*unsupported.*'\.jpg'.*\.dm3.*\.tif"):
        read_image(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file.*nothere.tif"):
        read_image(tmp_path / "nothere.tif")
    (tmp_path / "dir.tif").mkdir()
    with pytest.raises(IsADirectoryError, match="directory"):
        read_image(tmp_path / "dir.tif")


@pytest.mark.parametrize("ext", ALL_EXTENSIONS)
def test_corrupt_file_names_file_and_format(tmp_path, ext):
    path = tmp_path / f"broken{ext}"
    path.write_bytes(b"\x00\x00\x00\x03" + bytes(range(256)) * 2)
    with pytest.raises(ValueError, match=rf"could not read .*broken\{ext} as an? "
                                         rf"{SUPPORTED_EXTENSIONS[ext]} file"):
        read_image(path)


@pytest.mark.parametrize("ext", ALL_EXTENSIONS)
def test_truncated_file(tmp_path, image, ext):
    good = tmp_path / f"good{ext}"
    write_format(good, image, 0.1)
    content = good.read_bytes()
    path = tmp_path / f"truncated{ext}"
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match=r"truncated"):
        read_image(path)


@pytest.mark.parametrize("ext", ALL_EXTENSIONS)
def test_empty_file(tmp_path, ext):
    path = tmp_path / f"empty{ext}"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty file \(0 bytes\)"):
        read_image(path)


@pytest.mark.parametrize("data, match", [
    (np.full((4, 4), np.nan), "every pixel .* NaN"),
    (np.ones(5), r"shape \(5,\); expected a 2-D image"),
    (np.zeros((0, 5)), r"empty image \(shape \(0, 5\)\)"),
    (np.ones((3, 3), complex), "complex image"),
])
def test_not_an_image(tmp_path, data, match):
    np.save(tmp_path / "bad.npy", data)
    with pytest.raises(ValueError, match=match):
        read_image(tmp_path / "bad.npy")


def test_object_array_is_not_unpickled(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle=False"):
        read_image(tmp_path / "obj.npy")


def test_spectrum_is_not_an_image(tmp_path):
    write_hspy(tmp_path / "spectrum.hspy", np.ones(100, np.float32))
    with pytest.raises(ValueError, match="no 2-D image"):
        read_image(tmp_path / "spectrum.hspy")


def test_missing_rosettasciio_gives_install_hint(tmp_path, image, monkeypatch):
    path = tmp_path / "a.hspy"
    write_hspy(path, image)
    monkeypatch.setitem(sys.modules, "rsciio.hspy", None)  # import now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "sklatom\[io\]"'):
        read_image(path)


# --------------------------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------------------------
def test_write_csv_atomic_refuses_to_overwrite(tmp_path):
    import pandas as pd

    path = tmp_path / "atoms.csv"
    write_csv_atomic(pd.DataFrame({"row": [1.0], "col": [2.5]}), path)
    assert path.read_text().splitlines() == ["row,col", "1.0,2.5"]
    with pytest.raises(FileExistsError, match=r"atoms\.csv exists.*overwrite"):
        write_csv_atomic({"row": [9.0]}, path)
    assert path.read_text().splitlines() == ["row,col", "1.0,2.5"]
    write_csv_atomic({"row": [9.0]}, path, overwrite=True)
    assert path.read_text().splitlines() == ["row", "9.0"]
    assert sorted(os.listdir(tmp_path)) == ["atoms.csv"]  # no temporary files left


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / "result.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(path, overwrite=True) as tmp:
            assert os.path.dirname(tmp) == str(tmp_path) and tmp.endswith(".txt")
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["result.txt"]


def test_atomic_path_never_clobbers_a_file_that_appears_meanwhile(tmp_path):
    path = tmp_path / "result.txt"
    with pytest.raises(FileExistsError):
        with atomic_path(path) as tmp:
            with open(tmp, "w") as f:
                f.write("new")
            path.write_text("someone else's")
    assert path.read_text() == "someone else's"
    assert os.listdir(tmp_path) == ["result.txt"]
