"""The bond graph of one image as arrays: species names, bonds, planar faces, border distance.

Pure functions and small classes on numpy/scipy arrays, with no estimator state, used by
:class:`sklatom.graphs.GraphDefectClassifier`:

* species names (:func:`parse_species`, :func:`prior_radius`): a column name is a chemical
  symbol, a column formula (``"S2"``, ``"OTi"``) or a generic class name (``"X"``,
  ``"class1"``, ``"light"``), and its covalent radius in Å is the prior of its bond lengths;
* bonds (:func:`find_bonds`, :func:`inside_rings`): species-pair cutoffs and the
  relative-neighbourhood (empty lune) rule, which keeps the graph planar, with atoms inside
  rings and double detections left out;
* coincident atoms (:func:`coincident_atoms`): the same atom listed twice;
* the planar faces of the graph (:class:`BondGraph`): its rings, one walk per face;
* missing neighbours (:func:`missing_neighbours`): the sites of the bonds an atom lacks;
* the border (:class:`Border`): the distance of points to the image border and to the convex
  hull of the atoms.

Positions are ``(y, x)`` = ``(row, col)`` in Å, species are indices into the estimator's
``species_``.
"""

import re

import numpy as np
from ase.data import atomic_numbers, chemical_symbols, covalent_radii
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import ConvexHull, QhullError, cKDTree

_FORMULA = re.compile(r"([A-Z][a-z]?)(\d*)")
# generic class names (no covalent-radius prior): "X", "class1", ... and the contrast classes of
# a general model ("light", "heavy": sklatom.load_pretrained().classes_)
_GENERIC = re.compile(r"^(X|atom|class|type|light|heavy|dim|bright)[_ ]?\d*$", re.IGNORECASE)
#: Bond length in Å when nothing is known about a species pair.
FALLBACK_BOND = 1.5


# --------------------------------------------------------------------------------------------
# species
# --------------------------------------------------------------------------------------------
def parse_species(name, where):
    """Elements of a column name: {"S": 2} for "S2", {} for a generic name; raise otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"{where} must be a string naming a species; got {name!r}")
    if _GENERIC.match(name):
        return {}
    parts = _FORMULA.findall(name)
    if not parts or "".join(s + c for s, c in parts) != name or any(
            s not in chemical_symbols for s, _ in parts):
        raise ValueError(
            f"{where}={name!r} is not a species: expected 'background', a chemical symbol or "
            f"column formula of symbols from ase.data.chemical_symbols (e.g. 'C', 'S2', 'OTi'), "
            f"or a generic name such as 'X' or 'class1'")
    counts = {}
    for s, c in parts:
        counts[s] = counts.get(s, 0) + (int(c) if c else 1)
    return counts


def prior_radius(name):
    """Covalent radius (Å) of a column: the largest of its elements; None for generic names."""
    elements = parse_species(name, "species")
    if not elements:
        return None
    return max(float(covalent_radii[atomic_numbers[s]]) for s in elements)


# --------------------------------------------------------------------------------------------
# bonds
# --------------------------------------------------------------------------------------------
def _ranges(starts, lengths):
    """Concatenated ``arange(s, s + l)`` for all (s, l), vectorised."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(np.asarray(starts, dtype=np.int64), lengths) + offsets


