"""Per-pixel segmentation of atomic-resolution images with a fully convolutional network.

:class:`FCNSegmenter` is a scikit-learn transformer that wraps a skorch
:class:`~skorch.NeuralNet` around a PyTorch U-Net (:class:`sklatom._unet.UNet`). It learns from
images and integer label masks and turns images into probability maps
``(n_images, n_classes, height, width)`` that sum to one over classes, class 0 being the
background.
"""

import contextlib
import functools
import hashlib
import inspect
import itertools
import json
import numbers
import os
import warnings

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from skimage.transform import resize
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted
from skorch import NeuralNet
from skorch.callbacks import Callback, EarlyStopping, LRScheduler, ProgressBar
from skorch.dataset import Dataset as SkorchDataset
from skorch.helper import predefined_split

from ._augment import augment_intensity, grid_patches, pad_reflect, random_patch
from ._resample import resample_image, resampled_shape
from ._unet import UNet, inference_copy, receptive_field
from .quality import ImageQualityWarning, check_image
from ._validation import (SklatomWarning, check_image_batch, check_pixel_size, map_items,
                          stack_if_same_shape)

__all__ = ["FCNSegmenter"]

#: Version of the ``save``/``load`` file layout.
FORMAT_VERSION = 1
_METADATA_KEY = "sklatom"
#: Per-image input normalisation: ``(image - median) / (p99.5 - p0.5)``; saved with every
#: model and compared on load.
NORMALISATION = {"center": "median", "low_percentile": 0.5, "high_percentile": 99.5}
#: The percentile of each ``NORMALISATION["center"]`` (the normalisation reads it from there).
_CENTER_PERCENTILES = {"median": 50.0}
#: Pixel sizes (Å/px) the segmenter accepts.
PIXEL_SIZE_RANGE = (0.05, 0.5)
#: Label of "don't care" pixels in training masks: they count neither way in the loss.
IGNORE_LABEL = -1
#: Fewest patches an epoch draws with ``patches_per_epoch=None`` (64 batches of 8).
MIN_PATCHES_PER_EPOCH = 512


def check_sampling(pixel_size, name="pixel_size", allow_none=True):
    """Check a pixel size against :data:`PIXEL_SIZE_RANGE`; the error says what to do.

    Returns the pixel size as a float (or None when allowed).
    """
    low, high = PIXEL_SIZE_RANGE
    try:
        return check_pixel_size(pixel_size, name, low, high, allow_none=allow_none)
    except ValueError:
        if float(pixel_size) < low:
            hint = ("bin the image to a coarser pixel (e.g. skimage.transform."
                    "downscale_local_mean(image, (2, 2)) doubles it) and pass the binned pixel "
                    "size")
        else:
            hint = (f"at a coarser sampling neighbouring columns lie only a few pixels apart; "
                    f"record the image at a finer sampling, or resample it to {high} Å/px or "
                    f"less (skimage.transform.rescale) and pass that pixel size")
        raise ValueError(f"{name}={pixel_size!r} Å/px is outside the {low}-{high} Å/px this "
                         f"segmenter handles: {hint}") from None


def _versions(tensors):
    """In-place modification counters of tensors (they change when the weights change)."""
    return [t._version for t in tensors]


def _tile_spans(length, tile, margin):
    """Tiles along one axis of a padded image: ``(start, stop, keep_start, keep_stop)``.

    Tiles of ``tile`` px start on multiples of ``tile - 2 * margin`` (the last one ends at
    ``length``); the kept parts tile ``[0, length)`` and lie at least ``margin`` px from any
    cut that is not an end of the image.
    """
    if length <= tile:
        return [(0, length, 0, length)]
    starts = list(range(0, length - tile, tile - 2 * margin)) + [length - tile]
    spans, keep = [], 0
    for k, s in enumerate(starts):
        stop = length if k == len(starts) - 1 else s + tile - margin
        spans.append((s, s + tile, keep, stop))
        keep = stop
    return spans


_ALLOCATOR_READY = []


def _raise_malloc_threshold():
    """Let the C allocator reuse freed activations instead of unmapping them (once per process).

    glibc serves blocks above a threshold (128 KiB at start) with mmap and unmaps them when
    they are freed, so every prediction faults its activation pages in afresh. Freeing one
    large mapped block raises the threshold to that block's size (glibc's own rule, capped at
    32 MiB), which freeing any large numpy array also does: a 256 x 256 image then predicts
    about a third faster in a process that had not freed a large block before (measured with
    torch 2.13 on Linux). Harmless under other allocators.
    """
    if not _ALLOCATOR_READY:
        np.empty(30 << 20, dtype=np.uint8)  # 30 MiB, freed at once and never touched
        _ALLOCATOR_READY.append(True)


def _softmax_(logits):
    """Softmax over axis 1, in place (saves a copy of the largest array of a prediction)."""
    logits -= logits.amax(dim=1, keepdim=True)
    logits.exp_()
    logits /= logits.sum(dim=1, keepdim=True)
    return logits


def _noop(*args, **kwargs):
    """Sink that discards messages (picklable, unlike a lambda)."""


def _percentiles(x, q):
    """``np.percentile(x, q)`` (linear interpolation) from one partial sort of ``x``."""
    flat = x.ravel()
    pos = np.asarray(q, dtype=np.float64) / 100.0 * (flat.size - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, flat.size - 1)
    part = np.partition(flat, np.unique(np.concatenate([lo, hi])))
    a, b = part[lo].astype(np.float64), part[hi].astype(np.float64)
    return a + (b - a) * (pos - lo)


def _normalise(image, name="X"):
    """Robust per-image normalisation; a constant image becomes zeros (with a warning)."""
    x = np.asarray(image, dtype=np.float32)
    lo, med, hi = _percentiles(
        x, [NORMALISATION["low_percentile"], _CENTER_PERCENTILES[NORMALISATION["center"]],
            NORMALISATION["high_percentile"]]
    )
    scale = float(hi - lo)
    if not scale > 1e-6 * max(abs(float(med)), np.finfo(np.float32).tiny):
        if float(x.max() - x.min()) == 0.0:
            warnings.warn(
                f"{name} is constant (all pixels {float(med):g}); it is segmented as a blank "
                "image",
                SklatomWarning,
                stacklevel=4,
            )
            return np.zeros_like(x)
        scale = float(x.max() - x.min())  # nearly constant: use the full range instead
    x = x - np.float32(med)
    x /= np.float32(scale)
    return x


