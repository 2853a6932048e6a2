"""Scores for atom finding: one-to-one matching of predicted to true atoms.

Coordinates are ``(k, 3)`` arrays of row (px), column (px) and class index, as returned by
:class:`sklatom.peaks.PeakFinder`; ``(k, 2)`` arrays (no class) are accepted too. Predicted and
true atoms are matched one to one within a tolerance (pixels, or Ångström when ``pixel_size`` in
Å/px is given), maximising the number of matches and then minimising the summed distance.
"""

import numbers
import warnings
from collections import namedtuple

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from ._validation import SklatomWarning, check_pixel_size

__all__ = ["AtomMatch", "match_atoms", "atom_scores", "atom_report", "mask_to_coordinates",
           "make_atom_scorer", "detection_outcomes", "sites_filled", "TOLERANCE", "EDGE_BAND"]

#: The evaluation protocol of the benchmarks, the model card and the demo: a found atom matches
#: a true one within ``TOLERANCE`` Å (the label radius) ...
TOLERANCE = 0.5
#: ... and atoms within ``EDGE_BAND`` Å of the image edge are "don't care" (a column cut by the
#: edge is only partly visible): ``atom_scores(..., tolerance=TOLERANCE,
#: ignore_border=EDGE_BAND)``.
EDGE_BAND = 0.5

AtomMatch = namedtuple("AtomMatch", ["pred_index", "true_index", "distance"])
AtomMatch.__doc__ = """Result of :func:`match_atoms`.

pred_index, true_index : ndarray of shape (n_matched,), int
    Rows of ``pred`` and ``true`` matched to each other.
distance : ndarray of shape (n_matched,), float
    Distance of each pair, in Å if ``pixel_size`` was given, else in pixels.
"""

_METRICS = ("f1", "precision", "recall", "rmse")


def _check_coords(a, name):
    arr = np.asarray(a)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a numeric array of shape (k, 2) or (k, 3); got dtype "
                        f"{arr.dtype}")
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, 3)
    if arr.ndim != 2 or arr.shape[1] not in (2, 3):
        raise ValueError(f"{name} must have shape (k, 2) or (k, 3) (row, col[, class]); got "
                         f"shape {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _check_tolerance(tolerance):
    if (isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real)
            or not np.isfinite(tolerance) or tolerance <= 0):
        raise ValueError(f"tolerance must be a positive number (Å if pixel_size is given, else "
                         f"px); got {tolerance!r}")
    return float(tolerance)


