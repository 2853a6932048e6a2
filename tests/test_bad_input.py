"""Bad input, estimator by estimator: every case gives an error or a warning, never a silent
wrong answer (issue 18).

Like scikit-learn's ``check_estimator``, but for image input: one section per estimator, one
test per kind of bad input, each asserting what the message says (the argument, what was given,
what is expected). Meant to grow: every new case of bad input found in the wild gets its test
here.
"""

import re

import numpy as np
import pytest

from sklatom import ContourDescriptor, FCNSegmenter, PeakFinder
from sklatom.cli import main
from sklatom.graphs import FEATURE_NAMES, GraphDefectClassifier
from sklatom.datasets import make_lattice_images
from sklatom.io import read_image
from sklatom.simulation import MultisliceSimulator
from sklatom.structures import make_structure, project_columns
from sklatom._validation import SklatomWarning


def blob_maps(shape=(32, 32), centre=(16.0, 16.0), sigma=2.5):
    """Probability maps (1, 2, H, W) of one atom of class 1: a Gaussian blob."""
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    fg = 0.95 * np.exp(-((rr - centre[0]) ** 2 + (cc - centre[1]) ** 2) / (2 * sigma**2))
    return np.stack([1 - fg, fg])[np.newaxis]


# --------------------------------------------------------------------------------------------
# probability maps: PeakFinder, ContourDescriptor
# --------------------------------------------------------------------------------------------
MAP_ESTIMATORS = [PeakFinder, ContourDescriptor]


@pytest.mark.parametrize("Estimator", MAP_ESTIMATORS)
@pytest.mark.parametrize("background, atom", [(2.0, -1.0), (-1.0, 2.0)])
def test_maps_outside_0_1_that_sum_to_1_are_refused(Estimator, background, atom):
    # values that sum to 1 but are not probabilities (logits, differences of maps) gave an
    # empty or one-atom result
    P = np.empty((1, 2, 32, 32))
    P[0, 0], P[0, 1] = background, atom
    with pytest.raises(ValueError, match=r"P\[0\] holds values between -1 and 2 \(in class"
                                         r"\(es\) \[0, 1\]\).*must lie in \[0, 1\].*softmax"):
        Estimator().fit_transform(P)


@pytest.mark.parametrize("Estimator", MAP_ESTIMATORS)
def test_maps_within_the_tolerance_of_0_1_are_accepted(Estimator):
    P = blob_maps()
    P[0, 1, 0, 0] += 5e-4  # float32 softmax rounding
    P[0, 0, 0, 0] -= 5e-4
    P[0, 1, 0, 1], P[0, 0, 0, 1] = -5e-4, 1 + 5e-4
    Estimator().fit_transform(P)


@pytest.mark.parametrize("Estimator", MAP_ESTIMATORS)
@pytest.mark.parametrize("X, what", [
    (np.zeros((64, 64)), r"P has shape \(64, 64\): it looks like a single image"),
    (np.zeros((64, 64, 64)), r"P has shape \(64, 64, 64\): it looks like a stack of 64 images"),
    (np.random.default_rng(0).random((3, 32, 32)), "it looks like a stack of 3 images"),
    ([np.zeros((32, 32))], r"P\[0\] has shape \(32, 32\): it looks like a single image"),
])
def test_raw_images_are_told_that_maps_from_a_segmenter_are_expected(Estimator, X, what):
    with pytest.raises(ValueError, match=what + r", not probability maps\. P must have 4 "
                       r"dimensions \(n_images, n_classes, height, width\): the softmax "
                       r"probabilities of a segmenter"):
        Estimator().fit(X)


@pytest.mark.parametrize("Estimator", MAP_ESTIMATORS)
def test_the_maps_of_one_image_are_still_told_to_add_an_axis(Estimator):
    with pytest.raises(ValueError, match=r"single item.*Use P\[np.newaxis\]"):
        Estimator().fit(blob_maps()[0])


