"""Parts of an image that cannot show atoms: saturated, clipped, blanked or constant pixels.

A detector that saturates records one value over a bright region (a thick contamination patch,
a thick grain); a dark level set too high clips vacuum to one value; aligned or drift-corrected
frames are padded with zeros. Such pixels carry no information, so nothing is found there.
:func:`check_image` finds them (connected regions of exactly constant pixels, large enough to
hold an atom) and also tells when a whole image has no usable structure (constant, nearly
constant, or too small to show one atom). :class:`~sklatom.segmentation.FCNSegmenter` calls it
on every image, reports what it found in a :class:`ImageQualityWarning` and sets the
probability maps there to background.
"""

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .exceptions import ImageQualityWarning  # noqa: F401 (re-exported; see exceptions)

__all__ = ["ImageQuality", "ImageQualityWarning", "check_image", "MIN_REGION_AREA",
           "FRINGE_REACH", "MIN_IMAGE_SIZE", "CLIP_STEPS", "EMPTY_DISK_COUNTS"]

#: Smallest area (Å²) of a constant region reported and masked: about one atom's disk.
MIN_REGION_AREA = 3.0
#: Distance (Å) from a constant region within which pixels of its value belong to it (the
#: ragged fringe of a saturated patch).
FRINGE_REACH = 1.0
#: Smallest height and width (Å) of an image that can show one atom with its surroundings.
MIN_IMAGE_SIZE = 2.0
#: An image whose range is below this fraction of its typical magnitude is nearly constant:
#: its contrast is at the float32 resolution of its values.
NEAR_CONSTANT = 1e-5
#: A plateau at the image minimum is clipped (or blanked) where the pixels around it stand
#: more than this many quantisation steps above it. In a low-dose image of counts the minimum,
#: 0, also fills the gaps between the columns, and its neighbours hold 1 or 2 counts: that is
#: shot noise, and there only pixels with no count within :data:`FRINGE_REACH` are dead.
CLIP_STEPS = 3
#: Counts that a disk without any count would hold on average before it is taken for empty
#: (vacuum, a blank band) in such an image: at very low doses (graphene at 5e3 e/Å², 0.008
#: counts per pixel) a disk of :data:`FRINGE_REACH` is empty by chance in a tenth of the
#: lattice, so the disk grows until the image's mean count would put this many counts in it.
EMPTY_DISK_COUNTS = 10.0


@dataclass
class ImageQuality:
    """What :func:`check_image` found.

    Attributes
    ----------
    dead : ndarray of shape (height, width), bool
        Pixels that show nothing (saturated, clipped, blanked or constant regions).
    usable : bool
        False when the whole image shows nothing (then no atom can be found in it).
    problems : list of str
        One sentence per finding, for a warning.
    """

    dead: np.ndarray
    usable: bool = True
    problems: list = field(default_factory=list)


def _constant_regions(image, min_area_px, reach_px=1):
    """Regions of at least ``min_area_px`` pixels of one value (3 x 3 neighbourhoods of one
    value), with every pixel of that value within ``reach_px`` of them or connected to those:
    the rim and the ragged fringe of a saturated patch (islands of clipped pixels along its
    edge), not a lone clipped pixel at an atom's peak elsewhere.

    Returns the mask of those regions and, per value they hold, its number of pixels. Cheap
    when there is nothing to find: a constant 3 x 3 neighbourhood needs four constant 2 x 2
    blocks, which noisy images (floats, or counts above a few per pixel) rarely have.
    """
    a = image[:-1, :-1]
    block = (a == image[:-1, 1:]) & (a == image[1:, :-1]) & (a == image[1:, 1:])
    if np.count_nonzero(block) < min_area_px / 2:
        return np.zeros(image.shape, bool), []
    # pixel (r, c) has a constant 3 x 3 neighbourhood when the four 2 x 2 blocks around it are
    # constant (they overlap, so they hold one value)
    flat = np.zeros(image.shape, bool)
    flat[1:-1, 1:-1] = block[:-1, :-1] & block[:-1, 1:] & block[1:, :-1] & block[1:, 1:]
    lab, n = ndimage.label(flat)
    if n == 0:
        return np.zeros(image.shape, bool), []
    area = np.bincount(lab.ravel(), minlength=n + 1)
    big = np.flatnonzero(area >= min_area_px)
    big = big[big > 0]
    if len(big) == 0:
        return np.zeros(image.shape, bool), []
    core = np.isin(lab, big)
    # each plateau with every pixel of its value connected to it (8-connectivity): its rim
    # and the thin tendrils along its edge that hold no constant 3 x 3 neighbourhood
    keep = np.zeros(image.shape, bool)
    disk = ndimage.generate_binary_structure(2, 1)
    for value in np.unique(image[core]):
        mine = core & (image == value)
        near = ndimage.binary_dilation(mine, disk, iterations=max(1, int(round(reach_px))))
        same, _ = ndimage.label(image == value, np.ones((3, 3), bool))
        touching = np.unique(same[near & (image == value)])
        keep |= np.isin(same, touching[touching > 0])
    values, counts = np.unique(image[keep], return_counts=True)
    return keep, [(int(c), float(v)) for v, c in zip(values, counts) if c >= min_area_px]


