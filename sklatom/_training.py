"""How :class:`sklatom.segmentation.FCNSegmenter` trains its network.

The training data pipeline (label masks with the "don't care" label, class names, class
weights, the split of whole images for validation, random augmented patches drawn on the fly
with :mod:`sklatom._augment`), the skorch :class:`~skorch.NeuralNet` around the U-Net with its
callbacks, and fine-tuning (which settings must match the network it starts from, batch-norm
statistics kept). The parameters arrive checked (the segmenter's table of parameter
constraints); the checks here are those that depend on the data or on another network.
"""

import contextlib
import functools
import numbers
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.utils import check_random_state
from skorch import NeuralNet
from skorch.callbacks import Callback, EarlyStopping, LRScheduler, ProgressBar
from skorch.dataset import Dataset as SkorchDataset
from skorch.helper import predefined_split

from ._augment import augment_intensity, grid_patches, random_patch
from ._unet import UNet
from ._validation import SklatomWarning

__all__ = ["IGNORE_LABEL", "check_masks", "resolve_classes", "network_kwargs",
           "check_patch_size", "seed_from", "TrainingData", "training_data", "make_net",
           "train", "network_settings", "check_fine_tuning"]

#: Label of "don't care" pixels in training masks: they count neither way in the loss.
IGNORE_LABEL = -1
#: Fewest patches an epoch draws with ``patches_per_epoch=None`` (64 batches of 8).
MIN_PATCHES_PER_EPOCH = 512
#: ``module__`` settings that make the network: fine-tuning keeps them (dropout may change).
ARCHITECTURE = ("depth", "base_filters", "dilation", "batch_norm", "space_to_depth")


# --------------------------------------------------------------------------------------------
# masks and classes
def check_masks(y, images, name="y"):
    """Validate label masks against the images; return a list of int16 arrays."""
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


def resolve_classes(masks, classes, origin=""):
    """Class names from ``classes`` (the parameter, or the init model's, as told by
    ``origin``), or from the labels of ``masks`` when it is None.

    Call it from ``fit``: the warning about masks without foreground points at fit's caller.
    """
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
    classes = list(classes)
    if max_label >= len(classes):
        raise ValueError(
            f"y contains label {max_label} but classes{origin} has only {len(classes)} "
            f"names {classes!r}; labels must be < len(classes)"
        )
    return classes


def _class_weights(class_weight, masks, n_classes):
    """The weights of the classes in the loss (None: equal), as a tensor."""
    if class_weight is None:
        return None
    if isinstance(class_weight, str):  # "balanced"
        counts = np.zeros(n_classes)
        for m in masks:
            counts += np.bincount(m[m >= 0].ravel(), minlength=n_classes)[:n_classes]
        w = counts.sum() / (n_classes * np.maximum(counts, 1))
    else:
        w = np.asarray(class_weight, dtype=float)
        if w.shape != (n_classes,):
            raise ValueError(
                f"class_weight must hold {n_classes} non-negative finite weights (one per "
                f"class); got {class_weight!r}"
            )
    return torch.as_tensor(w, dtype=torch.float32)


# --------------------------------------------------------------------------------------------
# settings
def network_kwargs(params):
    """The ``module__`` settings of estimator parameters as keyword arguments of
    :class:`~sklatom._unet.UNet` (plain ints, bool and float: they are saved as JSON)."""
    kw = {k[len("module__"):]: v for k, v in params.items() if k.startswith("module__")}
    for key in ("depth", "base_filters", "dilation", "space_to_depth"):
        kw[key] = int(kw[key])
    kw["batch_norm"] = bool(kw["batch_norm"])
    kw["dropout"] = float(kw["dropout"])
    return kw


def check_patch_size(patch_size, module_kwargs):
    """``patch_size`` as an int; it must be a multiple of the network's size multiple."""
    multiple = module_kwargs["space_to_depth"] * 2 ** module_kwargs["depth"]
    if patch_size % multiple:
        raise ValueError(
            f"patch_size must be a multiple of module__space_to_depth * 2**module__depth "
            f"= {multiple}; got {patch_size}"
        )
    return int(patch_size)


