"""Scoring shared by the benchmarks: the evaluation protocol of the model card.

Found and true atoms match within :data:`sklatom.metrics.TOLERANCE` Å, atoms within
:data:`sklatom.metrics.EDGE_BAND` Å of the image edge are "don't care"
(:func:`sklatom.metrics.atom_scores`).
"""

from sklatom.metrics import EDGE_BAND, TOLERANCE, atom_scores

__all__ = ["protocol_scores"]


def protocol_scores(pred, true, images, pixel_size, zero_division=0.0, dont_care=None):
    """Pooled scores of found atoms against the truth, under the model card's protocol.

    Parameters
    ----------
    pred, true : list of ndarray of shape (k_i, 2 or 3)
        Found and true atoms per image: row, col (px) and optionally class.
    images : list of ndarray of shape (height, width)
        The images (their shapes locate the edge band).
    pixel_size : float
        Å/px of the images.
    zero_division : float, default=0.0
        Precision/recall/F1 when there is nothing to divide by.
    dont_care : list of ndarray of shape (m_i, 2+), optional
        Columns per image that neither count as missed nor make a found atom next to them
        a false one (:func:`sklatom.metrics.atom_scores`).

    Returns
    -------
    scores : dict
        ``precision``, ``recall``, ``f1``, ``rmse`` (Å) and ``class_accuracy`` (float; NaN
        without classes) and the counts ``n_pred``, ``n_true``, ``n_matched``.
    """
    s = atom_scores(pred, true, tolerance=TOLERANCE, pixel_size=pixel_size,
                    ignore_border=EDGE_BAND, image_shape=[x.shape for x in images],
                    zero_division=zero_division, dont_care=dont_care)
    return {k: float(s[k]) for k in ("precision", "recall", "f1", "rmse", "class_accuracy")} | {
        k: int(s[k]) for k in ("n_pred", "n_true", "n_matched")}
