"""Tests of sklatom.graphs: bonds, rings, defect finding and naming on generated structures.

Ground truth comes from :func:`sklatom.structures.make_structure` (planted defects and their
positions in ``atoms.info["defects"]``) and :func:`project_columns` (columns with roles).
A planted defect counts as found when a reported defect of the expected name has its centroid
within ``TOL`` Å of the planted position (half the generator's minimum defect separation).
"""

import doctest
import pickle
from collections import Counter

import networkx as nx
import numpy as np
import pytest
from scipy.spatial import cKDTree
from sklearn.base import clone
from sklearn.utils.estimator_checks import (
    check_estimator_cloneable,
    check_get_params_invariance,
    check_mixin_order,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
)

import sklatom.graphs
import sklatom.plotting
from sklatom._validation import SklatomWarning
from sklatom.graphs import FEATURE_NAMES, GraphDefectClassifier, _ImageAnalysis
from sklatom.structures import make_structure, project_columns

PS = 0.1  # Å/px
TOL = 3.0  # Å
FOV = (40.0, 40.0)
GRAPHENE_DEFECTS = {"vacancy": 2, "divacancy": 1, "stone_wales": 1, "substitution": 2}
EXPECTED = {"vacancy": "V1", "divacancy": "V2", "substitution": "Si1C3", "stone_wales": "SW"}


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def sample(lattice, defects, seed, fov=FOV, pixel_size=PS):
    """Columns of a generated structure and its planted defects (kind, (row, col) px)."""
    atoms = make_structure(lattice, fov, defects=defects, random_state=seed)
    cols = project_columns(atoms, pixel_size)
    y0, x0 = atoms.info["scan_region"][:2]
    planted = [(d["kind"], (np.asarray(d["position"]) - [y0, x0]) / pixel_size)
               for d in atoms.info["defects"]]
    return cols, planted


def perturb(coords, rng, remove=0.02, add=0.01, noise=0.1, pixel_size=PS):
    """Remove a fraction of atoms, add spurious ones >= 1 Å from any real atom, jitter all.

    Returns the new coordinates and the positions (px) of the removed atoms.
    """
    n = len(coords)
    keep = rng.random(n) >= remove
    removed = coords[~keep, :2]
    out = coords[keep].copy()
    out[:, :2] += rng.normal(0, noise / pixel_size, size=(len(out), 2))
    tree = cKDTree(coords[:, :2] * pixel_size)
    lo, hi = coords[:, :2].min(0), coords[:, :2].max(0)
    extra = []
    while len(extra) < int(round(add * n)):
        p = rng.uniform(lo, hi)
        if tree.query(p * pixel_size)[0] > 1.0:
            extra.append([p[0], p[1], 1.0])
    return np.vstack([out, np.reshape(extra, (-1, 3))]), removed


def score(found, planted, expected, removed=None, match=None):
    """Recall per planted kind and precision per expected name.

    ``match(name, kind)`` decides whether a reported name counts for a planted kind (default:
    equality with ``expected[kind]``). Reported vacancies next to a removed atom are correct.
    """
    match = match or (lambda name, kind: name == expected[kind])
    pos = found[["row", "col"]].to_numpy() * PS
    names = found["name"].to_numpy()
    recall = {k: [0, 0] for k in expected}
    for kind, p in planted:
        d = np.hypot(*(pos - p * PS).T) if len(pos) else np.zeros(0)
        recall[kind][0] += bool(np.any((d < TOL) & np.array([match(n, kind) for n in names],
                                                            dtype=bool)))
        recall[kind][1] += 1
    precision = {k: [0, 0] for k in expected}
    for name, p in zip(names, pos):
        for kind in expected:
            if not match(name, kind):
                continue
            same = ("vacancy", "divacancy") if kind in ("vacancy", "divacancy") else (kind,)
            ok = any((k == kind or (removed is not None and k in same))
                     and np.hypot(*(p - q * PS)) < TOL for k, q in planted)
            if not ok and kind in ("vacancy", "divacancy") and removed is not None \
                    and len(removed):
                ok = np.min(np.hypot(*(removed * PS - p).T)) < TOL
            precision[kind][0] += ok
            precision[kind][1] += 1
    return recall, precision


def ratio(counts):
    return {k: (a / b if b else float("nan")) for k, (a, b) in counts.items()}


def fmt(counts):
    return ", ".join(f"{k} {a}/{b}" for k, (a, b) in counts.items())


def accumulate(total, part):
    for k, (a, b) in part.items():
        total[k][0] += a
        total[k][1] += b