def find_bonds(pos, spc, cutoff, z_max=None):
    """Bonds (i < j) by species-pair cutoff and the relative-neighbourhood (empty lune) rule.

    Parameters
    ----------
    pos : ndarray of shape (n, 2)
        Positions (y, x) in Å.
    spc : ndarray of shape (n,)
        Species index per atom.
    cutoff : ndarray of shape (n_species, n_species)
        Bond cutoff in Å per species pair.
    z_max : ndarray of shape (n_species,) or None
        If given, atoms with more than ``z_max`` atoms within the cutoff that are bonded to
        each other (an atom in the middle of a ring: an interstitial, adatom or false
        detection), and the second of two atoms closer than a third of their cutoff (a double
        detection), are left out of the graph.

    Returns
    -------
    i, j : ndarray of shape (n_bonds,)
        Bonded atoms, ``i < j``.
    tree : cKDTree or None
        The KD-tree of ``pos``.
    interstitial : ndarray of shape (n,), dtype bool
        Atoms left out by ``z_max``.
    """
    n = len(pos)
    empty = np.zeros(0, dtype=np.int64)
    interstitial = np.zeros(n, dtype=bool)
    if n < 2:
        return empty, empty, None, interstitial
    present = np.unique(spc)
    rmax = float(cutoff[np.ix_(present, present)].max())
    tree = cKDTree(pos)
    pairs = tree.query_pairs(rmax, output_type="ndarray").astype(np.int64)
    if len(pairs) == 0:
        return empty, empty, tree, interstitial
    i, j = pairs[:, 0], pairs[:, 1]
    d = np.linalg.norm(pos[i] - pos[j], axis=1)
    # symmetric neighbour lists (CSR) of all pairs within rmax, for the lune test
    src = np.concatenate([i, j])
    J = np.concatenate([j, i])
    D = np.concatenate([d, d])
    order = np.argsort(src, kind="stable")
    J, D = J[order], D[order]
    deg = np.bincount(src, minlength=n)
    indptr = np.concatenate([[0], np.cumsum(deg)])
    cand = d <= cutoff[spc[i], spc[j]]
    if z_max is not None:
        # double detections: of two atoms closer than a third of a bond, keep the first
        close = d < cutoff[spc[i], spc[j]] / 3
        interstitial[np.maximum(i[close], j[close])] = True
        cand &= ~interstitial[i] & ~interstitial[j]
        interstitial |= inside_rings(i[cand], j[cand], n, z_max[spc])
        cand &= ~interstitial[i] & ~interstitial[j]
    ci, cj, cd = i[cand], j[cand], d[cand]
    if len(ci) == 0:
        return empty, empty, tree, interstitial
    lens = deg[ci]
    rep = np.repeat(np.arange(len(ci)), lens)
    idx = _ranges(indptr[ci], lens)
    k = J[idx]
    dik = D[idx]
    djk = np.linalg.norm(pos[cj[rep]] - pos[k], axis=1)
    blocked = (k != cj[rep]) & (dik < cd[rep]) & (djk < cd[rep]) & ~interstitial[k]
    bad = np.zeros(len(ci), dtype=bool)
    bad[rep[blocked]] = True
    return ci[~bad], cj[~bad], tree, interstitial


def inside_rings(ci, cj, n, limit):
    """Atoms with more than ``limit`` candidate neighbours that are bonded to each other.

    An atom in the middle of a ring (an adatom, or a false detection in a hexagon) is within
    the cutoff of the whole ring, whose atoms are bonded in turn: more than ``limit``
    neighbours and at least ``limit`` bonds among them. A lattice atom's neighbours are not
    bonded to each other, and an atom next to an adatom or in a Stone-Wales defect has at
    most two such bonds.

    Parameters
    ----------
    ci, cj : ndarray of shape (n_candidates,)
        Candidate bonds (each pair once), by cutoff only.
    n : int
        Number of atoms.
    limit : ndarray of shape (n,), dtype int
        Per atom the expected coordination plus one; negative: never inside a ring.

    Returns
    -------
    inside : ndarray of shape (n,), dtype bool
    """
    out = np.zeros(n, dtype=bool)
    deg = np.bincount(ci, minlength=n) + np.bincount(cj, minlength=n)
    suspects = np.flatnonzero((limit >= 0) & (deg > limit))
    if len(suspects) == 0:
        return out
    key = np.sort(np.concatenate([ci * n + cj, cj * n + ci]))
    is_s = np.zeros(n, dtype=bool)
    is_s[suspects] = True
    sel = is_s[ci] | is_s[cj]
    a = np.concatenate([ci[sel], cj[sel]])
    b = np.concatenate([cj[sel], ci[sel]])
    keep = is_s[a]
    a, b = a[keep], b[keep]
    for s in suspects:
        nb = b[a == s]
        u, v = np.triu_indices(len(nb), k=1)
        q = nb[u] * n + nb[v]
        pos = np.searchsorted(key, q)
        links = np.sum(key[np.minimum(pos, len(key) - 1)] == q)
        out[s] = links >= limit[s]
    return out


