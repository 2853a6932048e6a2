"""Tests of sklatom._bondgraph: the bond-graph kernels on tiny hand-made graphs, exact answers.

Positions are (y, x) in Å. A hexagon of side 1.42 Å is graphene's ring; the kernels are tested
here away from the estimator (whose tests, on generated lattices, are in test_graphs.py).
"""

import doctest

import numpy as np
import pytest
from scipy.spatial import cKDTree

import sklatom._bondgraph
from sklatom._bondgraph import (Border, BondGraph, coincident_atoms, find_bonds, inside_rings,
                                missing_neighbours, parse_species, prior_radius)

BOND = 1.42  # Å
SQUARE = np.array([[0.0, 0.0], [0.0, BOND], [BOND, BOND], [BOND, 0.0]])
HEXAGON = BOND * np.column_stack([np.sin(np.arange(6) * np.pi / 3),
                                  np.cos(np.arange(6) * np.pi / 3)])
ONE_SPECIES = np.array([[1.3 * BOND]])  # cutoff in Å


def bond_set(i, j):
    return {(int(a), int(b)) for a, b in zip(i, j)}


def graph(pos, bonds):
    bi, bj = np.array(bonds, dtype=np.int64).reshape(-1, 2).T
    return BondGraph(pos, np.zeros(len(pos), dtype=np.int64), bi, bj)


def inner_faces(g):
    return sorted(g.face_size[g.face_inner].tolist())


# --------------------------------------------------------------------------------------------
# species names
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, elements", [
    ("C", {"C": 1}), ("S2", {"S": 2}), ("OTi", {"O": 1, "Ti": 1}), ("X", {}), ("class1", {}),
    ("light", {}), ("Heavy_2", {}),
])
def test_parse_species(name, elements):
    assert parse_species(name, "species[0]") == elements


@pytest.mark.parametrize("name", ["Unobtainium", "Xx", "c", "", "S-2"])
def test_parse_species_refuses_what_is_not_a_species(name):
    with pytest.raises(ValueError, match=r"species\[1\]=.* is not a species"):
        parse_species(name, "species[1]")


def test_parse_species_wants_a_string():
    with pytest.raises(TypeError, match="species must be a string"):
        parse_species(6, "species")


def test_prior_radius_is_the_largest_covalent_radius_of_the_column():
    assert prior_radius("C") == pytest.approx(0.76)
    assert prior_radius("S2") == pytest.approx(1.05)
    assert prior_radius("OTi") == pytest.approx(1.60)  # Ti, not O
    assert prior_radius("class1") is None


# --------------------------------------------------------------------------------------------
# bonds
# --------------------------------------------------------------------------------------------
def test_ranges_concatenates_aranges():
    got = sklatom._bondgraph._ranges([0, 10, 5], [3, 2, 0])
    np.testing.assert_array_equal(got, [0, 1, 2, 10, 11])
    assert sklatom._bondgraph._ranges([4], [0]).shape == (0,)


def test_a_square_has_its_four_sides_and_the_lune_rule_cuts_its_diagonals():
    spc = np.zeros(4, dtype=np.int64)
    i, j, tree, inter = find_bonds(SQUARE, spc, ONE_SPECIES)
    assert bond_set(i, j) == {(0, 1), (1, 2), (2, 3), (0, 3)}
    assert np.all(i < j) and isinstance(tree, cKDTree) and not inter.any()
    # a cutoff long enough for the diagonals (2.01 Å): the other two corners lie in their lune
    i, j, _, _ = find_bonds(SQUARE, spc, np.array([[2.5]]))
    assert bond_set(i, j) == {(0, 1), (1, 2), (2, 3), (0, 3)}


def test_a_third_atom_in_the_lune_breaks_a_bond():
    a, b = [0.0, 0.0], [0.0, 1.4]
    spc = np.zeros(3, dtype=np.int64)
    i, j, _, _ = find_bonds(np.array([a, b]), spc[:2], np.array([[1.5]]))
    assert bond_set(i, j) == {(0, 1)}
    # closer to both than they are to each other (0.76 Å < 1.4 Å): A-B is cut
    i, j, _, _ = find_bonds(np.array([a, b, [0.3, 0.7]]), spc, np.array([[1.5]]))
    assert bond_set(i, j) == {(0, 2), (1, 2)}
    # 1.476 Å from both, just outside the lune: A-B stays, and so do A-C and B-C
    i, j, _, _ = find_bonds(np.array([a, b, [1.3, 0.7]]), spc, np.array([[1.5]]))
    assert bond_set(i, j) == {(0, 1), (0, 2), (1, 2)}


def test_species_pairs_with_a_zero_cutoff_are_never_bonded():
    pos = np.array([[0.0, 0.0], [0.0, 1.4], [0.0, 2.8]])
    spc = np.array([0, 1, 0])
    i, j, _, _ = find_bonds(pos, spc, np.array([[1.5, 0.0], [0.0, 1.5]]))
    assert bond_set(i, j) == set()
    i, j, _, _ = find_bonds(pos, spc, np.array([[1.5, 1.5], [1.5, 1.5]]))
    assert bond_set(i, j) == {(0, 1), (1, 2)}


