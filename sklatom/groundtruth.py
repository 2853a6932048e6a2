"""Which atomic columns a simulated image shows: the label policy of the training data.

A column is an atom to find only where the image shows it. Two tests decide, both computed
from the structure and the recording (not from the noisy image, so the label does not depend
on one noise draw):

* **Signal against noise.** The column's own contribution to the image, with the probe and the
  recording blur, is compared with the noise of everything recorded under it (shot noise of
  the specimen's signal and of the detector's dark counts and pedestal, read noise: the
  matched-filter signal-to-noise ratio of the column at the recorded dose) and with the
  texture of the amorphous material around it (supports, contamination). Each column on its
  own: the lattice around a column does not make it visible, or a network would learn to put
  atoms where a lattice "should" have them, vacancies included.
* **Contrast against its neighbours.** A column much fainter than the bright columns around it
  (O next to Sr and Ti in an HAADF image of SrTiO3, a graphene layer under WS2) is not what a
  microscopist, or a detector at ordinary doses, shows, even when its noise-free signal is
  finite. The reference is the bright columns of the column's own part of the specimen and
  those of crystals and particles around it (``arrays["component"]``, see
  :mod:`sklatom.scenes`), not single adatoms: a graphene lattice next to a heavy adatom stays
  visible.

Each column is then ``"visible"`` (labelled an atom), ``"hidden"`` (background) or, between
the two thresholds, ``"uncertain"`` (a "don't care" zone: the network is taught neither way and
the scores ignore it). Columns closer together than the image can resolve (two spot sigmas,
the probe and the recording blur together, or two pixels) are uncertain too,
and so is an empty lattice site (a vacancy) among uncertain columns
(:func:`uncertain_sites`).
"""

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .simulation import (_cross_sections, _fine_grid, _incoherent_kernel, _simulate_incoherent,
                         spread_diffuse)
from .structures import ROLES

__all__ = ["ColumnVisibility", "column_visibility", "uncertain_sites", "SNR_VISIBLE",
           "SNR_HIDDEN", "LATTICE_SNR_VISIBLE", "LATTICE_SNR_HIDDEN", "CONTRAST_VISIBLE",
           "CONTRAST_HIDDEN"]

#: Signal-to-noise ratio from which a column is visible, and below which it is hidden.
SNR_VISIBLE, SNR_HIDDEN = 5.0, 2.5
#: The same for a model that knows the lattice (``label_policy="lattice"``): it places a column
#: from the columns around it, so a column's own SNR may be lower, but not nothing.
LATTICE_SNR_VISIBLE, LATTICE_SNR_HIDDEN = 1.0, 0.5
#: Peak contrast relative to the bright columns nearby from which a column is visible, and
#: below which it is hidden.
CONTRAST_VISIBLE, CONTRAST_HIDDEN = 0.18, 0.12
#: Radius in Å of the neighbourhood whose bright columns set the reference contrast.
NEIGHBOURHOOD = 5.0
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