def _check_masks(y, images, name="y"):
    """Validate label masks against the images; return a list of int64 arrays."""
    if y is None:
        raise ValueError(
            f"{name} is None; FCNSegmenter needs integer label masks of the same shapes as X"
        )
    if isinstance(y, np.ndarray) or not isinstance(y, (list, tuple)):
        arr = np.asarray(y)
        if arr.ndim != 3:
            raise ValueError(
                f"{name} must have 3 dimensions (n_images, height, width) or be a list of 2-D "
                f"masks; got shape {arr.shape}"
            )
        items = list(arr)
    else:
        items = [np.asarray(m) for m in y]
    if len(items) != len(images):
        raise ValueError(f"{name} holds {len(items)} masks but X holds {len(images)} images")
    out = []
    for i, (m, img) in enumerate(zip(items, images)):
        if m.shape != img.shape:
            raise ValueError(f"{name}[{i}] has shape {m.shape} but X[{i}] has shape {img.shape}")
        if m.dtype.kind == "b":
            m = m.astype(np.int16)
        if m.dtype.kind == "f":
            if not np.all(np.isfinite(m)) or not np.all(m == np.round(m)):
                raise TypeError(
                    f"{name}[{i}] must hold integer class labels; got non-integer values of "
                    f"dtype {m.dtype}"
                )
        elif m.dtype.kind not in "iub":
            raise TypeError(f"{name}[{i}] must hold integer class labels; got dtype {m.dtype}")
        if m.size and m.min() < IGNORE_LABEL:
            raise ValueError(
                f"{name}[{i}] contains negative labels (min {m.min()}); labels must be >= 0, "
                f"or {IGNORE_LABEL} for pixels to ignore"
            )
        if m.size and m.max() > np.iinfo(np.int16).max:
            raise ValueError(f"{name}[{i}] contains label {m.max()}; labels must be < 32768")
        out.append(m.astype(np.int16))  # small: training sets hold many large masks
    return out


def _check_label_values(masks, max_label, name="y"):
    """With ``classes=None`` the labels 0..max are the classes: refuse labels that skip more
    than half of the values 1..max, or go above 255 (a stray label, or masks of another kind)."""
    if max_label <= 1:
        return
    present = np.zeros(max_label + 1, dtype=bool)
    for m in masks:
        present |= np.bincount(m[m > 0], minlength=max_label + 1) > 0
    absent = max_label - int(present[1:].sum())
    if max_label <= 255 and absent <= max_label / 2:
        return
    where = next(i for i, m in enumerate(masks) if m.size and m.max() == max_label)
    n_px = int((masks[where] == max_label).sum())
    labels = np.flatnonzero(present[1:]) + 1
    shown = ", ".join(map(str, labels[:10])) + (", ..." if len(labels) > 10 else "")
    raise ValueError(
        f"{name} holds labels {shown} (largest {max_label}, in {name}[{where}], {n_px} px): with "
        f"classes=None every label value 0..{max_label} is a class, and {absent} of the values "
        f"1..{max_label} never occur, so the model would have {max_label + 1} classes. Pass "
        f"classes= (names indexed by label value, background first) or fix the masks")


def _seed_from(random_state):
    """Turn ``random_state`` (None, int, RandomState or Generator) into an int seed."""
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**31 - 1))
    if random_state is None:
        return int(np.random.default_rng().integers(2**31 - 1))
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if not 0 <= int(random_state) < 2**32:
            raise ValueError(f"random_state must be in [0, 2**32); got {random_state!r}")
        return int(random_state)
    return int(check_random_state(random_state).randint(2**31 - 1))


def _resolve_device(device):
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be 'auto', 'cpu', 'cuda' or a torch.device; got {device!r}")
    return device


class _PatchDataset(torch.utils.data.Dataset):
    """Random augmented patches drawn on the fly; patch ``i`` of epoch ``e`` is seeded by
    ``(seed, e, i)`` so it does not depend on the order in which the loader asks for it."""

    def __init__(self, images, masks, patch_size, n_patches, seed, augment, zoom_range):
        self.images = images
        self.masks = masks
        self.patch_size = patch_size
        self.n_patches = n_patches
        self.seed = seed
        self.augment = augment
        self.zoom_range = zoom_range
        self.epoch = 0
        areas = np.array([im.size for im in images], dtype=float)
        self.weights = areas / areas.sum()

    def __len__(self):
        return self.n_patches

    def __getitem__(self, i):
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        k = int(rng.choice(len(self.images), p=self.weights))
        img, msk = random_patch(
            self.images[k],
            self.masks[k],
            self.patch_size,
            rng,
            zoom_range=self.zoom_range if self.augment else (1.0, 1.0),
            geometric=self.augment,
        )
        if self.augment:
            img = augment_intensity(img, rng)
        return torch.from_numpy(img[np.newaxis]), torch.from_numpy(msk)


class _SetEpoch(Callback):
    """Tell the patch dataset which epoch it is serving (for its seeds)."""

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        if isinstance(dataset_train, _PatchDataset):
            dataset_train.epoch = len(net.history)


def _optimizer_name(optimizer):
    if isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer):
        if getattr(torch.optim, optimizer.__name__, None) is optimizer:
            return optimizer.__name__
    raise ValueError(
        f"save() stores optimizers from torch.optim by name; got optimizer={optimizer!r}. "
        "Use joblib.dump for estimators with custom optimizers."
    )


def _optimizer_from_name(name, path):
    opt = getattr(torch.optim, name, None) if isinstance(name, str) else None
    if not (isinstance(opt, type) and issubclass(opt, torch.optim.Optimizer)):
        raise ValueError(f"{path}: optimizer {name!r} is not an optimizer of torch.optim")
    return opt


def _digest(config_without_digest, tensors):
    h = hashlib.sha256(json.dumps(config_without_digest, sort_keys=True).encode())
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


#: ``module__`` settings that make the network: fine-tuning keeps them (dropout may change).
_ARCHITECTURE = ("depth", "base_filters", "dilation", "batch_norm", "space_to_depth")


def _load_model(model, name="model", device="auto"):
    """A fitted :class:`FCNSegmenter` from a pretrained model name or a ``.safetensors`` file
    written by :meth:`FCNSegmenter.save`; ``name`` is the argument named in the errors."""
    from .pretrained import PRETRAINED, load_pretrained

    if isinstance(model, str) and model in PRETRAINED:
        return load_pretrained(model, device=device)
    if isinstance(model, (str, os.PathLike)) and os.path.isfile(model):
        return FCNSegmenter.load(model, device=device)
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"{name} must be a pretrained model name or a path to a .safetensors "
                        f"file; got {type(model).__name__}")
    raise ValueError(
        f"{name}={os.fspath(model)!r} is neither a pretrained model (available: "
        f"{', '.join(sorted(PRETRAINED))}) nor an existing model file (.safetensors written by "
        "FCNSegmenter.save or 'sklatom train')")


def _network_settings(fitted):
    """Classes, ``module__`` settings and training pixel size of a fitted segmenter."""
    settings = {f"module__{k}": getattr(fitted.net_, f"module__{k}")
                for k in (*_ARCHITECTURE, "dropout")}
    settings["classes"] = list(fitted.classes_)
    settings["training_pixel_size"] = fitted.pixel_size_
    return settings


