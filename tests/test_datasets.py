import numpy as np
import pytest

from sklatom.datasets import draw_label_mask, load_dataset, make_lattice_images, save_dataset
from sklatom.simulation import AcquisitionModel, MultisliceSimulator
from sklatom.structures import empty_sites, lattice_classes


@pytest.mark.parametrize("lattice", ["graphene", "hBN", "MoS2", "WS2", "SrTiO3-001"])
def test_images_masks_and_coordinates_agree(lattice):
    X, y, coords, info = make_lattice_images(2, lattice, shape=(64, 80), pixel_size=0.1,
                                             return_info=True, random_state=0)
    assert X.shape == (2, 64, 80) and X.dtype == np.float32
    assert y.shape == (2, 64, 80) and y.dtype == np.int64
    assert info.classes == lattice_classes(lattice)
    for img, mask, c in zip(X, y, coords):
        assert c.shape[1] == 3 and len(c) > 5
        assert c[:, 0].min() >= -0.5 and c[:, 0].max() < 63.5
        assert c[:, 1].min() >= -0.5 and c[:, 1].max() < 79.5
        # the mask holds each column's class at its centre
        r, cc = np.round(c[:, 0]).astype(int), np.round(c[:, 1]).astype(int)
        r, cc = np.clip(r, 0, 63), np.clip(cc, 0, 79)
        np.testing.assert_array_equal(mask[r, cc], c[:, 2].astype(int))
        # columns are bright: the image is brighter on the mask than off it
        assert img[mask > 0].mean() > 2 * img[mask == 0].mean()


@pytest.mark.parametrize("lattice", ["graphene", "MoS2"])
def test_default_dose_gives_good_images(lattice):
    kwargs = dict(shape=(96, 96), defects=None, random_state=1)
    X, _, _ = make_lattice_images(1, lattice, **kwargs)
    clean_acquisition = AcquisitionModel(dose=None, blur=0.15, scan_jitter=0.02)
    clean, _, _ = make_lattice_images(1, lattice, acquisition=clean_acquisition, **kwargs)
    # shot noise at the default dose leaves the lattice clearly visible
    assert np.corrcoef(X[0].ravel(), clean[0].ravel())[0, 1] > 0.85
    # and it is real shot noise, not the noise-free image
    assert np.corrcoef(X[0].ravel(), clean[0].ravel())[0, 1] < 0.999