def test_fewer_than_two_atoms_have_no_bonds_and_no_tree():
    i, j, tree, inter = find_bonds(np.zeros((1, 2)), np.zeros(1, dtype=np.int64), ONE_SPECIES)
    assert len(i) == len(j) == 0 and tree is None and inter.tolist() == [False]


def test_an_atom_in_the_middle_of_a_hexagon_is_left_out():
    pos = np.vstack([HEXAGON, [[0.0, 0.0]]])
    spc = np.zeros(7, dtype=np.int64)
    i, j, _, inter = find_bonds(pos, spc, ONE_SPECIES, z_max=np.array([4]))
    assert inter.tolist() == [False] * 6 + [True]
    assert bond_set(i, j) == {(a, b) for a, b in [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5),
                                                  (0, 5)]}


def test_inside_rings_counts_bonds_among_the_neighbours():
    # the wheel's candidate bonds: 6 ring sides and 6 spokes to atom 6
    ring = [(a, (a + 1) % 6) for a in range(6)]
    ci, cj = np.array(ring + [(a, 6) for a in range(6)]).T
    limit = np.full(7, 4)
    assert inside_rings(ci, cj, 7, limit).tolist() == [False] * 6 + [True]
    # without the ring's bonds the centre's neighbours are not bonded to each other
    ci, cj = np.array([(a, 6) for a in range(6)]).T
    assert not inside_rings(ci, cj, 7, limit).any()
    # a negative limit: never inside a ring
    assert not inside_rings(*np.array(ring + [(a, 6) for a in range(6)]).T, 7,
                            np.full(7, -1)).any()


def test_of_two_atoms_a_third_of_a_bond_apart_the_second_is_left_out():
    pos = np.array([[0.0, 0.0], [0.0, 1.4], [0.0, 1.7]])
    i, j, _, inter = find_bonds(pos, np.zeros(3, dtype=np.int64), np.array([[1.5]]),
                                z_max=np.array([3]))
    assert inter.tolist() == [False, False, True]
    assert bond_set(i, j) == {(0, 1)}


# --------------------------------------------------------------------------------------------
# coincident atoms
# --------------------------------------------------------------------------------------------
def test_coincident_atoms_are_merged_into_the_first():
    keep, inverse = coincident_atoms(np.array([[0.0, 0.0], [5.0, 5.0], [0.0, 0.1]]), 0.2)
    assert keep.tolist() == [0, 1] and inverse.tolist() == [0, 1, 0]
    # a chain of close atoms is one group, although its ends are 0.3 Å apart
    chain = np.array([[3.0, 3.0], [0.0, 0.0], [0.0, 0.15], [0.0, 0.3]])
    keep, inverse = coincident_atoms(chain, 0.2)
    assert keep.tolist() == [0, 1] and inverse.tolist() == [0, 1, 1, 1]


def test_no_coincident_atoms_is_none():
    assert coincident_atoms(SQUARE, 0.2) is None
    assert coincident_atoms(np.zeros((1, 2)), 0.2) is None


# --------------------------------------------------------------------------------------------
# faces
# --------------------------------------------------------------------------------------------
def test_a_square_has_one_inner_face_of_four():
    g = graph(SQUARE, [(0, 1), (1, 2), (2, 3), (0, 3)])
    assert inner_faces(g) == [4]
    assert sorted(g.face_size.tolist()) == [4, 4]  # and the outer face
    assert g.coordination.tolist() == [2, 2, 2, 2]
    atoms, faces = g.atom_faces()
    inner = g.face_inner[faces]
    assert sorted(atoms[inner].tolist()) == [0, 1, 2, 3]  # every corner on the ring once
    np.testing.assert_allclose(g.length, BOND)


def test_a_hexagon_has_one_inner_face_of_six():
    g = graph(HEXAGON, [(a, (a + 1) % 6) for a in range(6)])
    assert inner_faces(g) == [6]
    assert g.n == 6 and len(g.src) == 12


def test_two_squares_sharing_a_side_and_a_wheel():
    # 2 x 3 grid: two inner squares, one outer face of six
    pos = np.array([[r, c] for r in (0.0, BOND) for c in (0.0, BOND, 2 * BOND)])
    g = graph(pos, [(0, 1), (1, 2), (3, 4), (4, 5), (0, 3), (1, 4), (2, 5)])
    assert inner_faces(g) == [4, 4] and sorted(g.face_size.tolist()) == [4, 4, 6]
    # a hexagon with its centre bonded to every corner: six triangles
    wheel = graph(np.vstack([HEXAGON, [[0.0, 0.0]]]),
                  [(a, (a + 1) % 6) for a in range(6)] + [(a, 6) for a in range(6)])
    assert inner_faces(wheel) == [3] * 6
    assert wheel.coordination.tolist() == [3] * 6 + [6]


def test_a_tree_has_no_inner_face_and_no_bonds_no_faces():
    g = graph(np.array([[0.0, 0.0], [0.0, BOND], [BOND, BOND]]), [(0, 1), (1, 2)])
    assert g.face_size.tolist() == [4] and inner_faces(g) == []  # the walk around the path
    g = graph(SQUARE, [])
    assert g.face_size.shape == (0,) and g.coordination.tolist() == [0] * 4
    assert g.interstitial.tolist() == [False] * 4 and g.tree is None


