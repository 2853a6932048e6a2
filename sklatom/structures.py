"""Atomic structures with ground truth: lattices, point defects and their projected columns.

A structure is an :class:`ase.Atoms` in an orthogonal cell, seen along ``z`` (the beam). Every
atom carries its role in the array ``atoms.arrays["role"]`` (an index into :data:`ROLES`). The
region the microscope scans is stored in ``atoms.info["scan_region"] = (y0, x0, height, width)``
in Å; the cell is larger than that region by a margin of real atoms, so the image of a cropped
(non-periodic) piece of lattice has no edge artefacts.

:func:`project_columns` turns a structure into its atomic columns, the ground truth of an image:
atoms whose projections coincide (the two S of a MoS2 S2 site, the atoms of a column of a 3-D
crystal) form one column, named by its composition (``"S2"``, ``"Mo"``, ``"TiO"``).
"""

import numbers
from dataclasses import dataclass, field
from math import gcd

import numpy as np
from ase import Atoms
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from sklearn.utils import check_random_state

__all__ = [
    "LATTICES",
    "ROLES",
    "DEFECT_KINDS",
    "make_structure",
    "empty_sites",
    "project_columns",
    "lattice_classes",
    "find_columns",
    "Columns",
]

#: Roles an atom (and the column that holds it) can have, by increasing priority. Atoms of role
#: "amorphous" (supports, contamination: see :mod:`sklatom.scenes`) never form a column.
ROLES = ("lattice", "vacancy_neighbor", "stone_wales", "dopant", "adatom", "particle",
         "amorphous")

#: Point-defect kinds :func:`make_structure` can plant.
DEFECT_KINDS = ("vacancy", "divacancy", "substitution", "stone_wales")


@dataclass(frozen=True)
class _Lattice:
    """A rectangular unit cell seen along the beam, and what can go wrong in it."""

    a: float  # cell size along x, Å
    b: float  # cell size along y, Å
    depth: float  # cell size along z (beam), Å
    symbols: tuple
    positions: tuple  # fractional (x, y, z)
    substitutions: dict  # host symbol -> dopant symbol
    defects: tuple  # defect kinds that make physical sense here
    classes: tuple  # column names, in class order (background excluded)
    reduce_columns: bool = False  # name 3-D columns by reduced formula ("TiO", not "Ti5O5")
    default_defects: dict = field(default_factory=dict)
    bond_length: float = 0.0  # nearest-neighbour distance, Å (for defect geometry)


def _honeycomb(a, first, second, z_first=(0.0,), z_second=(0.0,)):
    """Rectangular (a, sqrt(3) a) cell of a honeycomb with sites A=first, B=second."""
    b = np.sqrt(3) * a
    sites = [(0.0, 0.0, "A"), (0.0, 1 / 3, "B"), (0.5, 0.5, "A"), (0.5, 5 / 6, "B")]
    symbols, positions = [], []
    for fx, fy, site in sites:
        elem, zs = (first, z_first) if site == "A" else (second, z_second)
        for z in zs:
            symbols.append(elem)
            positions.append((fx, fy, z))
    return a, b, tuple(symbols), tuple(positions)


def _tmd(a, metal, chalcogen, dz, metal_dopant, chalcogen_dopant):
    ax, by, sym, pos = _honeycomb(a, metal, chalcogen, (0.0,), (-dz, dz))
    # the column names that can occur: host sites, half-empty S2 sites, substituted sites
    classes = (metal, f"{chalcogen}2", chalcogen, metal_dopant,
               "".join(sorted([chalcogen, chalcogen_dopant])))
    return _Lattice(
        a=ax, b=by, depth=0.0, symbols=sym, positions=pos,
        substitutions={metal: metal_dopant, chalcogen: chalcogen_dopant},
        defects=("vacancy", "substitution"), classes=classes,
        default_defects={"vacancy": 2, "substitution": 2}, bond_length=a / np.sqrt(3),
    )


def _graphene(doped):
    a, b, sym, pos = _honeycomb(2.46, "C", "C")
    defaults = {"vacancy": 1, "divacancy": 1, "stone_wales": 1, "substitution": 1}
    if doped:
        defaults = {"vacancy": 1, "substitution": 6}
    return _Lattice(
        a=a, b=b, depth=0.0, symbols=sym, positions=pos, substitutions={"C": "Si"},
        defects=DEFECT_KINDS, classes=("C", "Si"), default_defects=defaults,
        bond_length=2.46 / np.sqrt(3),
    )