# --------------------------------------------------------------------------------------------
# finding and naming defects
# --------------------------------------------------------------------------------------------
def test_clean_graphene_recall_precision():
    recall = {k: [0, 0] for k in EXPECTED}
    precision = {k: [0, 0] for k in EXPECTED}
    for seed in range(16):
        cols, planted = sample("graphene", GRAPHENE_DEFECTS, seed)
        clf = GraphDefectClassifier(species=cols.classes, pixel_size=PS).fit([cols.coordinates])
        r, p = score(clf.find_defects([cols.coordinates]), planted, EXPECTED)
        accumulate(recall, r)
        accumulate(precision, p)
    print(f"\nclean graphene recall: {fmt(recall)}\nclean graphene precision: {fmt(precision)}")
    assert all(v >= 0.95 for v in ratio(recall).values()), recall
    assert all(v >= 0.95 for v in ratio(precision).values()), precision


def test_clean_si_graphene_dopants():
    expected = {"substitution": "Si1C3", "vacancy": "V1"}
    recall = {k: [0, 0] for k in expected}
    precision = {k: [0, 0] for k in expected}
    for seed in range(6):
        cols, planted = sample("Si-graphene", {"substitution": 6, "vacancy": 1}, seed)
        clf = GraphDefectClassifier(species=cols.classes, pixel_size=PS).fit([cols.coordinates])
        found = clf.find_defects([cols.coordinates])
        r, p = score(found, planted, expected)
        accumulate(recall, r)
        accumulate(precision, p)
        # per-atom labels: exactly the dopant columns are labelled Si1C3
        labels = clf.predict([cols.coordinates])[0]
        assert set(np.flatnonzero(labels == "Si1C3")) == set(
            np.flatnonzero(cols.names == "Si"))
    print(f"\nSi-graphene recall: {fmt(recall)}; precision: {fmt(precision)}")
    assert all(v >= 0.95 for v in ratio(recall).values()), recall
    assert all(v >= 0.95 for v in ratio(precision).values()), precision


def _lenient(name, kind):
    """A name that contains the planted kind, possibly merged with nearby noise defects."""
    parts = name.split("+")
    if kind == "vacancy":
        return any(p.startswith("V") for p in parts)
    if kind == "divacancy":
        return any(p.startswith("V") and p[1:2].isdigit() and int(p[1:].split("_")[0]) >= 2
                   for p in parts)
    if kind == "substitution":
        return any(p.startswith("Si") for p in parts)
    return "SW" in parts or any(p.startswith("R") and "5" in p and "7" in p for p in parts)


def test_noisy_graphene():
    """2% of atoms removed, 1% spurious atoms added (>= 1 Å from real atoms), 0.1 Å noise.

    Removed atoms are real vacancies that merge with planted defects nearby (a planted
    vacancy next to a removed atom is a divacancy), so besides the exact names the test
    scores names that contain the planted kind.
    """
    strict_r = {k: [0, 0] for k in EXPECTED}
    lenient_r = {k: [0, 0] for k in EXPECTED}
    lenient_p = {k: [0, 0] for k in EXPECTED}
    noise_r = {k: [0, 0] for k in EXPECTED}
    for seed in range(16):
        cols, planted = sample("graphene", GRAPHENE_DEFECTS, seed)
        rng = np.random.default_rng(seed)
        coords, removed = perturb(cols.coordinates, rng)
        clf = GraphDefectClassifier(species=cols.classes, pixel_size=PS).fit([coords])
        found = clf.find_defects([coords])
        accumulate(strict_r, score(found, planted, EXPECTED, removed)[0])
        r, p = score(found, planted, EXPECTED, removed, match=_lenient)
        accumulate(lenient_r, r)
        accumulate(lenient_p, p)
        # position noise alone
        jittered, _ = perturb(cols.coordinates, rng, remove=0.0, add=0.0)
        clf = GraphDefectClassifier(species=cols.classes, pixel_size=PS).fit([jittered])
        accumulate(noise_r, score(clf.find_defects([jittered]), planted, EXPECTED)[0])
    print(f"\nnoise only (0.1 Å) recall, exact names: {fmt(noise_r)}"
          f"\nnoisy recall, exact names: {fmt(strict_r)}"
          f"\nnoisy recall, names containing the kind: {fmt(lenient_r)}"
          f"\nnoisy precision, names containing the kind: {fmt(lenient_p)}")
    assert all(v >= 0.75 for v in ratio(noise_r).values()), noise_r
    assert all(v >= 0.6 for v in ratio(lenient_r).values()), lenient_r
    assert ratio(lenient_r)["substitution"] >= 0.8
    assert all(v >= 0.8 for v in ratio(lenient_p).values()), lenient_p


