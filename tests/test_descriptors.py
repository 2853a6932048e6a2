"""Tests of sklatom.descriptors.ContourDescriptor on shapes with known descriptors."""

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from sklearn import config_context
from sklearn.base import clone
from sklearn.ensemble import IsolationForest
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import (
    check_estimator_cloneable,
    check_get_params_invariance,
    check_mixin_order,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
)

from sklatom.datasets import make_lattice_images
from sklatom.descriptors import ContourDescriptor
from sklatom.peaks import PeakFinder


# --------------------------------------------------------------------------------------------
# synthetic maps
# --------------------------------------------------------------------------------------------
def _ellipse(shape, centre, a, b, angle_deg):
    """Boolean ellipse, semi-axes a (major) and b (px), major axis at ``angle_deg`` from +col,
    counter-clockwise as displayed (rows pointing down)."""
    rr, cc = np.mgrid[:shape[0], :shape[1]].astype(float)
    x, y = cc - centre[1], -(rr - centre[0])
    t = np.deg2rad(angle_deg)
    u = x * np.cos(t) + y * np.sin(t)
    v = -x * np.sin(t) + y * np.cos(t)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def _maps_from_fg(fg):
    """(1, 2, H, W) maps from a foreground probability (H, W)."""
    fg = np.clip(np.asarray(fg, dtype=float), 0.0, 1.0)
    return np.stack([1.0 - fg, fg])[np.newaxis]


def _maps_from_binary(mask, inside=0.95, outside=0.02):
    return _maps_from_fg(np.where(mask, inside, outside))


def _maps_from_labels(masks, n_classes, sigma=1.0):
    """One-hot of integer masks (n, H, W), blurred a little, normalised to sum 1 over classes."""
    P = np.stack([(masks == k).astype(float) for k in range(n_classes)], axis=1)
    P = ndimage.gaussian_filter(P, sigma=(0, 0, sigma, sigma))
    return P / P.sum(axis=1, keepdims=True)


def _column(table, desc, name):
    return table[:, list(desc.get_feature_names_out()).index(name)]


def _angle_diff(a, b):
    """Difference of two axis orientations in degrees, modulo 180, in [0, 90]."""
    d = np.abs((np.asarray(a) - np.asarray(b)) % 180.0)
    return np.minimum(d, 180.0 - d)


def _hex_points(shape, spacing, offset=(6.0, 6.0)):
    pts = []
    for i in range(int(shape[0] / (spacing * np.sqrt(3) / 2)) + 2):
        for j in range(int(shape[1] / spacing) + 2):
            r = offset[0] + i * spacing * np.sqrt(3) / 2
            c = offset[1] + j * spacing + (spacing / 2 if i % 2 else 0.0)
            if r < shape[0] - 5 and c < shape[1] - 5:
                pts.append((r, c))
    return np.array(pts)


def _disks(shape, points, radius):
    rr, cc = np.mgrid[:shape[0], :shape[1]]
    mask = np.zeros(shape, dtype=bool)
    for r, c in points:
        mask |= (rr - r) ** 2 + (cc - c) ** 2 <= radius ** 2
    return mask


# --------------------------------------------------------------------------------------------
# shape descriptors against analytic values
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("radius", [5.0, 9.0, 14.0])
def test_disk_descriptors(radius):
    mask = _ellipse((64, 64), (31.3, 32.6), radius, radius, 0.0)
    P = _maps_from_binary(mask)
    desc = ContourDescriptor().fit(P)
    table = desc.transform(P)
    assert table.shape == (1, desc.n_features_out_)
    assert _column(table, desc, "area_px2")[0] == pytest.approx(np.pi * radius ** 2, rel=0.04)
    diameter = _column(table, desc, "equivalent_diameter_px")[0]
    assert diameter == pytest.approx(2 * radius, rel=0.02)
    assert _column(table, desc, "perimeter_px")[0] == pytest.approx(2 * np.pi * radius, rel=0.1)
    # eccentricity sqrt(1 - (b/a)^2) is steep near a circle: 2 % pixelisation gives 0.2
    ratio = (_column(table, desc, "minor_axis_length_px")
             / _column(table, desc, "major_axis_length_px"))[0]
    assert ratio > 0.95
    assert _column(table, desc, "eccentricity")[0] < 0.3
    assert _column(table, desc, "solidity")[0] > 0.93
    assert _column(table, desc, "row")[0] == pytest.approx(31.3, abs=0.3)
    assert _column(table, desc, "col")[0] == pytest.approx(32.6, abs=0.3)
    # Hu's first invariant of a disk is 1 / (2 pi); the others vanish
    assert _column(table, desc, "hu_0")[0] == pytest.approx(1 / (2 * np.pi), rel=0.02)
    assert abs(_column(table, desc, "hu_1")[0]) < 1e-3