def _hbn():
    a, b, sym, pos = _honeycomb(2.504, "B", "N")
    return _Lattice(
        a=a, b=b, depth=0.0, symbols=sym, positions=pos, substitutions={"B": "C", "N": "C"},
        defects=("vacancy", "divacancy", "substitution"), classes=("B", "N", "C"),
        default_defects={"vacancy": 2, "substitution": 1}, bond_length=2.504 / np.sqrt(3),
    )


def _srtio3():
    # cubic perovskite, a = 3.905 Å, seen along [001]: Sr, Ti-O and O columns
    symbols = ("Sr", "Ti", "O", "O", "O")
    positions = ((0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0.0), (0.5, 0.0, 0.5), (0.0, 0.5, 0.5))
    return _Lattice(
        a=3.905, b=3.905, depth=3.905, symbols=symbols, positions=positions,
        substitutions={}, defects=(), classes=("Sr", "OTi", "O"), reduce_columns=True,
        bond_length=3.905 / 2,
    )


#: Lattices :func:`make_structure` knows, by name.
LATTICES = {
    "graphene": _graphene(doped=False),
    "Si-graphene": _graphene(doped=True),
    "hBN": _hbn(),
    "MoS2": _tmd(3.16, "Mo", "S", 1.56, "W", "Se"),
    "WS2": _tmd(3.153, "W", "S", 1.57, "Mo", "Se"),
    "SrTiO3-001": _srtio3(),
}


def _check_lattice(lattice):
    if lattice not in LATTICES:
        raise ValueError(
            f"lattice={lattice!r} is unknown; expected one of {sorted(LATTICES)}"
        )
    return LATTICES[lattice]


def lattice_classes(lattice):
    """Column class names of a lattice, background first.

    Parameters
    ----------
    lattice : str
        A name from :data:`LATTICES`.

    Returns
    -------
    classes : list of str
        ``["background", *column names]``; a label mask value ``i`` means ``classes[i]``.

    Examples
    --------
    >>> lattice_classes("MoS2")
    ['background', 'Mo', 'S2', 'S', 'W', 'SSe']
    """
    return ["background", *_check_lattice(lattice).classes]


def _tile(lat, radius, n_layers):
    """Atoms of the lattice filling a disk of the given radius around the origin."""
    nx = int(np.ceil(radius / lat.a)) + 1
    ny = int(np.ceil(radius / lat.b)) + 1
    frac = np.array(lat.positions, dtype=float)
    ix, iy = np.meshgrid(np.arange(-nx, nx + 1), np.arange(-ny, ny + 1), indexing="ij")
    offsets = np.stack([ix.ravel() * lat.a, iy.ravel() * lat.b], axis=1)
    xy = (offsets[:, None, :] + frac[None, :, :2] * [lat.a, lat.b]).reshape(-1, 2)
    symbols = np.tile(np.array(lat.symbols, dtype="<U2"), len(offsets))
    z = np.tile(frac[:, 2], len(offsets))
    if lat.depth > 0:  # a 3-D crystal: stack unit cells along the beam
        layers = np.arange(n_layers)
        xy = np.repeat(xy[None], n_layers, axis=0).reshape(-1, 2)
        z = ((z[None, :] + layers[:, None]) * lat.depth).ravel()
        symbols = np.tile(symbols, n_layers)
    else:
        z = z.copy()
    keep = np.hypot(xy[:, 0], xy[:, 1]) <= radius
    return xy[keep], z[keep], symbols[keep]


def _strain_matrix(strain):
    """2x2 deformation from (exx, eyy, exy)."""
    exx, eyy, exy = strain
    return np.array([[1 + exx, exy], [exy, 1 + eyy]])


