import numpy as np
import pytest
from scipy.spatial import cKDTree

from sklatom.structures import (
    LATTICES,
    ROLES,
    lattice_classes,
    make_structure,
    project_columns,
    scan_region,
)


@pytest.mark.parametrize("lattice", sorted(LATTICES))
def test_every_lattice_projects_to_named_columns(lattice):
    atoms = make_structure(lattice, (12.0, 12.0), random_state=0)
    cols = project_columns(atoms, pixel_size=0.1)
    assert cols.coordinates.shape[1] == 3
    assert len(cols.coordinates) > 10
    assert set(cols.names) <= set(lattice_classes(lattice)[1:])
    # class indices point at the names
    for (_, _, k), name in zip(cols.coordinates, cols.names):
        assert cols.classes[int(k)] == name
    # everything lies in the 120 x 120 px image
    assert cols.coordinates[:, :2].min() >= -0.5
    assert cols.coordinates[:, :2].max() < 119.5


def test_graphene_geometry_bond_length_and_density():
    atoms = make_structure("graphene", (20.0, 20.0), defects=None, strain=(0, 0, 0),
                           random_state=1)
    xy = atoms.positions[:, :2]
    d, _ = cKDTree(xy).query(xy, k=5)
    np.testing.assert_allclose(d[:, 1], 2.46 / np.sqrt(3), atol=1e-6)
    # interior atoms have exactly three neighbours at the bond length
    inner = np.all((xy > 3) & (xy < atoms.cell.lengths()[:2] - 3), axis=1)
    np.testing.assert_allclose(d[inner, 3], 2.46 / np.sqrt(3), atol=1e-6)
    assert np.all(d[inner, 4] > 2.4)
    # 2 atoms per 5.24 Å^2 primitive cell
    density = len(atoms) / np.prod(atoms.cell.lengths()[:2])
    assert density == pytest.approx(2 / (2.46**2 * np.sqrt(3) / 2), rel=0.03)


def test_mos2_coinciding_sulfur_atoms_form_one_s2_column():
    atoms = make_structure("MoS2", (15.0, 15.0), defects=None, random_state=2)
    cols = project_columns(atoms, pixel_size=0.1)
    names, counts = np.unique(cols.names, return_counts=True)
    assert set(names) == {"Mo", "S2"}
    # S2 columns sit 1.82 Å from Mo columns in projection
    rc = cols.coordinates[:, :2] * 0.1
    mo, s2 = rc[cols.names == "Mo"], rc[cols.names == "S2"]
    d, _ = cKDTree(s2).query(mo)
    np.testing.assert_allclose(d, 3.16 / np.sqrt(3), atol=0.05)


def test_srtio3_columns_are_named_by_reduced_formula():
    atoms = make_structure("SrTiO3-001", (10.0, 10.0), thickness=4 * 3.905, random_state=0)
    assert np.isclose(atoms.cell.lengths()[2], 4 * 3.905)
    cols = project_columns(atoms, pixel_size=0.1)
    assert set(cols.names) == {"Sr", "OTi", "O"}
    # each Sr column holds four Sr atoms (one per unit cell), stacked 3.905 Å apart
    sr = atoms.positions[np.array(atoms.get_chemical_symbols()) == "Sr"]
    first = np.hypot(*(sr[:, :2] - sr[0, :2]).T) < 0.1
    np.testing.assert_allclose(np.diff(np.sort(sr[first, 2])), 3.905, atol=1e-6)
    assert first.sum() == 4


def _same_lattice(defects, lattice="graphene", seed=3):
    return make_structure(lattice, (15.0, 15.0), defects=defects, random_state=seed)


def test_vacancy_removes_one_atom_and_marks_its_neighbours():
    clean, vac = _same_lattice(None), _same_lattice({"vacancy": 1})
    assert len(clean) - len(vac) == 1
    roles = np.array(ROLES)[vac.arrays["role"]]
    assert np.sum(roles == "vacancy_neighbor") == 3
    (defect,) = vac.info["defects"]
    y, x = defect["position"]
    near = vac.positions[roles == "vacancy_neighbor"]
    np.testing.assert_allclose(np.hypot(near[:, 0] - x, near[:, 1] - y), 1.42, atol=0.05)


