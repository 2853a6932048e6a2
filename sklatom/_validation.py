"""Input checks shared by the estimators.

Images travel between the estimators as a 3-D array ``(n_images, height, width)`` or, when their
sizes differ, as a list of 2-D arrays. Probability maps travel as ``(n_images, n_classes, height,
width)`` or a list of ``(n_classes, height, width)`` arrays. The helpers here turn either form
into a list of float arrays and raise errors that name the argument and the problem;
:func:`map_items` is the per-image loop with ``n_jobs`` that the estimators share.
:func:`check_params` checks an estimator's parameters against its table of constraints
(:class:`Constraint` and the helpers that build one: :func:`integer`, :func:`number`, ...).
"""

import numbers
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .exceptions import SklatomWarning  # noqa: F401 (re-exported; home: sklatom.exceptions)

__all__ = ["check_image_batch", "check_pixel_size", "check_probability_maps",
           "check_images_for_maps", "split_maps_and_images", "stack_if_same_shape",
           "SklatomWarning", "Constraint", "CheckedBy", "integer", "number", "boolean",
           "options", "any_of", "unchecked", "check_params"]


#: Tolerance on the sum over classes of a probability map, and on its values outside [0, 1].
MAP_SUM_TOLERANCE = 1e-3
#: More classes than this on the class axis of one map: it is a stack of images, not maps.
MAX_CLASSES = 16


def _as_array(a, name, ndim):
    """``np.asarray(a)`` with numpy's error for ragged nested lists said in our words."""
    try:
        return np.asarray(a)
    except ValueError as exc:
        if "inhomogeneous" not in str(exc):
            raise
        shape = "(n_classes, height, width)" if ndim == 3 else "(height, width)"
        raise ValueError(
            f"{name} is a ragged nested list: its rows or images differ in shape, so it is not "
            f"an array. Pass a list of {ndim}-D arrays of shape {shape}, one per image (the "
            f"images may differ in shape from each other)") from None


def _as_float_array(arr, name, dtype):
    if arr.dtype == object:
        raise TypeError(f"{name} must hold numbers; got an array of Python objects")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers; got dtype {arr.dtype}")
    with np.errstate(over="ignore"):  # overflow is reported by _check_finite
        return arr.astype(dtype, copy=False)


def _check_finite(x, source, name):
    """Raise if ``x`` holds NaN/inf; say so when they come from casting finite ``source``."""
    if np.all(np.isfinite(x)):
        return
    source = np.asarray(source)
    if source.dtype.kind == "f" and np.all(np.isfinite(source)):
        big = float(np.abs(source).max())
        raise ValueError(
            f"{name} holds finite values up to {big:.3g} that overflow {x.dtype} (largest "
            f"{float(np.finfo(x.dtype).max):.3g}), the precision the estimators compute in; "
            f"rescale the data (e.g. divide by its maximum)")
    raise ValueError(f"{name} contains NaN or infinite values")


def _could_be_maps(p):
    """Whether a 3-D array could be the probability maps ``(n_classes, H, W)`` of one image:
    few classes summing to 1 over axis 0 (or NaN, which is reported later)."""
    if p.shape[0] > MAX_CLASSES:
        return False
    s = p.sum(axis=0, dtype=np.float64)
    return bool(not np.all(np.isfinite(s)) or np.all(np.abs(s - 1) <= MAP_SUM_TOLERANCE))


def _not_maps(shape, name, where=None):
    """The message for an array that is not probability maps (a raw image or stack of them)."""
    what = "a single image" if len(shape) == 2 else f"a stack of {shape[0]} images"
    return (
        f"{where or name} has shape {shape}: it looks like {what}, not probability maps. "
        f"{name} must have 4 dimensions (n_images, n_classes, height, width): the softmax "
        f"probabilities of a segmenter such as FCNSegmenter.transform(images), class 0 = "
        f"background")


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
        src = _as_array(X, name, ndim)
        arr = _as_float_array(src, name, dtype)
        if ndim == 3 and (arr.ndim == 2 or (arr.ndim == 3 and not _could_be_maps(arr))):
            raise ValueError(_not_maps(arr.shape, name))
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
        sources, items = list(src), list(arr)
    else:
        sources = [_as_array(x, f"{name}[{i}]", ndim) for i, x in enumerate(X)]
        items = [_as_float_array(x, f"{name}[{i}]", dtype) for i, x in enumerate(sources)]
        for i, x in enumerate(items):
            if ndim == 3 and x.ndim == 2:
                raise ValueError(_not_maps(x.shape, name, f"{name}[{i}]"))
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
        if not allow_nan:
            _check_finite(x, sources[i], f"{name}[{i}]")
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