# --------------------------------------------------------------------------------------------
# border and missing neighbours
# --------------------------------------------------------------------------------------------
def test_border_distance_of_a_point():
    square = 4 * SQUARE / BOND  # 4 Å side
    points = np.array([[2.0, 2.0], [1.0, 2.0], [5.0, 2.0]])
    np.testing.assert_allclose(Border(square, 1.0, None).distance(points), [2.0, 1.0, -1.0])
    # a 3 x 3 px image at 1 Å/px ends at 2.5 Å: nearer than the atoms' hull
    np.testing.assert_allclose(Border(square, 1.0, (3, 3)).distance(points), [0.5, 0.5, -2.5])
    # the hull cuts the bounding box's corner
    triangle = np.array([[0.0, 0.0], [0.0, 4.0], [4.0, 0.0]])
    np.testing.assert_allclose(Border(triangle, 1.0, None).distance(np.array([[2.0, 2.0]])),
                               [0.0], atol=1e-12)


def test_border_of_too_few_or_collinear_atoms_is_zero():
    points = np.array([[1.0, 1.0], [7.0, 7.0]])
    assert Border(np.zeros((0, 2)), 1.0, None).distance(points).tolist() == [0.0, 0.0]
    assert Border(SQUARE[:2], 1.0, None).distance(points).tolist() == [0.0, 0.0]
    line = np.array([[0.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    assert Border(line, 1.0, None).distance(points).tolist() == [0.0, 0.0]
    assert Border(SQUARE, 1.0, None).distance(np.zeros((0, 2))).shape == (0,)


def _two_bonds(extra=()):
    """Atom 0 bonded to atoms at 0° and 120° (x, y), its third site at 240° empty; atoms 3-10
    on a circle of 5 Å (not bonded, not host) put the site inside the hull; then ``extra``."""
    deg = np.radians([0.0, 120.0])
    first = np.vstack([[0.0, 0.0], BOND * np.column_stack([np.sin(deg), np.cos(deg)])])
    phi = np.arange(8) * np.pi / 4
    pos = np.vstack([first, 5.0 * np.column_stack([np.sin(phi), np.cos(phi)]),
                     np.reshape(extra, (-1, 2))])
    g = BondGraph(pos, np.zeros(len(pos), dtype=np.int64), np.array([0, 0]), np.array([1, 2]),
                  tree=cKDTree(pos))
    host = np.arange(len(pos)) == 0
    expected = np.where(host, 3, -1)
    return g, Border(pos, 1.0, None), host, expected


SITE_240 = BOND * np.array([np.sin(np.radians(240.0)), np.cos(np.radians(240.0))])


def test_a_missing_neighbour_sits_one_bond_away_in_the_empty_direction():
    g, border, host, expected = _two_bonds()
    edge = np.zeros(g.n, dtype=bool)
    inside, outside, sites, owners = missing_neighbours(g, border, edge, host, expected)
    assert inside.tolist() == [1] + [0] * 10 and not outside.any()
    np.testing.assert_allclose(sites, [SITE_240], atol=1e-12)
    assert owners.tolist() == [0]


def test_a_missing_neighbour_outside_the_hull_or_on_an_atom_is_no_vacancy():
    g, border, host, expected = _two_bonds()
    keep = np.arange(3)  # without the circle the site is outside the atoms' hull
    g3 = BondGraph(g.pos[keep], g.spc[keep], np.array([0, 0]), np.array([1, 2]),
                   tree=cKDTree(g.pos[keep]))
    inside, outside, sites, _ = missing_neighbours(g3, Border(g.pos[keep], 1.0, None),
                                                   np.zeros(3, dtype=bool), host[keep],
                                                   expected[keep])
    assert inside.tolist() == [0, 0, 0] and outside.tolist() == [1, 0, 0] and len(sites) == 0
    # an atom 0.3 Å from the site: a stretched bond, neither inside nor outside
    g, border, host, expected = _two_bonds(extra=SITE_240 + [0.3, 0.0])
    inside, outside, sites, _ = missing_neighbours(g, border, np.zeros(g.n, dtype=bool), host,
                                                   expected)
    assert not inside.any() and not outside.any() and len(sites) == 0


def test_an_atom_without_bonds_misses_all_its_neighbours():
    g, border, host, expected = _two_bonds()
    lonely = BondGraph(g.pos, g.spc, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64),
                       tree=g.tree)
    edge = np.zeros(g.n, dtype=bool)
    inside, outside, sites, _ = missing_neighbours(lonely, border, edge, host, expected)
    assert inside[0] == 3 and not outside.any() and len(sites) == 0
    edge[0] = True  # at the edge they are missing because of the border
    inside, outside, _, _ = missing_neighbours(lonely, border, edge, host, expected)
    assert not inside.any() and outside[0] == 3


def test_docstring_examples():
    result = doctest.testmod(sklatom._bondgraph, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 3 and result.failed == 0