def test_divacancy_substitution_and_stone_wales():
    clean = _same_lattice(None)
    assert len(clean) - len(_same_lattice({"divacancy": 1})) == 2
    sub = _same_lattice({"substitution": 2})
    assert sub.get_chemical_symbols().count("Si") == 2
    assert np.sum(sub.arrays["role"] == ROLES.index("dopant")) == 2
    sw = _same_lattice({"stone_wales": 1})
    assert len(sw) == len(clean)
    moved = np.flatnonzero(sw.arrays["role"] == ROLES.index("stone_wales"))
    assert len(moved) == 2
    a, b = sw.positions[moved, :2]
    assert np.hypot(*(a - b)) == pytest.approx(1.42, abs=0.02)
    # the rotated bond is perpendicular to the original one
    a0, b0 = clean.positions[moved, :2]
    assert abs(np.dot(a - b, a0 - b0)) < 1e-6


def test_tmd_sulfur_vacancy_leaves_a_single_s_column_and_dopants_are_named():
    atoms = make_structure("MoS2", (20.0, 20.0), defects={"substitution": 3, "vacancy": 3},
                           min_defect_separation=4.0, random_state=5)
    cols = project_columns(atoms, pixel_size=0.1)
    planted = [d["kind"] for d in atoms.info["defects"]]
    assert planted.count("vacancy") == 3
    odd = set(cols.names) - {"Mo", "S2"}
    assert odd and odd <= {"S", "W", "SSe"}


def test_same_seed_same_structure_and_rotation_changes_it():
    a = make_structure("hBN", (10.0, 10.0), random_state=7)
    b = make_structure("hBN", (10.0, 10.0), random_state=7)
    np.testing.assert_array_equal(a.positions, b.positions)
    r0 = make_structure("hBN", (10.0, 10.0), rotation=0, random_state=7)
    r30 = make_structure("hBN", (10.0, 10.0), rotation=30, random_state=7)
    assert r0.info["rotation"] == 0 and r30.info["rotation"] == 30
    assert not np.allclose(r0.positions[:5], r30.positions[:5])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lattice": "diamond"}, "lattice='diamond' is unknown"),
        ({"defects": {"antisite": 1}}, "unknown defect kind 'antisite'"),
        ({"lattice": "MoS2", "defects": {"stone_wales": 1}}, "not available for lattice"),
        ({"field_of_view": (2.0, 2.0)}, "smaller than one unit cell"),
        ({"field_of_view": (8.0, 8.0), "defects": {"vacancy": 20}}, "no room for 20 defects"),
        ({"defects": {"vacancy": -1}}, "non-negative integer"),
        ({"field_of_view": "big"}, "field_of_view must be"),
    ],
)
def test_bad_structure_requests_name_the_problem(kwargs, match):
    kwargs = {"field_of_view": (12.0, 12.0), **kwargs}
    with pytest.raises(ValueError, match=match):
        make_structure(random_state=0, **kwargs)


def test_project_columns_rejects_unknown_column_classes_and_empty_structures():
    atoms = make_structure("MoS2", (10.0, 10.0), defects=None, random_state=0)
    with pytest.raises(ValueError, match="not among the classes"):
        project_columns(atoms, 0.1, classes=["background", "Mo"])
    with pytest.raises(ValueError, match="no atoms"):
        project_columns(atoms[:0], 0.1)


def test_empty_sites_are_the_vacancies_that_hold_no_atom():
    from sklatom.structures import empty_sites

    atoms = make_structure("graphene", (19.2, 19.2), defects={"vacancy": 3}, random_state=0)
    sites = empty_sites(atoms)
    assert sites.shape == (3, 2)
    assert np.all((sites > 0) & (sites < 19.2))  # Å inside the scanned region
    # no atom within 0.3 Å of an empty site (in projection), and a lattice bond from one
    y0, x0 = scan_region(atoms)[:2]
    d = np.hypot(*(atoms.positions[:, [1, 0]][:, None] - (sites + (y0, x0))).T)
    assert d.min() > 1.2
    # a TMD "vacancy" of one S of two keeps its column: that site is not empty
    mos2 = make_structure("MoS2", (19.2, 19.2), defects={"vacancy": 3}, random_state=0)
    assert len(empty_sites(mos2)) < 3
    assert empty_sites(make_structure("graphene", (9.6, 9.6), defects=None)).shape == (0, 2)
