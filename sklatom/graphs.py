"""Point defects from the graph of atoms: bonds, coordination, rings and composition.

:class:`GraphDefectClassifier` takes what :class:`~sklatom.peaks.PeakFinder` returns, one
``(k_i, 3)`` array of atoms per image (row, col in pixels and a class index), and

1. bonds the atoms: two atoms are bonded when they are closer than the bond length learned for
   their species pair times ``1 + bond_tolerance`` *and* no third atom lies in their "lune"
   (closer to both than they are to each other: the relative-neighbourhood rule). The rule keeps
   the graph planar, so its faces are the rings of the lattice;
2. finds the rings around every atom as the faces of that planar embedding (neighbours sorted
   by angle, one walk per face: O(n), no cycle enumeration);
3. flags atoms that are not lattice-like: a minority (dopant) species, a coordination other
   than the lattice's, or a ring other than the lattice's (5, 7 and 8 rings in graphene). Atoms
   within ``edge_width`` of the image border or of the convex hull of the atoms are "edge"
   atoms, never flagged for missing neighbours or rings;
4. groups flagged atoms into defects (atoms of the same anomalous ring, bonded dopants or
   miscoordinated atoms, atoms missing the same or adjacent neighbour sites) and names each
   defect from its composition and structure, with a structural hash that tells apart
   different structures of the same formula.

The core computation runs on numpy/scipy arrays (KD-tree, sparse adjacency), so a million atoms
take seconds; networkx graphs are built only for the (small) defects and on request
(:meth:`GraphDefectClassifier.graphs`). :func:`sklatom.plotting.plot_defect_graph` draws the
bond graph with the atoms coloured by defect.

This module holds the estimator and :data:`FEATURE_NAMES`; the array kernels of the bond graph
(bonds, faces, border, missing neighbours, species names) are in ``sklatom/_bondgraph.py``
and the naming scheme below with the structural hash in ``sklatom/_defectnames.py``.

Naming scheme
-------------
A defect's name joins the parts that apply with ``"+"``:

* dopants: the dopant columns and the host atoms bonded to them, e.g. ``"Si1C3"`` (a Si with
  three C neighbours), ``"Si1C4"``, ``"Si2C4"`` (a bonded Si pair): ``SinCm`` counts the n
  dopants and the m distinct host atoms bonded to any of them, a host atom bonded to a dopant
  when it lies within 15 % of the dopant-host bond length and within 25 % of the dopant's
  nearest neighbour, at most the 4 nearest per dopant (bonds by distance, as a chemist counts
  them). Column names that are not a single element are put in parentheses: ``"W1(S2)3"``
  (W on a Mo site of MoS2 seen along c), ``"(SSe)1Mo3"``;
* vacancies: ``"V<m>"`` with ``m`` the number of missing atoms estimated from the missing
  neighbours: ``M`` missing bonds around a compact hole of ``m`` atoms in a lattice of
  coordination ``z`` give ``m = (M - 2) / (z - 2)``. ``"V1"`` is a single vacancy in graphene,
  ``"V2"`` a divacancy. In lattices with several host species the missing species follows when
  it is clear from the lattice's neighbour pattern: ``"V1_Mo"``;
* rings: ``"SW"`` for the 5-7-7-5 rings of a Stone-Wales defect, otherwise ``"R"`` and the
  sizes of the anomalous rings, e.g. ``"R5x2-8"`` for a relaxed 5-8-5 divacancy;
* interstitials: ``"I<m>"`` for atoms left out of the graph because they sit inside a ring
  (an adatom over a hexagon, or a false detection there) or double another atom (closer than a
  third of a bond, but not than 0.2 Å: such atoms are the same atom listed twice, merged with
  a warning); ``"I"`` and their formula when they are not the single host species,
  e.g. ``"ISi1"``;
* none of these (an odd coordination only): ``"X"`` and the formula of the flagged atoms.

Names are a function of the structure, so the same structure gets the same name in every
image. Kinds are the pairs (name, hash); the hash is networkx's Weisfeiler-Lehman hash of the
defect's graph (flagged atoms and their first neighbours, node labels species, coordination and
whether the atom is flagged).
"""

import numbers
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass

import networkx as nx
import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ._bondgraph import (FALLBACK_BOND, Border, BondGraph, coincident_atoms, find_bonds,
                         missing_neighbours, parse_species, prior_radius)
from ._defectnames import defect_graph, defect_name, structural_hash
from ._validation import SklatomWarning, check_pixel_size
# the defect plot lives in sklatom.plotting; importable from here too, where it was
# documented before
from .plotting import plot_defect_graph  # noqa: F401

__all__ = ["GraphDefectClassifier", "FEATURE_NAMES"]

#: Per-atom features returned by :meth:`GraphDefectClassifier.transform`.
FEATURE_NAMES = (
    "coordination", "missing_neighbors", "mean_bond_length", "bond_angle_spread",
    "smallest_ring", "n_ring_3", "n_ring_4", "n_ring_5", "n_ring_6", "n_ring_7", "n_ring_8",
    "n_ring_large", "edge", "dopant", "interstitial",
)

_SHELL_WINDOW = 0.3  # first-shell window for learning: distances up to (1 + w) * global NN
_WELL_SAMPLED = 50  # species pairs with this many samples take their own bond length
_PSEUDO_COUNT = 10  # weight of the radius model for pairs with fewer samples
_MAX_HOLE_FACTOR = 4  # faces up to this times the lattice ring size group their atoms
_COINCIDENT = 0.2  # Å: atoms closer than this are one atom listed twice (merged, with a warning)
_IMAGE_TOLERANCE = 1.0  # px: atoms this far outside image_shape are an error
# measured bond lengths outside (r_a + r_b) times this range (covalent radii) mean a wrong pixel
# size: projected first-neighbour distances are shorter than bonds (Mo-S2 columns of MoS2 at
# 0.70 of r_Mo + r_S, the dumbbells of Si [110] at 0.61), strain and radii errors add 30 %
_PLAUSIBLE_BOND = (0.5, 1.3)


