"""Tests of the shipped pretrained model on fresh simulated images (seeds not used in training)."""

import numpy as np
import pytest

from sklatom.datasets import make_lattice_images
from sklatom.metrics import atom_scores
from sklatom.peaks import PeakFinder
from sklatom.pretrained import GENERAL_LABELS, PRETRAINED, load_pretrained
from sklatom.simulation import AcquisitionModel, MultisliceSimulator
from sklatom.structures import LATTICES

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def general():
    return load_pretrained()


def recorded(lattice, pixel_size, seed, shape=(160, 160), dose=5e6):
    X, _, coords = make_lattice_images(
        2, lattice, shape=shape, pixel_size=pixel_size, labels=GENERAL_LABELS,
        simulator=MultisliceSimulator(method="incoherent", progress=False),
        acquisition=AcquisitionModel(dose=dose, pixel_size=pixel_size, blur=0.15,
                                     random_state=seed),
        random_state=seed)
    return X, coords


def scores(seg, X, coords, pixel_size):
    found = PeakFinder().transform(seg.transform(X))
    return atom_scores(found, coords, tolerance=0.5, pixel_size=pixel_size, ignore_border=0.5,
                       image_shape=[x.shape for x in X])


@pytest.mark.parametrize("lattice", sorted(LATTICES))
def test_general_model_finds_the_columns_of_every_lattice(general, lattice):
    X, coords = recorded(lattice, 0.1, seed=4242)
    s = scores(general, X, coords, 0.1)
    assert s["f1"] >= 0.97, s
    assert s["rmse"] <= 0.1, s  # Å
    assert s["class_accuracy"] >= 0.97, s


@pytest.mark.parametrize("pixel_size", [0.06, 0.16])
def test_general_model_rescales_other_pixel_sizes(general, pixel_size):
    side = int(round(16.0 / pixel_size))  # 16 Å of MoS2 at any sampling
    X, coords = recorded("MoS2", pixel_size, seed=4343, shape=(side, side))
    seg = general.set_params(pixel_size=pixel_size)
    try:
        s = scores(seg, X, coords, pixel_size)
        proba = seg.transform(X[:1])
    finally:
        general.set_params(pixel_size=None)
    assert proba.shape == (1, 3, side, side)
    assert s["f1"] >= 0.95, s
    assert s["class_accuracy"] >= 0.95, s
    # without being told, the network works at the wrong scale and misses atoms or mixes up
    # Mo and S2 columns: the rescaling matters
    wrong = scores(general, X, coords, pixel_size)
    assert min(wrong["f1"], wrong["class_accuracy"]) < min(s["f1"], s["class_accuracy"]) - 0.1


def test_every_listed_model_loads_and_knows_its_sampling():
    for name in PRETRAINED:
        seg = load_pretrained(name, device="cpu")
        assert seg.pixel_size_ == pytest.approx(0.1)
        assert seg.classes_[0] == "background"
        out = seg.transform(np.random.default_rng(0).random((1, 40, 56)))
        np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