def match_atoms(pred, true, tolerance=1.0, pixel_size=None, per_class=False):
    """Match predicted to true atoms one to one within a tolerance.

    Among all one-to-one matchings that only pair atoms closer than ``tolerance``, returns one
    with the most pairs and, among those, the smallest summed distance. Candidate pairs come
    from a k-d tree; the candidate graph is split into connected components and each component
    is solved exactly with :func:`scipy.optimize.linear_sum_assignment`, so 100k atoms take well
    under a second.

    Parameters
    ----------
    pred : ndarray of shape (n_pred, 2) or (n_pred, 3)
        Predicted row, column (px) and, optionally, class.
    true : ndarray of shape (n_true, 2) or (n_true, 3)
        True row, column (px) and, optionally, class.
    tolerance : float, default=1.0
        Largest matching distance (inclusive), in Å if ``pixel_size`` is given, else in pixels.
    pixel_size : float, default=None
        Pixel size in Å/px; converts coordinates to Å.
    per_class : bool, default=False
        If True, only atoms of the same class are matched (both arrays need a class column).

    Returns
    -------
    match : AtomMatch
        Named tuple ``(pred_index, true_index, distance)``; distances in Å if ``pixel_size`` is
        given, else in pixels. Sorted by ``pred_index``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklatom.metrics import match_atoms
    >>> true = np.array([[0.0, 0.0, 1], [0.0, 0.9, 1]])
    >>> pred = np.array([[0.0, 0.1, 1], [0.0, -0.9, 1]])
    >>> m = match_atoms(pred, true, tolerance=1.0)   # greedy would pair (0, 0) and stop
    >>> m.pred_index, m.true_index
    (array([0, 1]), array([1, 0]))
    >>> m.distance.round(2)
    array([0.8, 0.9])
    """
    pred = _check_coords(pred, "pred")
    true = _check_coords(true, "true")
    tol = _check_tolerance(tolerance)
    ps = check_pixel_size(pixel_size, allow_none=True)
    scale = 1.0 if ps is None else ps
    if per_class and (pred.shape[1] < 3 or true.shape[1] < 3):
        raise ValueError("per_class=True needs a class column: pred and true must have shape "
                         f"(k, 3); got {pred.shape} and {true.shape}")
    empty = AtomMatch(np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0))
    n_p, n_t = len(pred), len(true)
    if n_p == 0 or n_t == 0:
        return empty
    a, b = pred[:, :2] * scale, true[:, :2] * scale
    pairs = cKDTree(a).sparse_distance_matrix(cKDTree(b), tol, output_type="ndarray")
    i, j, d = pairs["i"].astype(np.intp), pairs["j"].astype(np.intp), pairs["v"]
    if per_class:
        same = pred[i, 2] == true[j, 2]
        i, j, d = i[same], j[same], d[same]
    if len(i) == 0:
        return empty
    # bipartite graph: nodes 0..n_p-1 are predictions, n_p.. are true atoms
    graph = coo_matrix((np.ones(len(i)), (i, j + n_p)), shape=(n_p + n_t, n_p + n_t))
    _, comp = connected_components(graph, directed=False)
    edge_comp = comp[i]
    n_nodes = np.bincount(comp)
    simple = n_nodes[edge_comp] == 2  # one prediction, one true atom: the edge is the match
    out_i, out_j, out_d = [i[simple]], [j[simple]], [d[simple]]
    hard = np.flatnonzero(~simple)
    if len(hard):
        order = hard[np.argsort(edge_comp[hard], kind="stable")]
        bounds = np.flatnonzero(np.diff(edge_comp[order])) + 1
        for group in np.split(order, bounds):
            gi, gj, gd = i[group], j[group], d[group]
            ui, ri = np.unique(gi, return_inverse=True)
            uj, rj = np.unique(gj, return_inverse=True)
            big = tol * (len(ui) + len(uj) + 1) * 10.0
            cost = np.full((len(ui), len(uj)), big)
            cost[ri, rj] = gd
            rows, cols = linear_sum_assignment(cost)
            real = cost[rows, cols] < big
            rows, cols = rows[real], cols[real]
            out_i.append(ui[rows])
            out_j.append(uj[cols])
            out_d.append(cost[rows, cols])
    mi, mj, md = np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_d)
    order = np.argsort(mi, kind="stable")
    return AtomMatch(mi[order], mj[order], md[order])


def _is_single(a):
    if isinstance(a, np.ndarray) and a.dtype != object:
        return True
    return False


def _as_batches(pred, true):
    if _is_single(pred) and _is_single(true):
        return [pred], [true]
    if _is_single(pred) or _is_single(true):
        raise TypeError("pred and true must both be one (k, 3) array or both be lists (or "
                        "object arrays) of per-image arrays")
    pred, true = list(pred), list(true)
    if len(pred) != len(true):
        raise ValueError(f"pred holds {len(pred)} images but true holds {len(true)}; expected "
                         f"the same number")
    return pred, true


def _ratio(num, den, zero_division, what):
    if den > 0:
        return num / den
    if isinstance(zero_division, str):
        warnings.warn(f"{what} is ill-defined (no atoms); set to 1.0. Pass zero_division to "
                      f"choose the value and silence this warning", SklatomWarning, stacklevel=4)
        return 1.0
    return float(zero_division)


def _check_zero_division(zero_division):
    if isinstance(zero_division, str):
        if zero_division != "warn":
            raise ValueError(f"zero_division must be 'warn', 0.0, 1.0 or np.nan; got "
                             f"{zero_division!r}")
    elif not (isinstance(zero_division, numbers.Real) and
              (np.isnan(zero_division) or zero_division in (0, 1))):
        raise ValueError(f"zero_division must be 'warn', 0.0, 1.0 or np.nan; got "
                         f"{zero_division!r}")


