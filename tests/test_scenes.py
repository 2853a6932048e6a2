"""Specimens beyond perfect monolayers (sklatom.scenes): geometry and bookkeeping."""

import numpy as np
import pytest

from sklatom.scenes import (CRYSTALS, SCENE_KINDS, amorphous_slab, crystal_block, heavy_atoms,
                            make_scene, nanoparticle, smooth_field)
from sklatom.structures import ROLES, find_columns


def test_crystal_block_along_a_zone_axis_gives_columns_of_stacked_atoms():
    thickness = 10 * 3.905
    pos, sym = crystal_block("SrTiO3", (0, 0, 1), (4 * 3.905, 4 * 3.905, thickness),
                             random_state=0)
    assert set(sym) == {"Sr", "Ti", "O"}
    # 5 atoms per 3.905 Å cube
    assert abs(len(pos) - 5 * 4 * 4 * 10) <= 5 * 4 * 4
    # projected along z, atoms fall on few columns: each holds ~10 Sr (or Ti+O, or O) atoms
    xy = np.round(pos[:, :2], 2)
    _, counts = np.unique(xy, axis=0, return_counts=True)
    assert np.median(counts) >= 9


@pytest.mark.parametrize("name, axis, spacing",
                         [("Si", (1, 1, 0), 1.357), ("Au", (0, 0, 1), 4.078 / 2)])
def test_zone_axis_projection_gives_the_known_column_spacing(name, axis, spacing):
    pos, _ = crystal_block(name, axis, (20.0, 20.0, 30.0), random_state=1)
    from scipy.spatial import cKDTree

    xy = np.unique(np.round(pos[:, :2], 2), axis=0)
    d, _ = cKDTree(xy).query(xy, k=2)
    # Si [110]: dumbbells 1.36 Å apart; Au [001]: columns a/2 apart
    np.testing.assert_allclose(np.median(d[:, 1]), spacing, atol=0.02)


def test_nanoparticle_is_a_faceted_particle_thickest_in_its_middle():
    pos, sym = nanoparticle("Pt", 30.0, (1, 1, 0), random_state=0)
    assert set(sym) == {"Pt"} and 500 < len(pos) < 1500
    extent = pos[:, :2].max(axis=0) - pos[:, :2].min(axis=0)
    assert np.all(extent < 31.0) and np.all(extent > 20.0)
    assert pos[:, 2].min() == 0.0
    r = np.hypot(*pos[:, :2].T)
    # atoms per area: the projected thickness falls from the centre to the rim (a sphere of
    # radius 15 Å is 30 Å thick in its middle and 18 Å at 12 Å from it)
    centre, rim = np.sum(r < 4) / np.pi / 16, np.sum((r > 11) & (r < 13)) / np.pi / 48
    assert centre > 1.4 * rim


def test_amorphous_slab_is_hard_core_and_not_periodic():
    pos, sym = amorphous_slab("C", (30.0, 30.0), 20.0, thickness_variation=0.0,
                              random_state=0)
    from scipy.spatial import cKDTree

    d, _ = cKDTree(pos).query(pos, k=2)
    assert d[:, 1].min() >= 1.3
    density = len(pos) / (30 * 30 * 20)
    # the requested 0.10 atoms/Å³ (about 2 g/cm^3 of carbon); thinning one uniform draw to the
    # hard core gave 0.074
    assert 0.095 < density < 0.105
    # its projection has no lattice: the power spectrum has no strong peak
    hist, _, _ = np.histogram2d(pos[:, 0], pos[:, 1], bins=64, range=[[0, 30], [0, 30]])
    power = np.abs(np.fft.fft2(hist - hist.mean())) ** 2
    power[0, 0] = 0
    assert power.max() < 20 * np.median(power[power > 0])


def test_thick_amorphous_slab_keeps_its_density_and_hard_core():
    # layer by layer: no two atoms closer than the hard core across the layers either
    pos, _ = amorphous_slab("SiO2", (20.0, 20.0), 90.0, thickness_variation=0.0,
                            random_state=1)
    from scipy.spatial import cKDTree

    d, _ = cKDTree(pos).query(pos, k=2)
    assert d[:, 1].min() >= 1.4
    assert len(pos) / (20 * 20 * 90) == pytest.approx(0.066, rel=0.05)
    assert pos[:, 2].min() >= 0 and pos[:, 2].max() < 90


