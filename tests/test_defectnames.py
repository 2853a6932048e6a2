"""Tests of sklatom._defectnames: defect names and structural hashes on tiny hand-made defects.

Each defect is a few atoms with (y, x) positions in Å and the flags the estimator's analysis
would give them; the names follow the naming scheme of :mod:`sklatom.graphs`. Names of
defects in generated lattices are tested in test_graphs.py.
"""

import doctest
from collections import Counter

import networkx as nx
import numpy as np
import pytest
from scipy.spatial import cKDTree

import sklatom._defectnames
from sklatom._bondgraph import BondGraph
from sklatom._defectnames import (count_vacancies, defect_graph, defect_name, dopant_bonds,
                                  formula, interstitial_part, ring_part, species_label,
                                  structural_hash, vacancy_part)
from sklatom.graphs import _ImageAnalysis

BOND = 1.42  # Å
TOLERANCE = 0.3
CUTOFFS = np.full((2, 2), 1.6 * (1 + TOLERANCE))  # Å; dopant bonds up to 1.6 * 1.15 = 1.84 Å
C_SI = ["C", "Si"]


def directions(degrees):
    """Unit vectors (y, x) at angles in degrees from the x axis."""
    phi = np.radians(degrees)
    return np.column_stack([np.sin(phi), np.cos(phi)])


def around(distances):
    """Positions (y, x) in Å at ``distances`` from the origin, evenly spaced in angle from 90°."""
    return np.asarray(distances)[:, None] * directions(90.0 + 360.0 * np.arange(len(distances))
                                                       / len(distances))


def analysis(pos, spc, bonds=(), *, dopant=(), interstitial=(), sites=None, owners=(),
             anomalous=lambda g: np.zeros(len(g.face_size), dtype=bool)):
    """The fields of an image's analysis that naming reads; the others are empty."""
    pos = np.asarray(pos, dtype=float)
    n = len(pos)
    bi, bj = np.array(bonds, dtype=np.int64).reshape(-1, 2).T
    mask = np.zeros(n, dtype=bool)
    g = BondGraph(pos, np.asarray(spc), bi, bj, tree=cKDTree(pos),
                  interstitial=np.isin(np.arange(n), interstitial))
    zeros = np.zeros(n, dtype=np.int64)
    return _ImageAnalysis(
        graph=g, edge=mask, missing_in=zeros, missing_out=zeros,
        sites=np.zeros((0, 2)) if sites is None else np.asarray(sites, dtype=float),
        owners=np.asarray(owners, dtype=np.int64), expected=zeros,
        dopant=np.isin(np.arange(n), dopant), flagged=mask, cluster=zeros - 1, n_clusters=0,
        anomalous_ring=anomalous(g), hole=np.zeros(len(g.face_size), dtype=bool),
        coord_bad=mask)


def name(res, members, species=C_SI, host_species=("C",), neighbor_species=None):
    return defect_name(res, np.asarray(members), species=species,
                       host_species=list(host_species), neighbor_species=neighbor_species or {},
                       bond_cutoffs=CUTOFFS, bond_tolerance=TOLERANCE)


# --------------------------------------------------------------------------------------------
# formulas and the parts of a name
# --------------------------------------------------------------------------------------------
def test_species_labels_and_formulas():
    assert [species_label(s) for s in ("C", "S2", "OTi", "class1")] == [
        "C", "(S2)", "(OTi)", "(class1)"]
    assert formula(Counter({"Si": 1, "C": 3})) == "C3Si1"
    assert formula(Counter({"S2": 3, "W": 1})) == "(S2)3W1"
    assert formula(Counter()) == ""


def test_interstitial_part():
    assert interstitial_part(Counter({"C": 2}), ["C"]) == "I2"
    assert interstitial_part(Counter({"Si": 1}), ["C"]) == "ISi1"
    # with several host species the formula is always given
    assert interstitial_part(Counter({"B": 1}), ["B", "N"]) == "IB1"


def test_sites_closer_than_the_merge_distance_are_one_missing_atom():
    three = around([0.05, 0.05, 0.05])  # the three neighbours of a vacancy miss one site
    assert count_vacancies(three, 0.85) == 1
    assert count_vacancies(np.vstack([three, three + [0.0, 1.42]]), 0.85) == 2
    assert count_vacancies(np.vstack([three, three + [0.0, 1.42]]), 1.5) == 1


def test_vacancy_part_names_the_missing_species_when_the_pattern_says_it():
    mos2 = {"S2": "Mo", "Mo": "S2"}
    assert vacancy_part(1, {"S2"}, ["Mo", "S2"], mos2) == "V1_Mo"
    assert vacancy_part(1, {"S2", "Mo"}, ["Mo", "S2"], mos2) == "V1"  # both missing
    assert vacancy_part(1, {"S2"}, ["Mo", "S2"], {}) == "V1"  # no clear pattern
    assert vacancy_part(2, {"C"}, ["C"], {"C": "C"}) == "V2"  # one host species: no tag


@pytest.mark.parametrize("small, holes, n_vacancies, at_border, expected", [
    ([5, 5, 7, 7], [], 0, False, "SW"),
    ([5, 7], [], 0, True, "SW"),  # cut by the border
    ([5, 7], [], 0, False, "R5-7"),
    ([5, 5, 8], [], 0, False, "R5x2-8"),
    ([5, 5, 8], [14], 0, False, "R5x2-8"),  # holes only without anomalous rings
    ([], [12], 0, False, "R12"),
    ([], [12], 1, False, ""),  # a vacancy names its own hole
    ([], [], 0, True, ""),
])
def test_ring_part(small, holes, n_vacancies, at_border, expected):
    assert ring_part(small, holes, n_vacancies, at_border) == expected


