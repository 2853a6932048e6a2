"""Labelled training sets of simulated STEM images, in the spirit of ``sklearn.datasets.make_*``.

:func:`make_lattice_images` simulates monolayer lattices with point defects and names columns
by composition; :func:`make_scene_images` simulates the specimens of :mod:`sklatom.scenes`
(supports, single atoms, nanoparticles, thick crystals, flakes, ...) in two Z-contrast classes,
with the recording artefacts of real images. Both label a column only where the recorded image
shows it (:mod:`sklatom.groundtruth`): columns it cannot show are background, columns at the
limit are "don't care" (-1 in the masks, ``info.uncertain`` in the coordinates).
"""

import json
import numbers

import numpy as np
from scipy import ndimage
from sklearn.base import clone
from sklearn.utils import Bunch, check_random_state

from ._resample import resample_coordinates, resample_image, resampled_shape
from ._validation import check_pixel_size
from .groundtruth import (LATTICE_SNR_HIDDEN, LATTICE_SNR_VISIBLE, SNR_HIDDEN, SNR_VISIBLE,
                          column_visibility, uncertain_sites)
from .scenes import SCENE_KINDS, make_scene
from .simulation import AcquisitionModel, MultisliceSimulator
from .structures import LATTICES, find_columns, lattice_classes, make_structure, scan_region

__all__ = ["make_lattice_images", "make_scene_images", "draw_label_mask", "save_dataset",
           "load_dataset", "IGNORE_LABEL", "LABEL_POLICIES", "DATASET_FORMAT"]

#: Mask value of "don't care" pixels (columns at the limit of what the image shows).
IGNORE_LABEL = -1
#: "visible": label what the recorded image shows (:mod:`sklatom.groundtruth`); "lattice":
#: what a model that knows the lattice can find (a column's own signal-to-noise ratio may be
#: 5 times lower); "all": every column of the structure, whatever the recording.
LABEL_POLICIES = ("visible", "lattice", "all")


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
    # (a negative class, e.g. IGNORE_LABEL, is drawn like any other)
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


def _check_common(n_images, shape, pixel_size, label_policy, mask_radius):
    if not (isinstance(n_images, numbers.Integral) and n_images >= 1):
        raise ValueError(f"n_images must be a positive integer; got {n_images!r}")
    try:
        height, width = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be (height, width) in px; got {shape!r}") from None
    if min(height, width) < 8:
        raise ValueError(f"shape={shape!r} is too small; images need at least 8x8 px")
    ps = check_pixel_size(pixel_size, "pixel_size", low=0.01, high=1.0)
    if label_policy not in LABEL_POLICIES:
        raise ValueError(f"label_policy must be one of {LABEL_POLICIES}; got {label_policy!r}")
    if not (isinstance(mask_radius, numbers.Real) and mask_radius > 0):
        raise ValueError(f"mask_radius must be a positive length in Å; got {mask_radius!r}")
    return (height, width), ps


def _simulator_and_acquisition(simulator, acquisition, ps, rng):
    sim = MultisliceSimulator(method="incoherent", progress=False) if simulator is None \
        else clone(simulator)
    sim.set_params(pixel_size=ps)
    acq = AcquisitionModel(dose=5e6, blur=0.15, scan_jitter=0.02) if acquisition is None \
        else clone(acquisition)
    acq.set_params(pixel_size=ps, random_state=rng.randint(np.iinfo(np.int32).max))
    return sim, acq


