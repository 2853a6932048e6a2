import numpy as np
import pytest
from ase import Atoms
from sklearn.base import clone
from sklearn.utils.estimator_checks import (
    check_estimator_cloneable,
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
)

from sklatom.simulation import AcquisitionModel, MultisliceSimulator, _fourier_upsample
from sklatom.structures import make_structure, project_columns

PIXEL = 0.1  # Å/px


def _column_offsets(image, coords, pixel_size, radius_px=4):
    """Distance (Å) between each true column and the intensity centroid around it."""
    rr, cc = np.mgrid[-radius_px:radius_px + 1, -radius_px:radius_px + 1]
    offsets = []
    for r, c, _ in coords:
        r0, c0 = int(round(r)), int(round(c))
        if not (radius_px <= r0 < image.shape[0] - radius_px
                and radius_px <= c0 < image.shape[1] - radius_px):
            continue
        w = image[r0 - radius_px:r0 + radius_px + 1, c0 - radius_px:c0 + radius_px + 1]
        w = np.clip(w - np.percentile(w, 60), 0, None)
        dr = (w * rr).sum() / w.sum() + r0 - r
        dc = (w * cc).sum() / w.sum() + c0 - c
        offsets.append(np.hypot(dr, dc) * pixel_size)
    return np.array(offsets)


@pytest.fixture(scope="module")
def graphene():
    atoms = make_structure("graphene", (8.0, 8.0), defects=None, margin=3.0, random_state=11)
    image = MultisliceSimulator(method="multislice", progress=False, n_jobs=2).transform(
        [atoms])[0]
    return atoms, image


@pytest.fixture(scope="module")
def mos2():
    atoms = make_structure("MoS2", (9.0, 9.0), defects=None, margin=3.0, random_state=12)
    image = MultisliceSimulator(method="multislice", progress=False, n_jobs=2).transform(
        [atoms])[0]
    return atoms, image


@pytest.mark.parametrize("which", ["graphene", "mos2"])
def test_multislice_columns_appear_where_the_ground_truth_says(which, request):
    atoms, image = request.getfixturevalue(which)
    cols = project_columns(atoms, PIXEL, shape=image.shape)
    assert image.shape == (round(atoms.info["scan_region"][2] / PIXEL),) * 2
    offsets = _column_offsets(image, cols.coordinates, PIXEL)
    assert len(offsets) >= 8
    assert offsets.mean() < 0.1, offsets
    # the brightest pixels are on columns, not between them
    r, c = np.unravel_index(np.argmax(image), image.shape)
    d = np.hypot(cols.coordinates[:, 0] - r, cols.coordinates[:, 1] - c).min()
    assert d * PIXEL < 0.3


def test_mo_columns_are_brighter_than_s2_columns(mos2):
    atoms, image = mos2
    cols = project_columns(atoms, PIXEL, shape=image.shape)
    rc = np.round(cols.coordinates[:, :2]).astype(int)
    ok = np.all((rc >= 0) & (rc < image.shape[0]), axis=1)
    peak = image[rc[ok, 0], rc[ok, 1]]
    names = cols.names[ok]
    mo, s2 = peak[names == "Mo"].mean(), peak[names == "S2"].mean()
    assert mo > 1.5 * s2
    assert image.min() >= 0


@pytest.mark.parametrize("which", ["graphene", "mos2"])
def test_incoherent_approximation_agrees_with_multislice(which, request):
    atoms, reference = request.getfixturevalue(which)
    fast = MultisliceSimulator(method="incoherent", progress=False).transform([atoms])[0]
    r = np.corrcoef(fast.ravel(), reference.ravel())[0, 1]
    assert r >= 0.95
    # and on the same intensity scale (fraction of the probe reaching the detector)
    assert 0.5 < fast.mean() / reference.mean() < 2.0


def test_prism_with_interpolation_agrees_with_multislice(graphene):
    atoms, reference = graphene
    # a 14 Å cell with a 7 Å window gives PRISM interpolation factor 2
    prism = MultisliceSimulator(method="prism", prism_window=7.0, progress=False,
                                n_jobs=2).transform([atoms])[0]
    assert np.corrcoef(prism.ravel(), reference.ravel())[0, 1] > 0.995


