"""Resampling images between pixel sizes, and coordinates with them (one convention).

:class:`~sklatom.segmentation.FCNSegmenter` rescales an image given at another pixel size to
its training sampling and back; the training data of the shipped models is resampled the same
way (:func:`sklatom.datasets.make_scene_images`), so the network learns on what it is shown.
Pixel ``i`` covers ``[i - 0.5, i + 0.5)``; a resampled axis of ``n_out`` pixels spans the same
length as the ``n_in`` pixels of the input (scikit-image's ``resize`` convention).
"""

import numpy as np
from skimage.transform import resize

__all__ = ["resampled_shape", "resample_image", "resample_coordinates"]


def resampled_shape(shape, factor):
    """Shape of an image of ``shape`` resampled by ``factor`` (new px per old px)."""
    return tuple(max(1, int(round(n * factor))) for n in shape)


def resample_image(image, shape):
    """Bilinear resampling of a 2-D image to ``shape``, anti-aliased when it shrinks.

    Parameters
    ----------
    image : ndarray of shape (height, width)
    shape : tuple of int
        Output (height, width).

    Returns
    -------
    resampled : ndarray of shape ``shape``, float32
    """
    if tuple(shape) == image.shape:
        return np.asarray(image, dtype=np.float32)
    shrink = shape[0] < image.shape[0] or shape[1] < image.shape[1]
    return resize(image, shape, order=1, mode="reflect", anti_aliasing=shrink,
                  preserve_range=True).astype(np.float32)


def resample_coordinates(coords, shape_in, shape_out):
    """Move (row, col, ...) coordinates from an image of ``shape_in`` to its resampling.

    Extra columns (class, ...) are kept.

    Examples
    --------
    >>> import numpy as np
    >>> resample_coordinates(np.array([[0.0, 1.0, 2]]), (10, 10), (20, 20))
    array([[0.5, 2.5, 2. ]])
    """
    coords = np.array(coords, dtype=np.float64, copy=True)
    coords = coords.reshape(len(coords), -1) if coords.size else coords.reshape(0, max(
        2, coords.shape[-1] if coords.ndim == 2 else 2))
    for axis in (0, 1):
        f = shape_out[axis] / shape_in[axis]
        coords[:, axis] = (coords[:, axis] + 0.5) * f - 0.5
    return coords