@contextlib.contextmanager
def _frozen_batch_norm_statistics(module):
    """Keep the running mean and variance of every batch norm of ``module`` while training.

    Fine-tuning on a few images must not replace the statistics learned on the whole training
    set by those of a few patches: one epoch at lr 1e-5 on two MoS2 images took the general
    model's F1 on two more from 1.0 to 0.0 that way (1.0 with them kept). The layers still
    normalise each batch by its own statistics while training.
    """
    kinds = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)
    norms = [m for m in module.modules() if isinstance(m, kinds)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum


def _check_fine_tuning(source, what, classes, module_kwargs, pixel_size=None, same_names=False):
    """Refuse settings under which the weights of ``source`` cannot go on training.

    The number of classes (with ``same_names`` also their names) and the architecture must be
    those of ``source``'s network, and ``pixel_size`` (unless None) its training pixel size.
    """
    theirs = _network_settings(source)
    if len(classes) != len(theirs["classes"]) or (same_names and classes != theirs["classes"]):
        raise ValueError(
            f"{what}: the fit would have {len(classes)} classes {classes} but the network to "
            f"fine-tune has {len(theirs['classes'])} {theirs['classes']}; fine-tuning keeps the "
            "classes")
    differ = [f"module__{k}={module_kwargs[k]!r} (the network's: {theirs['module__' + k]!r})"
              for k in _ARCHITECTURE if module_kwargs[k] != theirs[f"module__{k}"]]
    if differ:
        raise ValueError(f"{what}: {', '.join(differ)}; fine-tuning keeps the architecture")
    trained = theirs["training_pixel_size"]
    if pixel_size is not None and trained is not None and not np.isclose(pixel_size, trained):
        raise ValueError(
            f"{what}: training_pixel_size={pixel_size} Å/px but the network was trained at "
            f"{trained} Å/px; fine-tuning keeps the sampling (resample the images to {trained} "
            "Å/px, e.g. with skimage.transform.rescale, and leave training_pixel_size=None)")


class FCNSegmenter(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    """Segment atomic-resolution images into classes with a U-Net (skorch + PyTorch).

    ``fit`` trains a U-Net on random, augmented patches of the training images and their label
    masks; ``transform``/``predict_proba`` return per-pixel class probabilities and ``predict``
    the most probable class. Images of any size are accepted (reflect-padded to a multiple of
    ``module__space_to_depth * 2 ** module__depth`` and cropped back); large images are
    processed in overlapping tiles of bounded memory. Each image is normalised on its own,
    ``(image - median) / (p99.5 - p0.5)``, so raw counts, ``uint16`` and float images of the
    same scene give the same result.

    Parameters
    ----------
    module__depth : int, default=3
        Pooling levels of the U-Net.
    module__base_filters : int, default=16
        Channels of the first U-Net level (doubled at each level).
    module__dilation : int, default=2
        Dilation of the bottleneck convolutions (1 = no dilation).
    module__batch_norm : bool, default=True
        Batch normalisation after each convolution.
    module__dropout : float, default=0.1
        Channel dropout probability after the bottleneck.
    module__space_to_depth : int, default=1
        Run the U-Net at ``1/s`` of the image resolution: each ``s x s`` block of pixels enters
        as ``s**2`` channels and the output is rearranged back to full resolution (pixel
        unshuffle/shuffle). ``s = 2`` needs about a quarter of the computation (the pretrained
        model uses it); 1 = full resolution.
    lr : float, default=1e-3
        Learning rate.
    max_epochs : int, default=20
        Maximum number of epochs.
    batch_size : int, default=8
        Patches per training batch, and tiles per inference batch.
    optimizer : torch.optim.Optimizer subclass, default=torch.optim.Adam
        Optimizer class.
    patch_size : int, default=128
        Side of the square training patches in pixels; a multiple of
        ``module__space_to_depth * 2 ** module__depth``.
        Smaller images are reflect-padded.
    patches_per_epoch : int or None, default=None
        Patches drawn per epoch. None: enough to cover the training images once
        (``ceil(total area / patch_size ** 2)``), and at least 512 (and ``batch_size``), so that
        a small training set gets enough optimizer steps per epoch: two 256 x 256 px images
        (three, one held out for validation) are covered by 8 patches, one batch, and 3 such
        epochs learn nothing (atom F1 0.0 on MoS2; 1.0 with 512 patches per epoch).
    validation_fraction : float or None, default=0.1
        Fraction of the training images (whole images, not stratified, at least one) held out
        to compute ``valid_loss`` for early stopping and the learning-rate schedule. Their
        patches are a fixed grid without augmentation. None or 0 (or a single training image):
        no validation; ``train_loss`` is monitored instead.
    early_stopping_patience : int or None, default=5
        Stop after this many epochs without improvement of the monitored loss and restore the
        best weights. None or 0: no early stopping.
    lr_schedule : {True, "plateau", "cosine", False, None}, default=True
        True/"plateau": halve the learning rate when the monitored loss stalls
        (``ReduceLROnPlateau``); "cosine": cosine annealing over ``max_epochs``; False/None:
        constant learning rate.
    augment : bool, default=True
        Random flips/rotations by 90°, zoom, Gaussian blur, gamma, Poisson dose noise and
        contrast changes of the training patches (masks follow geometry with nearest
        neighbours).
    augment_zoom : tuple of float, default=(0.9, 1.1)
        Range of the random magnification.
    class_weight : None, "balanced" or array-like of shape (n_classes,), default=None
        Weights of the classes in the pixel-wise cross-entropy. "balanced" weights classes
        inversely to their pixel frequency in the training masks.
    classes : list of str or None, default=None
        Class names indexed by label value, e.g. ``["background", "C", "Si"]``. None:
        ``["background", "class_1", ...]`` up to the largest label in ``y`` (at most 255, and
        at least half of the values 1..max must occur; else pass the names).
    training_pixel_size : float or None, default=None
        Pixel size in Å/px of the images given to ``fit`` (between 0.05 and 0.5). Stored as
        ``pixel_size_``. None: unknown, and then images cannot be rescaled at prediction.
    pixel_size : float or None, default=None
        Pixel size in Å/px of the images given to ``transform``/``predict``/``score`` (0.05 to
        0.5; outside that range a ValueError says how to bin or resample). When it
        differs from ``pixel_size_`` the images are rescaled by ``pixel_size / pixel_size_`` to
        the training sampling (bilinear), segmented, and the probabilities are resized back to
        the input size and renormalised. None: images are at the training sampling.
    tile_size : int, default=1024
        Side of the square inference tiles in pixels (rounded down to a multiple of
        ``module__space_to_depth * 2 ** module__depth``). Bounds the memory of inference: an
        image up to this size is segmented whole, a larger one in tiles (see
        :doc:`/model_card` for the time and memory of a 4096 x 4096 px image).
    tile_overlap : int or "auto", default="auto"
        Overlap of neighbouring tiles in pixels; only the central part of each tile (without
        ``tile_overlap / 2`` on each side, rounded up to that multiple)
        is kept. "auto" uses twice the network's receptive reach, for which tiled prediction
        equals whole-image prediction up to floating-point rounding.
    device : str, default="auto"
        Torch device; "auto" picks "cuda" when available, else "cpu".
    verbose : int, default=1
        0: silent; 1: a table of losses per epoch; 2: also a progress bar.
    passthrough_images : bool, default=False
        Make :meth:`transform` return ``(proba, X)`` so that the next step of a pipeline also
        gets the raw images (for sub-pixel refinement on intensities or intensity
        descriptors).
    init_model : str, path-like or None, default=None
        Fine-tune a saved model: a pretrained name (:data:`sklatom.pretrained.PRETRAINED`, e.g.
        "general") or a ``.safetensors`` file written by :meth:`save` (loaded with
        :meth:`load`, which executes no code). ``fit`` then starts from its weights and uses its
        classes, its ``module__`` settings and its training pixel size (and, like every model,
        the same input normalisation); those parameters left at their defaults take the init
        model's values (``module__dropout`` set to another value is used), and one set to a
        different value raises a ValueError, as do masks with labels beyond its classes. The
        batch-norm statistics of the init model are kept (a few images would replace them by
        their own and undo what it learned). The other parameters (``lr``, ``max_epochs``,
        ``patch_size``, ...) are this estimator's. Being a parameter, it survives
        :func:`sklearn.base.clone`: ``GridSearchCV`` and ``cross_validate`` fine-tune the
        model in every fit. None: a new network.
    warm_start : bool, default=False
        When True and the estimator is already fitted (e.g. a pretrained model), ``fit``
        continues from the current weights (fine-tuning, batch-norm statistics kept) instead
        of a fresh network. The new data must have the same number of classes and the same
        ``module__`` settings. With ``init_model`` too, a fitted estimator continues from its
        own weights, not the init model's (a clone, being unfitted, starts from the init
        model).
    n_jobs : int or None, default=None
        Images predicted in parallel threads (None = 1), sharing the network; the maps equal
        those of ``n_jobs=1``. Torch also uses its own threads inside each image
        (``torch.set_num_threads``); on a small machine one of the two is enough.
    random_state : int, RandomState instance, Generator or None, default=None
        Seeds the weight initialisation, the patch sampling, the augmentation, the validation
        split and dropout; two fits with the same int give identical weights (on the CPU).

    Attributes
    ----------
    classes_ : list of str
        Class names; index = label value, 0 = background.
    n_classes_ : int
        Number of classes.
    pixel_size_ : float or None
        Pixel size of the training images in Å/px.
    net_ : skorch.NeuralNet
        The fitted network; ``net_.history`` holds the losses per epoch and ``net_.module_``
        the :class:`~sklatom._unet.UNet`.
    device_ : str
        Device used.

    See Also
    --------
    sklatom._unet.UNet : the network.

    Notes
    -----
    Training draws ``patches_per_epoch`` random patches per epoch; patch ``i`` of epoch ``e``
    comes from a generator seeded with ``(seed, e, i)``. The loss is the cross-entropy over all
    pixels. Prediction pads each image only up to that multiple; one
    larger than ``tile_size`` is cut into overlapping tiles whose origins lie on the pooling
    grid, each keeping only pixels at least ``tile_overlap / 2`` from a cut. It runs the
    frozen copy of :func:`~sklatom._unet.inference_copy` (rebuilt when the weights change).

    Examples
    --------
    >>> import numpy as np
    >>> from sklatom.segmentation import FCNSegmenter
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(4, 32, 32)).astype(np.float32)
    >>> y = (X > 1).astype(int)
    >>> seg = FCNSegmenter(module__depth=2, module__base_filters=4, patch_size=32,
    ...                    max_epochs=1, verbose=0, random_state=0).fit(X, y)
    >>> seg.classes_
    ['background', 'class_1']
    >>> proba = seg.transform(X)
    >>> proba.shape, proba.dtype
    ((4, 2, 32, 32), dtype('float32'))
    >>> bool(np.allclose(proba.sum(axis=1), 1, atol=1e-5))
    True
    >>> seg.predict(X[:, :20, :25]).shape
    (4, 20, 25)
    """

    def __init__(
        self,
        *,
        module__depth=3,
        module__base_filters=16,
        module__dilation=2,
        module__batch_norm=True,
        module__dropout=0.1,
        module__space_to_depth=1,
        lr=1e-3,
        max_epochs=20,
        batch_size=8,
        optimizer=torch.optim.Adam,
        patch_size=128,
        patches_per_epoch=None,
        validation_fraction=0.1,
        early_stopping_patience=5,
        lr_schedule=True,
        augment=True,
        augment_zoom=(0.9, 1.1),
        class_weight=None,
        classes=None,
        training_pixel_size=None,
        pixel_size=None,
        tile_size=1024,
        tile_overlap="auto",
        device="auto",
        verbose=1,
        passthrough_images=False,
        init_model=None,
        warm_start=False,
        n_jobs=None,
        random_state=None,
    ):
        self.module__depth = module__depth
        self.module__base_filters = module__base_filters
        self.module__dilation = module__dilation
        self.module__batch_norm = module__batch_norm
        self.module__dropout = module__dropout
        self.module__space_to_depth = module__space_to_depth
        self.lr = lr
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.patch_size = patch_size
        self.patches_per_epoch = patches_per_epoch
        self.validation_fraction = validation_fraction
        self.early_stopping_patience = early_stopping_patience
        self.lr_schedule = lr_schedule
        self.augment = augment
        self.augment_zoom = augment_zoom
        self.class_weight = class_weight
        self.classes = classes
        self.training_pixel_size = training_pixel_size
        self.pixel_size = pixel_size
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap
        self.device = device
        self.verbose = verbose
        self.passthrough_images = passthrough_images
        self.init_model = init_model
        self.warm_start = warm_start
        self.n_jobs = n_jobs
        self.random_state = random_state

    # ----------------------------------------------------------------------------------------
    # scikit-learn plumbing
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.target_tags.required = True
        return tags

    def set_params(self, **params):
        """Set parameters; names such as ``module__depth`` are parameters of this estimator.

        Parameters
        ----------
        **params : dict
            Estimator parameters.

        Returns
        -------
        self : FCNSegmenter
        """
        own = set(self._get_param_names())
        rest = {}
        for key, value in params.items():
            if key in own:
                setattr(self, key, value)
            else:
                rest[key] = value
        if rest:
            super().set_params(**rest)
        return self

    # ----------------------------------------------------------------------------------------
    # helpers
    def _module_kwargs(self, params=None):
        """The ``module__`` settings of ``params`` (default: this estimator's), checked."""
        params = self.get_params(deep=False) if params is None else params
        kw = {k[len("module__"):]: v for k, v in params.items() if k.startswith("module__")}
        for key in ("depth", "base_filters", "dilation", "space_to_depth"):
            v = kw[key]
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"module__{key} must be an integer >= 1; got {v!r}")
            kw[key] = int(v)
        kw["batch_norm"] = bool(kw["batch_norm"])
        if not isinstance(kw["dropout"], numbers.Real) or not 0 <= kw["dropout"] < 1:
            raise ValueError(f"module__dropout must be a number in [0, 1); got {kw['dropout']!r}")
        kw["dropout"] = float(kw["dropout"])
        return kw

    def _check_int(self, name, low=1):
        v = getattr(self, name)
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {v!r}")
        return int(v)

    def _resolve_classes(self, masks, classes, origin=""):
        """Class names from ``classes`` (the parameter, or the init model's, as told by
        ``origin``), or from the labels of ``masks`` when it is None."""
        max_label = max(int(m.max()) if m.size else 0 for m in masks)
        if max_label <= 0:
            warnings.warn(
                "y holds no foreground: every label is 0 (background) or -1 (ignored), so the "
                "model will learn to find nothing; label the atoms in the masks (1, 2, ... by "
                "class)", SklatomWarning, stacklevel=3)
        if classes is None:
            _check_label_values(masks, max_label)
            n = max(2, max_label + 1)
            return ["background"] + [f"class_{i}" for i in range(1, n)]
        if isinstance(classes, str) or not all(isinstance(c, str) for c in classes):
            raise TypeError(
                f"classes must be a list of class names (str) indexed by label value; got "
                f"{classes!r}"
            )
        classes = list(classes)
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise ValueError(
                f"classes must hold at least 2 distinct names (background first); got {classes!r}"
            )
        if max_label >= len(classes):
            raise ValueError(
                f"y contains label {max_label} but classes{origin} has only {len(classes)} "
                f"names {classes!r}; labels must be < len(classes)"
            )
        return classes

    def _class_weights(self, masks, n_classes):
        cw = self.class_weight
        if cw is None:
            return None
        if isinstance(cw, str):
            if cw != "balanced":
                raise ValueError(f"class_weight must be None, 'balanced' or an array; got {cw!r}")
            counts = np.zeros(n_classes)
            for m in masks:
                counts += np.bincount(m[m >= 0].ravel(), minlength=n_classes)[:n_classes]
            w = counts.sum() / (n_classes * np.maximum(counts, 1))
        else:
            w = np.asarray(cw, dtype=float)
            if w.shape != (n_classes,) or not np.all(np.isfinite(w)) or np.any(w < 0):
                raise ValueError(
                    f"class_weight must hold {n_classes} non-negative finite weights (one per "
                    f"class); got {cw!r}"
                )
        return torch.as_tensor(w, dtype=torch.float32)

    def _make_net(self, n_classes, module_kwargs, train_split=None, class_weights=None,
                  device="cpu"):
        monitor = "train_loss" if train_split is None else "valid_loss"
        verbose = int(self.verbose) if self.verbose else 0
        callbacks = [("set_epoch", _SetEpoch())]
        patience = self.early_stopping_patience
        if patience is not None and (isinstance(patience, bool) or not isinstance(
                patience, numbers.Integral) or patience < 0):
            raise ValueError(
                f"early_stopping_patience must be an int >= 1, or 0 or None for no early "
                f"stopping; got {patience!r}")
        if patience:
            callbacks.append((
                "early_stopping",
                EarlyStopping(monitor=monitor, patience=int(patience), load_best=True,
                              sink=print if verbose else _noop),
            ))
        sched = self.lr_schedule
        if sched is True or sched == "plateau":
            callbacks.append((
                "lr_scheduler",
                LRScheduler(policy=torch.optim.lr_scheduler.ReduceLROnPlateau, monitor=monitor,
                            factor=0.5, patience=max(1, int(patience or 4) // 2)),
            ))
        elif sched == "cosine":
            callbacks.append((
                "lr_scheduler",
                LRScheduler(policy=torch.optim.lr_scheduler.CosineAnnealingLR,
                            T_max=max(1, int(self.max_epochs))),
            ))
        elif sched not in (False, None):
            raise ValueError(
                f"lr_schedule must be True, 'plateau', 'cosine', False or None; got {sched!r}"
            )
        if verbose >= 2:
            callbacks.append(("progress_bar", ProgressBar()))
        module_params = {f"module__{k}": v for k, v in module_kwargs.items()}
        return NeuralNet(
            module=UNet,
            module__n_classes=n_classes,
            **module_params,
            criterion=torch.nn.CrossEntropyLoss,
            criterion__weight=class_weights,
            criterion__ignore_index=IGNORE_LABEL,
            optimizer=self.optimizer,
            lr=self.lr,
            max_epochs=self._check_int("max_epochs"),
            batch_size=self._check_int("batch_size"),
            iterator_train__shuffle=True,
            train_split=train_split,
            callbacks=callbacks,
            predict_nonlinearity=functools.partial(torch.nn.functional.softmax, dim=1),
            verbose=verbose,
            device=device,
        )

    # ----------------------------------------------------------------------------------------
    # fitting
    def fit(self, X, y):
        """Train the network on images and label masks.

        Parameters
        ----------
        X : ndarray of shape (n_images, height, width) or list of ndarray of shape (height, width)
            Training images (any real dtype; each is normalised on its own), at
            ``training_pixel_size`` Å/px.
        y : ndarray of shape (n_images, height, width) or list of ndarray of shape (height, width)
            Integer label masks of the same shapes; label ``k`` names ``classes_[k]``, 0 is the
            background.

        Returns
        -------
        self : FCNSegmenter
            The fitted estimator.
        """
        images = check_image_batch(X, "X")
        masks = _check_masks(y, images)
        source = self._fine_tuning_source()
        params = self._fit_settings(source)
        module_kwargs = self._module_kwargs(params)
        multiple = module_kwargs["space_to_depth"] * 2 ** module_kwargs["depth"]
        patch_size = self._check_int("patch_size")
        if patch_size % multiple:
            raise ValueError(
                f"patch_size must be a multiple of module__space_to_depth * 2**module__depth "
                f"= {multiple}; got {patch_size}"
            )
        zoom = self.augment_zoom
        try:
            zoom = (float(zoom[0]), float(zoom[1]))
            ok = len(self.augment_zoom) == 2 and 0 < zoom[0] <= zoom[1]
        except (TypeError, IndexError, ValueError):
            ok = False
        if not ok:
            raise ValueError(
                f"augment_zoom must be a pair (low, high) with 0 < low <= high; "
                f"got {self.augment_zoom!r}"
            )
        origin = ""
        if self.init_model is not None and self.classes is None:
            origin = f" (those of init_model={os.fspath(self.init_model)!r})"
        classes = self._resolve_classes(masks, params["classes"], origin)
        n_classes = len(classes)
        pixel_size_ = check_sampling(params["training_pixel_size"], "training_pixel_size")
        device = _resolve_device(self.device)
        seed = _seed_from(self.random_state)
        norm = [_normalise(im, f"X[{i}]") for i, im in enumerate(images)]

        # whole images are held out for validation
        n = len(norm)
        vf = self.validation_fraction
        if vf is None or vf == 0:
            n_valid = 0
        else:
            if isinstance(vf, bool) or not isinstance(vf, numbers.Real) or not 0 < vf < 1:
                raise ValueError(f"validation_fraction must be in (0, 1) or None; got {vf!r}")
            if n < 2:
                warnings.warn(
                    "validation_fraction is ignored: a single training image cannot be split; "
                    "monitoring train_loss instead",
                    SklatomWarning,
                    stacklevel=2,
                )
                n_valid = 0
            else:
                n_valid = min(n - 1, max(1, int(round(vf * n))))
        order = np.random.default_rng([seed, 1]).permutation(n)
        valid_idx, train_idx = order[:n_valid], order[n_valid:]
        train_images = [norm[i] for i in train_idx]
        train_masks = [masks[i] for i in train_idx]
        train_split = None
        if n_valid:
            parts = [grid_patches(norm[i], masks[i], patch_size) for i in valid_idx]
            vx = np.concatenate([p[0] for p in parts])[:, np.newaxis]
            vy = np.concatenate([p[1] for p in parts])
            train_split = predefined_split(SkorchDataset(vx, vy))

        batch_size = self._check_int("batch_size")
        if self.patches_per_epoch is None:
            area = sum(im.size for im in train_images)
            n_patches = max(batch_size, MIN_PATCHES_PER_EPOCH, -(-area // patch_size**2))
        else:
            n_patches = self._check_int("patches_per_epoch")
        dataset = _PatchDataset(train_images, train_masks, patch_size, n_patches, seed,
                                bool(self.augment), zoom)
        class_weights = self._class_weights(train_masks, n_classes)

        previous = self._start_weights(source, classes, module_kwargs, pixel_size_)
        devices = [torch.cuda.current_device()] if str(device).startswith("cuda") else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            net = self._make_net(n_classes, module_kwargs, train_split, class_weights, device)
            if previous is None:
                net.fit(dataset, None)
            else:  # fine-tune: start from the fitted or the init model's weights
                net.initialize()
                net.module_.load_state_dict(previous)
                with _frozen_batch_norm_statistics(net.module_):
                    net.partial_fit(dataset, None)
        net.train_split = None  # do not keep the validation patches in the fitted estimator
        self.net_ = net
        self.classes_ = classes
        self.n_classes_ = n_classes
        self.pixel_size_ = pixel_size_
        self.device_ = str(device)
        return self

    def _fine_tuning_source(self):
        """The fitted segmenter ``fit`` starts from: this one (``warm_start`` and fitted), the
        loaded ``init_model``, or None (a new network)."""
        if self.warm_start and hasattr(self, "net_"):
            return self
        if self.init_model is None:
            return None
        return _load_model(self.init_model, "init_model", device="cpu")

    def _fit_settings(self, source):
        """The parameters ``fit`` uses: with an ``init_model``, the classes, ``module__``
        settings and training pixel size left at their defaults are those of ``source``."""
        params = self.get_params(deep=False)
        if source is None or self.init_model is None:
            return params
        defaults = {name: p.default
                    for name, p in inspect.signature(type(self).__init__).parameters.items()}
        for key, value in _network_settings(source).items():
            mine, default = params[key], defaults[key]
            if mine is default or (type(mine) is type(default) and mine == default):
                params[key] = value
        return params

    def _start_weights(self, source, classes, module_kwargs, pixel_size):
        """The weights of ``source`` (None: a new network), checked against the settings."""
        if source is None:
            return None
        init = self.init_model is not None
        what = "warm_start" if source is self else f"init_model={os.fspath(self.init_model)!r}"
        _check_fine_tuning(source, what, classes, module_kwargs,
                           pixel_size if init else None, same_names=init)
        return {k: v.detach().clone() for k, v in source.net_.module_.state_dict().items()}

    # ----------------------------------------------------------------------------------------
    # prediction
    def _tile_geometry(self):
        module = self.net_.module_
        multiple = module.size_multiple
        if self.tile_overlap == "auto":
            half = receptive_field(module.depth, module.dilation, module.space_to_depth)
        else:
            ov = self.tile_overlap
            if isinstance(ov, bool) or not isinstance(ov, numbers.Integral) or ov < 0:
                raise ValueError(f"tile_overlap must be 'auto' or an integer >= 0; got {ov!r}")
            half = -(-int(ov) // 2)
        margin = -(-half // multiple) * multiple
        tile = self._check_int("tile_size") // multiple * multiple
        core = tile - 2 * margin
        if core < multiple:
            raise ValueError(
                f"tile_size={self.tile_size} is too small for an overlap of {2 * margin} px "
                f"(tile_overlap={self.tile_overlap!r}); use tile_size >= {2 * margin + multiple}"
            )
        return multiple, margin, core

    def _inference_module(self):
        """The network folded for prediction (:func:`~sklatom._unet.inference_copy`), cached.

        The cache is rebuilt when the trained module is replaced or any of its tensors is
        changed in place (training, ``load_state_dict``), which bumps the tensors' versions.
        """
        module = self.net_.module_
        cached = getattr(self, "_frozen", None)
        if cached is None or cached[0] is not module or cached[1] != _versions(cached[2]):
            _raise_malloc_threshold()
            tensors = list(itertools.chain(module.parameters(), module.buffers()))
            cached = (module, _versions(tensors), tensors, inference_copy(module))
            self._frozen = cached
        return cached[3]

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_frozen", None)  # a derived copy of the weights; rebuilt on demand
        return state

    def _predict_normalised(self, x, module):
        """Probabilities ``(n_classes, h, w)`` of one normalised image, tile by tile.

        The image is reflect-padded at the bottom and right up to a multiple of
        ``module.size_multiple`` only: the network learned on patches whose edges it sees
        through the convolutions' zero padding, and wider reflection padding scored lower on
        the held-out images. An image larger than ``tile_size`` is cut into tiles that overlap
        by twice the margin, each keeping only the part at least a margin away from the cuts;
        with the "auto" margin this equals the network applied to the whole image.
        """
        multiple, margin, core = self._tile_geometry()
        tile = core + 2 * margin
        h, w = x.shape
        padded = x
        if h % multiple or w % multiple:
            padded = pad_reflect(x, [(0, -h % multiple), (0, -w % multiple)])
        rows, cols = _tile_spans(padded.shape[0], tile, margin), _tile_spans(
            padded.shape[1], tile, margin)
        tiles = [(r, c) for r in rows for c in cols]
        device = self.device_
        # on a CPU one tile per call is fastest (the activations stay in cache); a GPU gets
        # batches of tiles
        bs = 1 if device == "cpu" else self._check_int("batch_size")
        out = None
        with torch.inference_mode():
            for start in range(0, len(tiles), bs):
                chunk = tiles[start:start + bs]
                batch = np.stack([padded[r[0]:r[1], c[0]:c[1]] for r, c in chunk])
                xt = torch.from_numpy(batch[:, np.newaxis]).to(device).contiguous(
                    memory_format=torch.channels_last)
                proba = _softmax_(module(xt)).cpu().numpy()
                if len(tiles) == 1:
                    return proba[0, :, :h, :w]
                if out is None:
                    out = np.empty((self.n_classes_,) + padded.shape, dtype=np.float32)
                for (r, c), p in zip(chunk, proba):
                    out[:, r[2]:r[3], c[2]:c[3]] = p[:, r[2] - r[0]:r[3] - r[0],
                                                     c[2] - c[0]:c[3] - c[0]]
        return out[:, :h, :w]

    def _proba_items(self, X):
        check_is_fitted(self, "net_")
        images = check_image_batch(X, "X")
        ps = check_sampling(self.pixel_size, "pixel_size")
        factor = 1.0
        if ps is not None:
            if self.pixel_size_ is None:
                raise ValueError(
                    f"pixel_size={ps} Å/px cannot be honoured: the model does not know its "
                    "training pixel size (fit with training_pixel_size=... to set pixel_size_)"
                )
            factor = ps / self.pixel_size_
        module = self._inference_module()
        # threads share the network; inference in eval mode gives the same maps as n_jobs=1
        return map_items(self._proba_one, ((img, i, factor, module)
                                           for i, img in enumerate(images)),
                         self.n_jobs, prefer="threads")

    def _proba_one(self, img, i, factor, module):
        """Probability maps of one image at the input's size.

        Saturated, clipped, blanked and constant regions (:func:`sklatom.quality.check_image`)
        are background, and an image without usable structure is background everywhere; each
        finding is reported in an :class:`~sklatom.exceptions.ImageQualityWarning`; such
        regions are filled with the median of the rest before normalising, so that the rest
        keeps its contrast. The image is resampled to the training sampling first and
        normalised there, as the training images were.
        """
        shape = img.shape
        sampling = self.pixel_size_ * factor if self.pixel_size_ else None
        quality = check_image(img, sampling, f"X[{i}]")
        for problem in quality.problems:
            warnings.warn(problem, ImageQualityWarning, stacklevel=5)
        if not quality.usable:
            p = np.zeros((self.n_classes_,) + shape, dtype=np.float32)
            p[0] = 1.0
            return p
        x = img
        if quality.dead.any():  # normalised by what the live part shows, not by the patch
            x = np.where(quality.dead, np.median(img[~quality.dead]), img).astype(img.dtype)
        x = x if factor == 1.0 else resample_image(x, resampled_shape(shape, factor))
        p = self._predict_normalised(_normalise(x, f"X[{i}]"), module)
        if p.shape[1:] != shape:
            p = resize(p, (p.shape[0],) + shape, order=1, mode="edge",
                       anti_aliasing=False, preserve_range=True)
            p = np.clip(p, 0, None)
            p = (p / np.maximum(p.sum(axis=0, keepdims=True), 1e-12)).astype(np.float32)
        if quality.dead.any():
            p[:, quality.dead] = 0.0
            p[0, quality.dead] = 1.0
        return p

    def predict_proba(self, X):
        """Per-pixel class probabilities.

        Parameters
        ----------
        X : ndarray of shape (n_images, height, width) or list of ndarray of shape (height, width)
            Images at ``pixel_size`` Å/px (or at the training sampling when it is None).

        Returns
        -------
        proba : ndarray of shape (n_images, n_classes, height, width), float32, or list of \
ndarray of shape (n_classes, height_i, width_i)
            Softmax probabilities summing to one over classes; a list when sizes differ.
        """
        return stack_if_same_shape(self._proba_items(X))

    def transform(self, X):
        """Per-pixel class probabilities; :meth:`predict_proba`, plus the images on request.

        Parameters
        ----------
        X : ndarray of shape (n_images, height, width) or list of ndarray of shape (height, width)
            Images.

        Returns
        -------
        proba : ndarray of shape (n_images, n_classes, height, width), float32, or list of \
ndarray of shape (n_classes, height_i, width_i)
            Probability maps; class 0 is the background. With ``passthrough_images=True`` the
            tuple ``(proba, X)``, which :class:`~sklatom.peaks.PeakFinder` (``refine``) and
            :class:`~sklatom.descriptors.ContourDescriptor` read as maps plus raw images.
        """
        proba = self.predict_proba(X)
        return (proba, X) if self.passthrough_images else proba

    def predict(self, X):
        """Most probable class of each pixel.

        Parameters
        ----------
        X : ndarray of shape (n_images, height, width) or list of ndarray of shape (height, width)
            Images.

        Returns
        -------
        labels : ndarray of shape (n_images, height, width), int64, or list of ndarray
            Label masks (index into ``classes_``); a list when sizes differ.
        """
        return stack_if_same_shape([p.argmax(axis=0).astype(np.int64)
                                    for p in self._proba_items(X)])

    def score(self, X, y):
        """Mean intersection over union of the non-background classes.

        For every class ``k >= 1`` that occurs in ``y`` or in the prediction, IoU is computed
        over all pixels of all images together, ``|pred == k and y == k| / |pred == k or y ==
        k|``; the score is the mean over those classes (1.0 when neither contains any
        non-background pixel).

        Parameters
        ----------
        X : ndarray of shape (n_images, height, width) or list of ndarray of shape (height, width)
            Images.
        y : ndarray of shape (n_images, height, width) or list of ndarray of shape (height, width)
            True integer label masks.

        Returns
        -------
        score : float
            Mean IoU in [0, 1]; higher is better.
        """
        check_is_fitted(self, "net_")
        images = check_image_batch(X, "X")
        masks = _check_masks(y, images)
        pred = self.predict(X)
        inter = np.zeros(self.n_classes_ + 1)
        union = np.zeros(self.n_classes_ + 1)
        for p, t in zip(pred, masks):
            t = np.minimum(t, self.n_classes_)  # unknown labels count as wrong everywhere
            care = t != IGNORE_LABEL
            p, t = p[care], t[care]
            for k in range(1, self.n_classes_ + 1):
                pk, tk = p == k, t == k
                inter[k] += np.count_nonzero(pk & tk)
                union[k] += np.count_nonzero(pk | tk)
        present = union[1:] > 0
        if not present.any():
            return 1.0
        return float(np.mean(inter[1:][present] / union[1:][present]))

    # ----------------------------------------------------------------------------------------
    # persistence without pickle
    def _json_params(self):
        """The parameters as JSON values; ``module__`` settings those of the fitted network
        (an ``init_model`` may have set them)."""
        params = self.get_params(deep=False)
        params.update({k: v for k, v in _network_settings(self).items()
                       if k.startswith("module__")})
        if params["init_model"] is not None:
            params["init_model"] = os.fspath(params["init_model"])
        params["optimizer"] = _optimizer_name(params["optimizer"])
        if params["augment_zoom"] is not None:
            params["augment_zoom"] = [float(z) for z in params["augment_zoom"]]
        cw = params["class_weight"]
        if cw is not None and not isinstance(cw, str):
            params["class_weight"] = [float(v) for v in np.asarray(cw).ravel()]
        if params["classes"] is not None:
            params["classes"] = list(params["classes"])
        rs = params["random_state"]
        if not (rs is None or isinstance(rs, numbers.Integral)):
            params["random_state"] = None
        elif rs is not None:
            params["random_state"] = int(rs)
        if isinstance(params["device"], torch.device):
            params["device"] = str(params["device"])
        return params

    def save(self, path):
        """Save the fitted network to one ``.safetensors`` file (weights + JSON metadata).

        The file holds the U-Net weights as plain tensors and, in its string metadata under the
        key ``"sklatom"``, a JSON document with the format version, the estimator parameters,
        ``classes_``, ``pixel_size_``, the input normalisation and a SHA-256 digest of it all.
        Loading it executes no code. Training state (optimizer, history) is not saved; use
        joblib for that.

        Parameters
        ----------
        path : str or path-like
            Destination file, conventionally ending in ``.safetensors``.

        Returns
        -------
        path : str
            The path written.
        """
        check_is_fitted(self, "net_")
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"cannot save the model to {path!r}: the folder {folder!r} "
                                    f"does not exist; create it first")
        tensors = {k: v.detach().cpu().contiguous()
                   for k, v in self.net_.module_.state_dict().items()}
        module = self.net_.module_
        config = {
            "format_version": FORMAT_VERSION,
            "estimator": type(self).__name__,
            "params": self._json_params(),
            "classes_": list(self.classes_),
            "pixel_size_": self.pixel_size_,
            "normalisation": dict(NORMALISATION),
            "module": {"depth": module.depth, "dilation": module.dilation,
                       "space_to_depth": module.space_to_depth},
        }
        config["sha256"] = _digest(config, tensors)
        save_file(tensors, path, metadata={_METADATA_KEY: json.dumps(config)})
        return path

    @classmethod
    def load(cls, path, device="cpu"):
        """Load an estimator written by :meth:`save`.

        Parameters
        ----------
        path : str or path-like
            A file written by :meth:`save`.
        device : str, default="cpu"
            Device to put the network on ("auto", "cpu", "cuda").

        Returns
        -------
        segmenter : FCNSegmenter
            A fitted estimator that predicts like the saved one.

        Raises
        ------
        ValueError
            If the file is not a valid safetensors file, or its metadata or tensors are
            missing, malformed, inconsistent or modified (the digest does not match).
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such model file: {path!r}")
        try:
            with safe_open(path, framework="pt", device="cpu") as f:
                metadata = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # safetensors raises its own error types
            raise ValueError(
                f"{path!r} is not a readable safetensors file (truncated or corrupt?): {exc}"
            ) from exc
        if _METADATA_KEY not in metadata:
            raise ValueError(
                f"{path!r} has no {_METADATA_KEY!r} metadata; it was not written by "
                "FCNSegmenter.save"
            )
        try:
            config = json.loads(metadata[_METADATA_KEY])
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path!r}: the sklatom metadata is not valid JSON: {exc}") from exc
        required = ("format_version", "params", "classes_", "pixel_size_", "normalisation",
                    "sha256")
        if not isinstance(config, dict) or any(k not in config for k in required):
            raise ValueError(
                f"{path!r}: the sklatom metadata must be a JSON object with keys {required}"
            )
        if config["format_version"] != FORMAT_VERSION:
            raise ValueError(
                f"{path!r}: format_version {config['format_version']!r} is not supported "
                f"(expected {FORMAT_VERSION})"
            )
        expected_digest = config.pop("sha256")
        if _digest(config, tensors) != expected_digest:
            raise ValueError(
                f"{path!r}: SHA-256 digest mismatch; the weights or metadata were modified or "
                "corrupted"
            )
        if config["normalisation"] != NORMALISATION:
            raise ValueError(
                f"{path!r}: unsupported input normalisation {config['normalisation']!r}"
            )
        params = config["params"]
        valid = set(cls._get_param_names())
        if not isinstance(params, dict) or not set(params) <= valid:
            extra = sorted(set(params) - valid) if isinstance(params, dict) else params
            raise ValueError(f"{path!r}: unknown estimator parameters {extra!r}")
        params = dict(params)
        params["optimizer"] = _optimizer_from_name(params.get("optimizer", "Adam"), path)
        if isinstance(params.get("augment_zoom"), list):
            params["augment_zoom"] = tuple(params["augment_zoom"])
        classes = config["classes_"]
        if (not isinstance(classes, list) or len(classes) < 2
                or not all(isinstance(c, str) for c in classes)):
            raise ValueError(f"{path!r}: classes_ must be a list of >= 2 names; got {classes!r}")
        est = cls(**params)
        try:
            pixel_size_ = check_pixel_size(config["pixel_size_"], "pixel_size_",
                                           *PIXEL_SIZE_RANGE, allow_none=True)
            module_kwargs = est._module_kwargs()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path!r}: invalid stored parameters: {exc}") from exc
        dev = _resolve_device(device)
        with torch.random.fork_rng(devices=[]):
            net = est._make_net(len(classes), module_kwargs, device=dev)
            net.initialize()
        expected = net.module_.state_dict()
        missing = sorted(set(expected) - set(tensors))
        unexpected = sorted(set(tensors) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"{path!r}: tensors do not match the network: missing {missing}, "
                f"unexpected {unexpected}"
            )
        for key, ref in expected.items():
            t = tensors[key]
            if tuple(t.shape) != tuple(ref.shape) or t.dtype != ref.dtype:
                raise ValueError(
                    f"{path!r}: tensor {key!r} has shape {tuple(t.shape)} and dtype {t.dtype}; "
                    f"the network expects {tuple(ref.shape)} and {ref.dtype}"
                )
        net.module_.load_state_dict(tensors)
        net.module_.eval()
        est.net_ = net
        est.classes_ = list(classes)
        est.n_classes_ = len(classes)
        est.pixel_size_ = pixel_size_
        est.device_ = str(dev)
        return est
