"""AtomFinder: the analysis of an image with the pretrained model in one object."""

import numpy as np
import pytest
from sklearn.base import clone

from sklatom.datasets import make_lattice_images
from sklatom.finder import AtomFinder, load_model
from sklatom.metrics import atom_scores
from sklatom.pretrained import GENERAL_LABELS


@pytest.fixture(scope="module")
def mos2_coarse():
    """A MoS2 image recorded at 0.25 Å/px, and its columns."""
    X, _, coords = make_lattice_images(1, "MoS2", shape=(128, 128), pixel_size=0.25,
                                       labels=GENERAL_LABELS, random_state=0)
    return X, coords


def test_atom_finder_rescales_and_finds_the_atoms(mos2_coarse):
    X, coords = mos2_coarse
    finder = AtomFinder(pixel_size=0.25).fit()
    assert finder.classes_ == ["background", "light", "heavy"]
    found, confidence = finder.find(X)
    s = atom_scores(found, coords, tolerance=0.5, pixel_size=0.25, ignore_border=0.5,
                    image_shape=X.shape[1:])
    assert s["f1"] > 0.9 and s["class_accuracy"] > 0.9
    assert np.all((confidence[0] > 0.5) & (confidence[0] <= 1))
    # the pixel size per call overrides the parameter; the model is left as it was
    assert finder.segmenter_.pixel_size is None
    table = finder.tables(X, pixel_size=0.25)[0]
    np.testing.assert_allclose(table["x_A"], table["col"] * 0.25, atol=1e-3)


def test_atom_finder_contrast_setting_and_clone():
    finder = AtomFinder(classes_from_contrast=None).fit()
    assert finder.peaks_.classes_from_contrast is None
    assert AtomFinder().fit().peaks_.classes_from_contrast == (1, 2)
    assert clone(finder).get_params() == finder.get_params()
    with pytest.raises(ValueError, match="classes_from_contrast"):
        AtomFinder(classes_from_contrast="yes").fit()
    with pytest.raises(ValueError, match="outside the 0.05-0.5"):
        AtomFinder(pixel_size=1.0).fit()


def test_load_model_names_what_it_accepts(tmp_path):
    seg = load_model("general")
    assert load_model(seg) is seg
    path = seg.save(tmp_path / "m.safetensors")
    assert load_model(path).classes_ == seg.classes_
    with pytest.raises(ValueError, match="neither a pretrained model"):
        load_model("no-such-model")