def test_amorphous_holes_leave_part_of_the_field_empty():
    pos, _ = amorphous_slab("SiO2", (40.0, 40.0), 15.0, holes=0.3, random_state=0)
    hist, _, _ = np.histogram2d(pos[:, 0], pos[:, 1], bins=20, range=[[0, 40], [0, 40]])
    assert 0.15 < np.mean(hist == 0) < 0.5


def test_smooth_field_is_smooth_with_unit_variance_and_slow_for_long_lengths():
    rng = np.random.RandomState(0)
    f = smooth_field((200, 200), 5.0, rng)
    assert 0.6 < f.std() < 1.4
    assert np.abs(np.diff(f, axis=0)).mean() < 0.4 * f.std()
    g = smooth_field((20, 20), 100.0, rng)  # longer than the grid: a gentle slope, not noise
    assert np.abs(np.diff(g, axis=0)).max() < 0.2


def test_heavy_atoms_rule():
    roles = [ROLES.index(r) for r in ("lattice", "lattice", "dopant", "lattice", "adatom",
                                      "lattice")]
    heavy = heavy_atoms(["C", "S", "Si", "Si", "Si", "Mo"], roles)
    # Si is heavy as a dopant or adatom (brighter than the light lattice), light in a crystal
    np.testing.assert_array_equal(heavy, [False, False, True, False, True, True])


@pytest.mark.parametrize("kind", SCENE_KINDS)
def test_every_scene_kind_builds_with_its_bookkeeping(kind):
    atoms = make_scene(kind, (24.0, 24.0), random_state=3)
    assert atoms.info["scene"] == kind
    assert atoms.info["scan_region"] == (4.0, 4.0, 24.0, 24.0)
    for key in ("role", "heavy", "component"):
        assert len(atoms.arrays[key]) == len(atoms)
    cell = np.diag(atoms.cell)
    assert np.all(atoms.positions >= 0) and np.all(atoms.positions <= cell)
    if kind == "vacuum":
        assert len(atoms) == 0
    if kind == "amorphous":
        assert len(atoms) and np.all(atoms.arrays["role"] == ROLES.index("amorphous"))


def test_single_atoms_scene_puts_heavy_adatoms_on_an_amorphous_support():
    atoms = make_scene("single_atoms", (40.0, 40.0), random_state=0, support="C",
                       element="Pt", adatom_density=0.005)
    roles = np.array(ROLES)[atoms.arrays["role"]]
    symbols = np.array(atoms.get_chemical_symbols())
    assert set(symbols[roles == "amorphous"]) == {"C"}
    pt = symbols == "Pt"
    heavy = atoms.arrays["heavy"]
    assert pt.sum() >= 5 and np.all(heavy[pt]) and not heavy[~pt].any()
    # each single atom is its own part of the specimen
    single = pt & (roles == "adatom")
    assert len(set(atoms.arrays["component"][single])) >= pt.sum() - 20
    # only the Pt atoms form columns: the support is texture
    _, names, _, _ = find_columns(atoms, 0.2)
    assert set("".join(c for c in n if not c.isdigit()) for n in names) <= {"Pt"}


def test_crystal_scene_options_are_honoured_and_unknown_ones_refused():
    atoms = make_scene("crystal", (20.0, 20.0), random_state=0, crystal="GaAs",
                       zone_axis=(1, 1, 0), thickness=40.0, coverage=1.0, contamination=0)
    assert set(atoms.get_chemical_symbols()) == {"Ga", "As"}
    assert atoms.info["zone_axis"] == (1, 1, 0) and atoms.info["thickness"] == 40.0
    with pytest.raises(TypeError, match="unknown options"):
        make_scene("crystal", (20.0, 20.0), colour="red")
    with pytest.raises(ValueError, match="kind"):
        make_scene("teapot")
    with pytest.raises(ValueError, match="at least 4 Å"):
        make_scene("vacuum", (2.0, 20.0))


def test_known_crystals_have_their_zone_axes():
    for name, crystal in CRYSTALS.items():
        for axis in crystal.zone_axes:
            pos, _ = crystal_block(name, axis, (8.0, 8.0, 8.0), random_state=0)
            assert len(pos) > 4, (name, axis)
