"""The whole analysis of an image in one object: image and pixel size in, atoms table out.

:class:`AtomFinder` composes a segmenter (the pretrained model by default), its pixel-size
policy (images are rescaled to the model's sampling), :class:`~sklatom.peaks.PeakFinder` with
classes checked against column intensities, and the warnings about what an image cannot show
(:mod:`sklatom.quality`). The command line, the demo and the real-image benchmark call it
instead of composing the steps themselves.
"""

import numpy as np
from sklearn.base import BaseEstimator

from ._validation import check_image_batch

__all__ = ["AtomFinder", "load_model"]


def load_model(model, device="auto"):
    """A fitted :class:`~sklatom.segmentation.FCNSegmenter` from a name, a path or itself.

    Parameters
    ----------
    model : str, path-like or FCNSegmenter
        A pretrained model name (:data:`sklatom.pretrained.PRETRAINED`), a ``.safetensors``
        file written by :meth:`FCNSegmenter.save`, or a fitted segmenter (returned as is).
    device : str, default="auto"
        Torch device for a model that is loaded.

    Returns
    -------
    segmenter : FCNSegmenter
    """
    from .pretrained import _load_model
    from .segmentation import FCNSegmenter

    if isinstance(model, FCNSegmenter):
        return model
    return _load_model(model, "model", device=device)


class AtomFinder(BaseEstimator):
    """Find the atoms of images: segmenter, pixel-size policy and peak finding in one object.

    Parameters
    ----------
    model : str, path-like or FCNSegmenter, default="general"
        The segmenter (see :func:`load_model`).
    pixel_size : float or None, default=None
        Pixel size of the images in Å/px (0.05 to 0.5); they are rescaled to the model's
        training sampling. None: the model's own sampling is assumed. :meth:`find` takes a
        pixel size per call too.
    threshold : float, default=0.5
        Foreground probability threshold of :class:`~sklatom.peaks.PeakFinder`.
    classes_from_contrast : "auto", tuple of int or None, default="auto"
        Correct classes that contradict the column intensities
        (:func:`sklatom.peaks.contrast_classes`). "auto": for models whose classes include
        "light" and "heavy" (the pretrained general model), those two; a tuple
        ``(lighter, heavier)`` of class indices; None: the segmenter's classes.
    device : str, default="auto"
        Torch device of a model that is loaded.
    n_jobs : int or None, default=None
        Images segmented in parallel threads.

    Attributes
    ----------
    segmenter_ : FCNSegmenter
        The fitted segmenter.
    classes_ : list of str
        Its class names (index = class column of the coordinates).

    Examples
    --------
    >>> from sklatom.datasets import make_lattice_images
    >>> X, _, _ = make_lattice_images(1, "MoS2", shape=(96, 96), random_state=0)
    >>> finder = AtomFinder().fit()
    >>> table = finder.tables(X)[0]
    >>> list(table.columns)
    ['row', 'col', 'class', 'class_name', 'x_A', 'y_A', 'confidence']
    >>> sorted(set(table["class_name"]))
    ['heavy', 'light']
    """

    def __init__(self, model="general", *, pixel_size=None, threshold=0.5,
                 classes_from_contrast="auto", device="auto", n_jobs=None):
        self.model = model
        self.pixel_size = pixel_size
        self.threshold = threshold
        self.classes_from_contrast = classes_from_contrast
        self.device = device
        self.n_jobs = n_jobs

    def fit(self, X=None, y=None):
        """Load the model and check the settings; nothing is learned. Returns self."""
        from .peaks import PeakFinder

        self.segmenter_ = load_model(self.model, self.device)
        self.classes_ = list(self.segmenter_.classes_)
        contrast = self.classes_from_contrast
        if isinstance(contrast, str):
            if contrast != "auto":
                raise ValueError(f"classes_from_contrast must be 'auto', (lighter, heavier) or "
                                 f"None; got {contrast!r}")
            names = self.classes_
            contrast = (names.index("light"), names.index("heavy")) \
                if {"light", "heavy"} <= set(names) else None
        self.peaks_ = PeakFinder(threshold=self.threshold, classes_from_contrast=contrast)
        self.peaks_._check_all_params()
        if self.pixel_size is not None:
            from .segmentation import check_sampling

            check_sampling(self.pixel_size, "pixel_size")
        return self

    def _fitted(self):
        if not hasattr(self, "segmenter_"):
            self.fit()
        return self

    def find(self, X, pixel_size=None):
        """Atoms of each image and their confidence.

        Parameters
        ----------
        X : ndarray of shape (n_images, height, width) or list of ndarray
            Raw images (any real dtype).
        pixel_size : float or None, default=None
            Pixel size in Å/px of these images; None uses the ``pixel_size`` parameter.

        Returns
        -------
        coords : list of ndarray of shape (k_i, 3)
            Row, col (px of the input image) and class index (into ``classes_``).
        confidence : list of ndarray of shape (k_i,)
            Peak foreground probability of each atom.
        """
        self._fitted()
        images = check_image_batch(X, "X")
        ps = self.pixel_size if pixel_size is None else pixel_size
        seg = self.segmenter_
        previous = seg.get_params()["pixel_size"], seg.get_params()["n_jobs"]
        seg.set_params(pixel_size=ps, n_jobs=self.n_jobs)
        try:
            maps = seg.transform(images)
        finally:
            seg.set_params(pixel_size=previous[0], n_jobs=previous[1])
        return self.peaks_.transform(maps, images=images, return_confidence=True)

    def transform(self, X):
        """Atoms of each image: a list of (k_i, 3) arrays (row, col, class)."""
        return self.find(X)[0]

    def tables(self, X, pixel_size=None):
        """The atoms of each image as a :class:`pandas.DataFrame`.

        Columns: ``row``, ``col`` (px), ``class`` (index), ``class_name``, ``x_A``, ``y_A``
        (Å, when the pixel size is known) and ``confidence``.
        """
        coords, confidence = self.find(X, pixel_size)
        ps = self.pixel_size if pixel_size is None else pixel_size
        if ps is None:
            ps = self.segmenter_.pixel_size_
        return [atom_table(c, p, self.classes_, ps) for c, p in zip(coords, confidence)]


def atom_table(coords, confidence, classes, pixel_size=None, labels=None):
    """One image's atoms as a DataFrame (see :meth:`AtomFinder.tables`); ``labels`` adds a
    ``defect`` column."""
    import pandas as pd

    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 3)
    cls = coords[:, 2].astype(int)
    table = {
        "row": np.round(coords[:, 0], 4),
        "col": np.round(coords[:, 1], 4),
        "class": cls,
        "class_name": [classes[c] if 0 <= c < len(classes) else f"class {c}" for c in cls],
    }
    if pixel_size is not None:
        table["x_A"] = np.round(coords[:, 1] * pixel_size, 4)
        table["y_A"] = np.round(coords[:, 0] * pixel_size, 4)
    table["confidence"] = np.round(np.asarray(confidence, dtype=np.float64), 4)
    if labels is not None:
        table["defect"] = list(labels)
    return pd.DataFrame(table)
