"""The Cramér-Rao bound on atomic column positions: the physical limit of precision.

No unbiased estimator of a column's position can have a smaller variance than the inverse of
the Fisher information the recorded counts hold about it. With Poisson noise (counts per
pixel ``n_p`` with expectation ``lambda_p``) the Fisher matrix of a column's position ``r`` is

    F = sum_p  (d lambda_p / d r) (d lambda_p / d r)^T / lambda_p,

and the bound on the standard deviation of each coordinate is the square root of the diagonal
of ``F^-1``. Everything else recorded under the column (neighbours' tails, a support, dark
counts) adds to ``lambda_p`` without adding information, so it loosens the bound.

:func:`poisson_position_bound` is the bound for any expected image and its derivatives;
:func:`column_position_bounds` computes those from a structure with the incoherent (annular
dark-field) image model of :mod:`sklatom.simulation`, for every column, as the dose benchmark
(``benchmarks/bench_dose.py``) reports them beside the measured position errors.
"""

import numpy as np
from scipy import ndimage

from .simulation import _cross_sections, _fine_grid, _incoherent_kernel, _simulate_incoherent
from .structures import find_columns

__all__ = ["poisson_position_bound", "column_position_bounds"]


def poisson_position_bound(expected, d_row, d_col):
    """Cramér-Rao bound on a position from expected Poisson counts and their derivatives.

    Parameters
    ----------
    expected : ndarray
        Expected counts per pixel (any shape), > 0 where a derivative is non-zero.
    d_row, d_col : ndarray, same shape as ``expected``
        Derivatives of the expected counts with respect to the position's row and column
        coordinates (counts per unit of length: the bound comes out in that unit).

    Returns
    -------
    sigma_row, sigma_col : float
        Lower bounds on the standard deviation of each coordinate of any unbiased estimate;
        ``inf`` when the counts hold no information about it.
    """
    expected = np.asarray(expected, dtype=np.float64)
    d = np.stack([np.asarray(d_row, np.float64), np.asarray(d_col, np.float64)])
    used = expected > 0
    w = d[:, used] / expected[used]
    fisher = w @ d[:, used].T
    try:
        cov = np.linalg.inv(fisher)
    except np.linalg.LinAlgError:
        return np.inf, np.inf
    diag = np.diag(cov)
    if np.any(~np.isfinite(diag)) or np.any(diag <= 0):
        return np.inf, np.inf
    return float(np.sqrt(diag[0])), float(np.sqrt(diag[1]))


def column_position_bounds(atoms, settings, dose, blur=0.0, dark_counts=0.0):
    """Cramér-Rao bound on the position of every column of an incoherent ADF image.

    Parameters
    ----------
    atoms : ase.Atoms
        The structure, with ``info["scan_region"]`` as :mod:`sklatom.scenes` and
        :mod:`sklatom.structures` make them.
    settings : dict
        The simulator's validated settings (``MultisliceSimulator(method="incoherent")
        ._settings()``): pixel size, energy, probe angle, defocus, Cs, detector.
    dose : float
        Electron dose in e/Å².
    blur : float, default=0.0
        Gaussian blur of the recording (sigma, Å), as ``AcquisitionModel(blur=...)``.
    dark_counts : float, default=0.0
        Dark counts per pixel (they carry no information about any column).

    Returns
    -------
    positions : ndarray of shape (k, 2)
        The columns' (row, col) in px, as :func:`sklatom.structures.find_columns` lists them.
    bounds : ndarray of shape (k, 2)
        Lower bound on the standard deviation of the row and column coordinate in Å.
    """
    if not dose > 0:
        raise ValueError(f"dose must be > 0 e/Å²; got {dose!r}")
    ps = float(settings["pixel_size"])
    positions, _, _, members = find_columns(atoms, ps)
    if len(members) == 0:
        return np.zeros((0, 2)), np.zeros((0, 2))
    per_pixel = dose * ps * ps  # counts per pixel per unit of fraction of the probe
    total = _simulate_incoherent(atoms, settings).astype(np.float64)
    if blur:
        total = ndimage.gaussian_filter(total, blur / ps, mode="reflect")
    expected = total * per_pixel + dark_counts

    # one column's image is sigma * kernel(x - r) / h^2 (a fraction of the probe per Å²);
    # its derivative with respect to r is minus the kernel's gradient
    _, h = _fine_grid(ps)
    kernel = np.asarray(_incoherent_kernel(settings["energy"], settings["alpha"],
                                           settings["defocus"], settings["Cs"], h))
    if blur:
        kernel = ndimage.gaussian_filter(kernel, blur / h, mode="constant")
    g_row, g_col = np.gradient(kernel / (h * h), h)  # per Å² per Å
    centre = np.array(kernel.shape) // 2
    reach = (min(kernel.shape) // 2 - 2) * h  # Å: the kernel's extent
    sigma = _cross_sections(atoms.numbers, settings)
    rows, cols = np.mgrid[:total.shape[0], :total.shape[1]]
    bounds = np.empty((len(members), 2))
    for j, (pos, m) in enumerate(zip(positions, members)):
        r0, c0 = pos
        win = (slice(max(int(r0 - reach / ps), 0), int(r0 + reach / ps) + 1),
               slice(max(int(c0 - reach / ps), 0), int(c0 + reach / ps) + 1))
        # pixel centres relative to the column, in fine-grid cells from the kernel's centre
        fr = (rows[win] - r0) * ps / h + centre[0]
        fc = (cols[win] - c0) * ps / h + centre[1]
        at = np.stack([fr.ravel(), fc.ravel()])
        scale = -sigma[m].sum() * per_pixel
        d_row = scale * ndimage.map_coordinates(g_row, at, order=1, cval=0.0)
        d_col = scale * ndimage.map_coordinates(g_col, at, order=1, cval=0.0)
        bounds[j] = poisson_position_bound(expected[win].ravel(), d_row, d_col)
    return positions, bounds