@pytest.mark.parametrize("lattice", ["MoS2", "WS2"])
def test_tmd_vacancies_and_substitutions(lattice):
    metal, dopant = ("Mo", "W") if lattice == "MoS2" else ("W", "Mo")
    n_found = n_planted = n_metal_vacancies = 0
    for seed in range(4):
        cols, planted = sample(lattice, {"vacancy": 3, "substitution": 2}, seed)
        clf = GraphDefectClassifier(species=cols.classes, pixel_size=PS).fit([cols.coordinates])
        assert clf.coordination_[metal] == 3 and clf.ring_size_ == 6
        found = clf.find_defects([cols.coordinates])
        pos = found[["row", "col"]].to_numpy() * PS
        tree = cKDTree(cols.coordinates[:, :2])
        for kind, p in planted:
            n_planted += 1
            d = np.hypot(*(pos - p * PS).T)
            near = found["name"].to_numpy()[d < TOL]
            n_found += len(near) > 0
            dist, j = tree.query(p)
            if kind == "substitution" and dist < 1:
                site = cols.names[j]
                assert f"{dopant}1(S2)3" in near or site == "SSe", (site, near)
                if site == "SSe":
                    assert f"(SSe)1{metal}3" in near
            elif kind == "vacancy" and dist > 1:  # the whole metal column is gone
                n_metal_vacancies += 1
                assert f"V1_{metal}" in near, near
            elif kind == "vacancy":  # one S of an S2 column is gone
                assert f"S1{metal}3" in near, near
    print(f"\n{lattice}: {n_found}/{n_planted} planted defects found, "
          f"{n_metal_vacancies} metal vacancies")
    assert n_found == n_planted
    assert n_metal_vacancies >= 1  # the loop did exercise the V1_metal branch


def test_hbn_and_square_lattice():
    cols, planted = sample("hBN", {"vacancy": 2, "substitution": 1}, 0)
    clf = GraphDefectClassifier(species=cols.classes, pixel_size=PS).fit([cols.coordinates])
    names = set(clf.find_defects([cols.coordinates])["name"])
    assert {n[:2] for n in names} == {"V1", "C1"} and len(names & {"V1_B", "V1_N"}) >= 1
    # SrTiO3 [001]: a square lattice of Sr, TiO and O columns (projected O–Sr 1.95 Å)
    cols, _ = sample("SrTiO3-001", {}, 0, fov=(30.0, 30.0))
    clf = GraphDefectClassifier(species=cols.classes, pixel_size=PS).fit([cols.coordinates])
    assert clf.ring_size_ == 4 and clf.coordination_ == {"Sr": 4, "OTi": 4, "O": 4}
    assert clf.bond_lengths_[("Sr", "O")] == pytest.approx(3.905 / 2, abs=0.05)
    assert set(clf.predict([cols.coordinates])[0]) == {"lattice"}
    centre = np.array([150.0, 150.0])
    sr = np.flatnonzero(cols.names == "Sr")
    gone = sr[np.argmin(np.hypot(*(cols.coordinates[sr, :2] - centre).T))]
    coords = np.delete(cols.coordinates, gone, axis=0)
    found = clf.find_defects([coords])
    assert list(found["name"]) == ["V1"]
    assert np.hypot(*(found[["row", "col"]].to_numpy()[0] - cols.coordinates[gone, :2])) < 2


def test_adatoms_and_double_detections_leave_the_lattice_alone():
    cols, _ = sample("graphene", {}, 7, fov=(30.0, 30.0))
    c = cols.coordinates
    clf = GraphDefectClassifier(species=cols.classes, pixel_size=PS).fit([c])
    (bonds,) = clf.bonds([c])
    # the centre of a hexagon near the middle: two bonds at 120° add up to the vector from an
    # atom to the centre of the hexagon between them
    mid = np.argmin(np.hypot(c[:, 0] - 150, c[:, 1] - 150))
    nb = np.concatenate([bonds[bonds[:, 0] == mid, 1], bonds[bonds[:, 1] == mid, 0]])
    hexagon_centre = c[mid, :2] + (c[nb[0], :2] - c[mid, :2]) + (c[nb[1], :2] - c[mid, :2])
    assert np.min(np.hypot(*(c[:, :2] - hexagon_centre).T)) * PS > 1.3
    far = np.argmin(np.hypot(c[:, 0] - 80, c[:, 1] - 220))
    # 0.3 Å from a real atom: a double detection (closer than 0.2 Å it is the same atom
    # listed twice and merged with a warning, see test_bad_input.py)
    double = c[far] + [3.0, 0.0, 0.0]
    X = [np.vstack([c, [[*hexagon_centre, 1.0]], double])]
    found = clf.find_defects(X)
    assert sorted(found["name"]) == ["I1", "I1"]
    labels = clf.predict(X)[0]
    assert list(labels[-2:]) == ["I1", "I1"] and set(labels[:-2]) == {"lattice"}
    assert clf.transform(X)[-2:, FEATURE_NAMES.index("interstitial")].tolist() == [1, 1]


