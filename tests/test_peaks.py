"""Tests of sklatom.peaks on synthetic maps with known atom positions."""

import numpy as np
import pytest
from scipy.spatial import cKDTree
from sklearn.base import clone
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import (
    check_estimator_cloneable,
    check_get_params_invariance,
    check_mixin_order,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
)

from sklatom.peaks import PeakFinder, find_peaks


def render(shape, atoms, sigma=2.0, amplitude=0.9):
    """Sum of 2-D Gaussians; atoms (k, 2) or (k, 3) with an optional per-atom amplitude."""
    rr, cc = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    img = np.zeros(shape)
    amps = np.broadcast_to(np.asarray(amplitude, float), (len(atoms),))
    for (r, c), a in zip(np.asarray(atoms)[:, :2], amps):
        img += a * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * sigma**2))
    return img


def make_maps(shape, atoms, n_classes=3, sigma=2.0, amplitude=0.9):
    """Probability map (n_classes, H, W): one Gaussian blob per atom in its class channel."""
    atoms = np.asarray(atoms, float)
    amps = np.broadcast_to(np.asarray(amplitude, float), (len(atoms),))
    P = np.zeros((n_classes,) + tuple(shape))
    for c in range(1, n_classes):
        sel = atoms[:, 2] == c
        if sel.any():
            P[c] = render(shape, atoms[sel], sigma, amps[sel])
    fg = P[1:].sum(axis=0)
    scale = np.where(fg > 0.999, 0.999 / np.maximum(fg, 1e-12), 1.0)
    P[1:] *= scale
    P[0] = 1.0 - P[1:].sum(axis=0)
    return P


def random_positions(shape, n, min_sep, margin, seed):
    rng = np.random.default_rng(seed)
    pts = []
    while len(pts) < n:
        p = rng.uniform(margin, np.array(shape) - 1 - margin)
        if all(np.hypot(*(p - q)) >= min_sep for q in pts):
            pts.append(p)
    return np.array(pts)


def nearest_error(found, truth):
    d, idx = cKDTree(truth[:, :2]).query(found[:, :2])
    return d, idx


SYMMETRIC_ATOMS = np.array(
    [[10.0, 10.0, 1], [10.5, 30.0, 2], [30.0, 12.5, 2], [31.5, 31.5, 1], [20.0, 21.0, 1]]
)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_components_symmetric_blobs_exact(dtype):
    P = make_maps((44, 44), SYMMETRIC_ATOMS).astype(dtype)
    coords = PeakFinder().fit_transform(P[np.newaxis])
    assert len(coords) == 1
    found = coords[0]
    assert found.shape == (5, 3) and found.dtype == np.float64
    d, idx = nearest_error(found, SYMMETRIC_ATOMS)
    assert len(np.unique(idx)) == 5
    assert d.max() < 0.05
    np.testing.assert_array_equal(found[:, 2], SYMMETRIC_ATOMS[idx, 2])


def test_components_keep_a_class_uncertain_atom_whole():
    # what the network does on a distorted MoS2 image: a core that is mostly class 2 inside a
    # ring where class 1 wins; 1 - P[0] is one blob, so this is one atom, of the core's class
    rr, cc = np.mgrid[:31, :31]
    r = np.hypot(rr - 15, cc - 14)
    core, ring = r < 3, (r >= 3) & (r < 5)
    P = np.zeros((3, 31, 31))
    P[1] = np.select([core, ring], [0.15, 0.6])
    P[2] = np.select([core, ring], [0.8, 0.1])
    P[0] = 1 - P[1] - P[2]
    assert ring.sum() > 1.5 * core.sum()  # more class-1 than class-2 probability in all
    coords, conf = find_peaks(P)
    np.testing.assert_allclose(coords, [[15.0, 14.0, 2.0]], atol=1e-9)
    np.testing.assert_allclose(conf, [0.95])
    assert len(find_peaks(P, method="maxima")[0]) == 1


def test_maxima_integer_positions_and_classes():
    atoms = np.array([[8.0, 8.0, 1], [8.0, 20.0, 2], [22.0, 9.0, 2], [21.0, 21.0, 1]])
    P = make_maps((30, 30), atoms)
    found = PeakFinder(method="maxima").fit_transform(P[np.newaxis])[0]
    d, idx = nearest_error(found, atoms)
    assert len(found) == 4 and len(np.unique(idx)) == 4
    assert d.max() < 1e-9
    np.testing.assert_array_equal(found[:, 2], atoms[idx, 2])