@pytest.mark.parametrize("angle", [-75.0, -30.0, 0.0, 20.0, 45.0, 89.0])
def test_ellipse_axes_and_orientation(angle):
    a, b = 14.0, 5.0
    P = _maps_from_binary(_ellipse((64, 64), (32.0, 32.0), a, b, angle))
    desc = ContourDescriptor().fit(P)
    table = desc.transform(P)
    assert _column(table, desc, "major_axis_length_px")[0] == pytest.approx(2 * a, rel=0.03)
    assert _column(table, desc, "minor_axis_length_px")[0] == pytest.approx(2 * b, rel=0.05)
    assert _column(table, desc, "eccentricity")[0] == pytest.approx(np.sqrt(1 - (b / a) ** 2),
                                                                    abs=0.02)
    got = _column(table, desc, "orientation_deg")[0]
    assert -90.0 <= got < 90.0
    assert _angle_diff(got, angle) < 2.0
    assert _column(table, desc, "orientation_cos2")[0] == pytest.approx(
        np.cos(np.deg2rad(2 * angle)), abs=0.07)
    assert _column(table, desc, "orientation_sin2")[0] == pytest.approx(
        np.sin(np.deg2rad(2 * angle)), abs=0.07)


def test_elongated_gaussian_blobs_stm_like():
    # broad, delocalised molecules on a surface: orientation and axis ratio, not the centre
    rng = np.random.default_rng(0)
    shape = (160, 160)
    rr, cc = np.mgrid[:shape[0], :shape[1]].astype(float)
    centres = [(40, 40), (40, 120), (120, 40), (120, 120), (80, 80)]
    angles = rng.uniform(-90, 90, size=len(centres))
    s_major, s_minor = 7.0, 2.5
    fg = np.zeros(shape)
    for (r0, c0), ang in zip(centres, angles):
        t = np.deg2rad(ang)
        x, y = cc - c0, -(rr - r0)
        u = x * np.cos(t) + y * np.sin(t)
        v = -x * np.sin(t) + y * np.cos(t)
        fg += 0.95 * np.exp(-0.5 * ((u / s_major) ** 2 + (v / s_minor) ** 2))
    P = _maps_from_fg(fg)
    desc = ContourDescriptor().fit(P)
    table = desc.transform(P)
    assert len(table) == len(centres)
    rows, cols = _column(table, desc, "row"), _column(table, desc, "col")
    got = _column(table, desc, "orientation_deg")
    ratio = (_column(table, desc, "major_axis_length_px")
             / _column(table, desc, "minor_axis_length_px"))
    for (r0, c0), ang in zip(centres, angles):
        i = np.argmin(np.hypot(rows - r0, cols - c0))
        assert np.hypot(rows[i] - r0, cols[i] - c0) < 0.5
        assert _angle_diff(got[i], ang) < 3.0
        assert ratio[i] == pytest.approx(s_major / s_minor, rel=0.1)