def make_structure(
    lattice="graphene",
    field_of_view=(25.6, 25.6),
    *,
    defects="default",
    rotation=None,
    strain=None,
    max_strain=0.01,
    margin=4.0,
    thickness=19.5,
    min_defect_separation=6.0,
    random_state=None,
):
    """Build a piece of lattice with planted point defects and ground-truth roles.

    Parameters
    ----------
    lattice : str, default="graphene"
        One of :data:`LATTICES`: ``"graphene"``, ``"Si-graphene"`` (graphene with Si dopants by
        default), ``"hBN"``, ``"MoS2"``, ``"WS2"`` (2H monolayers seen along c) or
        ``"SrTiO3-001"`` (a perovskite slab seen along [001]).
    field_of_view : tuple of float, default=(25.6, 25.6)
        (height, width) of the scanned region in Å.
    defects : "default", dict or None, default="default"
        Number of defects of each kind to plant, e.g. ``{"vacancy": 2, "stone_wales": 1}``.
        Kinds: ``"vacancy"`` (one atom removed), ``"divacancy"`` (two bonded atoms removed),
        ``"substitution"`` (a dopant on a host site: Si in graphene, W on Mo and Se on S in
        MoS2, C in hBN), ``"stone_wales"`` (a C-C bond rotated by 90°, giving 5-7 rings).
        ``"default"`` draws a Poisson number of each kind around the lattice's typical mix
        (given per 25.6 x 25.6 Å and scaled by the area), planting those that fit; None or
        ``{}`` plants none. Defects land inside the scanned region, at least
        ``min_defect_separation`` Å apart; if explicit counts do not fit, a ValueError says so.
    rotation : float or None, default=None
        In-plane rotation of the lattice in degrees; None draws it uniformly from [0, 360).
    strain : tuple of float or None, default=None
        (exx, eyy, exy) strain; None draws each uniformly within ``±max_strain``.
    max_strain : float, default=0.01
        Bound of the random strain.
    margin : float, default=4.0
        Width in Å of the lattice kept around the scanned region, so that the image of the
        region's border sees a continuous lattice.
    thickness : float, default=19.5
        Sample thickness in Å along the beam for 3-D crystals (ignored for monolayers).
    min_defect_separation : float, default=6.0
        Smallest distance in Å between two planted defects.
    random_state : int, RandomState instance or None, default=None
        Seeds the rotation, strain, lattice offset and defect sites.

    Returns
    -------
    atoms : ase.Atoms
        Atoms in an orthogonal cell of size ``(width + 2 margin, height + 2 margin, depth)``.
        ``atoms.arrays["role"]`` holds each atom's role (index into :data:`ROLES`),
        ``atoms.info`` the lattice name, the scan region ``(y0, x0, height, width)`` in Å and
        the list of planted defects (kind and (y, x) position in Å).

    Examples
    --------
    >>> atoms = make_structure("graphene", (10.0, 10.0), defects={"vacancy": 1},
    ...                        random_state=0)
    >>> atoms.info["scan_region"]
    (4.0, 4.0, 10.0, 10.0)
    >>> [d["kind"] for d in atoms.info["defects"]]
    ['vacancy']
    """
    lat = _check_lattice(lattice)
    rng = check_random_state(random_state)
    height, width = _check_field_of_view(field_of_view, lat)
    angle = rng.uniform(0, 360) if rotation is None else float(rotation)
    if strain is None:
        strain = rng.uniform(-max_strain, max_strain, size=3)
    if not (isinstance(margin, numbers.Real) and margin >= 0):
        raise ValueError(f"margin must be a non-negative length in Å; got {margin!r}")
    strict = defects != "default"
    if not strict:
        # the lattice's typical mix per 25.6 x 25.6 Å, Poisson-distributed for this area
        area = height * width / 25.6**2
        defects = {k: int(rng.poisson(n * area)) for k, n in lat.default_defects.items()}
    defects = dict(defects or {})
    for kind, count in defects.items():
        if kind not in DEFECT_KINDS:
            raise ValueError(f"unknown defect kind {kind!r}; expected one of {DEFECT_KINDS}")
        if kind not in lat.defects and count:
            raise ValueError(
                f"defect kind {kind!r} is not available for lattice {lattice!r}; "
                f"available: {lat.defects}"
            )
        if not (isinstance(count, numbers.Integral) and count >= 0):
            raise ValueError(f"defects[{kind!r}] must be a non-negative integer; got {count!r}")

    angle = rng.uniform(0, 360) if rotation is None else float(rotation)
    if strain is None:
        strain = rng.uniform(-max_strain, max_strain, size=3)
    deform = _strain_matrix(strain)
    theta = np.deg2rad(angle)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])

    box = np.array([width + 2 * margin, height + 2 * margin])  # (x, y)
    radius = 0.5 * np.hypot(*box) * (1 + 3 * abs(max_strain)) + 2 * max(lat.a, lat.b)
    n_layers = max(1, int(round(thickness / lat.depth))) if lat.depth > 0 else 1
    xy, z, symbols = _tile(lat, radius, n_layers)
    # a random lattice offset inside one unit cell, then strain, rotation, centring in the box
    xy = xy + rng.uniform(0, 1, size=2) * [lat.a, lat.b]
    xy = xy @ deform.T @ rot.T + box / 2
    inside = np.all((xy >= 0) & (xy < box), axis=1)
    xy, z, symbols = xy[inside], z[inside], symbols[inside]
    roles = np.zeros(len(xy), dtype=int)

    scan_origin = np.array([margin, margin])  # (x, y)
    planted = []
    alive = np.ones(len(xy), dtype=bool)
    site_xy = xy.copy()
    order = rng.permutation(len(xy))
    kinds = [k for k, n in defects.items() for _ in range(n)]
    rng.shuffle(kinds)
    tree = cKDTree(xy)
    columns = _column_groups(xy)
    for kind in kinds:
        site = _pick_site(order, xy, alive, planted, scan_origin, (width, height),
                          min_defect_separation, lat.bond_length)
        if site is None:
            if not strict:
                break  # the default mix plants what fits
            raise ValueError(
                f"no room for {len(kinds)} defects {defects} in a {height}x{width} Å field "
                f"of view with min_defect_separation={min_defect_separation} Å"
            )
        _plant(kind, site, lat, xy, symbols, roles, alive, tree, columns, rng)
        planted.append({"kind": kind,
                        "position": (float(site_xy[site, 1]), float(site_xy[site, 0]))})

    xy, z, symbols, roles = xy[alive], z[alive], symbols[alive], roles[alive]
    depth = lat.depth * n_layers if lat.depth > 0 else 8.0
    z = z + (0.0 if lat.depth > 0 else depth / 2)
    atoms = Atoms(
        symbols=list(symbols),
        positions=np.column_stack([xy, z]),
        cell=[box[0], box[1], depth],
        pbc=True,
    )
    atoms.arrays["role"] = roles
    atoms.info.update(
        lattice=lattice,
        scan_region=(float(margin), float(margin), float(height), float(width)),
        defects=planted,
        rotation=angle,
        strain=tuple(float(s) for s in strain),
    )
    return atoms


