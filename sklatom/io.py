"""Read microscope images with their pixel size, and write results without clobbering files.

:func:`read_image` opens one image file and returns a 2-D float32 array, its pixel size in Å/px
(or None when the file does not say) and a small metadata dictionary. Supported formats:

============================ ============================================ =====================
extension                    reader                                       pixel size from
============================ ============================================ =====================
``.tif``, ``.tiff``          tifffile                                     ImageJ, OME-XML,
                                                                          FEI/Zeiss SEM tags,
                                                                          a JSON description,
                                                                          resolution tags
``.png``                     Pillow                                       (none)
``.npy``                     numpy (``allow_pickle=False``)               (none)
``.dm3``, ``.dm4``           RosettaSciIO ``digitalmicrograph``           calibrated axes
``.emd``                     RosettaSciIO ``emd`` (Velox and NCEM)        calibrated axes
``.ser``                     RosettaSciIO ``tia``                         calibrated axes
``.hspy``                    RosettaSciIO ``hspy``                        calibrated axes
============================ ============================================ =====================

The RosettaSciIO formats need the optional dependency: ``pip install "sklatom[io]"``.

:func:`atomic_path` and :func:`write_csv_atomic` write a result to a temporary file next to its
destination and move it into place only when it is complete, so an interrupted run never
leaves a half-written file, and an existing file is never replaced unless asked to.
"""

import contextlib
import json
import logging
import numbers
import os
import re
import tempfile
import warnings
import xml.etree.ElementTree as ET

import numpy as np

from ._validation import SklatomWarning

__all__ = ["read_image", "SUPPORTED_EXTENSIONS", "atomic_path", "write_csv_atomic"]

#: File extension -> (format name, reader).
SUPPORTED_EXTENSIONS = {
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".png": "PNG",
    ".npy": "NumPy",
    ".dm3": "DigitalMicrograph",
    ".dm4": "DigitalMicrograph",
    ".emd": "EMD",
    ".ser": "TIA SER",
    ".hspy": "HyperSpy",
}
_RSCIIO_PLUGINS = {".dm3": "digitalmicrograph", ".dm4": "digitalmicrograph", ".emd": "emd",
                   ".ser": "tia", ".hspy": "hspy"}

# length units -> Å
_ANGSTROM_PER_UNIT = {
    "å": 1.0, "a": 1.0, "ang": 1.0, "angstrom": 1.0, "angstroms": 1.0, "ångström": 1.0,
    "\u212b": 1.0,  # the Ångström sign
    "pm": 0.01, "picometer": 0.01, "picometers": 0.01, "picometre": 0.01,
    "nm": 10.0, "nanometer": 10.0, "nanometers": 10.0, "nanometre": 10.0,
    "µm": 1e4, "μm": 1e4, "um": 1e4, "micron": 1e4, "microns": 1e4, "micrometer": 1e4,
    "micrometers": 1e4, "micrometre": 1e4, "\\u00b5m": 1e4,
    "mm": 1e7, "millimeter": 1e7, "cm": 1e8, "centimeter": 1e8,
    "m": 1e10, "meter": 1e10, "meters": 1e10, "metre": 1e10,
}
_RECIPROCAL = re.compile(r"(^1\s*/)|(\^\s*-\s*1)|(-1$)|(⁻¹)|(^1/)|(reciprocal)", re.IGNORECASE)
# resolution tags in print units (dpi) give pixel sizes far above this; they are not a
# calibration of a microscope image
_MAX_TAG_PIXEL_SIZE = 1e4  # Å/px, 1 µm


class _ContentError(ValueError):
    """A readable file whose content is not what we need (raised as is, not as 'corrupt')."""


class _UnitError(ValueError):
    pass


class _OptionWarning(SklatomWarning):
    """A warning whose advice names a keyword argument of :func:`read_image`;
    ``cli_message`` says the same with the command line's option, and the CLI shows that."""

    def __init__(self, message, cli_message):
        super().__init__(message)
        self.cli_message = cli_message