def test_physical_units_scale_with_pixel_size():
    P = _maps_from_binary(_disks((80, 80), _hex_points((80, 80), 16.0, (10, 10)), 4.0))
    px = ContourDescriptor().fit(P)
    ps = 0.25
    ang = ContourDescriptor(pixel_size=ps).fit(P)
    t_px, t_a = px.transform(P), ang.transform(P)
    assert t_px.shape == t_a.shape and len(t_px) > 5
    names_px, names_a = list(px.get_feature_names_out()), list(ang.get_feature_names_out())
    for name_px, name_a, factor in [("area_px2", "area_A2", ps ** 2),
                                    ("perimeter_px", "perimeter_A", ps),
                                    ("equivalent_diameter_px", "equivalent_diameter_A", ps),
                                    ("major_axis_length_px", "major_axis_length_A", ps),
                                    ("minor_axis_length_px", "minor_axis_length_A", ps),
                                    ("nn_distance_px", "nn_distance_A", ps),
                                    ("nn_mean_distance_px", "nn_mean_distance_A", ps)]:
        np.testing.assert_allclose(t_a[:, names_a.index(name_a)],
                                   factor * t_px[:, names_px.index(name_px)], rtol=1e-12)
    for name in ["row", "col", "eccentricity", "orientation_deg", "solidity", "hu_0", "psi6",
                 "n_neighbors_within"]:
        np.testing.assert_allclose(t_a[:, names_a.index(name)], t_px[:, names_px.index(name)])
    # nearest-neighbour distance of the lattice, in Å
    assert np.median(_column(t_a, ang, "nn_distance_A")) == pytest.approx(16.0 * ps, rel=0.02)
    # neighbor_radius follows the same unit: 1.1 lattice spacings in Å
    r = ContourDescriptor(pixel_size=ps, neighbor_radius=1.1 * 16 * ps).fit(P)
    np.testing.assert_allclose(_column(r.transform(P), r, "n_neighbors_within"),
                               _column(t_a, ang, "n_neighbors_within"))


# --------------------------------------------------------------------------------------------
# neighbourhood descriptors
# --------------------------------------------------------------------------------------------
def test_psi6_hexagonal_vs_random():
    shape = (150, 150)
    hex_pts = _hex_points(shape, 14.0)
    rng = np.random.default_rng(1)
    rand_pts = []
    while len(rand_pts) < len(hex_pts):
        p = rng.uniform(6, 144, size=2)
        if all(np.hypot(*(p - q)) > 10 for q in rand_pts):
            rand_pts.append(p)
    P = np.concatenate([_maps_from_binary(_disks(shape, hex_pts, 3.5)),
                        _maps_from_binary(_disks(shape, np.array(rand_pts), 3.5))])
    desc = ContourDescriptor(exclude_border=False).set_output(transform="pandas")
    df = desc.fit_transform(P)
    interior = df[(df.row > 30) & (df.row < 120) & (df.col > 30) & (df.col < 120)]
    hex_psi = interior.loc[0, "psi6"]
    rand_psi = interior.loc[1, "psi6"]
    assert len(hex_psi) > 20 and len(rand_psi) > 20
    assert hex_psi.min() > 0.98
    assert rand_psi.mean() < 0.6
    n_within = interior.loc[0, "n_neighbors_within"]
    assert np.all(n_within == 6)
    assert interior.loc[0, "nn_distance_px"].to_numpy() == pytest.approx(14.0, abs=0.3)
    # 4-fold order is low on the hexagonal lattice, high on a square one
    sq = [(r, c) for r in np.arange(8, 150, 12.0) for c in np.arange(8, 150, 12.0)]
    P_sq = _maps_from_binary(_disks(shape, sq, 3.5))
    d4 = ContourDescriptor(order=4).set_output(transform="pandas")
    sq_df = d4.fit_transform(P_sq)
    sq_in = sq_df[(sq_df.row > 30) & (sq_df.row < 120) & (sq_df.col > 30) & (sq_df.col < 120)]
    assert sq_in["psi4"].min() > 0.98
    hex_df = d4.transform(P[:1])
    hex_in = hex_df[(hex_df.row > 30) & (hex_df.row < 120) & (hex_df.col > 30)
                    & (hex_df.col < 120)]
    assert hex_in["psi4"].max() < 0.8


def test_class_is_the_class_of_largest_probability_mass():
    shape = (60, 60)
    one = _ellipse(shape, (15, 15), 5, 5, 0)
    two = _ellipse(shape, (40, 42), 6, 4, 30)
    P = np.zeros((1, 3) + shape)
    P[0, 1][one], P[0, 2][one] = 0.7, 0.2
    P[0, 1][two], P[0, 2][two] = 0.3, 0.6
    P[0, 0] = 1 - P[0, 1] - P[0, 2]
    df = ContourDescriptor().set_output(transform="pandas").fit_transform(P)
    df = df.sort_values("row")
    assert df["class"].tolist() == [1.0, 2.0]


