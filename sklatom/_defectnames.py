"""Names and structural hashes of defects: the naming scheme of :mod:`sklatom.graphs`.

A defect is a group of flagged atoms (``members``) in the analysis of one image (the
``_ImageAnalysis`` of :class:`sklatom.graphs.GraphDefectClassifier`: its bond graph, dopants,
missing-neighbour sites, anomalous rings and holes). :func:`defect_name` joins the parts that
apply with ``"+"``: dopants with the host atoms bonded to them (:func:`dopant_bonds`),
interstitials, vacancies (:func:`count_vacancies`), rings (:func:`ring_part`), else ``"X"`` and
the formula of the flagged atoms. :func:`structural_hash` is the Weisfeiler-Lehman hash of the
defect's graph (:func:`defect_graph`: the flagged atoms and their first neighbours).

The scheme is documented for users in the docstring of :mod:`sklatom.graphs`. Nothing here
holds estimator state: what a name needs of the fitted lattice (species names, host species,
bond cutoffs) comes as arguments.
"""

from collections import Counter

import networkx as nx
import numpy as np
from ase.data import chemical_symbols
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from ._bondgraph import FALLBACK_BOND

_MAX_DOPANT_BONDS = 4  # a dopant is bonded to at most this many host atoms (Si in graphene: 3-4)
_DOPANT_BOND_TOLERANCE = 0.15  # a dopant-host bond is at most this much longer than learned
_NEAREST_FACTOR = 1.25  # ... and than the dopant's nearest neighbour
_VACANCY_MERGE = 0.6  # sites closer than this times the bond length are one missing atom
# ring groups named "SW" (Stone-Wales): the 5-7-7-5 rings, or part of them at the border
_STONE_WALES = [5, 5, 7, 7]
_STONE_WALES_CUT = ([5, 7], [5, 5, 7], [5, 7, 7])


# --------------------------------------------------------------------------------------------
# formulas
# --------------------------------------------------------------------------------------------
def species_label(name):
    """A column name as it appears inside a defect name: parentheses unless a bare element.

    Examples
    --------
    >>> species_label("Si"), species_label("S2"), species_label("light")
    ('Si', '(S2)', '(light)')
    """
    return name if name in chemical_symbols else f"({name})"


def formula(counter):
    """Species labels and counts, sorted by name: ``Counter({"Si": 1, "C": 3})`` -> ``"C3Si1"``.

    Examples
    --------
    >>> from collections import Counter
    >>> formula(Counter({"Si": 1, "C": 3})), formula(Counter({"S2": 3}))
    ('C3Si1', '(S2)3')
    """
    return "".join(f"{species_label(s)}{c}" for s, c in sorted(counter.items()))


# --------------------------------------------------------------------------------------------
# the parts of a name
# --------------------------------------------------------------------------------------------
def dopant_bonds(g, dopant, dop, bond_cutoffs, bond_tolerance):
    """Host atoms bonded to the dopants ``dop``, by distance.

    A host atom is bonded to a dopant when it lies within 15 % of the dopant-host bond
    length and within 25 % of the dopant's nearest neighbour (so the second neighbours of a
    distorted lattice stay out), at most the :data:`_MAX_DOPANT_BONDS` nearest per dopant.

    Parameters
    ----------
    g : BondGraph
        The bond graph, with its KD-tree and interstitials (never bonded).
    dopant : ndarray of shape (n,), dtype bool
        Atoms of a dopant species (never counted as hosts).
    dop : list of int
        The dopant atoms of the defect.
    bond_cutoffs : ndarray of shape (n_species, n_species)
        Bond cutoff in Å per species pair: the learned bond length times
        ``1 + bond_tolerance``.
    bond_tolerance : float
        The tolerance of ``bond_cutoffs``.

    Returns
    -------
    hosts : set of int
    """
    out = set()
    if g.tree is None:
        return out
    tol = float(bond_tolerance)
    cut = bond_cutoffs / (1 + tol) * (1 + min(tol, _DOPANT_BOND_TOLERANCE))
    for a in dop:
        sa = g.spc[a]
        near = np.asarray(g.tree.query_ball_point(g.pos[a], float(cut[sa].max())), int)
        near = near[(near != a) & ~g.interstitial[near]]
        d = np.linalg.norm(g.pos[near] - g.pos[a], axis=1)
        if len(d) == 0:
            continue
        ok = (d <= cut[sa, g.spc[near]]) & (d <= _NEAREST_FACTOR * d.min()) & ~dopant[near]
        order = np.argsort(d[ok], kind="stable")[:_MAX_DOPANT_BONDS]
        out.update(int(b) for b in near[ok][order])
    return out