def test_a_column_cut_by_the_image_border_is_not_an_interstitial():
    # a segmenter finds half-visible columns just inside the border, often next to a real
    # edge atom: such extra atoms in the edge band are not defects (seen in `sklatom demo`)
    cols, _ = sample("graphene", {}, 7, fov=(30.0, 30.0))
    c = cols.coordinates
    clf = GraphDefectClassifier(species=cols.classes, pixel_size=PS,
                                image_shape=(300, 300)).fit([c])
    edge_atom = c[np.argmin(c[:, 0])]  # the atom nearest the top border
    # 0.25-0.3 Å away (closer than 0.2 Å it would be the same atom listed twice, merged)
    cut = [[max(edge_atom[0] - 2.0, 0.0), edge_atom[1] + 2.5, 1.0]]
    interior = c[np.argmin(np.hypot(c[:, 0] - 150, c[:, 1] - 150))] + [2.0, 1.0, 0.0]
    labels = clf.predict([np.vstack([c, cut, [interior]])])[0]
    assert labels[-2] == "lattice"
    assert labels[-1] == "I1"  # the same extra atom inside the image is still reported


@pytest.mark.parametrize("image_shape", [None, (400, 400)])
def test_perfect_lattice_edges_are_not_defects(image_shape):
    for seed in range(4):
        cols, _ = sample("graphene", {}, seed)
        clf = GraphDefectClassifier(species=cols.classes, pixel_size=PS,
                                    image_shape=image_shape).fit([cols.coordinates])
        labels = clf.predict([cols.coordinates])[0]
        assert set(labels) == {"lattice"}, clf.find_defects([cols.coordinates])
        assert len(clf.defects_) == 0


def test_learned_bond_lengths_survive_pixel_size_and_strain_errors():
    atoms = make_structure("graphene", FOV, defects={"vacancy": 1, "stone_wales": 1},
                           strain=(0.03, -0.02, 0.01), random_state=3)
    cols = project_columns(atoms, PS)
    wrong = 0.115  # 15% off
    clf = GraphDefectClassifier(species=cols.classes, pixel_size=wrong).fit([cols.coordinates])
    assert clf.bond_lengths_[("C", "C")] == pytest.approx(1.42 * wrong / PS, rel=0.04)
    assert ("C", "C") in clf.learned_pairs_
    assert sorted(clf.find_defects([cols.coordinates])["name"]) == ["SW", "V1"]


def test_weak_supervision_and_new_kinds():
    """Labels name vacancies, divacancies and dopants; Stone-Wales is left unnamed."""
    train, planted = sample("graphene", GRAPHENE_DEFECTS, 1)
    y = np.full(len(train.coordinates), "lattice", dtype=object)
    tree = cKDTree(train.coordinates[:, :2])
    user = {"vacancy": "vacancy", "divacancy": "divacancy", "substitution": "dopant"}
    for kind, p in planted:
        if kind in user:
            near = tree.query_ball_point(p, 1.7 / PS)
            near = [j for j in near if train.roles[j] != "lattice"]
            y[near] = user[kind]
    clf = GraphDefectClassifier(species=train.classes, pixel_size=PS)
    clf.fit([train.coordinates], [y])
    assert set(clf.kind_names_.values()) == {"vacancy", "divacancy", "dopant"}
    assert set(clf.defects_["name"]) == {"vacancy", "divacancy", "dopant", "SW"}
    tests = [sample("graphene", GRAPHENE_DEFECTS, s) for s in (5, 6)]
    X = [c.coordinates for c, _ in tests]
    expected = {**{k: v for k, v in user.items()}, "stone_wales": "SW"}
    found = clf.find_defects(X)
    recall = {k: [0, 0] for k in expected}
    sw_names = set()
    for i, (_, planted) in enumerate(tests):
        r, _ = score(found[found["image"] == i], planted, expected)
        accumulate(recall, r)
        sw = [(k, p) for k, p in planted if k == "stone_wales"]
        rows = found[(found["image"] == i)]
        d = np.hypot(rows["row"] - sw[0][1][0], rows["col"] - sw[0][1][1]) * PS
        sw_names |= set(rows["name"][d < TOL])
    print(f"\nweak supervision recall on new images: {fmt(recall)}")
    assert all(v == 1.0 for v in ratio(recall).values()), recall
    # the unnamed kind is a new kind with the same generated name in both images
    assert sw_names == {"SW"}
    sw = found[found["name"] == "SW"]
    assert set(sw["image"]) == {0, 1}
    labels = clf.predict(X)
    assert all("SW" in set(lab) and "vacancy" in set(lab) for lab in labels)
    # the catalogue groups kinds across images
    cat = clf.catalogue(X)
    assert list(cat.columns) == ["name", "hash", "count", "n_images", "n_atoms", "examples"]
    assert cat.loc[cat["name"] == "dopant", "count"].sum() == 4
    assert cat["count"].sum() == len(found)