def _check_field_of_view(field_of_view, lat):
    try:
        height, width = (float(v) for v in field_of_view)
    except (TypeError, ValueError):
        raise ValueError(
            f"field_of_view must be (height, width) in Å; got {field_of_view!r}"
        ) from None
    smallest = lat.a  # the primitive lattice constant
    if not (np.isfinite(height) and np.isfinite(width)) or min(height, width) < smallest:
        raise ValueError(
            f"field_of_view={field_of_view!r} Å is smaller than one unit cell of this lattice "
            f"({smallest:.2f} Å); an image must show at least one unit cell"
        )
    return height, width


def _column_groups(xy, tol=0.3):
    """Index groups of atoms that share a projected position."""
    pairs = cKDTree(xy).query_pairs(tol, output_type="ndarray")
    n = len(xy)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    return label


def _pick_site(order, xy, alive, planted, origin, size, separation, bond):
    lo = origin + bond  # keep defects a bond length inside the scanned region
    hi = origin + np.asarray(size) - bond
    for i in order:
        if not alive[i] or np.any(xy[i] < lo) or np.any(xy[i] > hi):
            continue
        p = xy[i][::-1]
        if all(np.hypot(*(p - d["position"])) >= separation for d in planted):
            return i
    return None


def _neighbors(tree, xy, i, bond):
    return [j for j in tree.query_ball_point(xy[i], 1.2 * bond) if j != i]


def _mark(roles, idx, role):
    code = ROLES.index(role)
    idx = np.asarray(idx, dtype=int)
    roles[idx] = np.maximum(roles[idx], code)


