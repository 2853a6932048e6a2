"""Uncertainty with the shipped model: the test-time-augmentation ensemble, calibrated
per-atom columns, the out-of-distribution score and the ranking for labelling."""

import json
import warnings

import numpy as np
import pytest

from sklatom._inference import dihedral
from sklatom.datasets import make_lattice_images, make_scene_images
from sklatom.exceptions import OutOfDistributionWarning
from sklatom.finder import AtomFinder
from sklatom.pretrained import GENERAL_LABELS, load_pretrained
from sklatom.simulation import AcquisitionModel, MultisliceSimulator
from sklatom.uncertainty import (OOD_THRESHOLD, Calibration, _model_file, calibration_path,
                                 load_calibration, rank_for_labelling, weights_fingerprint)


@pytest.fixture(scope="module")
def seg():
    return load_pretrained(device="cpu")


@pytest.fixture(scope="module")
def finder():
    return AtomFinder(uncertainty=True, device="cpu").fit()


def lattice(name, dose, seed=0, shape=(128, 128)):
    X, _, c = make_lattice_images(1, name, shape=shape, pixel_size=0.1, labels=GENERAL_LABELS,
                                  acquisition=AcquisitionModel(dose=dose, blur=0.15),
                                  random_state=seed)
    return X, c


def scene(kind, seed=0):
    X, _, _ = make_scene_images(
        1, kind, shape=(128, 128), pixel_size=0.2,
        simulator=MultisliceSimulator(method="incoherent", progress=False),
        acquisition=AcquisitionModel(dose=1e6, blur=0.15, background=0.2),
        random_state=seed)
    return X


def analyse_quietly(finder, X, pixel_size=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OutOfDistributionWarning)
        return finder.analyse(X, pixel_size)


# --------------------------------------------------------------------------------------------
# the ensemble
# --------------------------------------------------------------------------------------------
def test_dihedral_elements_are_distinct_and_inverted_exactly():
    a = np.arange(12.0).reshape(3, 4)
    seen = set()
    for k in range(8):
        t = dihedral(a, k)
        seen.add((t.shape, t.tobytes()))
        np.testing.assert_array_equal(dihedral(t, k, inverse=True), a)
    assert len(seen) == 8
    np.testing.assert_array_equal(dihedral(a, 5), np.rot90(a))
    np.testing.assert_array_equal(dihedral(a, 6), np.rot90(a, -1))


def test_member_0_is_the_single_path_bit_for_bit(seg):
    X, _ = lattice("MoS2", 5e6, shape=(96, 120))
    single = seg.predict_proba(X)
    members = seg._ensemble_items(X, 8)[0]
    assert members.shape == (8,) + single.shape[1:]
    np.testing.assert_array_equal(members[0], single[0])
    mean, std = seg.predict_proba_ensemble(X, n_transforms=1)
    np.testing.assert_array_equal(mean, single)
    assert not std.any()
    # the members' mean is a probability map
    mean, std = seg.predict_proba_ensemble(X)
    np.testing.assert_allclose(mean.sum(axis=1), 1, atol=1e-5)
    assert std.shape == mean.shape and std.min() >= 0


@pytest.mark.parametrize("k", [1, 5])
def test_the_ensemble_mean_is_equivariant(seg, k):
    # 128 px: a multiple of the network's 16 px, so no padding breaks the symmetry
    X, _ = lattice("MoS2", 5e6, seed=1)
    mean = seg.predict_proba_ensemble(X)[0]
    turned = seg.predict_proba_ensemble(np.ascontiguousarray(dihedral(X, k)))[0]
    np.testing.assert_allclose(turned, dihedral(mean, k), atol=2e-5)
    # ... which the single network is not
    single = seg.predict_proba(X)
    single_turned = seg.predict_proba(np.ascontiguousarray(dihedral(X, k)))
    assert np.abs(single_turned - dihedral(single, k)).max() > 1e-3