def _image_shapes(image_shape, n):
    """One (height, width) per image from a single shape or a sequence of shapes."""
    if image_shape is None:
        raise ValueError("ignore_border needs image_shape: the (height, width) of the images in "
                         "px, or one shape per image")
    shapes = np.asarray(image_shape, dtype=float)
    if shapes.ndim == 1 and shapes.shape == (2,):
        return [tuple(shapes)] * n
    if shapes.ndim == 2 and shapes.shape == (n, 2):
        return [tuple(s) for s in shapes]
    raise ValueError(f"image_shape must be (height, width) or {n} such pairs; got "
                     f"{image_shape!r}")


def _inside(coords, shape, margin_px):
    """Mask of the rows of coords whose centre is at least margin_px inside the image edge."""
    h, w = shape
    r, c = coords[:, 0], coords[:, 1]
    return np.minimum.reduce([r + 0.5, c + 0.5, h - 0.5 - r, w - 0.5 - c]) >= margin_px


def _inside_border(match, pred, true, shape, margin_px):
    """Restrict a matching to what the image shows away from its edge (a "don't care" band).

    A matched pair counts when its true atom lies inside the margin; an unmatched atom (either
    side) counts when it lies inside. A pair whose true atom is in the band is left out whole,
    so an atom found a fraction of a pixel across the band's edge from its true position is
    neither a miss nor a false detection. Returns the kept match and the numbers of predicted
    and true atoms that count.
    """
    p_in, t_in = _inside(pred, shape, margin_px), _inside(true, shape, margin_px)
    keep = t_in[match.true_index]
    p_free, t_free = np.ones(len(pred), bool), np.ones(len(true), bool)
    p_free[match.pred_index] = t_free[match.true_index] = False
    n_kept = int(keep.sum())
    kept = AtomMatch(match.pred_index[keep], match.true_index[keep], match.distance[keep])
    return kept, n_kept + int((p_free & p_in).sum()), n_kept + int((t_free & t_in).sum())


def _at_dont_care(match, pred, dont_care, tolerance, pixel_size):
    """Boolean mask of the unmatched predictions within ``tolerance`` of a don't-care atom."""
    out = np.zeros(len(pred), bool)
    if len(dont_care) == 0 or len(pred) == 0:
        return out
    scale = pixel_size or 1.0
    out[:] = True
    out[match.pred_index] = False
    dist, _ = cKDTree(dont_care[:, :2] * scale).query(pred[:, :2] * scale)
    return out & (dist <= tolerance)


def _drop_dont_care(match, pred, dont_care, tolerance, pixel_size):
    """Leave out the unmatched predictions that lie within ``tolerance`` of a don't-care atom.

    Returns the remaining predictions and the matching re-indexed to them.
    """
    if len(dont_care) == 0 or len(pred) == 0:
        return pred, match
    keep = ~_at_dont_care(match, pred, dont_care, tolerance, pixel_size)
    index = np.cumsum(keep) - 1
    return pred[keep], AtomMatch(index[match.pred_index], match.true_index, match.distance)