@pytest.mark.parametrize("method, tol", [("components", 0.1), ("maxima", 0.71)])
def test_random_subpixel_positions(method, tol):
    pos = random_positions((96, 96), 40, 10.0, 5, seed=1)
    atoms = np.column_stack([pos, np.arange(40) % 2 + 1])
    P = make_maps((96, 96), atoms)
    found = PeakFinder(method=method).fit_transform(P[np.newaxis])[0]
    d, idx = nearest_error(found, atoms)
    assert len(found) == 40 and len(np.unique(idx)) == 40
    assert d.max() < tol
    np.testing.assert_array_equal(found[:, 2], atoms[idx, 2])


@pytest.mark.parametrize("method", ["components", "maxima"])
def test_per_class_thresholds(method):
    # class 1 atoms peak at 0.9, class 2 atoms at 0.4
    atoms = np.array([[8.0, 8.0, 1], [8.0, 22.0, 2], [22.0, 8.0, 2], [22.0, 22.0, 1]])
    P = make_maps((31, 31), atoms, amplitude=[0.9, 0.4, 0.4, 0.9])[np.newaxis]
    found = PeakFinder(method=method, threshold=0.5).fit_transform(P)[0]
    assert sorted(found[:, 2]) == [1, 1]
    for thr in ({2: 0.3}, [0.5, 0.3], (0.5, 0.3), np.array([0.5, 0.3])):
        found = PeakFinder(method=method, threshold=thr).fit_transform(P)[0]
        assert sorted(found[:, 2]) == [1, 1, 2, 2]
    found = PeakFinder(method=method, threshold={1: 0.95, 2: 0.3}).fit_transform(P)[0]
    assert sorted(found[:, 2]) == [2, 2]


@pytest.mark.parametrize("method", ["components", "maxima"])
def test_edge_handling(method):
    atoms = np.array([[0.2, 15.0, 1], [4.0, 6.0, 1], [15.0, 15.0, 1], [15.0, 29.0, 1]])
    P = make_maps((30, 30), atoms, n_classes=2)[np.newaxis]
    assert len(PeakFinder(method=method).fit_transform(P)[0]) == 4
    kept = PeakFinder(method=method, exclude_edges=True).fit_transform(P)[0]
    # the blobs cut by the top and right borders are gone, the one at row 4 stays
    d, idx = nearest_error(kept, atoms)
    assert sorted(idx) == [1, 2]
    kept = PeakFinder(method=method, exclude_edges=True, edge_margin=5).fit_transform(P)[0]
    d, idx = nearest_error(kept, atoms)
    assert list(idx) == [2]
    # the margin alone does nothing unless exclude_edges is True
    assert len(PeakFinder(method=method, edge_margin=5).fit_transform(P)[0]) == 4


def test_merging_weighted_mean_and_stronger_class():
    # two narrow blobs 4 px apart: two components at threshold 0.5
    atoms = np.array([[15.0, 13.0, 1], [15.0, 17.0, 2]])
    P = make_maps((30, 30), atoms, sigma=1.0, amplitude=[0.6, 0.9])[np.newaxis]
    finder = PeakFinder(threshold=0.5)
    coords, conf = finder.fit(P).transform(P, return_confidence=True)
    assert len(coords[0]) == 2
    merged, mconf = finder.set_params(merge_distance=5).transform(P, return_confidence=True)
    assert merged[0].shape == (1, 3)
    w = conf[0]
    expected = (coords[0][:, :2] * w[:, None]).sum(axis=0) / w.sum()
    np.testing.assert_allclose(merged[0][0, :2], expected, atol=1e-12)
    assert merged[0][0, 2] == 2  # class of the stronger detection
    assert mconf[0][0] == pytest.approx(w.max())
    # merging threshold below the separation keeps both
    assert len(finder.set_params(merge_distance=3.5).transform(P)[0]) == 2


