"""Tests of sklatom.metrics against hand-computed cases and inside scikit-learn model selection."""

import warnings

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from sklatom._validation import SklatomWarning
from sklatom.metrics import (
    atom_report,
    atom_scores,
    make_atom_scorer,
    mask_to_coordinates,
    match_atoms,
)
from sklatom.peaks import PeakFinder


def greedy_match(pred, true, tol):
    """Closest-pair-first matching, the baseline that optimal matching must beat."""
    d = cdist(pred[:, :2], true[:, :2])
    pairs = sorted((d[i, j], i, j) for i in range(len(pred)) for j in range(len(true))
                   if d[i, j] <= tol)
    used_p, used_t, out = set(), set(), []
    for dist, i, j in pairs:
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
            out.append((i, j))
    return out


def test_hand_computed_scores():
    true = np.array([[10.0, 10.0, 1], [10.0, 20.0, 1], [20.0, 10.0, 2]])
    pred = np.array([[10.0, 10.6, 1], [30.0, 30.0, 1]])  # one 0.6 px off, one far away
    s = atom_scores(pred, true, tolerance=1.0)
    assert s["n_pred"] == 2 and s["n_true"] == 3 and s["n_matched"] == 1
    assert s["precision"] == pytest.approx(0.5)
    assert s["recall"] == pytest.approx(1 / 3)
    assert s["f1"] == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))  # 0.4
    assert s["f1"] == pytest.approx(0.4)
    assert s["rmse"] == pytest.approx(0.6)
    assert s["class_accuracy"] == 1.0
    # with a tolerance below 0.6 px nothing matches
    s = atom_scores(pred, true, tolerance=0.5)
    assert s["n_matched"] == 0 and s["f1"] == 0.0 and np.isnan(s["rmse"])


def test_optimal_matching_beats_greedy():
    true = np.array([[0.0, 0.0], [0.0, 0.9]])
    pred = np.array([[0.0, 0.1], [0.0, -0.9]])
    assert len(greedy_match(pred, true, 1.0)) == 1
    m = match_atoms(pred, true, tolerance=1.0)
    assert list(zip(m.pred_index, m.true_index)) == [(0, 1), (1, 0)]
    np.testing.assert_allclose(m.distance, [0.8, 0.9])
    assert atom_scores(pred, true, tolerance=1.0)["f1"] == 1.0


def test_matching_is_optimal_against_dense_assignment():
    rng = np.random.default_rng(0)
    pred = rng.uniform(0, 6, (40, 2))
    true = rng.uniform(0, 6, (35, 2))
    tol = 0.8
    m = match_atoms(pred, true, tolerance=tol)
    assert len(set(m.pred_index)) == len(m.pred_index)
    assert len(set(m.true_index)) == len(m.true_index)
    assert np.all(m.distance <= tol)
    np.testing.assert_allclose(m.distance,
                               np.hypot(*(pred[m.pred_index] - true[m.true_index]).T))
    # reference: one dense assignment with a prohibitive cost for pairs beyond the tolerance
    d = cdist(pred, true)
    big = 1e6
    r, c = linear_sum_assignment(np.where(d <= tol, d, big))
    ok = d[r, c] <= tol
    assert len(m.pred_index) == ok.sum()
    assert m.distance.sum() == pytest.approx(d[r, c][ok].sum())


def test_many_to_one_keeps_the_closer():
    true = np.array([[5.0, 5.0, 1]])
    pred = np.array([[5.0, 5.5, 1], [5.0, 5.2, 1]])
    m = match_atoms(pred, true, tolerance=1.0)
    assert list(m.pred_index) == [1] and list(m.true_index) == [0]
    assert atom_scores(pred, true)["precision"] == 0.5