def _angstrom_factor(units):
    """Å per ``units``; None when the unit is empty/pixels; raise _UnitError when unknown."""
    if units is None:
        return None
    if isinstance(units, bytes):
        units = units.decode("utf-8", "replace")
    u = str(units).strip()
    if u.lower() in ("", "px", "pixel", "pixels", "<undefined>", "none", "unknown"):
        return None
    if _RECIPROCAL.search(u):
        raise _UnitError(f"reciprocal-space unit {u!r}")
    key = u.lower().replace(" ", "")
    if key in _ANGSTROM_PER_UNIT:
        return _ANGSTROM_PER_UNIT[key]
    if u in ("Å", "\u212b"):
        return 1.0
    raise _UnitError(f"unknown length unit {u!r}")


def _pixel_size_from(scale, units, path, where):
    """Pixel size in Å/px from a scale and its unit; None (with a warning) when unusable."""
    try:
        factor = _angstrom_factor(units)
    except _UnitError as exc:
        warnings.warn(
            f"{path}: the {where} has a {exc}; the pixel size is unknown (give it explicitly)",
            SklatomWarning, stacklevel=4)
        return None
    if factor is None:
        return None
    try:
        scale = float(scale)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(scale) or scale <= 0:
        warnings.warn(f"{path}: the {where} gives a pixel size of {scale!r} {units}; ignored",
                      SklatomWarning, stacklevel=4)
        return None
    return abs(scale) * factor


# --------------------------------------------------------------------------------------------
# frames and dtypes
# --------------------------------------------------------------------------------------------
def _luminance(rgb):
    """Rec. 601 luma (as Pillow's "L" mode) of an (..., 3 or 4) array; alpha is dropped."""
    rgb = np.asarray(rgb, dtype=np.float64)[..., :3]
    return rgb @ np.array([0.299, 0.587, 0.114])


def _pick_frame(data, frame, path, n_signal_dims=2):
    """Flatten leading axes into frames and return (2-D array, frame index, number of frames)."""
    if data.ndim < n_signal_dims:
        raise _ContentError(
            f"{path} holds data of shape {data.shape}; expected a 2-D image (height, width) "
            "or a stack of them")
    frames = data.reshape((-1,) + data.shape[-2:]) if data.ndim > 2 else data[np.newaxis]
    n = frames.shape[0]
    if frame is None:
        if n > 1:
            text = f"{path} holds {n} frames (data shape {data.shape}); using the first. "
            warnings.warn(_OptionWarning(
                text + "Choose another with frame=...",
                text + f"Choose another with --frame N (N in 0..{n - 1})"), stacklevel=4)
        index = 0
    else:
        index = int(frame)
        if not -n <= index < n:
            raise _ContentError(
                f"frame={frame} is out of range: {path} holds {n} frame(s) (data shape "
                f"{data.shape}); expected 0..{n - 1}")
        index %= n
    return frames[index], index, n


def _finish_image(image, path):
    """Check a 2-D array and return it as float32; non-finite pixels are filled."""
    image = np.asarray(image)
    if image.dtype.names is not None:  # e.g. RGBA records of DigitalMicrograph
        names = [n for n in ("R", "G", "B") if n in image.dtype.names]
        if len(names) != 3:
            raise ValueError(f"{path}: unsupported structured pixel type {image.dtype}")
        image = _luminance(np.stack([image[n] for n in names], axis=-1))
    if image.dtype.kind == "c":
        raise ValueError(
            f"{path} holds a complex image (dtype {image.dtype}); expected real intensities. "
            "Take np.abs(...) or the real part and save that")
    if image.dtype.kind not in "biuf":
        raise ValueError(f"{path} holds values of dtype {image.dtype}; expected numbers")
    if image.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D image; got shape {image.shape}")
    if image.size == 0 or min(image.shape) == 0:
        raise ValueError(f"{path} holds an empty image (shape {image.shape})")
    source = image
    with np.errstate(over="ignore"):
        image = image.astype(np.float32)
    finite = np.isfinite(image)
    if not finite.all() and source.dtype.kind == "f":
        overflow = ~finite & np.isfinite(source)
        if overflow.any():
            big = float(np.abs(source[overflow]).max())
            raise ValueError(
                f"{path}: {int(overflow.sum())} of {image.size} pixels hold finite values (up "
                f"to {big:.3g}) beyond the float32 range (largest "
                f"{float(np.finfo(np.float32).max):.3g}) images are read into; rescale the "
                "data (e.g. divide by its maximum) and save it again")
    if not finite.any():
        raise ValueError(f"{path}: every pixel of the image is NaN or infinite")
    if not finite.all():
        fill = float(np.median(image[finite]))
        warnings.warn(
            f"{path}: {int((~finite).sum())} of {image.size} pixels are NaN or infinite; "
            f"they are set to the median of the others ({fill:g})",
            SklatomWarning, stacklevel=3)
        image = np.where(finite, image, np.float32(fill))
    return image