@pytest.mark.parametrize("Estimator", MAP_ESTIMATORS)
def test_ragged_nested_maps_name_the_problem(Estimator):
    ragged = [[[[0.5, 0.5], [0.5]], [[0.5, 0.5], [0.5]]]]  # one map whose rows differ
    with pytest.raises(ValueError, match=r"P\[0\] is a ragged nested list: its rows or images "
                                         r"differ in shape.*list of 3-D arrays of shape "
                                         r"\(n_classes, height, width\), one per image"):
        Estimator().fit(ragged)


# --------------------------------------------------------------------------------------------
# images: FCNSegmenter (the checks are shared by every estimator that takes images)
# --------------------------------------------------------------------------------------------
def test_ragged_nested_images_name_the_problem():
    X = [[[0.0, 1.0, 2.0], [3.0, 4.0]]]
    with pytest.raises(ValueError, match=r"X\[0\] is a ragged nested list: its rows or images "
                                         r"differ in shape.*list of 2-D arrays of shape "
                                         r"\(height, width\), one per image"):
        FCNSegmenter().fit(X, [np.zeros((2, 3), int)])


@pytest.mark.parametrize("X", [np.full((1, 16, 16), 1e39), [np.full((16, 16), -1e39)]])
def test_finite_values_that_overflow_float32_are_not_called_nan(X):
    with pytest.raises(ValueError, match=r"X\[0\] holds finite values up to 1e\+39 that "
                                         r"overflow float32 \(largest 3.4e\+38\).*rescale"):
        FCNSegmenter().fit(X, np.zeros((1, 16, 16), int))


def test_nan_is_still_called_nan():
    X = np.zeros((1, 16, 16))
    X[0, 3, 3] = np.nan
    with pytest.raises(ValueError, match=r"X\[0\] contains NaN or infinite values"):
        FCNSegmenter().fit(X, np.zeros((1, 16, 16), int))


TINY = dict(module__depth=2, module__base_filters=8, patch_size=32, patches_per_epoch=8,
            batch_size=8, max_epochs=1, validation_fraction=None, verbose=0, random_state=0)


def blob_image_and_mask(size=32):
    rr, cc = np.mgrid[:size, :size]
    d2 = (rr - size / 2) ** 2 + (cc - size / 2) ** 2
    return np.exp(-d2 / 8.0)[np.newaxis], (d2 <= 9).astype(np.int64)[np.newaxis]


@pytest.mark.parametrize("case, message", [
    ("stray", r"y holds labels 1, 1000 \(largest 1000, in y\[0\], 1 px\): with classes=None "
              r"every label value 0\.\.1000 is a class, and 998 of the values 1\.\.1000 never "
              r"occur, so the model would have 1001 classes\. Pass classes="),
    ("relabelled", r"y holds labels 3 \(largest 3, in y\[0\], 29 px\).* 2 of the values "
                   r"1\.\.3 never occur, so the model would have 4 classes"),
])
def test_labels_that_skip_most_values_need_classes(case, message):
    # one stray label 1000 trained a 1001-class model
    X, y = blob_image_and_mask()
    if case == "stray":
        y[0, 0, 0] = 1000
    else:
        y[y == 1] = 3
    with pytest.raises(ValueError, match=message + r".*or fix the masks"):
        FCNSegmenter(**TINY).fit(X, y)


def test_more_than_255_labels_need_classes():
    X, _ = blob_image_and_mask()
    y = np.arange(32 * 32).reshape(1, 32, 32) % 301  # every label 0..300 occurs
    with pytest.raises(ValueError, match=r"largest 300.*0 of the values 1\.\.300 never "
                                         r"occur, so the model would have 301 classes"):
        FCNSegmenter(**TINY).fit(X, y)


@pytest.mark.usefixtures("one_torch_thread")
def test_labels_that_skip_a_few_values_still_train():
    X, y = blob_image_and_mask()
    y[y == 1] = 2  # label 1 absent: half of 1..2
    seg = FCNSegmenter(**TINY).fit(X, y)
    assert seg.classes_ == ["background", "class_1", "class_2"]


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("labels", ["zeros", "zeros_and_ignored"])
def test_masks_without_foreground_warn(labels):
    X, y = blob_image_and_mask()
    y = np.zeros_like(y) if labels == "zeros" else -y  # the atom becomes don't care
    with pytest.warns(SklatomWarning, match=r"y holds no foreground: every label is 0 "
                                            r"\(background\) or -1 \(ignored\), so the model "
                                            r"will learn to find nothing"):
        FCNSegmenter(**TINY).fit(X, y)


