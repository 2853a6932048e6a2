"""The whole analysis of an image in one object: image and pixel size in, atoms table out.

:class:`AtomFinder` composes a segmenter (the pretrained model by default), its pixel-size
policy (images are rescaled to the model's sampling), :class:`~sklatom.peaks.PeakFinder` with
classes checked against column intensities, the warnings about what an image cannot show
(:mod:`sklatom.quality`) and, on request, the defects of the atom graph
(:class:`~sklatom.graphs.GraphDefectClassifier`). The command line, the demo and the
real-image benchmark call it instead of composing the steps themselves.
"""

import os
from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator

from ._validation import check_image_batch

__all__ = ["AtomFinder", "ImageAnalysis", "load_model", "atom_table", "image_defects"]


@dataclass(eq=False)
class ImageAnalysis:
    """What :meth:`AtomFinder.analyse` found in one image.

    Attributes
    ----------
    coords : ndarray of shape (k, 3)
        Row, col (px of the input image) and class index of each atom.
    confidence : ndarray of shape (k,)
        Peak foreground probability of each atom.
    atoms : pandas.DataFrame
        One row per atom: ``row``, ``col``, ``class``, ``class_name``, ``species`` (with
        ``species=``), ``x_A``, ``y_A``, ``confidence`` and ``defect`` (with ``defects=True``:
        ``"lattice"`` or the name of the defect the atom belongs to).
    defects : pandas.DataFrame or None
        One row per defect (``name``, ``row``, ``col``, ``n_atoms``, ``x_A``, ``y_A``); None
        without ``defects=True``.
    classifier : GraphDefectClassifier or None
        The classifier fitted on this image's atoms (None without defects, or with fewer than
        3 atoms).
    pixel_size : float
        Pixel size in Å/px the image was analysed at.
    uncertainty : ImageUncertainty or None
        With ``uncertainty=True``: the image's out-of-distribution score and the ensemble's
        spread map (:class:`sklatom.uncertainty.ImageUncertainty`); the atoms table then also
        has the columns ``existence``, ``class_probability`` and ``sigma_A``. None otherwise.
    """

    coords: np.ndarray
    confidence: np.ndarray
    atoms: object
    defects: object
    classifier: object
    pixel_size: float
    uncertainty: object = None

    @property
    def labels(self):
        """Per-atom defect labels, ndarray of shape (k,) (None without defects)."""
        return None if "defect" not in self.atoms else self.atoms["defect"].to_numpy()


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
    species : sequence of str or None, default=None
        Names of the model's atom classes, in order (e.g. ``("C", "Si")`` for the general
        model's ``light`` and ``heavy`` on Si-doped graphene): :meth:`analyse` adds a
        ``species`` column and names defects by them. None: the class names.
    defects : bool, default=False
        Whether :meth:`analyse` also classifies the defects of each image's atom graph.
    uncertainty : bool, default=False
        Run the segmenter as an ensemble of the 8 flips and rotations of each image (8 times
        the time of one prediction) and report per atom its existence probability, class
        probability and position sigma, and per image an out-of-distribution score
        (:mod:`sklatom.uncertainty`); the atoms are then those of the members' mean maps.
        Needs a calibration of the model (see ``calibration``). False: one prediction per
        image, exactly as before.
    calibration : "auto", path-like or Calibration, default="auto"
        The uncertainty calibration (used with ``uncertainty=True``). "auto": the file
        beside the model (:func:`sklatom.uncertainty.calibration_path`; a model given as a
        fitted segmenter has none, so pass its file). It must have been made for the
        model's weights.
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
    calibration_ : Calibration or None
        The uncertainty calibration (None without ``uncertainty``).

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
                 classes_from_contrast="auto", species=None, defects=False,
                 uncertainty=False, calibration="auto", device="auto", n_jobs=None):
        self.model = model
        self.pixel_size = pixel_size
        self.threshold = threshold
        self.classes_from_contrast = classes_from_contrast
        self.species = species
        self.defects = defects
        self.uncertainty = uncertainty
        self.calibration = calibration
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
        if self.species is not None:
            if isinstance(self.species, str) or len(self.species) != len(self.classes_) - 1:
                raise ValueError(
                    f"species={self.species!r} must name each of the model's "
                    f"{len(self.classes_) - 1} atom classes {self.classes_[1:]} in order, "
                    f"e.g. {tuple(f'X{i}' for i in range(1, len(self.classes_)))}")
        if not isinstance(self.defects, (bool, np.bool_)):
            raise ValueError(f"defects must be True or False; got {self.defects!r}")
        if not isinstance(self.uncertainty, (bool, np.bool_)):
            raise ValueError(f"uncertainty must be True or False; got {self.uncertainty!r}")
        self.calibration_ = self._load_calibration() if self.uncertainty else None
        return self

    def _load_calibration(self):
        from .uncertainty import Calibration, calibration_path, load_calibration, _model_file

        cal = self.calibration
        if isinstance(cal, Calibration):
            return cal
        if isinstance(cal, str) and cal == "auto":
            model_file = _model_file(self.model)
            if model_file is None:
                raise ValueError(
                    "uncertainty=True with a model given as a fitted segmenter needs "
                    "calibration= (the .calibration.json made for it); 'auto' finds the file "
                    "beside a model given by name or path")
            cal = calibration_path(model_file)
        if not isinstance(cal, (str, os.PathLike)):
            raise TypeError(f"calibration must be 'auto', a path to a .calibration.json file "
                            f"or a Calibration; got {type(cal).__name__}")
        return load_calibration(cal, self.segmenter_)

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
            Peak foreground probability of each atom (of the ensemble's mean maps with
            ``uncertainty=True``).
        """
        found = self._run(check_image_batch(X, "X"), pixel_size)
        return [f[0] for f in found], [f[1] for f in found]

    def _run(self, images, pixel_size):
        """Per image ``(coords, confidence, uncertainty)``: the last is None without
        ``uncertainty``, else ``(per-atom columns dict, ImageUncertainty)``."""
        self._fitted()
        ps = self.pixel_size if pixel_size is None else pixel_size
        seg = self.segmenter_
        previous = seg.get_params()["pixel_size"], seg.get_params()["n_jobs"]
        seg.set_params(pixel_size=ps, n_jobs=self.n_jobs)
        try:
            if self.uncertainty:
                from .uncertainty import _calibrated

                return _calibrated(self.calibration_, seg, self.peaks_, images,
                                   self._pixel_size(pixel_size))
            maps = seg.transform(images)
        finally:
            seg.set_params(pixel_size=previous[0], n_jobs=previous[1])
        coords, conf = self.peaks_.transform(maps, images=images, return_confidence=True)
        return [(c, p, None) for c, p in zip(coords, conf)]

    def transform(self, X):
        """Atoms of each image: a list of (k_i, 3) arrays (row, col, class)."""
        return self.find(X)[0]

    def tables(self, X, pixel_size=None):
        """The atoms of each image as a :class:`pandas.DataFrame`.

        Columns: ``row``, ``col`` (px), ``class`` (index), ``class_name``, ``x_A``, ``y_A``
        (Å, when the pixel size is known) and ``confidence``; with ``uncertainty=True`` also
        ``existence``, ``class_probability`` and ``sigma_A``.
        """
        self._fitted()
        found = self._run(check_image_batch(X, "X"), pixel_size)
        ps = self._pixel_size(pixel_size)
        return [atom_table(c, p, self.classes_, ps, extra=u and u[0]) for c, p, u in found]

    def _pixel_size(self, pixel_size):
        ps = self.pixel_size if pixel_size is None else pixel_size
        return self.segmenter_.pixel_size_ if ps is None else ps

    def analyse(self, X, pixel_size=None):
        """Atoms, their table and (with ``defects=True``) the defects of each image.

        Parameters
        ----------
        X : ndarray of shape (n_images, height, width) or list of ndarray
            Raw images (any real dtype).
        pixel_size : float or None, default=None
            Pixel size in Å/px of these images; None uses the ``pixel_size`` parameter (or
            the model's own sampling).

        Returns
        -------
        results : list of ImageAnalysis
            One per image (with ``uncertainty=True`` its ``uncertainty`` holds the
            out-of-distribution score; above :data:`sklatom.uncertainty.OOD_THRESHOLD` an
            :class:`~sklatom.exceptions.OutOfDistributionWarning` is raised).
        """
        self._fitted()
        images = check_image_batch(X, "X")
        found = self._run(images, pixel_size)
        ps = self._pixel_size(pixel_size)
        results = []
        for image, (c, p, u) in zip(images, found):
            labels = defects = clf = None
            if self.defects:
                labels, defects, clf = image_defects(c, self._graph_species(), ps, image.shape)
            atoms = atom_table(c, p, self.classes_, ps, labels, extra=u and u[0])
            if self.species is not None:
                names = dict(zip(self.classes_[1:], self.species))
                atoms.insert(4, "species", [names.get(n, n) for n in atoms["class_name"]])
            results.append(ImageAnalysis(coords=c, confidence=p, atoms=atoms, defects=defects,
                                         classifier=clf, pixel_size=ps,
                                         uncertainty=u and u[1]))
        return results

    def _graph_species(self):
        """The names GraphDefectClassifier gets: the given species, else the model's classes."""
        return ["background", *self.species] if self.species is not None else self.classes_


def image_defects(coords, species, pixel_size, shape):
    """Per-atom defect labels, the table of defects and the classifier of one image's atoms.

    Parameters
    ----------
    coords : ndarray of shape (k, 3)
        Row, col (px) and class index of the atoms.
    species : list of str
        Class names, background first (see :class:`~sklatom.graphs.GraphDefectClassifier`).
    pixel_size : float
        Å/px.
    shape : tuple of int
        (height, width) of the image in px.

    Returns
    -------
    labels : ndarray of shape (k,), dtype object
        ``"lattice"`` or the defect name of each atom.
    defects : pandas.DataFrame
        ``name``, ``row``, ``col`` (px), ``n_atoms``, ``x_A``, ``y_A`` of each defect.
    classifier : GraphDefectClassifier or None
        Fitted on these atoms; None when there are fewer than 3 (no graph to classify).
    """
    import pandas as pd

    from .graphs import GraphDefectClassifier

    columns = ["name", "row", "col", "n_atoms"]
    if len(coords) < 3:
        labels, table, clf = np.full(len(coords), "lattice", dtype=object), None, None
    else:
        clf = GraphDefectClassifier(species=species, pixel_size=pixel_size, image_shape=shape)
        clf.fit([coords])
        labels = clf.predict([coords])[0]
        table = clf.find_defects([coords])
    out = table[columns].copy() if table is not None else pd.DataFrame(columns=columns)
    out["row"] = out["row"].astype(float).round(3)
    out["col"] = out["col"].astype(float).round(3)
    out["x_A"] = (out["col"] * pixel_size).round(4)
    out["y_A"] = (out["row"] * pixel_size).round(4)
    return labels, out.reset_index(drop=True), clf


def atom_table(coords, confidence, classes, pixel_size=None, labels=None, extra=None):
    """One image's atoms as a DataFrame (see :meth:`AtomFinder.tables`); ``labels`` adds a
    ``defect`` column, ``extra`` (a dict of per-atom arrays) a column per key after
    ``confidence``."""
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
    for name, values in (extra or {}).items():
        table[name] = np.round(np.asarray(values, dtype=np.float64), 4)
    if labels is not None:
        table["defect"] = list(labels)
    return pd.DataFrame(table)