def check_probability_maps(P, name="P", dtype=np.float32):
    """Validate probability maps and return them as a list of ``(n_classes, H, W)`` arrays.

    All maps must have the same number of classes (at least 2, class 0 = background), sum to 1
    over the class axis and lie in [0, 1], both within :data:`MAP_SUM_TOLERANCE`.
    """
    maps = check_image_batch(P, name=name, ndim=3, dtype=dtype)
    n_classes = maps[0].shape[0]
    for i, p in enumerate(maps):
        if p.shape[0] != n_classes:
            raise ValueError(
                f"{name}[{i}] has {p.shape[0]} classes but {name}[0] has {n_classes}; all maps "
                f"must have the same number of classes")
    if n_classes < 2:
        raise ValueError(
            f"{name} must have at least 2 classes (background and one atom class) on axis 1; "
            f"got {n_classes}")
    for i, p in enumerate(maps):
        s = p.sum(axis=0, dtype=np.float64)
        lo, hi = float(s.min()), float(s.max())
        if lo < 1 - MAP_SUM_TOLERANCE or hi > 1 + MAP_SUM_TOLERANCE:
            raise ValueError(
                f"{name}[{i}]: maps must sum to 1 over the class axis (tolerance "
                f"{MAP_SUM_TOLERANCE:g}); got sums between {lo:.6g} and {hi:.6g}. Pass softmax "
                f"probabilities of shape (n_images, n_classes, height, width), class 0 = "
                f"background")
    for i, p in enumerate(maps):
        lo, hi = float(p.min()), float(p.max())
        if lo < -MAP_SUM_TOLERANCE or hi > 1 + MAP_SUM_TOLERANCE:
            flat = p.reshape(len(p), -1)
            bad = [c for c in range(len(p)) if flat[c].min() < -MAP_SUM_TOLERANCE
                   or flat[c].max() > 1 + MAP_SUM_TOLERANCE]
            raise ValueError(
                f"{name}[{i}] holds values between {lo:.6g} and {hi:.6g} (in class(es) "
                f"{bad}), though its maps sum to 1; probabilities must lie in [0, 1] "
                f"(tolerance {MAP_SUM_TOLERANCE:g}). Pass softmax probabilities of shape "
                f"(n_images, n_classes, height, width), class 0 = background, not logits or "
                f"differences of maps")
    return maps


def check_images_for_maps(images, maps):
    """Validate raw images that accompany probability maps (one per map, same height/width)."""
    items = check_image_batch(images, name="images", ndim=2, dtype=np.float64)
    if len(items) != len(maps):
        raise ValueError(
            f"images holds {len(items)} images but P holds {len(maps)} maps; expected one image "
            f"per map")
    for i, (im, p) in enumerate(zip(items, maps)):
        if im.shape != p.shape[1:]:
            raise ValueError(
                f"images[{i}] has shape {im.shape} but P[{i}] has height and width "
                f"{p.shape[1:]}; they must agree")
    return items


def split_maps_and_images(X, images):
    """Separate an ``X = (P, images)`` tuple (what ``FCNSegmenter(passthrough_images=True)``
    emits) from plain probability maps; return ``(P, images)``."""
    if (isinstance(X, tuple) and len(X) == 2
            and (isinstance(X[0], list) or np.ndim(X[0]) == 4)):
        if images is not None:
            raise ValueError(
                "images were given twice: as the second element of the tuple X = (P, images) and "
                "as the images keyword; give them once")
        return X[0], X[1]
    return X, images


def map_items(func, args, n_jobs=None, prefer=None):
    """``[func(*a) for a in args]``, in ``n_jobs`` joblib workers when that is more than one.

    ``prefer="threads"`` for work that releases the GIL on shared data (torch, numpy); the
    result is in the order of ``args`` either way.
    """
    args = list(args)
    if n_jobs in (None, 1) or len(args) < 2:
        return [func(*a) for a in args]
    from joblib import Parallel, delayed

    return Parallel(n_jobs=n_jobs, prefer=prefer)(delayed(func)(*a) for a in args)