def detection_outcomes(pred, true, tolerance=TOLERANCE, pixel_size=None, dont_care=None,
                       ignore_border=0.0, image_shape=None):
    """Whether each predicted atom of one image is right, wrong or left out of the scores.

    The per-atom view of :func:`atom_scores` (same matching and the same rules for the
    "don't care" atoms and the edge band): what a calibration of per-atom probabilities is
    fitted and measured on.

    Parameters
    ----------
    pred : ndarray of shape (n_pred, 2) or (n_pred, 3)
        Predicted row, column (px) and, optionally, class.
    true : ndarray of shape (n_true, 2) or (n_true, 3)
        True row, column (px).
    tolerance : float, default=TOLERANCE
        Largest matching distance, in Å if ``pixel_size`` is given, else in px.
    pixel_size : float, default=None
        Pixel size in Å/px.
    dont_care : ndarray of shape (n, 2+), default=None
        Columns at the limit of what the image shows: an unmatched prediction within
        ``tolerance`` of one is left out.
    ignore_border : float, default=0.0
        Width of the edge band (Å with ``pixel_size``, else px): a prediction matched to a
        true atom in the band, or unmatched in it, is left out.
    image_shape : tuple of int, default=None
        (height, width) in px; needed with ``ignore_border``.

    Returns
    -------
    outcome : ndarray of shape (n_pred,), int
        1 right (matched), 0 wrong (unmatched), -1 left out.
    true_index : ndarray of shape (n_pred,), int
        Index into ``true`` of the matched atom, -1 where unmatched.

    Examples
    --------
    >>> import numpy as np
    >>> pred = np.array([[10.0, 10.0], [10.0, 30.0], [0.2, 20.0]])
    >>> true = np.array([[10.0, 10.3]])
    >>> detection_outcomes(pred, true, tolerance=1.0, ignore_border=1.0,
    ...                    image_shape=(40, 40))
    (array([ 1,  0, -1]), array([ 0, -1, -1]))
    """
    pred = _check_coords(pred, "pred")
    true = _check_coords(true, "true")
    m = match_atoms(pred, true, tolerance, pixel_size)
    outcome = np.zeros(len(pred), np.intp)
    true_index = np.full(len(pred), -1, np.intp)
    outcome[m.pred_index] = 1
    true_index[m.pred_index] = m.true_index
    free = outcome == 0
    if dont_care is not None and len(dont_care):
        dc = _check_coords(dont_care, "dont_care")
        outcome[_at_dont_care(m, pred, dc, tolerance, pixel_size)] = -1
    if ignore_border:
        if image_shape is None:
            raise ValueError("ignore_border needs image_shape: the (height, width) of the "
                             "image in px")
        margin = ignore_border / pixel_size if pixel_size else ignore_border
        t_in = _inside(true, image_shape, margin)
        p_in = _inside(pred, image_shape, margin)
        matched = outcome == 1
        out = np.zeros(len(pred), bool)
        out[matched] = ~t_in[true_index[matched]]
        out[free] = ~p_in[free]
        outcome[out] = -1
    return outcome, true_index


def _scores_from(pred, true, tolerance, pixel_size, per_class, zero_division,
                 ignore_border=0.0, image_shape=None, dont_care=None):
    n_pred = n_true = n_matched = n_same = 0
    d2 = []
    has_cls = True
    if ignore_border:
        shapes = _image_shapes(image_shape, len(pred))
        margin = ignore_border / pixel_size if pixel_size else ignore_border
    if dont_care is not None and len(dont_care) != len(pred):
        raise ValueError(f"dont_care holds {len(dont_care)} images but pred holds {len(pred)}")
    for k, (p, t) in enumerate(zip(pred, true)):
        p = _check_coords(p, f"pred[{k}]" if len(pred) > 1 else "pred")
        t = _check_coords(t, f"true[{k}]" if len(true) > 1 else "true")
        m = match_atoms(p, t, tolerance, pixel_size, per_class)
        if dont_care is not None:
            dc = _check_coords(dont_care[k], f"dont_care[{k}]")
            p, m = _drop_dont_care(m, p, dc, tolerance, pixel_size)
        if ignore_border:
            m, n_p, n_t = _inside_border(m, p, t, shapes[k], margin)
        else:
            n_p, n_t = len(p), len(t)
        n_pred += n_p
        n_true += n_t
        n_matched += len(m.pred_index)
        d2.append(m.distance ** 2)
        if p.shape[1] == 3 and t.shape[1] == 3:
            n_same += int(np.sum(p[m.pred_index, 2] == t[m.true_index, 2]))
        else:
            has_cls = False
    precision = _ratio(n_matched, n_pred, zero_division, "precision")
    recall = _ratio(n_matched, n_true, zero_division, "recall")
    if np.isnan(precision) or np.isnan(recall):
        f1 = np.nan
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    d2 = np.concatenate(d2)
    rmse = float(np.sqrt(d2.mean())) if len(d2) else np.nan
    class_accuracy = n_same / n_matched if (n_matched and has_cls) else np.nan
    return dict(precision=float(precision), recall=float(recall), f1=float(f1), rmse=rmse,
                class_accuracy=float(class_accuracy), n_pred=n_pred, n_true=n_true,
                n_matched=n_matched)


