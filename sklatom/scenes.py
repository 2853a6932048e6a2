"""Specimens as microscopists record them: supports, single atoms, nanoparticles, thick crystals.

:mod:`sklatom.structures` builds perfect monolayer lattices that fill the field of view. Real
images hold much else: vacuum and holes, amorphous supports and contamination (whose image is
texture, not atoms), single heavy atoms and small clusters on such supports, nanoparticles with
many atoms per column, thick crystals along a zone axis (column intensity grows with
thickness; light columns may not show), flakes with edges, bilayers and grain boundaries.
:func:`make_scene` builds any of them as an :class:`ase.Atoms` with the same conventions as
:func:`~sklatom.structures.make_structure` (orthogonal cell, beam along ``z``, a margin of
structure around ``info["scan_region"]``) and two per-atom arrays:

* ``arrays["role"]``: index into :data:`~sklatom.structures.ROLES`. Atoms of role
  ``"amorphous"`` never form a column to find: they are the texture of a support or of
  contamination.
* ``arrays["heavy"]``: the atom's Z-contrast class (see :func:`heavy_atoms`): a column is of
  class ``"heavy"`` when it holds a heavy atom, else ``"light"``.
* ``arrays["component"]``: which part of the specimen the atom belongs to (a lattice, a
  particle, one adatom, a cluster): a faint column is compared with the bright columns of its
  own part, so a graphene lattice next to a heavy particle stays a lattice.

Which columns an image actually shows (and are therefore labelled) depends on the recording,
and is decided by :mod:`sklatom.groundtruth`.
"""

import numbers
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers
from scipy import ndimage
from scipy.spatial import cKDTree
from sklearn.utils import check_random_state

from .structures import LATTICES, ROLES, make_structure

__all__ = ["SCENE_KINDS", "CRYSTALS", "make_scene", "crystal_block", "amorphous_slab",
           "nanoparticle", "heavy_atoms"]

#: Kinds of scene :func:`make_scene` builds.
SCENE_KINDS = ("lattice", "flake", "bilayer", "grain_boundary", "amorphous", "single_atoms",
               "nanoparticle", "crystal", "vacuum")


@dataclass(frozen=True)
class _Crystal:
    """A conventional unit cell: rows of ``cell`` are the lattice vectors (Å)."""

    cell: tuple
    basis: tuple  # (symbol, (fx, fy, fz)), fractional
    zone_axes: tuple  # directions [uvw] in lattice-vector coordinates
    kind: str  # "metal", "oxide", "semiconductor": what it is used for in scenes


def _cubic(a, basis, zone_axes=((0, 0, 1), (1, 1, 0), (1, 1, 1)), kind="metal"):
    return _Crystal(cell=((a, 0, 0), (0, a, 0), (0, 0, a)), basis=tuple(basis),
                    zone_axes=zone_axes, kind=kind)


_FCC = ((0, 0, 0), (0, .5, .5), (.5, 0, .5), (.5, .5, 0))


def _fcc(symbol, a):
    return _cubic(a, [(symbol, p) for p in _FCC])


def _bcc(symbol, a):
    return _cubic(a, [(symbol, (0, 0, 0)), (symbol, (.5, .5, .5))],
                  zone_axes=((0, 0, 1), (1, 1, 0), (1, 1, 1)))


def _hcp(symbol, a, c):
    cell = ((a, 0, 0), (-a / 2, a * np.sqrt(3) / 2, 0), (0, 0, c))
    return _Crystal(cell=cell, basis=((symbol, (1 / 3, 2 / 3, .25)), (symbol, (2 / 3, 1 / 3, .75))),
                    zone_axes=((0, 0, 1), (1, 1, 0), (1, -1, 0)), kind="metal")


def _diamond(a, first, second=None):
    second = second or first
    basis = [(first, p) for p in _FCC] + [(second, tuple(np.add(p, .25))) for p in _FCC]
    return _cubic(a, basis, zone_axes=((1, 1, 0), (0, 0, 1)), kind="semiconductor")


def _perovskite(a, site_a, site_b, site_x, c=None):
    c = c or a
    basis = ((site_a, (0, 0, 0)), (site_b, (.5, .5, .5)), (site_x, (.5, .5, 0)),
             (site_x, (.5, 0, .5)), (site_x, (0, .5, .5)))
    return _Crystal(cell=((a, 0, 0), (0, a, 0), (0, 0, c)), basis=basis,
                    zone_axes=((0, 0, 1), (1, 1, 0)), kind="oxide")


def _fluorite(a, cation, anion):
    basis = [(cation, p) for p in _FCC] + [
        (anion, (x, y, z)) for x in (.25, .75) for y in (.25, .75) for z in (.25, .75)]
    return _cubic(a, basis, zone_axes=((1, 1, 0), (0, 0, 1)), kind="oxide")