# --------------------------------------------------------------------------------------------
# the analysis of one image
# --------------------------------------------------------------------------------------------
@dataclass(eq=False)
class _ImageAnalysis:
    """The bond graph of one image, its flagged atoms and their grouping into defects.

    What :meth:`GraphDefectClassifier._analyse` returns for an image of ``n`` atoms whose graph
    has ``n_faces`` faces and whose atoms miss ``n_sites`` neighbours inside the image.

    Attributes
    ----------
    graph : BondGraph
        The bond graph with its faces, KD-tree and ``interstitial`` atoms (left out of it).
    edge : ndarray of shape (n,), dtype bool
        Atoms within ``edge_width_`` (Å) of the image border or of the atoms' convex hull.
    missing_in, missing_out : ndarray of shape (n,), dtype int
        Missing neighbours per atom whose sites lie inside the image, and outside it (see
        :func:`~sklatom._bondgraph.missing_neighbours`).
    sites : ndarray of shape (n_sites, 2)
        Sites (y, x) in Å of the missing neighbours inside the image.
    owners : ndarray of shape (n_sites,), dtype int
        The atom each site is missing from.
    expected : ndarray of shape (n,), dtype int
        Expected coordination per atom, -1 for species without one.
    dopant : ndarray of shape (n,), dtype bool
        Atoms of a dopant species.
    flagged : ndarray of shape (n,), dtype bool
        Atoms that belong to a defect: dopants, miscoordinated host atoms, atoms of an
        anomalous ring and interstitials, the last two not in the edge band.
    cluster : ndarray of shape (n,), dtype int
        Defect index (``0 .. n_clusters - 1``) of each flagged atom, -1 for the others.
    n_clusters : int
        Number of defects.
    anomalous_ring : ndarray of shape (n_faces,), dtype bool
        Inner faces whose size is not the lattice's ring size and at most 2 larger.
    hole : ndarray of shape (n_faces,), dtype bool
        Inner faces larger than that, up to :data:`_MAX_HOLE_FACTOR` times the ring size.
    coord_bad : ndarray of shape (n,), dtype bool
        Host atoms with missing neighbours inside the image, or (away from the edge) more
        bonds than expected.
    """

    graph: BondGraph
    edge: np.ndarray
    missing_in: np.ndarray
    missing_out: np.ndarray
    sites: np.ndarray
    owners: np.ndarray
    expected: np.ndarray
    dopant: np.ndarray
    flagged: np.ndarray
    cluster: np.ndarray
    n_clusters: int
    anomalous_ring: np.ndarray
    hole: np.ndarray
    coord_bad: np.ndarray


