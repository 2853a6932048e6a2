"""Tests of the blob kernel (sklatom._blobs.find_blobs) on tiny hand-made maps with exact answers,
and of the label image of PeakFinder's final atoms built on it."""

import numpy as np
import pytest

from sklatom._blobs import find_blobs
from sklatom.peaks import PeakFinder, _find_peaks_checked

T = np.array([np.nan, 0.5])  # one foreground class, threshold 0.5


def maps(fg, *classes):
    """(n_classes, H, W) maps from a foreground probability and, optionally, the foreground
    classes' share of it (one array per class, summing to fg); one class if none are given."""
    fg = np.asarray(fg, dtype=np.float64)
    parts = [np.asarray(c, dtype=np.float64) for c in classes] or [fg]
    return np.stack([1.0 - fg, *parts])


def test_pixels_touching_at_a_corner_are_two_blobs():
    fg = np.array([[0.9, 0.0, 0.0],
                   [0.0, 0.9, 0.0],
                   [0.0, 0.0, 0.0]])
    blobs = find_blobs(maps(fg), T)
    assert len(blobs) == 2
    np.testing.assert_array_equal(blobs.labels, [[1, 0, 0], [0, 2, 0], [0, 0, 0]])
    np.testing.assert_array_equal(blobs.centre, [[0.0, 0.0], [1.0, 1.0]])
    np.testing.assert_array_equal(blobs.area, [1, 1])
    np.testing.assert_array_equal(blobs.border, [True, False])


def test_a_flat_2x2_plateau_is_one_blob_centred_between_its_pixels():
    fg = np.zeros((5, 5))
    fg[1:3, 2:4] = 0.75
    blobs = find_blobs(maps(fg), T)
    assert len(blobs) == 1
    np.testing.assert_array_equal(blobs.centre, [[1.5, 2.5]])
    np.testing.assert_array_equal(blobs.area, [4])
    np.testing.assert_array_equal(blobs.peak, [0.75])
    np.testing.assert_array_equal(blobs.border, [False])
    np.testing.assert_array_equal(blobs.labels, (fg > 0).astype(int))
    corner = find_blobs(maps(np.pad(np.full((2, 2), 0.75), ((0, 3), (0, 3)))), T)
    np.testing.assert_array_equal(corner.centre, [[0.5, 0.5]])
    assert corner.border.tolist() == [True]


def test_the_threshold_is_strict():
    fg = np.array([[0.0, 0.5, 0.0, 0.5000001, 0.0]])
    blobs = find_blobs(maps(fg), T)
    np.testing.assert_array_equal(blobs.labels, [[0, 0, 0, 1, 0]])


def test_centre_weighted_by_foreground_minus_threshold():
    # weights 0.875 - 0.5 and 0.625 - 0.5: 3 to 1, so the centre is a quarter pixel from the
    # first (weights 1 - P[0] would put it at 0.625 / 1.5 = 0.4167)
    fg = np.array([[0.0, 0.875, 0.625, 0.0]])
    blobs = find_blobs(maps(fg), T)
    np.testing.assert_array_equal(blobs.centre, [[0.0, 1.25]])
    np.testing.assert_array_equal(blobs.peak, [0.875])


def test_class_by_weighted_mass_keeps_a_mixed_blob_whole():
    # a core of class 2 between two rim pixels of class 1: one blob, of class 2 (weighted mass
    # 0.3125 against 0.171875), although class 1 has the larger mean probability (0.375 > 1/3)
    fg = np.array([[0.625, 0.875, 0.625]])
    one = np.array([[0.5, 0.125, 0.5]])
    blobs = find_blobs(maps(fg, one, fg - one), np.array([np.nan, 0.5, 0.5]))
    assert len(blobs) == 1
    np.testing.assert_array_equal(blobs.klass, [2.0])
    np.testing.assert_array_equal(blobs.centre, [[0.0, 1.0]])


def test_per_class_thresholds_follow_the_most_probable_class():
    # both pixels have fg 0.6: the class-1 pixel is below its threshold 0.7, the class-2 pixel
    # above its threshold 0.5
    fg = np.array([[0.6, 0.0, 0.6]])
    one = np.array([[0.6, 0.0, 0.0]])
    blobs = find_blobs(maps(fg, one, fg - one), np.array([np.nan, 0.7, 0.5]))
    np.testing.assert_array_equal(blobs.labels, [[0, 0, 1]])
    np.testing.assert_array_equal(blobs.klass, [2.0])


def test_min_area_drops_small_blobs_and_renumbers_the_rest():
    fg = np.array([[0.9, 0.0, 0.9, 0.9],
                   [0.0, 0.0, 0.0, 0.0],
                   [0.9, 0.9, 0.0, 0.9]])
    blobs = find_blobs(maps(fg), T, min_area=2)
    np.testing.assert_array_equal(blobs.labels, [[0, 0, 1, 1], [0, 0, 0, 0], [2, 2, 0, 0]])
    np.testing.assert_array_equal(blobs.centre, [[0.0, 2.5], [2.0, 0.5]])
    np.testing.assert_array_equal(blobs.area, [2, 2])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nothing_above_the_threshold_gives_no_blobs(dtype):
    blobs = find_blobs(maps(np.full((3, 4), 0.2)).astype(dtype), T)
    assert len(blobs) == 0
    assert blobs.centre.shape == (0, 2)
    assert blobs.klass.shape == blobs.peak.shape == blobs.area.shape == blobs.border.shape == (0,)
    np.testing.assert_array_equal(blobs.labels, np.zeros((3, 4)))


# --------------------------------------------------------------------------------------------
# the label image of PeakFinder's final atoms
# --------------------------------------------------------------------------------------------
def _atoms_and_labels(P, **params):
    finder = PeakFinder(**params)
    return _find_peaks_checked(P, None, *finder._map_args(len(P)), return_labels=True)


# four blobs: one on the border (row 0), two 2 px apart, one alone
FG = np.zeros((6, 8))
FG[0, 1] = FG[2, 4] = FG[2, 6] = FG[4, 1] = 0.75


def test_labels_number_the_atoms_in_their_sorted_order():
    coords, _, labels = _atoms_and_labels(maps(FG))
    np.testing.assert_array_equal(coords[:, :2], [[0, 1], [2, 4], [2, 6], [4, 1]])
    expected = np.zeros((6, 8), int)
    expected[0, 1], expected[2, 4], expected[2, 6], expected[4, 1] = 1, 2, 3, 4
    np.testing.assert_array_equal(labels, expected)


def test_labels_follow_merged_and_dropped_atoms():
    coords, _, labels = _atoms_and_labels(maps(FG), merge_distance=2.5, exclude_edges=True)
    # the border atom is dropped, the two close ones are merged into one at row 2, col 5
    np.testing.assert_array_equal(coords, [[2, 5, 1], [4, 1, 1]])
    expected = np.zeros((6, 8), int)
    expected[2, 4] = expected[2, 6] = 1
    expected[4, 1] = 2
    np.testing.assert_array_equal(labels, expected)


def test_labels_exist_for_components_only():
    with pytest.raises(ValueError, match="method='components' only"):
        _atoms_and_labels(maps(FG), method="maxima")