def test_intensity_statistics_from_images_or_probability():
    shape = (50, 50)
    mask = _ellipse(shape, (25, 25), 8, 5, 10)
    P = _maps_from_binary(mask, inside=0.9)
    image = np.random.default_rng(0).normal(100.0, 5.0, size=(1,) + shape)
    desc = ContourDescriptor().fit(P)
    with_img = desc.transform(P, images=image)
    values = image[0][mask]
    assert _column(with_img, desc, "intensity_mean")[0] == pytest.approx(values.mean())
    assert _column(with_img, desc, "intensity_max")[0] == pytest.approx(values.max())
    assert _column(with_img, desc, "intensity_min")[0] == pytest.approx(values.min())
    assert _column(with_img, desc, "intensity_std")[0] == pytest.approx(values.std(), rel=1e-6)
    # the tuple form (P, images) is the same as the keyword
    np.testing.assert_array_equal(desc.transform((P, image)), with_img)
    # without images: statistics of 1 - P[background]
    no_img = desc.transform(P)
    assert _column(no_img, desc, "intensity_mean")[0] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="given twice"):
        desc.transform((P, image), images=image)
    with pytest.raises(ValueError, match="images\\[0\\] has shape"):
        desc.transform(P, images=image[:, :40])


# --------------------------------------------------------------------------------------------
# output containers, list input, empty input
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mos2():
    images, masks, coords = make_lattice_images(2, "MoS2", shape=(96, 96), pixel_size=0.1,
                                                defects=None, random_state=3)
    return images, _maps_from_labels(masks, 3), coords


# --------------------------------------------------------------------------------------------
# one row per atom of PeakFinder, in its order (one blob rule: sklatom._blobs)
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pretrained_maps():
    from sklatom import load_pretrained

    X, _, _ = make_lattice_images(1, "MoS2", shape=(96, 96), random_state=0)
    return load_pretrained().transform(X)


@pytest.mark.parametrize("exclude_border", [False, True])
def test_rows_are_peak_finders_atoms_on_a_models_maps(pretrained_maps, exclude_border):
    # float32 maps of the pretrained model: row j is atom j of PeakFinder with the same
    # threshold (same position, class and order); dropping contours cut by the border is
    # PeakFinder's exclude_edges. (The 8-connected contours of before had other centres and
    # came in raster order of their first pixel.)
    P = pretrained_maps
    atoms = PeakFinder(exclude_edges=exclude_border).fit_transform(P)[0]
    table = ContourDescriptor(exclude_border=exclude_border).fit_transform(P)
    assert len(atoms) >= 15
    np.testing.assert_array_equal(table[:, :3], atoms)


def test_blobs_touching_at_a_corner_are_two_rows_as_they_are_two_atoms():
    # two 3 x 3 squares touching at a corner, and a third with a pixel exactly at the
    # threshold next to it: 3 atoms of 9 px each (8-connectivity and ">= threshold" made 2
    # contours, of 18 and 10 px)
    fg = np.full((20, 20), 0.05)
    fg[3:6, 3:6] = fg[6:9, 6:9] = fg[12:15, 12:15] = 0.9
    fg[15, 13] = 0.5
    P = _maps_from_fg(fg)
    desc = ContourDescriptor().fit(P)
    table = desc.transform(P)
    np.testing.assert_array_equal(table[:, :3], PeakFinder().fit_transform(P)[0])
    np.testing.assert_allclose(table[:, :3], [[4, 4, 1], [7, 7, 1], [13, 13, 1]], atol=1e-6)
    np.testing.assert_array_equal(_column(table, desc, "area_px2"), [9, 9, 9])


@pytest.mark.parametrize("threshold", [0.3, {2: 0.7}, [0.4, 0.6]])
def test_the_same_threshold_gives_the_same_atoms(mos2, threshold):
    images, P, _ = mos2
    desc = ContourDescriptor(threshold=threshold, exclude_border=False)
    table = desc.fit_transform(P, images=images)
    atoms = PeakFinder(threshold=threshold).fit_transform(P, images=images)
    assert len(table) >= 40
    np.testing.assert_array_equal(table[:, :3], np.concatenate(atoms))
    with pytest.raises(ValueError, match="threshold keys must be foreground class indices"):
        ContourDescriptor(threshold={3: 0.5}).fit(P)
    with pytest.raises(ValueError, match="one value per foreground class"):
        ContourDescriptor(threshold=[0.5]).fit(P)


