"""Atom positions from per-pixel class probability maps.

:class:`PeakFinder` turns the probability maps of a segmenter, ``(n_images, n_classes, height,
width)`` with class 0 the background, into one ``(k_i, 3)`` array of atoms per image: row and
column in pixels (sub-pixel floats, pixel centres at integers, as in scikit-image) and the class
index (``>= 1``). :func:`find_peaks` does the same for one map without an estimator and also
returns a confidence per atom.
"""

import numbers

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from sklearn.base import BaseEstimator, TransformerMixin

from ._blobs import find_blobs
from ._validation import (check_images_for_maps, check_probability_maps, map_items,
                          split_maps_and_images)

__all__ = ["PeakFinder", "find_peaks", "column_intensities", "contrast_classes"]

_METHODS = ("components", "maxima")
_REFINE = (None, "com", "gaussian")


# --------------------------------------------------------------------------------------------
# parameter and input checks
# --------------------------------------------------------------------------------------------
def _check_params(method, threshold, min_distance, min_area, merge_distance, edge_margin,
                  exclude_edges, refine, refine_radius, contrast=None):
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}; got {method!r}")
    for name, value, low in (("min_distance", min_distance, 1), ("min_area", min_area, 1),
                             ("refine_radius", refine_radius, 1)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"{name} must be an integer >= {low} (pixels); got {value!r}")
    if merge_distance is not None:
        if (isinstance(merge_distance, bool) or not isinstance(merge_distance, numbers.Real)
                or not np.isfinite(merge_distance) or merge_distance <= 0):
            raise ValueError(
                f"merge_distance must be None or a positive number of pixels; got "
                f"{merge_distance!r}")
    if (isinstance(edge_margin, bool) or not isinstance(edge_margin, numbers.Real)
            or not np.isfinite(edge_margin) or edge_margin < 0):
        raise ValueError(f"edge_margin must be a number of pixels >= 0; got {edge_margin!r}")
    if not isinstance(exclude_edges, (bool, np.bool_)):
        raise TypeError(f"exclude_edges must be True or False; got {exclude_edges!r}")
    if refine not in _REFINE:
        raise ValueError(f"refine must be one of {_REFINE}; got {refine!r}")
    if contrast is not None:
        ok = (isinstance(contrast, (tuple, list)) and len(contrast) == 2
              and all(isinstance(c, numbers.Integral) and not isinstance(c, bool) and c >= 1
                      for c in contrast) and contrast[0] != contrast[1])
        if not ok:
            raise ValueError(
                f"classes_from_contrast must be None or (lighter, heavier): two different "
                f"foreground class indices; got {contrast!r}")


