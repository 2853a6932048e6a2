"""Per-pixel segmentation of atomic-resolution images with a fully convolutional network.

:class:`FCNSegmenter` is a scikit-learn transformer that wraps a skorch
:class:`~skorch.NeuralNet` around a PyTorch U-Net (:class:`sklatom._unet.UNet`). It learns from
images and integer label masks and turns images into probability maps
``(n_images, n_classes, height, width)`` that sum to one over classes, class 0 being the
background.
"""

# The estimator orchestrates; each concern has a private module of its own: the training data
# pipeline, the skorch net and fine-tuning in sklatom/_training.py (augmentation in
# _augment.py), tiled inference with the frozen network and the input normalisation in
# _inference.py, the model file in _persistence.py. Its parameters are checked in one place,
# the table _PARAMETER_CONSTRAINTS below.

import inspect
import os

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ._inference import NORMALISATION  # noqa: F401 (public here: the normalisation of models)
from ._inference import FrozenNetwork, TiledPredictor, Tiling, normalise
from ._persistence import digest as _digest  # noqa: F401 (tests/test_segmentation.py)
from ._persistence import load_weights, read_model, write_model
from ._training import (IGNORE_LABEL, check_fine_tuning, check_masks, check_patch_size,
                        make_net, network_kwargs, network_settings, resolve_classes, seed_from,
                        train, training_data)
from ._validation import (CheckedBy, Constraint, any_of, boolean, check_image_batch,
                          check_params, check_pixel_size, integer, map_items, number, options,
                          stack_if_same_shape, unchecked)
from .pretrained import _load_model

__all__ = ["FCNSegmenter"]

#: Sizes of the test-time-augmentation ensemble (:meth:`FCNSegmenter.predict_proba_ensemble`).
ENSEMBLE_SIZES = (1, 2, 4, 8)

#: Pixel sizes (Å/px) the segmenter accepts.
PIXEL_SIZE_RANGE = (0.05, 0.5)


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


def _check_class_names(classes, name):
    if classes is None:
        return
    try:
        names = None if isinstance(classes, str) else list(classes)
    except TypeError:  # not iterable
        names = None
    if names is None or not all(isinstance(c, str) for c in names):
        raise TypeError(f"{name} must be None or a list of class names (str) indexed by label "
                        f"value; got {classes!r}")
    if len(names) < 2 or len(set(names)) != len(names):
        raise ValueError(f"{name} must be a list of at least 2 distinct names (background "
                         f"first); got {classes!r}")


def _is_zoom_range(zoom):
    return len(zoom) == 2 and 0 < float(zoom[0]) <= float(zoom[1])


def _is_class_weight_array(weights):
    w = np.asarray(weights, dtype=float)
    return w.ndim == 1 and bool(np.all(np.isfinite(w))) and not np.any(w < 0)


#: What each parameter of :class:`FCNSegmenter` accepts, checked by
#: :meth:`FCNSegmenter._check_all_params` (all of them in ``fit`` and ``load``, those of
#: prediction in ``predict``/``predict_proba``/``transform``/``score``). Checks that depend on
#: the data or the network are made where those are known: ``patch_size`` a multiple of the
#: network's size multiple, one ``class_weight`` per class, labels below ``len(classes)``,
#: ``tile_size`` room for the overlap, and settings that fine-tuning must keep.
_PARAMETER_CONSTRAINTS = {
    "module__depth": integer(1),
    "module__base_filters": integer(1),
    "module__dilation": integer(1),
    "module__batch_norm": boolean(),
    "module__dropout": number(0, 1, closed="left"),
    "module__space_to_depth": integer(1),
    "lr": number(0),
    "max_epochs": integer(1),
    "batch_size": integer(1),
    "optimizer": unchecked("skorch instantiates it; save() stores those of torch.optim"),
    "patch_size": integer(1),
    "patches_per_epoch": integer(1, none=True),
    "validation_fraction": number(0, 1, closed="left", none=True,
                                  expected="a number in (0, 1), or 0 or None for no validation"),
    "early_stopping_patience": integer(
        0, none=True, expected="an int >= 1, or 0 or None for no early stopping"),
    "lr_schedule": options(True, "plateau", "cosine", False, None),
    "augment": boolean(),
    "augment_zoom": Constraint("a pair (low, high) with 0 < low <= high", _is_zoom_range),
    "class_weight": any_of(
        options(None, "balanced"), Constraint("an array-like", _is_class_weight_array),
        expected="None, 'balanced' or an array-like of non-negative finite weights (one per "
                 "class)"),
    "classes": CheckedBy(_check_class_names),
    "training_pixel_size": CheckedBy(check_sampling),
    "pixel_size": CheckedBy(check_sampling),
    "tile_size": integer(1),
    "tile_overlap": any_of(options("auto"), integer(0)),
    "device": Constraint("'auto', 'cpu', 'cuda' or a torch.device",
                         lambda d: isinstance(d, (str, torch.device)), TypeError),
    "verbose": any_of(boolean(), integer(0),
                      expected="an integer >= 0 (0: silent, 1: losses, 2: progress bar)"),
    "passthrough_images": boolean(),
    "init_model": unchecked("fit loads it, and the errors say what is accepted"),
    "warm_start": boolean(),
    "fine_tune_batch_norm": boolean(),
    "n_jobs": integer(none=True),
    "random_state": any_of(
        options(None), integer(0, high=2**32 - 1),
        Constraint("a RandomState or Generator",
                   lambda r: isinstance(r, (np.random.RandomState, np.random.Generator))),
        expected="None, an int in [0, 2**32), a numpy RandomState or Generator"),
}
#: The parameters that prediction uses.
_PREDICTION_PARAMS = ("pixel_size", "tile_size", "tile_overlap", "batch_size", "n_jobs",
                      "passthrough_images")