# --------------------------------------------------------------------------------------------
# names of hand-made defects
# --------------------------------------------------------------------------------------------
def test_a_si_with_three_carbon_is_si1c3():
    res = analysis(np.vstack([[0.0, 0.0], around([BOND] * 3)]), [1, 0, 0, 0], dopant=[0])
    assert dopant_bonds(res.graph, res.dopant, [0], CUTOFFS, TOLERANCE) == {1, 2, 3}
    assert name(res, [0]) == "Si1C3"


def test_dopant_bonds_by_distance():
    # 1.80 Å is within the dopant-bond cutoff (1.84 Å) but more than 1.25 x the nearest
    res = analysis(np.vstack([[0.0, 0.0], around([BOND, BOND, 1.80])]), [1, 0, 0, 0],
                   dopant=[0])
    assert name(res, [0]) == "Si1C2"
    # at most four host atoms per dopant, the nearest
    res = analysis(np.vstack([[0.0, 0.0], around([BOND, BOND, BOND, BOND, 1.45])]),
                   [1, 0, 0, 0, 0, 0], dopant=[0])
    assert dopant_bonds(res.graph, res.dopant, [0], CUTOFFS, TOLERANCE) == {1, 2, 3, 4}
    assert name(res, [0]) == "Si1C4"
    # a bonded Si pair counts the distinct carbon bonded to either: Si2C4
    pair = np.array([[0.0, -BOND / 2], [0.0, BOND / 2]])
    c = np.vstack([pair[0] + BOND * directions([120.0, 240.0]),
                   pair[1] + BOND * directions([60.0, -60.0])])
    res = analysis(np.vstack([pair, c]), [1, 1, 0, 0, 0, 0], dopant=[0, 1])
    assert name(res, [0, 1]) == "Si2C4"


def test_a_vacancy_from_the_sites_its_neighbours_miss():
    pos = around([BOND] * 3)  # the three neighbours of the missing atom at the origin
    res = analysis(pos, [0, 0, 0], sites=around([0.05] * 3), owners=[0, 1, 2])
    assert name(res, [0, 1, 2]) == "V1"
    # two missing atoms a bond apart are still two
    res = analysis(pos, [0, 0, 0], sites=np.vstack([around([0.05] * 2), [[0.0, 1.4]]]),
                   owners=[0, 1, 2])
    assert name(res, [0, 1, 2]) == "V2"
    # MoS2: the S2 columns around a missing Mo
    res = analysis(pos, [1, 1, 1], sites=around([0.05] * 3), owners=[0, 1, 2])
    assert name(res, [0, 1, 2], species=["Mo", "S2"], host_species=["Mo", "S2"],
                neighbor_species={"S2": "Mo", "Mo": "S2"}) == "V1_Mo"


def test_interstitials_rings_and_an_odd_coordination():
    hexagon = around([BOND] * 6)
    res = analysis(np.vstack([hexagon, [[0.0, 0.0]]]), [0] * 7,
                   [(a, (a + 1) % 6) for a in range(6)], interstitial=[6])
    assert name(res, [6]) == "I1"
    pentagon = around([BOND] * 5)
    res = analysis(pentagon, [0] * 5, [(a, (a + 1) % 5) for a in range(5)],
                   anomalous=lambda g: g.face_inner.copy())
    assert name(res, [0, 1, 2, 3, 4]) == "R5"
    res = analysis(hexagon, [0] * 6, [(a, (a + 1) % 6) for a in range(6)])
    assert name(res, [0]) == "XC1"  # flagged for its coordination only


# --------------------------------------------------------------------------------------------
# the defect's graph and its hash
# --------------------------------------------------------------------------------------------
def test_defect_graph_holds_the_flagged_atoms_and_their_first_neighbours():
    square = np.array([[0.0, 0.0], [0.0, BOND], [BOND, BOND], [BOND, 0.0]])
    res = analysis(square, [0] * 4, [(0, 1), (1, 2), (2, 3), (0, 3)])
    G = defect_graph(res.graph, np.array([0]), np.array([1, 0, 0, 0]), C_SI)
    assert dict(G.nodes(data="label")) == {0: "C:3:d", 1: "C:2:n", 3: "C:2:n"}
    assert sorted(G.edges()) == [(0, 1), (0, 3)]
    # bonds between first neighbours belong to the graph too
    triangle = analysis(square[:3], [0] * 3, [(0, 1), (1, 2), (0, 2)], interstitial=[0])
    G = defect_graph(triangle.graph, np.array([0]), np.zeros(3, dtype=int), C_SI)
    assert sorted(G.edges()) == [(0, 1), (0, 2), (1, 2)] and G.nodes[0]["label"] == "C:2:i"


def test_the_hash_names_the_structure_not_the_atom_indices():
    star = analysis(np.vstack([[0.0, 0.0], around([BOND] * 3)]), [1, 0, 0, 0], dopant=[0],
                    bonds=[(0, 1), (0, 2), (0, 3)])
    G = defect_graph(star.graph, np.array([0]), np.zeros(4, dtype=int), C_SI)
    h = structural_hash(G)
    assert len(h) == 16 and int(h, 16) >= 0
    assert structural_hash(nx.relabel_nodes(G, {0: 7, 1: 3, 2: 9, 3: 0})) == h
    other = defect_graph(star.graph, np.array([0]), np.zeros(4, dtype=int), ["C", "Ge"])
    assert structural_hash(other) != h
    two_bonds = defect_graph(star.graph, np.array([0, 1]), np.zeros(4, dtype=int), C_SI)
    assert structural_hash(two_bonds) != h


def test_docstring_examples():
    result = doctest.testmod(sklatom._defectnames, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 8 and result.failed == 0