def atom_scores(pred, true, tolerance=1.0, pixel_size=None, per_class=False,
                zero_division="warn", ignore_border=0.0, image_shape=None, dont_care=None):
    """Precision, recall, F1 and position RMSE of predicted atoms.

    Parameters
    ----------
    pred : ndarray of shape (n_pred, 2 or 3), or list of such arrays (one per image)
        Predicted row, column (px) and optionally class. A list (or 1-D object ndarray) scores a
        batch: counts are summed over the images and the RMSE is taken over all matched pairs.
    true : ndarray of shape (n_true, 2 or 3), or list of such arrays
        True atoms, in the same form as ``pred``.
    tolerance : float, default=1.0
        Largest matching distance, in Å if ``pixel_size`` is given, else in pixels.
    pixel_size : float, default=None
        Pixel size in Å/px. When given, ``tolerance`` and ``rmse`` are in Å.
    per_class : bool, default=False
        If True, atoms match only atoms of the same class, so precision and recall count class
        errors too (``class_accuracy`` is then 1).
    zero_division : {"warn", 0.0, 1.0, np.nan}, default="warn"
        Value of precision when there are no predicted atoms and of recall when there are no
        true atoms. ``"warn"`` uses 1.0 (no false positives / nothing missed) and emits a
        :class:`~sklatom.exceptions.SklatomWarning`. With 1.0, F1 is 1 when both are empty and
        0 when only one is.
    ignore_border : float, default=0.0
        Width of a "don't care" band along the image edge (Å if ``pixel_size`` is given, else
        px). A column cut by the edge shows only part of itself, so neither its detection nor
        its absence is meaningful; a margin of the label radius (e.g. 0.5 Å) scores the atoms
        an image really shows. Atoms are matched first, then a pair counts when its true atom
        lies inside the band's inner edge, and an unmatched atom counts when it lies inside:
        an atom found a fraction of a pixel across that edge from its true position is neither
        a miss nor a false detection.
    image_shape : tuple of int or sequence of tuples, optional
        (height, width) in px of the image (or of each image); needed for ``ignore_border``.
    dont_care : ndarray of shape (m, 2 or 3), or list of such arrays, optional
        Atoms at the limit of what the image shows (``info.uncertain`` of
        :func:`sklatom.datasets.make_scene_images`): a predicted atom matched to no true atom
        but within ``tolerance`` of one of these is neither right nor wrong (left out).

    Returns
    -------
    scores : dict
        ``precision``, ``recall``, ``f1`` (floats in [0, 1]); ``rmse`` (Å if ``pixel_size``
        else px; NaN without matches); ``class_accuracy`` (fraction of matched pairs with equal
        class; NaN without matches or class columns); ``n_pred``, ``n_true``, ``n_matched``
        (ints).

    Examples
    --------
    >>> import numpy as np
    >>> from sklatom.metrics import atom_scores
    >>> true = np.array([[10.0, 10.0, 1], [10.0, 20.0, 1], [20.0, 10.0, 2]])
    >>> pred = np.array([[10.3, 10.0, 1], [25.0, 25.0, 1]])
    >>> s = atom_scores(pred, true, tolerance=1.0)
    >>> s["precision"], round(s["recall"], 3), s["n_matched"], round(s["rmse"], 3)
    (0.5, 0.333, 1, 0.3)
    """
    _check_tolerance(tolerance)
    _check_zero_division(zero_division)
    single = _is_single(pred) and _is_single(true)
    pred, true = _as_batches(pred, true)
    if dont_care is not None and single:
        dont_care = [dont_care]
    _check_ignore_border(ignore_border)
    return _scores_from(pred, true, tolerance, pixel_size, per_class, zero_division,
                        ignore_border, image_shape, dont_care)


def _check_ignore_border(ignore_border):
    if (isinstance(ignore_border, bool) or not isinstance(ignore_border, numbers.Real)
            or not np.isfinite(ignore_border) or ignore_border < 0):
        raise ValueError(f"ignore_border must be a distance >= 0; got {ignore_border!r}")


def _classes_of(batch):
    out = set()
    for a in batch:
        a = np.asarray(a)
        if a.ndim == 2 and a.shape[1] == 3:
            out.update(np.unique(a[:, 2]).tolist())
    return sorted(out)