def test_hashes_identify_structures():
    hashes = {}
    for seed in range(3):
        cols, _ = sample("graphene", GRAPHENE_DEFECTS, seed)
        clf = GraphDefectClassifier(species=cols.classes, pixel_size=PS).fit([cols.coordinates])
        for name, h in clf.find_defects([cols.coordinates])[["name", "hash"]].values:
            hashes.setdefault(name, set()).add(h)
    # different structures, different hashes; the same interior structure, one hash
    inner = {n: hs for n, hs in hashes.items() if n in ("V1", "V2", "SW", "Si1C3")}
    assert len(set().union(*inner.values())) >= len(inner) == 4
    assert len(hashes["Si1C3"]) == 1 and len(hashes["V1"]) <= 2
    # the same formula with a different structure: a Si pair bonded (Si2C4) vs a Si pair
    # bonded with one C neighbour missing -> different names and hashes
    cols, _ = sample("graphene", {}, 0)
    c = cols.coordinates.copy()
    centre = np.argmin(np.hypot(c[:, 0] - 200, c[:, 1] - 200))
    clf = GraphDefectClassifier(species=cols.classes, pixel_size=PS).fit([c])
    (bonds,) = clf.bonds([c])
    partner = bonds[bonds[:, 0] == centre, 1][0] if np.any(bonds[:, 0] == centre) else \
        bonds[bonds[:, 1] == centre, 0][0]
    c[[centre, partner], 2] = 2
    clf = GraphDefectClassifier(species=cols.classes, pixel_size=PS,
                                host_species=["C"]).fit([c])
    pair = clf.find_defects([c])
    assert list(pair["name"]) == ["Si2C4"]
    # Stone-Wales-rotate the Si-Si bond: same formula Si2C4, different structure
    mid = c[[centre, partner], :2].mean(0)
    for j in (centre, partner):
        d = c[j, :2] - mid
        c[j, :2] = mid + [-d[1], d[0]]
    rotated = clf.find_defects([c])
    assert list(rotated["name"]) == ["Si2C4+SW"]
    assert rotated["hash"][0] != pair["hash"][0]


# --------------------------------------------------------------------------------------------
# graph, rings, features
# --------------------------------------------------------------------------------------------
def test_rings_match_networkx_cycle_basis():
    cols, _ = sample("graphene", {"stone_wales": 1, "vacancy": 1}, 2, fov=(20.0, 20.0))
    X = [cols.coordinates]
    clf = GraphDefectClassifier(species=cols.classes, pixel_size=PS).fit(X)
    (G,) = clf.graphs(X)
    (bonds,) = clf.bonds(X)
    assert G.number_of_nodes() == len(cols.coordinates)
    assert G.number_of_edges() == len(bonds)
    feats = clf.transform(X)
    smallest = feats[:, FEATURE_NAMES.index("smallest_ring")]
    basis = nx.minimum_cycle_basis(G)
    expected = np.zeros(len(smallest))
    for cycle in basis:
        for node in cycle:
            if expected[node] == 0 or len(cycle) < expected[node]:
                expected[node] = len(cycle)
    interior = feats[:, FEATURE_NAMES.index("edge")] == 0
    assert np.array_equal(smallest[interior], expected[interior])
    # the faces are a minimum cycle basis: same number of rings of each size
    sizes = Counter(len(c) for c in basis)
    for k in range(3, 9):
        n_faces = feats[:, FEATURE_NAMES.index(f"n_ring_{k}")].sum() / k
        assert n_faces == sizes.get(k, 0), (k, n_faces, sizes)
    assert sizes[5] >= 1 and sizes[7] >= 1 and sizes[12] == 1  # Stone-Wales and a vacancy
    # node attributes
    node = G.nodes[0]
    assert set(node) == {"species", "position", "coordination", "edge", "label"}