def test_list_input_of_different_sizes():
    a = np.array([[10.0, 10.0, 1], [20.0, 25.0, 2]])
    b = np.array([[8.0, 30.0, 2]])
    maps = [make_maps((32, 40), a), make_maps((20, 48), b)]
    coords = PeakFinder().fit_transform(maps)
    assert [c.shape for c in coords] == [(2, 3), (1, 3)]
    np.testing.assert_allclose(coords[0], a[np.lexsort((a[:, 1], a[:, 0]))], atol=0.05)
    np.testing.assert_allclose(coords[1], b, atol=0.05)


@pytest.mark.parametrize("method", ["components", "maxima"])
@pytest.mark.parametrize("refine", [None, "com", "gaussian"])
def test_empty_map_gives_empty_array(method, refine):
    P = np.zeros((2, 3, 16, 16))
    P[:, 0] = 1.0
    finder = PeakFinder(method=method, refine=refine, merge_distance=2, exclude_edges=True)
    coords, conf = finder.fit(P).transform(P, return_confidence=True)
    assert len(coords) == 2
    for c, s in zip(coords, conf):
        assert c.shape == (0, 3) and c.dtype == np.float64
        assert s.shape == (0,)


def good_map():
    return make_maps((20, 20), np.array([[10.0, 10.0, 1]]), n_classes=2)[np.newaxis]


@pytest.mark.parametrize(
    "P, match",
    [
        (good_map()[0], "single item"),
        (good_map()[..., np.newaxis], "must have 4 dimensions"),
        (np.where(np.arange(20) == 3, np.nan, good_map()), "NaN"),
        (good_map() * 1.01, r"sum to 1 over the class axis .*between 1\.01 and 1\.01"),
        (np.ones((1, 1, 8, 8)), "at least 2 classes"),
        ([np.full((2, 8, 8), 0.5), np.full((3, 8, 8), 1 / 3)], "same number of classes"),
    ],
)
def test_bad_maps(P, match):
    with pytest.raises(ValueError, match=match):
        PeakFinder().fit(P)


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(threshold=0.0), "strictly between 0 and 1"),
        (dict(threshold=1.5), "strictly between 0 and 1"),
        (dict(threshold={3: 0.5}), "foreground class indices 1..1"),
        (dict(threshold=[0.5, 0.5]), "one value per foreground class"),
        (dict(method="blob"), "method must be one of"),
        (dict(refine="spline"), "refine must be one of"),
        (dict(min_distance=0), "min_distance must be an integer >= 1"),
        (dict(merge_distance=-1.0), "merge_distance must be None or a positive"),
        (dict(edge_margin=-2), "edge_margin must be a number of pixels >= 0"),
    ],
)
def test_bad_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        PeakFinder(**params).fit(good_map())


def test_transform_checks_classes_and_images_and_needs_no_fit():
    P = good_map()
    # stateless: an unfitted finder (e.g. after a pretrained segmenter) gives the same atoms
    np.testing.assert_array_equal(PeakFinder().transform(P)[0],
                                  PeakFinder().fit(P).transform(P)[0])
    assert len(PeakFinder().transform(P)[0]) > 0
    finder = PeakFinder().fit(P)
    P3 = make_maps((20, 20), np.array([[10.0, 10.0, 2]]), n_classes=3)[np.newaxis]
    with pytest.raises(ValueError, match="P has 3 classes but this PeakFinder was fitted on"):
        finder.transform(P3)
    with pytest.raises(ValueError, match=r"images\[0\] has shape \(10, 10\)"):
        finder.transform(P, images=np.zeros((1, 10, 10)))
    with pytest.raises(ValueError, match="images holds 2 images but P holds 1"):
        finder.transform(P, images=np.zeros((2, 20, 20)))
    with pytest.raises(ValueError, match="images were given twice"):
        finder.transform((P, np.zeros((1, 20, 20))), images=np.zeros((1, 20, 20)))


def gaussian_columns(shape=(112, 112), n=90, seed=3):
    pos = random_positions(shape, n, 8.0, 6, seed)
    image = render(shape, pos, sigma=2.0, amplitude=1.0)
    fg = np.clip(0.95 * image, 0, 0.999)
    P = np.stack([1 - fg, fg])[np.newaxis]
    return pos, image, P