# --------------------------------------------------------------------------------------------
# TIFF
# --------------------------------------------------------------------------------------------
def _tiff_pixel_size(tif, path):
    """(pixel size in Å/px or None, where it came from)."""
    page = tif.pages[0]
    tags = page.tags

    def resolution(name):
        tag = tags.get(name)
        if tag is None:
            return None
        num, den = tag.value
        return num / den if den and num else None

    # ImageJ: unit in the description, pixels per unit in XResolution
    ij = tif.imagej_metadata
    if ij and "unit" in ij:
        xres = resolution("XResolution")
        if xres:
            ps = _pixel_size_from(1.0 / xres, ij["unit"], path, "ImageJ metadata")
            if ps is not None:
                return ps, "ImageJ metadata"
    # OME-XML
    if tif.is_ome and tif.ome_metadata:
        try:
            root = ET.fromstring(tif.ome_metadata)
            for el in root.iter():
                if el.tag.endswith("Pixels") and "PhysicalSizeX" in el.attrib:
                    ps = _pixel_size_from(el.attrib["PhysicalSizeX"],
                                          el.attrib.get("PhysicalSizeXUnit", "µm"), path,
                                          "OME-XML metadata")
                    if ps is not None:
                        return ps, "OME-XML metadata"
                    break
        except ET.ParseError:
            pass
    # FEI / Thermo Fisher: metres
    fei = getattr(tif, "fei_metadata", None)
    if fei:
        for section in ("Scan", "EScan", "Image"):
            value = fei.get(section, {}).get("PixelWidth")
            if value:
                ps = _pixel_size_from(value, "m", path, "FEI metadata")
                if ps is not None:
                    return ps, "FEI metadata"
    # Zeiss SEM: ("Pixel Size", value, unit)
    sem = getattr(tif, "sem_metadata", None)
    if sem and "ap_pixel_size" in sem:
        entry = sem["ap_pixel_size"]
        if isinstance(entry, (tuple, list)) and len(entry) >= 3:
            ps = _pixel_size_from(entry[1], entry[2], path, "Zeiss SEM metadata")
            if ps is not None:
                return ps, "Zeiss SEM metadata"
    # a JSON description as written by tifffile.imwrite(..., metadata={...})
    description = page.description or ""
    if description.lstrip().startswith("{"):
        try:
            meta = json.loads(description)
        except ValueError:
            meta = None
        if isinstance(meta, dict):
            for key in ("pixel_size", "PixelSize", "pixelsize", "scale"):
                if key in meta:
                    unit = meta.get("unit", meta.get("units", meta.get("pixel_size_unit", "Å")))
                    ps = _pixel_size_from(meta[key], unit, path, "image description")
                    if ps is not None:
                        return ps, "image description"
                    break
    # baseline resolution tags (pixels per cm/inch; tifffile also knows mm and µm)
    xres = resolution("XResolution")
    unit_tag = tags.get("ResolutionUnit")
    unit = int(unit_tag.value) if unit_tag is not None else 2  # TIFF default: inch
    per_unit = {2: 2.54e8, 3: 1e8, 4: 1e7, 5: 1e4}.get(unit)  # Å per inch/cm/mm/µm
    if xres and per_unit:
        ps = per_unit / xres
        if ps <= _MAX_TAG_PIXEL_SIZE:
            return ps, "TIFF resolution tags"
        if not (xres == 1.0 or abs(xres - 72.0) < 1e-9 or abs(xres - 96.0) < 1e-9):
            warnings.warn(
                f"{path}: the TIFF resolution tags give {ps:.3g} Å/px, a print resolution "
                "rather than a microscope calibration; the pixel size is unknown",
                SklatomWarning, stacklevel=3)
    return None, None


