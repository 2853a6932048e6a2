"""Which atomic columns a simulated image shows: the label policy of the training data.

A column is an atom to find only where the image shows it. Two tests decide, both computed
from the structure and the recording (not from the noisy image, so the label does not depend
on one noise draw):

* **Signal against noise.** The column's own contribution to the image, with the probe and the
  recording blur, is compared with the shot noise of everything recorded under it (the
  matched-filter signal-to-noise ratio of the column at the recorded dose) and with the
  texture of the amorphous material around it (supports, contamination). A column that is
  part of a periodic arrangement of similar columns (a crystal, a particle) is seen together
  with them, so its ratio is raised by the square root of the number of similar columns
  nearby (at most :data:`LATTICE_GAIN_CAP`).
* **Contrast against its neighbours.** A column much fainter than the bright columns around it
  in the same crystal (O next to Sr and Ti in an HAADF image of SrTiO3) is not what a
  microscopist, or a detector at ordinary doses, shows, even when its noise-free signal is
  finite. Columns are compared within their own part of the specimen
  (``arrays["component"]``, see :mod:`sklatom.scenes`): a graphene lattice next to a heavy
  adatom stays visible.

Each column is then ``"visible"`` (labelled an atom), ``"hidden"`` (background) or, between
the two thresholds, ``"uncertain"`` (a "don't care" zone: the network is taught neither way and
the scores ignore it). Columns closer together than the image can resolve are uncertain too.
"""

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .simulation import (_cross_sections, _fine_grid, _incoherent_kernel, _simulate_incoherent,
                         wavelength)
from .structures import ROLES

__all__ = ["ColumnVisibility", "column_visibility", "SNR_VISIBLE", "SNR_HIDDEN",
           "CONTRAST_VISIBLE", "CONTRAST_HIDDEN"]

#: Signal-to-noise ratio from which a column is visible, and below which it is hidden.
SNR_VISIBLE, SNR_HIDDEN = 5.0, 3.0
#: Peak contrast relative to the bright columns nearby from which a column is visible, and
#: below which it is hidden.
CONTRAST_VISIBLE, CONTRAST_HIDDEN = 0.18, 0.12
#: Radius in Å of the neighbourhood whose bright columns set the reference contrast, and in
#: which similar columns are counted.
NEIGHBOURHOOD = 5.0
#: Largest number of similar columns whose signal adds up (the lattice gain is its root).
LATTICE_GAIN_CAP = 12
#: Radius in Å of the window over which the texture of amorphous material is measured.
TEXTURE_WINDOW = 2.0

_PERIODIC_ROLES = [ROLES.index(r) for r in ("lattice", "vacancy_neighbor", "stone_wales",
                                            "particle")]


@dataclass
class ColumnVisibility:
    """What an image shows of each column.

    Attributes
    ----------
    state : ndarray of shape (k,), dtype object
        ``"visible"``, ``"uncertain"`` or ``"hidden"``.
    snr : ndarray of shape (k,)
        Signal-to-noise ratio (with the lattice gain).
    contrast : ndarray of shape (k,)
        Peak amplitude relative to the bright columns within :data:`NEIGHBOURHOOD`.
    amplitude : ndarray of shape (k,)
        Noise-free peak amplitude of the column alone (fraction of the probe).
    """

    state: np.ndarray
    snr: np.ndarray
    contrast: np.ndarray
    amplitude: np.ndarray


def _sample(image, positions):
    """Bilinear interpolation of an image at (row, col) positions."""
    if len(positions) == 0:
        return np.zeros(0)
    return ndimage.map_coordinates(image, positions.T, order=1, mode="nearest")