# --------------------------------------------------------------------------------------------
# parameter constraints: an estimator declares what each parameter accepts in one table
# ``{name: constraint}`` and checks its parameters against it with :func:`check_params`
@dataclass(frozen=True)
class Constraint:
    """What one parameter accepts.

    ``accepts(value)`` is true for an accepted value; for any other value (or one that
    ``accepts`` cannot examine) :meth:`check` raises ``error`` with the message
    ``"{name} must be {expected}; got {value!r}"``.
    """

    expected: str
    accepts: Callable[[object], bool]
    error: type = ValueError

    def check(self, value, name):
        if not self.takes(value):
            raise self.error(f"{name} must be {self.expected}; got {value!r}")

    def takes(self, value):
        """Whether ``accepts(value)`` is true (False when it cannot examine the value)."""
        try:
            return bool(self.accepts(value))
        except (TypeError, ValueError, ArithmeticError):
            return False


@dataclass(frozen=True)
class CheckedBy:
    """A parameter checked by a function of its own, ``check(value, name)``, which raises
    with a message that names the parameter, the value and what is expected (e.g. a pixel
    size outside the range a model handles, with what to do about it)."""

    check: Callable[[object, str], object]


def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _is_number(v):
    return (isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))
            and bool(np.isfinite(v)))


def integer(low=None, high=None, *, none=False, expected=None):
    """An integer (not a bool) ``>= low`` and ``<= high`` (None: unbounded); with
    ``none=True`` also None."""
    def accepts(v):
        return ((none and v is None)
                or (_is_int(v) and (low is None or v >= low) and (high is None or v <= high)))

    if expected is None:
        expected = "an integer"
        if low is not None:
            expected += f" >= {low}" if high is None else f" in [{low}, {high}]"
        elif high is not None:
            expected += f" <= {high}"
        expected += " or None" if none else ""
    return Constraint(expected, accepts)


def number(low, high=None, *, closed="both", none=False, expected=None):
    """A finite real number (not a bool) between ``low`` and ``high`` (None: no upper bound);
    ``closed`` is "both", "left", "right" or "neither"; with ``none=True`` also None."""
    left, right = closed in ("both", "left"), closed in ("both", "right")

    def accepts(v):
        if none and v is None:
            return True
        return (_is_number(v) and (low <= v if left else low < v)
                and (high is None or (v <= high if right else v < high)))

    if expected is None:
        if high is None:
            expected = f"a number {'>=' if left else '>'} {low}"
        else:
            expected = f"a number in {'[' if left else '('}{low}, {high}{']' if right else ')'}"
        expected += " or None" if none else ""
    return Constraint(expected, accepts)


def boolean():
    """True or False (a numpy bool too)."""
    return Constraint("True or False", lambda v: isinstance(v, (bool, np.bool_)))


def options(*values):
    """One of ``values``: the same object (True, False, None) or an equal string."""
    def accepts(v):
        return any(v is o or (isinstance(o, str) and isinstance(v, str) and v == o)
                   for o in values)

    reprs = [repr(o) for o in values]
    expected = reprs[0] if len(reprs) == 1 else ", ".join(reprs[:-1]) + " or " + reprs[-1]
    return Constraint(expected, accepts)


def any_of(*constraints, expected=None):
    """A value that one of ``constraints`` accepts."""
    return Constraint(
        expected or " or ".join(c.expected for c in constraints),
        lambda v: any(c.takes(v) for c in constraints))


def unchecked(reason):
    """A parameter that is not checked against the table; ``reason`` says where it is."""
    return Constraint(f"anything ({reason})", lambda v: True)


def check_params(params, constraints):
    """Check parameter values against a table of constraints.

    Parameters
    ----------
    params : dict
        Parameter name -> value; every name must have a row in ``constraints``.
    constraints : dict
        Parameter name -> :class:`Constraint` (or :class:`CheckedBy`).

    Raises
    ------
    ValueError or TypeError
        For the first value that its row does not accept (the row says which).
    """
    for name, value in params.items():
        constraints[name].check(value, name)
