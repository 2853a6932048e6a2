"""The Cramér-Rao bound on column positions: the analytic Gaussian case, and how the bound of
a simulated column moves with dose, column weight, background and blur."""

import numpy as np
import pytest
from ase import Atoms

from sklatom.cramer_rao import column_position_bounds, poisson_position_bound
from sklatom.simulation import MultisliceSimulator


def _gaussian_spot(n_counts, sigma, background=0.0, size=81):
    r, c = np.mgrid[:size, :size] - size // 2
    g = np.exp(-(r ** 2 + c ** 2) / (2 * sigma ** 2)) / (2 * np.pi * sigma ** 2)
    expected = n_counts * g + background
    # d/d r0 of n g(x - r0) = n g (x - r0) / sigma^2
    return expected, n_counts * g * r / sigma ** 2, n_counts * g * c / sigma ** 2


def test_gaussian_spot_bound_is_sigma_over_root_n():
    # the textbook limit: a Gaussian spot of N counts on no background, sigma / sqrt(N)
    for n, sigma in [(100, 3.0), (10_000, 2.0)]:
        sr, sc = poisson_position_bound(*_gaussian_spot(n, sigma))
        assert sr == pytest.approx(sigma / np.sqrt(n), rel=0.01)
        assert sc == pytest.approx(sigma / np.sqrt(n), rel=0.01)


def test_background_loosens_the_bound_and_no_signal_gives_infinity():
    tight = poisson_position_bound(*_gaussian_spot(1000, 2.0))[0]
    loose = poisson_position_bound(*_gaussian_spot(1000, 2.0, background=20.0))[0]
    assert loose > 1.5 * tight
    flat = np.full((9, 9), 3.0)
    assert poisson_position_bound(flat, np.zeros_like(flat), np.zeros_like(flat)) == (
        np.inf, np.inf)


def _structure(symbols_and_xy, side=12.0, z_step=2.0):
    """Atoms in a box, one column per (symbol, x, y, n): n atoms stacked along the beam."""
    pos, sym = [], []
    for s, x, y, n in symbols_and_xy:
        for k in range(n):
            pos.append((x, y, 1.0 + z_step * k))
            sym.append(s)
    atoms = Atoms(sym, positions=pos, cell=(side, side, 40.0), pbc=False)
    atoms.info["scan_region"] = (0.0, 0.0, side, side)
    return atoms


@pytest.fixture(scope="module")
def settings():
    sim = MultisliceSimulator(method="incoherent", energy=80e3, semiangle_cutoff=25.0,
                              pixel_size=0.1, progress=False)
    return sim._settings()


def test_column_bound_scales_with_dose_and_column_weight(settings):
    atoms = _structure([("W", 4.0, 4.0, 1), ("W", 8.0, 8.0, 3)])
    _, low = column_position_bounds(atoms, settings, dose=1e4)
    pos, high = column_position_bounds(atoms, settings, dose=4e4)
    assert len(pos) == 2
    np.testing.assert_allclose(high, low / 2, rtol=1e-6)  # 1 / sqrt(dose), no background
    single, triple = (low[np.argmin(pos[:, 0])], low[np.argmax(pos[:, 0])])
    assert triple[0] == pytest.approx(single[0] / np.sqrt(3), rel=0.05)  # 3x the counts
    assert np.all(low > 0) and np.all(np.isfinite(low))


def test_column_bound_of_a_blurred_atom_matches_the_gaussian_limit(settings):
    # blur much wider than the probe: the spot is nearly a Gaussian of that sigma, and the bound
    # is sigma / sqrt(counts), counts = dose x the atom's cross-section
    from sklatom.simulation import _cross_sections

    atoms = _structure([("W", 6.0, 6.0, 1)])
    dose, blur = 1e5, 0.8
    _, bounds = column_position_bounds(atoms, settings, dose=dose, blur=blur)
    counts = dose * _cross_sections(atoms.numbers, settings)[0]
    spot = np.hypot(blur, 0.35)  # the probe (with the atom's spread) adds about 0.35 Å
    assert bounds[0, 0] == pytest.approx(spot / np.sqrt(counts), rel=0.15)
    # dark counts carry no information: the bound loosens
    _, dark = column_position_bounds(atoms, settings, dose=dose, blur=blur, dark_counts=50.0)
    assert np.all(dark > 1.2 * bounds)


def test_column_bounds_refuse_a_dose_that_is_not_positive(settings):
    with pytest.raises(ValueError, match="dose"):
        column_position_bounds(_structure([("W", 6.0, 6.0, 1)]), settings, dose=0)