def test_pandas_output_index_and_coordinates(mos2):
    images, P, coords = mos2
    desc = ContourDescriptor(pixel_size=0.1, order=3)
    arr = desc.fit_transform(P, images=images)
    df = clone(desc).set_output(transform="pandas").fit_transform((P, images))
    assert isinstance(df, pd.DataFrame)
    assert df.index.names == ["image", "atom"]
    assert list(df.columns) == list(desc.get_feature_names_out())
    assert {"row", "col", "class"} <= set(df.columns)
    np.testing.assert_array_equal(df.to_numpy(), arr)
    peaks = PeakFinder().transform(P)
    for i in range(2):
        sub = df.loc[i]
        # "atom" is the atom's index in PeakFinder's output: rows join its atoms although
        # the default exclude_border leaves the border contours out (gaps in the index)
        assert sub.index.is_monotonic_increasing and len(sub) < len(peaks[i])
        np.testing.assert_array_equal(sub[["row", "col", "class"]].to_numpy(),
                                      peaks[i][sub.index.to_numpy()])
        # every contour joins back to a true column of the same class within 0.5 px
        true = coords[i]
        d = np.hypot(sub.row.to_numpy()[:, None] - true[None, :, 0],
                     sub.col.to_numpy()[:, None] - true[None, :, 1])
        nearest = d.argmin(axis=1)
        assert d.min(axis=1).max() < 0.5
        np.testing.assert_array_equal(sub["class"].to_numpy(), true[nearest, 2])
    # the global configuration is honoured too, and "default" switches back
    with config_context(transform_output="pandas"):
        assert isinstance(clone(desc).fit_transform(P), pd.DataFrame)
    back = clone(desc).set_output(transform="pandas").set_output(transform="default")
    assert isinstance(back.fit_transform(P), np.ndarray)
    with pytest.raises(ValueError, match="transform must be one of"):
        desc.set_output(transform="polars")


def test_list_input_of_different_sizes():
    a = _maps_from_binary(_disks((60, 50), [(20, 20), (40, 30)], 5))[0]
    b = _maps_from_binary(_disks((40, 70), [(20, 15), (20, 35), (20, 55)], 4))[0]
    desc = ContourDescriptor(neighbor_radius=25.0).set_output(transform="pandas")
    df = desc.fit_transform([a, b])
    assert df.index.tolist() == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
    sep = clone(desc).fit(a[None])
    np.testing.assert_allclose(df.loc[1].to_numpy(), sep.transform(b[None]).to_numpy())
    assert df.loc[1, "nn_distance_px"].to_numpy() == pytest.approx([20.0, 20.0, 20.0], abs=0.1)
    assert df.loc[1, "n_neighbors_within"].tolist() == [1.0, 2.0, 1.0]


def test_empty_maps_give_an_empty_table():
    P = _maps_from_fg(np.full((32, 32), 0.1))
    desc = ContourDescriptor().fit(P)
    table = desc.transform(P)
    assert table.shape == (0, desc.n_features_out_)
    df = clone(desc).set_output(transform="pandas").fit_transform(P)
    assert df.shape == (0, desc.n_features_out_)
    assert list(df.columns) == list(desc.get_feature_names_out())
    assert df.index.names == ["image", "atom"]
    # an empty image next to a full one contributes no rows
    full = _maps_from_binary(_disks((32, 32), [(10, 10), (20, 22)], 3))
    both = desc.transform(np.concatenate([P, full]))
    assert both.shape == (2, desc.n_features_out_)


def test_single_contour_has_nan_neighbourhood():
    P = _maps_from_binary(_disks((32, 32), [(16, 16)], 4))
    desc = ContourDescriptor().fit(P)
    table = desc.transform(P)
    assert np.isnan(_column(table, desc, "nn_distance_px")[0])
    assert np.isnan(_column(table, desc, "psi6")[0])
    assert _column(table, desc, "n_neighbors_within")[0] == 0
    assert np.isfinite(_column(table, desc, "area_px2")[0])