# --------------------------------------------------------------------------------------------
# files: read_image and the command line
# --------------------------------------------------------------------------------------------
def test_a_file_with_values_beyond_float32_is_refused_not_filled(tmp_path):
    # the cast made them inf, which were "NaN or infinite" pixels set to the median
    image = np.random.default_rng(0).random((16, 16))
    image[2, 2] = 1e39
    np.save(tmp_path / "big.npy", image)
    with pytest.raises(ValueError, match=r"big.npy: 1 of 256 pixels hold finite values \(up "
                                         r"to 1e\+39\) beyond the float32 range.*rescale"):
        read_image(tmp_path / "big.npy")


def test_the_cli_names_its_frame_option(tmp_path, capsys):
    X, _, _ = make_lattice_images(2, "graphene", shape=(64, 64), pixel_size=0.1,
                                  random_state=0)
    np.save(tmp_path / "stack.npy", X)
    with pytest.warns(SklatomWarning, match=r"holds 2 frames.*with frame=\.\.\."):
        read_image(tmp_path / "stack.npy")
    code = main(["find-atoms", str(tmp_path / "stack.npy"), "--output", str(tmp_path / "out"),
                 "--pixel-size", "0.1", "--quiet"])
    assert code == 0
    err = capsys.readouterr().err
    assert "holds 2 frames" in err and "Choose another with --frame N (N in 0..1)" in err
    assert "frame=" not in err


STRUCTURELESS = {
    "tiny": (np.random.default_rng(0).random((2, 2)), "is 2 x 2 px, too small to show an atom"),
    "strip": (np.random.default_rng(0).random((3, 2048)), "is 3 x 2048 px, too small"),
    "flat": (np.full((96, 96), 3.0), r"is constant \(every pixel 3\)"),
    "faint": (5 + 1e-7 * np.random.default_rng(0).standard_normal((96, 96)),
              "is nearly constant"),
}


@pytest.mark.parametrize("name", sorted(STRUCTURELESS))
def test_images_without_structure_give_no_atoms_in_a_pipeline(name):
    from sklearn.pipeline import make_pipeline

    from sklatom import load_pretrained
    from sklatom.quality import ImageQualityWarning

    image, message = STRUCTURELESS[name]
    pipe = make_pipeline(load_pretrained().set_params(pixel_size=0.1), PeakFinder())
    with pytest.warns(ImageQualityWarning, match=message):
        (found,) = pipe.transform(image[np.newaxis])
    assert len(found) == 0


@pytest.mark.parametrize("noise", ["uniform", "normal"])
def test_noise_without_a_specimen_gives_no_atoms(noise):
    # the case: uniform noise gave 87 atoms without a warning (the model of then)
    from sklatom import AtomFinder

    image = getattr(np.random.default_rng(3), noise)(size=(1, 256, 256))
    (found,), _ = AtomFinder(pixel_size=0.1).fit().find(image)
    assert len(found) == 0


def test_images_without_structure_give_no_atoms_and_defects_in_the_cli(tmp_path, capsys):
    import pandas as pd

    paths = []
    for name, (image, _) in sorted(STRUCTURELESS.items()):
        paths.append(str(tmp_path / f"{name}.npy"))
        np.save(paths[-1], image)
    code = main(["find-atoms", *paths, "--output", str(tmp_path / "out"), "--pixel-size", "0.1",
                 "--defects", "--quiet"])
    assert code == 0
    err = capsys.readouterr().err
    for name, (_, message) in STRUCTURELESS.items():
        # the warning names the file, not the API's X[0]
        assert re.search(re.escape(f"{tmp_path / name}.npy ") + message, err)
        assert len(pd.read_csv(tmp_path / "out" / f"{name}_atoms.csv")) == 0
        assert len(pd.read_csv(tmp_path / "out" / f"{name}_defects.csv")) == 0
    assert "X[0]" not in err