def test_fourier_upsampling_of_a_band_limited_scan_is_accurate():
    # a band-limited, non-periodic signal sampled at a coarse step, upsampled 4x
    step, factor, n = 0.4, 4, 24
    k = np.array([0.21, 0.57, 0.9])  # 1/Å, below the scan's Nyquist of 1.25

    def signal(y, x):
        return sum(np.cos(2 * np.pi * (ki * y + 0.7 * ki * x) + i)
                   for i, ki in enumerate(k)) + 3
    y, x = np.mgrid[0:n, 0:n] * step
    up = _fourier_upsample(signal(y, x), factor, (80, 80))
    yf, xf = np.mgrid[0:80, 0:80] * step / factor
    exact = signal(yf, xf)
    err = np.abs(up - exact)[8:-8, 8:-8].max() / np.ptp(exact)
    assert err < 0.02
    # the scanned positions themselves are kept exactly
    np.testing.assert_allclose(up[::factor, ::factor][:20, :20], signal(y, x)[:20, :20],
                               atol=1e-9)


def test_frozen_phonons_change_the_image_but_not_the_columns():
    atoms = make_structure("graphene", (6.0, 6.0), defects=None, margin=3.0, random_state=3)
    sim = MultisliceSimulator(method="prism", progress=False, n_jobs=2, random_state=0)
    static = sim.transform([atoms])[0]
    thermal = sim.set_params(frozen_phonons=2).transform([atoms])[0]
    assert not np.allclose(static, thermal, rtol=0.01)
    assert np.corrcoef(static.ravel(), thermal.ravel())[0, 1] > 0.9
    cols = project_columns(atoms, PIXEL, shape=thermal.shape)
    assert _column_offsets(thermal, cols.coordinates, PIXEL).mean() < 0.1


def test_output_pixel_size_sets_the_image_shape_and_detectors_change_contrast():
    atoms = make_structure("MoS2", (6.0, 6.0), defects=None, margin=3.0, random_state=0)
    sim = MultisliceSimulator(method="prism", pixel_size=0.2, progress=False, n_jobs=2)
    haadf = sim.transform([atoms])[0]
    assert haadf.shape == (30, 30) and haadf.dtype == np.float32
    abf = sim.set_params(detector="ABF").transform([atoms])[0]
    cols = project_columns(atoms, 0.2, shape=abf.shape)
    rc = np.clip(np.round(cols.coordinates[:, :2]).astype(int), 0, 29)
    # annular bright field shows columns dark on a bright background
    assert abf[rc[:, 0], rc[:, 1]].mean() < abf.mean()
    assert haadf[rc[:, 0], rc[:, 1]].mean() > haadf.mean()


def test_disk_cache_returns_the_same_image_without_recomputing(tmp_path):
    atoms = make_structure("graphene", (5.0, 5.0), defects=None, margin=3.0, random_state=0)
    sim = MultisliceSimulator(method="prism", memory=str(tmp_path), progress=False)
    first = sim.transform([atoms])[0]
    cached = sorted(p for p in tmp_path.rglob("output.pkl"))
    assert len(cached) == 1
    again = sim.transform([atoms])[0]
    np.testing.assert_array_equal(first, again)
    assert sorted(p for p in tmp_path.rglob("output.pkl")) == cached


def _bad_atoms():
    ok = make_structure("graphene", (5.0, 5.0), defects=None, random_state=0)
    outside = ok.copy()
    outside.positions[0, 0] = -5.0
    skew = ok.copy()
    skew.set_cell([[10, 0, 0], [3, 10, 0], [0, 0, 8]])
    return {"empty": Atoms(cell=[5, 5, 5]), "outside": outside, "skew": skew}


@pytest.mark.parametrize(
    "case, match",
    [
        ("empty", "empty structure"),
        ("outside", "outside its cell"),
        ("skew", "non-orthogonal cell"),
    ],
)
def test_bad_structures_name_the_problem(case, match):
    with pytest.raises(ValueError, match=match):
        MultisliceSimulator(progress=False).transform([_bad_atoms()[case]])


