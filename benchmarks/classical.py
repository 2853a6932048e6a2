"""Classical atom detectors shared by the benchmarks (scikit-image and scipy only).

``python -m benchmarks`` tunes :func:`log_detect` and :func:`plm_detect` (parameters in pixels,
on the min-max normalised image) per lattice on simulated validation images;
``benchmarks/bench_real.py`` tunes :func:`filter_image` + :func:`local_maxima` (Gaussian or
difference of Gaussians on the image normalised by robust percentiles, absolute threshold) per
set of real images. Coordinates are (row, col) in pixels.
"""

import numpy as np

#: Filters of :func:`filter_image`.
FILTERS = ("gauss", "dog")


def minmax_normalize(image):
    """The image scaled to [0, 1] by its minimum and maximum (float64)."""
    image = np.asarray(image, dtype=np.float64)
    return (image - image.min()) / max(float(image.max() - image.min()), 1e-12)


def robust_normalize(image, low=1.0, high=99.9):
    """The image scaled so that its ``low`` and ``high`` percentiles map to 0 and 1 (float64).

    Unlike :func:`minmax_normalize`, a few hot pixels or one very bright cluster do not change
    the scale, so an absolute threshold means the same on every image of a set.
    """
    image = np.asarray(image, dtype=np.float64)
    lo, hi = np.percentile(image, [low, high])
    return (image - lo) / max(float(hi - lo), 1e-12)


def filter_image(image, kind, sigma, dog_ratio=3.0):
    """Smooth an image for peak finding.

    Parameters
    ----------
    image : ndarray of shape (height, width)
        The (normalised) image.
    kind : {"gauss", "dog"}
        ``"gauss"``: Gaussian filter of width ``sigma``; ``"dog"``: difference of Gaussians,
        width ``sigma`` minus width ``dog_ratio * sigma`` (a band-pass that removes a slowly
        varying background).
    sigma : float
        Filter width in px.
    dog_ratio : float, default=3.0
        Width of the background Gaussian of ``"dog"``, in units of ``sigma``.

    Returns
    -------
    filtered : ndarray of shape (height, width), float64
    """
    from scipy.ndimage import gaussian_filter

    if kind not in FILTERS:
        raise ValueError(f"kind must be one of {FILTERS}; got {kind!r}")
    smooth = gaussian_filter(np.asarray(image, dtype=np.float64), sigma)
    if kind == "dog":
        smooth = smooth - gaussian_filter(np.asarray(image, dtype=np.float64), dog_ratio * sigma)
    return smooth


def local_maxima(filtered, min_distance, threshold_abs=None, threshold_rel=None,
                 return_values=False):
    """``skimage.feature.peak_local_max`` of a filtered image, edges included.

    Parameters
    ----------
    filtered : ndarray of shape (height, width)
    min_distance : int
        Smallest separation of two peaks, in px.
    threshold_abs, threshold_rel : float, default=None
        Thresholds of ``peak_local_max`` (on the values of ``filtered``).
    return_values : bool, default=False
        Also return the filtered value at each peak. Peaks are sorted by decreasing value and
        lower peaks never suppress higher ones, so the peaks of a higher threshold are exactly
        those of a lower one with a value above it (what :mod:`bench_real` uses to tune the
        threshold from one call).

    Returns
    -------
    coords : ndarray of shape (k, 2), float64
        Row, column (px).
    values : ndarray of shape (k,)
        Only if ``return_values``.
    """
    from skimage.feature import peak_local_max

    peaks = peak_local_max(filtered, min_distance=int(min_distance), threshold_abs=threshold_abs,
                           threshold_rel=threshold_rel, exclude_border=False)
    coords = peaks.astype(np.float64).reshape(-1, 2)
    if return_values:
        return coords, filtered[peaks[:, 0], peaks[:, 1]] if len(peaks) else np.zeros(0)
    return coords


def log_detect(img, min_sigma, max_sigma, threshold):
    """``skimage.feature.blob_log`` on the min-max normalised image; sigmas in px."""
    from skimage.feature import blob_log

    blobs = blob_log(minmax_normalize(img), min_sigma=min_sigma, max_sigma=max_sigma,
                     num_sigma=4, threshold=threshold, exclude_border=False)
    return blobs[:, :2].astype(float)


def plm_detect(img, sigma, min_distance, threshold_rel):
    """Gaussian filter (``sigma`` px) of the min-max normalised image, then
    ``peak_local_max`` (``min_distance`` px, ``threshold_rel``)."""
    smooth = filter_image(minmax_normalize(img), "gauss", sigma)
    return local_maxima(smooth, min_distance, threshold_rel=threshold_rel)
