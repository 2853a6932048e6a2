"""The blob kernel: how a blob of a probability map becomes an atom.

One rule, one place. :func:`find_blobs` labels the blobs of one map and gives each the atom it
becomes (position, class, confidence). :class:`~sklatom.peaks.PeakFinder` (``method=
"components"``) places its atoms with it, and :class:`~sklatom.descriptors.ContourDescriptor`
describes the pixels of the same blobs, so that its rows are PeakFinder's atoms.
"""

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["Blobs", "find_blobs"]


@dataclass(frozen=True)
class Blobs:
    """The blobs of one probability map and the atom each becomes (see :func:`find_blobs`).

    Attributes
    ----------
    labels : ndarray of shape (height, width), int
        0 on pixels outside every blob, ``i + 1`` on the pixels of blob ``i``.
    centre : ndarray of shape (n_blobs, 2), float64
        Row and column (px, pixel centres at integers) of each blob's atom.
    klass : ndarray of shape (n_blobs,), float64
        Class index (>= 1) of each blob's atom.
    peak : ndarray of shape (n_blobs,), float64
        Largest foreground probability ``1 - P[0]`` over each blob, in [0, 1].
    area : ndarray of shape (n_blobs,), int
        Number of pixels of each blob.
    border : ndarray of shape (n_blobs,), bool
        Whether the blob has a pixel on the outermost row or column of the map.
    """

    labels: np.ndarray
    centre: np.ndarray
    klass: np.ndarray
    peak: np.ndarray
    area: np.ndarray
    border: np.ndarray

    def __len__(self):
        return len(self.centre)


def find_blobs(p, thresholds, min_area=1):
    """Label the blobs of one probability map and place one atom on each.

    A pixel belongs to a blob when its foreground probability ``fg = 1 - P[0]`` exceeds
    (strictly) the threshold ``t`` of its most probable foreground class. Blobs are the
    4-connected components of those pixels (pixels that touch only at a corner are separate
    blobs); blobs of fewer than ``min_area`` pixels are dropped. Each remaining blob becomes one
    atom:

    - position: the centre of mass of its pixels weighted by ``fg - t``, which goes to zero at
      the blob's edge, so cutting the blob on the pixel grid does not bias the centre (weights
      ``fg`` do, by up to ~0.2 px);
    - class: the foreground class with the largest probability mass over the blob, with the
      same weights (the core, where the network is surest, counts most), so a blob whose class
      the network is unsure of (a rim of one class around a core of another) stays one atom;
    - confidence: the largest ``fg`` over the blob.

    Parameters
    ----------
    p : ndarray of shape (n_classes, height, width)
        Class probabilities of one image, class 0 = background (float32 or float64; the
        arithmetic follows the dtype, so pass the maps as the caller's estimator checked them).
    thresholds : ndarray of shape (n_classes,)
        ``thresholds[c]`` is the threshold of foreground class ``c``, in (0, 1);
        ``thresholds[0]`` is ignored.
    min_area : int, default=1
        Smallest blob in pixels.

    Returns
    -------
    blobs : Blobs
        The label image and the atom of each blob, blobs numbered in raster order of their
        first pixel.

    Examples
    --------
    A 2x2 plateau is one blob, its atom at the plateau's centre; two pixels that touch only at
    a corner are two blobs:

    >>> import numpy as np
    >>> fg = np.zeros((4, 4))
    >>> fg[:2, :2] = 0.75
    >>> fg[2, 2] = fg[3, 3] = 0.8
    >>> blobs = find_blobs(np.stack([1 - fg, fg]), np.array([np.nan, 0.5]))
    >>> blobs.labels
    array([[1, 1, 0, 0],
           [1, 1, 0, 0],
           [0, 0, 2, 0],
           [0, 0, 0, 3]], dtype=int32)
    >>> blobs.centre
    array([[0.5, 0.5],
           [2. , 2. ],
           [3. , 3. ]])
    >>> blobs.area.tolist(), blobs.border.tolist()
    ([4, 1, 1], [True, False, True])
    """
    W = p.shape[2]
    fg = 1.0 - p[0]
    if np.all(thresholds[1:] == thresholds[1]):
        cut = thresholds[1]
    else:
        cut = thresholds[1:][np.argmax(p[1:], axis=0)]
    lab, n = ndimage.label(fg > cut)
    if n == 0:
        return Blobs(lab, np.zeros((0, 2)), np.zeros(0), np.zeros(0), np.zeros(0, np.intp),
                     np.zeros(0, bool))
    flat = lab.ravel()
    idx = np.flatnonzero(flat)
    labs = flat[idx]
    w = fg.ravel()[idx].astype(np.float64)
    wc = w - (cut if np.ndim(cut) == 0 else cut.ravel()[idx])
    r, col = np.divmod(idx, W)
    area = np.bincount(labs, minlength=n + 1)[1:]
    sw = np.bincount(labs, wc, minlength=n + 1)[1:]
    sr = np.bincount(labs, wc * r, minlength=n + 1)[1:]
    sc = np.bincount(labs, wc * col, minlength=n + 1)[1:]
    mass = [np.bincount(labs, wc * p[c].ravel()[idx], minlength=n + 1)[1:]
            for c in range(1, p.shape[0])]
    klass = np.argmax(mass, axis=0) + 1.0
    # peak foreground probability per blob: sort by label, max over each run
    order = np.argsort(labs, kind="stable")
    starts = np.searchsorted(labs[order], np.arange(1, n + 1))
    peak = np.maximum.reduceat(w[order], starts)
    border = np.zeros(n + 1, bool)
    border[np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])] = True
    keep = area >= min_area
    if not keep.all():
        # renumber the blobs that are kept 1..k, in the same order; dropped ones become 0
        new = np.zeros(n + 1, lab.dtype)
        new[1:][keep] = np.arange(1, np.count_nonzero(keep) + 1)
        lab = new[lab]
    return Blobs(lab, np.column_stack([sr / sw, sc / sw])[keep], klass[keep], peak[keep],
                 area[keep], border[1:][keep])