def test_transform_features_and_pandas_output():
    cols, _ = sample("graphene", {"stone_wales": 1, "vacancy": 1}, 4)
    X = [cols.coordinates, cols.coordinates[:50]]
    clf = GraphDefectClassifier(species=cols.classes, pixel_size=PS).fit(X[:1])
    F = clf.transform(X)
    assert F.shape == (len(X[0]) + 50, len(FEATURE_NAMES))
    assert list(clf.get_feature_names_out()) == list(FEATURE_NAMES)
    f = dict(zip(FEATURE_NAMES, F[: len(X[0])].T))
    lattice = (cols.roles == "lattice") & (f["edge"] == 0) & (f["n_ring_6"] == 3)
    assert np.all(f["coordination"][lattice] == 3)
    assert np.allclose(f["mean_bond_length"][lattice], 1.42, atol=0.05)
    assert np.all(f["bond_angle_spread"][lattice] < 3.0)  # degrees: 120° everywhere
    vac = (cols.roles == "vacancy_neighbor") & (f["edge"] == 0)
    assert np.all(f["missing_neighbors"][vac] == 1) and np.all(f["n_ring_large"][vac] >= 1)
    sw = cols.roles == "stone_wales"
    assert np.all(f["n_ring_5"][sw] == 1) and np.all(f["n_ring_7"][sw] == 2)
    df = clone(clf).set_output(transform="pandas").fit(X[:1]).transform(X)
    assert list(df.columns) == list(FEATURE_NAMES) and len(df) == len(F)
    assert np.allclose(df.to_numpy(), F)


def test_the_analysis_of_one_image_has_the_documented_fields_and_shapes(fitted):
    clf, cols = fitted
    c = cols.coordinates
    res = clf._analyse(c)
    assert isinstance(res, _ImageAnalysis)
    n, n_faces = len(c), len(res.graph.face_size)
    assert res.graph.n == n and res.graph.interstitial.shape == (n,)
    for name in ("edge", "missing_in", "missing_out", "expected", "dopant", "flagged",
                 "cluster", "coord_bad"):
        assert getattr(res, name).shape == (n,), name
    assert res.anomalous_ring.shape == res.hole.shape == (n_faces,)
    assert res.sites.shape == (len(res.owners), 2) and res.owners.max() < n
    # one vacancy: its three neighbours are one defect, each missing one neighbour
    assert res.n_clusters == 1 and np.array_equal(res.flagged, res.cluster >= 0)
    assert res.missing_in[res.flagged].tolist() == [1, 1, 1]


def test_n_jobs_gives_the_same_graphs_and_defects():
    cols = [sample("graphene", GRAPHENE_DEFECTS, seed)[0] for seed in (5, 6, 7)]
    X, species = [c.coordinates for c in cols], cols[0].classes
    serial = GraphDefectClassifier(species=species, pixel_size=PS).fit(X)
    parallel = GraphDefectClassifier(species=species, pixel_size=PS, n_jobs=2).fit(X)
    np.testing.assert_array_equal(serial.transform(X), parallel.transform(X))
    for a, b in zip(serial.predict(X), parallel.predict(X)):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------------
# input checks, edge cases
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted():
    cols, _ = sample("graphene", {"vacancy": 1}, 0, fov=(20.0, 20.0))
    clf = GraphDefectClassifier(species=cols.classes, pixel_size=PS).fit([cols.coordinates])
    return clf, cols


def test_empty_and_single_atom(fitted):
    clf, cols = fitted
    empty = np.zeros((0, 3))
    one = np.array([[10.0, 10.0, 1.0]])
    labels = clf.predict([empty, one, cols.coordinates])
    assert labels[0].shape == (0,) and labels[0].dtype == object
    assert list(labels[1]) == ["lattice"]
    assert len(labels[2]) == len(cols.coordinates)
    assert clf.transform([empty]).shape == (0, len(FEATURE_NAMES))
    assert clf.transform([one])[0, FEATURE_NAMES.index("coordination")] == 0
    assert len(clf.find_defects([empty])) == 0 and len(clf.catalogue([empty])) == 0
    # fitting on nothing uses the covalent-radius prior (C-C 2 * 0.76 Å)
    with pytest.warns(SklatomWarning, match="covalent radii"):
        bare = GraphDefectClassifier(species=["C"], pixel_size=PS).fit([empty, one])
    assert bare.bond_lengths_[("C", "C")] == pytest.approx(1.52)
    assert bare.learned_pairs_ == []
    assert list(bare.predict([one])[0]) == ["lattice"]


