"""Writers of small real image files for the tests (tests/test_io.py, tests/test_cli.py).

DigitalMicrograph (.dm3/.dm4) and TIA (.ser) files cannot be written by RosettaSciIO; the
minimal writers here follow the published layouts (DM3/DM4 tag groups as documented by
Gatan/Chris Boothroyd and as parsed by ``rsciio.digitalmicrograph``; the TIA series header
0x0197/0x0210 with 2-D data elements as parsed by ``rsciio.tia``). The test modules skip when
rsciio or tifffile is missing, before importing this one.
"""

import os
import struct

import numpy as np
import tifffile

_DM_TYPES = {  # numpy dtype -> (tag encoding of array elements, DM image DataType)
    np.dtype("int16"): (2, 1), np.dtype("float32"): (6, 2), np.dtype("uint8"): (10, 6),
    np.dtype("int32"): (3, 7), np.dtype("uint16"): (4, 10), np.dtype("uint32"): (5, 11),
    np.dtype("float64"): (7, 12), np.dtype("int8"): (9, 9),
}


def write_dm(path, data, scale=0.01, units="nm", version=3, title="HAADF"):
    """A minimal DigitalMicrograph 3 or 4 file holding one calibrated image or stack.

    Layout: big-endian header (version, file size, byte order = 1: little-endian data), then
    the root tag group with ``ImageList`` -> one image group with ``ImageData`` (``Data``,
    ``DataType``, ``Dimensions`` x first, ``Calibrations`` with ``Dimension`` origin, scale and
    units per axis and ``Brightness``), ``ImageTags`` and ``Name``. Tag groups are (sorted,
    open, number of tags); data tags are ``%%%%``, the length of the info array and the info
    array (big-endian; 4-byte entries in DM3, 8-byte in DM4, where each tag also starts with
    its 8-byte size), then the little-endian value.
    """
    data = np.ascontiguousarray(data)
    count = ">q" if version == 4 else ">l"

    def info(*values):
        return struct.pack(count, len(values)) + b"".join(struct.pack(count, v) for v in values)

    def data_body(value):
        if isinstance(value, np.ndarray):
            enc = _DM_TYPES[value.dtype][0]
            return info(20, enc, value.size) + value.astype(value.dtype.newbyteorder("<")).tobytes()
        if isinstance(value, str):  # strings are arrays of uint16 characters
            return info(20, 4, len(value)) + b"".join(struct.pack("<H", ord(c)) for c in value)
        if isinstance(value, bool):
            return info(8) + struct.pack("<B", value)
        if isinstance(value, int):
            return info(3) + struct.pack("<l", value)
        return info(6) + struct.pack("<f", value)

    def group_body(entries):
        return bytes([0, 1]) + struct.pack(count, len(entries)) + b"".join(
            tag(name, value) for name, value in entries)

    def tag(name, value):
        encoded = name.encode("latin-1")
        if isinstance(value, list):
            kind, body = 20, group_body(value)
        else:
            kind, body = 21, b"%%%%" + data_body(value)
        head = bytes([kind]) + struct.pack(">H", len(encoded)) + encoded
        if version == 4:
            head += struct.pack(">Q", len(body))
        return head + body

    dims = data.shape[::-1]
    calibration = [("", [("Origin", 0.0), ("Scale", float(scale)), ("Units", units)])
                   for _ in dims[:2]]
    calibration += [("", [("Origin", 0.0), ("Scale", 1.0), ("Units", "")]) for _ in dims[2:]]
    image = [
        ("ImageData", [
            ("Calibrations", [
                ("Brightness", [("Origin", 0.0), ("Scale", 1.0), ("Units", "Counts")]),
                ("Dimension", calibration),
                ("DisplayCalibratedUnits", True),
            ]),
            ("Data", data.ravel()),
            ("DataType", _DM_TYPES[data.dtype][1]),
            ("Dimensions", [("", int(d)) for d in dims]),
            ("PixelDepth", int(data.dtype.itemsize)),
        ]),
        ("ImageTags", [("Microscope Info", [("Voltage", 80000.0)])]),
        ("Name", title),
    ]
    root = group_body([("ImageList", [("", image)])])
    size = struct.pack(">Q", len(root) + 8) if version == 4 else struct.pack(">L", len(root) + 8)
    with open(path, "wb") as f:
        f.write(struct.pack(">l", version) + size + struct.pack(">l", 1) + root + b"\0" * 8)


_SER_TYPES = {np.dtype("uint8"): 1, np.dtype("uint16"): 2, np.dtype("uint32"): 3,
              np.dtype("int8"): 4, np.dtype("int16"): 5, np.dtype("int32"): 6,
              np.dtype("float32"): 7, np.dtype("float64"): 8}