def test_per_class_matching_and_class_accuracy():
    true = np.array([[0.0, 0.0, 1], [10.0, 0.0, 2]])
    pred = np.array([[0.1, 0.0, 2], [10.0, 0.2, 2]])
    s = atom_scores(pred, true)
    assert s["n_matched"] == 2 and s["class_accuracy"] == 0.5
    s = atom_scores(pred, true, per_class=True)
    assert s["n_matched"] == 1 and s["precision"] == 0.5 and s["class_accuracy"] == 1.0
    # class-aware matching reaches a farther same-class atom instead of the closer other one
    pred = np.array([[0.0, 0.3, 1], [0.0, 0.0, 2]])
    true = np.array([[0.0, 0.0, 1], [0.0, 0.4, 2]])
    m = match_atoms(pred, true, tolerance=1.0, per_class=True)
    assert list(zip(m.pred_index, m.true_index)) == [(0, 0), (1, 1)]
    with pytest.raises(ValueError, match="per_class=True needs a class column"):
        match_atoms(pred[:, :2], true, per_class=True)


def test_pixel_size_converts_tolerance_and_rmse_to_angstrom():
    true = np.array([[10.0, 10.0, 1]])
    pred = np.array([[10.0, 12.0, 1]])  # 2 px = 1 Å at 0.5 Å/px
    assert atom_scores(pred, true, tolerance=1.0)["n_matched"] == 0  # 2 px > 1 px
    s = atom_scores(pred, true, tolerance=1.2, pixel_size=0.5)
    assert s["n_matched"] == 1 and s["rmse"] == pytest.approx(1.0)
    assert atom_scores(pred, true, tolerance=0.8, pixel_size=0.5)["n_matched"] == 0
    assert match_atoms(pred, true, 1.2, pixel_size=0.5).distance[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="pixel_size must be between"):
        atom_scores(pred, true, pixel_size=-1.0)


def test_lists_aggregate_counts_and_rmse():
    true = [np.array([[0.0, 0.0, 1], [5.0, 5.0, 1]]), np.array([[3.0, 3.0, 1]])]
    pred = [np.array([[0.0, 0.3, 1]]), np.array([[3.4, 3.0, 1], [9.0, 9.0, 1]])]
    s = atom_scores(pred, true)
    assert (s["n_pred"], s["n_true"], s["n_matched"]) == (3, 3, 2)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert s["rmse"] == pytest.approx(np.sqrt((0.3**2 + 0.4**2) / 2))
    obj = np.empty(2, dtype=object)
    obj[:] = pred
    assert atom_scores(obj, true) == s
    with pytest.raises(ValueError, match="pred holds 2 images but true holds 1"):
        atom_scores(pred, true[:1])
    with pytest.raises(TypeError, match="both be one"):
        atom_scores(pred[0], true)