def atom_report(pred, true, tolerance=1.0, pixel_size=None, class_names=None, digits=3):
    """Text report of the atom-finding scores, overall and per class.

    Per-class rows score each class as its own detection problem: predicted atoms of class c
    against true atoms of class c (same-class matching). The ``all`` row matches regardless of
    class (as :func:`atom_scores` with ``per_class=False``) and adds the class accuracy.

    Parameters
    ----------
    pred, true : ndarray of shape (k, 3) or list of such arrays
        Predicted and true atoms; see :func:`atom_scores`.
    tolerance : float, default=1.0
        Largest matching distance, in Å if ``pixel_size`` is given, else in pixels.
    pixel_size : float, default=None
        Pixel size in Å/px.
    class_names : sequence of str, default=None
        Name of each class index (e.g. a segmenter's ``classes_``); default: the index.
    digits : int, default=3
        Digits of the floating-point scores.

    Returns
    -------
    report : str

    Examples
    --------
    >>> import numpy as np
    >>> from sklatom.metrics import atom_report
    >>> true = np.array([[10.0, 10.0, 1], [10.0, 20.0, 1], [20.0, 10.0, 2]])
    >>> pred = np.array([[10.0, 10.0, 1], [10.0, 20.0, 2], [20.0, 10.0, 2]])
    >>> print(atom_report(pred, true, class_names=["background", "C", "Si"]))
    class  precision  recall     f1  rmse (px)  n_pred  n_true  n_matched
    C          1.000   0.500  0.667      0.000       1       2          1
    Si         0.500   1.000  0.667      0.000       2       1          1
    all        1.000   1.000  1.000      0.000       3       3          3
    <BLANKLINE>
    class accuracy of matched atoms: 0.667
    """
    pred_b, true_b = _as_batches(pred, true)
    unit = "Å" if pixel_size is not None else "px"
    rows = []
    for c in _classes_of(pred_b + true_b):
        sub_p = [np.asarray(p)[np.asarray(p)[:, 2] == c] for p in pred_b]
        sub_t = [np.asarray(t)[np.asarray(t)[:, 2] == c] for t in true_b]
        name = str(class_names[int(c)]) if class_names is not None else f"{c:g}"
        rows.append((name, _scores_from(sub_p, sub_t, tolerance, pixel_size, False, 1.0)))
    overall = _scores_from(pred_b, true_b, tolerance, pixel_size, False, 1.0)
    rows.append(("all", overall))
    width = max(5, max(len(r[0]) for r in rows))
    rmse_h = f"rmse ({unit})"
    head = (f"{'class':<{width}}  {'precision':>9}  {'recall':>6}  {'f1':>5}  {rmse_h:>9}  "
            f"{'n_pred':>6}  {'n_true':>6}  {'n_matched':>9}")
    lines = [head]
    for name, s in rows:
        lines.append(
            f"{name:<{width}}  {s['precision']:>9.{digits}f}  {s['recall']:>6.{digits}f}  "
            f"{s['f1']:>5.{digits}f}  {s['rmse']:>9.{digits}f}  {s['n_pred']:>6d}  "
            f"{s['n_true']:>6d}  {s['n_matched']:>9d}")
    lines.append("")
    lines.append(f"class accuracy of matched atoms: {overall['class_accuracy']:.{digits}f}")
    return "\n".join(lines)


def sites_filled(pred, sites, tolerance=TOLERANCE, pixel_size=None):
    """How many empty sites (planted vacancies) hold a found atom anyway.

    Parameters
    ----------
    pred, sites : ndarray of shape (k, 2+) or list of them (one per image)
        Found atoms and empty sites: row, col (px; further columns ignored).
    tolerance : float, default=TOLERANCE
        A site is filled by a found atom closer than this (Å with ``pixel_size``, else px).
    pixel_size : float or None, default=None
        Å/px of the coordinates.

    Returns
    -------
    filled, total : int
        Sites with a found atom within ``tolerance``, and all sites.

    Examples
    --------
    >>> found = np.array([[10.0, 10.0], [30.0, 30.0]])
    >>> sites_filled(found, np.array([[10.2, 10.0], [20.0, 20.0]]))
    (1, 2)
    """
    tolerance = _check_tolerance(tolerance)
    scale = 1.0 if pixel_size is None else check_pixel_size(pixel_size)
    pred, sites = _as_batches(pred, sites)
    filled = total = 0
    for p, s in zip(pred, sites):
        p, s = _check_coords(p, "pred")[:, :2], _check_coords(s, "sites")[:, :2]
        total += len(s)
        if len(s) and len(p):
            d, _ = cKDTree(p).query(s)
            filled += int(np.sum(d * scale < tolerance))
    return filled, total


