"""What the members of a test-time-augmentation ensemble say about each atom.

The kernel behind :mod:`sklatom.uncertainty`: the atoms are found once, on the members' mean
maps (with :class:`~sklatom.peaks.PeakFinder`'s rule), and each member is then asked where it
puts that atom and how sure it is. The calibration (:class:`sklatom.uncertainty.Calibration`)
turns these raw features into an existence probability and a position sigma.
"""

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ._blobs import find_blobs

__all__ = ["AtomSpread", "atom_spread"]

#: Largest distance (px) at which a member's blob is taken for an atom of the mean map, and
#: the fraction of the atoms' median nearest-neighbour distance it may not exceed.
MATCH_RADIUS_PX, MATCH_NN_FRACTION = 3.0, 0.5


@dataclass(frozen=True)
class AtomSpread:
    """Per-atom features of one image's ensemble (see :func:`atom_spread`).

    Attributes
    ----------
    found : ndarray of shape (k,)
        Fraction of the members that find the atom (a blob of theirs within the match radius).
    peak_std : ndarray of shape (k,)
        Standard deviation over the members of their peak foreground probability on the
        atom's blob (of the mean map).
    position_std : ndarray of shape (k,)
        Standard deviation per axis (px, root mean of the row and column variances) of the
        positions of the members that find the atom; 0 when fewer than 2 do.
    area : ndarray of shape (k,)
        Pixels of the atom's blob in the mean map.
    class_probability : ndarray of shape (k,)
        Share of the atom's class in the foreground probability of its blob (mean map,
        weighted as :func:`~sklatom._blobs.find_blobs` weights the centre).
    """

    found: np.ndarray
    peak_std: np.ndarray
    position_std: np.ndarray
    area: np.ndarray
    class_probability: np.ndarray


def atom_spread(members, mean, coords, labels, thresholds):
    """The members' view of each atom found on their mean maps.

    Parameters
    ----------
    members : ndarray of shape (n_members, n_classes, height, width)
        Probability maps of the members.
    mean : ndarray of shape (n_classes, height, width)
        Their mean.
    coords : ndarray of shape (k, 3)
        The atoms found on ``mean``: row, col (px) and class.
    labels : ndarray of shape (height, width), int
        ``j + 1`` on the pixels of the blob(s) of atom ``j``, 0 elsewhere (as
        :class:`~sklatom.peaks.PeakFinder`'s ``return_labels`` gives it).
    thresholds : ndarray of shape (n_classes,)
        Threshold of each foreground class (entry 0 ignored).

    Returns
    -------
    spread : AtomSpread
    """
    k = len(coords)
    n_members = len(members)
    index = np.arange(1, k + 1)
    if k == 0:
        empty = np.zeros(0)
        return AtomSpread(empty, empty, empty, np.zeros(0, np.intp), empty)
    peaks = np.array([ndimage.maximum(1.0 - m[0], labels, index) for m in members])
    radius = MATCH_RADIUS_PX
    if k > 1:
        nn = cKDTree(coords[:, :2]).query(coords[:, :2], k=2)[0][:, 1]
        radius = min(radius, MATCH_NN_FRACTION * float(np.median(nn)))
    tree = cKDTree(coords[:, :2])
    hits = np.zeros(k)
    s1 = np.zeros((k, 2))
    s2 = np.zeros((k, 2))
    for m in members:
        centres = find_blobs(m, thresholds).centre
        if not len(centres):
            continue
        dist, j = tree.query(centres, distance_upper_bound=radius)
        ok = np.isfinite(dist)
        # one blob per atom and member: the nearest
        order = np.argsort(dist[ok])
        j_ok, c_ok = j[ok][order], centres[ok][order]
        _, first = np.unique(j_ok, return_index=True)
        j_ok, c_ok = j_ok[first], c_ok[first]
        hits[j_ok] += 1
        s1[j_ok] += c_ok
        s2[j_ok] += c_ok ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.where(hits[:, None] >= 2,
                       (s2 - s1 ** 2 / np.maximum(hits, 1)[:, None]) / np.maximum(hits, 1)[:, None],
                       0.0)
    position_std = np.sqrt(np.maximum(var, 0.0).mean(axis=1))
    fg = 1.0 - mean[0]
    cls = coords[:, 2].astype(np.intp)
    weight = np.clip(fg - thresholds[np.argmax(mean[1:], axis=0) + 1], 0.0, None)
    inside = labels > 0
    lab = labels[inside]
    w = weight[inside].astype(np.float64)
    total = np.bincount(lab, w * fg[inside], minlength=k + 1)[1:]
    own = np.zeros(k)
    for c in np.unique(cls):
        mass = np.bincount(lab, w * mean[c][inside], minlength=k + 1)[1:]
        own[cls == c] = mass[cls == c]
    with np.errstate(invalid="ignore", divide="ignore"):
        class_probability = np.where(total > 0, own / total, np.nan)
    # atoms whose blob has no weight above the threshold: the class at the peak pixel
    bad = ~np.isfinite(class_probability)
    if bad.any():
        r = np.clip(np.rint(coords[bad, 0]).astype(np.intp), 0, fg.shape[0] - 1)
        c = np.clip(np.rint(coords[bad, 1]).astype(np.intp), 0, fg.shape[1] - 1)
        class_probability[bad] = mean[cls[bad], r, c] / np.maximum(fg[r, c], 1e-12)
    area = np.bincount(lab, minlength=k + 1)[1:]
    return AtomSpread(hits / n_members, peaks.std(axis=0), position_std, area,
                      np.clip(class_probability, 0.0, 1.0))