def test_empty_cases_are_defined_and_warn():
    empty = np.zeros((0, 3))
    some = np.array([[1.0, 1.0, 1]])
    with pytest.warns(SklatomWarning, match="ill-defined"):
        s = atom_scores(empty, empty)
    assert (s["precision"], s["recall"], s["f1"]) == (1.0, 1.0, 1.0)
    assert np.isnan(s["rmse"]) and s["n_matched"] == 0
    with pytest.warns(SklatomWarning, match="precision is ill-defined"):
        s = atom_scores(empty, some)
    assert (s["precision"], s["recall"], s["f1"]) == (1.0, 0.0, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = atom_scores(empty, some, zero_division=0.0)
    assert (s["precision"], s["recall"], s["f1"]) == (0.0, 0.0, 0.0)
    s = atom_scores(some, empty, zero_division=1.0)
    assert (s["precision"], s["recall"], s["f1"]) == (0.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="zero_division must be"):
        atom_scores(some, some, zero_division=0.5)


def test_bad_coordinates_and_tolerance():
    with pytest.raises(ValueError, match=r"pred must have shape \(k, 2\) or \(k, 3\)"):
        match_atoms(np.zeros((3, 4)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="true contains NaN"):
        match_atoms(np.zeros((3, 3)), np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="tolerance must be a positive number"):
        match_atoms(np.zeros((3, 3)), np.zeros((2, 3)), tolerance=0)


def test_large_matching_is_fast_and_complete():
    rng = np.random.default_rng(1)
    g = np.arange(0, 3000, 10.0)
    true = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)[:50_000]
    pred = true + rng.normal(0, 0.2, true.shape)
    m = match_atoms(pred, true, tolerance=2.0)
    assert len(m.pred_index) == len(true)
    np.testing.assert_array_equal(m.pred_index, m.true_index)


def test_mask_to_coordinates():
    mask = np.zeros((10, 12), int)
    mask[1:4, 1:4] = 1  # centroid (2, 2)
    mask[1:3, 4:6] = 2  # touches the class-1 square but is another class: (1.5, 4.5)
    mask[7, 8:11] = 1  # (7, 9)
    mask[8, 11] = 1  # diagonal to the last: separate with 4-connectivity
    coords = mask_to_coordinates(mask)
    expected = np.array([[2.0, 2.0, 1], [7.0, 9.0, 1], [8.0, 11.0, 1], [1.5, 4.5, 2]])
    np.testing.assert_allclose(coords, expected)
    assert len(mask_to_coordinates(mask, connectivity=2)) == 3
    batch = mask_to_coordinates(np.stack([mask, np.zeros_like(mask)]))
    assert len(batch) == 2 and batch[1].shape == (0, 3)
    np.testing.assert_allclose(batch[0], expected)
    assert mask_to_coordinates(mask.astype(float)).shape == (4, 3)
    with pytest.raises(ValueError, match="integer class labels"):
        mask_to_coordinates(mask + 0.5)
    with pytest.raises(ValueError, match="mask must have shape"):
        mask_to_coordinates(np.zeros(5, int))


def test_atom_report_lists_classes():
    true = np.array([[10.0, 10.0, 1], [10.0, 20.0, 1], [20.0, 10.0, 2]])
    pred = np.array([[10.0, 10.0, 1], [10.0, 20.0, 2], [20.0, 10.0, 2]])
    text = atom_report(pred, true, pixel_size=0.1, class_names=["bg", "C", "Si"])
    lines = text.splitlines()
    assert "rmse (Å)" in lines[0]
    assert lines[1].split()[:4] == ["C", "1.000", "0.500", "0.667"]
    assert lines[2].split()[:4] == ["Si", "0.500", "1.000", "0.667"]
    assert lines[3].split()[:4] == ["all", "1.000", "1.000", "1.000"]
    assert text.endswith("class accuracy of matched atoms: 0.667")


# ---------------------------------------------------------------------------------------------
# scorers in model selection
# ---------------------------------------------------------------------------------------------
def _render(shape, pos, amps, sigma=2.0):
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    img = np.zeros(shape)
    for (r, c), a in zip(pos, amps):
        img += a * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * sigma**2))
    return img


def images_to_maps(X):
    fg = np.clip(np.asarray(X), 0.0, 0.999)
    return np.stack([1.0 - fg, fg], axis=1)


@pytest.fixture(scope="module")
def dataset():
    """6 images 40x40 with bright (0.9) and dim (0.35) atoms; masks and coordinate lists."""
    rng = np.random.default_rng(7)
    g = np.arange(8.0, 36.0, 11.0)
    base = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    X, masks, coords = [], [], np.empty(6, dtype=object)
    rr, cc = np.mgrid[:40, :40]
    for i in range(6):
        pos = base + rng.uniform(-0.5, 0.5, base.shape)
        amps = np.where(rng.random(len(pos)) < 0.4, 0.35, 0.9)
        X.append(_render((40, 40), pos, amps))
        m = np.zeros((40, 40), int)
        for r, c in pos:
            m[(rr - r) ** 2 + (cc - c) ** 2 <= 2.0] = 1
        masks.append(m)
        coords[i] = np.column_stack([pos, np.ones(len(pos))])
    return np.array(X), np.array(masks), coords


def make_pipe():
    return Pipeline([("maps", FunctionTransformer(images_to_maps)), ("peaks", PeakFinder())])