#: Bulk crystals for thick-crystal and nanoparticle scenes (lattice constants in Å).
CRYSTALS = {
    "Pt": _fcc("Pt", 3.924), "Au": _fcc("Au", 4.078), "Pd": _fcc("Pd", 3.891),
    "Ag": _fcc("Ag", 4.086), "Ir": _fcc("Ir", 3.839), "Pb": _fcc("Pb", 4.950),
    "Cu": _fcc("Cu", 3.615), "Ni": _fcc("Ni", 3.524),
    "W": _bcc("W", 3.165), "Mo": _bcc("Mo", 3.147), "Fe": _bcc("Fe", 2.866),
    "Ta": _bcc("Ta", 3.301),
    "Ru": _hcp("Ru", 2.706, 4.282), "Re": _hcp("Re", 2.761, 4.456),
    "Co": _hcp("Co", 2.507, 4.070), "Ti": _hcp("Ti", 2.951, 4.686),
    "SrTiO3": _perovskite(3.905, "Sr", "Ti", "O"),
    "PbTiO3": _perovskite(3.902, "Pb", "Ti", "O", c=4.156),
    "BaTiO3": _perovskite(3.994, "Ba", "Ti", "O", c=4.034),
    "LaAlO3": _perovskite(3.79, "La", "Al", "O"),
    "CsPbBr3": _perovskite(5.87, "Cs", "Pb", "Br"),
    "CeO2": _fluorite(5.411, "Ce", "O"),
    "Si": _diamond(5.431, "Si"), "Ge": _diamond(5.658, "Ge"),
    "GaAs": _diamond(5.653, "Ga", "As"),
}

#: Elements of single atoms and clusters on supports.
ADATOM_ELEMENTS = ("Pt", "Au", "Ir", "Re", "W", "Pd", "Ag", "Hf", "Ta", "Os", "La", "Ce",
                   "Fe", "Co", "Ni", "Cu", "Mo", "Ru", "Rh", "Bi", "Pb", "Si")
#: Compositions (element: atom fraction) and atom densities (1/Å³) of amorphous layers.
AMORPHOUS = {
    "C": ({"C": 1.0}, 0.10, 1.3),          # amorphous carbon, ~2.0 g/cm³; min distance Å
    "SiO2": ({"Si": 1 / 3, "O": 2 / 3}, 0.066, 1.4),
    "CH": ({"C": 0.9, "O": 0.1}, 0.08, 1.2),  # hydrocarbon contamination (H not imaged)
}


def heavy_atoms(symbols, roles):
    """The Z-contrast class of each atom: True for "heavy", False for "light".

    Heavy are atoms from scandium on (transition metals and heavier: Mo, W, Sr, Ti, Pt, ...)
    and, because they are brighter than the light lattice they sit in, dopants and adatoms
    from silicon on (Si in graphene). Everything else is light (C, B, N, O, S, Se-free
    chalcogen columns, Si of a Si crystal).

    Parameters
    ----------
    symbols : sequence of str
        Chemical symbols.
    roles : array-like of int
        Roles (indices into :data:`~sklatom.structures.ROLES`).

    Returns
    -------
    heavy : ndarray of shape (n_atoms,), bool
    """
    z = np.array([atomic_numbers[s] for s in symbols], dtype=int)
    roles = np.asarray(roles, dtype=int)
    guest = np.isin(roles, [ROLES.index("dopant"), ROLES.index("adatom")])
    return (z >= 21) | (guest & (z >= 14))


# --------------------------------------------------------------------------------------------
# geometry kernels
# --------------------------------------------------------------------------------------------
def _zone_axis_rotation(crystal, zone_axis, angle):
    """Rotation (rows: the new x, y, z in Cartesian crystal axes) putting the zone axis on z."""
    cell = np.asarray(crystal.cell, dtype=float)
    z = np.asarray(zone_axis, dtype=float) @ cell
    z /= np.linalg.norm(z)
    helper = np.array([1.0, 0, 0]) if abs(z[0]) < 0.9 else np.array([0, 1.0, 0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c, s = np.cos(angle), np.sin(angle)
    return np.array([c * x + s * y, -s * x + c * y, z])


def crystal_block(name, zone_axis, size, *, rotation=0.0, random_state=None):
    """Atoms of a bulk crystal filling a box, seen along a zone axis.

    Parameters
    ----------
    name : str
        A key of :data:`CRYSTALS`.
    zone_axis : tuple of int
        Direction ``[u, v, w]`` in lattice-vector coordinates that ends up along the beam (z).
    size : tuple of float
        (x, y, z) extent of the box in Å; z is the thickness along the beam.
    rotation : float, default=0.0
        In-plane rotation in degrees.
    random_state : int, RandomState instance or None, default=None
        Seeds the random offset of the lattice inside the box.

    Returns
    -------
    positions : ndarray of shape (n, 3)
        Cartesian positions in Å inside ``[0, size)``.
    symbols : ndarray of shape (n,), dtype str

    Examples
    --------
    >>> pos, sym = crystal_block("SrTiO3", (0, 0, 1), (7.81, 7.81, 7.81), random_state=0)
    >>> sorted(set(sym))
    ['O', 'Sr', 'Ti']
    """
    if name not in CRYSTALS:
        raise ValueError(f"crystal {name!r} is unknown; expected one of {sorted(CRYSTALS)}")
    crystal = CRYSTALS[name]
    rng = check_random_state(random_state)
    size = np.asarray(size, dtype=float)
    rot = _zone_axis_rotation(crystal, zone_axis, np.deg2rad(rotation))
    cell = np.asarray(crystal.cell, dtype=float)
    # the box's corners in fractional coordinates bound the unit cells to enumerate
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)]) * size
    centre = size / 2
    frac = (corners - centre) @ rot @ np.linalg.inv(cell)
    lo = np.floor(frac.min(axis=0)).astype(int) - 1
    hi = np.ceil(frac.max(axis=0)).astype(int) + 1
    grid = np.stack(np.meshgrid(*(np.arange(a, b + 1) for a, b in zip(lo, hi)),
                                indexing="ij"), axis=-1).reshape(-1, 3)
    basis = np.array([p for _, p in crystal.basis], dtype=float)
    symbols = np.array([s for s, _ in crystal.basis])
    offset = rng.uniform(0, 1, 3)
    frac_pos = (grid[:, None, :] + basis[None, :, :] + offset).reshape(-1, 3)
    pos = frac_pos @ cell @ rot.T + centre
    keep = np.all((pos >= 0) & (pos < size), axis=1)
    return pos[keep], np.tile(symbols, len(grid))[keep]