@pytest.mark.parametrize(
    "params, match",
    [
        ({"energy": -80e3}, "energy"),
        ({"energy": 5e7}, "not physical"),
        ({"pixel_size": 0.0}, "pixel_size"),
        ({"pixel_size": float("nan")}, "pixel_size"),
        ({"semiangle_cutoff": 500}, "semiangle_cutoff"),
        ({"detector": "DF9"}, "detector='DF9' is unknown"),
        ({"detector": (100, 50)}, "must exceed inner"),
        ({"potential_sampling": 0.2}, "resolves scattering only up to"),
        ({"method": "bloch"}, "method='bloch' is unknown"),
        ({"method": "incoherent", "detector": "BF"}, "annular dark-field images only"),
        ({"frozen_phonons": -1}, "frozen_phonons"),
    ],
)
def test_non_physical_settings_are_refused(params, match):
    atoms = make_structure("graphene", (5.0, 5.0), defects=None, random_state=0)
    with pytest.raises(ValueError, match=match):
        MultisliceSimulator(progress=False, **params).transform([atoms])


def test_not_a_structure_is_a_type_error():
    with pytest.raises(TypeError, match="must be an ase.Atoms"):
        MultisliceSimulator().transform([np.zeros((3, 3))])


@pytest.mark.parametrize("Estimator", [MultisliceSimulator, AcquisitionModel])
def test_sklearn_contract(Estimator):
    est = Estimator()
    name = Estimator.__name__
    check_get_params_invariance(name, est)
    check_set_params(name, est)
    check_estimator_cloneable(name, est)
    check_no_attributes_set_in_init(name, est)
    check_parameters_default_constructible(name, est)
    assert clone(est).get_params() == est.get_params()


# ---- acquisition model ---------------------------------------------------------------------
def _gaussian_blobs(shape, centres, sigma=2.0):
    rr, cc = np.mgrid[0:shape[0], 0:shape[1]]
    img = np.zeros(shape)
    for r, c in centres:
        img += np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * sigma**2))
    return img


def test_dose_sets_poisson_counts():
    clean = np.full((2, 64, 64), 0.02)
    noisy = AcquisitionModel(dose=1e5, pixel_size=0.1, random_state=0).transform(clean)
    expected = 1e5 * 0.1**2 * 0.02  # 20 counts per pixel
    assert noisy.mean() == pytest.approx(expected, rel=0.02)
    assert noisy.var() == pytest.approx(expected, rel=0.1)  # Poisson: variance = mean
    assert np.all(noisy == np.round(noisy))
    again = AcquisitionModel(dose=1e5, pixel_size=0.1, random_state=0).transform(clean)
    np.testing.assert_array_equal(noisy, again)


def test_acquisition_n_jobs_gives_the_same_recordings():
    rng = np.random.default_rng(2)
    clean = [rng.random((40, 48)) * 0.05 for _ in range(5)]
    coords = [np.column_stack([rng.uniform(5, 35, 6), rng.uniform(5, 40, 6)]) for _ in clean]
    params = dict(dose=1e6, blur=0.1, scan_jitter=0.02, drift=(0.002, 0.003), background=0.3,
                  read_noise=1.0, random_state=7)
    serial = AcquisitionModel(**params).transform_with_coordinates(clean, coords)
    threaded = AcquisitionModel(**params, n_jobs=2).transform_with_coordinates(clean, coords)
    np.testing.assert_array_equal(serial[0], threaded[0])
    for a, b in zip(serial[1], threaded[1]):
        np.testing.assert_array_equal(a, b)
    # every image has its own noise, not one shared draw
    assert not np.array_equal(serial[0][0] - clean[0], serial[0][1] - clean[1])
    # an image's noise depends on its position in the batch and the seed only
    first = AcquisitionModel(**params).transform(clean[:2])
    np.testing.assert_array_equal(first, serial[0][:2])


def test_without_dose_and_distortions_the_image_is_unchanged():
    clean = np.random.default_rng(0).random((1, 20, 30))
    out = AcquisitionModel(dose=None).transform(clean)
    np.testing.assert_allclose(out, clean, rtol=1e-6)