def test_spread_is_small_on_easy_images_and_larger_on_hard_ones(seg, finder):
    easy, _ = lattice("MoS2", 5e7, seed=2)
    hard, _ = lattice("MoS2", 3e4, seed=2)
    # the members agree on nearly every pixel of a clean image (measured: 0.013 on average,
    # spread only at the blobs' edges)
    assert float(seg.predict_proba_ensemble(easy)[1][0, 0].mean()) < 0.03
    # they disagree more on where the atoms of a noisy image are (measured: median sigma
    # 0.018 Å at 5e7 e/Å², 0.029 Å at 3e4 with the shipped model)
    sigma = [finder.analyse(X)[0].atoms["sigma_A"].median() for X in (easy, hard)]
    assert sigma[1] > 1.3 * sigma[0]


def test_ensemble_size_is_checked(seg):
    X, _ = lattice("MoS2", 5e6, shape=(32, 32))
    with pytest.raises(ValueError, match=r"n_transforms must be one of \(1, 2, 4, 8\)"):
        seg.predict_proba_ensemble(X, n_transforms=3)


# --------------------------------------------------------------------------------------------
# per-atom columns
# --------------------------------------------------------------------------------------------
def test_atom_finder_uncertainty_columns_and_the_single_path(finder):
    X, coords = lattice("MoS2", 5e6, seed=3)
    result = finder.analyse(X)[0]
    atoms = result.atoms
    assert list(atoms.columns) == ["row", "col", "class", "class_name", "x_A", "y_A",
                                   "confidence", "existence", "class_probability", "sigma_A"]
    assert atoms["existence"].between(0, 1).all()
    assert atoms["class_probability"].between(0, 1).all()
    assert (atoms["sigma_A"] > 0).all()
    # a clean lattice: the atoms exist, sigma is a few hundredths of an Å
    inner = (atoms["row"].between(5, 122) & atoms["col"].between(5, 122))
    assert atoms.loc[inner, "existence"].min() > 0.9
    assert atoms.loc[inner, "sigma_A"].median() < 0.1
    u = result.uncertainty
    assert u.n_transforms == 8 and u.spread.shape == X.shape[1:]
    assert u.ood_score < OOD_THRESHOLD and not u.out_of_distribution
    # without uncertainty: the atoms of one prediction, as before
    plain = AtomFinder(device="cpu").fit()
    c0, p0 = plain.find(X)
    maps = plain.segmenter_.transform(X)
    c1, p1 = plain.peaks_.transform(maps, images=X, return_confidence=True)
    np.testing.assert_array_equal(c0[0], c1[0])
    np.testing.assert_array_equal(p0[0], p1[0])
    assert plain.analyse(X)[0].uncertainty is None
    assert "existence" not in plain.tables(X)[0]
    assert "sigma_A" in finder.tables(X)[0]


@pytest.mark.parametrize("counts", [1, 10, 100, 1000])
def test_flat_noise_has_no_atom_that_exists(finder, counts):
    x = np.random.default_rng(counts).poisson(counts, (1, 160, 160)).astype(np.float32)
    atoms = analyse_quietly(finder, x)[0].atoms
    assert not (atoms["existence"] >= 0.5).any()


def test_vacuum_has_no_atom_that_exists(finder):
    atoms = analyse_quietly(finder, scene("vacuum"), 0.2)[0].atoms
    assert not (atoms["existence"] >= 0.5).any()


# --------------------------------------------------------------------------------------------
# the out-of-distribution score
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["MoS2", "graphene"])
def test_training_like_images_score_low(finder, name):
    X, _ = lattice(name, 5e6, seed=4, shape=(192, 192))
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfDistributionWarning)
        u = finder.analyse(X)[0].uncertainty
    assert u.ood_score < 0.7 * OOD_THRESHOLD


@pytest.mark.parametrize("what", ["noise", "amorphous"])
def test_flat_noise_and_amorphous_support_score_high(finder, what):
    if what == "noise":
        X, ps = np.random.default_rng(5).poisson(20, (1, 192, 192)).astype(np.float32), 0.1
    else:
        X, ps = scene("amorphous", seed=5), 0.2
    with pytest.warns(OutOfDistributionWarning, match="out-of-distribution score"):
        u = finder.analyse(X, ps)[0].uncertainty
    assert u.ood_score > OOD_THRESHOLD and u.out_of_distribution


# --------------------------------------------------------------------------------------------
# the calibration file
# --------------------------------------------------------------------------------------------
def shipped_calibration_file():
    return calibration_path(_model_file("general"))