def write_ser(path, data, scale_m=1e-11):
    """A minimal TIA .ser file (series version 0x0210) of one image or a series of images.

    Header: byte order 0x4949, series ID 0x0197, version 0x0210, data type 0x4122 (2-D
    elements), tag type 0x4152 (time only), total and valid number of elements, offset of the
    offset arrays, one dimension (the series) with its calibration, description and units.
    Each data element: x and y calibration (offset, delta in metres, element), data type,
    array size x and y, then the pixels bottom row first; its tag follows it.
    """
    data = np.asarray(data)
    frames = data[np.newaxis] if data.ndim == 2 else data
    n, h, w = frames.shape
    description, units = b"Number", b""
    dimension = (struct.pack("<IddII", n, 0.0, 1.0, 0, len(description)) + description
                 + struct.pack("<I", len(units)) + units)
    offsets_at = 30 + len(dimension)
    header = struct.pack("<HHHIIIIII", 0x4949, 0x0197, 0x0210, 0x4122, 0x4152, n, n,
                         offsets_at, 1)
    first = offsets_at + 8 * n
    elements, data_offsets, tag_offsets = b"", [], []
    for frame in frames:
        data_offsets.append(first + len(elements))
        elements += struct.pack("<ddIddIHII", 0.0, scale_m, 0, 0.0, scale_m, 0,
                                _SER_TYPES[frame.dtype], w, h)
        elements += np.ascontiguousarray(frame[::-1]).astype(
            frame.dtype.newbyteorder("<")).tobytes()
        tag_offsets.append(first + len(elements))
        elements += struct.pack("<HHI", 0x4152, 0, 0)
    offsets = struct.pack(f"<{n}I", *data_offsets) + struct.pack(f"<{n}I", *tag_offsets)
    with open(path, "wb") as f:
        f.write(header + dimension + offsets + elements)


def _signal(data, units="nm", scale=0.01, title="HAADF"):
    """A RosettaSciIO signal dictionary (what HyperSpy hands to the writers)."""
    data = np.asarray(data)
    axes = [{"name": name, "scale": scale, "offset": 0.0, "units": units, "size": size,
             "navigate": False} for name, size in zip("yx", data.shape[-2:])]
    if data.ndim == 3:
        axes.insert(0, {"name": "frame", "scale": 1.0, "offset": 0.0, "units": "",
                        "size": data.shape[0], "navigate": True})
    if data.ndim == 1:
        axes = [{"name": "Energy", "scale": 1.0, "offset": 0.0, "units": "eV",
                 "size": data.shape[0], "navigate": False}]
    return {"data": data, "axes": axes,
            "metadata": {"General": {"title": title}, "Signal": {"signal_type": ""}},
            "original_metadata": {}, "attributes": {"_lazy": False}, "tmp_parameters": {},
            "package_info": {"name": "sklatom", "version": "test"}, "learning_results": {},
            "models": {}}


def write_hspy(path, data, units="nm", scale=0.01):
    from rsciio.hspy import file_writer

    file_writer(str(path), _signal(data, units, scale), show_progressbar=False)


def write_emd(path, data, units="nm", scale=0.01):
    """An NCEM-flavour EMD (HDF5) file, written by RosettaSciIO's EMD writer."""
    from rsciio.emd import file_writer

    file_writer(str(path), _signal(data, units, scale))


def write_png(path, image):
    """An 8-bit grayscale PNG of the image scaled to 0..255."""
    from PIL import Image

    lo, hi = float(image.min()), float(image.max())
    scaled = np.round((image - lo) / max(hi - lo, 1e-12) * 255).astype(np.uint8)
    Image.fromarray(scaled).save(path)
    return scaled


def write_format(path, image, pixel_size):
    """Write ``image`` to ``path`` in the format of its extension, with the pixel size (Å/px)
    where the format can hold one. Returns the pixel size the file states (or None)."""
    path = str(path)
    ext = os.path.splitext(path)[1]
    nm = pixel_size / 10.0
    if ext in (".tif", ".tiff"):
        tifffile.imwrite(path, image.astype(np.float32), imagej=True,
                         resolution=(1 / nm, 1 / nm), metadata={"unit": "nm"})
    elif ext == ".png":
        write_png(path, image)
        return None
    elif ext == ".npy":
        np.save(path, image)
        return None
    elif ext == ".hspy":
        write_hspy(path, image.astype(np.float32), "nm", nm)
    elif ext == ".emd":
        write_emd(path, image.astype(np.float32), "nm", nm)
    elif ext in (".dm3", ".dm4"):
        write_dm(path, image.astype(np.float32), nm, "nm", version=int(ext[-1]))
    elif ext == ".ser":
        write_ser(path, image.astype(np.float32), pixel_size * 1e-10)
    else:
        raise ValueError(ext)
    return pixel_size


ALL_EXTENSIONS = [".tif", ".png", ".npy", ".hspy", ".emd", ".dm3", ".dm4", ".ser"]