def seed_from(random_state):
    """Turn ``random_state`` (None, int, RandomState or Generator) into an int seed."""
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**31 - 1))
    if random_state is None:
        return int(np.random.default_rng().integers(2**31 - 1))
    if isinstance(random_state, numbers.Integral):
        return int(random_state)
    return int(check_random_state(random_state).randint(2**31 - 1))


# --------------------------------------------------------------------------------------------
# training data
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


def _n_validation_images(n, validation_fraction):
    """How many of ``n`` training images are held out for validation (whole images).

    Call it from a function that ``fit`` calls: the warning for a single image points at
    fit's caller.
    """
    if validation_fraction is None or validation_fraction == 0:
        return 0
    if n < 2:
        warnings.warn(
            "validation_fraction is ignored: a single training image cannot be split; "
            "monitoring train_loss instead",
            SklatomWarning,
            stacklevel=4,
        )
        return 0
    return min(n - 1, max(1, int(round(validation_fraction * n))))


@dataclass
class TrainingData:
    """What :func:`training_data` prepares for :func:`make_net` and :func:`train`."""

    #: random augmented patches of the training images (a torch ``Dataset``)
    patches: torch.utils.data.Dataset
    #: skorch ``train_split`` holding the fixed grid of validation patches, or None
    train_split: object
    #: weights of the classes in the loss, or None
    class_weights: torch.Tensor


def training_data(images, masks, *, n_classes, patch_size, seed, validation_fraction,
                  patches_per_epoch, batch_size, augment, augment_zoom, class_weight):
    """Hold out whole images for validation and set up the patches of the others.

    ``images`` are normalised; the other arguments are the estimator's (checked)
    parameters, ``patch_size`` checked against the network. The validation images are cut
    into a fixed grid of patches without augmentation; the training patches are drawn at
    random, ``patches_per_epoch`` of them (None: enough to cover the images once, and at
    least :data:`MIN_PATCHES_PER_EPOCH` and ``batch_size``).
    """
    n = len(images)
    n_valid = _n_validation_images(n, validation_fraction)
    order = np.random.default_rng([seed, 1]).permutation(n)
    valid_idx, train_idx = order[:n_valid], order[n_valid:]
    train_images = [images[i] for i in train_idx]
    train_masks = [masks[i] for i in train_idx]
    train_split = None
    if n_valid:
        parts = [grid_patches(images[i], masks[i], patch_size) for i in valid_idx]
        vx = np.concatenate([p[0] for p in parts])[:, np.newaxis]
        vy = np.concatenate([p[1] for p in parts])
        train_split = predefined_split(SkorchDataset(vx, vy))
    if patches_per_epoch is None:
        area = sum(im.size for im in train_images)
        n_patches = max(int(batch_size), MIN_PATCHES_PER_EPOCH, -(-area // patch_size**2))
    else:
        n_patches = int(patches_per_epoch)
    zoom = (float(augment_zoom[0]), float(augment_zoom[1]))
    patches = _PatchDataset(train_images, train_masks, patch_size, n_patches, seed,
                            bool(augment), zoom)
    return TrainingData(patches, train_split,
                        _class_weights(class_weight, train_masks, n_classes))


# --------------------------------------------------------------------------------------------
# the network and its training
def _noop(*args, **kwargs):
    """Sink that discards messages (picklable, unlike a lambda)."""


def make_net(params, n_classes, module_kwargs, train_split=None, class_weights=None,
             device="cpu"):
    """The skorch :class:`~skorch.NeuralNet` of a segmenter, not initialised.

    ``params`` are the estimator's (checked) parameters; they give the optimizer, learning
    rate, epochs, batch size, verbosity, early stopping and learning-rate schedule. The loss
    is the pixel-wise cross-entropy that ignores :data:`IGNORE_LABEL`; it monitors
    ``valid_loss`` with a ``train_split``, else ``train_loss``.
    """
    monitor = "train_loss" if train_split is None else "valid_loss"
    verbose = int(params["verbose"]) if params["verbose"] else 0
    callbacks = [("set_epoch", _SetEpoch())]
    patience = params["early_stopping_patience"]
    if patience:
        callbacks.append((
            "early_stopping",
            EarlyStopping(monitor=monitor, patience=int(patience), load_best=True,
                          sink=print if verbose else _noop),
        ))
    sched = params["lr_schedule"]
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
                        T_max=max(1, int(params["max_epochs"]))),
        ))
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
        optimizer=params["optimizer"],
        lr=params["lr"],
        max_epochs=int(params["max_epochs"]),
        batch_size=int(params["batch_size"]),
        iterator_train__shuffle=True,
        train_split=train_split,
        callbacks=callbacks,
        predict_nonlinearity=functools.partial(torch.nn.functional.softmax, dim=1),
        verbose=verbose,
        device=device,
    )


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