@pytest.mark.parametrize("target", ["masks", "coords"])
def test_grid_search_picks_the_threshold_that_keeps_dim_atoms(dataset, target):
    X, masks, coords = dataset
    y = masks if target == "masks" else coords
    search = GridSearchCV(make_pipe(), {"peaks__threshold": [0.2, 0.5, 0.95]},
                          scoring=make_atom_scorer(), cv=KFold(3))
    search.fit(X, y)
    assert search.best_params_ == {"peaks__threshold": 0.2}
    scores = search.cv_results_["mean_test_score"]
    assert scores[0] > 0.99
    assert scores[1] < 0.9 and scores[2] < scores[1]  # dim atoms lost at 0.5, all at 0.95


def test_cross_val_score_and_rmse_sign(dataset):
    X, masks, coords = dataset
    f1 = cross_val_score(make_pipe().set_params(peaks__threshold=0.2), X, coords,
                         scoring=make_atom_scorer(), cv=3)
    assert f1.shape == (3,) and np.all(f1 > 0.99)
    neg_rmse = cross_val_score(make_pipe().set_params(peaks__threshold=0.2), X, coords,
                               scoring=make_atom_scorer("rmse", tolerance=0.2, pixel_size=0.1),
                               cv=3)
    assert np.all(neg_rmse < 0) and np.all(neg_rmse > -0.05)  # within 0.05 Å
    rec = cross_val_score(make_pipe().set_params(peaks__threshold=0.8), X, masks,
                          scoring=make_atom_scorer("recall"), cv=2)
    assert np.all(rec < 0.7)
    with pytest.raises(ValueError, match="metric must be one of"):
        make_atom_scorer("accuracy")


def test_ignore_border_leaves_out_atoms_cut_by_the_image_edge():
    true = np.array([[1.0, 50.0, 1], [50.0, 50.0, 1], [50.0, 98.8, 1]])
    # a half-visible column just outside the top edge is "found" at row 0.6; one near the
    # right edge is missed
    pred = np.array([[0.6, 20.0, 1], [50.2, 50.0, 1], [1.2, 50.0, 1]])
    plain = atom_scores(pred, true, tolerance=1.0)
    assert plain["precision"] == pytest.approx(2 / 3) and plain["recall"] == pytest.approx(2 / 3)
    # 0.3 Å at 0.1 Å/px = 3 px: only the interior atoms count
    s = atom_scores(pred, true, tolerance=0.1, pixel_size=0.1, ignore_border=0.3,
                    image_shape=(100, 100))
    assert s["n_true"] == 1 and s["n_pred"] == 1 and s["f1"] == 1.0
    # the band is a "don't care" zone: an atom found just across its inner edge from its true
    # position is a match, whichever side of the edge each lies (filtering first would call
    # one a miss and the other a false detection)
    true = np.array([[50.0, 3.6, 1], [50.0, 30.0, 1], [2.0, 60.0, 1]])
    pred = np.array([[50.0, 2.3, 1], [50.0, 30.0, 1], [4.0, 60.0, 1]])
    s = atom_scores(pred, true, tolerance=0.2, pixel_size=0.1, ignore_border=0.3,
                    image_shape=(100, 100))
    assert (s["n_true"], s["n_pred"], s["n_matched"], s["f1"]) == (2, 2, 2, 1.0)
    assert s["rmse"] == pytest.approx(np.sqrt(0.13 ** 2 / 2))
    # outside the band a miss and a false detection still count
    s = atom_scores(pred[:2], true[1:], tolerance=0.2, pixel_size=0.1, ignore_border=0.3,
                    image_shape=(100, 100))
    assert (s["n_true"], s["n_pred"], s["n_matched"]) == (1, 1, 1)
    # with a 1 px tolerance nothing matches: the true atom inside is a miss, the detection
    # inside a false one, the two in the band do not count
    s = atom_scores(pred[[0, 2]], true[[0, 2]], ignore_border=3, image_shape=(100, 100))
    assert (s["n_true"], s["n_pred"], s["n_matched"]) == (1, 1, 0)
    with pytest.raises(ValueError, match="needs image_shape"):
        atom_scores(pred, true, ignore_border=3)
    with pytest.raises(ValueError, match="ignore_border must be"):
        atom_scores(pred, true, ignore_border=-1, image_shape=(100, 100))
    with pytest.raises(ValueError, match="image_shape must be"):
        atom_scores([pred, pred], [true, true], ignore_border=3, image_shape=[(1, 2, 3)])