def column_visibility(atoms, positions, members, settings, dose, blur=0.0, dark_counts=0.0,
                      pedestal=0.0, read_noise=0.0, diffuse=0.0, diffuse_length=3.0,
                      snr_limits=(SNR_VISIBLE, SNR_HIDDEN)):
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
    dark_counts, pedestal, read_noise : float, default=0.0
        The recording's detector noise (see :class:`~sklatom.simulation.AcquisitionModel`):
        dark counts per pixel, a pedestal relative to the mean signal, both with shot noise,
        and Gaussian read noise in counts.
    diffuse, diffuse_length : float, default=0.0, 3.0
        The fraction of the signal the recording spreads over ``diffuse_length`` Å
        (``AcquisitionModel(diffuse=...)``): it lowers each column's peak and raises the
        floor (and its shot noise) under a crystal.
    snr_limits : (float, float), default=(SNR_VISIBLE, SNR_HIDDEN)
        Signal-to-noise ratio from which a column is visible and below which it is hidden
        (:data:`LATTICE_SNR_VISIBLE`, :data:`LATTICE_SNR_HIDDEN` for lattice models).

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
    if diffuse:  # a spot's share that the plateau takes (its peak there is negligible)
        spot = (1.0 - diffuse) * spot
    amplitude = sigma_col * spot.max() / h**2
    k2 = float((spot**2).sum()) / h**2  # integral of the spot squared, 1/Å²
    # the spot's width: a Gaussian of the same full width at half maximum
    fwhm = 2 * np.sqrt(np.count_nonzero(spot >= spot.max() / 2) * h * h / np.pi)
    spot_sigma = fwhm / 2.3548

    # noise-free images at the recorded pixel size: everything, and the amorphous part alone
    amorphous = atoms.arrays.get("role", np.zeros(len(atoms), int)) == ROLES.index("amorphous")
    total = _simulate_incoherent(atoms, settings).astype(np.float64)
    background = _simulate_incoherent(atoms, settings, weights=amorphous).astype(np.float64) \
        if amorphous.any() else np.zeros_like(total)
    if blur:
        total = ndimage.gaussian_filter(total, blur / ps, mode="reflect")
        background = ndimage.gaussian_filter(background, blur / ps, mode="reflect")
    total = spread_diffuse(total, diffuse, diffuse_length / ps)
    under = np.maximum(_sample(total, positions), amplitude)
    # texture: the amorphous image's local fluctuation, seen through the column's spot
    window = TEXTURE_WINDOW / ps
    mean = ndimage.gaussian_filter(background, window, mode="reflect")
    var = ndimage.gaussian_filter(background**2, window, mode="reflect") - mean**2
    texture = np.sqrt(np.clip(_sample(var, positions), 0, None))

    inv_snr2 = np.zeros(k)
    if dose is not None:  # matched-filter shot-noise SNR: sigma * sqrt(dose * K2 / I)
        # detector noise, in the units of the image (fraction of the probe): variance per
        # pixel over the counts one pixel holds per unit fraction
        per_fraction = dose * ps * ps
        noise = (dark_counts + pedestal * float(total.mean()) * per_fraction
                 + read_noise**2) / per_fraction
        inv_snr2 += (under + noise) / (dose * k2 * sigma_col**2)
    with np.errstate(divide="ignore"):
        inv_snr2 += np.where(texture > 0, (texture / amplitude) ** 2, 0.0)
        snr = np.where(inv_snr2 > 0, 1 / np.sqrt(inv_snr2), np.inf)

    # contrast: against the bright columns of the same part and of crystals around it
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
        reference = amplitude[idx[(part[idx] == part[j]) | periodic[idx]]]
        contrast[j] = amplitude[j] / np.quantile(reference, 0.9)

    state = np.full(k, "visible", dtype=object)
    uncertain = (snr < snr_limits[0]) | (contrast < CONTRAST_VISIBLE)
    hidden = (snr < snr_limits[1]) | (contrast < CONTRAST_HIDDEN)
    state[uncertain] = "uncertain"
    state[hidden] = "hidden"
    # columns the spot cannot separate (Sparrow's limit of two Gaussians, 2 sigma, with the
    # recording blur), or the pixels cannot: neither finding one nor two is wrong
    resolution = max(2.0 * spot_sigma, 2.0 * ps)
    pairs = tree.query_pairs(resolution, output_type="ndarray")
    if len(pairs):
        both = pairs[(state[pairs[:, 0]] != "hidden") & (state[pairs[:, 1]] != "hidden")]
        state[both.ravel()] = "uncertain"
    return ColumnVisibility(state=state, snr=snr, contrast=contrast, amplitude=amplitude)


def uncertain_sites(sites, positions, state, radius):
    """Empty sites (e.g. planted vacancies) whose neighbouring columns are mostly uncertain.

    Where the image cannot show the atoms around an empty site, it cannot show their absence
    either: such a site is "don't care" like its neighbours, not background.

    Parameters
    ----------
    sites : ndarray of shape (m, 2)
        Empty sites (row, col) in px.
    positions : ndarray of shape (k, 2)
        Column positions (row, col) in px.
    state : ndarray of shape (k,), dtype object
        Their states (:func:`column_visibility`).
    radius : float
        Neighbourhood radius in px (about a bond length and a half).

    Returns
    -------
    uncertain : ndarray of shape (m,), bool
    """
    sites = np.asarray(sites, dtype=float).reshape(-1, 2)
    if len(sites) == 0 or len(positions) == 0:
        return np.zeros(len(sites), bool)
    near = cKDTree(positions).query_ball_point(sites, radius)
    unsure = np.asarray(state) == "uncertain"
    return np.array([len(idx) > 0 and unsure[idx].mean() >= 0.5 for idx in near])
