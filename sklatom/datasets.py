"""Labelled training sets of simulated STEM images, in the spirit of ``sklearn.datasets.make_*``."""

import numbers

import numpy as np
from sklearn.base import clone
from sklearn.utils import Bunch, check_random_state

from ._validation import check_pixel_size
from .simulation import AcquisitionModel, MultisliceSimulator
from .structures import LATTICES, lattice_classes, make_structure, project_columns

__all__ = ["make_lattice_images", "draw_label_mask"]


def _class_mapping(lattices, labels):
    """Class names (background first) and a column-name -> class-index mapping."""
    columns = []
    for lat in lattices:
        for name in lattice_classes(lat)[1:]:
            if name not in columns:
                columns.append(name)
    if labels is None:
        classes = ["background", *columns]
        return classes, {name: classes.index(name) for name in columns}
    if labels == "atoms":
        return ["background", "atom"], {name: 1 for name in columns}
    if not isinstance(labels, dict):
        raise ValueError(
            f"labels must be None, 'atoms' or a dict column name -> class name; got {labels!r}"
        )
    missing = [c for c in columns if c not in labels]
    if missing:
        raise ValueError(
            f"labels has no class for the columns {missing} that {lattices} can contain"
        )
    classes = ["background"]
    for name in labels.values():
        if name not in classes:
            classes.append(name)
    return classes, {col: classes.index(name) for col, name in labels.items()}


def draw_label_mask(shape, coordinates, radius):
    """Label mask with a disk of the given radius (px) around each coordinate.

    Parameters
    ----------
    shape : tuple of int
        (height, width) of the mask.
    coordinates : ndarray of shape (k, 3)
        row, col (px) and class index (>= 1) of each column.
    radius : float
        Disk radius in px.

    Returns
    -------
    mask : ndarray of shape (height, width), dtype int64
        0 for background, else the class of the nearest column within ``radius``.

    Examples
    --------
    >>> import numpy as np
    >>> mask = draw_label_mask((5, 5), np.array([[2.0, 2.0, 1]]), radius=1.0)
    >>> int(mask.sum())
    5
    """
    mask = np.zeros(shape, dtype=np.int64)
    best = np.full(shape, np.inf)
    r = int(np.ceil(radius))
    offsets = np.arange(-r, r + 1)
    for row, col, cls in np.asarray(coordinates, dtype=float).reshape(-1, 3):
        rr = int(round(row)) + offsets
        cc = int(round(col)) + offsets
        rr = rr[(rr >= 0) & (rr < shape[0])]
        cc = cc[(cc >= 0) & (cc < shape[1])]
        if rr.size == 0 or cc.size == 0:
            continue
        d2 = (rr[:, None] - row) ** 2 + (cc[None, :] - col) ** 2
        window = best[np.ix_(rr, cc)]
        closer = (d2 <= radius * radius) & (d2 < window)
        window[closer] = d2[closer]
        best[np.ix_(rr, cc)] = window
        sub = mask[np.ix_(rr, cc)]
        sub[closer] = int(cls)
        mask[np.ix_(rr, cc)] = sub
    return mask