def test_dont_care_atoms_absorb_unmatched_predictions_only():
    true = np.array([[10.0, 10.0], [10.0, 20.0]])
    doubt = np.array([[30.0, 30.0]])
    pred = np.array([[10.1, 10.0], [30.2, 30.0], [50.0, 50.0]])
    plain = atom_scores(pred, true, tolerance=1.0)
    cared = atom_scores(pred, true, tolerance=1.0, dont_care=doubt)
    assert plain["n_pred"] == 3 and cared["n_pred"] == 2  # the one at (30, 30) is left out
    assert cared["precision"] == 0.5 and cared["recall"] == 0.5
    # a prediction matched to a true atom stays, even next to a don't-care atom
    both = atom_scores(np.array([[10.0, 10.2]]), true, tolerance=1.0,
                       dont_care=np.array([[10.0, 10.5]]))
    assert both["n_matched"] == 1 and both["n_pred"] == 1
    # batches: one don't-care array per image
    batch = atom_scores([pred, pred], [true, true], tolerance=1.0, dont_care=[doubt, doubt[:0]])
    assert batch["n_pred"] == 5
    with pytest.raises(ValueError, match="dont_care holds 1 images"):
        atom_scores([pred, pred], [true, true], tolerance=1.0, dont_care=[doubt])


def test_masks_with_dont_care_pixels_give_only_the_atoms():
    mask = np.zeros((10, 10), int)
    mask[1:3, 1:3] = 1
    mask[6:8, 6:8] = -1
    np.testing.assert_array_equal(mask_to_coordinates(mask), [[1.5, 1.5, 1.0]])
    with pytest.raises(ValueError, match="negative"):
        mask_to_coordinates(mask - 2)


def test_detection_outcomes_count_as_atom_scores_does():
    # the per-atom view must leave out exactly what the scores leave out (don't-care atoms,
    # the edge band) and call right exactly the matched atoms
    from sklatom.metrics import detection_outcomes

    rng = np.random.default_rng(3)
    true = rng.uniform(0, 40, (30, 2))
    pred = np.concatenate([true[:24] + rng.normal(0, 0.3, (24, 2)), rng.uniform(0, 40, (8, 2))])
    dont_care = np.concatenate([true[24:27], pred[-3:] + 0.2])
    kw = dict(tolerance=0.8, pixel_size=0.5, ignore_border=0.5, image_shape=(40, 40))
    outcome, index = detection_outcomes(pred, true, dont_care=dont_care, **kw)
    s = atom_scores([pred], [true], dont_care=[dont_care], **kw)
    assert np.sum(outcome == 1) == s["n_matched"]
    assert np.sum(outcome >= 0) == s["n_pred"]
    assert np.sum(outcome == -1) >= 3  # the three predictions next to don't-care atoms
    assert np.all(index[outcome == 1] >= 0) and np.all(index[outcome == 0] == -1)


def test_sites_filled_counts_empty_sites_with_a_found_atom():
    from sklatom.metrics import sites_filled

    sites = np.array([[10.0, 10.0], [40.0, 40.0], [70.0, 10.0]])
    assert sites_filled([np.zeros((0, 3))], [sites]) == (0, 3)
    # 0.07 Å off at 0.1 Å/px is on the site; 1 Å off is not
    assert sites_filled([sites + 0.5], [sites], pixel_size=0.1) == (3, 3)
    assert sites_filled([sites + 10.0], [sites], pixel_size=0.1) == (0, 3)
    # px without a pixel size; summed over images; class columns ignored
    found = np.array([[10.0, 11.0, 1.0]])
    assert sites_filled([found, found], [sites, sites[:1]], tolerance=2.0) == (2, 4)
    with pytest.raises(ValueError, match="tolerance"):
        sites_filled([found], [sites], tolerance=0)