def coincident_atoms(pos, radius):
    """Groups of atoms closer than ``radius`` (chains included), each kept as its first atom.

    ``pos`` is ``(n, 2)`` in Å and ``radius`` in Å. Returns None when no two atoms are that
    close, else ``(keep, inverse)``: the indices of the kept atoms (ascending) and, for every
    atom, the position in ``keep`` of its group's atom.

    Examples
    --------
    >>> import numpy as np
    >>> coincident_atoms(np.array([[0.0, 0.0], [5.0, 5.0], [0.0, 0.1]]), 0.2)
    (array([0, 1]), array([0, 1, 0]))
    """
    n = len(pos)
    if n < 2:
        return None
    pairs = cKDTree(pos).query_pairs(radius, output_type="ndarray")
    if len(pairs) == 0:
        return None
    adj = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])),
                     shape=(n, n))
    _, comp = connected_components(adj, directed=False)
    first = np.full(comp.max() + 1, n)
    np.minimum.at(first, comp, np.arange(n))
    rep = first[comp]
    keep = np.flatnonzero(rep == np.arange(n))
    return keep, np.searchsorted(keep, rep)


# --------------------------------------------------------------------------------------------
# the graph and its faces
# --------------------------------------------------------------------------------------------
class BondGraph:
    """The bond graph of one image with its planar faces, as arrays.

    Directed edges (both directions of every bond) are sorted by source atom, then by angle;
    ``face[e]`` is the face left of edge ``e``; the faces of an atom's outgoing edges are the
    rings around it.

    Parameters
    ----------
    pos : ndarray of shape (n, 2)
        Positions (y, x) in Å.
    spc : ndarray of shape (n,)
        Species index per atom.
    bi, bj : ndarray of shape (n_bonds,)
        Bonded atoms (each bond once), e.g. from :func:`find_bonds`.
    tree : cKDTree or None, default=None
        The KD-tree of ``pos``, kept for neighbour queries (None: no atoms to query).
    interstitial : ndarray of shape (n,), dtype bool, or None, default=None
        Atoms left out of the graph (see :func:`find_bonds`); None: none.

    Attributes
    ----------
    n : int
        Number of atoms.
    pos, spc, tree, interstitial
        As given.
    src, dst : ndarray of shape (2 * n_bonds,)
        Directed edges, sorted by ``src`` and then by ``angle``.
    angle : ndarray of shape (2 * n_bonds,)
        Direction of each edge, ``arctan2(dy, dx)`` in radians.
    length : ndarray of shape (2 * n_bonds,)
        Bond length of each edge in Å.
    coordination : ndarray of shape (n,)
        Number of bonds per atom.
    indptr : ndarray of shape (n + 1,)
        The edges of atom ``a`` are ``indptr[a]:indptr[a + 1]``.
    face : ndarray of shape (2 * n_bonds,)
        The face left of each edge.
    face_size : ndarray of shape (n_faces,)
        Number of edges around each face (a ring of ``k`` atoms has ``k``).
    face_inner : ndarray of shape (n_faces,), dtype bool
        Faces that are rings (counter-clockwise in (x, y), positive area), not the outer face
        or the walk around a tree.

    Examples
    --------
    >>> import numpy as np
    >>> square = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    >>> g = BondGraph(square, np.zeros(4, dtype=int), np.array([0, 1, 2, 3]),
    ...               np.array([1, 2, 3, 0]))
    >>> g.face_size[g.face_inner].tolist(), g.coordination.tolist()
    ([4], [2, 2, 2, 2])
    """

    def __init__(self, pos, spc, bi, bj, *, tree=None, interstitial=None):
        n = len(pos)
        self.n, self.pos, self.spc = n, pos, spc
        self.tree = tree
        self.interstitial = (np.zeros(n, dtype=bool) if interstitial is None
                             else interstitial)
        src = np.concatenate([bi, bj])
        dst = np.concatenate([bj, bi])
        dy = pos[dst, 0] - pos[src, 0]
        dx = pos[dst, 1] - pos[src, 1]
        angle = np.arctan2(dy, dx)
        order = np.lexsort((angle, src))
        self.src, self.dst, self.angle = src[order], dst[order], angle[order]
        self.length = np.hypot(dy, dx)[order]
        E = len(self.src)
        self.coordination = np.bincount(self.src, minlength=n)
        self.indptr = np.concatenate([[0], np.cumsum(self.coordination)])
        if E == 0:
            self.face = np.zeros(0, dtype=np.int64)
            self.face_size = np.zeros(0, dtype=np.int64)
            self.face_inner = np.zeros(0, dtype=bool)
            return
        key = self.src * n + self.dst
        by_key = np.argsort(key)
        rev = by_key[np.searchsorted(key[by_key], self.dst * n + self.src)]
        slot = np.arange(E) - self.indptr[self.src]
        v = self.dst
        nxt = self.indptr[v] + (slot[rev] - 1) % self.coordination[v]
        graph = coo_matrix((np.ones(E, dtype=np.int8), (np.arange(E), nxt)), shape=(E, E))
        _, face = connected_components(graph, directed=False)
        self.face = face
        self.face_size = np.bincount(face)
        centre = pos.mean(axis=0)
        y, x = (pos - centre).T
        cross = x[self.src] * y[self.dst] - x[self.dst] * y[self.src]
        area = 0.5 * np.bincount(face, weights=cross)
        # inner faces run counter-clockwise in (x, y) = (col, row); outer faces and faces of
        # trees have zero or negative area
        self.face_inner = area > 1e-6

    def atom_faces(self):
        """(atom, face) of every corner: the face of each outgoing edge."""
        return self.src, self.face