# --------------------------------------------------------------------------------------------
# the estimator
# --------------------------------------------------------------------------------------------
class GraphDefectClassifier(TransformerMixin, BaseEstimator):
    """Find and name point defects in the bond graph of atomic columns.

    Parameters
    ----------
    species : list of str or None, default=None
        Names of the classes in the coordinates' class column. Class index ``c >= 1`` names the
        ``c``-th foreground species: pass a segmenter's ``classes_`` as is
        (``["background", "C", "Si"]``, then class ``c`` is ``species[c]``) or the foreground
        names only (``["C", "Si"]``, then class ``c`` is ``species[c - 1]``). Class 0 is the
        background and is not an atom. Names are chemical symbols or column formulas
        (``"S2"``, ``"OTi"``) or generic names (``"X"``, ``"class1"``, no covalent-radius
        prior; the general model's ``"light"`` and ``"heavy"`` are generic too, so
        ``load_pretrained().classes_`` works as is, with defects named by class, e.g.
        ``"V1"``, ``"(heavy)1(light)3"``). None names the classes ``"class1"``,
        ``"class2"``, ... .
    pixel_size : float, default=None
        Pixel size of the coordinates in Å/px. Required (bond lengths are physical).
    bond_tolerance : float, default=0.3
        Atoms closer than ``(1 + bond_tolerance)`` times the learned bond length of their
        species pair (and with no third atom closer to both) are bonded.
    coordination : dict or None, default=None
        Expected coordination per species name, e.g. ``{"C": 3}``; species not given are
        learned in ``fit`` (the most common coordination of interior atoms).
    ring_size : int or None, default=None
        The lattice's ring size (6 in graphene and MoS2, 4 in SrTiO3 [001]); None learns it
        (the most common face size).
    host_species : str, list of str or None, default=None
        Species that make up the lattice (one name or a list); others are dopants. None takes
        every species with at least ``dopant_fraction`` of the atoms seen in ``fit`` (and
        always the most common).
    dopant_fraction : float, default=0.1
        See ``host_species``.
    edge_width : float or None, default=None
        Atoms closer than this (Å) to the image border or to the convex hull of the atoms are
        edge atoms, never flagged for missing neighbours or rings. None uses 1.15 times the
        longest learned bond length.
    image_shape : tuple of int or None, default=None
        (height, width) in px of the images the coordinates come from; None uses each image's
        bounding box of atoms. Atoms more than 1 px outside it are an error.
    min_pair_count : int, default=3
        Species pairs seen fewer times than this in ``fit`` take their bond length from the
        covalent-radius prior, scaled to the learned ones.
    n_jobs : int or None, default=None
        Images analysed in parallel (joblib).

    Attributes
    ----------
    species_ : list of str
        Foreground species; class ``c`` is ``species_[c - 1]``.
    bond_lengths_ : dict
        Bond length in Å per bonded species pair ``(a, b)`` (both orders): measured (the mode
        of the first-neighbour distances), or for pairs seen rarely or never predicted from
        per-species radii fitted to the measured pairs (covalent radii scaled to the data as
        a prior). Two species that are both common but never seen at bonding distance are not
        bonded and have no entry.
    bond_cutoffs_ : ndarray of shape (n_species, n_species)
        Bond cutoff in Å per species pair, indices as in ``species_``.
    learned_pairs_ : list of tuple
        Species pairs whose bond length was measured in ``fit``.
    coordination_ : dict
        Expected coordination per host species.
    ring_size_ : int
        The lattice's ring size.
    host_species_, dopant_species_ : list of str
        Lattice and dopant species.
    edge_width_ : float
        Edge zone width in Å.
    defects_ : pandas.DataFrame
        The defect kinds found in the training images (see :meth:`catalogue`).
    kind_names_ : dict
        Structural hash -> user's name, learned from ``y``.
    name_aliases_ : dict
        Generated name -> user's name, for structures whose hash was not seen in training but
        whose generated name was always labelled the same way.

    See Also
    --------
    sklatom.peaks.PeakFinder : produces the coordinates this estimator takes.

    Notes
    -----
    Atoms flagged as defects are grouped when they lie on the same anomalous ring, when
    bonded dopants or miscoordinated atoms, or when they miss the same (or adjacent) neighbour
    sites, so the three undercoordinated neighbours of a vacancy form one defect even where
    the image border cuts the hole open. In
    ``predict`` only these flagged atoms carry the defect name; their lattice-like neighbours
    (the three C around a Si dopant) are part of the defect's graph and name but are labelled
    ``"lattice"``. A Stone-Wales defect flags the atoms of its four rings (16 in graphene).

    Atoms closer than 0.2 Å to another are coincident: the same atom listed (or detected) more
    than once. Every method warns about them, naming how many and where, and merges each group
    into its first atom: the others are left out of learning and of the graph (neither bonds
    nor interstitials), take that atom's label in ``predict`` and its row in ``transform``,
    are listed with it in the ``atoms`` of ``find_defects``, and are not nodes of ``graphs``.

    ``fit`` warns when a measured bond length is outside the sum of the covalent radii of its
    species times 0.5-1.3 (C-C: 0.76-1.98 Å; projected first-neighbour distances are shorter
    than bonds, down to 0.6 of them in dumbbells): the pixel size is then probably wrong.

    Examples
    --------
    >>> import numpy as np
    >>> from sklatom.structures import make_structure, project_columns
    >>> atoms = make_structure("graphene", (20.0, 20.0), defects={"vacancy": 1},
    ...                        strain=(0, 0, 0), random_state=0)
    >>> cols = project_columns(atoms, pixel_size=0.1)
    >>> clf = GraphDefectClassifier(species=cols.classes, pixel_size=0.1)
    >>> labels = clf.fit([cols.coordinates]).predict([cols.coordinates])[0]
    >>> sorted(set(labels))
    ['V1', 'lattice']
    >>> round(clf.bond_lengths_[("C", "C")], 2)
    1.42
    """

    def __init__(self, *, species=None, pixel_size=None, bond_tolerance=0.3, coordination=None,
                 ring_size=None, host_species=None, dopant_fraction=0.1, edge_width=None,
                 image_shape=None, min_pair_count=3, n_jobs=None):
        self.species = species
        self.pixel_size = pixel_size
        self.bond_tolerance = bond_tolerance
        self.coordination = coordination
        self.ring_size = ring_size
        self.host_species = host_species
        self.dopant_fraction = dopant_fraction
        self.edge_width = edge_width
        self.image_shape = image_shape
        self.min_pair_count = min_pair_count
        self.n_jobs = n_jobs

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.requires_fit = True
        return tags

    # ---------------------------------------------------------------- checks
    def _check_params(self):
        ps = check_pixel_size(self.pixel_size, allow_none=True)
        if ps is None:
            raise ValueError(
                "pixel_size is None; GraphDefectClassifier needs the pixel size of the "
                "coordinates in Å/px to measure bond lengths")
        for name, value, low in (("bond_tolerance", self.bond_tolerance, 0.0),
                                 ("dopant_fraction", self.dopant_fraction, 0.0)):
            if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                    or not np.isfinite(value) or not low <= value < 1):
                raise ValueError(f"{name} must be a number in [{low}, 1); got {value!r}")
        if self.edge_width is not None and (
                isinstance(self.edge_width, bool) or not isinstance(self.edge_width, numbers.Real)
                or not np.isfinite(self.edge_width) or self.edge_width < 0):
            raise ValueError(f"edge_width must be None or a length >= 0 in Å; got "
                             f"{self.edge_width!r}")
        if self.ring_size is not None and (
                isinstance(self.ring_size, bool) or not isinstance(self.ring_size, numbers.Integral)
                or self.ring_size < 3):
            raise ValueError(f"ring_size must be None or an integer >= 3; got {self.ring_size!r}")
        if (isinstance(self.min_pair_count, bool)
                or not isinstance(self.min_pair_count, numbers.Integral)
                or self.min_pair_count < 1):
            raise ValueError(f"min_pair_count must be an integer >= 1; got "
                             f"{self.min_pair_count!r}")
        if self.image_shape is not None:
            shape = tuple(self.image_shape) if isinstance(self.image_shape, (tuple, list)) else ()
            if len(shape) != 2 or not all(isinstance(s, numbers.Integral) and s > 0
                                          for s in shape):
                raise ValueError(f"image_shape must be None or (height, width) in px; got "
                                 f"{self.image_shape!r}")
        return ps

    def _check_species(self, max_class):
        if self.species is None:
            return [f"class{c}" for c in range(1, max(1, max_class) + 1)]
        if isinstance(self.species, str) or not hasattr(self.species, "__iter__"):
            raise TypeError(f"species must be a list of names; got {self.species!r}")
        names = list(self.species)
        if names and names[0] == "background":
            names = names[1:]
        for i, name in enumerate(names):
            if name == "background":
                raise ValueError(f"species: 'background' may only come first; got {self.species}")
            parse_species(name, f"species[{i}]")
        if not names:
            raise ValueError(f"species names no atom species; got {self.species!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"species has duplicate names: {self.species!r}")
        return names

    def _check_X(self, X, n_species=None):
        """List of (positions in Å (n, 2) as (y, x), species index (n,), coordinates (n, 3))."""
        if X is None:
            raise ValueError("X is None; expected a list of (k_i, 3) coordinate arrays")
        if isinstance(X, np.ndarray) and X.dtype != object:
            if X.ndim == 2:
                raise ValueError(
                    f"X has shape {X.shape}: the coordinates of one image; pass a list of "
                    f"(k_i, 3) arrays, e.g. [X]")
            items = list(X)
        elif isinstance(X, (list, tuple)) or (isinstance(X, np.ndarray) and X.dtype == object):
            items = list(X)
        else:
            raise TypeError(f"X must be a list of (k_i, 3) arrays; got {type(X).__name__}")
        if len(items) == 0:
            raise ValueError("X is empty: it holds no images")
        out = []
        for i, c in enumerate(items):
            arr = np.asarray(c)
            if arr.size == 0:
                arr = arr.reshape(0, 3)
            if arr.dtype == object or arr.dtype.kind not in "biuf":
                raise TypeError(f"X[{i}] must hold numbers; got dtype {arr.dtype}")
            if arr.ndim != 2 or arr.shape[1] != 3:
                raise ValueError(f"X[{i}] must have shape (k, 3) (row, col, class); got "
                                 f"{arr.shape}")
            arr = arr.astype(float)
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"X[{i}] contains NaN or infinite values")
            cls = arr[:, 2]
            if np.any(cls != np.round(cls)):
                raise ValueError(f"X[{i}][:, 2] must hold integer class indices")
            cls = cls.astype(np.int64)
            hi = n_species if n_species is not None else np.inf
            bad = (cls < 1) | (cls > hi)
            if np.any(bad):
                c0 = int(cls[bad][0])
                expected = (f"1..{n_species} (species {self.species_})"
                            if n_species is not None else ">= 1")
                raise ValueError(
                    f"X[{i}] has class index {c0} out of range: expected {expected}; class 0 "
                    f"is the background and is not an atom")
            if self.image_shape is not None and len(arr):
                self._check_inside(arr, i)
            out.append(arr)
        return out

    def _check_inside(self, arr, i):
        """Atoms of ``X[i]`` more than :data:`_IMAGE_TOLERANCE` px outside ``image_shape``."""
        h, w = self.image_shape
        lo, tol = -0.5, _IMAGE_TOLERANCE
        r, c = arr[:, 0], arr[:, 1]
        out = (r < lo - tol) | (r > h - 0.5 + tol) | (c < lo - tol) | (c > w - 0.5 + tol)
        if np.any(out):
            raise ValueError(
                f"X[{i}] has {int(out.sum())} of {len(arr)} atoms outside image_shape="
                f"{tuple(self.image_shape)}: rows {r.min():g}..{r.max():g} and cols "
                f"{c.min():g}..{c.max():g} px, expected rows {lo:g}..{h - 0.5:g} and cols "
                f"{lo:g}..{w - 0.5:g} px (within {tol:g} px). Are the coordinates (row, col) "
                f"in px of images of this (height, width)?")

    def _merge_coincident(self, coords, stacklevel):
        """Merge coincident atoms (closer than :data:`_COINCIDENT` Å): one atom listed twice.

        Returns the coordinates with each group reduced to its first atom, and per image None
        or ``(keep, inverse)`` (see :func:`~sklatom._bondgraph.coincident_atoms`); warns naming
        how many and where, with ``stacklevel`` pointing at the user's call.
        """
        ps = float(self.pixel_size)
        kept, merges, report = [], [], []
        for i, c in enumerate(coords):
            m = coincident_atoms(c[:, :2] * ps, _COINCIDENT)
            merges.append(m)
            if m is None:
                kept.append(c)
                continue
            keep, inverse = m
            kept.append(c[keep])
            counts = np.bincount(inverse, minlength=len(keep))
            groups = keep[counts > 1]
            where = ", ".join(f"({c[g, 0]:.1f}, {c[g, 1]:.1f})" for g in groups[:3])
            more = f" and {len(groups) - 3} more" if len(groups) > 3 else ""
            report.append(f"X[{i}]: {int(counts[counts > 1].sum())} atoms in {len(groups)} "
                          f"group(s) at (row, col) {where}{more} px")
        if report:
            n_dropped = sum(len(c) - len(k) for c, k in zip(coords, kept))
            shown = "; ".join(report[:3]) + (f"; and {len(report) - 3} more images"
                                             if len(report) > 3 else "")
            warnings.warn(
                f"X holds coincident atoms, closer than {_COINCIDENT} Å to another (the same "
                f"atom listed more than once): {shown}. Each group counts as its first atom; "
                f"the {n_dropped} other(s) are left out of learning and of the graph (not "
                f"counted as interstitials) and take that atom's label and features",
                SklatomWarning, stacklevel=stacklevel)
        return kept, merges

    # ---------------------------------------------------------------- learning
    def fit(self, X, y=None):
        """Learn the lattice (bond lengths, coordination, rings) and, with ``y``, kind names.

        Parameters
        ----------
        X : list of ndarray of shape (k_i, 3)
            Atoms per image: row, col (px) and class index (``>= 1``).
        y : list of array-like of shape (k_i,) of str, default=None
            Per-atom labels: ``"lattice"`` or the name of a known defect kind (e.g.
            ``"vacancy"``, ``"dopant"``). Each defect found in the training images takes the
            most common non-lattice label of its flagged atoms; its structural hash is then
            predicted with that name.

        Returns
        -------
        self : GraphDefectClassifier
        """
        ps = self._check_params()
        coords = self._check_X(X)
        max_class = max((int(c[:, 2].max()) for c in coords if len(c)), default=1)
        self.species_ = self._check_species(max_class)
        S = len(self.species_)
        if max_class > S:
            raise ValueError(f"X has class index {max_class} out of range: species "
                             f"{self.species!r} names {S} atom classes (1..{S})")
        if y is not None:
            y = self._check_y(y, coords)
        coords, merges = self._merge_coincident(coords, stacklevel=3)
        data = [(c[:, :2] * ps, c[:, 2].astype(np.int64) - 1) for c in coords]
        self._check_bond_lengths(self._learn_bonds(data), ps)
        self._learn_lattice(data, ps)
        self.kind_names_, self.name_aliases_ = {}, {}
        instances = self._find_all(coords, merges=merges)
        if y is not None:
            self._learn_names(instances, y)
            instances = self._find_all(coords, merges=merges)
        self.defects_ = self._catalogue_from(instances)
        return self

    def _check_y(self, y, coords):
        if isinstance(y, str) or not hasattr(y, "__len__") or len(y) != len(coords):
            raise ValueError(f"y must hold one label array per image ({len(coords)}); got "
                             f"{type(y).__name__}")
        out = []
        for i, (lab, c) in enumerate(zip(y, coords)):
            lab = np.asarray(lab, dtype=object).reshape(-1)
            if len(lab) != len(c):
                raise ValueError(f"y[{i}] has {len(lab)} labels for {len(c)} atoms in X[{i}]")
            if not all(isinstance(v, str) for v in lab):
                raise TypeError(f"y[{i}] must hold strings ('lattice' or a defect name)")
            out.append(lab)
        return out

    def _learn_bonds(self, data):
        S = len(self.species_)
        nn = [cKDTree(p).query(p, k=2)[0][:, 1] for p, _ in data if len(p) >= 2]
        samples = defaultdict(list)
        if nn:
            d1 = float(np.median(np.concatenate(nn)))
            for p, s in data:
                if len(p) < 2:
                    continue
                pairs = cKDTree(p).query_pairs((1 + _SHELL_WINDOW) * d1, output_type="ndarray")
                if len(pairs) == 0:
                    continue
                d = np.linalg.norm(p[pairs[:, 0]] - p[pairs[:, 1]], axis=1)
                a, b = np.sort(s[pairs], axis=1).T
                key = a * S + b
                for k in np.unique(key):
                    samples[int(k)].append(d[key == k])
        learned = {}
        for k, ds in samples.items():
            ds = np.concatenate(ds)
            if len(ds) >= max(_WELL_SAMPLED, self.min_pair_count):
                # the mode of the distance histogram: the median of the densest third
                ds = np.sort(ds)
                m = len(ds) // 3
                start = int(np.argmin(ds[m - 1:] - ds[:len(ds) - m + 1]))
                learned[divmod(k, S)] = (float(np.median(ds[start:start + m])), len(ds))
            elif len(ds) >= self.min_pair_count:
                learned[divmod(k, S)] = (float(np.median(ds)), len(ds))
        # radii: well-sampled pair lengths = r_a + r_b, regularised towards the covalent radii
        # scaled to the data; they predict the pairs seen rarely or never
        well = {k: v for k, (v, c) in learned.items() if c >= _WELL_SAMPLED} or \
            {k: v for k, (v, c) in learned.items()}
        prior = np.array([prior_radius(s) or np.nan for s in self.species_])
        scale = [v / (prior[a] + prior[b]) for (a, b), v in well.items()
                 if np.isfinite(prior[a] + prior[b])]
        scale = float(np.median(scale)) if scale else 1.0
        typical = float(np.median(list(well.values()))) if well else FALLBACK_BOND
        r0 = np.where(np.isfinite(prior), prior * scale, typical / 2)
        rows, rhs = [], []
        for (a, b), v in well.items():
            row = np.zeros(S)
            row[a] += 1
            row[b] += 1
            rows.append(row)
            rhs.append(v)
        lam = 0.1
        A = np.vstack(rows + [lam * np.eye(S)]) if rows else lam * np.eye(S)
        rhs = np.concatenate([rhs, lam * r0]) if rows else lam * r0
        radius = np.linalg.lstsq(A, rhs, rcond=None)[0]
        length = radius[:, None] + radius[None, :]
        for (a, b), (v, c) in learned.items():
            if c < _WELL_SAMPLED:  # shrink a few noisy samples towards the prediction
                v = (c * v + _PSEUDO_COUNT * length[a, b]) / (c + _PSEUDO_COUNT)
            length[a, b] = length[b, a] = v
        # two common species never seen at bonding distance are not bonded (Mo-Mo in MoS2,
        # Sr-TiO in SrTiO3: second neighbours)
        counts = np.zeros(S)
        for _, s in data:
            counts += np.bincount(s, minlength=S)
        common = counts >= _WELL_SAMPLED
        bonded = np.ones((S, S), dtype=bool)
        for a in range(S):
            for b in range(a, S):
                if common[a] and common[b] and (a, b) not in learned:
                    bonded[a, b] = bonded[b, a] = False
        self.bond_lengths_ = {(self.species_[a], self.species_[b]): float(length[a, b])
                              for a in range(S) for b in range(S) if bonded[a, b]}
        self.learned_pairs_ = sorted((self.species_[a], self.species_[b]) for a, b in learned)
        if not learned:
            warnings.warn(
                f"fit found no atom pairs to measure bond lengths from (at least "
                f"{self.min_pair_count} per species pair); bonds use covalent radii "
                f"(or {FALLBACK_BOND} Å for generic species) and may not match the lattice",
                SklatomWarning, stacklevel=3)
        self.bond_cutoffs_ = np.where(bonded, length * (1 + self.bond_tolerance), 0.0)
        return {(self.species_[a], self.species_[b]): v for (a, b), (v, _) in learned.items()}

    def _check_bond_lengths(self, measured, ps):
        """Warn about measured bond lengths no bond of their species could have.

        The plausible range of a pair is the sum of the covalent radii times
        :data:`_PLAUSIBLE_BOND`; a length outside it means a wrong ``pixel_size`` (or atoms that
        are not bonded). ``measured`` maps species pairs to the lengths measured in ``fit``;
        pairs with a generic species are not checked.
        """
        problems, ratios = [], []
        for (a, b), length in sorted(measured.items()):
            ra, rb = prior_radius(a), prior_radius(b)
            if ra is None or rb is None:
                continue
            lo, hi = (ra + rb) * _PLAUSIBLE_BOND[0], (ra + rb) * _PLAUSIBLE_BOND[1]
            if not lo <= length <= hi:
                problems.append(f"{a}-{b} {length:.3g} Å (plausible {lo:.2f}-{hi:.2f} Å)")
                if length > 0:
                    ratios.append((ra + rb) / length)
        if problems:
            hint = (f": about {ps * float(np.median(ratios)):.3g} Å/px would give the covalent "
                    f"bond length" if ratios else "")
            warnings.warn(
                f"fit learned bond lengths that no bond of these species has, at "
                f"pixel_size={ps:g} Å/px: {'; '.join(problems)} (the sum of the covalent radii "
                f"times {_PLAUSIBLE_BOND[0]}-{_PLAUSIBLE_BOND[1]}). The pixel size is probably "
                f"wrong{hint} (unless the atoms are not bonded to each other)", SklatomWarning,
                stacklevel=3)

    def _learn_lattice(self, data, ps):
        S = len(self.species_)
        counts = np.zeros(S)
        for _, s in data:
            counts += np.bincount(s, minlength=S)
        if self.host_species is not None:
            # one name is one species ("Mo"), not a sequence of letters
            hosts = ([self.host_species] if isinstance(self.host_species, str)
                     else list(self.host_species))
            for h in hosts:
                if h not in self.species_:
                    raise ValueError(f"host_species names {h!r}, which is not among species "
                                     f"{self.species_}")
        else:
            frac = counts / max(counts.sum(), 1)
            hosts = [s for s, f in zip(self.species_, frac) if f >= self.dopant_fraction]
            if not hosts:
                hosts = [self.species_[int(np.argmax(counts))]]
        self.host_species_ = hosts
        self.dopant_species_ = [s for s in self.species_ if s not in hosts]
        host_lengths = [self.bond_lengths_[(a, b)] for a in hosts for b in hosts
                        if (a, b) in self.bond_lengths_] or [FALLBACK_BOND]
        longest = max(host_lengths)
        self.typical_bond_length_ = float(np.median(host_lengths))
        self.edge_width_ = (1.15 * longest if self.edge_width is None
                            else float(self.edge_width))
        coord_hist = [Counter() for _ in range(S)]
        neigh = np.zeros((S, S))
        faces = Counter()
        for p, s in data:
            g, edge = self._graph(p, s, ps, leave_out=False)
            inner = ~edge
            for a in range(S):
                coord_hist[a].update(g.coordination[inner & (s == a)].tolist())
            if len(g.src):
                ok = inner[g.src]
                np.add.at(neigh, (s[g.src[ok]], s[g.dst[ok]]), 1)
                fa = np.unique(g.face[g.face_inner[g.face]])
                faces.update(g.face_size[fa].tolist())
        given = dict(self.coordination or {})
        for key in given:
            if key not in self.species_:
                raise ValueError(f"coordination names species {key!r}, not among species "
                                 f"{self.species_}")
        self.coordination_ = {}
        for a, name in enumerate(self.species_):
            if name in given:
                self.coordination_[name] = int(given[name])
            elif name in hosts and coord_hist[a]:
                self.coordination_[name] = int(coord_hist[a].most_common(1)[0][0])
        host_modes = Counter()
        for name in hosts:
            if name in self.coordination_:
                host_modes[self.coordination_[name]] += counts[self.species_.index(name)]
        for a, name in enumerate(self.species_):
            if name in self.coordination_:
                continue
            if sum(coord_hist[a].values()) >= 3:
                self.coordination_[name] = int(coord_hist[a].most_common(1)[0][0])
            elif host_modes:  # a rare dopant sits on a host site
                self.coordination_[name] = int(host_modes.most_common(1)[0][0])
        if self.ring_size is not None:
            self.ring_size_ = int(self.ring_size)
        elif faces:
            self.ring_size_ = int(faces.most_common(1)[0][0])
        else:
            self.ring_size_ = 6
        # which species a host atom's neighbours are (to name the missing atom of a vacancy)
        self.neighbor_species_ = {}
        for a, name in enumerate(self.species_):
            if neigh[a].sum() > 0:
                b = int(np.argmax(neigh[a]))
                if neigh[a, b] >= 0.9 * neigh[a].sum():
                    self.neighbor_species_[name] = self.species_[b]

    def _learn_names(self, instances, y):
        by_hash, by_name = defaultdict(Counter), defaultdict(Counter)
        for inst in instances:
            labels = [lab for lab in y[inst["image"]][inst["atoms"]] if lab != "lattice"]
            label = Counter(labels).most_common(1)[0][0] if labels else None
            if label is not None:
                by_hash[inst["hash"]][label] += 1
            by_name[inst["generated_name"]][label] += 1
        self.kind_names_ = {h: c.most_common(1)[0][0] for h, c in by_hash.items()}
        self.name_aliases_ = {}
        for name, c in by_name.items():
            label, n = c.most_common(1)[0]
            if label is not None and n == sum(c.values()):
                self.name_aliases_[name] = label

    # ---------------------------------------------------------------- analysis
    def _graph(self, pos, spc, ps, border=None, leave_out=True):
        z_max = None
        if leave_out:  # after learning: leave out atoms inside rings
            z_max = np.array([self.coordination_.get(s, -3) + 1 for s in self.species_])
        bi, bj, tree, interstitial = find_bonds(pos, spc, self.bond_cutoffs_, z_max)
        g = BondGraph(pos, spc, bi, bj, tree=tree, interstitial=interstitial)
        border = border or Border(pos, ps, self.image_shape)
        edge = border.distance(pos) < self.edge_width_
        return g, edge

    def _analyse(self, coords):
        """Graph, flags and defects of one image (:class:`_ImageAnalysis`)."""
        ps = float(self.pixel_size)
        pos = coords[:, :2] * ps
        spc = coords[:, 2].astype(np.int64) - 1
        n = len(pos)
        border = Border(pos, ps, self.image_shape)
        g, edge = self._graph(pos, spc, ps, border)
        expected = np.array([self.coordination_.get(s, -1) for s in self.species_])[spc] \
            if n else np.zeros(0, dtype=np.int64)
        dopant_sp = np.array([s in self.dopant_species_ for s in self.species_])
        dopant = dopant_sp[spc] if n else np.zeros(0, dtype=bool)
        inter = g.interstitial
        host = ~dopant & (expected >= 0) & ~inter
        missing_in, missing_out, sites, owners = missing_neighbours(
            g, border, edge, (expected >= 0) & ~inter, expected)
        coord_bad = host & ((missing_in > 0) | (~edge & (g.coordination > expected)))
        ring = self.ring_size_
        size = g.face_size
        anomalous_ring = g.face_inner & (size != ring) & (size <= ring + 2)
        hole = g.face_inner & (size > ring + 2) & (size <= _MAX_HOLE_FACTOR * ring)
        a_src, a_face = g.atom_faces()
        ring_bad = np.zeros(n, dtype=bool)
        ring_bad[a_src[anomalous_ring[a_face]]] = True
        ring_bad &= ~edge
        # an extra atom in the edge band is most likely a column cut by the image border
        flagged = dopant | coord_bad | ring_bad | (inter & ~edge)
        nf = len(size)
        # group flagged atoms: atoms of the same anomalous ring; bonded dopants or bonded
        # miscoordinated atoms; atoms missing the same or adjacent neighbours. Sites of missing
        # neighbours that coincide are one missing atom, missing atoms a bond apart one
        # multi-vacancy. (A vacancy next to, but not inside, a Stone-Wales defect, or two
        # vacancies that are second neighbours, stay separate defects.)
        both = (flagged[g.src] & flagged[g.dst]
                & (dopant[g.src] | dopant[g.dst] | (coord_bad[g.src] & coord_bad[g.dst])))
        link = flagged[a_src] & anomalous_ring[a_face]
        ns = len(sites)
        near = np.zeros((0, 2), dtype=np.int64)
        if ns > 1:
            reach = 1.3 * self.typical_bond_length_
            near = cKDTree(sites).query_pairs(reach, output_type="ndarray").reshape(-1, 2)
        keep_site = flagged[owners]
        rows = np.concatenate([g.src[both], a_src[link], owners[keep_site],
                               n + nf + near[:, 0]])
        cols = np.concatenate([g.dst[both], n + a_face[link], n + nf + np.flatnonzero(keep_site),
                               n + nf + near[:, 1]])
        adj = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)),
                         shape=(n + nf + ns,) * 2)
        _, comp = connected_components(adj, directed=False)
        comp = comp[:n]
        ids = np.unique(comp[flagged])
        cluster = np.full(n, -1, dtype=np.int64)
        cluster[flagged] = np.searchsorted(ids, comp[flagged])
        return _ImageAnalysis(
            graph=g, edge=edge, missing_in=missing_in, missing_out=missing_out, sites=sites,
            owners=owners, expected=expected, dopant=dopant, flagged=flagged, cluster=cluster,
            n_clusters=len(ids), anomalous_ring=anomalous_ring, hole=hole, coord_bad=coord_bad)

    def _describe(self, res, members):
        """Generated name and structural hash of one defect (its flagged atoms ``members``)."""
        name = defect_name(res, members, species=self.species_,
                           host_species=self.host_species_,
                           neighbor_species=self.neighbor_species_,
                           bond_cutoffs=self.bond_cutoffs_, bond_tolerance=self.bond_tolerance)
        return name, structural_hash(defect_graph(res.graph, members, res.missing_out,
                                                  self.species_))

    def _instances(self, i, coords):
        res = self._analyse(coords)
        out = []
        order = np.argsort(res.cluster, kind="stable")
        cl = res.cluster[order]
        starts = np.searchsorted(cl, np.arange(res.n_clusters))
        ends = np.searchsorted(cl, np.arange(res.n_clusters), side="right")
        for c, (s0, s1) in enumerate(zip(starts, ends)):
            members = np.sort(order[s0:s1])
            gen, h = self._describe(res, members)
            centre = coords[members, :2].mean(axis=0)
            out.append(dict(image=i, cluster=c, atoms=members, generated_name=gen, hash=h,
                            row=float(centre[0]), col=float(centre[1]),
                            n_atoms=len(members)))
        return res, out

    def _name(self, inst):
        if inst["hash"] in self.kind_names_:
            return self.kind_names_[inst["hash"]]
        return self.name_aliases_.get(inst["generated_name"], inst["generated_name"])

    def _find_all(self, coords, keep_results=False, merges=None):
        """Defects of every image; with ``merges``, their ``atoms`` index the input atoms
        (coincident atoms included) instead of ``coords``."""
        jobs = (delayed(self._instances)(i, c) for i, c in enumerate(coords))
        results = Parallel(n_jobs=self.n_jobs)(jobs)
        instances = []
        for _, inst in results:
            for d in inst:
                d["name"] = self._name(d)
                m = merges[d["image"]] if merges is not None else None
                if m is not None:
                    d["atoms"] = np.flatnonzero(np.isin(m[1], d["atoms"]))
            instances.extend(inst)
        if keep_results:
            return [r for r, _ in results], instances
        return instances

    def _prepare(self, X):
        """Checked input, its coordinates with coincident atoms merged, and the merges."""
        check_is_fitted(self, "species_")
        self._check_params()
        coords = self._check_X(X, len(self.species_))
        return (coords,) + self._merge_coincident(coords, stacklevel=4)

    # ---------------------------------------------------------------- public API
    def predict(self, X):
        """Label every atom: ``"lattice"`` or the name of the defect it belongs to.

        Parameters
        ----------
        X : list of ndarray of shape (k_i, 3)
            Atoms per image: row, col (px) and class index.

        Returns
        -------
        labels : list of ndarray of shape (k_i,), dtype object
            One string per atom. Defects of a kind named in ``fit``'s ``y`` get that name,
            others their generated name (see the module's naming scheme).
        """
        coords, kept, merges = self._prepare(X)
        return self._atom_labels(coords, self._find_all(kept, merges=merges))

    @staticmethod
    def _atom_labels(coords, instances):
        """Per image, "lattice" or the defect name of every atom."""
        labels = [np.full(len(c), "lattice", dtype=object) for c in coords]
        for d in instances:
            labels[d["image"]][d["atoms"]] = d["name"]
        return labels

    def find_defects(self, X):
        """One row per defect found in ``X``.

        Parameters
        ----------
        X : list of ndarray of shape (k_i, 3)
            Atoms per image: row, col (px) and class index.

        Returns
        -------
        defects : pandas.DataFrame
            Columns ``image``, ``name``, ``generated_name``, ``hash``, ``row``, ``col`` (centroid
            of the flagged atoms in px), ``n_atoms`` (flagged atoms) and ``atoms`` (their
            indices into ``X[image]``).
        """
        _, kept, merges = self._prepare(X)
        return self._instance_frame(self._find_all(kept, merges=merges))

    @staticmethod
    def _instance_frame(instances):
        cols = ["image", "name", "generated_name", "hash", "row", "col", "n_atoms", "atoms"]
        return pd.DataFrame([{k: d[k] for k in cols} for d in instances], columns=cols)

    def catalogue(self, X):
        """The defect kinds in ``X`` with counts, hashes and example locations.

        Parameters
        ----------
        X : list of ndarray of shape (k_i, 3)
            Atoms per image: row, col (px) and class index.

        Returns
        -------
        catalogue : pandas.DataFrame
            One row per kind (name, hash), most common first: ``name``, ``hash``, ``count``,
            ``n_images``, ``n_atoms`` (flagged atoms per defect) and ``examples`` (up to five
            ``(image, row, col)`` locations in px).
        """
        _, kept, merges = self._prepare(X)
        return self._catalogue_from(self._find_all(kept, merges=merges))

    @staticmethod
    def _catalogue_from(instances):
        cols = ["name", "hash", "count", "n_images", "n_atoms", "examples"]
        groups = defaultdict(list)
        for d in instances:
            groups[(d["name"], d["hash"])].append(d)
        rows = []
        for (name, h), ds in groups.items():
            rows.append(dict(name=name, hash=h, count=len(ds),
                             n_images=len({d["image"] for d in ds}),
                             n_atoms=int(np.median([d["n_atoms"] for d in ds])),
                             examples=[(d["image"], round(d["row"], 1), round(d["col"], 1))
                                       for d in ds[:5]]))
        df = pd.DataFrame(rows, columns=cols)
        return df.sort_values(["count", "name"], ascending=[False, True],
                              ignore_index=True)

    def transform(self, X):
        """Per-atom graph features, for clustering atoms with scikit-learn.

        Parameters
        ----------
        X : list of ndarray of shape (k_i, 3)
            Atoms per image: row, col (px) and class index.

        Returns
        -------
        features : ndarray of shape (sum k_i, n_features)
            Rows are the atoms of all images in order. Columns (see
            :meth:`get_feature_names_out`): coordination, missing neighbours (expected minus
            actual, 0 for dopants), mean bond length (Å, 0 without bonds), bond-angle spread
            (standard deviation of the angles between angularly adjacent bonds, degrees),
            smallest ring around the atom (0 if none), number of rings of size 3 to 8 and
            larger (holes) around it, edge (1 for edge atoms), dopant (1 for dopants) and
            interstitial (1 for atoms left out of the graph: inside a ring, or the second of a
            double detection).
        """
        _, kept, merges = self._prepare(X)
        results = Parallel(n_jobs=self.n_jobs)(delayed(self._analyse)(c) for c in kept)
        feats = [self._features(r) if m is None else self._features(r)[m[1]]
                 for r, m in zip(results, merges)]
        return np.vstack(feats) if feats else np.zeros((0, len(FEATURE_NAMES)))

    def _features(self, res):
        g = res.graph
        n = g.n
        f = np.zeros((n, len(FEATURE_NAMES)))
        if n == 0:
            return f
        coord = g.coordination
        f[:, 0] = coord
        f[:, 1] = res.missing_in
        with np.errstate(invalid="ignore", divide="ignore"):
            f[:, 2] = np.where(coord > 0, np.bincount(g.src, g.length, n) / coord, 0)
        if len(g.src):
            nxt = np.arange(len(g.src)) + 1
            last = g.indptr[g.src + 1] - 1
            nxt = np.where(np.arange(len(g.src)) == last, g.indptr[g.src], nxt)
            gap = np.degrees((g.angle[nxt] - g.angle) % (2 * np.pi))
            gap = np.where(coord[g.src] == 1, 360.0, gap)
            mean = np.bincount(g.src, gap, n) / np.maximum(coord, 1)
            var = np.bincount(g.src, (gap - mean[g.src]) ** 2, n) / np.maximum(coord, 1)
            f[:, 3] = np.where(coord >= 2, np.sqrt(var), 0)
            a_src, a_face = g.atom_faces()
            inner = g.face_inner[a_face]
            sizes = g.face_size[a_face]
            smallest = np.full(n, np.iinfo(np.int64).max)
            np.minimum.at(smallest, a_src[inner], sizes[inner])
            f[:, 4] = np.where(smallest == np.iinfo(np.int64).max, 0, smallest)
            for col, k in enumerate(range(3, 9), start=5):
                sel = inner & (sizes == k)
                f[:, col] = np.bincount(a_src[sel], minlength=n)
            sel = inner & (sizes > 8)
            f[:, 11] = np.bincount(a_src[sel], minlength=n)
        f[:, 12] = res.edge
        f[:, 13] = res.dopant
        f[:, 14] = g.interstitial
        return f

    def get_feature_names_out(self, input_features=None):
        """Names of the columns of :meth:`transform`.

        Parameters
        ----------
        input_features : None
            Ignored (the input is not a table).

        Returns
        -------
        feature_names_out : ndarray of str objects
        """
        return np.asarray(FEATURE_NAMES, dtype=object)

    def graphs(self, X):
        """The bond graph of every image as a networkx graph (slow for very large images).

        Parameters
        ----------
        X : list of ndarray of shape (k_i, 3)
            Atoms per image: row, col (px) and class index.

        Returns
        -------
        graphs : list of networkx.Graph
            Nodes are atom indices with attributes ``species``, ``position`` ((y, x) in Å),
            ``coordination``, ``edge`` and ``label`` (as :meth:`predict`); edges carry
            ``length`` in Å.
        """
        coords, kept, merges = self._prepare(X)
        results, instances = self._find_all(kept, keep_results=True, merges=merges)
        labels = self._atom_labels(coords, instances)
        out = []
        for res, lab, m in zip(results, labels, merges):
            g = res.graph
            ids = np.arange(g.n) if m is None else m[0]  # node = index of the input atom
            G = nx.Graph()
            for a in range(g.n):
                G.add_node(int(ids[a]), species=self.species_[g.spc[a]],
                           position=(float(g.pos[a, 0]), float(g.pos[a, 1])),
                           coordination=int(g.coordination[a]), edge=bool(res.edge[a]),
                           label=lab[ids[a]])
            keep = g.src < g.dst
            G.add_edges_from((int(ids[a]), int(ids[b]), {"length": float(d)}) for a, b, d in
                             zip(g.src[keep], g.dst[keep], g.length[keep]))
            out.append(G)
        return out

    def bonds(self, X):
        """Bonded atom pairs per image.

        Parameters
        ----------
        X : list of ndarray of shape (k_i, 3)
            Atoms per image: row, col (px) and class index.

        Returns
        -------
        bonds : list of ndarray of shape (n_bonds_i, 2), dtype int
            Atom index pairs ``(i, j)`` with ``i < j``.
        """
        _, kept, merges = self._prepare(X)
        ps = float(self.pixel_size)
        out = []
        for c, m in zip(kept, merges):
            g, _ = self._graph(c[:, :2] * ps, c[:, 2].astype(np.int64) - 1, ps)
            keep = g.src < g.dst
            bi, bj = g.src[keep], g.dst[keep]
            if m is not None:  # indices of the input atoms (ascending, so still i < j)
                bi, bj = m[0][bi], m[0][bj]
            out.append(np.column_stack([bi, bj]).astype(np.int64).reshape(-1, 2))
        return out