def _read_tiff(path, frame):
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        data = series.asarray()
        page = tif.pages[0]
        rgb = page.photometric == tifffile.PHOTOMETRIC.RGB and page.samplesperpixel >= 3
        planar = rgb and page.planarconfig == tifffile.PLANARCONFIG.SEPARATE
        pixel_size, source = _tiff_pixel_size(tif, path)
    if planar and data.ndim >= 3 and data.shape[-3] == page.samplesperpixel:
        data = _luminance(np.moveaxis(data, -3, -1))
    elif rgb and data.shape[-1] == page.samplesperpixel:
        data = _luminance(data)
    else:
        rgb = False
    image, index, n = _pick_frame(data, frame, path)
    return image, pixel_size, {"pixel_size_source": source, "shape": tuple(series.shape),
                               "frame": index, "n_frames": n, "rgb": bool(rgb)}


# --------------------------------------------------------------------------------------------
# PNG and NumPy
# --------------------------------------------------------------------------------------------
def _read_png(path, frame):
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        if im.format != "PNG":
            raise ValueError(f"not a PNG file (Pillow sees {im.format})")
        frames = []
        for fr in ImageSequence.Iterator(im):
            mode = fr.mode
            if mode == "P":
                fr = fr.convert("RGBA")
                mode = "RGBA"
            arr = np.asarray(fr)
            if mode in ("RGB", "RGBA", "RGBX"):
                arr = _luminance(arr)
            elif mode == "LA":
                arr = arr[..., 0]
            elif mode == "1":
                arr = arr.astype(np.uint8)
            frames.append(np.asarray(arr))
        mode = im.mode
    data = np.stack(frames) if len(frames) > 1 else frames[0]
    image, index, n = _pick_frame(data, frame, path)
    return image, None, {"pixel_size_source": None, "shape": tuple(data.shape),
                         "frame": index, "n_frames": n, "mode": mode}


def _read_npy(path, frame):
    data = np.load(path, allow_pickle=False)
    if not isinstance(data, np.ndarray):
        raise ValueError("expected a single array")
    image, index, n = _pick_frame(data, frame, path)
    return image, None, {"pixel_size_source": None, "shape": tuple(data.shape),
                         "frame": index, "n_frames": n}


# --------------------------------------------------------------------------------------------
# RosettaSciIO formats
# --------------------------------------------------------------------------------------------
def _import_rsciio(ext):
    import importlib

    try:
        return importlib.import_module(f"rsciio.{_RSCIIO_PLUGINS[ext]}")
    except ImportError as exc:
        raise ImportError(
            f"reading {ext} files needs RosettaSciIO, which is not installed: "
            f'pip install "sklatom[io]"'
        ) from exc


def _signal_axes(signal):
    """The (row, col) axes dicts of a signal dictionary, and the number of navigation axes."""
    axes = list(signal.get("axes") or [])
    data = signal["data"]
    if len(axes) != np.ndim(data):
        return None, None, np.ndim(data) - 2
    if all("navigate" in ax for ax in axes):
        # rsciio lists axes in array order; signal axes have navigate=False
        sig = [i for i, ax in enumerate(axes) if not ax["navigate"]]
    else:
        sig = list(range(len(axes)))[-2:]
    if len(sig) < 2:  # spectra, spectrum images
        return None, None, None
    # more than two signal axes (e.g. an NCEM EMD stack): the last two are the image
    return axes[sig[-2]], axes[sig[-1]], len(axes) - 2


def _read_rsciio(path, frame, ext):
    module = _import_rsciio(ext)
    signals = module.file_reader(path)
    images = []
    for s in signals:
        row_ax, col_ax, n_nav = _signal_axes(s)
        if n_nav is not None and np.ndim(s["data"]) >= 2 and row_ax is not None:
            images.append((s, row_ax, col_ax))
    if not images:
        shapes = [tuple(np.shape(s["data"])) for s in signals]
        raise _ContentError(
            f"{path} holds no 2-D image: its signals have shapes {shapes} (spectra or other "
            "non-image data)")
    signal, row_ax, col_ax = images[0]
    title = (signal.get("metadata") or {}).get("General", {}).get("title", "")
    if len(images) > 1:
        titles = [(s.get("metadata") or {}).get("General", {}).get("title", "") for s, _, _ in
                  images]
        warnings.warn(f"{path} holds {len(images)} images {titles}; using the first, "
                      f"{title!r}", SklatomWarning, stacklevel=3)
    data = np.asarray(signal["data"])
    # move the two signal axes last (rsciio keeps them last already for these formats)
    axes = list(signal.get("axes") or [])
    if len(axes) == data.ndim and data.ndim > 2:
        sig_idx = [axes.index(row_ax), axes.index(col_ax)]
        nav_idx = [i for i in range(data.ndim) if i not in sig_idx]
        data = np.transpose(data, nav_idx + sig_idx)
    image, index, n = _pick_frame(data, frame, path)
    pixel_size, source = None, None
    row_units, col_units = row_ax.get("units"), col_ax.get("units")
    ps_col = _pixel_size_from(col_ax.get("scale", 1.0), col_units, path, "x axis")
    ps_row = None
    if ps_col is not None:
        ps_row = _pixel_size_from(row_ax.get("scale", 1.0), row_units, path, "y axis")
    if ps_col is not None:
        pixel_size, source = ps_col, "axes calibration"
        if ps_row is not None and not np.isclose(ps_row, ps_col, rtol=1e-3):
            warnings.warn(
                f"{path}: non-square pixels ({ps_row:g} Å along y, {ps_col:g} Å along x); "
                f"using the x pixel size {ps_col:g} Å/px",
                SklatomWarning, stacklevel=3)
    return image, pixel_size, {"pixel_size_source": source, "shape": tuple(np.shape(
        signal["data"])), "frame": index, "n_frames": n, "title": title,
        "units": col_units, "reader_metadata": signal.get("metadata", {})}


