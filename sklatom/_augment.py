"""Random training patches with augmentation, applied consistently to image and mask.

Used by :class:`sklatom.segmentation.FCNSegmenter`. Every random draw comes from a NumPy
``Generator`` passed in, so patches reproduce from a seed.
"""

import numpy as np
from scipy import ndimage

__all__ = ["pad_reflect", "random_patch", "augment_intensity", "grid_patches"]


def pad_reflect(a, pad_width):
    """``np.pad`` with reflection (``symmetric`` for axes of length 1, where reflect fails)."""
    mode = "reflect" if min(a.shape[-2:]) > 1 else "symmetric"
    full = [(0, 0)] * (a.ndim - 2) + list(pad_width)
    return np.pad(a, full, mode=mode)


def _crop_padded(image, mask, top, left, size):
    """Crop ``size`` from ``(top, left)``; the window may hang over the image edges (reflect)."""
    h, w = image.shape
    pt, pl = max(0, -top), max(0, -left)
    pb, pr = max(0, top + size[0] - h), max(0, left + size[1] - w)
    if pt or pl or pb or pr:
        image = pad_reflect(image, [(pt, pb), (pl, pr)])
        mask = pad_reflect(mask, [(pt, pb), (pl, pr)])
        top, left = top + pt, left + pl
    sl = (slice(top, top + size[0]), slice(left, left + size[1]))
    return image[sl], mask[sl]


def random_patch(image, mask, patch_size, rng, zoom_range=(1.0, 1.0), geometric=True):
    """Draw one random square patch of ``patch_size`` pixels from an image and its mask.

    Parameters
    ----------
    image : ndarray of shape (height, width), float32
        Normalised image.
    mask : ndarray of shape (height, width), int
        Label mask.
    patch_size : int
        Side of the returned patch in pixels.
    rng : numpy.random.Generator
        Source of randomness.
    zoom_range : tuple of float, default=(1.0, 1.0)
        Scale factors drawn uniformly; a factor ``z`` magnifies the patch content by ``z``
        (image bilinear, mask nearest neighbour).
    geometric : bool, default=True
        Apply a random flip/rot90 (one of the 8 symmetries of the square).

    Returns
    -------
    image_patch : ndarray of shape (patch_size, patch_size), float32
    mask_patch : ndarray of shape (patch_size, patch_size), int64
    """
    zoom = float(rng.uniform(zoom_range[0], zoom_range[1]))
    src = max(1, int(round(patch_size / zoom)))
    h, w = image.shape
    top = int(rng.integers(0, max(h - src, 0) + 1)) if h >= src else -((src - h) // 2)
    left = int(rng.integers(0, max(w - src, 0) + 1)) if w >= src else -((src - w) // 2)
    img, msk = _crop_padded(image, mask, top, left, (src, src))
    if src != patch_size:
        f = patch_size / src
        img = ndimage.zoom(img, f, order=1, mode="reflect", grid_mode=True)
        msk = ndimage.zoom(msk, f, order=0, mode="nearest", grid_mode=True)
        img, msk = img[:patch_size, :patch_size], msk[:patch_size, :patch_size]
        if img.shape != (patch_size, patch_size):  # rounding left us a pixel short
            pad = [(0, patch_size - img.shape[0]), (0, patch_size - img.shape[1])]
            img, msk = pad_reflect(img, pad), pad_reflect(msk, pad)
    if geometric:
        k = int(rng.integers(0, 4))
        img, msk = np.rot90(img, k), np.rot90(msk, k)
        if rng.random() < 0.5:
            img, msk = img[:, ::-1], msk[:, ::-1]
    return np.ascontiguousarray(img, dtype=np.float32), np.ascontiguousarray(msk, dtype=np.int64)


def augment_intensity(image, rng, p=0.5):
    """Random intensity changes of a normalised patch that leave the geometry unchanged.

    Each of the following is applied with probability ``p``: a Gaussian blur (sigma 0.3-1.2
    px), a gamma change (0.7-1.4) and Poisson "dose" noise (300-30000 counts at the brightest
    pixel) on the patch mapped to [0, 1] and mapped back, and a contrast/offset change (gain
    0.8-1.25, offset -0.1-0.1 in normalised units). The noise stays mild: the labels do not
    change with it, so noise that hid the atoms would teach a network to report atoms it
    cannot see.

    Parameters
    ----------
    image : ndarray of shape (height, width), float32
    rng : numpy.random.Generator
    p : float, default=0.5

    Returns
    -------
    image : ndarray of shape (height, width), float32
    """
    x = image.astype(np.float64)
    if rng.random() < p:
        x = ndimage.gaussian_filter(x, sigma=float(rng.uniform(0.3, 1.2)), mode="reflect")
    lo, hi = float(x.min()), float(x.max())
    span = hi - lo
    if span > 0:
        u = (x - lo) / span
        if rng.random() < p:
            u = u ** float(rng.uniform(0.7, 1.4))
        if rng.random() < p:
            dose = float(np.exp(rng.uniform(np.log(300.0), np.log(30000.0))))
            u = rng.poisson(u * dose) / dose
        x = u * span + lo
    if rng.random() < p:
        x = x * float(rng.uniform(0.8, 1.25)) + float(rng.uniform(-0.1, 0.1))
    return x.astype(np.float32)


def grid_patches(image, mask, patch_size):
    """Cut an image and mask into non-overlapping ``patch_size`` squares (reflect-padded).

    Returns
    -------
    images : ndarray of shape (n_patches, patch_size, patch_size), float32
    masks : ndarray of shape (n_patches, patch_size, patch_size), int64
    """
    h, w = image.shape
    nr, nc = -(-h // patch_size), -(-w // patch_size)
    pad = [(0, nr * patch_size - h), (0, nc * patch_size - w)]
    img, msk = pad_reflect(image, pad), pad_reflect(mask, pad)
    imgs, msks = [], []
    for r in range(nr):
        for c in range(nc):
            sl = (slice(r * patch_size, (r + 1) * patch_size),
                  slice(c * patch_size, (c + 1) * patch_size))
            imgs.append(img[sl])
            msks.append(msk[sl])
    return np.stack(imgs).astype(np.float32), np.stack(msks).astype(np.int64)