def train(net, patches, start_weights, seed, device, keep_batch_norm=True):
    """Train ``net`` (from :func:`make_net`) on ``patches``, seeded by ``seed``; return it.

    With ``start_weights`` (a state dict) it fine-tunes from them, batch-norm statistics
    kept unless ``keep_batch_norm`` is False; else it starts from new weights. The torch
    random state outside is left as it was. The validation patches are dropped from the
    returned net.
    """
    devices = [torch.cuda.current_device()] if str(device).startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        if start_weights is None:
            net.fit(patches, None)
        else:
            net.initialize()
            net.module_.load_state_dict(start_weights)
            kept = _frozen_batch_norm_statistics(net.module_) if keep_batch_norm else \
                contextlib.nullcontext()
            with kept:
                net.partial_fit(patches, None)
    net.train_split = None  # do not keep the validation patches in the fitted estimator
    return net


# --------------------------------------------------------------------------------------------
# fine-tuning
def network_settings(fitted):
    """Classes, ``module__`` settings and training pixel size of a fitted segmenter."""
    settings = {f"module__{k}": getattr(fitted.net_, f"module__{k}")
                for k in (*ARCHITECTURE, "dropout")}
    settings["classes"] = list(fitted.classes_)
    settings["training_pixel_size"] = fitted.pixel_size_
    return settings


def check_fine_tuning(source, what, classes, module_kwargs, pixel_size=None, same_names=False):
    """Refuse settings under which the weights of ``source`` cannot go on training.

    The number of classes (with ``same_names`` also their names) and the architecture must be
    those of ``source``'s network, and ``pixel_size`` (unless None) its training pixel size.
    """
    theirs = network_settings(source)
    if len(classes) != len(theirs["classes"]) or (same_names and classes != theirs["classes"]):
        raise ValueError(
            f"{what}: the fit would have {len(classes)} classes {classes} but the network to "
            f"fine-tune has {len(theirs['classes'])} {theirs['classes']}; fine-tuning keeps the "
            "classes")
    differ = [f"module__{k}={module_kwargs[k]!r} (the network's: {theirs['module__' + k]!r})"
              for k in ARCHITECTURE if module_kwargs[k] != theirs[f"module__{k}"]]
    if differ:
        raise ValueError(f"{what}: {', '.join(differ)}; fine-tuning keeps the architecture")
    trained = theirs["training_pixel_size"]
    if pixel_size is not None and trained is not None and not np.isclose(pixel_size, trained):
        raise ValueError(
            f"{what}: training_pixel_size={pixel_size} Å/px but the network was trained at "
            f"{trained} Å/px; fine-tuning keeps the sampling (resample the images to {trained} "
            "Å/px, e.g. with skimage.transform.rescale, and leave training_pixel_size=None)")
