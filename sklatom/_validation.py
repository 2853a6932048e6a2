"""Input checks shared by the estimators.

Images travel between the estimators as a 3-D array ``(n_images, height, width)`` or, when their
sizes differ, as a list of 2-D arrays. Probability maps travel as ``(n_images, n_classes, height,
width)`` or a list of ``(n_classes, height, width)`` arrays. The helpers here turn either form
into a list of float arrays and raise errors that name the argument and the problem.
"""

import numbers

import numpy as np

__all__ = ["check_image_batch", "check_pixel_size", "stack_if_same_shape", "SklatomWarning"]


class SklatomWarning(UserWarning):
    """Base class of the warnings sklatom raises for recoverable oddities in the input."""


def _as_float_array(a, name, dtype):
    arr = np.asarray(a)
    if arr.dtype == object:
        raise TypeError(f"{name} must hold numbers; got an array of Python objects")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers; got dtype {arr.dtype}")
    return arr.astype(dtype, copy=False)


def check_image_batch(X, name="X", ndim=2, dtype=np.float32, allow_nan=False, min_size=1):
    """Validate a batch of images (or maps) and return it as a list of arrays.

    Parameters
    ----------
    X : ndarray of shape (n_images, \\*spatial) or list of ndarray of shape (\\*spatial)
        The batch. ``ndim`` is the number of dimensions of one item (2 for images, 3 for
        probability maps with their class axis first).
    name : str, default="X"
        Name used in error messages.
    ndim : int, default=2
        Dimensions of one item.
    dtype : numpy dtype, default=np.float32
        Output dtype.
    allow_nan : bool, default=False
        Whether NaN/inf values are accepted.
    min_size : int, default=1
        Smallest accepted height and width in pixels.

    Returns
    -------
    items : list of ndarray
        One array per image, each of dimension ``ndim``.
    """
    if X is None:
        raise ValueError(f"{name} is None; expected a batch of images")
    if isinstance(X, np.ndarray) or not isinstance(X, (list, tuple)):
        arr = _as_float_array(X, name, dtype)
        if arr.ndim == ndim:
            raise ValueError(
                f"{name} has shape {arr.shape}: a single item; estimators take a batch of shape "
                f"(n_images, {'n_classes, ' if ndim == 3 else ''}height, width). "
                f"Use {name}[np.newaxis] for one image."
            )
        if arr.ndim != ndim + 1:
            raise ValueError(
                f"{name} must have {ndim + 1} dimensions (n_images, "
                f"{'n_classes, ' if ndim == 3 else ''}height, width); got shape {arr.shape}"
            )
        items = list(arr)
    else:
        items = [_as_float_array(x, f"{name}[{i}]", dtype) for i, x in enumerate(X)]
        for i, x in enumerate(items):
            if x.ndim != ndim:
                raise ValueError(
                    f"{name}[{i}] must have {ndim} dimensions; got shape {x.shape}"
                )
    if len(items) == 0:
        raise ValueError(f"{name} is empty: it holds no images")
    for i, x in enumerate(items):
        if x.shape[-1] < min_size or x.shape[-2] < min_size:
            raise ValueError(
                f"{name}[{i}] has shape {x.shape}; height and width must be at least {min_size} px"
            )
        if not allow_nan and not np.all(np.isfinite(x)):
            raise ValueError(f"{name}[{i}] contains NaN or infinite values")
    return items


def stack_if_same_shape(items):
    """Stack a list of arrays into one array when their shapes agree, else return the list."""
    if len({x.shape for x in items}) == 1:
        return np.stack(items)
    return list(items)


def check_pixel_size(pixel_size, name="pixel_size", low=1e-3, high=10.0, allow_none=False):
    """Check a pixel size in Å/px and return it as a float.

    Raises a ValueError naming the argument when it is not a finite number in ``[low, high]``.
    """
    if pixel_size is None and allow_none:
        return None
    if isinstance(pixel_size, bool) or not isinstance(pixel_size, numbers.Real):
        raise TypeError(f"{name} must be a number in Å/px; got {pixel_size!r}")
    ps = float(pixel_size)
    if not np.isfinite(ps) or not (low <= ps <= high):
        raise ValueError(f"{name} must be between {low} and {high} Å/px; got {pixel_size!r}")
    return ps