def _columns_with_states(atoms, shape, ps, settings, acq, class_of, policy):
    """Visible and uncertain columns: (k, 4) row, col, class, uncertain flag; and names.

    Empty sites of planted vacancies among uncertain columns are uncertain rows too (class
    0, name and role "vacancy"): the image cannot show their emptiness either.
    """
    pos, names, roles, members = find_columns(atoms, ps, shape)
    classes = np.array([class_of(atoms, name, m) for name, m in zip(names, members)], float)
    states = np.full(len(names), "visible", dtype=object)
    dark_field = settings["inner"] >= settings["alpha"]  # the signal model is annular DF
    if policy != "all" and dark_field and len(names):
        limits = (SNR_VISIBLE, SNR_HIDDEN) if policy == "visible" else \
            (LATTICE_SNR_VISIBLE, LATTICE_SNR_HIDDEN)
        states = column_visibility(
            atoms, pos, members, settings, acq.dose, acq.blur, dark_counts=acq.dark_counts,
            pedestal=acq.pedestal, read_noise=acq.read_noise, diffuse=acq.diffuse,
            diffuse_length=acq.diffuse_length, snr_limits=limits).state
    keep = states != "hidden"
    table = np.column_stack([pos, classes, states == "uncertain"])[keep].reshape(-1, 4)
    names, roles = names[keep], roles[keep]
    y0, x0 = scan_region(atoms)[:2]
    sites = np.array([((d["position"][0] - y0) / ps, (d["position"][1] - x0) / ps)
                      for d in atoms.info.get("defects", ())
                      if d["kind"] in ("vacancy", "divacancy")]).reshape(-1, 2)
    if len(sites) and policy != "all":
        bond = 1.5 * 1.9 / ps  # 1.5 bond lengths of the lattices (1.4-1.9 Å), in px
        doubt = uncertain_sites(sites, pos, states, bond)
        extra = np.column_stack([sites[doubt], np.zeros(doubt.sum()), np.ones(doubt.sum())])
        table = np.concatenate([table, extra])
        names = np.concatenate([names, np.full(len(extra), "vacancy", dtype=object)])
        roles = np.concatenate([roles, np.full(len(extra), "vacancy", dtype=object)])
    return table, names, roles


def _record_and_label(structures, shape, ps, sim, acq, class_of, policy, mask_radius,
                      output_pixel_size=None, artefacts=None, rng=None):
    """Simulate, record, label: the shared core of the ``make_*_images`` functions."""
    settings = sim._settings()
    tables, names, roles = [], [], []
    for atoms in structures:
        t, n, r = _columns_with_states(atoms, shape, ps, settings, acq, class_of, policy)
        tables.append(t)
        names.append(n)
        roles.append(r)
    solid = [i for i, a in enumerate(structures) if len(a)]
    clean = np.zeros((len(structures),) + tuple(shape), dtype=np.float32)
    if solid:
        clean[solid] = sim.transform([structures[i] for i in solid])
    images, moved = acq.transform_with_coordinates(clean, tables)
    images = [np.asarray(im, dtype=np.float32) for im in images]
    lost = [np.zeros(shape, bool) for _ in images]
    if artefacts:
        for k in range(len(images)):
            images[k], lost[k] = _artefacts(images[k], ps, artefacts, rng)
    out_ps = ps if output_pixel_size is None else float(output_pixel_size)
    out_shape = resampled_shape(shape, ps / out_ps)
    result_images, masks, coordinates, uncertain = [], [], [], []
    for k, (image, table) in enumerate(zip(images, moved)):
        h, w = shape
        inside = (table[:, 0] >= -0.5) & (table[:, 0] < h - 0.5) & \
            (table[:, 1] >= -0.5) & (table[:, 1] < w - 0.5)
        flag = table[:, 3].copy()
        if lost[k].any():  # under saturated or blanked pixels nothing is shown
            covered = _fraction_covered(lost[k], table[:, :2], 0.7 / ps)
            inside &= covered < 0.3
            flag[covered > 0] = 1
        table, flag = table[inside], flag[inside]
        names[k], roles[k] = names[k][inside], roles[k][inside]
        if out_shape != tuple(shape):
            image = resample_image(image, out_shape)
            table = resample_coordinates(table, shape, out_shape)
        seen = table[flag == 0, :3]
        doubt = table[flag == 1, :3]
        mask = draw_label_mask(out_shape, np.column_stack([doubt[:, :2], np.full(len(doubt),
                               IGNORE_LABEL)]), mask_radius / out_ps)
        labelled = draw_label_mask(out_shape, seen, mask_radius / out_ps)
        mask[labelled > 0] = labelled[labelled > 0]
        result_images.append(image)
        masks.append(mask)
        coordinates.append(seen)
        uncertain.append(doubt)
        names[k], roles[k] = names[k][flag == 0], roles[k][flag == 0]
    return (np.stack(result_images).astype(np.float32), np.stack(masks), coordinates,
            uncertain, names, roles, out_ps)