@pytest.mark.parametrize("method", ["components", "maxima"])
def test_gaussian_refinement_within_0_01_px(method):
    pos, image, P = gaussian_columns()
    finder = PeakFinder(method=method, refine="gaussian").fit(P)
    found = finder.transform(P, images=image[np.newaxis])[0]
    d, idx = nearest_error(found, pos)
    assert len(found) == len(pos) and len(np.unique(idx)) == len(pos)
    assert d.max() < 0.01
    # unrefined positions are much worse, so the test can fail
    raw = PeakFinder(method=method).fit_transform(P)[0]
    assert nearest_error(raw, pos)[0].max() > 0.02
    # the (P, images) tuple gives the same as the keyword, also inside a Pipeline
    np.testing.assert_array_equal(finder.transform((P, image[np.newaxis]))[0], found)
    pipe = make_pipeline(FunctionTransformer(lambda X: (P, X)), clone(finder))
    np.testing.assert_array_equal(pipe.fit_transform(image[np.newaxis])[0], found)


def test_refinement_on_probability_map_without_images():
    pos = random_positions((64, 64), 20, 9.0, 6, seed=5)
    fg = render((64, 64), pos, sigma=2.0, amplitude=0.9)  # not clipped: exact Gaussians
    P = np.stack([1 - fg, fg])[np.newaxis]
    found = PeakFinder(refine="gaussian").fit_transform(P)[0]
    assert nearest_error(found, pos)[0].max() < 0.01
    com = PeakFinder(refine="com").fit_transform(P)[0]
    assert len(com) == 20 and nearest_error(com, pos)[0].max() < 0.5


@pytest.mark.parametrize("refine", ["com", "gaussian"])
def test_refinement_falls_back_on_flat_window(refine):
    atoms = np.array([[10.3, 11.6, 1], [25.0, 25.0, 1]])
    P = make_maps((36, 36), atoms, n_classes=2)[np.newaxis]
    raw = PeakFinder().fit_transform(P)[0]
    flat = np.full((1, 36, 36), 7.0)
    refined = PeakFinder(refine=refine).fit(P).transform(P, images=flat)[0]
    np.testing.assert_array_equal(refined, raw)


def test_refinement_never_moves_more_than_radius():
    # the image's column sits 6 px away from the detected blob: the fit would leave the window
    P = make_maps((40, 40), np.array([[20.0, 20.0, 1]]), n_classes=2)[np.newaxis]
    image = render((40, 40), np.array([[20.0, 26.0]]))
    raw = PeakFinder().fit_transform(P)[0]
    for refine in ("com", "gaussian"):
        refined = PeakFinder(refine=refine, refine_radius=3).fit(P).transform(
            P, images=image[np.newaxis])[0]
        assert len(refined) == 1
        shift = np.hypot(*(refined[0, :2] - raw[0, :2]))
        assert shift <= 3 * np.sqrt(2)


def test_confidence_and_find_peaks_agree_with_transform():
    atoms = np.array([[8.0, 8.0, 1], [20.0, 21.0, 2]])
    P = make_maps((30, 30), atoms, amplitude=[0.9, 0.7])
    for method in ("components", "maxima"):
        coords, conf = PeakFinder(method=method).fit(P[np.newaxis]).transform(
            P[np.newaxis], return_confidence=True)
        c1, s1 = find_peaks(P, method=method)
        np.testing.assert_array_equal(coords[0], c1)
        np.testing.assert_array_equal(conf[0], s1)
        np.testing.assert_allclose(s1, [0.9, 0.7], atol=1e-6)


def test_sklearn_contract():
    est = PeakFinder(method="maxima", threshold={1: 0.4}, refine="gaussian")
    params = est.get_params()
    assert params["threshold"] == {1: 0.4} and params["method"] == "maxima"
    cl = clone(est)
    assert cl.get_params() == params and cl is not est
    est2 = PeakFinder().set_params(**params)
    assert est2.get_params() == params
    tags = est.__sklearn_tags__()
    assert tags.input_tags.two_d_array is False and tags.input_tags.three_d_array is True
    assert tags.transformer_tags is not None
    assert not hasattr(est, "set_output")  # ragged output: opted out of set_output
    assert est.fit(good_map()) is est and est.n_classes_ == 2
    name = type(est).__name__
    for check in (check_get_params_invariance, check_set_params, check_estimator_cloneable,
                  check_no_attributes_set_in_init, check_parameters_default_constructible,
                  check_mixin_order):
        check(name, PeakFinder())


