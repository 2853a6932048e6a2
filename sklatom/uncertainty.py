"""Uncertainty a user can act on: per-atom existence probability and position sigma, a
per-image out-of-distribution score, and where to label next.

:class:`~sklatom.finder.AtomFinder` with ``uncertainty=True`` runs the segmenter as a small
ensemble, the eight flips and rotations of each image (test-time augmentation,
:meth:`FCNSegmenter.predict_proba_ensemble
<sklatom.segmentation.FCNSegmenter.predict_proba_ensemble>`), finds the atoms on the
members' mean maps and asks every member about each atom (:mod:`sklatom._atomspread`). A
:class:`Calibration`, fitted for each shipped model by ``scripts/calibrate_uncertainty.py`` on
held-out simulated images and stored beside the model as ``<model>.calibration.json``, turns
these features into

* ``existence`` per atom: the probability that a true atom lies within 0.5 Å
  (:data:`sklatom.metrics.TOLERANCE`) of the reported one;
* ``class_probability`` per atom: the share of its class in the foreground of its blob;
* ``sigma_A`` per atom: the standard deviation (Å, per axis) of its position error;
* ``ood_score`` per image: how unlike held-out simulated images of crystalline specimens the
  image is, the larger of a Mahalanobis distance (of statistics of the ensemble's output
  and of the network's pooled bottleneck features, in units of its 99th percentile on such
  images) and a score that exceeds 1 where the network recognises fewer than about one
  atom per nm²; above :data:`OOD_THRESHOLD` = 1 an
  :class:`~sklatom.exceptions.OutOfDistributionWarning` is raised.

:func:`rank_for_labelling` ranks images, or square regions of them, by the expected number of
wrong atom decisions, so a user labels those that teach the model most. See
:doc:`/uncertainty` for the measured numbers.
"""

import hashlib
import json
import os
import warnings
from dataclasses import dataclass

import numpy as np

from ._atomspread import atom_spread
from .exceptions import OutOfDistributionWarning

__all__ = ["Calibration", "ImageUncertainty", "load_calibration", "calibration_path",
           "rank_for_labelling", "atom_features", "ood_vector", "atom_density",
           "weights_fingerprint", "FEATURES", "CONFIDENT",
           "OOD_THRESHOLD", "N_TRANSFORMS", "OutOfDistributionWarning"]

#: Members of the ensemble: the eight elements of the dihedral group of the square.
N_TRANSFORMS = 8
#: Images with an ``ood_score`` above this are unlike the images the calibration was made on
#: (1 = the 99th percentile of held-out atom-containing simulated images).
OOD_THRESHOLD = 1.0
#: Version of the calibration file format.
CALIBRATION_FORMAT = 1


# --------------------------------------------------------------------------------------------
# the raw ensemble features of one image
# --------------------------------------------------------------------------------------------
@dataclass(eq=False)
class _RawImage:
    """Uncalibrated ensemble output of one image (what the calibration script collects)."""

    coords: np.ndarray        # (k, 3) atoms of the mean maps
    confidence: np.ndarray    # (k,) peak foreground probability of the mean maps
    spread: object            # AtomSpread
    features: np.ndarray      # (channels,) pooled bottleneck features of member 0 (or None)
    fg_std: np.ndarray        # (height, width) float32: std of the members' foreground


def _raw_ensemble(segmenter, peaks, images, n_transforms=N_TRANSFORMS):
    """Ensemble maps, atoms and per-atom features of each image (segmenter's pixel size set
    by the caller; ``peaks`` a checked :class:`~sklatom.peaks.PeakFinder`)."""
    from .peaks import _find_peaks_checked

    items = segmenter._ensemble_items(images, n_transforms, features=True)
    out = []
    for image, (members, features) in zip(images, items):
        mean = members.mean(axis=0)
        args = peaks._map_args(mean.shape[0])
        coords, confidence, labels = _find_peaks_checked(mean, image, *args,
                                                         return_labels=True)
        spread = atom_spread(members, mean, coords, labels, args[0])
        fg_std = members[:, 0].std(axis=0)  # the foreground is 1 - P[0]: same spread
        out.append(_RawImage(coords, confidence, spread, features, fg_std))
    return out