def column_visibility(atoms, positions, members, settings, dose, blur=0.0):
    """Decide which columns an image of ``atoms`` shows.

    Parameters
    ----------
    atoms : ase.Atoms
        The structure (roles in ``arrays["role"]``; atoms of role "amorphous" are texture).
    positions : ndarray of shape (k, 2)
        Column positions (row, col) in px of the image.
    members : list of ndarray of int
        Atom indices of each column, as from :func:`sklatom.structures.find_columns`.
    settings : dict
        The simulator's validated settings (``MultisliceSimulator._settings()``): pixel size,
        energy, probe angle, detector, defocus, Cs.
    dose : float or None
        Recorded dose in e/Å²; None for a noise-free recording (only texture and contrast
        count).
    blur : float, default=0.0
        Gaussian blur of the recording in Å (:class:`~sklatom.simulation.AcquisitionModel`).

    Returns
    -------
    visibility : ColumnVisibility
    """
    k = len(members)
    if k == 0:
        empty = np.zeros(0)
        return ColumnVisibility(np.zeros(0, dtype=object), empty, empty, empty)
    ps = settings["pixel_size"]
    xs = _cross_sections(atoms.numbers, settings)
    sigma_col = np.array([xs[m].sum() for m in members])
    # the spot of one column: probe, atom spread and recording blur (fine grid, sum 1)
    _, h = _fine_grid(ps)
    spot = np.asarray(_incoherent_kernel(settings["energy"], settings["alpha"],
                                         settings["defocus"], settings["Cs"], h))
    if blur:
        spot = ndimage.gaussian_filter(spot, blur / h, mode="constant")
    amplitude = sigma_col * spot.max() / h**2
    k2 = float((spot**2).sum()) / h**2  # integral of the spot squared, 1/Å²

    # noise-free images at the recorded pixel size: everything, and the amorphous part alone
    amorphous = atoms.arrays.get("role", np.zeros(len(atoms), int)) == ROLES.index("amorphous")
    total = _simulate_incoherent(atoms, settings).astype(np.float64)
    background = _simulate_incoherent(atoms, settings, weights=amorphous).astype(np.float64) \
        if amorphous.any() else np.zeros_like(total)
    if blur:
        total = ndimage.gaussian_filter(total, blur / ps, mode="reflect")
        background = ndimage.gaussian_filter(background, blur / ps, mode="reflect")
    under = np.maximum(_sample(total, positions), amplitude)
    # texture: the amorphous image's local fluctuation, seen through the column's spot
    window = TEXTURE_WINDOW / ps
    mean = ndimage.gaussian_filter(background, window, mode="reflect")
    var = ndimage.gaussian_filter(background**2, window, mode="reflect") - mean**2
    texture = np.sqrt(np.clip(_sample(var, positions), 0, None))

    inv_snr2 = np.zeros(k)
    if dose is not None:  # matched-filter shot-noise SNR: sigma * sqrt(dose * K2 / I)
        inv_snr2 += under / (dose * k2 * sigma_col**2)
    with np.errstate(divide="ignore"):
        inv_snr2 += np.where(texture > 0, (texture / amplitude) ** 2, 0.0)
        snr = np.where(inv_snr2 > 0, 1 / np.sqrt(inv_snr2), np.inf)

    # neighbourhood: bright reference columns and similar columns of a periodic arrangement
    xy = positions * ps
    tree = cKDTree(xy)
    near = tree.query_ball_point(xy, NEIGHBOURHOOD)
    roles = atoms.arrays.get("role", np.zeros(len(atoms), int))
    periodic = np.array([np.all(np.isin(roles[m], _PERIODIC_ROLES)) for m in members])
    parts = atoms.arrays.get("component", np.zeros(len(atoms), int))
    part = np.array([np.bincount(parts[m]).argmax() for m in members])
    contrast = np.empty(k)
    for j, idx in enumerate(near):
        idx = np.asarray(idx)
        a = amplitude[idx[part[idx] == part[j]]]
        contrast[j] = amplitude[j] / np.quantile(a, 0.9)
        a = amplitude[idx]
        if periodic[j]:
            similar = np.count_nonzero((a > amplitude[j] / 1.5) & (a < amplitude[j] * 1.5)
                                       & periodic[idx])
            snr[j] *= np.sqrt(min(similar, LATTICE_GAIN_CAP))

    state = np.full(k, "visible", dtype=object)
    uncertain = (snr < SNR_VISIBLE) | (contrast < CONTRAST_VISIBLE)
    hidden = (snr < SNR_HIDDEN) | (contrast < CONTRAST_HIDDEN)
    state[uncertain] = "uncertain"
    state[hidden] = "hidden"
    # columns the probe cannot separate: neither finding one nor two is wrong
    resolution = max(0.8 * 0.61 * wavelength(settings["energy"]) / (settings["alpha"] * 1e-3),
                     2.0 * ps)
    pairs = tree.query_pairs(resolution, output_type="ndarray")
    if len(pairs):
        both = pairs[(state[pairs[:, 0]] != "hidden") & (state[pairs[:, 1]] != "hidden")]
        state[both.ravel()] = "uncertain"
    return ColumnVisibility(state=state, snr=snr, contrast=contrast, amplitude=amplitude)