def test_ground_truth_follows_the_scan_distortion():
    rng = np.random.default_rng(1)
    centres = np.array([(r, c) for r in range(12, 120, 16) for c in range(12, 120, 16)],
                       dtype=float) + rng.uniform(-2, 2, (49, 2))
    image = _gaussian_blobs((128, 128), centres)
    coords = np.column_stack([centres, np.ones(len(centres))])
    acq = AcquisitionModel(dose=None, pixel_size=0.1, drift=(0.004, 0.006),
                           random_drift=False, scan_jitter=0.02, random_state=3)
    (distorted,), (moved,) = acq.transform_with_coordinates(image[None], [coords])
    assert np.abs(moved[:, :2] - coords[:, :2]).max() > 2.0  # the distortion is real
    rr, cc = np.mgrid[-4:5, -4:5]
    found = []
    for r, c, _ in moved:
        r0, c0 = int(round(r)), int(round(c))
        w = distorted[r0 - 4:r0 + 5, c0 - 4:c0 + 5]
        found.append(((w * rr).sum() / w.sum() + r0, (w * cc).sum() / w.sum() + c0))
    inner = np.all((moved[:, :2] > 10) & (moved[:, :2] < 118), axis=1)
    err = np.hypot(*(np.array(found) - moved[:, :2]).T)[inner]
    assert err.max() < 0.35  # px; line jitter deforms blobs a little
    assert err.mean() < 0.15


def test_blur_background_and_gamma_do_what_they_say():
    image = _gaussian_blobs((64, 64), [(32, 32)])[None] * 0.01
    blurred = AcquisitionModel(dose=None, blur=0.2, pixel_size=0.1).transform(image)
    assert blurred.max() < image.max()
    assert blurred.sum() == pytest.approx(image.sum(), rel=1e-3)
    bg = AcquisitionModel(dose=None, background=1.0, random_state=0).transform(image)
    assert (bg - image).min() >= -1e-9 and (bg - image).max() > 0
    g = AcquisitionModel(dose=None, gamma=0.5, contrast=2.0).transform(image)
    np.testing.assert_allclose(g, 2 * np.sqrt(image), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "X, params, match",
    [
        (-np.ones((1, 8, 8)), {}, "negative intensities"),
        (np.full((1, 8, 8), np.nan), {}, "NaN"),
        (np.ones((8, 8)), {}, "single item"),
        (np.ones((1, 8, 8)), {"dose": -5}, "dose"),
        (np.ones((1, 8, 8)), {"drift": 3}, "drift must be"),
    ],
)
def test_acquisition_bad_input(X, params, match):
    with pytest.raises(ValueError, match=match):
        AcquisitionModel(**params).transform(X)


def test_a_batch_simulates_on_a_dask_cluster_like_on_threads():
    distributed = pytest.importorskip("distributed")
    structures = [make_structure("graphene", (5.0, 5.0), defects=None, margin=3.0,
                                 random_state=s) for s in (0, 1)]
    sim = MultisliceSimulator(method="prism", progress=False)
    local = sim.transform(structures)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        remote = clone(sim).set_params(scheduler="distributed").transform(structures)
        assert len(client.scheduler_info()["workers"]) == 2
    np.testing.assert_allclose(remote, local, rtol=1e-5, atol=1e-8)


def test_distributed_without_a_client_says_so():
    pytest.importorskip("distributed")
    atoms = make_structure("graphene", (5.0, 5.0), defects=None, random_state=0)
    with pytest.raises(ValueError, match="[Cc]lient"):
        MultisliceSimulator(scheduler="distributed", progress=False).transform([atoms])


def test_incoherent_images_in_parallel_match_serial():
    structures = [make_structure("hBN", (6.0, 6.0), random_state=s) for s in range(3)]
    serial = MultisliceSimulator(method="incoherent", progress=False).transform(structures)
    parallel = MultisliceSimulator(method="incoherent", progress=False,
                                   n_jobs=2).transform(structures)
    # same images up to float rounding in the worker processes' FFTs
    np.testing.assert_allclose(serial, parallel, rtol=1e-4, atol=1e-9)
    assert not np.allclose(serial[0], serial[1])