def _facet_normals(crystal):
    """Unit facet normals (Cartesian crystal axes) and relative distances of a particle shape."""
    cubic = np.allclose(np.asarray(crystal.cell), np.diag(np.diag(crystal.cell)))
    if not cubic:  # hexagonal: basal and prism facets
        n = [(0, 0, 1), (0, 0, -1)] + [(np.cos(t), np.sin(t), 0)
                                       for t in np.arange(6) * np.pi / 3]
        return np.array(n, dtype=float), np.array([1.0, 1.0] + [1.0] * 6)
    n100 = [v for v in np.eye(3)] + [-v for v in np.eye(3)]
    n111 = [np.array(s) / np.sqrt(3) for s in
            [(a, b, c) for a in (1, -1) for b in (1, -1) for c in (1, -1)]]
    return np.array(n100 + n111), np.array([1.0] * 6 + [0.0] * 8)


def nanoparticle(name, diameter, zone_axis, *, rotation=0.0, random_state=None):
    """A faceted nanoparticle of a bulk crystal, seen along a zone axis.

    The shape is a sphere cut by {100} and {111} facets (basal and prism facets for hcp) at
    random distances (cuboctahedra to truncated octahedra and cubes), flattened at the bottom
    where it sits on a support.

    Parameters
    ----------
    name : str
        A key of :data:`CRYSTALS`.
    diameter : float
        Diameter in Å.
    zone_axis : tuple of int
        Direction ``[u, v, w]`` along the beam.
    rotation : float, default=0.0
        In-plane rotation in degrees.
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    positions : ndarray of shape (n, 3)
        Positions in Å, centred on the origin in x and y, bottom at z = 0.
    symbols : ndarray of shape (n,), dtype str
    """
    rng = check_random_state(random_state)
    crystal = CRYSTALS[name]
    radius = diameter / 2
    side = diameter + 4 * max(np.linalg.norm(crystal.cell, axis=1))
    pos, sym = crystal_block(name, zone_axis, (side, side, side), rotation=rotation,
                             random_state=rng)
    centre = np.full(3, side / 2)
    rel = pos - centre
    rot = _zone_axis_rotation(crystal, zone_axis, np.deg2rad(rotation))
    normals, family = _facet_normals(crystal)
    normals = normals @ rot.T  # into the beam frame
    ratio = rng.uniform(0.85, 1.25)  # {100} distance relative to {111}
    dist = radius * np.where(family == 1, ratio, 1.0) * rng.uniform(0.92, 1.08, len(normals))
    inside = np.all(rel @ normals.T <= dist, axis=1) & (np.linalg.norm(rel, axis=1) <= radius)
    bottom = -radius * rng.uniform(0.6, 1.0)  # a flat base where it touches the support
    inside &= rel[:, 2] >= bottom
    pos = rel[inside]
    pos[:, 2] -= pos[:, 2].min() if len(pos) else 0.0
    return pos, sym[inside]


def _cluster(element, n_atoms, rng):
    """A compact cluster of ``n_atoms`` in a random orientation (not on a zone axis)."""
    a = CRYSTALS["Pt"].cell[0][0] * 1.0
    pos, _ = crystal_block("Pt", (1, 1, 1), (4 * a, 4 * a, 4 * a),
                           random_state=rng)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    pos = (pos - 2 * a) @ q.T
    start = rng.normal(0, 0.3, 3)
    order = np.argsort(np.linalg.norm(pos - start, axis=1))[:n_atoms]
    pos = pos[order]
    pos -= pos.mean(axis=0)
    pos[:, 2] -= pos[:, 2].min()
    return pos, np.full(len(pos), element)