def interstitial_part(kinds, host_species):
    """``"I<m>"`` for ``m`` interstitials of the single host species, else ``"I"`` + formula.

    Examples
    --------
    >>> from collections import Counter
    >>> interstitial_part(Counter({"C": 2}), ["C"]), interstitial_part(Counter({"Si": 1}), ["C"])
    ('I2', 'ISi1')
    """
    if len(host_species) == 1 and set(kinds) == set(host_species):
        return f"I{sum(kinds.values())}"
    return "I" + formula(kinds)


def count_vacancies(sites, merge):
    """Missing atoms among the sites of missing neighbours: groups of sites closer than
    ``merge`` (Å, chains included) are one atom.

    Examples
    --------
    >>> import numpy as np
    >>> count_vacancies(np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [3.0, 3.0]]), 0.85)
    2
    """
    pairs = cKDTree(sites).query_pairs(merge, output_type="ndarray")
    adj = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])),
                     shape=(len(sites),) * 2)
    return connected_components(adj, directed=False)[0]


def vacancy_part(m, under, host_species, neighbor_species):
    """``"V<m>"``, with ``"_<species>"`` of the missing atoms when the lattice has several host
    species and the neighbour pattern of the atoms that miss them (species ``under``) names one.

    Examples
    --------
    >>> vacancy_part(1, {"S2"}, ["Mo", "S2"], {"S2": "Mo", "Mo": "S2"})
    'V1_Mo'
    >>> vacancy_part(2, {"C"}, ["C"], {"C": "C"})
    'V2'
    """
    miss = {neighbor_species.get(s) for s in under}
    tag = ""
    if len(host_species) > 1 and len(miss) == 1 and None not in miss:
        tag = "_" + miss.pop()
    return f"V{m}{tag}"


def ring_part(small, holes, n_vacancies, at_border):
    """``"SW"``, ``"R"`` and ring sizes, or ``""`` (no ring part).

    Parameters
    ----------
    small : list of int
        Sorted sizes of the defect's anomalous rings (other than the lattice's, at most 2
        larger).
    holes : list of int
        Sorted sizes of its larger rings; named only when there is no anomalous ring and no
        vacancy (a vacancy names its own hole).
    n_vacancies : int
        Missing atoms of the defect.
    at_border : bool
        Whether the defect touches the edge band, misses neighbours outside the image or lies
        on the outer face: a 5-7-7-5 group there may be cut to 5-7, 5-5-7 or 5-7-7.

    Examples
    --------
    >>> ring_part([5, 5, 7, 7], [], 0, False), ring_part([5, 5, 8], [], 0, False)
    ('SW', 'R5x2-8')
    >>> ring_part([], [12], 0, False), ring_part([], [12], 1, False)
    ('R12', '')
    """
    rings = small if (small or n_vacancies > 0) else holes
    if small == _STONE_WALES or (at_border and small in _STONE_WALES_CUT):
        # a 5-7-7-5 ring group, possibly cut by the image border
        return "SW"
    if rings:
        cnt = Counter(sorted(rings))
        return "R" + "-".join(f"{k}x{v}" if v > 1 else f"{k}" for k, v in sorted(cnt.items()))
    return ""