@pytest.mark.parametrize("species, match", [
    (["background", "C", "Unobtainium"], "Unobtainium"),
    (["background", "C", "Xx"], "Xx"),
    (["C", "background"], "background"),
    (["C", "C"], "duplicate"),
])
def test_bad_species(species, match):
    X = [np.array([[1.0, 1.0, 1.0], [1.0, 15.0, 2.0]])]
    with pytest.raises(ValueError, match=match):
        GraphDefectClassifier(species=species, pixel_size=PS).fit(X)


def test_species_without_background_and_generic_names():
    cols, _ = sample("Si-graphene", {"substitution": 2}, 1, fov=(20.0, 20.0))
    a = GraphDefectClassifier(species=cols.classes, pixel_size=PS).fit([cols.coordinates])
    b = GraphDefectClassifier(species=cols.classes[1:], pixel_size=PS)
    b.fit([cols.coordinates])
    assert a.species_ == b.species_ == ["C", "Si"]
    assert [list(x) for x in a.predict([cols.coordinates])] == [
        list(x) for x in b.predict([cols.coordinates])]
    generic = GraphDefectClassifier(pixel_size=PS).fit([cols.coordinates])
    assert generic.species_ == ["class1", "class2"]
    assert set(generic.find_defects([cols.coordinates])["name"]) == {"(class2)1(class1)3"}


def test_bad_inputs(fitted):
    clf, cols = fitted
    X = [cols.coordinates]
    with pytest.raises(ValueError, match="pixel_size"):
        GraphDefectClassifier(species=cols.classes).fit(X)
    with pytest.raises(ValueError, match="pixel_size"):
        GraphDefectClassifier(species=cols.classes, pixel_size=-1.0).fit(X)
    with pytest.raises(ValueError, match="class index 5 out of range"):
        clf.predict([np.array([[1.0, 1.0, 5.0]])])
    with pytest.raises(ValueError, match="class index 0"):
        clf.predict([np.array([[1.0, 1.0, 0.0]])])
    with pytest.raises(ValueError, match="class index 7 out of range"):
        GraphDefectClassifier(species=cols.classes, pixel_size=PS).fit(
            [np.array([[1.0, 1.0, 7.0]])])
    with pytest.raises(ValueError, match="one image"):
        clf.predict(cols.coordinates)
    with pytest.raises(ValueError, match=r"shape \(k, 3\)"):
        clf.predict([cols.coordinates[:, :2]])
    with pytest.raises(ValueError, match="integer class"):
        clf.predict([np.array([[1.0, 1.0, 1.5]])])
    with pytest.raises(ValueError, match="NaN"):
        clf.predict([np.array([[np.nan, 1.0, 1.0]])])
    with pytest.raises(ValueError, match="labels"):
        clone(clf).fit(X, [np.array(["lattice"])])
    with pytest.raises(ValueError, match="bond_tolerance"):
        GraphDefectClassifier(species=cols.classes, pixel_size=PS, bond_tolerance=2).fit(X)
    with pytest.raises(ValueError, match="image_shape"):
        GraphDefectClassifier(species=cols.classes, pixel_size=PS, image_shape=(3,)).fit(X)
    with pytest.raises(ValueError, match="host_species"):
        GraphDefectClassifier(species=cols.classes, pixel_size=PS, host_species=["N"]).fit(X)
    with pytest.raises(TypeError, match="species"):
        GraphDefectClassifier(species="C", pixel_size=PS).fit(X)


# --------------------------------------------------------------------------------------------
# scikit-learn contract, persistence, scale
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("check", [
    check_get_params_invariance, check_set_params, check_estimator_cloneable,
    check_no_attributes_set_in_init, check_parameters_default_constructible,
    check_mixin_order,
])
def test_sklearn_data_free_checks(check):
    est = GraphDefectClassifier(species=["background", "C", "Si"], pixel_size=PS)
    check(type(est).__name__, est)


def test_sklearn_contract(fitted):
    clf, cols = fitted
    est = GraphDefectClassifier(species=["C"], pixel_size=0.2, bond_tolerance=0.2)
    assert est.get_params()["bond_tolerance"] == 0.2
    est.set_params(bond_tolerance=0.25, ring_size=6)
    assert clone(est).get_params() == est.get_params()
    assert not hasattr(clone(clf), "species_")
    tags = clf.__sklearn_tags__()
    assert tags.input_tags.two_d_array is False and tags.requires_fit
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError):
        GraphDefectClassifier(pixel_size=PS).predict([cols.coordinates])
    # fit returns self, fitted attributes end in "_"
    fresh = GraphDefectClassifier(species=cols.classes, pixel_size=PS)
    assert fresh.fit([cols.coordinates]) is fresh
    # pickling round trip predicts the same
    again = pickle.loads(pickle.dumps(clf))
    assert [list(a) for a in again.predict([cols.coordinates])] == [
        list(a) for a in clf.predict([cols.coordinates])]


