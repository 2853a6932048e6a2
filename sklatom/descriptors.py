"""Shape, intensity and neighbourhood descriptors of the atomic contours of probability maps.

:class:`ContourDescriptor` describes every atom that :class:`~sklatom.peaks.PeakFinder` finds in
a probability map ``(n_classes, height, width)`` (class 0 = background) by one row of numbers,
measured on its "atomic contour", the blob of pixels the atom was found from (4-connected pixels
whose foreground probability ``1 - P[0]`` exceeds a threshold; one rule for both, in
``sklatom._blobs``): its shape (area, perimeter, axes, orientation, eccentricity, solidity, Hu
moments, measured by :func:`skimage.measure.regionprops_table`), the intensity inside it, and
its neighbourhood (nearest-neighbour distances, neighbour count, bond-orientational order
``|psi_n|``). Rows come in PeakFinder's order, so they join back to its atoms; the table feeds
scikit-learn's scalers, clusterers and outlier detectors directly.
"""

import numbers

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree
from skimage.measure import regionprops_table
from sklearn import get_config
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ._validation import (check_images_for_maps, check_pixel_size, check_probability_maps,
                          map_items, split_maps_and_images)
from .peaks import PeakFinder, _find_peaks_checked

__all__ = ["ContourDescriptor"]