def test_same_seed_same_dataset_and_different_seed_differs():
    a = make_lattice_images(2, "MoS2", shape=(48, 48), random_state=3)
    b = make_lattice_images(2, "MoS2", shape=(48, 48), random_state=3)
    c = make_lattice_images(2, "MoS2", shape=(48, 48), random_state=4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_lattice_mix_shares_one_class_list_and_labels_map_columns():
    X, y, coords, info = make_lattice_images(4, ["graphene", "MoS2"], shape=(48, 48),
                                             return_info=True, random_state=0)
    assert info.classes[:3] == ["background", "C", "Si"]
    assert "Mo" in info.classes and "S2" in info.classes
    assert set(info.lattices) <= {"graphene", "MoS2"}
    _, y1, c1, info1 = make_lattice_images(1, "MoS2", shape=(48, 48), labels="atoms",
                                           return_info=True, random_state=0)
    assert info1.classes == ["background", "atom"] and set(np.unique(y1)) == {0, 1}
    mapping = {"Mo": "metal", "W": "metal", "S2": "chalcogen", "S": "chalcogen",
               "SSe": "chalcogen"}
    _, y2, _, info2 = make_lattice_images(1, "MoS2", shape=(48, 48), labels=mapping,
                                          return_info=True, random_state=0)
    assert info2.classes == ["background", "metal", "chalcogen"]
    with pytest.raises(ValueError, match="no class for the columns"):
        make_lattice_images(1, "MoS2", shape=(48, 48), labels={"Mo": "metal"})


def test_custom_simulator_and_acquisition_are_used():
    sim = MultisliceSimulator(method="prism", progress=False, pixel_size=0.3)
    acq = AcquisitionModel(dose=None)
    X, y, coords = make_lattice_images(1, "graphene", shape=(40, 40), pixel_size=0.2,
                                       simulator=sim, acquisition=acq, defects=None,
                                       random_state=0)
    assert X.shape == (1, 40, 40)
    # dose=None keeps the noise-free detector fraction (well below 1)
    assert 0 < X.max() < 0.01
    assert sim.pixel_size == 0.3  # the caller's simulator is not modified


def test_masks_follow_the_distorted_coordinates():
    acq = AcquisitionModel(dose=None, drift=(0.003, 0.003), random_drift=False)
    _, y, coords = make_lattice_images(1, "MoS2", shape=(64, 64), acquisition=acq,
                                       defects=None, random_state=2)
    r, c = np.round(coords[0][:, :2]).astype(int).T
    ok = (r >= 0) & (r < 64) & (c >= 0) & (c < 64)
    assert np.all(y[0][r[ok], c[ok]] > 0)


def test_draw_label_mask_disks_and_nearest_column_wins():
    mask = draw_label_mask((20, 20), np.array([[5.0, 5.0, 1], [5.0, 8.0, 2]]), radius=2.0)
    assert mask[5, 5] == 1 and mask[5, 8] == 2
    assert mask[5, 6] == 1 and mask[5, 7] == 2  # split at the midpoint
    assert mask[10, 10] == 0
    assert np.sum(mask == 1) < np.pi * 4 + 4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_images": 0}, "n_images"),
        ({"lattice": "diamond"}, "unknown"),
        ({"lattice": []}, "empty list"),
        ({"shape": (4, 4)}, "too small"),
        ({"pixel_size": 5.0}, "pixel_size"),
        ({"labels": "species"}, "labels must be"),
    ],
)
def test_bad_dataset_requests(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_lattice_images(**{"shape": (32, 32), **kwargs})


# --------------------------------------------------------------------------------------------
# the label policy and the scene images
# --------------------------------------------------------------------------------------------
def test_label_policy_leaves_out_the_columns_haadf_does_not_show():
    kwargs = dict(shape=(128, 128), defects=None, return_info=True, random_state=0)
    _, y_vis, c_vis, info = make_lattice_images(1, "SrTiO3-001", **kwargs)
    _, y_all, c_all, _ = make_lattice_images(1, "SrTiO3-001", label_policy="all", **kwargs)
    assert set(info.names[0]) == {"Sr", "OTi"}  # the O columns are background
    assert len(c_all[0]) > 1.6 * len(c_vis[0])
    o = lattice_classes("SrTiO3-001").index("O")
    assert (y_all[0] == o).any() and not (y_vis[0] == o).any()


def test_lattice_policy_labels_faint_lattices_but_not_invisible_ones():
    sim = MultisliceSimulator(method="incoherent", energy=80e3, detector="HAADF",
                              progress=False)

    def labelled(dose, policy, defects=None):
        return make_lattice_images(1, "graphene", shape=(96, 96), defects=defects,
                                   simulator=sim, acquisition=AcquisitionModel(dose=dose),
                                   label_policy=policy, return_info=True, random_state=0)

    # 2e4 e/Å² at 80 kV HAADF: a graphene column's own SNR is about 1.8 (visible needs 5)
    _, _, c_vis, _ = labelled(2e4, "visible")
    _, y, c_lat, info = labelled(2e4, "lattice", {"vacancy": 2})
    _, _, c_all, _ = labelled(2e4, "all", {"vacancy": 2})
    assert len(c_vis[0]) < 0.1 * len(c_all[0])
    assert len(c_lat[0]) == len(c_all[0]) > 25 and len(info.uncertain[0]) == 0
    # the planted vacancies stay empty background
    sites = np.round(empty_sites(info.structures[0]) / 0.1).astype(int)
    assert len(sites) == 2 and np.all(y[0][sites[:, 0], sites[:, 1]] == 0)
    # ... but not a lattice no image shows: 100x less dose, SNR 0.18
    _, _, c_low, doubt = labelled(2e2, "lattice")
    assert len(c_low[0]) == 0 and len(doubt.uncertain[0]) == 0
    # O columns of HAADF SrTiO3 are hidden by their contrast: still background
    _, y, _, info = make_lattice_images(1, "SrTiO3-001", shape=(96, 96), defects=None,
                                        label_policy="lattice", return_info=True,
                                        acquisition=AcquisitionModel(dose=1e4), random_state=0)
    assert set(info.names[0]) == {"Sr", "OTi"}
    assert not (y[0] == lattice_classes("SrTiO3-001").index("O")).any()


def test_uncertain_columns_are_dont_care_in_the_masks():
    from sklatom.datasets import IGNORE_LABEL

    acq = AcquisitionModel(dose=5e4, blur=0.15)  # graphene at the limit of visibility
    _, y, coords, info = make_lattice_images(1, "graphene", shape=(96, 96), defects=None,
                                             acquisition=acq, return_info=True, random_state=0)
    assert len(info.uncertain[0]) > 3 * len(coords[0]) and len(info.uncertain[0]) > 20
    r, c = np.round(info.uncertain[0][:, :2]).astype(int).T
    ok = (r >= 0) & (r < 96) & (c >= 0) & (c < 96)
    assert np.all(y[0][r[ok], c[ok]] == IGNORE_LABEL)


def test_scene_images_resampled_like_the_segmenter_resamples():
    from sklatom.datasets import make_scene_images

    kwargs = dict(shape=(80, 80), scene_options={"support": "vacuum", "crystal": "Au",
                                                 "diameter": 16.0}, random_state=4)
    X, y, c = make_scene_images(1, "nanoparticle", pixel_size=0.3, **kwargs)
    Xr, yr, cr = make_scene_images(1, "nanoparticle", pixel_size=0.3, output_pixel_size=0.1,
                                   **kwargs)
    assert X.shape == (1, 80, 80) and Xr.shape == (1, 240, 240) and yr.shape == (1, 240, 240)
    assert len(c[0]) == len(cr[0]) > 10
    # the same columns, three times further from the origin (pixel centres at integers)
    np.testing.assert_allclose(cr[0][:, :2], (c[0][:, :2] + 0.5) * 3 - 0.5, atol=1e-9)
    # a Au particle is heavy; the particle's columns are where the resampled image is bright
    assert set(np.unique(cr[0][:, 2])) == {2.0}
    rows, cols = np.round(cr[0][:, :2]).astype(int).T
    assert Xr[0][rows, cols].mean() > 3 * np.median(Xr[0])


@pytest.mark.parametrize("scene", ["vacuum", "amorphous"])
def test_nothing_is_labelled_in_vacuum_and_amorphous_scenes(scene):
    from sklatom.datasets import make_scene_images

    X, y, c = make_scene_images(2, scene, shape=(64, 64), pixel_size=0.2, random_state=1,
                                acquisition=AcquisitionModel(dose=1e6, dark_counts=5.0))
    assert all(len(ci) == 0 for ci in c) and not (y > 0).any()
    assert X.std() > 0  # noise (and texture) is there all the same


def test_saturated_patches_are_flat_and_hide_what_is_under_them():
    from sklatom.datasets import make_scene_images

    kwargs = dict(shape=(96, 96), pixel_size=0.15, scene_options={"lattice": "MoS2",
                                                                  "contamination": 0},
                  random_state=2)
    X, _, c = make_scene_images(1, "lattice", **kwargs)
    Xs, ys, cs = make_scene_images(1, "lattice", artefacts={"saturated_patch": 1.0}, **kwargs)
    flat = Xs[0] == Xs[0].max()
    assert 0.03 < flat.mean() < 0.5
    assert len(cs[0]) < len(c[0])
    # no labelled column under the saturated pixels
    r, cc = np.round(cs[0][:, :2]).astype(int).T
    assert flat[np.clip(r, 0, 95), np.clip(cc, 0, 95)].mean() < 0.05
    assert not (ys[0][flat] > 0).any()


def test_bad_scene_requests():
    from sklatom.datasets import make_scene_images

    with pytest.raises(ValueError, match="scene must be one of"):
        make_scene_images(1, "teapot", shape=(32, 32))
    with pytest.raises(ValueError, match="artefacts"):
        make_scene_images(1, "vacuum", shape=(32, 32), artefacts={"cosmic_rays": 1.0})
    with pytest.raises(ValueError, match="label_policy"):
        make_scene_images(1, "vacuum", shape=(32, 32), label_policy="some")
    with pytest.raises(ValueError, match="labels"):
        make_scene_images(1, "vacuum", shape=(32, 32), labels=None)


def test_vacancies_among_uncertain_columns_are_uncertain_too():
    kwargs = dict(shape=(128, 128), defects={"vacancy": 2}, return_info=True, random_state=3)
    _, y_hi, _, hi = make_lattice_images(1, "graphene", **kwargs)
    _, y_lo, _, lo = make_lattice_images(1, "graphene", acquisition=AcquisitionModel(
        dose=5e4, blur=0.15), **kwargs)
    # at a good dose the empty sites are background (not listed); at the limit, don't care
    assert len(hi.uncertain[0]) == 0
    sites = lo.uncertain[0][lo.uncertain[0][:, 2] == 0]
    assert len(sites) == 2
    r, c = np.round(sites[:, :2]).astype(int).T
    assert np.all(y_lo[0][r, c] == -1) and np.all(y_hi[0][r, c] == 0)


def test_saved_data_sets_load_back_as_written(tmp_path):
    X, y, c = make_lattice_images(2, "graphene", shape=(48, 40), random_state=0)
    same = tmp_path / "same.npz"
    save_dataset(same, X, y, classes=["background", "C", "Si"], coordinates=c,
                 pixel_size=0.1, metadata={"seed": 0, "note": "é"})
    data = load_dataset(same)
    np.testing.assert_array_equal(data.images, X)  # one (n, h, w) array when shapes agree
    np.testing.assert_array_equal(data.masks, y)
    assert all(np.array_equal(a, b) for a, b in zip(data.coordinates, c))
    assert data.classes == ["background", "C", "Si"] and data.pixel_size == 0.1
    assert data.metadata == {"seed": 0, "note": "é"}
    with pytest.raises(FileExistsError):
        save_dataset(same, X, y, classes=["background", "C", "Si"])
    # images of different shapes (the training script's scenes), no coordinates
    ragged = tmp_path / "ragged.npz"
    images = [X[0], X[1][:10, :7]]
    masks = [y[0].astype(np.int8), y[1][:10, :7]]
    save_dataset(ragged, images, masks, classes=["background", "atom"])
    data = load_dataset(ragged)
    assert [x.shape for x in data.images] == [(48, 40), (10, 7)]
    assert all(np.array_equal(a, b) for a, b in zip(data.images, images))
    assert all(np.array_equal(a, b) for a, b in zip(data.masks, masks))
    assert data.pixel_size is None and [len(k) for k in data.coordinates] == [0, 0]


def test_bad_data_set_files_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="image 1 has shape"):
        save_dataset(tmp_path / "x.npz", [np.zeros((4, 4)), np.zeros((4, 4))],
                     [np.zeros((4, 4)), np.zeros((4, 5))], classes=["background", "atom"])
    good = tmp_path / "good.npz"
    save_dataset(good, [np.zeros((4, 4)), np.ones((3, 3))], [np.zeros((4, 4))] * 1 +
                 [np.zeros((3, 3))], classes=["background", "atom"])
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    text = tmp_path / "text.npz"
    text.write_text("not a data set")
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, images=np.array([np.zeros(2), None], dtype=object),
             masks=np.zeros((1, 2, 2)), classes=np.array(["background"]))
    for path in (truncated, text, pickled):
        with pytest.raises(ValueError, match="not a readable .npz data set"):
            load_dataset(path)
    lacking = tmp_path / "lacking.npz"
    np.savez(lacking, images=np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match=r"lacks the arrays \['masks', 'classes'\]"):
        load_dataset(lacking)
    damaged = tmp_path / "damaged.npz"
    with np.load(good) as f:
        arrays = dict(f)
    arrays["shapes"] = np.array([[4, 4], [3, 4]])
    np.savez(damaged, **arrays)
    with pytest.raises(ValueError, match="does not hold images of the stored shapes"):
        load_dataset(damaged)
    with pytest.raises(FileNotFoundError):
        load_dataset(tmp_path / "missing.npz")