# --------------------------------------------------------------------------------------------
# border and missing neighbours
# --------------------------------------------------------------------------------------------
class Border:
    """Distance in Å of points to the image border (or the atoms' bounding box) and to the
    convex hull of the atoms; negative outside.

    Parameters
    ----------
    pos : ndarray of shape (n, 2)
        Atom positions (y, x) in Å.
    pixel_size : float
        Pixel size in Å/px (used with ``image_shape``).
    image_shape : tuple of int or None
        (height, width) in px of the image: its border is half a pixel outside the first and
        last pixel centres. None uses the bounding box of ``pos``.

    Examples
    --------
    >>> import numpy as np
    >>> square = np.array([[0.0, 0.0], [0.0, 4.0], [4.0, 4.0], [4.0, 0.0]])
    >>> Border(square, 1.0, None).distance(np.array([[2.0, 2.0], [1.0, 2.0], [5.0, 2.0]]))
    array([ 2.,  1., -1.])
    """

    def __init__(self, pos, pixel_size, image_shape):
        self.n = len(pos)
        self.eq = None
        if self.n == 0:
            self.lo = self.hi = np.zeros(2)
            return
        if image_shape is not None:
            h, w = image_shape
            self.lo = np.array([-0.5, -0.5]) * pixel_size
            self.hi = np.array([h - 0.5, w - 0.5]) * pixel_size
        else:
            self.lo, self.hi = pos.min(axis=0), pos.max(axis=0)
        self.flat = self.n < 3
        if not self.flat:
            try:
                self.eq = ConvexHull(pos).equations
            except QhullError:  # collinear atoms: all on the hull
                self.flat = True

    def distance(self, points):
        """Distance in Å of ``points`` (m, 2) to the border and the hull, the nearer of the two.

        Returns an ndarray of shape (m,), negative outside; zeros when there are fewer than 3
        atoms or they are collinear (every atom is then on the hull).
        """
        if len(points) == 0 or self.n == 0:
            return np.zeros(len(points))
        if self.flat:
            return np.zeros(len(points))
        dist = np.minimum(points - self.lo, self.hi - points).min(axis=1)
        eq = self.eq
        for start in range(0, len(points), 65536):
            block = points[start:start + 65536]
            dist[start:start + 65536] = np.minimum(
                dist[start:start + 65536], (-(block @ eq[:, :2].T + eq[:, 2])).min(axis=1))
        return dist