_OUTPUTS = ("default", "pandas")


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------
def _check_params(pixel_size, order, n_neighbors, neighbor_radius, exclude_border):
    ps = check_pixel_size(pixel_size, "pixel_size", allow_none=True)
    for name, value in (("order", order), ("n_neighbors", n_neighbors)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    if neighbor_radius is not None:
        if (isinstance(neighbor_radius, bool) or not isinstance(neighbor_radius, numbers.Real)
                or not np.isfinite(neighbor_radius) or neighbor_radius <= 0):
            raise ValueError(
                f"neighbor_radius must be None or a positive length (Å if pixel_size is given, "
                f"else px); got {neighbor_radius!r}")
    if not isinstance(exclude_border, (bool, np.bool_)):
        if not isinstance(exclude_border, numbers.Integral) or exclude_border < 0:
            raise ValueError(
                f"exclude_border must be True, False or an integer number of pixels >= 0; got "
                f"{exclude_border!r}")
    return ps


# --------------------------------------------------------------------------------------------
# feature names and computation
# --------------------------------------------------------------------------------------------
def _feature_names(pixel_size, order, include_coordinates):
    length = "A" if pixel_size is not None else "px"
    names = ["row", "col", "class"] if include_coordinates else []
    names += [
        f"area_{length}2",
        f"perimeter_{length}",
        f"equivalent_diameter_{length}",
        f"major_axis_length_{length}",
        f"minor_axis_length_{length}",
        "eccentricity",
        "orientation_deg",
        "orientation_cos2",
        "orientation_sin2",
        "solidity",
        "intensity_mean",
        "intensity_max",
        "intensity_min",
        "intensity_std",
        *[f"hu_{k}" for k in range(7)],
        f"nn_distance_{length}",
        f"nn_mean_distance_{length}",
        "n_neighbors_within",
        f"psi{order}",
    ]
    return names


def _border_mask(labels, margin):
    """Labels (as a boolean array indexed by label) of regions within ``margin`` px of an edge."""
    h, w = labels.shape
    m = int(margin)
    edge = np.zeros((h, w), dtype=bool)
    edge[:m + 1, :] = edge[-(m + 1):, :] = True
    edge[:, :m + 1] = edge[:, -(m + 1):] = True
    touching = np.zeros(labels.max() + 1, dtype=bool)
    touching[np.unique(labels[edge])] = True
    touching[0] = False
    return touching


def _neighbourhood(centres, order, n_neighbors, radius_px):
    """Nearest-neighbour distances, neighbour count and ``|psi_order|`` of each centre (px)."""
    n = len(centres)
    nan = np.full(n, np.nan)
    if n < 2:
        return nan, nan.copy(), np.zeros(n), nan.copy()
    tree = cKDTree(centres)
    k = min(max(n_neighbors, order) + 1, n)
    dist, idx = tree.query(centres, k=k)
    dist, idx = dist[:, 1:], idx[:, 1:]  # drop the centre itself
    nn1 = dist[:, 0]
    nn_mean = dist[:, :n_neighbors].mean(axis=1)
    if radius_px is None:
        radius_px = 1.25 * float(np.median(nn1))
    counts = np.array([len(v) - 1 for v in tree.query_ball_point(centres, radius_px)], float)
    d = centres[idx[:, :order]] - centres[:, None, :]
    # angle counter-clockwise from the +col axis as displayed (rows point down)
    theta = np.arctan2(-d[..., 0], d[..., 1])
    psi = np.abs(np.exp(1j * order * theta).mean(axis=1))
    return nn1, nn_mean, counts, psi


def _describe_one(p, image, finder_args, pixel_size, order, n_neighbors, neighbor_radius,
                  exclude_border, include_coordinates):
    """Rows of the feature table for one map ``p`` (n_classes, H, W): one per atom that
    PeakFinder finds with ``finder_args``, in its order, described on the pixels of its blob."""
    coords, _, labels = _find_peaks_checked(p, image, *finder_args, return_labels=True)
    n_cols = len(_feature_names(pixel_size, order, include_coordinates))
    if len(coords) == 0:
        return np.empty((0, n_cols)), np.zeros(0, int)
    intensity = 1.0 - p[0].astype(np.float64) if image is None else image
    # label j + 1 is atom j, so the regions come in the atoms' order
    props = regionprops_table(
        labels, intensity_image=intensity,
        properties=("area", "perimeter", "equivalent_diameter_area", "axis_major_length",
                    "axis_minor_length", "eccentricity", "orientation", "solidity",
                    "intensity_mean", "intensity_max", "intensity_min", "intensity_std",
                    "moments_hu"))
    s = 1.0 if pixel_size is None else pixel_size
    radius_px = None if neighbor_radius is None else neighbor_radius / s
    nn1, nn_mean, counts, psi = _neighbourhood(coords[:, :2], order, n_neighbors, radius_px)
    # skimage: angle between the row axis and the major axis in [-pi/2, pi/2]; we return the
    # angle from the +col axis, counter-clockwise as displayed, in [-90, 90) degrees.
    phi = np.rad2deg(props["orientation"]) + 90.0
    phi = np.where(phi >= 90.0, phi - 180.0, phi)
    cols = [coords[:, 0], coords[:, 1], coords[:, 2]] if include_coordinates else []
    cols += [
        props["area"] * s * s,
        props["perimeter"] * s,
        props["equivalent_diameter_area"] * s,
        props["axis_major_length"] * s,
        props["axis_minor_length"] * s,
        props["eccentricity"],
        phi,
        np.cos(np.deg2rad(2 * phi)),
        np.sin(np.deg2rad(2 * phi)),
        props["solidity"],
        props["intensity_mean"],
        props["intensity_max"],
        props["intensity_min"],
        props["intensity_std"],
        *[props[f"moments_hu-{k}"] for k in range(7)],
        nn1 * s,
        nn_mean * s,
        counts,
        psi,
    ]
    table = np.column_stack(cols).astype(np.float64)
    atom = np.arange(len(table))
    if exclude_border is not False:
        margin = 0 if exclude_border is True else int(exclude_border)
        keep = ~_border_mask(labels, margin)[1:]
        table, atom = table[keep], atom[keep]
    return table, atom


# --------------------------------------------------------------------------------------------
# estimator
# --------------------------------------------------------------------------------------------
class ContourDescriptor(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    """Describe each atomic contour of probability maps by shape, intensity and neighbourhood.

    A contour is the blob of one atom of :class:`~sklatom.peaks.PeakFinder` with the same
    ``threshold`` (its other parameters at their defaults, ``method="components"``): a
    4-connected region of pixels whose foreground probability ``1 - P[0]`` exceeds the threshold
    of their most probable foreground class (pixels that touch only at a corner belong to
    different contours). Each atom gives one row of a feature table, in PeakFinder's order (by
    row, then column): with ``exclude_border=False`` row ``j`` of an image describes atom ``j``
    of ``PeakFinder(threshold=threshold).transform(P)``, with ``exclude_border=True`` atom ``j``
    of ``PeakFinder(threshold=threshold, exclude_edges=True)``. The rows of all images are
    stacked, image by image.

    Parameters
    ----------
    threshold : float, dict or sequence of float, default=0.5
        Probability threshold in (0, 1), as :class:`~sklatom.peaks.PeakFinder`'s: a pixel
        belongs to a contour when ``1 - P[0]`` exceeds the threshold of its most probable
        foreground class. A dict maps class index to threshold (classes not listed use 0.5); a
        sequence gives one threshold per foreground class, class 1 first.
    pixel_size : float or None, default=None
        Pixel size in Å/px. When given, lengths are in Å and areas in Å² (feature names end in
        ``_A`` / ``_A2``); when None, in px and px² (names end in ``_px`` / ``_px2``).
    order : int, default=6
        Symmetry order ``n`` of the bond-orientational order ``|psi_n|``: 6 for hexagonal
        (triangular) lattices, 4 for square ones, 3 for honeycomb ones (graphene, hBN, MoS2).
        ``psi_n`` is computed over the ``order`` nearest contours of each contour.
    n_neighbors : int, default=3
        Number of nearest contours averaged in ``nn_mean_distance``.
    neighbor_radius : float or None, default=None
        Radius (Å if ``pixel_size`` is given, else px) within which ``n_neighbors_within``
        counts the other contours. None uses 1.25 times the median nearest-neighbour distance of
        each image.
    exclude_border : bool or int, default=True
        Drop the rows of contours cut by the image border (their shape is truncated): True drops
        contours touching the outermost pixel, an integer ``m`` those with a pixel within ``m``
        px of it, False keeps all. Dropped contours still count as neighbours of the others.
    include_coordinates : bool, default=True
        Make the first three columns ``row``, ``col`` (px, pixel centres at integers) and
        ``class`` (index >= 1): the atom's coordinates exactly as PeakFinder gives them (centre
        of mass of the contour weighted by ``1 - P[0]`` minus the threshold; the foreground
        class with the largest probability mass over the contour, same weights), so that rows
        join back to coordinates.
        Set to False to keep positions out of the features, e.g. in front of a scaler and an
        outlier detector.
    n_jobs : int or None, default=None
        Number of joblib jobs for the loop over images.

    Attributes
    ----------
    n_classes_ : int
        Number of classes (including the background) of the maps seen in ``fit``.
    feature_names_out_ : ndarray of str
        Names of the output columns, see :meth:`get_feature_names_out`.
    n_features_out_ : int
        Number of output columns.

    See Also
    --------
    sklatom.peaks.PeakFinder : Atom positions from the same maps.
    skimage.measure.regionprops_table : The shape measures used here.

    Notes
    -----
    **Input.** ``P`` is an ndarray ``(n_images, n_classes, height, width)`` or a list of
    ``(n_classes, height, width)`` arrays (sizes may differ), in [0, 1] and summing to 1 over
    the class axis (tolerance 1e-3), class 0 = background, at least 2 classes. Raw images, for
    the intensity statistics, are given as ``transform(P, images=images)`` or as
    ``X = (P, images)``, a 2-tuple whose first element is a 4-D array or a list (the convention of
    :class:`~sklatom.peaks.PeakFinder`, so that an upstream Pipeline step can hand images
    through). Without images the intensity statistics are those of ``1 - P[0]``.

    **Output.** A float64 array ``(n_contours_total, n_features)``; with
    ``set_output(transform="pandas")`` (or the global ``transform_output="pandas"``), a
    DataFrame with the same columns and a MultiIndex ``(image, atom)``: the image index and the
    row's index within that image (0, 1, ... over the rows kept). Maps without any contour give
    a table with 0 rows and all columns. Columns, in order (``L`` = ``A`` or ``px``):

    - ``row``, ``col``, ``class`` (only if ``include_coordinates``): position in px, class index.
    - ``area_L2``, ``perimeter_L``, ``equivalent_diameter_L`` (diameter of the disk of the same
      area), ``major_axis_length_L``, ``minor_axis_length_L`` (of the ellipse with the same
      second moments), ``eccentricity`` (0 for a disk), ``solidity`` (area / convex area): from
      :func:`skimage.measure.regionprops_table` on the binary contour.
    - ``orientation_deg``: angle of the major axis from the +col axis (pointing right),
      counter-clockwise as the image is displayed (rows pointing down), in [-90, 90) degrees.
      It is skimage's ``orientation`` (angle between the row axis and the major axis) plus
      90°, wrapped. ``orientation_cos2``, ``orientation_sin2`` are cos and sin of twice that
      angle, a continuous encoding for clustering (the angle itself jumps at ±90°).
    - ``intensity_mean``, ``intensity_max``, ``intensity_min``, ``intensity_std`` of the image
      (or of ``1 - P[0]``) over the contour.
    - ``hu_0`` ... ``hu_6``: Hu's moment invariants of the binary contour (raw, not log-scaled).
    - ``nn_distance_L``: distance to the nearest other contour centre (the atom positions
      ``row``, ``col``); ``nn_mean_distance_L``: mean distance to the ``n_neighbors`` nearest;
      ``n_neighbors_within``: number of contours within ``neighbor_radius``; ``psi{order}``:
      ``|mean_j exp(i order theta_j)|`` over the ``order`` nearest contours, theta_j the bond
      angle (1 = perfect n-fold order). Neighbours are searched among all contours of the same
      image, including those dropped by ``exclude_border``. With fewer than 2 contours in an
      image, the distances and ``psi`` are NaN and the count is 0; with fewer than ``order`` +
      1, ``psi`` uses those available.

    Examples
    --------
    >>> import numpy as np
    >>> from sklatom.descriptors import ContourDescriptor
    >>> rr, cc = np.mgrid[:40, :40]
    >>> fg = np.where((rr - 20) ** 2 + (cc - 20) ** 2 <= 36, 0.9, 0.05)   # a disk of radius 6 px
    >>> P = np.stack([1 - fg, fg])[np.newaxis]                          # (1, 2, 40, 40)
    >>> desc = ContourDescriptor(pixel_size=0.1).fit(P)
    >>> table = desc.transform(P)
    >>> table.shape
    (1, 28)
    >>> names = list(desc.get_feature_names_out())
    >>> round(float(table[0, names.index("area_A2")]), 2)     # 113 px of 0.01 Å^2
    1.13
    >>> df = desc.set_output(transform="pandas").transform(P)
    >>> df.index.names
    FrozenList(['image', 'atom'])
    >>> df[["row", "col", "class"]].round(3).to_numpy().tolist()
    [[20.0, 20.0, 1.0]]
    """

    def __init__(self, *, threshold=0.5, pixel_size=None, order=6, n_neighbors=3,
                 neighbor_radius=None, exclude_border=True, include_coordinates=True,
                 n_jobs=None):
        self.threshold = threshold
        self.pixel_size = pixel_size
        self.order = order
        self.n_neighbors = n_neighbors
        self.neighbor_radius = neighbor_radius
        self.exclude_border = exclude_border
        self.include_coordinates = include_coordinates
        self.n_jobs = n_jobs

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        return tags

    def _check_all_params(self):
        if not isinstance(self.include_coordinates, (bool, np.bool_)):
            raise TypeError(
                f"include_coordinates must be True or False; got {self.include_coordinates!r}")
        return _check_params(self.pixel_size, self.order, self.n_neighbors,
                             self.neighbor_radius, self.exclude_border)

    def _finder_args(self, n_classes):
        """The per-map arguments of the PeakFinder whose atoms the rows are (this threshold,
        its other parameters at their defaults); checks the threshold against the maps."""
        return PeakFinder(threshold=self.threshold)._map_args(n_classes)

    def set_output(self, *, transform=None):
        """Choose the output container of :meth:`transform` and :meth:`fit_transform`.

        Parameters
        ----------
        transform : {"default", "pandas"} or None, default=None
            ``"default"``: a float64 ndarray; ``"pandas"``: a DataFrame with the columns of
            :meth:`get_feature_names_out` and a MultiIndex ``(image, atom)``; None: unchanged.

        Returns
        -------
        self : ContourDescriptor
            The estimator.
        """
        if transform is None:
            return self
        if transform not in _OUTPUTS:
            raise ValueError(f"transform must be one of {_OUTPUTS} or None; got {transform!r}")
        if not hasattr(self, "_sklearn_output_config"):
            self._sklearn_output_config = {}
        self._sklearn_output_config["transform"] = transform
        return self

    def fit(self, P, y=None, images=None):
        """Check the parameters and the maps; remember the number of classes and the columns.

        Parameters
        ----------
        P : ndarray of shape (n_images, n_classes, height, width) or list of ndarray
            Probability maps (class 0 = background), or a tuple ``(P, images)``.
        y : None
            Ignored.
        images : ndarray of shape (n_images, height, width) or list of ndarray, default=None
            Ignored in ``fit``; accepted so that fit and transform take the same arguments.

        Returns
        -------
        self : ContourDescriptor
            The fitted descriptor.
        """
        ps = self._check_all_params()
        P, images = split_maps_and_images(P, images)
        maps = check_probability_maps(P)
        if images is not None:
            check_images_for_maps(images, maps)
        self._finder_args(maps[0].shape[0])
        self.n_classes_ = maps[0].shape[0]
        self.feature_names_out_ = np.asarray(
            _feature_names(ps, self.order, self.include_coordinates), dtype=object)
        self.n_features_out_ = len(self.feature_names_out_)
        return self

    def transform(self, P, images=None):
        """Describe every contour of every map.

        Parameters
        ----------
        P : ndarray of shape (n_images, n_classes, height, width) or list of ndarray
            Probability maps summing to 1 over the class axis, class 0 = background; or a tuple
            ``(P, images)``.
        images : ndarray of shape (n_images, height, width) or list of ndarray, default=None
            Raw intensities for the ``intensity_*`` columns; if None (and not in ``P``), they
            are computed on ``1 - P[0]``.

        Returns
        -------
        table : ndarray of shape (n_contours_total, n_features) or DataFrame
            One row per contour, images stacked in order; a DataFrame indexed by
            ``(image, atom)`` when the output is set to pandas, ``atom`` being the atom's index
            in ``PeakFinder(threshold=threshold).transform(P)[image]`` (contours at the border
            left out by ``exclude_border`` leave gaps). 0 rows if no map has a contour.
        """
        check_is_fitted(self, "n_classes_")
        ps = self._check_all_params()
        P, images = split_maps_and_images(P, images)
        # checked (and cast) as PeakFinder checks them, so that the atoms are its atoms
        maps = check_probability_maps(P)
        if maps[0].shape[0] != self.n_classes_:
            raise ValueError(
                f"P has {maps[0].shape[0]} classes but this ContourDescriptor was fitted on maps "
                f"with {self.n_classes_} classes")
        names = _feature_names(ps, self.order, self.include_coordinates)
        if list(names) != list(self.feature_names_out_):
            raise ValueError(
                "pixel_size, order or include_coordinates changed since fit, which changes the "
                "output columns; fit again")
        imgs = check_images_for_maps(images, maps) if images is not None else [None] * len(maps)
        args = (self._finder_args(self.n_classes_), ps, self.order, self.n_neighbors,
                self.neighbor_radius, self.exclude_border, self.include_coordinates)
        described = map_items(_describe_one, ((p, im) + args for p, im in zip(maps, imgs)),
                              self.n_jobs)
        tables = [t for t, _ in described]
        table = np.concatenate(tables, axis=0) if tables else np.empty((0, len(names)))
        # set_output's choice, else the global transform_output (public API only)
        dense = (getattr(self, "_sklearn_output_config", {}).get("transform")
                 or get_config()["transform_output"])
        if dense == "default":
            return table
        if dense != "pandas":
            raise ValueError(
                f"ContourDescriptor supports the output containers {_OUTPUTS}; got {dense!r}")
        # "atom" is the index of the atom in PeakFinder(threshold=threshold)'s output of the
        # image, so rows join PeakFinder's atoms even where border contours are left out
        index = pd.MultiIndex.from_arrays(
            [np.repeat(np.arange(len(tables)), [len(t) for t in tables]),
             np.concatenate([a for _, a in described]) if described else np.zeros(0, int)],
            names=["image", "atom"])
        return pd.DataFrame(table, columns=list(names), index=index)

    def fit_transform(self, P, y=None, images=None):
        """Fit, then transform; see :meth:`fit` and :meth:`transform`."""
        return self.fit(P, y, images=images).transform(P, images=images)

    def get_feature_names_out(self, input_features=None):
        """Names of the output columns (units in the suffix: ``_A``, ``_A2``, ``_px``, ``_px2``).

        Parameters
        ----------
        input_features : None
            Ignored (the input is images, which have no feature names).

        Returns
        -------
        feature_names_out : ndarray of str objects
            See the Notes of the class for their meaning.
        """
        check_is_fitted(self, "feature_names_out_")
        return self.feature_names_out_.copy()