# --------------------------------------------------------------------------------------------
# name and hash of a defect
# --------------------------------------------------------------------------------------------
def defect_name(analysis, members, *, species, host_species, neighbor_species, bond_cutoffs,
                bond_tolerance):
    """The generated name of one defect (see the naming scheme of :mod:`sklatom.graphs`).

    Parameters
    ----------
    analysis : _ImageAnalysis
        The analysis of the image (its ``graph``, ``dopant``, ``sites``, ``owners``,
        ``anomalous_ring``, ``hole``, ``edge`` and ``missing_out`` are read).
    members : ndarray of shape (n_members,), dtype int
        The defect's flagged atoms, ascending.
    species : list of str
        Species names; species index ``s`` is ``species[s]``.
    host_species : list of str
        The lattice's species.
    neighbor_species : dict
        Host species -> the species of its neighbours, where the lattice has one.
    bond_cutoffs : ndarray of shape (n_species, n_species)
        Bond cutoff in Å per species pair.
    bond_tolerance : float
        The tolerance of ``bond_cutoffs`` over the learned bond lengths.

    Returns
    -------
    name : str
    """
    g = analysis.graph
    parts = []
    # dopants and their neighbours
    inter = [a for a in members if g.interstitial[a]]
    dop = [a for a in members if analysis.dopant[a] and not g.interstitial[a]]
    if dop:
        host_nb = dopant_bonds(g, analysis.dopant, dop, bond_cutoffs, bond_tolerance)
        parts.append(formula(Counter(species[g.spc[a]] for a in dop))
                     + formula(Counter(species[g.spc[b]] for b in host_nb)))
    # interstitials (atoms inside a ring: adatoms, or false detections)
    if inter:
        parts.append(interstitial_part(Counter(species[g.spc[a]] for a in inter), host_species))
    # vacancies from missing neighbours
    m, under = 0, set()
    sel = np.isin(analysis.owners, members)
    if np.any(sel):
        sites, owners = analysis.sites[sel], analysis.owners[sel]
        bonded = np.isin(g.src, owners)
        bond = float(np.median(g.length[bonded])) if bonded.any() else FALLBACK_BOND
        m = count_vacancies(sites, _VACANCY_MERGE * bond)
        under = {species[g.spc[a]] for a in owners}
    if m > 0:
        parts.append(vacancy_part(m, under, host_species, neighbor_species))
    # rings
    a_src, a_face = g.atom_faces()
    fs = np.unique(a_face[np.isin(a_src, members)])
    small = sorted(g.face_size[fs[analysis.anomalous_ring[fs]]].tolist())
    holes = sorted(g.face_size[fs[analysis.hole[fs]]].tolist())
    at_border = bool(np.any(analysis.edge[members]) or np.any(analysis.missing_out[members])
                     or not np.all(g.face_inner[fs]))
    rings = ring_part(small, holes, m, at_border)
    if rings:
        parts.append(rings)
    if not parts:
        parts.append("X" + formula(Counter(species[g.spc[a]] for a in members)))
    return "+".join(parts)


def defect_graph(g, members, missing_out, species):
    """The graph of one defect: its flagged atoms, their first neighbours and the bonds
    among them.

    Node labels are ``"<species>:<coordination>:<role>"``, the role ``"d"`` for a flagged atom,
    ``"i"`` for an interstitial and ``"n"`` for a neighbour; the coordination counts the
    neighbours missing outside the image (``missing_out``) as present.

    Parameters
    ----------
    g : BondGraph
        The bond graph of the image.
    members : ndarray of shape (n_members,), dtype int
        The defect's flagged atoms.
    missing_out : ndarray of shape (n,), dtype int
        Missing neighbours per atom outside the image.
    species : list of str
        Species names.

    Returns
    -------
    graph : networkx.Graph
        Nodes are atom indices with the attribute ``label``.
    """
    core = set(members.tolist())
    nbrs = {int(a): g.dst[g.indptr[a]:g.indptr[a + 1]].tolist() for a in members}
    shell = sorted({b for a in core for b in nbrs[a]} - core)
    nodes = sorted(core) + shell
    G = nx.Graph()
    for a in nodes:
        # at the border, missing neighbours are outside the image: count them as present
        c = int(g.coordination[a] + missing_out[a])
        role = "i" if g.interstitial[a] else ("d" if a in core else "n")
        G.add_node(a, label=f"{species[g.spc[a]]}:{c}:{role}")
    for a in core:
        for b in nbrs[a]:
            G.add_edge(a, b)
    node_set = set(nodes)
    for a in shell:
        for b in g.dst[g.indptr[a]:g.indptr[a + 1]]:
            if int(b) in node_set:
                G.add_edge(a, int(b))
    return G


def structural_hash(G):
    """Weisfeiler-Lehman hash (16 hex digits) of a defect graph's node labels and bonds: the
    same structure gives the same hash in every image, whatever the atoms' indices."""
    return nx.weisfeiler_lehman_graph_hash(G, node_attr="label", iterations=3, digest_size=8)