def test_pickle_round_trip_and_tuple_of_lists(tmp_path):
    import joblib

    pos, image, P = gaussian_columns(shape=(48, 48), n=8, seed=2)
    finder = PeakFinder(refine="gaussian").fit(P)
    path = tmp_path / "finder.joblib"
    joblib.dump(finder, path)
    loaded = joblib.load(path)
    expected = finder.transform(P, images=image[np.newaxis])
    # a tuple of lists (maps and images of varying sizes) is accepted as X as well
    got = loaded.transform(([P[0]], [image]))
    np.testing.assert_array_equal(got[0], expected[0])
    assert loaded.get_params() == finder.get_params() and loaded.n_classes_ == 2


def test_n_jobs_gives_the_same_atoms():
    P = np.concatenate([good_map()] * 3)
    serial = PeakFinder().transform(P)
    parallel = PeakFinder(n_jobs=2).transform(P)
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------------
# classes from column intensities
# --------------------------------------------------------------------------------------------
def _blob_lattice(amplitudes, spacing=10, size=80, sigma2=6.0, noise=0.0, seed=0):
    """A square lattice of Gaussian columns with the given amplitude per site."""
    from sklatom.peaks import contrast_classes  # noqa: F401  (the module under test)

    rr, cc = np.mgrid[:size, :size]
    sites = [(r, c) for r in range(5, size, spacing) for c in range(5, size, spacing)]
    image = np.zeros((size, size))
    for (r, c), a in zip(sites, amplitudes(len(sites))):
        image += a * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / sigma2)
    image += np.random.default_rng(seed).normal(0, noise, image.shape)
    return image, np.array(sites, float)


def test_a_bright_minority_taken_for_the_host_becomes_heavier():
    from sklatom.peaks import contrast_classes

    dopants = {3, 17, 40}
    image, sites = _blob_lattice(lambda n: [2.0 if k in dopants else 1.0 for k in range(n)],
                                 noise=0.03)
    coords = np.column_stack([sites, np.ones(len(sites))])  # all "light"
    coords[10, 2] = 2  # and one host atom taken for a dopant
    fixed = contrast_classes(image, coords, lighter=1, heavier=2)
    assert set(np.flatnonzero(fixed[:, 2] == 2)) == dopants
    np.testing.assert_array_equal(fixed[:, :2], coords[:, :2])


def test_a_sublattice_of_other_contrast_keeps_its_class():
    from sklatom.peaks import contrast_classes

    # every other site 1.9x brighter (N and B in hBN): both "light" by the lattice
    image, sites = _blob_lattice(lambda n: [1.9 if k % 2 else 1.0 for k in range(n)])
    coords = np.column_stack([sites, np.ones(len(sites))])
    np.testing.assert_array_equal(contrast_classes(image, coords, 1, 2), coords)
    # with no lighter atoms to compare with (SrTiO3: all heavy), nothing changes either
    heavy = coords.copy()
    heavy[:, 2] = 2
    np.testing.assert_array_equal(contrast_classes(image, heavy, 1, 2), heavy)


def test_peak_finder_uses_contrast_only_with_images_and_checks_the_classes():
    rr, cc = np.mgrid[:60, :60]
    sites = [(r, c) for r in range(5, 60, 10) for c in range(5, 60, 10)]
    fg = sum(0.9 * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / 8.0) for r, c in sites)
    fg = np.clip(fg, 0, 0.95)
    P = np.stack([1 - fg, fg, np.zeros_like(fg)])[np.newaxis]  # all class 1
    image = fg.copy()
    image += 1.5 * np.exp(-((rr - 25) ** 2 + (cc - 25) ** 2) / 8.0)  # one bright column
    finder = PeakFinder(classes_from_contrast=(1, 2))
    plain = finder.transform(P)[0]
    assert set(plain[:, 2]) == {1.0}
    with_images = finder.transform(P, images=image[np.newaxis])[0]
    heavy = with_images[with_images[:, 2] == 2]
    assert len(heavy) == 1 and np.allclose(heavy[0, :2], (25, 25), atol=0.5)
    with pytest.raises(ValueError, match="classes_from_contrast"):
        PeakFinder(classes_from_contrast=(1, 1)).transform(P)
    with pytest.raises(ValueError, match="names a class the maps do not have"):
        PeakFinder(classes_from_contrast=(1, 3)).transform(P)