# --------------------------------------------------------------------------------------------
# recording artefacts of real images
# --------------------------------------------------------------------------------------------
def test_dark_counts_make_vacuum_flat_poisson_noise():
    vacuum = np.zeros((1, 128, 128), dtype=np.float32)
    for lam in (1.0, 30.0):
        rec = AcquisitionModel(dose=1e6, dark_counts=lam, random_state=0).transform(vacuum)[0]
        assert abs(rec.mean() - lam) < 0.05 * lam + 0.05
        assert abs(rec.var() - lam) < 0.1 * lam + 0.1  # Poisson: variance = mean
        assert np.all(rec == np.round(rec))


def test_diffuse_scattering_puts_the_columns_on_a_plateau():
    # a 2 x 2 nm "particle" of columns 2 Å apart in a 6 nm field of vacuum
    image = np.zeros((1, 600, 600), dtype=np.float32)
    image[0, 200:400:20, 200:400:20] = 1.0
    sharp = AcquisitionModel(dose=None, blur=0.3).transform(image)[0]
    spread = AcquisitionModel(dose=None, blur=0.3, diffuse=0.6,
                              diffuse_length=5.0).transform(image)[0]
    assert spread.sum() == pytest.approx(sharp.sum(), rel=1e-4)  # intensity is kept
    # columns keep 40 % of their peak over a floor between them; the vacuum stays dark
    column, between = (300, 300), (310, 310)  # in the middle of the particle
    assert (spread[column] - spread[between]) / (sharp[column] - sharp[between]) == \
        pytest.approx(0.4, abs=0.02)
    assert spread[between] > 10 * sharp[between]
    assert spread[20, 20] < 1e-3 * spread[210, 210]
    with pytest.raises(ValueError, match="diffuse=1.0"):
        AcquisitionModel(diffuse=1.0).transform(image)


def test_scan_noise_makes_rows_differ_and_saturation_clips():
    flat = np.full((1, 64, 64), 0.01, dtype=np.float32)
    rows = AcquisitionModel(dose=None, scan_noise=0.05, random_state=0).transform(flat)[0]
    assert np.allclose(rows.std(axis=1), 0, atol=1e-7)  # constant along each row
    assert 0.03 < rows.mean(axis=1).std() / rows.mean() < 0.08
    ramp = np.linspace(0, 1, 64, dtype=np.float32)[None, None, :] * np.ones((1, 64, 1))
    clipped = AcquisitionModel(dose=None, saturation=0.6).transform(ramp)[0]
    assert clipped.max() == np.float32(0.6) and np.sum(clipped == np.float32(0.6)) == 64 * 26


def test_smooth_background_is_smooth_and_never_negative():
    flat = np.full((1, 200, 200), 0.01, dtype=np.float32)
    rec = AcquisitionModel(dose=None, background_texture=0.3, background_length=5.0,
                           pixel_size=0.1, random_state=1).transform(flat)[0]
    assert 0.2 < rec.std() / rec.mean() < 0.4 and rec.min() >= 0
    # correlated over ~50 px: neighbouring pixels are nearly equal
    assert np.abs(np.diff(rec, axis=1)).mean() < 0.05 * rec.std()


def test_flyback_stretches_the_start_of_each_line_and_moves_the_truth_with_it():
    atoms = make_structure("MoS2", (9.6, 9.6), defects=None, margin=3.0, random_state=2)
    clean = MultisliceSimulator(method="incoherent", progress=False).transform([atoms])
    cols = project_columns(atoms, PIXEL, shape=clean.shape[1:])
    acq = AcquisitionModel(dose=None, flyback=0.5, flyback_length=1.0, random_drift=False)
    image, moved = acq.transform_with_coordinates(clean, [cols.coordinates])
    shift = moved[0][:, 1] - cols.coordinates[:, 1]
    early = cols.coordinates[:, 1] < 10
    late = ~early & (cols.coordinates[:, 1] > 60)
    assert shift[early].mean() > 1.0 and np.abs(shift[late]).max() < 0.02
    # the moved coordinates are where the columns appear in the distorted image
    offsets = _column_offsets(image[0], moved[0], PIXEL)
    assert np.median(offsets) < 0.05