def mask_to_coordinates(mask, connectivity=1):
    """Centroids of the connected regions of a label mask, with their class.

    Parameters
    ----------
    mask : ndarray of shape (height, width) or (n_images, height, width), int
        0 = background, value c > 0 = an atom of class c, -1 = "don't care" (no atom is
        reported there). Regions are connected per class.
    connectivity : {1, 2}, default=1
        1: 4-connectivity, 2: 8-connectivity.

    Returns
    -------
    coords : ndarray of shape (k, 3), float64, or list of such arrays for a batch
        Row (px), column (px) of each region's centroid and its class; sorted by class, then in
        raster order of the regions. ``(0, 3)`` for an empty mask.

    Notes
    -----
    This is the rule for true atoms, not the blob rule by which
    :class:`~sklatom.peaks.PeakFinder` and :class:`~sklatom.descriptors.ContourDescriptor`
    turn probability maps into atoms: a mask gives the class of every pixel, so regions are
    connected per class (touching columns of two classes stay two atoms) and their centres are
    plain centroids (there are no probabilities to threshold or weight by). The default
    ``connectivity=1`` is the blob rule's 4-connectivity.

    Examples
    --------
    >>> import numpy as np
    >>> from sklatom.metrics import mask_to_coordinates
    >>> mask = np.zeros((6, 6), int)
    >>> mask[1:3, 1:3] = 1
    >>> mask[4, 3:6] = 2
    >>> mask_to_coordinates(mask)
    array([[1.5, 1.5, 1. ],
           [4. , 4. , 2. ]])
    """
    m = np.asarray(mask)
    if m.dtype.kind == "f":
        if not np.all(np.isfinite(m)) or np.any(m != np.round(m)):
            raise ValueError("mask must hold integer class labels; got non-integer values")
        m = m.astype(np.int64)
    elif m.dtype.kind not in "biu":
        raise TypeError(f"mask must hold integer class labels; got dtype {m.dtype}")
    if m.ndim == 3:
        return [mask_to_coordinates(x, connectivity) for x in m]
    if m.ndim != 2:
        raise ValueError(f"mask must have shape (height, width) or (n_images, height, width); "
                         f"got shape {m.shape}")
    if connectivity not in (1, 2):
        raise ValueError(f"connectivity must be 1 or 2; got {connectivity!r}")
    if np.any(m < -1):
        raise ValueError("mask must hold class labels >= 0 (0 = background, -1 = don't care); "
                         "got negative values")
    structure = ndimage.generate_binary_structure(2, connectivity)
    W = m.shape[1]
    out = []
    for c in np.unique(m[m > 0]):
        lab, n = ndimage.label(m == c, structure=structure)
        flat = lab.ravel()
        idx = np.flatnonzero(flat)
        labs = flat[idx]
        r, col = np.divmod(idx, W)
        cnt = np.bincount(labs, minlength=n + 1)[1:]
        out.append(np.column_stack([np.bincount(labs, r, minlength=n + 1)[1:] / cnt,
                                    np.bincount(labs, col, minlength=n + 1)[1:] / cnt,
                                    np.full(n, float(c))]))
    return np.concatenate(out) if out else np.zeros((0, 3))


def _y_to_coordinates(y):
    arr = y if isinstance(y, np.ndarray) else None
    if arr is not None and arr.dtype != object:
        if arr.ndim == 3:
            return mask_to_coordinates(arr)
        raise ValueError(f"y must be label masks of shape (n_images, height, width) or a list "
                         f"(object array) of (k, 3) coordinate arrays; got shape {arr.shape}")
    out = []
    for item in y:
        a = np.asarray(item)
        if a.ndim == 2 and a.shape[1] in (2, 3) and a.dtype.kind == "f":
            out.append(a)
        elif a.ndim == 2 and a.dtype.kind in "biu" and a.shape[1] not in (2, 3):
            out.append(mask_to_coordinates(a))
        elif a.ndim == 2 and a.shape[1] in (2, 3):
            out.append(a.astype(np.float64))
        elif a.size == 0:
            out.append(np.zeros((0, 3)))
        else:
            raise ValueError(f"each item of y must be a (k, 3) coordinate array or a 2-D label "
                             f"mask; got shape {a.shape}")
    return out