def _count_step(image, lo):
    """The quantisation step of an image above its minimum ``lo`` (one count, in its units)."""
    above = np.unique(image[image > lo])
    steps = np.diff(above)
    return min(float(above[0]) - lo, float(steps.min()) if len(steps) else np.inf)


def _shot_noise_floor(image, at_min, lo):
    """Whether plateaus at the minimum ``lo`` are the floor of a counting image (the pixels
    around them hold the next few values up), not a clipped level (they jump far above it)."""
    ring = ndimage.binary_dilation(at_min) & ~at_min
    if not ring.any():
        return False
    return float(np.median(image[ring])) - lo <= CLIP_STEPS * _count_step(image, lo)


def check_image(image, pixel_size=None, name="image"):
    """Find the parts of an image that cannot show atoms.

    Parameters
    ----------
    image : ndarray of shape (height, width)
        Raw intensities (any real dtype).
    pixel_size : float or None, default=None
        Pixel size in Å/px; sets the smallest region reported (:data:`MIN_REGION_AREA`) and
        the smallest usable image (:data:`MIN_IMAGE_SIZE`). None: 0.1 Å/px is assumed.
    name : str, default="image"
        Name of the image in the messages.

    Returns
    -------
    quality : ImageQuality

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> image = rng.poisson(20, (64, 64)).astype(float)
    >>> image[:, :30] = image.max() + 5           # a saturated band
    >>> q = check_image(image, pixel_size=0.1)
    >>> q.usable, round(float(q.dead.mean()), 2)
    (True, 0.47)
    >>> q.problems[0][:40]
    'image: 47 % of the pixels are saturated '
    """
    x = np.asarray(image)
    if x.dtype.kind not in "fiu":
        x = x.astype(np.float64)
    ps = 0.1 if pixel_size is None else float(pixel_size)
    lo, hi = float(x.min()), float(x.max())
    if hi == lo:
        return ImageQuality(np.ones(x.shape, bool), False,
                            [f"{name} is constant (every pixel {lo:g}): it shows no atoms"])
    scale = max(abs(lo), abs(hi))
    if hi - lo < NEAR_CONSTANT * scale:
        return ImageQuality(np.ones(x.shape, bool), False, [
            f"{name} is nearly constant (values {lo:.7g} to {hi:.7g}, a range below "
            f"{NEAR_CONSTANT:g} of their magnitude, at the resolution of float32): it shows "
            "no atoms"])
    smallest = MIN_IMAGE_SIZE / ps
    if min(x.shape) < smallest:
        return ImageQuality(np.ones(x.shape, bool), False, [
            f"{name} is {x.shape[0]} x {x.shape[1]} px, too small to show an atom at "
            f"{ps:g} Å/px (it needs at least {MIN_IMAGE_SIZE:g} Å, {int(np.ceil(smallest))} "
            "px, on each side)"])
    min_area = max(9.0, MIN_REGION_AREA / ps**2)
    dead, regions = _constant_regions(x, min_area, FRINGE_REACH / ps)
    if any(value == lo for _, value in regions) and _shot_noise_floor(x, dead & (x == lo), lo):
        # only where no count at all lies within reach (vacuum, a blank band), not in the
        # gaps of a faint lattice, where dead pixels would cut the columns apart; the reach
        # grows at very low doses, where a small disk is often empty by chance
        counts_per_px = float(np.mean(x - lo)) / _count_step(x, lo)
        reach = max(1.0, FRINGE_REACH / ps,
                    np.sqrt(EMPTY_DISK_COUNTS / (np.pi * counts_per_px)))
        solid = ndimage.distance_transform_edt(x == lo) > reach  # px to the nearest count
        dead &= (x != lo) | solid
        area = int(np.count_nonzero(dead & (x == lo)))
        regions = [(a, v) for a, v in regions if v != lo]
        if area >= min_area:
            regions.append((area, lo))
        else:  # too little left to report: not masked either
            dead &= x != lo
    problems = []
    if regions:
        by_kind = {}
        for area, value in regions:
            kind = ("saturated (at the image maximum, {v:g})" if value == hi else
                    "clipped at the image minimum ({v:g})" if value == lo else
                    "constant (value {v:g})").format(v=value)
            by_kind[kind] = by_kind.get(kind, 0) + area
        for kind, area in by_kind.items():
            problems.append(f"{name}: {100 * area / x.size:.0f} % of the pixels are {kind}; "
                            "no atoms are reported there")
    usable = not dead.all()
    return ImageQuality(dead, usable, problems)