def test_calibration_round_trip(tmp_path, seg):
    cal = load_calibration(shipped_calibration_file(), seg)
    path = tmp_path / "m.calibration.json"
    path.write_text(cal.to_json())
    again = load_calibration(path, seg)
    assert again.to_json() == cal.to_json()
    f = np.array([[3.0, 1.0, 0.01, -3.0, -0.5, -1.0, np.log(0.1)]])
    assert again.existence_probability(f) == cal.existence_probability(f)
    assert again.sigma_A(f) == cal.sigma_A(f)
    assert cal.model_fingerprint == weights_fingerprint(seg)
    # it is the one AtomFinder(calibration="auto") finds for the model's file
    assert isinstance(AtomFinder(uncertainty=True).fit().calibration_, Calibration)


def test_missing_and_corrupt_calibrations_are_named(tmp_path, seg):
    with pytest.raises(FileNotFoundError, match="no uncertainty calibration.*calibrate_unc"):
        load_calibration(tmp_path / "none.calibration.json")
    bad = tmp_path / "bad.calibration.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not a valid calibration file .not JSON"):
        load_calibration(bad)
    doc = json.loads(open(shipped_calibration_file()).read())
    del doc["sigma"]
    bad.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="missing field 'sigma'"):
        load_calibration(bad)
    doc = json.loads(open(shipped_calibration_file()).read())
    doc["existence"]["coef"] = doc["existence"]["coef"][:2]
    bad.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="existence needs 7 coefficients"):
        load_calibration(bad)
    doc = json.loads(open(shipped_calibration_file()).read())
    doc["model_fingerprint"] = "0" * 64
    bad.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="made for another model"):
        load_calibration(bad, seg)


def test_a_model_without_calibration_says_so(tmp_path, seg):
    path = seg.save(tmp_path / "copy.safetensors")
    with pytest.raises(FileNotFoundError, match="this model has none"):
        AtomFinder(path, uncertainty=True).fit()
    with pytest.raises(ValueError, match="needs calibration="):
        AtomFinder(seg, uncertainty=True).fit()
    # the calibration of the same weights, given explicitly, is accepted
    finder = AtomFinder(seg, uncertainty=True, calibration=shipped_calibration_file()).fit()
    assert finder.calibration_.n_transforms == 8
    with pytest.raises(ValueError, match="uncertainty must be True or False"):
        AtomFinder(uncertainty="yes").fit()
    with pytest.raises(TypeError, match="calibration must be 'auto'"):
        AtomFinder(seg, uncertainty=True, calibration=3).fit()


# --------------------------------------------------------------------------------------------
# where to label next
# --------------------------------------------------------------------------------------------
def test_rank_for_labelling_puts_hard_images_and_regions_first(finder):
    easy, _ = lattice("graphene", 5e7, seed=6)
    hard, _ = lattice("graphene", 2e5, seed=6)
    analyses = analyse_quietly(finder, np.concatenate([easy, hard]))
    ranking = rank_for_labelling(analyses)
    assert list(ranking["image"]) == [1, 0]
    assert ranking["expected_errors"].iloc[0] > 3 * ranking["expected_errors"].iloc[1]
    # regions: the half of an image recorded at a low dose comes first
    mixed = easy.copy()
    mixed[0, :, 64:] = hard[0, :, 64:] * easy[0].mean() / hard[0].mean()
    regions = rank_for_labelling(analyse_quietly(finder, mixed), region_size=64)
    assert len(regions) == 4
    assert regions["col_start"].iloc[0] == 64
    by_half = regions.groupby("col_start")["expected_errors"].sum()
    assert by_half[64] > 1.3 * by_half[0]  # measured: 0.25 against 0.16
    assert regions[["row_stop", "col_stop"]].to_numpy().max() == 128


def test_rank_for_labelling_needs_the_uncertainty():
    X, _ = lattice("graphene", 5e6, shape=(48, 48))
    plain = AtomFinder(device="cpu").fit().analyse(X)
    with pytest.raises(ValueError, match=r"analyses\[0\] has no uncertainty"):
        rank_for_labelling(plain)
    with pytest.raises(ValueError, match="region_size must be None or a positive"):
        rank_for_labelling(plain, region_size=0)