class _AtomScorer:
    """Callable ``scorer(estimator, X, y)`` built by :func:`make_atom_scorer`."""

    def __init__(self, metric, tolerance, pixel_size, per_class, zero_division, ignore_border):
        self.metric = metric
        self.tolerance = tolerance
        self.pixel_size = pixel_size
        self.per_class = per_class
        self.zero_division = zero_division
        self.ignore_border = ignore_border

    def __call__(self, estimator, X, y):
        if hasattr(estimator, "transform"):
            pred = estimator.transform(X)
        else:
            pred = estimator.predict(X)
        true = _y_to_coordinates(y)
        pred = list(pred)
        shapes = None
        if self.ignore_border:
            images = X[1] if isinstance(X, tuple) and len(X) == 2 else X
            shapes = [np.shape(x)[-2:] for x in images]
        s = _scores_from(pred, true, self.tolerance, self.pixel_size, self.per_class,
                         self.zero_division, self.ignore_border, shapes)
        value = s[self.metric]
        return -value if self.metric == "rmse" else value

    def __repr__(self):
        return (f"make_atom_scorer(metric={self.metric!r}, tolerance={self.tolerance!r}, "
                f"pixel_size={self.pixel_size!r}, per_class={self.per_class!r})")


def make_atom_scorer(metric="f1", tolerance=1.0, pixel_size=None, per_class=False,
                     zero_division=1.0, ignore_border=0.0):
    """Build a scorer for ``GridSearchCV`` / ``cross_val_score`` on atom-finding pipelines.

    Parameters
    ----------
    metric : {"f1", "precision", "recall", "rmse"}, default="f1"
        Score to return. ``"rmse"`` is lower-is-better, so the scorer returns its negative
        (like ``neg_mean_squared_error``); it is NaN when nothing matches.
    tolerance : float, default=1.0
        Largest matching distance, in Å if ``pixel_size`` is given, else in pixels.
    pixel_size : float, default=None
        Pixel size in Å/px.
    per_class : bool, default=False
        If True, atoms match only atoms of the same class.
    zero_division : {"warn", 0.0, 1.0, np.nan}, default=1.0
        See :func:`atom_scores`; by default folds without atoms score quietly.
    ignore_border : float, default=0.0
        See :func:`atom_scores`; the image shapes are taken from ``X``.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y)``. It calls ``estimator.transform(X)`` (``predict`` if the
        estimator has no ``transform``), which must return one ``(k_i, 3)`` array per image,
        e.g. a :class:`~sklearn.pipeline.Pipeline` ending in
        :class:`~sklatom.peaks.PeakFinder`. ``y`` is either label masks ``(n_images, height,
        width)`` (int; converted by :func:`mask_to_coordinates`) or the true coordinates as a
        1-D object ndarray of ``(k_i, 3)`` arrays (``y = np.empty(n, dtype=object)`` then fill
        it): scikit-learn's cross-validation indexes ``y`` with integer arrays, which a plain
        list of ragged arrays does not survive everywhere.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.preprocessing import FunctionTransformer
    >>> from sklatom.metrics import make_atom_scorer
    >>> to_coords = FunctionTransformer(lambda X: [x for x in X])
    >>> X = np.empty(1, dtype=object)
    >>> X[0] = np.array([[5.0, 5.0, 1.0], [9.0, 9.0, 1.0]])
    >>> y = np.empty(1, dtype=object)
    >>> y[0] = np.array([[5.2, 5.0, 1.0]])
    >>> make_atom_scorer()(to_coords, X, y)   # precision 1/2, recall 1
    0.6666666666666666
    >>> round(make_atom_scorer("rmse")(to_coords, X, y), 3)
    -0.2
    """
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}; got {metric!r}")
    _check_tolerance(tolerance)
    check_pixel_size(pixel_size, allow_none=True)
    _check_zero_division(zero_division)
    _check_ignore_border(ignore_border)
    return _AtomScorer(metric, tolerance, pixel_size, per_class, zero_division, ignore_border)