def _resolve_device(device):
    """"auto": "cuda" when available, else "cpu"; any other device as it is."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


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
    fine_tune_batch_norm : bool, default=False
        When fine-tuning (``init_model`` or ``warm_start``), also update the batch-norm
        statistics from the new data. Off, they stay those of the model fine-tuned, which is
        right for a few images; on a training set of its own (hundreds of images, e.g. a
        lattice model made from the general one) the kept statistics no longer match the
        weights being learnt and the validation loss jumps between epochs.
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
        fine_tune_batch_norm=False,
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
        self.fine_tune_batch_norm = fine_tune_batch_norm
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
    # parameters and the network to start from
    def _check_all_params(self, names=None):
        """Check the parameters ``names`` (default: all) against :data:`_PARAMETER_CONSTRAINTS`."""
        params = self.get_params(deep=False)
        if names is not None:
            params = {name: params[name] for name in names}
        check_params(params, _PARAMETER_CONSTRAINTS)

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
        for key, value in network_settings(source).items():
            mine, default = params[key], defaults[key]
            if mine is default or (type(mine) is type(default) and mine == default):
                params[key] = value
        return params

    def _classes_origin(self):
        """Where the classes of a fit come from, for the errors: "" (``classes`` or the
        labels) or the ``init_model``."""
        if self.init_model is not None and self.classes is None:
            return f" (those of init_model={os.fspath(self.init_model)!r})"
        return ""

    def _start_weights(self, source, classes, module_kwargs, pixel_size):
        """The weights of ``source`` (None: a new network), checked against the settings."""
        if source is None:
            return None
        init = self.init_model is not None
        what = "warm_start" if source is self else f"init_model={os.fspath(self.init_model)!r}"
        check_fine_tuning(source, what, classes, module_kwargs,
                          pixel_size if init else None, same_names=init)
        return {k: v.detach().clone() for k, v in source.net_.module_.state_dict().items()}

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
        self._check_all_params()
        images = check_image_batch(X, "X")
        masks = check_masks(y, images)
        # 1. the network: this estimator's settings, or those of the network it fine-tunes
        source = self._fine_tuning_source()
        params = self._fit_settings(source)
        module_kwargs = network_kwargs(params)
        classes = resolve_classes(masks, params["classes"], self._classes_origin())
        ps = params["training_pixel_size"]
        pixel_size_ = None if ps is None else float(ps)
        start = self._start_weights(source, classes, module_kwargs, pixel_size_)
        # 2. the training data: normalised images, random patches, validation images
        seed = seed_from(self.random_state)
        images = [normalise(im, f"X[{i}]") for i, im in enumerate(images)]
        data = training_data(
            images, masks, n_classes=len(classes),
            patch_size=check_patch_size(self.patch_size, module_kwargs), seed=seed,
            validation_fraction=self.validation_fraction,
            patches_per_epoch=self.patches_per_epoch, batch_size=self.batch_size,
            augment=self.augment, augment_zoom=self.augment_zoom, class_weight=self.class_weight)
        # 3. training, from new weights or from those of the network it fine-tunes
        device = _resolve_device(self.device)
        net = make_net(params, len(classes), module_kwargs, data.train_split, data.class_weights,
                       device)
        self.net_ = train(net, data.patches, start, seed, device,
                          keep_batch_norm=not self.fine_tune_batch_norm)
        self.classes_ = classes
        self.n_classes_ = len(classes)
        self.pixel_size_ = pixel_size_
        self.device_ = str(device)
        return self

    # ----------------------------------------------------------------------------------------
    # prediction
    def _inference_module(self):
        """The network folded for prediction (:class:`~sklatom._inference.FrozenNetwork`),
        cached, and rebuilt when the weights change."""
        cached = getattr(self, "_frozen", None)
        if cached is None or not cached.is_current(self.net_.module_):
            cached = self._frozen = FrozenNetwork(self.net_.module_)
        return cached.frozen

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_frozen", None)  # a derived copy of the weights; rebuilt on demand
        return state

    def _predictor(self, X):
        """The checked images and the :class:`~sklatom._inference.TiledPredictor` for them."""
        check_is_fitted(self, "net_")
        self._check_all_params(_PREDICTION_PARAMS)
        images = check_image_batch(X, "X")
        ps = None if self.pixel_size is None else float(self.pixel_size)
        factor = 1.0
        if ps is not None:
            if self.pixel_size_ is None:
                raise ValueError(
                    f"pixel_size={ps} Å/px cannot be honoured: the model does not know its "
                    "training pixel size (fit with training_pixel_size=... to set pixel_size_)"
                )
            factor = ps / self.pixel_size_
        predictor = TiledPredictor(
            network=self._inference_module(), n_classes=self.n_classes_,
            tiling=Tiling.of(self.net_.module_, self.tile_size, self.tile_overlap),
            device=self.device_, batch_size=int(self.batch_size),
            training_pixel_size=self.pixel_size_, factor=factor)
        return images, predictor

    def _proba_items(self, X):
        images, predictor = self._predictor(X)
        # threads share the network; inference in eval mode gives the same maps as n_jobs=1
        return map_items(predictor.proba, ((img, i) for i, img in enumerate(images)),
                         self.n_jobs, prefer="threads")

    def _ensemble_items(self, X, n_transforms, features=False):
        """Per image, the maps of the test-time-augmentation members ``(n_transforms,
        n_classes, height, width)`` (and, with ``features``, the pooled bottleneck features
        of member 0); see :meth:`predict_proba_ensemble`."""
        if n_transforms not in ENSEMBLE_SIZES:
            raise ValueError(f"n_transforms must be one of {ENSEMBLE_SIZES} (elements of the "
                             f"dihedral group of the square); got {n_transforms!r}")
        images, predictor = self._predictor(X)
        return map_items(predictor.members,
                         ((img, i, n_transforms, features) for i, img in enumerate(images)),
                         self.n_jobs, prefer="threads")

    def predict_proba_ensemble(self, X, n_transforms=8):
        """Mean and spread of the class probabilities over a test-time-augmentation ensemble.

        Each member segments the image flipped or rotated by an element of the dihedral
        group of the square (:func:`sklatom._inference.dihedral`: ``n_transforms=4`` the
        flips, 8 also the transposes and 90° rotations), and its maps are transformed back.
        The network is not exactly equivariant, so the members differ where the image is
        ambiguous to it: their spread is a measure of its uncertainty, and their mean is
        invariant under the group (for images whose size the network needs no padding for).
        Costs ``n_transforms`` predictions (see :doc:`/uncertainty` for the measured time);
        :meth:`predict_proba` is unchanged (member 0 is its result, bit for bit).

        Parameters
        ----------
        X : ndarray of shape (n_images, height, width) or list of ndarray of shape (height, width)
            Images at ``pixel_size`` Å/px (or at the training sampling when it is None).
        n_transforms : {1, 2, 4, 8}, default=8
            Members of the ensemble: the first ``n_transforms`` elements of the group
            (1: the identity alone; 2: and the flip of the rows).

        Returns
        -------
        mean : ndarray of shape (n_images, n_classes, height, width), float32, or list
            Mean probabilities over the members; they sum to 1 over classes.
        std : ndarray of shape (n_images, n_classes, height, width), float32, or list
            Standard deviation of the members' probabilities (0 for ``n_transforms=1``).
        """
        items = self._ensemble_items(X, n_transforms)
        return (stack_if_same_shape([m.mean(axis=0) for m in items]),
                stack_if_same_shape([m.std(axis=0) for m in items]))

    def predict_proba(self, X):
        """Per-pixel class probabilities.

        Parameters
        ----------
        X : ndarray of shape (n_images, height, width) or list of ndarray of shape (height, width)
            Images at ``pixel_size`` Å/px (or at the training sampling when it is None).

        Returns
        -------
        proba : ndarray of shape (n_images, n_classes, height, width), float32, or list of \\
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
        masks = check_masks(y, images)
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
        return write_model(self, path)

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
        stored = read_model(path, cls._get_param_names())
        est = cls(**stored.params)
        try:
            est._check_all_params()
            pixel_size_ = check_pixel_size(stored.pixel_size, "pixel_size_",
                                           *PIXEL_SIZE_RANGE, allow_none=True)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{stored.path!r}: invalid stored parameters: {exc}") from exc
        check_params({"device": device}, _PARAMETER_CONSTRAINTS)
        dev = _resolve_device(device)
        params = est.get_params(deep=False)
        with torch.random.fork_rng(devices=[]):
            net = make_net(params, len(stored.classes), network_kwargs(params), device=dev)
            net.initialize()
        load_weights(net.module_, stored.tensors, stored.path)
        est.net_ = net
        est.classes_ = stored.classes
        est.n_classes_ = len(stored.classes)
        est.pixel_size_ = pixel_size_
        est.device_ = str(dev)
        return est