def make_lattice_images(
    n_images=8,
    lattice="graphene",
    *,
    shape=(256, 256),
    pixel_size=0.1,
    defects="default",
    labels=None,
    mask_radius=0.5,
    rotation=None,
    max_strain=0.01,
    min_defect_separation=6.0,
    simulator=None,
    acquisition=None,
    return_info=False,
    random_state=None,
):
    """Simulate labelled STEM images of lattices with point defects.

    Each image is a fresh piece of lattice (random in-plane rotation, small strain, random
    offset, planted defects) simulated by ``simulator`` and recorded by ``acquisition``. The
    ground truth follows the acquisition's scan distortion.

    Parameters
    ----------
    n_images : int, default=8
        Number of images.
    lattice : str or list of str, default="graphene"
        A name from :data:`sklatom.structures.LATTICES` ("graphene", "Si-graphene", "hBN",
        "MoS2", "WS2", "SrTiO3-001"), or a list of names to draw from per image.
    shape : tuple of int, default=(256, 256)
        Image (height, width) in px.
    pixel_size : float, default=0.1
        Pixel size in Å/px (0.01 to 1).
    defects : "default", dict or None, default="default"
        Defects to plant per image, see :func:`sklatom.structures.make_structure`.
    labels : None, "atoms" or dict, default=None
        Label classes. None: one class per column kind of the lattice(s) (see
        :func:`sklatom.structures.lattice_classes`); "atoms": a single class "atom";
        a dict maps column names (e.g. ``"S2"``) to class names (e.g. ``"chalcogen"``).
    mask_radius : float, default=0.5
        Radius in Å of the label disk around each column.
    rotation : float or None, default=None
        In-plane rotation in degrees; None draws a random one per image.
    max_strain : float, default=0.01
        Bound of the random strain.
    min_defect_separation : float, default=6.0
        Smallest distance in Å between two planted defects.
    simulator : MultisliceSimulator or None, default=None
        The image simulator; None uses ``MultisliceSimulator(method="incoherent")`` (fast;
        see :mod:`sklatom.simulation` for its accuracy against multislice). Its pixel size is
        set to ``pixel_size``.
    acquisition : AcquisitionModel or None, default=None
        Dose and distortions; None uses ``AcquisitionModel(dose=5e6, blur=0.15,
        scan_jitter=0.02)`` (e/Å², Å, Å): images a microscopist would call good. Its pixel size
        and random state are set here.
    return_info : bool, default=False
        Also return a :class:`~sklearn.utils.Bunch` with ``classes``, ``lattices``,
        ``structures`` (ase.Atoms), per-image column ``names`` and ``roles``, and
        ``pixel_size``.
    random_state : int, RandomState instance or None, default=None
        Seeds structures, defects and noise.

    Returns
    -------
    images : ndarray of shape (n_images, height, width), float32
        Recorded images (detector counts).
    masks : ndarray of shape (n_images, height, width), int64
        Label masks: 0 background, ``i`` the class ``classes[i]``.
    coordinates : list of ndarray of shape (k_i, 3)
        Ground-truth columns: row, col (px) and class index.
    info : Bunch
        Only when ``return_info=True``.

    Examples
    --------
    >>> X, y, coords = make_lattice_images(2, "MoS2", shape=(64, 64), random_state=0)
    >>> X.shape, y.shape, coords[0].shape[1]
    ((2, 64, 64), (2, 64, 64), 3)
    """
    if not (isinstance(n_images, numbers.Integral) and n_images >= 1):
        raise ValueError(f"n_images must be a positive integer; got {n_images!r}")
    lattices = [lattice] if isinstance(lattice, str) else list(lattice)
    if not lattices:
        raise ValueError("lattice is an empty list")
    for name in lattices:
        if name not in LATTICES:
            raise ValueError(f"lattice={name!r} is unknown; expected one of {sorted(LATTICES)}")
    try:
        height, width = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be (height, width) in px; got {shape!r}") from None
    if min(height, width) < 8:
        raise ValueError(f"shape={shape!r} is too small; images need at least 8x8 px")
    ps = check_pixel_size(pixel_size, "pixel_size", low=0.01, high=1.0)
    classes, mapping = _class_mapping(lattices, labels)
    rng = check_random_state(random_state)

    sim = MultisliceSimulator(method="incoherent", progress=False) if simulator is None \
        else clone(simulator)
    sim.set_params(pixel_size=ps)
    acq = AcquisitionModel(dose=5e6, blur=0.15, scan_jitter=0.02) if acquisition is None \
        else clone(acquisition)
    acq.set_params(pixel_size=ps, random_state=rng.randint(np.iinfo(np.int32).max))

    chosen = [lattices[rng.randint(len(lattices))] for _ in range(n_images)]
    structures, columns = [], []
    for name in chosen:
        atoms = make_structure(name, (height * ps, width * ps), defects=defects,
                               rotation=rotation, max_strain=max_strain,
                               min_defect_separation=min_defect_separation,
                               random_state=rng.randint(np.iinfo(np.int32).max))
        structures.append(atoms)
        columns.append(project_columns(atoms, ps, shape=(height, width)))
    clean = sim.transform(structures)
    truth = []
    for cols in columns:
        coords = cols.coordinates.copy()
        coords[:, 2] = [mapping[nm] for nm in cols.names]
        truth.append(coords)
    images, moved = acq.transform_with_coordinates(clean, truth)
    coordinates, masks, names, roles = [], [], [], []
    for coords, cols in zip(moved, columns):
        inside = (coords[:, 0] >= -0.5) & (coords[:, 0] < height - 0.5) & \
            (coords[:, 1] >= -0.5) & (coords[:, 1] < width - 0.5)
        coordinates.append(coords[inside])
        names.append(cols.names[inside])
        roles.append(cols.roles[inside])
        masks.append(draw_label_mask((height, width), coords, mask_radius / ps))
    result = (np.asarray(images, dtype=np.float32), np.stack(masks), coordinates)
    if return_info:
        info = Bunch(classes=classes, lattices=chosen, structures=structures, names=names,
                     roles=roles, pixel_size=ps)
        return (*result, info)
    return result
