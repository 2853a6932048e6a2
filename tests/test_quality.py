"""Parts of an image that cannot show atoms (sklatom.quality) and what the segmenter does there."""

import numpy as np
import pytest

from sklatom.quality import ImageQualityWarning, check_image


def _noise(shape=(128, 128), lam=50.0, seed=0):
    return np.random.default_rng(seed).poisson(lam, shape).astype(np.float32)


def test_saturated_clipped_and_blanked_regions_are_found_and_named():
    image = _noise()
    image[:40, :40] = image.max() + 1          # saturated patch
    image[100:, :] = 0.0                       # blanked band (zero padding)
    q = check_image(image, pixel_size=0.1, name="X[0]")
    assert q.usable
    assert q.dead[:40, :40].all() and q.dead[100:].all()
    assert q.dead[50:95, 50:].sum() == 0
    text = " ".join(q.problems)
    assert "saturated (at the image maximum" in text and "clipped at the image minimum (0)" in text
    assert "10 %" in text and "22 %" in text  # 1600 and 3584 of 16384 pixels


def test_a_single_saturated_pixel_or_an_atom_top_is_not_a_region():
    image = _noise(seed=1)
    image[64, 64] = image.max() + 10
    image[10:13, 10:13] = image.max()          # a 3 x 3 clipped atom top
    q = check_image(image, pixel_size=0.1)
    assert not q.dead.any() and q.problems == []


def test_the_ragged_fringe_of_a_patch_is_part_of_it():
    image = _noise(seed=2)
    full = image.max() + 1
    image[:40, :40] = full                     # the patch
    image[44, 20:22] = full                    # an island 0.4 Å off its edge (its fringe)
    image[41, 30] = full                       # a tendril pixel touching its rim diagonally
    image[100, 100] = full                     # a lone clipped atom top far away
    q = check_image(image, pixel_size=0.1)
    assert q.dead[44, 20:22].all() and q.dead[41, 30]
    assert not q.dead[100, 100] and not q.dead[60:, 60:].any()


@pytest.mark.parametrize("image, match", [
    (np.full((64, 64), 7.0), "constant"),
    (np.zeros((64, 64)), "constant"),
    (5 + 1e-7 * np.random.default_rng(0).standard_normal((64, 64)), "nearly constant"),
    (np.random.default_rng(0).random((3, 2048)), "too small to show an atom"),
    (np.random.default_rng(0).random((2, 2)), "too small to show an atom"),
])
def test_images_without_usable_structure(image, match):
    q = check_image(image.astype(np.float32), pixel_size=0.1, name="X[0]")
    assert not q.usable and q.dead.all()
    assert match in q.problems[0] and q.problems[0].startswith("X[0]")


def test_the_region_size_follows_the_pixel_size():
    image = _noise()
    image[:6, :6] = image.max() + 1  # 36 px: 0.36 Å² at 0.1 Å/px, 9 Å² at 0.5 Å/px
    assert not check_image(image, pixel_size=0.1).dead.any()
    assert check_image(image, pixel_size=0.5).dead[:6, :6].all()


def test_the_segmenter_reports_nothing_in_dead_regions_and_warns():
    from sklatom import PeakFinder, load_pretrained
    from sklatom.datasets import make_lattice_images
    from sklatom.pretrained import GENERAL_LABELS

    X, _, coords = make_lattice_images(1, "MoS2", shape=(128, 128), labels=GENERAL_LABELS,
                                       random_state=0)
    image = X[0].copy()
    image[:, :64] = image.max()  # the left half saturated
    seg = load_pretrained()
    with pytest.warns(ImageQualityWarning, match="50 % of the pixels are saturated"):
        P = seg.transform(image[np.newaxis])
    found = PeakFinder().transform(P)[0]
    assert len(found) > 20 and found[:, 1].min() > 63
    assert np.allclose(P[0, 0, :, :64], 1.0)


