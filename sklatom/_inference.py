"""How a fitted segmenter turns one image into probability maps.

Used by :class:`sklatom.segmentation.FCNSegmenter`: the per-image input normalisation (also
applied to the training images, and saved with every model), the frozen copy of the network
(:func:`~sklatom._unet.inference_copy`, rebuilt when the weights change), the tiling of large
images and the allocator setting that keeps repeated predictions fast.
"""

import itertools
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from skimage.transform import resize

from ._augment import pad_reflect
from ._resample import resample_image, resampled_shape
from ._unet import inference_copy, receptive_field
from ._validation import SklatomWarning
from .quality import ImageQualityWarning, check_image

__all__ = ["NORMALISATION", "normalise", "FrozenNetwork", "Tiling", "TiledPredictor", "dihedral",
           "pool_features"]

#: Per-image input normalisation: ``(image - median) / (p99.5 - p0.5)``; saved with every
#: model and compared on load.
NORMALISATION = {"center": "median", "low_percentile": 0.5, "high_percentile": 99.5}
#: The percentile of each ``NORMALISATION["center"]`` (the normalisation reads it from there).
_CENTER_PERCENTILES = {"median": 50.0}


def _percentiles(x, q):
    """``np.percentile(x, q)`` (linear interpolation) from one partial sort of ``x``."""
    flat = x.ravel()
    pos = np.asarray(q, dtype=np.float64) / 100.0 * (flat.size - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, flat.size - 1)
    part = np.partition(flat, np.unique(np.concatenate([lo, hi])))
    a, b = part[lo].astype(np.float64), part[hi].astype(np.float64)
    return a + (b - a) * (pos - lo)


#: A percentile range below this fraction of the full range is a rounding error, not the
#: image's contrast (see :func:`normalise`).
SPARSE_RANGE = 1e-3


def normalise(image, name="X"):
    """Robust per-image normalisation (:data:`NORMALISATION`); a constant image becomes zeros,
    with a warning (its stacklevel points at the caller of ``fit`` when ``fit`` calls this in
    a list comprehension)."""
    x = np.asarray(image, dtype=np.float32)
    lo, med, hi = _percentiles(
        x, [NORMALISATION["low_percentile"], _CENTER_PERCENTILES[NORMALISATION["center"]],
            NORMALISATION["high_percentile"]]
    )
    scale = float(hi - lo)
    full = float(x.max() - x.min())
    if full == 0.0:
        warnings.warn(
            f"{name} is constant (all pixels {float(med):g}); it is segmented as a blank image",
            SklatomWarning,
            stacklevel=4,
        )
        return np.zeros_like(x)
    if scale < SPARSE_RANGE * full:
        # nearly all one value (a low-dose image of counts, > 99.5 % of it zeros and its
        # percentiles a rounding error apart): the spread of the pixels that differ from
        # the median, unless smaller (a hot pixel over a noisy image)
        events = np.abs(x[x != med] - med)
        scale = max(scale, float(_percentiles(events, [NORMALISATION["high_percentile"]])[0]))
    if not scale > max(1e-6 * abs(float(med)), np.finfo(np.float32).tiny):
        scale = full  # nearly constant: the full range instead
    x = x - np.float32(med)
    x /= np.float32(scale)
    return x


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


def _versions(tensors):
    """In-place modification counters of tensors (they change when the weights change)."""
    return [t._version for t in tensors]


class FrozenNetwork:
    """The network folded for prediction (:func:`~sklatom._unet.inference_copy`) of one
    trained module.

    :meth:`is_current` tells whether the copy still computes what ``module`` computes: a
    copy is stale when the trained module is replaced or any of its tensors is changed in
    place (training, ``load_state_dict``), which bumps the tensors' versions.
    """

    def __init__(self, module):
        _raise_malloc_threshold()
        self.module = module
        self._tensors = list(itertools.chain(module.parameters(), module.buffers()))
        self._versions = _versions(self._tensors)
        self.frozen = inference_copy(module)

    def is_current(self, module):
        return module is self.module and _versions(self._tensors) == self._versions


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