def smooth_field(shape, length_px, rng):
    """Gaussian random field of unit variance and correlation length ``length_px`` (sigma).

    Drawn on a grid larger than ``shape`` by twice the length on each side and cropped, so a
    length larger than the grid gives a slowly varying field (mostly a gradient), not a
    field stretched to unit variance. Long lengths are drawn on a coarser grid and
    interpolated (the field is smooth at that scale anyway), so the cost stays that of a
    small image.
    """
    sigma = max(float(length_px), 0.5)
    step = max(1, int(sigma // 4))
    sigma_c = sigma / step
    pad = int(np.ceil(2 * sigma_c)) + 2
    coarse = (int(np.ceil(shape[0] / step)) + 2 * pad, int(np.ceil(shape[1] / step)) + 2 * pad)
    field = ndimage.gaussian_filter(rng.normal(size=coarse), sigma_c, mode="wrap")
    field *= 2 * np.sqrt(np.pi) * sigma_c  # filtered white noise has variance 1/(4 pi s^2)
    if step == 1:
        return field[pad:pad + shape[0], pad:pad + shape[1]]
    # interpolate only the part that covers the output (and 2 coarse cells around it)
    n0, n1 = (int(np.ceil(n / step)) for n in shape)
    part = field[pad - 2:pad + n0 + 2, pad - 2:pad + n1 + 2]
    fine = ndimage.zoom(part, step, order=3, mode="nearest", grid_mode=True)
    return fine[2 * step:2 * step + shape[0], 2 * step:2 * step + shape[1]]


def _region_mask(xy, box, rng, coverage, length=12.0):
    """Boolean mask of the points inside a random blob covering about ``coverage`` of the box.

    The blob is a thresholded smooth random field (length in Å), so its edges are irregular
    like those of a flake or a hole.
    """
    grid = 1.0  # Å per cell of the field
    shape = (int(np.ceil(box[1] / grid)) + 1, int(np.ceil(box[0] / grid)) + 1)
    field = smooth_field(shape, length / grid, rng)
    cut = np.quantile(field, 1 - coverage)
    ix = np.clip((xy[:, 0] / grid).astype(int), 0, shape[1] - 1)
    iy = np.clip((xy[:, 1] / grid).astype(int), 0, shape[0] - 1)
    return field[iy, ix] > cut


def amorphous_slab(composition, box, thickness, *, density=None, min_distance=None,
                   thickness_variation=0.3, variation_length=30.0, holes=0.0, z0=0.0,
                   random_state=None):
    """Random non-crystalline atoms in a slab of varying thickness (a support or a film).

    Atoms are added at random positions, each only where no other is closer than
    ``min_distance``, until the slab holds ``density`` atoms per Å³ (a hard-core amorphous
    solid, not a lattice: its projection has no periodicity). The
    top surface varies smoothly, so the projected thickness, and with it the image
    background, changes across the field of view as on real supports.

    Parameters
    ----------
    composition : str
        A key of :data:`AMORPHOUS` ("C", "SiO2", "CH").
    box : tuple of float
        (x, y) extent in Å.
    thickness : float
        Mean thickness in Å.
    density : float, optional
        Atoms per Å³; default from :data:`AMORPHOUS`.
    min_distance : float, optional
        Smallest interatomic distance in Å; default from :data:`AMORPHOUS`.
    thickness_variation : float, default=0.3
        Standard deviation of the thickness relative to its mean.
    variation_length : float, default=30.0
        Correlation length in Å of the thickness variation.
    holes : float, default=0.0
        Fraction of the area left empty (holes in the film).
    z0 : float, default=0.0
        Height of the slab's bottom in Å.
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    positions : ndarray of shape (n, 3)
    symbols : ndarray of shape (n,), dtype str
    """
    if composition not in AMORPHOUS:
        raise ValueError(f"composition {composition!r} is unknown; expected one of "
                         f"{sorted(AMORPHOUS)}")
    rng = check_random_state(random_state)
    fractions, rho, dmin = AMORPHOUS[composition]
    rho = rho if density is None else density
    dmin = dmin if min_distance is None else min_distance
    box = np.asarray(box, dtype=float)
    # local thickness: a smooth random field around the mean
    shape = (int(np.ceil(box[1])) + 1, int(np.ceil(box[0])) + 1)
    field = smooth_field(shape, variation_length, rng)
    local = np.clip(thickness * (1 + thickness_variation * field), 0, None)
    if holes > 0:
        local[field < np.quantile(field, holes)] = 0.0
    pos = _hard_core_fill(box, local, rho, dmin, rng)
    # keep the composition's atom fractions, in random order
    elements = list(fractions)
    sym = rng.choice(elements, size=len(pos), p=[fractions[e] for e in elements])
    pos[:, 2] += z0
    return pos, np.asarray(sym)


def _below_surface(points, local):
    """Which points (x, y, z in Å) lie under the local thickness (a map on a 1 Å grid)."""
    ix = np.clip(points[:, 0].astype(int), 0, local.shape[1] - 1)
    iy = np.clip(points[:, 1].astype(int), 0, local.shape[0] - 1)
    return points[:, 2] < local[iy, ix]


def _hard_core_fill(box, local, density, min_distance, rng, layer=20.0, max_rounds=50):
    """Random points under a surface at ``density`` per Å³, no two closer than ``min_distance``.

    Random sequential addition, layer by layer from the bottom: uniform candidates under the
    surface are added in rounds, each dropped when it comes closer than ``min_distance`` to a
    kept point (of its layer or the top of the layer below) or to an earlier candidate of its
    round, until the layer holds ``density`` times its volume (amorphous carbon's 0.10 Å⁻³ at
    1.3 Å is far below the jamming limit, so few rounds are needed). Thinning one uniform
    draw instead leaves the slab a quarter less dense than asked.

    Parameters
    ----------
    box : ndarray of shape (2,)
        (x, y) extent in Å.
    local : ndarray of shape (ny, nx)
        Thickness in Å on a 1 Å grid covering the box (cell ``[iy, ix]`` spans
        ``[ix, ix + 1) x [iy, iy + 1)``).
    density : float
        Points per Å³.
    min_distance : float
        Smallest distance between two points in Å.
    rng : RandomState

    Returns
    -------
    points : ndarray of shape (n, 3)
        x, y, z in Å, z from 0 up to the local thickness.
    """
    # each 1 Å cell of the map weighs the part of it inside the box
    wx = np.clip(box[0] - np.arange(local.shape[1]), 0, 1)
    wy = np.clip(box[1] - np.arange(local.shape[0]), 0, 1)
    layers, below = [], np.zeros((0, 3))
    for z0 in np.arange(0.0, float(local.max()), layer):
        volume = float(wy @ np.clip(local - z0, 0, layer) @ wx)
        target = int(rng.poisson(density * volume))
        filled = volume / (box[0] * box[1] * layer)  # fraction of candidates under the surface
        kept = np.zeros((0, 3))
        for _ in range(max_rounds):
            need = target - len(kept)
            if need <= 0:
                break
            cand = rng.uniform(0, 1, (int(need / filled * 1.5) + 16, 3)) * [box[0], box[1], layer]
            cand[:, 2] += z0
            cand = cand[_below_surface(cand, local)]
            near = np.concatenate([below, kept])
            if len(near) and len(cand):
                d, _ = cKDTree(near).query(cand, distance_upper_bound=min_distance)
                cand = cand[~(d < min_distance)]
            if len(cand) > 1:
                pairs = cKDTree(cand).query_pairs(min_distance, output_type="ndarray")
                drop = np.zeros(len(cand), bool)
                drop[pairs[:, 1]] = True
                cand = cand[~drop]
            kept = np.concatenate([kept, cand[:need]])
        layers.append(kept)
        below = kept[kept[:, 2] >= z0 + layer - min_distance]
    return np.concatenate(layers) if layers else np.zeros((0, 3))


# --------------------------------------------------------------------------------------------
# scenes
# --------------------------------------------------------------------------------------------
class _Builder:
    """Collects atoms (positions in the cell frame, symbols, roles) of one scene."""

    def __init__(self, field_of_view, margin):
        self.height, self.width = field_of_view
        self.margin = margin
        self.box = np.array([self.width + 2 * margin, self.height + 2 * margin])  # (x, y)
        self.parts = []
        self.components = []
        self.n_components = 0

    def add(self, positions, symbols, role, heavy=None, component="one"):
        positions = np.asarray(positions, dtype=float).reshape(-1, 3)
        symbols = np.asarray(symbols).reshape(-1)
        if isinstance(role, str):
            roles = np.full(len(positions), ROLES.index(role))
        else:
            roles = np.asarray(role, dtype=int).reshape(-1)
        inside = np.all((positions[:, :2] >= 0) & (positions[:, :2] < self.box), axis=1)
        if heavy is None:
            heavy = heavy_atoms(symbols, roles)
        self.parts.append((positions[inside], symbols[inside], roles[inside],
                           np.asarray(heavy, bool).reshape(-1)[inside]))
        if component == "each":  # every atom a part of its own (single atoms)
            ids = self.n_components + np.arange(int(inside.sum()))
        else:
            ids = np.full(int(inside.sum()), self.n_components)
        self.components.append(ids)
        self.n_components += max(1, len(ids) if component == "each" else 1)

    def atoms_of(self, atoms, z_shift=0.0, heavy=None):
        """Add the atoms of an :class:`ase.Atoms` built by make_structure (same box)."""
        pos = atoms.positions.copy()
        pos[:, 2] += z_shift
        self.add(pos, np.array(atoms.get_chemical_symbols()), atoms.arrays["role"], heavy)

    def top(self):
        """Highest z of the atoms so far (0 without atoms)."""
        zs = [p[:, 2].max() for p, *_ in self.parts if len(p)]
        return max(zs) if zs else 0.0

    def build(self, info):
        if self.parts:
            pos, sym, role, heavy = (np.concatenate(x) for x in zip(*self.parts))
            component = np.concatenate(self.components)
        else:
            pos, sym, role, heavy = np.zeros((0, 3)), np.zeros(0, "<U2"), np.zeros(0, int), \
                np.zeros(0, bool)
            component = np.zeros(0, int)
        depth = max(8.0, float(pos[:, 2].max()) + 4.0 if len(pos) else 8.0)
        pos = pos.copy()
        if len(pos):
            pos[:, 2] += 2.0 - min(0.0, pos[:, 2].min())
            depth = max(depth, float(pos[:, 2].max()) + 2.0)
        atoms = Atoms(symbols=list(sym), positions=pos,
                      cell=[self.box[0], self.box[1], depth], pbc=True)
        atoms.arrays["role"] = np.asarray(role, dtype=int)
        atoms.arrays["heavy"] = np.asarray(heavy, dtype=bool)
        atoms.arrays["component"] = np.asarray(component, dtype=int)
        atoms.info.update(scan_region=(float(self.margin), float(self.margin),
                                       float(self.height), float(self.width)), **info)
        return atoms


#: Range (Å) of the mean thickness of amorphous supports, drawn log-uniformly.
SUPPORT_THICKNESS = (5.0, 1000.0)
#: Range (Å) of the correlation length of a support's thickness variation, log-uniformly.
SUPPORT_VARIATION_LENGTH = (3.0, 60.0)


def _log_uniform(rng, low, high):
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _pick(rng, options):
    return options[rng.randint(len(options))]


def _lattice_part(builder, lattice, rng, defects="default", z_shift=0.0, rotation=None):
    """Add a monolayer of ``lattice`` filling the builder's box; returns its ase.Atoms."""
    atoms = make_structure(lattice, (builder.height, builder.width), defects=defects,
                           rotation=rotation, margin=builder.margin,
                           min_defect_separation=4.0, random_state=rng.randint(2**31 - 1))
    builder.atoms_of(atoms, z_shift)
    return atoms


def _support(builder, rng, kind, thickness=None, holes=0.0):
    """Add a support under the scene; returns the height of its top surface (Å)."""
    if kind == "vacuum":
        return 0.0
    if kind in LATTICES:
        _lattice_part(builder, kind, rng)
        return builder.top()
    composition = kind
    # thin films (0.5-5 nm) to the thick, granular supports of catalysts (carbon black,
    # porous carbons: up to 100 nm, mottled at the scale of a few Å to a few nm, so that
    # a single heavy atom stands only 20-30 % above its support, as in real images)
    t = thickness if thickness is not None else _log_uniform(rng, *SUPPORT_THICKNESS)
    pos, sym = amorphous_slab(composition, builder.box, t,
                              thickness_variation=rng.uniform(0.1, 0.8),
                              variation_length=_log_uniform(rng, *SUPPORT_VARIATION_LENGTH),
                              holes=holes, random_state=rng)
    builder.add(pos, sym, "amorphous", heavy=np.zeros(len(pos), bool))
    return t


def _adatoms(builder, rng, density, element=None, z=0.0, min_distance=1.2):
    """Single atoms scattered over the field of view (density in atoms per Å²)."""
    n = int(rng.poisson(density * builder.box[0] * builder.box[1]))
    xy = rng.uniform(0, 1, (n, 2)) * builder.box
    if n > 1:
        pairs = cKDTree(xy).query_pairs(min_distance, output_type="ndarray")
        drop = np.zeros(n, bool)
        drop[pairs[:, 1]] = True
        xy = xy[~drop]
    elements = [element] if element else list(ADATOM_ELEMENTS)
    sym = np.array([_pick(rng, elements) for _ in range(len(xy))])
    pos = np.column_stack([xy, np.full(len(xy), z + 1.5) + rng.uniform(0, 2, len(xy))])
    builder.add(pos, sym, "adatom", component="each")


def _contamination(builder, rng, n_patches, z):
    """Patches of amorphous hydrocarbon on top of a specimen (texture, not atoms)."""
    for _ in range(n_patches):
        radius = rng.uniform(4, 20)
        t = rng.uniform(5, 60)
        side = 2 * radius + 4
        pos, sym = amorphous_slab("CH", (side, side), t, thickness_variation=0.2,
                                  variation_length=radius, random_state=rng)
        rel = pos[:, :2] - side / 2
        keep = np.hypot(*rel.T) < radius * (1 + 0.3 * np.sin(
            np.arctan2(rel[:, 1], rel[:, 0]) * rng.randint(2, 5) + rng.uniform(0, 6)))
        centre = rng.uniform(0, 1, 2) * builder.box
        pos = pos[keep]
        pos[:, :2] += centre - side / 2
        pos[:, 2] += z
        builder.add(pos, sym[keep], "amorphous", heavy=np.zeros(int(keep.sum()), bool))


def make_scene(kind="single_atoms", field_of_view=(40.0, 40.0), *, margin=4.0,
               random_state=None, **options):
    """Build a specimen of one of the :data:`SCENE_KINDS`, with random content.

    Parameters
    ----------
    kind : str, default="single_atoms"
        What the specimen is:

        - ``"lattice"``: a monolayer of :data:`~sklatom.structures.LATTICES` filling the
          field, with point defects and sometimes contamination patches.
        - ``"flake"``: a monolayer covering part of the field (edges, holes), over vacuum or
          an amorphous support.
        - ``"bilayer"``: two monolayers stacked, twisted or aligned.
        - ``"grain_boundary"``: one monolayer in two grains of different orientation.
        - ``"amorphous"``: an amorphous support or film only (nothing to find).
        - ``"single_atoms"``: single heavy atoms and small clusters on an amorphous support
          (or on graphene).
        - ``"nanoparticle"``: one to three faceted metal particles (1-5 nm) in a zone axis, in
          vacuum or on a support, sometimes with single atoms around them.
        - ``"crystal"``: a thick crystal (2-20 nm) along a zone axis (perovskites, fluorite,
          diamond-structure semiconductors, metals), filling the field or part of it.
        - ``"vacuum"``: no atoms.
    field_of_view : tuple of float, default=(40.0, 40.0)
        (height, width) of the scanned region in Å.
    margin : float, default=4.0
        Structure kept around the scanned region, in Å.
    random_state : int, RandomState instance or None, default=None
        Seeds everything random.
    **options
        Choices to fix instead of drawing them: ``lattice`` (flake, bilayer, grain boundary,
        lattice scenes), ``support`` ("vacuum", "C", "SiO2" or a lattice name), ``element``
        (single atoms), ``crystal`` and ``zone_axis`` (crystal, nanoparticle), ``thickness``
        (Å, crystal or support), ``diameter`` (Å, nanoparticle), ``adatom_density``
        (atoms/Å²), ``coverage`` (fraction of the field covered by a flake or crystal),
        ``contamination`` (number of patches), ``defects`` (point defects of lattice and flake
        scenes, as in :func:`~sklatom.structures.make_structure`).

    Returns
    -------
    atoms : ase.Atoms
        The specimen; ``arrays["role"]``, ``arrays["heavy"]``, ``info["scene"]`` (the kind),
        ``info["scan_region"]`` and, for lattice-based scenes, ``info["defects"]``.

    Examples
    --------
    >>> atoms = make_scene("nanoparticle", (30.0, 30.0), random_state=0, support="vacuum",
    ...                    crystal="Au", diameter=20.0)
    >>> atoms.info["scene"], bool(atoms.arrays["heavy"].all())
    ('nanoparticle', True)
    """
    if kind not in SCENE_KINDS:
        raise ValueError(f"kind={kind!r} is unknown; expected one of {SCENE_KINDS}")
    try:
        height, width = (float(v) for v in field_of_view)
    except (TypeError, ValueError):
        raise ValueError(f"field_of_view must be (height, width) in Å; got "
                         f"{field_of_view!r}") from None
    if not (np.isfinite(height) and np.isfinite(width) and min(height, width) >= 4.0):
        raise ValueError(f"field_of_view={field_of_view!r} Å: both sides must be at least 4 Å")
    if not (isinstance(margin, numbers.Real) and margin >= 0):
        raise ValueError(f"margin must be a non-negative length in Å; got {margin!r}")
    known = {"lattice", "support", "element", "crystal", "zone_axis", "thickness", "diameter",
             "adatom_density", "coverage", "contamination", "defects"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"make_scene got unknown options {unknown}; expected some of "
                        f"{sorted(known)}")
    rng = check_random_state(random_state)
    builder = _Builder((height, width), float(margin))
    info = {"scene": kind}
    get = options.get
    monolayers = sorted(LATTICES)
    sheets = [name for name in monolayers if LATTICES[name].depth == 0]  # 2-D materials
    if kind == "lattice":
        lattice = get("lattice") or _pick(rng, monolayers)
        atoms = _lattice_part(builder, lattice, rng, defects=get("defects", "default"))
        info.update(lattice=lattice, defects=atoms.info["defects"])
        n_cont = get("contamination", rng.poisson(0.7))
        _contamination(builder, rng, n_cont, builder.top() + 2)
    elif kind == "flake":
        lattice = get("lattice") or _pick(rng, sheets)
        support = get("support") or _pick(rng, ["vacuum", "vacuum", "C", "SiO2"])
        z = _support(builder, rng, support, get("thickness"))
        part = _Builder((height, width), float(margin))
        _lattice_part(part, lattice, rng, defects=get("defects", "default"))
        pos, sym, role, heavy = part.parts[0]
        coverage = get("coverage", rng.uniform(0.2, 0.8))
        keep = _region_mask(pos[:, :2], builder.box, rng, coverage)
        if rng.rand() < 0.3:  # holes in the flake
            keep &= ~_region_mask(pos[:, :2], builder.box, rng, rng.uniform(0.05, 0.2), 6.0)
        pos = pos[keep] + [0, 0, z + 2.0]
        builder.add(pos, sym[keep], role[keep], heavy[keep])
        info.update(lattice=lattice, support=support)
        _contamination(builder, rng, get("contamination", rng.poisson(0.5)), builder.top() + 2)
    elif kind == "bilayer":
        lattice = get("lattice") or _pick(rng, ["graphene", "hBN", "MoS2", "WS2", "graphene"])
        second = lattice if rng.rand() < 0.7 else _pick(rng, ["graphene", "hBN", "MoS2", "WS2"])
        first = _lattice_part(builder, lattice, rng, defects=None)
        twist = 0.0 if rng.rand() < 0.3 else rng.uniform(0.5, 30)
        spacing = 3.35 if second in ("graphene", "hBN") and lattice in ("graphene", "hBN") \
            else 6.3
        _lattice_part(builder, second, rng, defects=None, z_shift=spacing,
                      rotation=first.info["rotation"] + twist)
        info.update(lattice=lattice, second_lattice=second, twist=twist)
    elif kind == "grain_boundary":
        lattice = get("lattice") or _pick(rng, sheets)
        a = _Builder((height, width), float(margin))
        b = _Builder((height, width), float(margin))
        grain_a = _lattice_part(a, lattice, rng, defects=None)
        _lattice_part(b, lattice, rng, defects=None,
                      rotation=grain_a.info["rotation"] + rng.uniform(8, 52))
        pa, sa, ra, ha = a.parts[0]
        pb, sb, rb, hb = b.parts[0]
        angle = rng.uniform(0, np.pi)
        normal = np.array([np.cos(angle), np.sin(angle)])
        centre = builder.box / 2 + rng.uniform(-0.25, 0.25, 2) * builder.box
        side_a = (pa[:, :2] - centre) @ normal < 0
        side_b = (pb[:, :2] - centre) @ normal >= 0
        pa, sa, ra, ha = pa[side_a], sa[side_a], ra[side_a], ha[side_a]
        pb, sb, rb, hb = pb[side_b], sb[side_b], rb[side_b], hb[side_b]
        bond = LATTICES[lattice].bond_length
        if len(pa) and len(pb):  # no two atoms closer than most of a bond across the boundary
            d, _ = cKDTree(pa[:, :2]).query(pb[:, :2])
            ok = d > 0.7 * bond
            pb, sb, rb, hb = pb[ok], sb[ok], rb[ok], hb[ok]
        builder.add(pa, sa, ra, ha)
        builder.add(pb, sb, rb, hb)
        info.update(lattice=lattice)
    elif kind == "amorphous":
        support = get("support") or _pick(rng, ["C", "C", "SiO2"])
        _support(builder, rng, support, get("thickness"), holes=rng.uniform(0, 0.3))
        info.update(support=support)
    elif kind == "single_atoms":
        support = get("support") or _pick(rng, ["C", "C", "C", "SiO2", "graphene"])
        z = _support(builder, rng, support, get("thickness"))
        element = get("element") or _pick(rng, ADATOM_ELEMENTS)
        density = get("adatom_density", _log_uniform(rng, 5e-4, 1e-2))
        _adatoms(builder, rng, density, element, z)
        for _ in range(rng.poisson(1.0)):  # small clusters
            pos, sym = _cluster(element, rng.randint(3, 20), rng)
            pos[:, :2] += rng.uniform(0, 1, 2) * builder.box
            pos[:, 2] += z + 1.5
            builder.add(pos, sym, "adatom")
        info.update(support=support, element=element)
    elif kind == "nanoparticle":
        support = get("support") or _pick(rng, ["vacuum", "vacuum", "C", "C", "SiO2", "graphene"])
        z = _support(builder, rng, support, get("thickness"))
        metals = [k for k, c in CRYSTALS.items() if c.kind == "metal"]
        name = get("crystal") or _pick(rng, metals)
        n_particles = 1 + int(rng.poisson(0.5))
        for k in range(n_particles):
            diameter = get("diameter", rng.uniform(10, 50))
            axis = get("zone_axis") or _pick(rng, CRYSTALS[name].zone_axes)
            pos, sym = nanoparticle(name, diameter, axis, rotation=rng.uniform(0, 360),
                                    random_state=rng)
            where = builder.box / 2 if k == 0 else rng.uniform(0, 1, 2) * builder.box
            pos[:, :2] += where + rng.uniform(-0.2, 0.2, 2) * np.array([width, height])
            pos[:, 2] += z + 2.0
            builder.add(pos, sym, "particle")
        if rng.rand() < 0.3:
            _adatoms(builder, rng, _log_uniform(rng, 3e-4, 3e-3),
                     name, z)
        info.update(support=support, crystal=name)
    elif kind == "crystal":
        name = get("crystal") or _pick(rng, sorted(CRYSTALS))
        axis = get("zone_axis") or _pick(rng, CRYSTALS[name].zone_axes)
        thickness = get("thickness", _log_uniform(rng, 20, 200))
        pos, sym = crystal_block(name, axis, (*builder.box, thickness),
                                 rotation=rng.uniform(0, 360), random_state=rng)
        coverage = get("coverage", 1.0 if rng.rand() < 0.6 else rng.uniform(0.3, 0.9))
        if coverage < 1.0:  # a crystal edge or wedge: part of the field is vacuum
            keep = _region_mask(pos[:, :2], builder.box, rng, coverage, length=30.0)
            pos, sym = pos[keep], sym[keep]
        builder.add(pos, sym, "lattice")
        info.update(crystal=name, zone_axis=tuple(int(v) for v in axis), thickness=thickness)
        _contamination(builder, rng, get("contamination", rng.poisson(0.3)), builder.top() + 2)
    # "vacuum": no atoms at all
    return builder.build(info)