def _fraction_covered(pixels, positions, radius):
    """Fraction of the pixels within ``radius`` (px) of each position that are set."""
    r = max(1, int(np.ceil(radius)))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = (yy**2 + xx**2 <= radius**2).astype(float)
    frac = ndimage.convolve(pixels.astype(float), disk / disk.sum(), mode="constant")
    rc = np.clip(np.round(positions).astype(int), 0, np.array(pixels.shape) - 1)
    return frac[rc[:, 0], rc[:, 1]] if len(rc) else np.zeros(0)


#: Recording artefacts :func:`make_scene_images` can add (probabilities per image).
ARTEFACTS = ("saturated_patch", "blank", "clip_low")


def _artefacts(image, ps, probabilities, rng):
    """Saturated patches, blanked areas and clipping of a recorded image.

    Returns the image and the mask of pixels that show nothing (saturated or blanked).
    """
    h, w = image.shape
    lost = np.zeros((h, w), bool)
    image = image.astype(np.float64)
    if rng.rand() < probabilities.get("saturated_patch", 0):
        # a thick, bright lump (contamination, a thick grain) beyond the detector's range
        from .scenes import smooth_field

        field = smooth_field((h, w), rng.uniform(15, 40) / ps, rng)
        blob = np.clip(field - np.quantile(field, 1 - rng.uniform(0.05, 0.35)), 0, None)
        full = float(np.quantile(image, 0.999)) * rng.uniform(1.0, 1.6)
        image = image + blob / max(blob.max(), 1e-12) * full * rng.uniform(5, 50)
        lost = image >= full
        image = np.minimum(image, full)
    if rng.rand() < probabilities.get("clip_low", 0):
        # a dark level set too high: the darkest pixels (vacuum, thin areas) read one value
        low = float(np.quantile(image, rng.uniform(0.02, 0.4)))
        image = np.maximum(image, low)
    if rng.rand() < probabilities.get("blank", 0):
        # zero-padded borders (aligned or drift-corrected frames) or a blanked rectangle
        value = 0.0 if rng.rand() < 0.7 else float(np.median(image))
        band = np.zeros((h, w), bool)
        side = rng.randint(5)
        size = int(rng.uniform(0.05, 0.3) * (h if side in (0, 1) else w))
        if side == 0:
            band[:size] = True
        elif side == 1:
            band[h - size:] = True
        elif side == 2:
            band[:, :size] = True
        elif side == 3:
            band[:, w - size:] = True
        else:
            r0, c0 = rng.randint(h // 2), rng.randint(w // 2)
            band[r0:r0 + h // 4, c0:c0 + w // 4] = True
        image[band] = value
        lost |= band
    return image.astype(np.float32), lost


def _name_class(mapping):
    def class_of(atoms, name, members):
        return mapping[name]
    return class_of


def _heavy_class(atoms, name, members):
    """Class 2 ("heavy") for a column holding a heavy atom, else 1 ("light")."""
    return 2 if atoms.arrays["heavy"][members].any() else 1


def make_lattice_images(
    n_images=8,
    lattice="graphene",
    *,
    shape=(256, 256),
    pixel_size=0.1,
    defects="default",
    labels=None,
    mask_radius=0.5,
    label_policy="visible",
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
    label_policy : {"visible", "lattice", "all"}, default="visible"
        "visible": only columns the recorded image shows are labelled (see
        :mod:`sklatom.groundtruth`: e.g. not the O columns of SrTiO3 in HAADF, not a lattice
        lost in the noise of a very low dose); columns at the limit are "don't care" (-1 in
        the masks, listed in ``info.uncertain``). "lattice": the same with a column's own
        signal-to-noise ratio allowed 5 times lower
        (:data:`~sklatom.groundtruth.LATTICE_SNR_VISIBLE`): the training labels of the
        lattice models, which place a faint column from the lattice around it. "all":
        every column (the structure, not the image). Annular dark-field detectors
        only; with bright-field detectors every column is labelled.
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
        ``structures`` (ase.Atoms), per-image column ``names`` and ``roles``, ``uncertain``
        (per image, the "don't care" columns as (m, 3) arrays) and ``pixel_size``.
    random_state : int, RandomState instance or None, default=None
        Seeds structures, defects and noise.

    Returns
    -------
    images : ndarray of shape (n_images, height, width), float32
        Recorded images (detector counts).
    masks : ndarray of shape (n_images, height, width), int64
        Label masks: 0 background, ``i`` the class ``classes[i]``, -1 "don't care".
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
    (height, width), ps = _check_common(n_images, shape, pixel_size, label_policy, mask_radius)
    lattices = [lattice] if isinstance(lattice, str) else list(lattice)
    if not lattices:
        raise ValueError("lattice is an empty list")
    for name in lattices:
        if name not in LATTICES:
            raise ValueError(f"lattice={name!r} is unknown; expected one of {sorted(LATTICES)}")
    classes, mapping = _class_mapping(lattices, labels)
    rng = check_random_state(random_state)
    sim, acq = _simulator_and_acquisition(simulator, acquisition, ps, rng)

    chosen = [lattices[rng.randint(len(lattices))] for _ in range(n_images)]
    structures = [
        make_structure(name, (height * ps, width * ps), defects=defects, rotation=rotation,
                       max_strain=max_strain, min_defect_separation=min_defect_separation,
                       random_state=rng.randint(np.iinfo(np.int32).max))
        for name in chosen]
    images, masks, coordinates, uncertain, names, roles, _ = _record_and_label(
        structures, (height, width), ps, sim, acq, _name_class(mapping), label_policy,
        mask_radius)
    if return_info:
        info = Bunch(classes=classes, lattices=chosen, structures=structures, names=names,
                     roles=roles, uncertain=uncertain, pixel_size=ps)
        return images, masks, coordinates, info
    return images, masks, coordinates


def make_scene_images(
    n_images=8,
    scene="single_atoms",
    *,
    shape=(256, 256),
    pixel_size=0.1,
    output_pixel_size=None,
    labels="general",
    mask_radius=0.5,
    label_policy="visible",
    scene_options=None,
    artefacts=None,
    simulator=None,
    acquisition=None,
    return_info=False,
    random_state=None,
):
    """Simulate labelled images of the specimens microscopists record (:mod:`sklatom.scenes`).

    Each image is a fresh specimen of the given kind (single atoms on a support,
    nanoparticles, thick crystals, flakes, ...) simulated by ``simulator`` and recorded by
    ``acquisition``, optionally with recording artefacts, and optionally resampled to another
    pixel size exactly as :class:`~sklatom.segmentation.FCNSegmenter` resamples images given
    at another sampling. Only what the image shows is labelled (see ``label_policy``): atoms
    of amorphous material never are.

    Parameters
    ----------
    n_images : int, default=8
        Number of images.
    scene : str or list of str, default="single_atoms"
        One of :data:`sklatom.scenes.SCENE_KINDS`, or a list to draw from per image.
    shape : tuple of int, default=(256, 256)
        Recorded image (height, width) in px at ``pixel_size``.
    pixel_size : float, default=0.1
        Recorded pixel size in Å/px (0.01 to 1).
    output_pixel_size : float or None, default=None
        Resample the images (bilinear, as the segmenter does) and draw the masks and
        coordinates at this pixel size; None keeps ``pixel_size``.
    labels : {"general", "atoms"}, default="general"
        "general": classes ``["background", "light", "heavy"]`` (a column is heavy when it holds
        a heavy atom, see :func:`sklatom.scenes.heavy_atoms`), the classes of the shipped
        model; "atoms": one class ``"atom"``.
    mask_radius : float, default=0.5
        Radius in Å of the label disk around each column.
    label_policy : {"visible", "lattice", "all"}, default="visible"
        See :func:`make_lattice_images`.
    scene_options : dict or None, default=None
        Keyword arguments for :func:`sklatom.scenes.make_scene` (fixed choices, e.g.
        ``{"support": "C", "element": "Pt"}``).
    artefacts : dict or None, default=None
        Probabilities per image of recording artefacts: ``"saturated_patch"`` (a bright lump
        clipped at the detector's full scale: its pixels show nothing, and columns under it
        are not labelled), ``"blank"`` (a zero-padded border band or blanked rectangle, also
        unlabelled) and ``"clip_low"`` (the darkest pixels clipped to one value).
    simulator : MultisliceSimulator or None, default=None
        None uses ``MultisliceSimulator(method="incoherent")``; its pixel size is set to
        ``pixel_size``.
    acquisition : AcquisitionModel or None, default=None
        None uses ``AcquisitionModel(dose=5e6, blur=0.15, scan_jitter=0.02)``; its pixel size
        and random state are set here.
    return_info : bool, default=False
        Also return a :class:`~sklearn.utils.Bunch` with ``classes``, ``scenes`` (the kind
        of each image), ``structures``, per-image column ``names`` and ``roles``,
        ``uncertain`` ("don't care" columns, (m, 3) arrays) and ``pixel_size`` (of the
        returned images).
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    images : ndarray of shape (n_images, height', width'), float32
        Recorded images, at ``output_pixel_size`` when given.
    masks : ndarray of shape (n_images, height', width'), int64
        0 background, 1 light, 2 heavy (or 1 atom), -1 "don't care".
    coordinates : list of ndarray of shape (k_i, 3)
        Labelled columns: row, col (px) and class index.
    info : Bunch
        Only when ``return_info=True``.

    Examples
    --------
    >>> X, y, coords = make_scene_images(1, "nanoparticle", shape=(96, 96), pixel_size=0.3,
    ...                                  output_pixel_size=0.1, random_state=0,
    ...                                  scene_options={"support": "vacuum", "crystal": "Au"})
    >>> X.shape, int(y.max())
    ((1, 288, 288), 2)
    """
    (height, width), ps = _check_common(n_images, shape, pixel_size, label_policy, mask_radius)
    kinds = [scene] if isinstance(scene, str) else list(scene)
    if not kinds or any(k not in SCENE_KINDS for k in kinds):
        raise ValueError(f"scene must be one of {SCENE_KINDS} or a list of them; got {scene!r}")
    if labels not in ("general", "atoms"):
        raise ValueError(f"labels must be 'general' or 'atoms'; got {labels!r}")
    if output_pixel_size is not None:
        check_pixel_size(output_pixel_size, "output_pixel_size", low=0.01, high=1.0)
    artefacts = dict(artefacts or {})
    unknown = sorted(set(artefacts) - set(ARTEFACTS))
    if unknown:
        raise ValueError(f"artefacts {unknown} are unknown; expected some of {ARTEFACTS}")
    rng = check_random_state(random_state)
    sim, acq = _simulator_and_acquisition(simulator, acquisition, ps, rng)
    chosen = [kinds[rng.randint(len(kinds))] for _ in range(n_images)]
    structures = [make_scene(kind, (height * ps, width * ps),
                             random_state=rng.randint(np.iinfo(np.int32).max),
                             **(scene_options or {}))
                  for kind in chosen]
    class_of = _heavy_class if labels == "general" else (lambda atoms, name, members: 1)
    classes = ["background", "light", "heavy"] if labels == "general" else ["background", "atom"]
    images, masks, coordinates, uncertain, names, roles, out_ps = _record_and_label(
        structures, (height, width), ps, sim, acq, class_of, label_policy, mask_radius,
        output_pixel_size, artefacts, rng)
    if return_info:
        info = Bunch(classes=classes, scenes=chosen, structures=structures, names=names,
                     roles=roles, uncertain=uncertain, pixel_size=out_ps)
        return images, masks, coordinates, info
    return images, masks, coordinates


#: ``format`` entry of the files :func:`save_dataset` writes.
DATASET_FORMAT = "sklatom-dataset/1"


def _pack(arrays, dtype):
    """One array for a list of 2-D arrays: stacked when they share a shape, else flattened
    and concatenated (with their shapes)."""
    arrays = [np.asarray(a, dtype=dtype) for a in arrays]
    shapes = np.array([a.shape for a in arrays], dtype=np.int64).reshape(-1, 2)
    if len({a.shape for a in arrays}) <= 1:
        return np.stack(arrays) if arrays else np.zeros((0, 0, 0), dtype), None
    return np.concatenate([a.ravel() for a in arrays]), shapes


def _unpack(packed, shapes, path, name):
    if shapes is None:
        if packed.ndim != 3:
            raise ValueError(f"{path}: {name} has shape {packed.shape}; expected (n_images, "
                             "height, width), or a flat array with 'shapes'")
        return packed
    shapes = np.asarray(shapes, dtype=np.int64).reshape(-1, 2)
    if packed.ndim != 1 or (shapes < 0).any() or int(np.prod(shapes, axis=1).sum()) != packed.size:
        raise ValueError(f"{path}: {name} ({packed.size} values) does not hold images of the "
                         f"stored shapes (n={len(shapes)}); the file is damaged")
    ends = np.cumsum(np.prod(shapes, axis=1))
    return [part.reshape(shape) for part, shape in zip(np.split(packed, ends[:-1]), shapes)]


def save_dataset(path, images, masks, *, classes, coordinates=None, pixel_size=None,
                 metadata=None, overwrite=False):
    """Write a labelled data set to one ``.npz`` file (no pickles), read by :func:`load_dataset`.

    The format of ``sklatom simulate``, ``sklatom train`` and ``scripts/train_pretrained.py``:
    ``images`` and ``masks`` as (n, height, width) arrays when all images share a shape, else
    flattened and concatenated with their ``shapes`` (n, 2); ``coordinates`` as one (m, 4)
    array of image index, row, col (px) and class index; ``classes``; ``pixel_size``;
    ``metadata`` as a JSON string; ``format`` = :data:`DATASET_FORMAT`.

    Parameters
    ----------
    path : str or path-like
        Destination; written to a temporary file and moved into place when complete.
    images : array-like of shape (n, height, width) or list of 2-D arrays
        The images (stored as float32).
    masks : array-like or list of 2-D arrays
        Label masks of the same shapes (class index per pixel, -1 "don't care").
    classes : list of str
        Class names, background first.
    coordinates : list of ndarray of shape (k_i, 3) or None, default=None
        Labelled columns per image: row, col (px) and class index.
    pixel_size : float or None, default=None
        Å/px of the images.
    metadata : dict or None, default=None
        Anything JSON can hold (per-image settings, seeds, ...).
    overwrite : bool, default=False
        Whether an existing ``path`` may be replaced (else FileExistsError).

    Returns
    -------
    path : str

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "set.npz")
    >>> _ = save_dataset(path, [np.zeros((4, 4)), np.ones((2, 3))],
    ...                  [np.zeros((4, 4), int), np.ones((2, 3), int)],
    ...                  classes=["background", "atom"], pixel_size=0.1)
    >>> data = load_dataset(path)
    >>> [x.shape for x in data.images], data.classes, data.pixel_size
    ([(4, 4), (2, 3)], ['background', 'atom'], 0.1)
    """
    from .io import atomic_path

    images, masks = list(images), list(masks)
    if len(images) != len(masks):
        raise ValueError(f"{len(images)} images but {len(masks)} masks")
    for i, (x, m) in enumerate(zip(images, masks)):
        if np.ndim(x) != 2 or np.shape(x) != np.shape(m):
            raise ValueError(f"image {i} has shape {np.shape(x)} and its mask {np.shape(m)}; "
                             "each must be the same (height, width)")
    packed_x, shapes = _pack(images, np.float32)
    packed_y, _ = _pack(masks, np.int16)
    data = {"format": np.array(DATASET_FORMAT), "images": packed_x, "masks": packed_y,
            "classes": np.array([str(c) for c in classes], dtype=str),
            "metadata": np.array(json.dumps(metadata or {}))}
    if shapes is not None:
        data["shapes"] = shapes
    if coordinates is not None:
        if len(coordinates) != len(images):
            raise ValueError(f"{len(coordinates)} coordinate arrays for {len(images)} images")
        data["coordinates"] = np.concatenate(
            [np.zeros((0, 4))] + [np.column_stack([np.full(len(c), i), np.reshape(c, (-1, 3))])
                                  for i, c in enumerate(coordinates)]).astype(np.float64)
    if pixel_size is not None:
        data["pixel_size"] = np.float64(pixel_size)
    with atomic_path(path, overwrite=overwrite) as tmp:
        np.savez_compressed(tmp, **data)
    return str(path)


def load_dataset(path):
    """Read a data set written by :func:`save_dataset` (or by ``sklatom simulate``).

    Parameters
    ----------
    path : str or path-like
        The ``.npz`` file; loaded without unpickling anything.

    Returns
    -------
    data : Bunch
        ``images`` and ``masks`` ((n, height, width) arrays, or lists of 2-D arrays when the
        shapes differ), ``coordinates`` (list of (k_i, 3) arrays: row, col in px, class),
        ``classes`` (list of str), ``pixel_size`` (float or None) and ``metadata`` (dict).

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        The file is not a readable .npz file (corrupt, truncated, pickled arrays) or lacks
        what a data set holds; the message names the file and the problem.
    """
    try:
        with np.load(path, allow_pickle=False) as f:
            raw = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise
    except Exception as exc:  # zipfile, zlib and numpy errors of damaged or foreign files
        raise ValueError(f"{path} is not a readable .npz data set ({type(exc).__name__}: "
                         f"{exc})") from None
    missing = [k for k in ("images", "masks", "classes") if k not in raw]
    if missing:
        raise ValueError(f"{path} lacks the arrays {missing}; expected a data set written by "
                         "sklatom.datasets.save_dataset or 'sklatom simulate'")
    shapes = raw.get("shapes")
    images = _unpack(raw["images"], shapes, path, "images")
    masks = _unpack(raw["masks"], shapes, path, "masks")
    if [np.shape(x) for x in images] != [np.shape(m) for m in masks]:
        raise ValueError(f"{path}: images and masks differ in shape")
    flat = raw.get("coordinates", np.zeros((0, 4)))
    if flat.size % 4:
        raise ValueError(f"{path}: coordinates must have 4 columns (image, row, col, class); "
                         f"got shape {flat.shape}")
    flat = flat.reshape(-1, 4)
    coords = [flat[flat[:, 0] == i, 1:] for i in range(len(images))]
    try:
        metadata = json.loads(str(raw["metadata"])) if "metadata" in raw else {}
    except ValueError as exc:
        raise ValueError(f"{path}: metadata is not valid JSON ({exc})") from None
    ps = float(raw["pixel_size"]) if "pixel_size" in raw else None
    return Bunch(images=images, masks=masks, coordinates=coords,
                 classes=[str(c) for c in raw["classes"]], pixel_size=ps, metadata=metadata)