def test_a_large_lattice_is_analysed_in_one_piece():
    """50k atoms of graphene: one vacancy found, the rest lattice (speed and scaling are
    measured by benchmarks/bench_graphs.py, up to 1e6 atoms, not asserted here)."""
    a = 1.42 * np.sqrt(3)
    n = 110
    basis = np.array([[0.0, 0.0], [0.0, 1 / 3], [0.5, 0.5], [0.5, 5 / 6]])
    ix, iy = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    frac = (np.stack([ix.ravel(), iy.ravel()], 1)[:, None] + basis).reshape(-1, 2)
    xy = frac * [a, np.sqrt(3) * a]
    coords = np.column_stack([xy[:, 1] / PS, xy[:, 0] / PS, np.ones(len(xy))])
    coords = np.delete(coords, len(coords) // 2 + 2 * n, axis=0)  # one vacancy
    clf = GraphDefectClassifier(species=["C"], pixel_size=PS)
    labels = clf.fit([coords]).predict([coords])[0]
    assert len(coords) > 48000
    assert sorted(set(labels)) == ["V1", "lattice"] and np.sum(labels == "V1") == 3


# --------------------------------------------------------------------------------------------
# docs (the defect plot is tested in test_plotting.py)
# --------------------------------------------------------------------------------------------
def test_the_defect_plot_lives_in_plotting_and_is_still_importable_from_graphs():
    assert sklatom.graphs.plot_defect_graph is sklatom.plotting.plot_defect_graph
    assert "plot_defect_graph" not in sklatom.graphs.__all__


def test_docstring_examples():
    result = doctest.testmod(sklatom.graphs, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 2 and result.failed == 0


@pytest.mark.parametrize("n_si", [1, 2, 3])
def test_si_complexes_count_the_carbon_bonded_to_them(n_si):
    """SinCm: n Si and the m C within bonding distance of any of them (at most 4 per Si), in
    a lattice whose Si sit out of the plane (longer projected bonds stretched by 10 %)."""
    cols, _ = sample("graphene", {}, 1)
    c = cols.coordinates.copy()
    tree = cKDTree(c[:, :2])
    chain = [int(np.argmin(np.hypot(c[:, 0] - 200, c[:, 1] - 200)))]
    while len(chain) < n_si:  # a chain of bonded Si
        _, idx = tree.query(c[chain[-1], :2], k=4)
        chain.append(int(next(i for i in idx[1:] if i not in chain)))
    bonded = set()
    for a in chain:
        _, idx = tree.query(c[a, :2], k=4)
        bonded.update(int(i) for i in idx[1:] if i not in chain)
    # stretch each Si's bonds (a larger atom): neighbours move out by 10 %
    for a in chain:
        for b in bonded:
            d = c[b, :2] - c[a, :2]
            if np.hypot(*d) * PS < 1.6:
                c[b, :2] = c[a, :2] + 1.1 * d
    c[chain, 2] = 2
    clf = GraphDefectClassifier(species=cols.classes, pixel_size=PS, host_species=["C"]).fit([c])
    names = list(clf.find_defects([c])["name"])
    assert names == [f"Si{n_si}C{len(bonded)}"], (names, len(bonded))


def test_a_general_models_classes_work_as_species_with_generic_defect_names():
    # the pretrained model's classes_ ("light", "heavy") passed as is, as the docstring says
    from sklatom import load_pretrained

    cols, planted = sample("graphene", {"vacancy": 2, "substitution": 2}, 0)
    clf = GraphDefectClassifier(species=load_pretrained().classes_, pixel_size=PS)
    found = clf.fit([cols.coordinates]).find_defects([cols.coordinates])
    assert clf.species_ == ["light", "heavy"] and clf.host_species_ == ["light"]
    assert sorted(found["name"]) == ["(heavy)1(light)3"] * 2 + ["V1"] * 2


def test_one_host_species_name_is_one_species_not_its_letters():
    cols, _ = sample("MoS2", {}, 0)
    clf = GraphDefectClassifier(species=cols.classes, pixel_size=PS, host_species="Mo")
    clf.fit([cols.coordinates])
    assert clf.host_species_ == ["Mo"]
    assert clf.host_species_ == clone(clf).set_params(host_species=["Mo"]).fit(
        [cols.coordinates]).host_species_