def missing_neighbours(g, border, edge, host, expected):
    """Missing neighbours of each host atom, split into inside and outside the image.

    The bonds of an atom fill the angular gaps between its present bonds in steps of
    ``360 / z`` degrees (z the expected coordination: 120 in a honeycomb, 90 in a square
    lattice); a gap of ``k`` steps holds ``k - 1`` missing neighbours, placed one bond length
    away. Those whose site lies outside the image or the atoms' convex hull (or within 0.3
    bond lengths of it) are missing because of the border, not because of a vacancy; so are
    those of edge atoms whose site no other atom misses. A site that holds an atom is a
    stretched bond and counts as neither.

    Parameters
    ----------
    g : BondGraph
        The bond graph (with its ``tree``, to find occupied sites).
    border : Border
        The image border and the atoms' convex hull.
    edge : ndarray of shape (n,), dtype bool
        Edge atoms (within the edge width of the border).
    host : ndarray of shape (n,), dtype bool
        Atoms whose missing neighbours count.
    expected : ndarray of shape (n,), dtype int
        Expected coordination per atom.

    Returns
    -------
    inside, outside : ndarray of shape (n,), dtype int
        Missing neighbours per atom whose sites lie inside the image, and outside it (or
        guessed at the edge).
    sites : ndarray of shape (n_sites, 2)
        Sites (y, x) in Å of the missing neighbours inside the image.
    owners : ndarray of shape (n_sites,)
        The atom each site is missing from.
    """
    n = g.n
    inside = np.zeros(n, dtype=np.int64)
    outside = np.zeros(n, dtype=np.int64)
    coord = g.coordination
    lonely = host & (coord == 0) & (expected > 0)
    inside[lonely & ~edge] = expected[lonely & ~edge]
    outside[lonely & edge] = expected[lonely & edge]
    under = host & (coord > 0) & (coord < expected)
    e = np.flatnonzero(under[g.src])
    if len(e) == 0:
        return inside, outside, np.zeros((0, 2)), np.zeros(0, dtype=np.int64)
    a = g.src[e]
    last = g.indptr[a + 1] - 1
    nxt = np.where(e == last, g.indptr[a], e + 1)
    gap = (g.angle[nxt] - g.angle[e]) % (2 * np.pi)
    gap = np.where(coord[a] == 1, 2 * np.pi, gap)
    step = 2 * np.pi / expected[a]
    k = np.maximum(np.round(gap / step).astype(np.int64) - 1, 0)
    rep = np.repeat(np.arange(len(e)), k)
    j = np.arange(len(rep)) - np.repeat(np.cumsum(k) - k, k) + 1
    theta = g.angle[e][rep] + j * step[rep]
    atom = a[rep]
    bond = (np.bincount(g.src, g.length, n) / np.maximum(coord, 1))[atom]
    site = g.pos[atom] + bond[:, None] * np.column_stack([np.sin(theta), np.cos(theta)])
    out = border.distance(site) < 0.3 * bond
    # a "missing" neighbour whose site holds an atom is a stretched bond, not a vacancy
    occupied = np.zeros(len(site), dtype=bool)
    if len(site) and g.tree is not None:
        occupied = g.tree.query(site, distance_upper_bound=0.5 * bond.max())[0] \
            < 0.5 * bond
    keep = ~out & ~occupied
    # near the border the site of a missing neighbour is a guess (the lattice there may be
    # cut through a distorted ring): an edge atom's site counts only when another atom
    # misses the same site
    lone = keep & edge[atom]
    if np.any(lone):
        idx = np.flatnonzero(keep)
        pairs = cKDTree(site[idx]).query_pairs(0.6 * float(bond.max()),
                                               output_type="ndarray")
        pairs = idx[pairs.reshape(-1, 2)]
        pairs = pairs[atom[pairs[:, 0]] != atom[pairs[:, 1]]]
        shared = np.zeros(len(site), dtype=bool)
        shared[pairs.ravel()] = True
        keep &= ~lone | shared
        out |= lone & ~shared
    inside += np.bincount(atom[keep], minlength=n)
    outside += np.bincount(atom[out], minlength=n)
    return inside, outside, site[keep], atom[keep]