def _one_threshold(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in (0, 1); got {value!r}")
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must be strictly between 0 and 1; got {value!r}")
    return float(value)


def _class_thresholds(threshold, n_classes):
    """Return an array ``t`` of length ``n_classes`` with ``t[c]`` the threshold of class c."""
    out = np.full(n_classes, 0.5)
    out[0] = np.nan
    if isinstance(threshold, dict):
        for key, value in threshold.items():
            if (isinstance(key, bool) or not isinstance(key, numbers.Integral)
                    or not 1 <= key < n_classes):
                raise ValueError(
                    f"threshold keys must be foreground class indices 1..{n_classes - 1}; "
                    f"got key {key!r}")
            out[key] = _one_threshold(value, f"threshold[{key}]")
    elif isinstance(threshold, (list, tuple, np.ndarray)):
        values = list(np.ravel(threshold)) if isinstance(threshold, np.ndarray) else threshold
        if len(values) != n_classes - 1:
            raise ValueError(
                f"threshold as a sequence must hold one value per foreground class "
                f"({n_classes - 1} for {n_classes} classes, class 1 first); got {len(values)}")
        for c, value in enumerate(values, start=1):
            out[c] = _one_threshold(value, f"threshold[{c - 1}]")
    else:
        out[1:] = _one_threshold(threshold, "threshold")
    return out


# --------------------------------------------------------------------------------------------
# detection
# --------------------------------------------------------------------------------------------
def _maxima(p, thresholds, min_distance):
    """Local maxima of the foreground probability ``1 - P[0]``; class = argmax of P[1:]."""
    H, W = p.shape[1:]
    fg = 1.0 - p[0]
    size = 2 * min_distance + 1
    mx = ndimage.maximum_filter(fg, size=size, mode="nearest")
    # cheapest cut first: nothing below the smallest class threshold can survive
    mask = (fg == mx) & (fg > np.nanmin(thresholds))
    # plateaus (several equal maxima touching) count once, at their centroid
    lab, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros((0, 2)), np.zeros(0), np.zeros(0), np.zeros(0, bool)
    flat = lab.ravel()
    idx = np.flatnonzero(flat)
    labs = flat[idx]
    r, col = np.divmod(idx, W)
    cnt = np.bincount(labs, minlength=n + 1)[1:]
    pos = np.column_stack([np.bincount(labs, r, minlength=n + 1)[1:] / cnt,
                           np.bincount(labs, col, minlength=n + 1)[1:] / cnt])
    ri = np.clip(np.rint(pos[:, 0]).astype(np.intp), 0, H - 1)
    ci = np.clip(np.rint(pos[:, 1]).astype(np.intp), 0, W - 1)
    cls = np.argmax(p[1:, ri, ci], axis=0) + 1
    conf = fg[ri, ci].astype(np.float64)
    keep = conf > thresholds[cls]
    border = (ri == 0) | (ri == H - 1) | (ci == 0) | (ci == W - 1)
    return pos[keep], cls[keep].astype(np.float64), conf[keep], border[keep]


# --------------------------------------------------------------------------------------------
# sub-pixel refinement
# --------------------------------------------------------------------------------------------
def _windows(image, pos, radius):
    """Cut ``(k, 2r+1, 2r+1)`` windows centred on the rounded positions.

    Returns the windows, a validity mask (False outside the image), the integer centres and the
    offset grid.
    """
    H, W = image.shape
    centre = np.rint(pos).astype(np.intp)
    centre[:, 0] = np.clip(centre[:, 0], 0, H - 1)
    centre[:, 1] = np.clip(centre[:, 1], 0, W - 1)
    off = np.arange(-radius, radius + 1)
    padded = np.pad(image.astype(np.float64, copy=False), radius)
    valid_img = np.pad(np.ones(image.shape, bool), radius)
    rr = centre[:, 0, None, None] + radius + off[None, :, None]
    cc = centre[:, 1, None, None] + radius + off[None, None, :]
    return padded[rr, cc], valid_img[rr, cc], centre, off


def _refine_com(win, valid, off):
    """Background-subtracted centre of mass of each window; NaN where undefined."""
    big = np.where(valid, win, np.inf)
    base = big.reshape(len(win), -1).min(axis=1)
    w = np.where(valid, win - base[:, None, None], 0.0)
    sw = w.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        dr = (w * off[None, :, None]).sum(axis=(1, 2)) / sw
        dc = (w * off[None, None, :]).sum(axis=(1, 2)) / sw
    scale = np.maximum(np.abs(win).reshape(len(win), -1).max(axis=1), 1e-300)
    bad = ~(sw > 1e-9 * scale)
    dr[bad] = np.nan
    dc[bad] = np.nan
    return dr, dc


def _gauss_model(params, R, C):
    A, y0, x0, s, B = (params[:, i, None, None] for i in range(5))
    g = np.exp(-((R - y0) ** 2 + (C - x0) ** 2) / (2.0 * s * s))
    return A * g + B, g


def _fit_gaussians(win, valid, off, init, n_iter=20, chunk=8192):
    """Fit in chunks of ``chunk`` windows to bound memory; see :func:`_fit_gaussians_chunk`."""
    if len(win) <= chunk:
        return _fit_gaussians_chunk(win, valid, off, init, n_iter)
    parts = [_fit_gaussians_chunk(win[s:s + chunk], valid[s:s + chunk], off,
                                  init[s:s + chunk], n_iter)
             for s in range(0, len(win), chunk)]
    return np.concatenate([p for p, _ in parts]), np.concatenate([o for _, o in parts])


def _fit_gaussians_chunk(win, valid, off, init, n_iter):
    """Levenberg-Marquardt fit of ``A exp(-|x - x0|^2 / 2 s^2) + B`` to all windows at once.

    ``init`` holds the starting row/col offsets (k, 2), or all five starting parameters (k, 5).
    Returns the fitted parameters
    ``(k, 5)`` = A, row, col, sigma, B (row/col relative to the window centre) and a bool array
    telling which fits converged to something sensible.
    """
    k = len(win)
    R = np.broadcast_to(off[None, :, None].astype(np.float64), win.shape)
    C = np.broadcast_to(off[None, None, :].astype(np.float64), win.shape)
    m = valid.astype(np.float64)
    vmin = np.where(valid, win, np.inf).reshape(k, -1).min(axis=1)
    vmax = np.where(valid, win, -np.inf).reshape(k, -1).max(axis=1)
    radius = off[-1]
    if init.shape[1] == 5:
        params = init.astype(np.float64, copy=True)
    else:
        params = np.column_stack([vmax - vmin, init[:, 0], init[:, 1],
                                  np.full(k, max(radius / 2.0, 1.0)), vmin])
    lam = np.full(k, 1e-3)

    def cost_of(p):
        model, _ = _gauss_model(p, R, C)
        res = (win - model) * m
        return (res ** 2).sum(axis=(1, 2)), res

    cost, res = cost_of(params)
    eye = np.eye(5)
    for _ in range(n_iter):
        A, y0, x0, s = (params[:, i, None, None] for i in range(4))
        _, g = _gauss_model(params, R, C)
        dy, dx = R - y0, C - x0
        J = np.stack([g, A * g * dy / s ** 2, A * g * dx / s ** 2,
                      A * g * (dy ** 2 + dx ** 2) / s ** 3, np.ones_like(g)], axis=-1)
        J = J * m[..., None]
        J = J.reshape(k, -1, 5)
        JT = J.transpose(0, 2, 1)
        JTJ = JT @ J
        JTr = (JT @ res.reshape(k, -1, 1))[..., 0]
        diag = np.diagonal(JTJ, axis1=1, axis2=2)
        Amat = JTJ + lam[:, None, None] * (diag[:, :, None] * eye + 1e-12 * eye)
        with np.errstate(all="ignore"):
            try:
                step = np.linalg.solve(Amat, JTr[..., None])[..., 0]
            except np.linalg.LinAlgError:
                step = np.stack([np.linalg.lstsq(a, b, rcond=None)[0]
                                 for a, b in zip(Amat, JTr)])
            trial = params + step
            trial[:, 3] = np.abs(trial[:, 3])
            new_cost, new_res = cost_of(trial)
        better = np.isfinite(new_cost) & (new_cost <= cost) & np.all(np.isfinite(trial), axis=1)
        params[better] = trial[better]
        cost[better] = new_cost[better]
        res[better] = new_res[better]
        lam = np.where(better, lam * 0.3, lam * 10.0)
        lam = np.clip(lam, 1e-9, 1e9)
    ok = (np.all(np.isfinite(params), axis=1) & (params[:, 0] > 0)
          & (params[:, 3] > 0.2) & (params[:, 3] < 2.0 * radius + 1)
          & (np.abs(params[:, 1]) <= radius) & (np.abs(params[:, 2]) <= radius))
    return params, ok


def _neighbour_model(params, ok, centre, off):
    """Sum over the neighbours j of atom i of their fitted Gaussians on the window of i."""
    src = np.flatnonzero(ok)
    if len(src) == 0:
        return None
    absolute = centre + params[:, 1:3]
    radius = off[-1]
    sigma_max = params[src, 3].max()
    tree_src = cKDTree(absolute[src])
    tree_all = cKDTree(absolute)
    pairs = tree_all.sparse_distance_matrix(
        tree_src, np.sqrt(2) * radius + 4.0 * sigma_max + 1.0, output_type="ndarray")
    i, j = pairs["i"], src[pairs["j"]]
    keep = i != j
    i, j = i[keep], j[keep]
    if len(i) == 0:
        return None
    order = np.argsort(i, kind="stable")
    i, j = i[order], j[order]
    two_s2 = 2.0 * params[j, 3] ** 2
    gr = np.exp(-((centre[i, 0, None] + off[None, :] - absolute[j, 0, None]) ** 2)
                / two_s2[:, None])
    gc = np.exp(-((centre[i, 1, None] + off[None, :] - absolute[j, 1, None]) ** 2)
                / two_s2[:, None])
    contrib = params[j, 0, None, None] * gr[:, :, None] * gc[:, None, :]
    starts = np.flatnonzero(np.r_[True, i[1:] != i[:-1]])
    out = np.zeros((len(params), len(off), len(off)))
    out[i[starts]] = np.add.reduceat(contrib, starts, axis=0)
    return out


def _refine(image, pos, method, radius, n_deblend=4):
    """Refine positions on ``image``; rows that cannot be refined keep their input position."""
    if len(pos) == 0:
        return pos
    win, valid, centre, off = _windows(image, pos, radius)
    dr, dc = _refine_com(win, valid, off)
    com_ok = np.isfinite(dr) & np.isfinite(dc)
    base = pos - centre  # unrefined offsets relative to the window centre
    com = np.where(com_ok[:, None], np.column_stack([dr, dc]), base)
    if method == "com":
        return centre + com
    params, ok = _fit_gaussians(win, valid, off, com)
    for _ in range(n_deblend):
        # neighbouring atoms' tails bias each fit towards them: subtract the fitted Gaussians
        # of the neighbours from every window and fit again
        own = _neighbour_model(params, ok, centre, off)
        if own is None:
            break
        params, ok = _fit_gaussians(win - own, valid, off, params, n_iter=6)
    # a fit that left the window, collapsed or moved further than the radius falls back to the
    # centre of mass (or, for a flat window, to the unrefined position)
    moved = np.hypot(params[:, 1] - base[:, 0], params[:, 2] - base[:, 1])
    ok &= moved <= radius
    return centre + np.where(ok[:, None], params[:, 1:3], com)


# --------------------------------------------------------------------------------------------
# classes from column intensities
# --------------------------------------------------------------------------------------------
#: A bright minority of columns is of the heavier class when it is at least this much brighter
#: than the host columns (Si/C in a MAADF image of graphene is 1.7-3)...
CONTRAST_RATIO = 1.4
#: ... and holds at most this fraction of the atoms (a sublattice, such as N in hBN or Mo in
#: MoS2, keeps the segmenter's class: the lattice tells what it is better than its contrast).
MINORITY_FRACTION = 0.25


def column_intensities(image, positions, radius):
    """Background-subtracted intensity summed over a disk around each position.

    The image is lightly smoothed (Gaussian, 0.5 px); the background is its local minimum
    within ``2 * radius``, smoothed, so a column's neighbours do not count as its signal.

    Parameters
    ----------
    image : ndarray of shape (height, width)
        Raw intensities.
    positions : ndarray of shape (k, 2)
        (row, col) in px.
    radius : float
        Disk radius in px.

    Returns
    -------
    intensity : ndarray of shape (k,)
    """
    x = ndimage.gaussian_filter(np.asarray(image, dtype=np.float64), 0.5)
    r = max(1.0, float(radius))
    size = 2 * int(np.ceil(2 * r)) + 1
    background = ndimage.uniform_filter(ndimage.minimum_filter(x, size=size, mode="nearest"),
                                        size=size, mode="nearest")
    n = int(np.ceil(r))
    yy, xx = np.mgrid[-n:n + 1, -n:n + 1]
    disk = (yy**2 + xx**2 <= r * r).astype(np.float64)
    total = ndimage.correlate(x - background, disk, mode="nearest")
    rc = np.rint(positions).astype(np.intp)
    rc[:, 0] = np.clip(rc[:, 0], 0, x.shape[0] - 1)
    rc[:, 1] = np.clip(rc[:, 1], 0, x.shape[1] - 1)
    return total[rc[:, 0], rc[:, 1]]


def contrast_classes(image, coords, lighter, heavier, min_atoms=10):
    """Correct the classes of atoms whose column intensity contradicts them.

    The intensity of each column (:func:`column_intensities`, a disk of 0.3 times the median
    nearest-neighbour distance) is compared with the host: the atoms of class ``lighter``,
    whose log-intensities have a median ``m`` and a robust spread ``s`` (1.48 times the
    median absolute deviation). Two components, host and brighter minority:

    * a ``lighter`` atom at least :data:`CONTRAST_RATIO` times and ``4 s`` brighter than
      ``m`` is of class ``heavier`` (a dopant or adatom the segmenter took for the host),
      provided such atoms are a minority (at most :data:`MINORITY_FRACTION` of the lighter
      atoms: a sublattice, N in hBN, keeps its class, the lattice tells what it is);
    * a ``heavier`` atom within ``2 s`` of ``m`` and less than 1.2 times it is of class
      ``lighter`` (a host atom taken for a dopant).

    With fewer than ``min_atoms`` lighter atoms there is no host to compare with and the
    classes are kept (e.g. SrTiO3 in HAADF, whose columns are all "heavy").

    Parameters
    ----------
    image : ndarray of shape (height, width)
        Raw intensities.
    coords : ndarray of shape (k, 3)
        Atoms: row, col (px) and class.
    lighter, heavier : int
        Class indices of the lighter and the heavier class.
    min_atoms : int, default=10
        Smallest number of lighter atoms for a host.

    Returns
    -------
    coords : ndarray of shape (k, 3)
        A copy with corrected classes.

    Examples
    --------
    >>> import numpy as np
    >>> rr, cc = np.mgrid[:60, :60]
    >>> sites = [(r, c) for r in range(5, 60, 10) for c in range(5, 60, 10)]
    >>> bright = {(25, 25), (45, 15)}                       # two dopants, 2.5x brighter
    >>> image = sum((2.5 if s in bright else 1.0)
    ...             * np.exp(-((rr - s[0])**2 + (cc - s[1])**2) / 8.0) for s in sites)
    >>> coords = np.array([(r, c, 1) for r, c in sites], float)   # all taken for the host
    >>> fixed = contrast_classes(image, coords, lighter=1, heavier=2)
    >>> [tuple(map(int, a[:2])) for a in fixed if a[2] == 2]
    [(25, 25), (45, 15)]
    """
    out = np.array(coords, dtype=np.float64, copy=True).reshape(-1, 3)
    light = out[:, 2] == lighter
    if light.sum() < min_atoms or len(out) < 2:
        return out
    d, _ = cKDTree(out[:, :2]).query(out[:, :2], k=2)
    intensity = column_intensities(image, out[:, :2], 0.3 * float(np.median(d[:, 1])))
    positive = intensity > 0
    if np.count_nonzero(positive & light) < min_atoms:
        return out
    v = np.log(np.maximum(intensity, intensity[positive].min()))
    m = float(np.median(v[light]))
    spread = 1.48 * float(np.median(np.abs(v[light] - m)))
    brighter = light & (v - m >= max(np.log(CONTRAST_RATIO), 4 * spread))
    if 0 < brighter.sum() <= MINORITY_FRACTION * light.sum():
        out[brighter, 2] = heavier
    host_like = (out[:, 2] == heavier) & ~brighter & (v - m < min(2 * spread, np.log(1.2)))
    out[host_like, 2] = lighter
    return out


# --------------------------------------------------------------------------------------------
# merging and edges
# --------------------------------------------------------------------------------------------
def _merge(pos, cls, conf, border, distance):
    """Merge detections closer than ``distance`` px (transitively).

    Returns the merged ``pos, cls, conf, border`` and ``group``: for each detection given, the
    index of the merged detection it went into.
    """
    n = len(pos)
    if n < 2:
        return pos, cls, conf, border, np.arange(n)
    pairs = cKDTree(pos).query_pairs(distance, output_type="ndarray")
    if len(pairs) == 0:
        return pos, cls, conf, border, np.arange(n)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    n_groups, group = connected_components(graph, directed=False)
    w = np.maximum(conf, 1e-12)
    sw = np.bincount(group, w, minlength=n_groups)
    new_pos = np.column_stack([np.bincount(group, w * pos[:, 0], minlength=n_groups) / sw,
                               np.bincount(group, w * pos[:, 1], minlength=n_groups) / sw])
    # the strongest member of each group gives the class and the confidence
    order = np.lexsort((-conf, group))
    first = order[np.searchsorted(group[order], np.arange(n_groups))]
    new_border = np.bincount(group, border.astype(np.float64), minlength=n_groups) > 0
    return new_pos, cls[first], conf[first], new_border, group


def _find_peaks_checked(p, image, thresholds, method, min_distance, min_area, merge_distance,
                        edge_margin, exclude_edges, refine, refine_radius, contrast=None,
                        return_labels=False):
    """The atoms of one checked map: ``coords`` (k, 3) and ``confidence`` (k,), sorted by row
    then column.

    With ``return_labels`` (``method="components"`` only), also ``labels``: an int image
    ``(height, width)``, ``j + 1`` on the pixels of the blobs that became atom ``j`` (several
    blobs if atoms were merged), 0 elsewhere, also on the blobs of atoms that were dropped.
    """
    H, W = p.shape[1:]
    if method == "components":
        blobs = find_blobs(p, thresholds, min_area)
        pos, cls, conf, border = blobs.centre, blobs.klass, blobs.peak, blobs.border
    else:
        pos, cls, conf, border = _maxima(p, thresholds, min_distance)
    # atom[i]: index of the detection that detection i has become so far, -1 once dropped
    atom = np.arange(len(pos))
    if refine is not None and len(pos):
        source = image if image is not None else 1.0 - p[0].astype(np.float64)
        pos = _refine(source, pos, refine, refine_radius)
    if merge_distance is not None:
        pos, cls, conf, border, atom = _merge(pos, cls, conf, border, merge_distance)
    if exclude_edges and len(pos):
        m = edge_margin
        inside = ((pos[:, 0] >= m) & (pos[:, 0] <= H - 1 - m)
                  & (pos[:, 1] >= m) & (pos[:, 1] <= W - 1 - m) & ~border)
        pos, cls, conf = pos[inside], cls[inside], conf[inside]
        atom = np.where(inside[atom], np.cumsum(inside)[atom] - 1, -1)
    order = np.lexsort((pos[:, 1], pos[:, 0])) if len(pos) else np.zeros(0, np.intp)
    coords = np.column_stack([pos, cls]).astype(np.float64)[order].reshape(-1, 3)
    if contrast is not None and image is not None:
        coords = contrast_classes(image, coords, *contrast)
    confidence = conf.astype(np.float64)[order]
    if not return_labels:
        return coords, confidence
    if method != "components":
        raise ValueError(f"labels exist for method='components' only; got {method!r}")
    # place + 1 in the sorted output of each detection (index + 1), 0 for index 0 = dropped
    place = np.zeros(len(order) + 1, np.intp)
    place[order + 1] = np.arange(1, len(order) + 1)
    # new label of each blob label (0 = no blob)
    relabel = np.concatenate([[0], place[atom + 1]])
    return coords, confidence, relabel[blobs.labels]


def find_peaks(P, image=None, *, method="components", threshold=0.5, min_distance=2,
               min_area=1, merge_distance=None, edge_margin=0, exclude_edges=False, refine=None,
               refine_radius=3, classes_from_contrast=None):
    """Find the atoms in one probability map and return their confidence.

    The function behind :class:`PeakFinder`, for a single map and without fitting. Parameters
    are those of :class:`PeakFinder`.

    Parameters
    ----------
    P : ndarray of shape (n_classes, height, width)
        Class probabilities of one image, summing to 1 over axis 0; class 0 is the background.
    image : ndarray of shape (height, width), default=None
        Raw intensities used by ``refine``; if None, refinement runs on ``1 - P[0]``.
    method, threshold, min_distance, min_area, merge_distance, edge_margin, exclude_edges, \
refine, refine_radius, classes_from_contrast
        See :class:`PeakFinder`.

    Returns
    -------
    coords : ndarray of shape (k, 3), float64
        Row (px), column (px) and class index (>= 1) of each atom, sorted by row then column.
        ``(0, 3)`` when no atom is found.
    confidence : ndarray of shape (k,), float64
        Peak foreground probability ``1 - P[0]`` of each atom, in [0, 1]: the largest within
        its component (``"components"``) or the value at the maximum (``"maxima"``). For
        merged atoms, the largest of the merged confidences.

    Examples
    --------
    >>> import numpy as np
    >>> from sklatom.peaks import find_peaks
    >>> rr, cc = np.mgrid[:32, :32]
    >>> fg = 0.9 * np.exp(-((rr - 10.0) ** 2 + (cc - 20.0) ** 2) / 8.0)
    >>> P = np.stack([1 - fg, fg])
    >>> coords, confidence = find_peaks(P)
    >>> coords.round(3)
    array([[10., 20.,  1.]])
    >>> confidence.round(2)
    array([0.9])
    """
    _check_params(method, threshold, min_distance, min_area, merge_distance, edge_margin,
                  exclude_edges, refine, refine_radius, classes_from_contrast)
    p = check_probability_maps(np.asarray(P)[np.newaxis] if np.ndim(P) == 3 else P, name="P")[0]
    thresholds = _class_thresholds(threshold, p.shape[0])
    img = None
    if image is not None:
        batch = np.asarray(image)[np.newaxis] if np.ndim(image) == 2 else image
        img = check_images_for_maps(batch, [p])[0]
    return _find_peaks_checked(p, img, thresholds, method, min_distance, min_area,
                               merge_distance, edge_margin, exclude_edges, refine, refine_radius,
                               classes_from_contrast)


class PeakFinder(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    """Find atoms in per-pixel class probability maps.

    Turns the output of a segmenter, probability maps with class 0 the background, into one
    array of atom coordinates and classes per image.

    Parameters
    ----------
    method : {"components", "maxima"}, default="components"
        ``"components"``: threshold the foreground probability ``1 - P[0]``, label the
        connected pixels (4-connectivity: pixels touching only at a corner are apart; the blob
        rule that :class:`~sklatom.descriptors.ContourDescriptor` shares, so that its rows are
        these atoms) and place an atom at each component's centre of mass
        weighted by ``1 - P[0] - threshold`` (zero at the component's edge, which removes most
        of the bias of cutting a blob on the pixel grid); its class is the foreground class with
        the largest probability mass over the component (same weights), so a blob whose class
        the network is unsure of stays one atom. Fast and sub-pixel; atoms whose blobs touch
        above the threshold merge into one.
        ``"maxima"``: local maxima of the foreground probability ``1 - P[0]`` in a
        ``(2 min_distance + 1)`` square window; plateaus count once, at their centroid; the class
        is the argmax over the foreground classes of the map at the maximum; positions are whole
        pixels unless ``refine`` is set.
    threshold : float, dict or sequence of float, default=0.5
        Probability threshold in (0, 1). A dict maps class index to threshold (classes not
        listed use 0.5); a sequence gives one threshold per foreground class, class 1 first.
        ``"components"`` keeps pixels where ``1 - P[0]`` exceeds the threshold of the pixel's
        most probable foreground class; ``"maxima"`` keeps a maximum when ``1 - P[0]`` there
        exceeds the threshold of its class.
    min_distance : int, default=2
        Half-size in pixels of the maximum filter (``"maxima"`` only): a maximum is kept when no
        pixel within ``min_distance`` px (Chebyshev distance) is higher.
    min_area : int, default=1
        Smallest component in pixels (``"components"`` only); smaller ones are dropped.
    merge_distance : float, default=None
        If set, detections closer than this many pixels are merged (transitively): position =
        confidence-weighted mean, class and confidence = those of the most confident one.
    edge_margin : float, default=0
        Margin in pixels used when ``exclude_edges`` is True.
    exclude_edges : bool, default=False
        If True, drop atoms whose final position lies within ``edge_margin`` px of the outermost
        pixel centres, and atoms whose component (``"components"``) or maximum (``"maxima"``)
        touches the image border: their centres are biased by the cut. If False, keep all.
    refine : {None, "com", "gaussian"}, default=None
        Sub-pixel refinement in a ``(2 refine_radius + 1)`` square window around each atom on the
        raw image (see Notes on how it is passed), or on ``1 - P[0]`` when no image is given.
        ``"com"``: centre of mass after subtracting the window minimum. ``"gaussian"``: fit of
        ``A exp(-r^2 / 2 sigma^2) + B`` by Levenberg-Marquardt, all windows at once; the fitted
        Gaussians of neighbouring atoms are then subtracted from each window and the fit repeated
        (4 rounds), which removes the pull of overlapping neighbours (noise-free columns with
        sigma 2 px, 8 px apart: < 0.01 px error). A fit that fails, or moves more than
        ``refine_radius`` px, falls back to the centre of mass, and a flat window keeps the
        unrefined position. About 10^4 atoms/s.
    refine_radius : int, default=3
        Half-size of the refinement window in pixels.
    classes_from_contrast : tuple of int or None, default=None
        ``(lighter, heavier)`` class indices: when raw images are given, correct the classes
        of atoms whose column intensity contradicts them (:func:`contrast_classes`: a bright
        minority among the lighter atoms becomes heavier, host-like heavier atoms lighter).
        For the pretrained general model, ``(1, 2)`` ("light", "heavy"); its
        :class:`~sklatom.finder.AtomFinder` sets this. None: the segmenter's classes.
    n_jobs : int or None, default=None
        Images processed in parallel with joblib (None = 1); results equal ``n_jobs=1``.

    Attributes
    ----------
    n_classes_ : int
        Number of classes (including background) of the maps seen in ``fit``.

    See Also
    --------
    find_peaks : The same for one map, also returning a confidence per atom.
    sklatom.metrics.atom_scores : Precision, recall, F1 and RMSE against true atoms.

    Notes
    -----
    **Input.** ``P`` is an ndarray ``(n_images, n_classes, height, width)`` or a list of
    ``(n_classes, height, width)`` arrays (sizes may differ); maps must sum to 1 over the class
    axis (tolerance 1e-3) and hold at least 2 classes.

    **Raw images for refinement.** Give them as ``transform(P, images=images)``, or pass
    ``X = (P, images)``, a 2-tuple whose first element is a 4-D array or a list: this is what an
    upstream step in a :class:`~sklearn.pipeline.Pipeline` emits to hand the images through
    (:class:`~sklatom.segmentation.FCNSegmenter` with ``passthrough_images=True``).
    ``images`` is ``(n_images, height, width)`` or a list of 2-D arrays matching the maps.
    Without images, ``refine`` works on the foreground probability ``1 - P[0]``.

    **Output.** A list with one float64 array ``(k_i, 3)`` per image: row (px), column (px),
    class index; rows sorted by row then column. An image without atoms gives a ``(0, 3)`` array.

    Examples
    --------
    >>> import numpy as np
    >>> from sklatom.peaks import PeakFinder
    >>> rr, cc = np.mgrid[:40, :40]
    >>> blob = lambda r, c: 0.9 * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / 8.0)
    >>> P1, P2 = blob(10.0, 12.5), blob(30.0, 25.0)      # one atom of class 1, one of class 2
    >>> P = np.stack([1 - P1 - P2, P1, P2])[np.newaxis]  # (1 image, 3 classes, 40, 40)
    >>> coords = PeakFinder().fit_transform(P)
    >>> coords[0].round(3)
    array([[10. , 12.5,  1. ],
           [30. , 25. ,  2. ]])
    """

    def __init__(self, *, method="components", threshold=0.5, min_distance=2, min_area=1,
                 merge_distance=None, edge_margin=0, exclude_edges=False, refine=None,
                 refine_radius=3, classes_from_contrast=None, n_jobs=None):
        self.method = method
        self.threshold = threshold
        self.min_distance = min_distance
        self.min_area = min_area
        self.merge_distance = merge_distance
        self.edge_margin = edge_margin
        self.exclude_edges = exclude_edges
        self.refine = refine
        self.refine_radius = refine_radius
        self.classes_from_contrast = classes_from_contrast
        self.n_jobs = n_jobs

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False  # stateless: transform works on any maps, fitted or not
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        return tags

    def _check_all_params(self):
        _check_params(self.method, self.threshold, self.min_distance, self.min_area,
                      self.merge_distance, self.edge_margin, self.exclude_edges, self.refine,
                      self.refine_radius, self.classes_from_contrast)

    def _map_args(self, n_classes):
        """The arguments of ``_find_peaks_checked`` after the map and the image, for maps of
        ``n_classes`` classes (parameters are checked by the caller)."""
        thresholds = _class_thresholds(self.threshold, n_classes)
        contrast = self.classes_from_contrast
        if contrast is not None and max(contrast) >= n_classes:
            raise ValueError(f"classes_from_contrast={contrast!r} names a class the maps do not "
                             f"have ({n_classes} classes)")
        return (thresholds, self.method, self.min_distance, self.min_area, self.merge_distance,
                self.edge_margin, self.exclude_edges, self.refine, self.refine_radius,
                None if contrast is None else tuple(int(c) for c in contrast))

    def fit(self, P, y=None, images=None):
        """Check the parameters and the maps and remember the number of classes.

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
        self : PeakFinder
            The fitted finder.
        """
        self._check_all_params()
        P, _ = split_maps_and_images(P, images)
        maps = check_probability_maps(P)
        _class_thresholds(self.threshold, maps[0].shape[0])
        self.n_classes_ = maps[0].shape[0]
        return self

    def transform(self, P, images=None, return_confidence=False):
        """Find the atoms in each probability map.

        Parameters
        ----------
        P : ndarray of shape (n_images, n_classes, height, width) or list of ndarray
            Probability maps summing to 1 over the class axis, class 0 = background; or a tuple
            ``(P, images)``.
        images : ndarray of shape (n_images, height, width) or list of ndarray, default=None
            Raw intensities for ``refine``; if None (and not in ``P``), refinement runs on
            ``1 - P[0]``.
        return_confidence : bool, default=False
            Also return the per-atom confidence (see :func:`find_peaks`).

        Returns
        -------
        coords : list of ndarray of shape (k_i, 3), float64
            Row (px), column (px) and class index (>= 1) of the atoms of each image;
            ``(0, 3)`` for an image without atoms.
        confidence : list of ndarray of shape (k_i,)
            Only if ``return_confidence`` is True.
        """
        self._check_all_params()
        P, images = split_maps_and_images(P, images)
        maps = check_probability_maps(P)
        n_classes = maps[0].shape[0]
        if hasattr(self, "n_classes_") and n_classes != self.n_classes_:
            raise ValueError(
                f"P has {n_classes} classes but this PeakFinder was fitted on maps with "
                f"{self.n_classes_} classes")
        imgs = check_images_for_maps(images, maps) if images is not None else [None] * len(maps)
        args = self._map_args(n_classes)
        found = map_items(_find_peaks_checked, ((p, img) + args for p, img in zip(maps, imgs)),
                          self.n_jobs)
        coords = [c for c, _ in found]
        conf = [s for _, s in found]
        if return_confidence:
            return coords, conf
        return coords

    def fit_transform(self, P, y=None, images=None, return_confidence=False):
        """Fit, then transform; see :meth:`fit` and :meth:`transform`."""
        return self.fit(P, y, images=images).transform(
            P, images=images, return_confidence=return_confidence)