def weights_fingerprint(segmenter):
    """SHA-256 (hex) of a fitted segmenter's network weights: ties a calibration to the model
    it was made for (the same for the segmenter and its saved file)."""
    h = hashlib.sha256()
    for name, tensor in sorted(segmenter.net_.module_.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# the calibration: features -> existence, sigma, ood score
# --------------------------------------------------------------------------------------------
#: Per-atom features of the existence probability and the position sigma, by name.
FEATURES = ("logit_confidence", "found", "peak_std", "log_position_std_A", "log_area_A2",
            "log_ood_score", "log_pixel_size")


def atom_features(raw, pixel_size, ood_score):
    """The :data:`FEATURES` of each atom of one image: ndarray of shape (k, len(FEATURES)).

    Parameters
    ----------
    raw : _RawImage
        The image's ensemble output.
    pixel_size : float
        Å/px of the image (the members' positions and blob areas are in its pixels).
    ood_score : float
        The image's out-of-distribution score (NaN for an image without usable structure:
        it has no atoms).
    """
    s = raw.spread
    conf = np.clip(raw.confidence, 1e-4, 1 - 1e-4)
    k = len(conf)
    ood = ood_score if np.isfinite(ood_score) else 1.0
    return np.column_stack([
        np.log(conf / (1 - conf)),
        s.found,
        s.peak_std,
        np.log(s.position_std * pixel_size + 0.005),
        np.log(np.maximum(s.area, 1) * pixel_size ** 2),
        np.full(k, np.log(max(ood, 1e-3))),
        np.full(k, np.log(pixel_size)),
    ]).reshape(k, len(FEATURES))


#: Confident atoms (peak foreground probability of the mean maps above this) count for
#: the atom density of the out-of-distribution score.
CONFIDENT = 0.9


def ood_vector(raw, feature_mean, feature_components):
    """The vector the out-of-distribution score measures, for one image.

    Three statistics of the ensemble's output, which tell whether the network recognises
    atoms: log10 of the fraction of the image covered by atom blobs, log10 of the mean
    spread of the members' foreground, and the fraction of atoms with a peak foreground below
    :data:`CONFIDENT`; then the projections of the log pooled bottleneck features (mean and
    std of each channel) on their principal axes (what the network's features look like).
    ndarray of shape (3 + q,); None for an image without usable structure.
    """
    if raw.features is None:
        return None
    h, w = raw.fg_std.shape
    coverage = raw.spread.area.sum() / (h * w)
    low = float(np.mean(raw.confidence < CONFIDENT)) if len(raw.confidence) else 1.0
    stats = [np.log10(coverage + 1e-4), np.log10(float(raw.fg_std.mean()) + 1e-4), low]
    f = np.log(np.asarray(raw.features) + 1e-3) - np.asarray(feature_mean)
    return np.concatenate([stats, np.asarray(feature_components) @ f])


def atom_density(raw, pixel_size):
    """Atoms with a peak foreground above :data:`CONFIDENT` per nm² of the image."""
    h, w = raw.fg_std.shape
    return float(np.sum(raw.confidence > CONFIDENT)) / (h * w * pixel_size ** 2 / 100.0)


def _ood_parts(ood, raw, pixel_size):
    """``(score, distance part, atom-density part)`` of one image (NaN when unusable)."""
    v = ood_vector(raw, ood["feature_mean"], ood["feature_components"])
    if v is None:
        return float("nan"), float("nan"), float("nan")
    x = v - np.asarray(ood["mean"])
    distance = float(np.sqrt(max(x @ np.asarray(ood["precision"]) @ x, 0.0) / len(x))
                     / ood["scale"])
    d0 = float(ood["min_atom_density"])
    atoms = d0 / (atom_density(raw, pixel_size) + 0.1 * d0)
    return max(distance, atoms), distance, atoms


@dataclass(eq=False)
class Calibration:
    """What turns the ensemble's raw features into calibrated uncertainties; one per model.

    Made by ``scripts/calibrate_uncertainty.py`` and stored as JSON beside the model
    (:func:`calibration_path`); read with :func:`load_calibration`.

    Attributes
    ----------
    model_fingerprint : str
        :func:`weights_fingerprint` of the model it was made for.
    n_transforms : int
        Members of the ensemble it was made with.
    existence : dict
        Logistic regression on :data:`FEATURES`: ``{"coef": [...], "intercept": float}``.
    sigma : dict
        ``log(sigma_A ** 2) = coef . features + intercept`` on :data:`FEATURES`.
    ood : dict
        The reference of the out-of-distribution score (:func:`ood_vector`):
        ``feature_mean`` (2 channels,) and ``feature_components`` (q, 2 channels) of the
        principal axes of the log pooled bottleneck features, ``mean`` (3 + q,) and
        ``precision`` (3 + q, 3 + q) of the Gaussian of the vectors, ``scale``: the distance
        that is a score of 1, and ``min_atom_density``: confident atoms per nm² below which
        an image shows no crystal the model recognises.
    metrics : dict
        What the calibration script measured on held-out images (for the model card).
    """

    model_fingerprint: str
    n_transforms: int
    existence: dict
    sigma: dict
    ood: dict
    metrics: dict

    def ood_score(self, raw, pixel_size):
        """Out-of-distribution score of one image's ensemble output (see
        :class:`ImageUncertainty`); NaN for an image without usable structure."""
        return _ood_parts(self.ood, raw, pixel_size)[0]

    def existence_probability(self, features):
        """Existence probability of atoms with :func:`atom_features` ``features`` (k, f)."""
        e = self.existence
        z = features @ np.asarray(e["coef"]) + e["intercept"]
        return 1.0 / (1.0 + np.exp(-z))

    def sigma_A(self, features):
        """Position sigma (Å, per axis) of atoms with :func:`atom_features` ``features``."""
        s = self.sigma
        return np.exp(0.5 * (features @ np.asarray(s["coef"]) + s["intercept"]))

    def to_json(self):
        """The calibration as a JSON document (str)."""
        return json.dumps({"format": CALIBRATION_FORMAT, "features": list(FEATURES),
                           "model_fingerprint": self.model_fingerprint,
                           "n_transforms": self.n_transforms, "existence": self.existence,
                           "sigma": self.sigma, "ood": self.ood, "metrics": self.metrics},
                          indent=1)


def calibration_path(model_file):
    """Where the calibration of a ``.safetensors`` model file lives:
    ``<stem>.calibration.json`` in the same folder."""
    stem, _ = os.path.splitext(os.fspath(model_file))
    return stem + ".calibration.json"


def _model_file(model):
    """The ``.safetensors`` file of a pretrained name or a path (None for anything else)."""
    from .pretrained import PRETRAINED, _pretrained_file

    if isinstance(model, str) and model in PRETRAINED:
        return str(_pretrained_file(model))
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    return None


def load_calibration(path, segmenter=None):
    """Read a calibration file and check it (plain JSON: no code is executed).

    Parameters
    ----------
    path : str or path-like
        A ``.calibration.json`` file written by ``scripts/calibrate_uncertainty.py``.
    segmenter : FCNSegmenter, default=None
        If given, the calibration must have been made for its weights.

    Returns
    -------
    calibration : Calibration

    Raises
    ------
    FileNotFoundError
        If the file does not exist (the model has no calibration).
    ValueError
        If the file is not valid JSON, misses or mangles a field, or was made for another
        model.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"no uncertainty calibration at {path}: this model has none. Make one with "
            f"python scripts/calibrate_uncertainty.py --model <model file> (it simulates "
            f"held-out images and writes this file); without it, use uncertainty=False")
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a valid calibration file (not JSON: {exc}); "
                         "rerun scripts/calibrate_uncertainty.py") from None
    try:
        if doc["format"] != CALIBRATION_FORMAT:
            raise ValueError(f"format {doc['format']!r}, expected {CALIBRATION_FORMAT}")
        if list(doc["features"]) != list(FEATURES):
            raise ValueError(f"features {doc['features']!r}, expected {list(FEATURES)}")
        cal = Calibration(str(doc["model_fingerprint"]), int(doc["n_transforms"]),
                          dict(doc["existence"]), dict(doc["sigma"]), dict(doc["ood"]),
                          dict(doc.get("metrics", {})))
        n = len(FEATURES)
        for name in ("existence", "sigma"):
            part = getattr(cal, name)
            if np.shape(part["coef"]) != (n,) or not np.isfinite(part["intercept"]):
                raise ValueError(f"{name} needs {n} coefficients and an intercept")
        o = cal.ood
        q, c = np.shape(o["feature_components"])
        if (np.shape(o["feature_mean"]) != (c,) or np.shape(o["mean"]) != (3 + q,)
                or np.shape(o["precision"]) != (3 + q, 3 + q) or not float(o["scale"]) > 0
                or not float(o["min_atom_density"]) > 0):
            raise ValueError("ood needs feature_mean (c,), feature_components (q, c), mean "
                             "(3 + q,), precision (3 + q, 3 + q), scale > 0 and "
                             "min_atom_density > 0")
    except (KeyError, TypeError, ValueError) as exc:
        what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ValueError(f"{path} is not a valid calibration file ({what}); rerun "
                         "scripts/calibrate_uncertainty.py") from None
    if segmenter is not None and cal.model_fingerprint != weights_fingerprint(segmenter):
        raise ValueError(
            f"{path} was made for another model (its weights differ from this one's); "
            f"rerun python scripts/calibrate_uncertainty.py for this model")
    return cal


# --------------------------------------------------------------------------------------------
# calibrated output of AtomFinder(uncertainty=True)
# --------------------------------------------------------------------------------------------
@dataclass(eq=False)
class ImageUncertainty:
    """The uncertainty of one image as a whole (``ImageAnalysis.uncertainty``).

    Attributes
    ----------
    ood_score : float
        Out-of-distribution score, the larger of ``ood_distance`` and ``ood_atoms`` (NaN
        for an image without usable structure).
    out_of_distribution : bool
        ``ood_score > OOD_THRESHOLD``: its atoms and their probabilities are not to be
        trusted (an :class:`~sklatom.exceptions.OutOfDistributionWarning` was raised).
    ood_distance : float
        Mahalanobis distance of the image's :func:`ood_vector` from those of held-out
        simulated images of crystalline specimens, in units of its 99th percentile there.
    ood_atoms : float
        ``d0 / (density + d0 / 10)`` of the density of confident atoms per nm²
        (:func:`atom_density`), with ``d0`` the calibration's ``min_atom_density``: above
        1 where the network recognises fewer than about ``d0`` atoms per nm² (no crystal it
        knows: vacuum, noise, amorphous material, isolated atoms).
    spread : ndarray of shape (height, width), float32
        Standard deviation of the members' foreground probability ``1 - P[0]`` per pixel.
    n_transforms : int
        Members of the ensemble.
    """

    ood_score: float
    out_of_distribution: bool
    ood_distance: float
    ood_atoms: float
    spread: np.ndarray
    n_transforms: int


def _calibrated(calibration, segmenter, peaks, images, pixel_size):
    """AtomFinder's uncertainty path: per image ``(coords, confidence, (columns,
    ImageUncertainty))`` with the columns ``existence``, ``class_probability``, ``sigma_A``."""
    raws = _raw_ensemble(segmenter, peaks, images, calibration.n_transforms)
    out = []
    for i, raw in enumerate(raws):
        score, distance, atoms = _ood_parts(calibration.ood, raw, pixel_size)
        ood = bool(score > OOD_THRESHOLD)
        if ood:
            warnings.warn(
                f"X[{i}]: out-of-distribution score {score:.2f} > {OOD_THRESHOLD:g}: the "
                "image is unlike the images the model's uncertainty was calibrated on; its "
                "atoms and their existence probabilities are not to be trusted",
                OutOfDistributionWarning, stacklevel=4)
        f = atom_features(raw, pixel_size, score)
        columns = {"existence": calibration.existence_probability(f),
                   "class_probability": raw.spread.class_probability,
                   "sigma_A": calibration.sigma_A(f)}
        out.append((raw.coords, raw.confidence,
                    (columns, ImageUncertainty(score, ood, distance, atoms, raw.fg_std,
                                               calibration.n_transforms))))
    return out


# --------------------------------------------------------------------------------------------
# where to label next
# --------------------------------------------------------------------------------------------
def rank_for_labelling(analyses, region_size=None):
    """Rank images, or square regions of them, by how much labelling them would teach.

    The score of a region is the expected number of wrong decisions among its atoms when
    those with an existence probability ``p >= 0.5`` are kept: ``sum(min(p, 1 - p))``, per
    nm² of the region (so that large and small regions compare). Atoms the ensemble is sure
    of count nothing; atoms of an out-of-distribution image, whose existence probabilities
    the calibration lowers, count a lot. Ties (e.g. regions without atoms) are broken by the
    mean spread of the ensemble's foreground probability.

    Parameters
    ----------
    analyses : list of ImageAnalysis
        The results of :meth:`AtomFinder.analyse <sklatom.finder.AtomFinder.analyse>` with
        ``uncertainty=True``, one per image.
    region_size : int or None, default=None
        Side of the square regions in px of each image (the last row and column of regions
        may be smaller); None ranks whole images.

    Returns
    -------
    ranking : pandas.DataFrame
        One row per image or region, most worth labelling first: ``image`` (index into
        ``analyses``), ``row_start``, ``row_stop``, ``col_start``, ``col_stop`` (px,
        stop exclusive), ``n_atoms``, ``uncertain_atoms`` (existence between 0.2 and 0.8),
        ``expected_errors``, ``expected_errors_per_nm2``, ``mean_spread`` and
        ``ood_score`` (of the whole image).

    Examples
    --------
    >>> from sklatom import AtomFinder
    >>> from sklatom.datasets import make_lattice_images
    >>> X, _, _ = make_lattice_images(2, "graphene", shape=(96, 96), random_state=0)
    >>> analyses = AtomFinder(uncertainty=True).fit().analyse(X)
    >>> ranking = rank_for_labelling(analyses, region_size=48)
    >>> len(ranking), list(ranking.columns[:5])
    (8, ['image', 'row_start', 'row_stop', 'col_start', 'col_stop'])
    """
    import numbers

    import pandas as pd

    if region_size is not None and (isinstance(region_size, bool) or not isinstance(
            region_size, numbers.Integral) or region_size < 1):
        raise ValueError(f"region_size must be None or a positive number of pixels; got "
                         f"{region_size!r}")
    rows = []
    for i, a in enumerate(analyses):
        u = getattr(a, "uncertainty", None)
        if u is None or "existence" not in a.atoms:
            raise ValueError(f"analyses[{i}] has no uncertainty: analyse the images with "
                             "AtomFinder(uncertainty=True)")
        h, w = u.spread.shape
        size_r, size_c = (h, w) if region_size is None else (region_size, region_size)
        p = a.atoms["existence"].to_numpy()
        r = np.clip(np.floor(a.coords[:, 0] + 0.5).astype(int), 0, h - 1)
        c = np.clip(np.floor(a.coords[:, 1] + 0.5).astype(int), 0, w - 1)
        for r0 in range(0, h, size_r):
            for c0 in range(0, w, size_c):
                r1, c1 = min(r0 + size_r, h), min(c0 + size_c, w)
                inside = (r >= r0) & (r < r1) & (c >= c0) & (c < c1)
                q = p[inside]
                errors = float(np.minimum(q, 1 - q).sum())
                area_nm2 = (r1 - r0) * (c1 - c0) * a.pixel_size ** 2 / 100.0
                rows.append(dict(image=i, row_start=r0, row_stop=r1, col_start=c0,
                                 col_stop=c1, n_atoms=int(inside.sum()),
                                 uncertain_atoms=int(np.sum((q > 0.2) & (q < 0.8))),
                                 expected_errors=errors,
                                 expected_errors_per_nm2=errors / area_nm2,
                                 mean_spread=float(u.spread[r0:r1, c0:c1].mean()),
                                 ood_score=u.ood_score))
    table = pd.DataFrame(rows, columns=["image", "row_start", "row_stop", "col_start",
                                        "col_stop", "n_atoms", "uncertain_atoms",
                                        "expected_errors", "expected_errors_per_nm2",
                                        "mean_spread", "ood_score"])
    return table.sort_values(["expected_errors_per_nm2", "mean_spread"], ascending=False,
                             kind="stable").reset_index(drop=True)