# --------------------------------------------------------------------------------------------
# atom coordinates: GraphDefectClassifier
# --------------------------------------------------------------------------------------------
PS = 0.1  # Å/px


@pytest.fixture(scope="module")
def graphene():
    """Columns of a 30 Å graphene sheet with one vacancy, at PS Å/px (300 x 300 px)."""
    atoms = make_structure("graphene", (30.0, 30.0), defects={"vacancy": 1}, strain=(0, 0, 0),
                           random_state=0)
    return project_columns(atoms, PS)


def test_a_doubled_coordinate_list_learns_the_lattice_not_zero_bonds(graphene):
    # fitting on a doubled list learned a C-C bond of 0.0 Å and called everything lattice
    c = graphene.coordinates
    doubled = np.vstack([c, c])
    with pytest.warns(SklatomWarning, match=rf"X holds coincident atoms, closer than 0\.2 Å to "
                                            rf"another.*X\[0\]: {2 * len(c)} atoms in {len(c)} "
                                            rf"group\(s\) at \(row, col\) \(.*the {len(c)} "
                                            rf"other\(s\) are left out of learning and of the "
                                            rf"graph \(not counted as interstitials\)"):
        clf = GraphDefectClassifier(species=graphene.classes, pixel_size=PS).fit([doubled])
    assert clf.bond_lengths_[("C", "C")] == pytest.approx(1.42, abs=0.02)
    assert clf.coordination_["C"] == 3
    with pytest.warns(SklatomWarning, match="coincident"):
        labels = clf.predict([doubled])[0]
    assert sorted(set(labels)) == ["V1", "lattice"]
    assert list(labels[:len(c)]) == list(labels[len(c):])  # a copy takes its atom's label


def test_duplicated_atoms_are_not_interstitials(graphene):
    c = graphene.coordinates
    clf = GraphDefectClassifier(species=graphene.classes, pixel_size=PS).fit([c])
    mid = np.argmin(np.hypot(c[:, 0] - 150, c[:, 1] - 150))
    X = [np.vstack([c, c[mid] + [0.5, 0.5, 0.0]])]  # 0.07 Å from an atom
    with pytest.warns(SklatomWarning, match=rf"X\[0\]: 2 atoms in 1 group\(s\) at \(row, "
                                            rf"col\) \({c[mid, 0]:.1f}, {c[mid, 1]:.1f}\) px"):
        labels = clf.predict(X)[0]
    assert labels[-1] == labels[mid] == "lattice"
    with pytest.warns(SklatomWarning, match="coincident"):
        found = clf.find_defects(X)
    assert list(found["name"]) == ["V1"]
    with pytest.warns(SklatomWarning, match="coincident"):
        features = clf.transform(X)
    np.testing.assert_array_equal(features[-1], features[mid])
    assert features[-1, FEATURE_NAMES.index("interstitial")] == 0
    with pytest.warns(SklatomWarning, match="coincident"):
        (bonds,) = clf.bonds(X)
    assert len(c) not in bonds and np.sum(bonds == mid) == 3


def test_many_atoms_at_one_point_are_one_atom():
    # 30 atoms at one point learned coordination 29
    X = [np.tile([[10.0, 10.0, 1.0]], (30, 1))]
    with pytest.warns(SklatomWarning) as record:
        clf = GraphDefectClassifier(species=["C"], pixel_size=PS).fit(X)
    messages = " ".join(str(w.message) for w in record)
    assert "X[0]: 30 atoms in 1 group(s) at (row, col) (10.0, 10.0) px" in messages
    assert "the 29 other(s) are left out" in messages
    assert clf.coordination_.get("C", 0) != 29 and clf.learned_pairs_ == []