@contextlib.contextmanager
def _quiet_reader_logs():
    """Silence the readers' log messages below CRITICAL while reading: their errors become
    our exceptions, and their warnings about odd metadata are noise on a command line."""
    loggers = [logging.getLogger(name) for name in ("tifffile", "rsciio", "PIL")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


# --------------------------------------------------------------------------------------------
# public
# --------------------------------------------------------------------------------------------
def read_image(path, frame=None):
    """Read one image and its pixel size from a microscope or image file.

    Parameters
    ----------
    path : str or path-like
        File to read; the format is chosen by the extension (see
        :data:`SUPPORTED_EXTENSIONS`; ``.dm3``, ``.dm4``, ``.emd``, ``.ser`` and ``.hspy``
        need ``pip install "sklatom[io]"``).
    frame : int or None, default=None
        Frame of a stack (time series, several detectors' images are not frames: the first
        image signal is used). None takes the first frame, with a :class:`SklatomWarning` when
        there are several. Leading axes of a stack (e.g. the scan of a 4-D data set) are
        flattened in C order.

    Returns
    -------
    image : ndarray of shape (height, width), float32
        The image. RGB(A) images become their luminance (Rec. 601 weights, as Pillow's "L"
        mode); NaN/inf pixels are set to the median of the others (with a warning).
    pixel_size : float or None
        Pixel size in Å/px from the file's calibration (converted from nm, pm, µm, m; rounded
        to 7 significant digits, the precision of the float32 calibrations of several
        formats), or None when the file has none, or a reciprocal-space or unknown unit (then
        with a warning).
    metadata : dict
        ``path``, ``format``, ``shape`` (of the data in the file), ``frame`` (index used),
        ``n_frames``, ``pixel_size_source`` (where the pixel size came from, or None) and,
        for RosettaSciIO formats, ``title``, ``units`` and ``reader_metadata``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        For an unsupported extension (the message lists the supported ones), a corrupt or
        truncated file (the message names the file and the format), data that is not an image
        (1-D, complex, empty, all NaN) or a ``frame`` out of range.
    ImportError
        If a RosettaSciIO format is read without RosettaSciIO installed.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> import tifffile
    >>> path = os.path.join(tempfile.mkdtemp(), "image.tif")
    >>> tifffile.imwrite(path, np.ones((4, 6), np.float32), imagej=True,
    ...                  resolution=(50.0, 50.0), metadata={"unit": "nm"})
    >>> image, pixel_size, meta = read_image(path)
    >>> image.shape, round(pixel_size, 6), meta["pixel_size_source"]
    ((4, 6), 0.2, 'ImageJ metadata')
    """
    path = os.fspath(path)
    if frame is not None and (isinstance(frame, bool) or not isinstance(frame, numbers.Integral)):
        raise TypeError(f"frame must be an integer or None; got {frame!r}")
    ext = os.path.splitext(path)[1].lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise ValueError(
            f"{path}: unsupported file extension {ext or '(none)'!r}; supported: "
            f"{', '.join(sorted(SUPPORTED_EXTENSIONS))}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory, not an image file")
    fmt = SUPPORTED_EXTENSIONS[ext]
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path} is an empty file (0 bytes); expected a {fmt} file")
    if ext in _RSCIIO_PLUGINS:
        _import_rsciio(ext)  # a missing optional dependency is not a corrupt file
    with _quiet_reader_logs():
        try:
            if fmt == "TIFF":
                image, pixel_size, meta = _read_tiff(path, frame)
            elif fmt == "PNG":
                image, pixel_size, meta = _read_png(path, frame)
            elif fmt == "NumPy":
                image, pixel_size, meta = _read_npy(path, frame)
            else:
                image, pixel_size, meta = _read_rsciio(path, frame, ext)
        except _ContentError as exc:  # our own checks; they name the file already
            raise ValueError(str(exc)) from None
        except Exception as exc:  # readers raise many kinds of errors on bad files
            article = "an" if fmt[0] in "AEIOU" else "a"
            raise ValueError(
                f"could not read {path} as {article} {fmt} file (corrupt, truncated or not "
                f"{fmt}?): {type(exc).__name__}: {exc}") from exc
    image = _finish_image(image, path)
    if pixel_size is not None and pixel_size > _MAX_TAG_PIXEL_SIZE:
        warnings.warn(f"{path}: pixel size {pixel_size:g} Å/px is implausible for an "
                      "atomic-resolution image; ignored", SklatomWarning, stacklevel=2)
        pixel_size, meta["pixel_size_source"] = None, None
    if pixel_size is not None:
        # 7 significant digits: the precision of the float32 calibrations of DM and others
        pixel_size = float(f"{float(pixel_size):.7g}")
    out = {"path": path, "format": fmt}
    out.update(meta)
    return image, pixel_size, out


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_path(path, overwrite=False):
    """Write a file atomically: yield a temporary path, then move it to ``path``.

    The temporary file lies in the destination's directory and keeps its extension (so writers
    that infer the format from the name work). It replaces ``path`` only when the ``with`` block
    finishes without an exception; otherwise it is removed.

    Parameters
    ----------
    path : str or path-like
        Destination file.
    overwrite : bool, default=False
        Whether an existing ``path`` may be replaced.

    Yields
    ------
    tmp_path : str
        Where to write.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False (checked before and, without
        replacing anything, after writing).

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "result.txt")
    >>> with atomic_path(path) as tmp:
    ...     with open(tmp, "w") as f:
    ...         _ = f.write("done")
    >>> open(path).read()
    'done'
    >>> with atomic_path(path) as tmp:
    ...     pass
    Traceback (most recent call last):
    ...
    FileExistsError: ... exists; pass overwrite=True (--overwrite) to replace it
    """
    path = os.path.abspath(os.fspath(path))
    message = f"{path} exists; pass overwrite=True (--overwrite) to replace it"
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(message)
    directory, name = os.path.split(path)
    suffix = os.path.splitext(name)[1]
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=f".tmp{suffix}", dir=directory)
    os.close(fd)
    try:
        yield tmp
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if path appeared meanwhile: never clobbers
            except FileExistsError:
                raise FileExistsError(message) from None
            except OSError:  # file systems without hard links
                if os.path.lexists(path):
                    raise FileExistsError(message) from None
                os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def write_csv_atomic(table, path, overwrite=False, **to_csv_kwargs):
    """Write a table to a CSV file atomically, refusing to replace an existing file.

    Parameters
    ----------
    table : pandas.DataFrame or anything ``pandas.DataFrame`` accepts
        The table; the index is not written unless ``index=True`` is passed.
    path : str or path-like
        Destination ``.csv`` file.
    overwrite : bool, default=False
        Whether an existing file may be replaced.
    **to_csv_kwargs
        Passed to :meth:`pandas.DataFrame.to_csv`.

    Returns
    -------
    path : str
        The absolute path written.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "atoms.csv")
    >>> _ = write_csv_atomic({"row": [1.5], "col": [2.0]}, path)
    >>> open(path).read().splitlines()
    ['row,col', '1.5,2.0']
    """
    import pandas as pd

    df = table if isinstance(table, pd.DataFrame) else pd.DataFrame(table)
    to_csv_kwargs.setdefault("index", False)
    with atomic_path(path, overwrite=overwrite) as tmp:
        df.to_csv(tmp, **to_csv_kwargs)
    return os.path.abspath(os.fspath(path))