def test_exclude_border():
    P = _maps_from_binary(_disks((40, 40), [(1, 20), (12, 20), (12, 34)], 3))
    assert len(ContourDescriptor().fit_transform(P)) == 2
    assert len(ContourDescriptor(exclude_border=False).fit_transform(P)) == 3
    assert len(ContourDescriptor(exclude_border=2).fit_transform(P)) == 1
    # the dropped contour still counts as a neighbour of the centre one
    d = ContourDescriptor()
    t = d.fit_transform(P)
    centre = np.argmin(np.abs(_column(t, d, "col") - 20))
    # (the truncated disk's centroid sits ~0.6 px inside the image: ~10.4 px; the kept one: 14)
    assert 9.5 < _column(t, d, "nn_distance_px")[centre] < 11.5


def test_include_coordinates_false():
    P = _maps_from_binary(_disks((40, 40), [(12, 12), (25, 28)], 3))
    with_c = ContourDescriptor().fit(P)
    without = ContourDescriptor(include_coordinates=False).fit(P)
    names = list(without.get_feature_names_out())
    assert "row" not in names and "class" not in names
    np.testing.assert_array_equal(without.transform(P), with_c.transform(P)[:, 3:])


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------
def test_bad_inputs():
    P = _maps_from_binary(_disks((32, 32), [(16, 16)], 4))
    desc = ContourDescriptor().fit(P)
    with pytest.raises(ValueError, match="sum to 1"):
        desc.transform(P * 0.8)
    with pytest.raises(ValueError, match="sum to 1"):
        ContourDescriptor().fit(P * 1.2)
    with pytest.raises(ValueError, match="4 dimensions"):
        desc.transform(P[0, 0])
    with pytest.raises(ValueError, match="single item"):
        desc.transform(P[0])
    bad = P.copy()
    bad[0, 0, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        desc.transform(bad)
    with pytest.raises(ValueError, match="at least 2 classes"):
        ContourDescriptor().fit(np.ones((1, 1, 8, 8)))
    three = np.concatenate([P, np.zeros_like(P[:, :1])], axis=1)
    with pytest.raises(ValueError, match="fitted on maps with 2 classes"):
        desc.transform(three)
    with pytest.raises(ValueError, match="same number of classes"):
        desc.transform([P[0], three[0]])
    with pytest.raises(TypeError, match="real numbers"):
        desc.transform(P.astype(complex))
    with pytest.raises(ValueError, match="threshold must be strictly between"):
        ContourDescriptor(threshold=1.5).fit(P)
    with pytest.raises(TypeError, match="threshold"):
        ContourDescriptor(threshold="0.5").fit(P)
    with pytest.raises(ValueError, match="pixel_size"):
        ContourDescriptor(pixel_size=-1.0).fit(P)
    with pytest.raises(ValueError, match="order must be an integer"):
        ContourDescriptor(order=0).fit(P)
    with pytest.raises(ValueError, match="neighbor_radius"):
        ContourDescriptor(neighbor_radius=-2).fit(P)
    with pytest.raises(ValueError, match="exclude_border"):
        ContourDescriptor(exclude_border=-1).fit(P)
    with pytest.raises(ValueError, match="changed since fit"):
        clone(desc).fit(P).set_params(pixel_size=0.1).transform(P)


# --------------------------------------------------------------------------------------------
# scikit-learn contract
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("check", [
    check_get_params_invariance,
    check_set_params,
    check_estimator_cloneable,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_mixin_order,
])
def test_sklearn_data_free_checks(check):
    check("ContourDescriptor", ContourDescriptor())


def test_sklearn_contract():
    est = ContourDescriptor(threshold=0.4, pixel_size=0.2, order=4)
    cloned = clone(est)
    assert cloned.get_params() == est.get_params()
    assert cloned.set_params(order=3) is cloned and cloned.order == 3 and est.order == 4
    tags = est.__sklearn_tags__()
    assert not tags.input_tags.two_d_array and tags.input_tags.three_d_array
    P = _maps_from_binary(_disks((32, 32), [(10, 10), (20, 22)], 3))
    with pytest.raises(NotFittedError):
        est.transform(P)
    with pytest.raises(NotFittedError):
        est.get_feature_names_out()
    assert est.fit(P) is est
    assert est.n_classes_ == 2
    assert len(est.get_feature_names_out()) == est.n_features_out_ == est.transform(P).shape[1]


# --------------------------------------------------------------------------------------------
# pipeline: descriptors -> scaler -> outlier detector recovers planted anomalies
# --------------------------------------------------------------------------------------------
def _plant_anomalies(masks, coords, n_per_image, rng, margin=25):
    """Replace some columns' disks by elongated or enlarged shapes; return their (image, r, c)."""
    masks = masks.copy()
    planted = []
    h, w = masks.shape[1:]
    for i, (mask, cols) in enumerate(zip(masks, coords)):
        ok = np.flatnonzero((cols[:, 0] > margin) & (cols[:, 0] < h - margin)
                            & (cols[:, 1] > margin) & (cols[:, 1] < w - margin))
        chosen = []
        for j in rng.permutation(ok):
            if all(np.hypot(*(cols[j, :2] - cols[k, :2])) > 40 for k in chosen):
                chosen.append(j)
            if len(chosen) == n_per_image:
                break
        for n, j in enumerate(chosen):
            r, c, cls = cols[j]
            mask[_ellipse((h, w), (r, c), 6.0, 6.0, 0)] = 0
            if n % 2 == 0:  # elongated column
                shape = _ellipse((h, w), (r, c), 8.0, 3.0, rng.uniform(-90, 90))
            else:  # enlarged column
                shape = _ellipse((h, w), (r, c), 8.0, 8.0, 0)
            mask[shape] = int(cls)
            planted.append((i, r, c))
    return masks, planted


def test_pipeline_isolation_forest_finds_planted_anomalies():
    rng = np.random.default_rng(0)
    images, masks, coords = make_lattice_images(3, "MoS2", shape=(160, 160), pixel_size=0.1,
                                                defects=None, random_state=5)
    masks, planted = _plant_anomalies(masks, coords, 3, rng)
    P = _maps_from_labels(masks, 3)
    pipe = make_pipeline(ContourDescriptor(pixel_size=0.1, order=3, include_coordinates=False),
                         StandardScaler(), IsolationForest(n_estimators=200, random_state=0))
    pipe.fit(P)
    scores = pipe.score_samples(P)  # low = anomalous
    where = ContourDescriptor(pixel_size=0.1).set_output(transform="pandas").fit_transform(P)
    assert len(where) == len(scores)
    is_planted = np.zeros(len(where), dtype=bool)
    img_idx = where.index.get_level_values("image").to_numpy()
    for i, r, c in planted:
        d = np.hypot(where.row.to_numpy() - r, where.col.to_numpy() - c)
        d[img_idx != i] = np.inf
        assert d.min() < 1.0
        is_planted[d.argmin()] = True
    k = len(planted)
    top = np.argsort(scores)[:k]
    recall = is_planted[top].sum() / k
    assert recall >= 0.8, f"recall of planted anomalies among the top {k}: {recall:.2f}"


def test_pandas_through_a_pipeline_and_pickle(tmp_path):
    import joblib

    P = _maps_from_binary(_disks((60, 60), _hex_points((60, 60), 12.0, (8, 8)), 3.0))
    pipe = make_pipeline(ContourDescriptor(include_coordinates=False, pixel_size=0.2),
                         StandardScaler()).set_output(transform="pandas")
    out = pipe.fit_transform(P)
    assert isinstance(out, pd.DataFrame)
    assert out.index.names == ["image", "atom"]
    assert list(out.columns) == list(pipe.get_feature_names_out())
    assert "area_A2" in out.columns and "row" not in out.columns
    path = tmp_path / "pipe.joblib"
    joblib.dump(pipe, path)
    np.testing.assert_array_equal(joblib.load(path).transform(P).to_numpy(), out.to_numpy())


def test_n_jobs_gives_the_same_table():
    P = np.concatenate([_maps_from_binary(_disks((40, 40), [(10, 10), (25, 28)], 3)),
                        _maps_from_binary(_disks((40, 40), [(15, 12), (30, 20), (12, 30)], 4))])
    serial = ContourDescriptor().fit_transform(P)
    parallel = ContourDescriptor(n_jobs=2).fit_transform(P)
    np.testing.assert_array_equal(serial, parallel)