@pytest.mark.parametrize("image", [np.full((96, 96), 3.0), np.zeros((96, 96)),
                                   np.full((96, 96), 65535.0)])
def test_constant_and_saturated_images_give_no_atoms(image):
    from sklatom import PeakFinder, load_pretrained

    with pytest.warns(ImageQualityWarning, match="constant"):
        P = load_pretrained().transform(image[np.newaxis].astype(np.float32))
    assert len(PeakFinder().transform(P)[0]) == 0


def test_the_warnings_have_one_home_and_one_base():
    import warnings

    import sklatom.exceptions as exceptions
    from sklatom import quality
    from sklatom._validation import SklatomWarning

    assert quality.ImageQualityWarning is exceptions.ImageQualityWarning
    assert SklatomWarning is exceptions.SklatomWarning
    # a filter on sklatom's warnings applies to the quality ones too
    from sklatom import load_pretrained

    with warnings.catch_warnings():
        warnings.simplefilter("error", exceptions.SklatomWarning)
        with pytest.raises(exceptions.ImageQualityWarning, match="constant"):
            load_pretrained().transform(np.zeros((1, 64, 64), np.float32))


@pytest.mark.parametrize("gain", [1.0, 1e4])
def test_the_zeros_of_a_low_dose_image_are_shot_noise_not_clipping(gain):
    # MoS2 at 2e4 e/Å² (80 kV HAADF, 0.1 Å/px): 70 % of the pixels hold 0 counts, in
    # plateaus between the columns; marking them dead cut every column's blob into pieces
    # and the pretrained model reported 4x the atoms (F1 0.38-0.42 instead of 1.0)
    from sklatom.datasets import make_lattice_images
    from sklatom.simulation import AcquisitionModel, MultisliceSimulator

    sim = MultisliceSimulator(method="incoherent", energy=80e3, pixel_size=0.1, progress=False)
    X, _, _ = make_lattice_images(1, "MoS2", shape=(160, 160), pixel_size=0.1, simulator=sim,
                                  acquisition=AcquisitionModel(dose=2e4), random_state=1)
    image = X[0] * gain  # counts, or a detector's units of 1e4 per count
    assert np.mean(image == 0) > 0.5
    q = check_image(image, pixel_size=0.1)
    assert not q.dead.any() and q.problems == []
    # a zero-padded band in it is still found (its inside: no count within reach)
    image[120:] = 0.0
    q = check_image(image, pixel_size=0.1, name="X[0]")
    assert q.dead[135:].all() and not q.dead[:110].any()
    assert "clipped at the image minimum (0)" in q.problems[0]


def test_at_the_lowest_doses_an_empty_disk_must_be_unlikely_before_it_is_dead():
    # graphene at 5e3 e/Å² (80 kV HAADF): 0.008 counts per pixel, so a 1 Å disk holds no
    # count by chance over a tenth of the lattice; those pixels were dead and their atoms lost
    from sklatom.datasets import make_lattice_images
    from sklatom.quality import EMPTY_DISK_COUNTS
    from sklatom.simulation import AcquisitionModel, MultisliceSimulator

    sim = MultisliceSimulator(method="incoherent", energy=80e3, pixel_size=0.1,
                              detector=(80, 200), progress=False)
    X, _, _ = make_lattice_images(1, "graphene", shape=(192, 192), pixel_size=0.1,
                                  simulator=sim, acquisition=AcquisitionModel(dose=5e3),
                                  random_state=0)
    image = X[0]
    assert image.mean() < 0.02
    assert not check_image(image, pixel_size=0.1).dead.any()
    # a blank band is still found, beyond the reach a disk needs to expect its counts
    image[96:] = 0.0
    q = check_image(image, pixel_size=0.1)
    reach = np.sqrt(EMPTY_DISK_COUNTS / (np.pi * image.mean()))
    assert q.dead[int(96 + reach) + 1:].all() and not q.dead[:96].any()