def _plant(kind, site, lat, xy, symbols, roles, alive, tree, columns, rng):
    same_column = np.flatnonzero(columns == columns[site])
    if kind == "vacancy":
        if lat.depth == 0 and len(same_column) > 1:
            # a chalcogen site of a TMD: remove one of the pair, the other stays as a column
            alive[site] = False
            _mark(roles, same_column[same_column != site], "vacancy_neighbor")
        else:
            alive[same_column] = False
        near = [j for j in _neighbors(tree, xy, site, lat.bond_length) if alive[j]]
        _mark(roles, near, "vacancy_neighbor")
    elif kind == "divacancy":
        near = [j for j in _neighbors(tree, xy, site, lat.bond_length) if alive[j]]
        partner = near[rng.randint(len(near))]
        alive[[site, partner]] = False
        around = set(_neighbors(tree, xy, site, lat.bond_length))
        around |= set(_neighbors(tree, xy, partner, lat.bond_length))
        _mark(roles, [j for j in around if alive[j]], "vacancy_neighbor")
    elif kind == "substitution":
        host = symbols[site]
        symbols[site] = lat.substitutions[host]
        _mark(roles, [site], "dopant")
    elif kind == "stone_wales":
        near = [j for j in _neighbors(tree, xy, site, lat.bond_length) if alive[j]]
        partner = near[rng.randint(len(near))]
        mid = (xy[site] + xy[partner]) / 2
        for j in (site, partner):  # rotate the bond by 90 degrees about its middle
            d = xy[j] - mid
            xy[j] = mid + np.array([-d[1], d[0]])
        _mark(roles, [site, partner], "stone_wales")


@dataclass
class Columns:
    """Projected atomic columns of a structure, in the scan region's pixel frame.

    Attributes
    ----------
    coordinates : ndarray of shape (k, 3)
        row, col (pixels; pixel centres at integers) and class index into ``classes``.
    names : ndarray of shape (k,), dtype object
        Column composition, e.g. ``"S2"``, ``"Mo"``, ``"C"``.
    roles : ndarray of shape (k,), dtype object
        Column role from :data:`ROLES` (the highest-priority role of its atoms).
    classes : list of str
        Class names, background first.
    members : list of ndarray of int
        Indices (into the structure's atoms) of the atoms of each column.
    """

    coordinates: np.ndarray
    names: np.ndarray
    roles: np.ndarray
    classes: list
    members: list = field(default_factory=list)