@pytest.mark.parametrize("wrong, learned", [(1.0, "14.2"), (0.02, "0.284")])
def test_a_wrong_pixel_size_warns_with_the_learned_and_expected_bond(graphene, wrong, learned):
    # pixel_size=1.0 on 0.1 Å/px coordinates learned a C-C bond of 14.2 Å without a word
    with pytest.warns(SklatomWarning, match=rf"fit learned bond lengths that no bond of these "
                                            rf"species has, at pixel_size={wrong:g} Å/px: C-C "
                                            rf"{learned} Å \(plausible 0\.76-1\.98 Å\) \(the "
                                            rf"sum of the covalent radii times 0\.5-1\.3\)\. "
                                            rf"The pixel size is probably wrong: about 0\.1"):
        GraphDefectClassifier(species=graphene.classes, pixel_size=wrong).fit(
            [graphene.coordinates])


@pytest.mark.parametrize("lattice", ["graphene", "hBN", "MoS2", "SrTiO3-001"])
def test_right_pixel_sizes_and_generic_species_do_not_warn(lattice):
    import warnings

    cols = project_columns(make_structure(lattice, (20.0, 20.0), random_state=1), PS)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SklatomWarning)
        GraphDefectClassifier(species=cols.classes, pixel_size=PS).fit([cols.coordinates])
        # without species names there is no covalent radius to compare with
        GraphDefectClassifier(pixel_size=1.0).fit([cols.coordinates])


@pytest.mark.parametrize("atom, ranges", [
    ([-500.0, 10.0, 1.0], r"rows -500\.\.12\d\S* and cols \S+\.\.12\d\S*"),
    ([10.0, 1e6, 1.0], r"rows \S+\.\.12\d\S* and cols \S+\.\.1e\+06"),
])
def test_atoms_outside_image_shape_are_an_error(graphene, atom, ranges):
    # they were accepted and produced vacancies
    c = graphene.coordinates
    c = c[(c[:, 0] < 127) & (c[:, 1] < 127)]
    X = [np.vstack([c, atom])]
    clf = GraphDefectClassifier(species=graphene.classes, pixel_size=PS, image_shape=(128, 128))
    with pytest.raises(ValueError, match=rf"X\[0\] has 1 of {len(c) + 1} atoms outside "
                                         rf"image_shape=\(128, 128\): {ranges} px, expected "
                                         rf"rows -0\.5\.\.127\.5 and cols -0\.5\.\.127\.5 px "
                                         rf"\(within 1 px\)"):
        clf.fit(X)
    clf.fit([c])
    with pytest.raises(ValueError, match="outside image_shape"):
        clf.predict(X)


def test_atoms_within_a_pixel_of_the_border_are_accepted(graphene):
    c = graphene.coordinates
    c = c[(c[:, 0] < 127) & (c[:, 1] < 127)]
    X = [np.vstack([c, [[-1.4, 5.0, 1.0], [128.4, 127.0, 1.0]]])]
    clf = GraphDefectClassifier(species=graphene.classes, pixel_size=PS, image_shape=(128, 128))
    assert len(clf.fit(X).predict(X)[0]) == len(c) + 2


# --------------------------------------------------------------------------------------------
# structures: MultisliceSimulator
# --------------------------------------------------------------------------------------------
def small_graphene():
    return make_structure("graphene", (5.0, 5.0), defects=None, random_state=0)


def test_a_nan_atom_position_is_refused():
    # a comparison with NaN is False: the atom passed the outside-the-cell check and the
    # simulation gave a normal-looking image
    atoms = small_graphene()
    atoms.positions[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"X\[1\] has 1 atom\(s\) with NaN or infinite "
                                         r"positions \(first: atom 3, atomic number 6, at "
                                         r"\[.*nan.*\] Å\); positions must be finite"):
        MultisliceSimulator(progress=False).transform([small_graphene(), atoms])


@pytest.mark.parametrize("z", [0, 119])
def test_an_atomic_number_outside_1_118_is_refused_up_front(z):
    # Z = 0 failed inside abTEM after seconds ("... does not exist for element X")
    atoms = small_graphene()
    atoms.numbers[5] = z
    with pytest.raises(ValueError, match=rf"X\[0\] has 1 atom\(s\) with an atomic number "
                                         rf"outside 1\.\.118 \(first: atom 5, atomic number "
                                         rf"{z}, at \[.*\] Å\); expected elements H \(1\) to "
                                         rf"Og \(118\)"):
        MultisliceSimulator(progress=False).transform([atoms])