@dataclass(frozen=True)
class Tiling:
    """How images are cut for the network: sizes are padded to a multiple of ``multiple``;
    tiles of ``core + 2 * margin`` px keep their central ``core`` px."""

    multiple: int
    margin: int
    core: int

    @classmethod
    def of(cls, module, tile_size, tile_overlap):
        """The tiling of a :class:`~sklatom._unet.UNet` for the ``tile_size`` and
        ``tile_overlap`` parameters (checked already: integers, or "auto" for the overlap)."""
        multiple = module.size_multiple
        if tile_overlap == "auto":
            half = receptive_field(module.depth, module.dilation, module.space_to_depth)
        else:
            half = -(-int(tile_overlap) // 2)
        margin = -(-half // multiple) * multiple
        tile = int(tile_size) // multiple * multiple
        core = tile - 2 * margin
        if core < multiple:
            raise ValueError(
                f"tile_size={tile_size} is too small for an overlap of {2 * margin} px "
                f"(tile_overlap={tile_overlap!r}); use tile_size >= {2 * margin + multiple}"
            )
        return cls(multiple, margin, core)


def _softmax_(logits):
    """Softmax over axis 1, in place (saves a copy of the largest array of a prediction)."""
    logits -= logits.amax(dim=1, keepdim=True)
    logits.exp_()
    logits /= logits.sum(dim=1, keepdim=True)
    return logits


@dataclass(frozen=True)
class TiledPredictor:
    """Probability maps of single images with a frozen network.

    ``network`` is the frozen copy (:class:`FrozenNetwork`'s ``frozen``), ``n_classes`` its
    number of classes, ``tiling`` the :class:`Tiling`, ``device`` the torch device and
    ``batch_size`` the tiles per call on a GPU (a CPU takes one at a time).
    ``training_pixel_size`` (Å/px or None) is the model's sampling and ``factor`` the ratio
    of the input pixel size to it (1.0: the images are at the training sampling).
    """

    network: torch.nn.Module
    n_classes: int
    tiling: Tiling
    device: str
    batch_size: int
    training_pixel_size: float = None
    factor: float = 1.0

    def proba(self, img, i):
        """Probability maps of image ``X[i]`` at the input's size.

        Saturated, clipped, blanked and constant regions (:func:`sklatom.quality.check_image`)
        are background, and an image without usable structure is background everywhere; each
        finding is reported in an :class:`~sklatom.exceptions.ImageQualityWarning`; such
        regions are filled with the median of the rest before normalising, so that the rest
        keeps its contrast. The image is resampled to the training sampling first and
        normalised there, as the training images were.
        """
        x, quality = self._prepare(img, i)
        if x is None:
            return self._background(img.shape)
        return self._finish(self.proba_normalised(x), img.shape, quality)

    def members(self, img, i, n_transforms, features=False):
        """The maps of ``X[i]`` under each of the first ``n_transforms`` elements of the
        dihedral group (:func:`dihedral`), each transformed back: the test-time-augmentation
        ensemble of :meth:`FCNSegmenter.predict_proba_ensemble
        <sklatom.segmentation.FCNSegmenter.predict_proba_ensemble>`.

        Returns an array ``(n_transforms, n_classes, height, width)`` (member 0 equals
        :meth:`proba`) and, with ``features``, the bottleneck features of member 0 pooled
        over the image (:meth:`proba_normalised`; None for an image without usable
        structure).
        """
        shape = img.shape
        x, quality = self._prepare(img, i)
        if x is None:
            p = self._background(shape)
            out = np.broadcast_to(p, (n_transforms,) + p.shape).copy()
            return (out, None) if features else out
        out = np.empty((n_transforms, self.n_classes) + shape, dtype=np.float32)
        pooled = None
        for k in range(n_transforms):
            xk = np.ascontiguousarray(dihedral(x, k))
            if k == 0 and features:
                pooled = []
                p = self.proba_normalised(xk, pooled)
                pooled = pool_features(pooled)
            else:
                p = self.proba_normalised(xk)
            out[k] = self._finish(np.ascontiguousarray(dihedral(p, k, inverse=True)), shape,
                                  quality)
        return (out, pooled) if features else out

    def _background(self, shape):
        p = np.zeros((self.n_classes,) + shape, dtype=np.float32)
        p[0] = 1.0
        return p

    def _prepare(self, img, i):
        """The normalised image at the training sampling and the quality findings (warned
        here); ``(None, quality)`` for an image without usable structure."""
        shape = img.shape
        ps = self.training_pixel_size
        sampling = ps * self.factor if ps else None
        quality = check_image(img, sampling, f"X[{i}]")
        for problem in quality.problems:
            warnings.warn(problem, ImageQualityWarning, stacklevel=6)
        if not quality.usable:
            return None, quality
        x = img
        if quality.dead.any():  # normalised by what the live part shows, not by the patch
            x = np.where(quality.dead, np.median(img[~quality.dead]), img).astype(img.dtype)
        if self.factor != 1.0:
            x = resample_image(x, resampled_shape(shape, self.factor))
        return normalise(x, f"X[{i}]"), quality

    @staticmethod
    def _finish(p, shape, quality):
        """Maps at the training sampling -> maps at the input's size, dead pixels background."""
        if p.shape[1:] != shape:
            p = resize(p, (p.shape[0],) + shape, order=1, mode="edge",
                       anti_aliasing=False, preserve_range=True)
            p = np.clip(p, 0, None)
            p = (p / np.maximum(p.sum(axis=0, keepdims=True), 1e-12)).astype(np.float32)
        if quality.dead.any():
            p[:, quality.dead] = 0.0
            p[0, quality.dead] = 1.0
        return p

    def proba_normalised(self, x, features=None):
        """Probabilities ``(n_classes, h, w)`` of one normalised image, tile by tile.

        With a list ``features``, each tile appends the sums of its bottleneck features and of
        their squares over its positions, and their number (see :func:`pool_features`).

        The image is reflect-padded at the bottom and right up to a multiple of
        ``tiling.multiple`` only: the network learned on patches whose edges it sees through
        the convolutions' zero padding, and wider reflection padding scored lower on the
        held-out images. An image larger than a tile is cut into tiles that overlap by twice
        the margin, each keeping only the part at least a margin away from the cuts; with the
        "auto" margin this equals the network applied to the whole image.
        """
        multiple, margin = self.tiling.multiple, self.tiling.margin
        tile = self.tiling.core + 2 * margin
        h, w = x.shape
        padded = x
        if h % multiple or w % multiple:
            padded = pad_reflect(x, [(0, -h % multiple), (0, -w % multiple)])
        rows, cols = _tile_spans(padded.shape[0], tile, margin), _tile_spans(
            padded.shape[1], tile, margin)
        tiles = [(r, c) for r in rows for c in cols]
        device = self.device
        # on a CPU one tile per call is fastest (the activations stay in cache); a GPU gets
        # batches of tiles
        bs = 1 if device == "cpu" else self.batch_size
        out = None
        with torch.inference_mode():
            for start in range(0, len(tiles), bs):
                chunk = tiles[start:start + bs]
                batch = np.stack([padded[r[0]:r[1], c[0]:c[1]] for r, c in chunk])
                xt = torch.from_numpy(batch[:, np.newaxis]).to(device).contiguous(
                    memory_format=torch.channels_last)
                if features is None:
                    logits = self.network(xt)
                else:
                    logits, bottleneck = self.network.forward_with_features(xt)
                    b = bottleneck.double()
                    features.append((b.sum(dim=(2, 3)).cpu().numpy(),
                                     (b * b).sum(dim=(2, 3)).cpu().numpy(),
                                     b.shape[2] * b.shape[3]))
                proba = _softmax_(logits).cpu().numpy()
                if len(tiles) == 1:
                    return proba[0, :, :h, :w]
                if out is None:
                    out = np.empty((self.n_classes,) + padded.shape, dtype=np.float32)
                for (r, c), p in zip(chunk, proba):
                    out[:, r[2]:r[3], c[2]:c[3]] = p[:, r[2] - r[0]:r[3] - r[0],
                                                     c[2] - c[0]:c[3] - c[0]]
        return out[:, :h, :w]


def dihedral(x, k, inverse=False):
    """Element ``k`` (0-7) of the dihedral group of the square applied to the last two axes.

    ``k`` = 0 identity, 1 flip of the rows (``x[..., ::-1, :]``), 2 flip of the columns,
    3 rotation by 180°, 4 transpose, 5 rotation by 90°, 6 rotation by 270°, 7 anti-transpose.
    The first 4 form the subgroup of flips (they keep the shape), all 8 the group.
    ``inverse=True`` applies the inverse of element ``k``. Returns a view.
    """
    if k >= 4:
        if not inverse:
            return dihedral(np.swapaxes(x, -1, -2), k - 4)
        return np.swapaxes(dihedral(x, k - 4, inverse=True), -1, -2)
    if k & 1:
        x = x[..., ::-1, :]
    if k & 2:
        x = x[..., :, ::-1]
    return x  # flips commute and are their own inverses


def pool_features(parts):
    """Mean and standard deviation over positions of each bottleneck channel, from the
    ``(sum, sum of squares, count)`` of each tile (:meth:`TiledPredictor.proba_normalised`):
    ndarray of shape (2 * channels,), float64, means first."""
    total = sum(p[0] for p in parts)[0]
    squares = sum(p[1] for p in parts)[0]
    count = sum(p[2] for p in parts)
    mean = total / count
    return np.concatenate([mean, np.sqrt(np.maximum(squares / count - mean ** 2, 0.0))])