def _column_name(symbols, reduce):
    counts = {}
    for s in symbols:
        counts[s] = counts.get(s, 0) + 1
    if reduce:
        g = 0
        for c in counts.values():
            g = gcd(g, c)
        counts = {s: c // g for s, c in counts.items()}
    return "".join(f"{s}{c if c > 1 else ''}" for s, c in sorted(counts.items()))


def find_columns(atoms, pixel_size, shape=None, tolerance=0.3, reduce=None):
    """The atomic columns of a structure whose centre lies inside the image, without classes.

    Atoms of role ``"amorphous"`` (supports, contamination) never form a column: their image
    is texture. The others are merged into columns when their projections lie closer than
    ``tolerance``; a column's position is the mean of its atoms'.

    Parameters
    ----------
    atoms : ase.Atoms
        A structure; its ``info["scan_region"]`` ``(y0, x0, height, width)`` in Å defines the
        image frame (without it, the whole cell).
    pixel_size : float
        Image pixel size in Å/px.
    shape : tuple of int, optional
        Image (height, width) in px; default from the scan region and the pixel size.
    tolerance : float, default=0.3
        Atoms whose projections are closer than this (Å) belong to the same column.
    reduce : bool, optional
        Name columns by their reduced formula ("TiO", not "Ti5O5"); default from the
        structure's lattice (3-D crystals) or True when more than 2 atoms share a column.

    Returns
    -------
    positions : ndarray of shape (k, 2)
        row, col in px.
    names : ndarray of shape (k,), dtype object
    roles : ndarray of shape (k,), dtype object
    members : list of ndarray of int
        Atom indices of each column.
    """
    lattice = atoms.info.get("lattice")
    if reduce is None and lattice in LATTICES:
        reduce = LATTICES[lattice].reduce_columns
    y0, x0, height, width = scan_region(atoms)
    if shape is None:
        shape = (int(round(height / pixel_size)), int(round(width / pixel_size)))
    roles = atoms.arrays.get("role", np.zeros(len(atoms), dtype=int))
    solid = np.flatnonzero(roles != ROLES.index("amorphous"))
    if len(solid) == 0:
        return (np.zeros((0, 2)), np.zeros(0, dtype=object), np.zeros(0, dtype=object), [])
    xy = atoms.positions[solid, :2]
    label = _column_groups(xy, tolerance)
    n = label.max() + 1
    counts = np.bincount(label, minlength=n)
    centre = np.stack([np.bincount(label, xy[:, k], n) / counts for k in (0, 1)], axis=1)
    col_role = np.zeros(n, dtype=int)
    np.maximum.at(col_role, label, roles[solid])
    symbols = np.array(atoms.get_chemical_symbols())[solid]
    order = np.argsort(label, kind="stable")
    splits = np.split(order, np.cumsum(counts)[:-1])
    names = np.array([_column_name(symbols[idx], reduce if reduce is not None else len(idx) > 2)
                      for idx in splits], dtype=object)
    rows = (centre[:, 1] - y0) / pixel_size
    cols = (centre[:, 0] - x0) / pixel_size
    inside = (rows >= -0.5) & (rows < shape[0] - 0.5) & (cols >= -0.5) & (cols < shape[1] - 0.5)
    keep = np.flatnonzero(inside)
    return (np.column_stack([rows[keep], cols[keep]]).reshape(-1, 2), names[keep],
            np.array([ROLES[r] for r in col_role[keep]], dtype=object),
            [solid[splits[k]] for k in keep])


def project_columns(atoms, pixel_size, shape=None, classes=None, tolerance=0.3):
    """Merge atoms into projected columns and express them in image pixels.

    Parameters
    ----------
    atoms : ase.Atoms
        A structure, typically from :func:`make_structure`. Its ``info["scan_region"]``
        ``(y0, x0, height, width)`` in Å defines the image frame; without it the whole cell
        is the image.
    pixel_size : float
        Image pixel size in Å/px.
    shape : tuple of int, optional
        Image (height, width) in px; default from the scan region and the pixel size.
    classes : list of str, optional
        Class names (background first); default from the structure's lattice. A column whose
        composition is not a class raises a ValueError.
    tolerance : float, default=0.3
        Atoms whose projections are closer than this (Å) belong to the same column.

    Returns
    -------
    columns : Columns
        Columns whose centre lies inside the image (atoms of role "amorphous" excluded, see
        :func:`find_columns`).

    Examples
    --------
    >>> atoms = make_structure("MoS2", (10.0, 10.0), defects=None, rotation=0,
    ...                        strain=(0, 0, 0), random_state=0)
    >>> cols = project_columns(atoms, pixel_size=0.1)
    >>> sorted(set(cols.names))
    ['Mo', 'S2']
    """
    if len(atoms) == 0:
        raise ValueError("the structure has no atoms")
    lattice = atoms.info.get("lattice")
    if classes is None:
        if lattice is None:
            classes = ["background", *sorted(set(atoms.get_chemical_symbols()))]
        else:
            classes = lattice_classes(lattice)
    reduce = lattice is not None and LATTICES[lattice].reduce_columns
    pos, names, roles, members = find_columns(atoms, pixel_size, shape, tolerance, reduce)
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise ValueError(f"columns {unknown} are not among the classes {classes}")
    class_index = np.array([classes.index(nm) for nm in names], dtype=float)
    coords = np.column_stack([pos, class_index])
    return Columns(coordinates=coords.reshape(-1, 3), names=names, roles=roles,
                   classes=list(classes), members=members)


def empty_sites(atoms):
    """The planted vacancy sites of a structure that hold no atom at all, in Å.

    A site of ``info["defects"]`` (kind "vacancy" or "divacancy") is empty when no atom lies
    within 0.3 Å of it in projection: a TMD "vacancy" that leaves one chalcogen of its column
    is not.

    Returns
    -------
    sites : ndarray of shape (k, 2)
        (row, col) in Å from the corner of the scanned region (:func:`scan_region`); divide
        by the pixel size for pixels of the image.
    """
    from scipy.spatial import cKDTree

    y0, x0 = scan_region(atoms)[:2]
    sites = np.array([d["position"][:2] for d in atoms.info.get("defects", ())
                      if d["kind"] in ("vacancy", "divacancy")], float).reshape(-1, 2)
    if len(sites) and len(atoms):
        sites = sites[cKDTree(atoms.positions[:, [1, 0]]).query(sites)[0] > 0.3]  # (y, x)
    return sites - (y0, x0)


def scan_region(atoms):
    """The scanned region ``(y0, x0, height, width)`` in Å: ``info["scan_region"]`` or the cell."""
    if "scan_region" in atoms.info:
        return tuple(float(v) for v in atoms.info["scan_region"])
    cell = atoms.cell
    return 0.0, 0.0, float(cell[1, 1]), float(cell[0, 0])
