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


def test_analyse_names_species_and_finds_the_planted_vacancy():
    from sklatom.simulation import AcquisitionModel

    # graphene with one planted vacancy, recorded well: the defect table holds a V1 where
    # the vacancy is, and its three neighbours carry its name in the atoms table
    X, _, coords, info = make_lattice_images(
        1, "graphene", shape=(160, 160), pixel_size=0.1, labels=GENERAL_LABELS,
        defects={"vacancy": 1}, acquisition=AcquisitionModel(dose=5e6, blur=0.15),
        return_info=True, random_state=3)
    finder = AtomFinder(pixel_size=0.1, species=("C", "Si"), defects=True).fit()
    result = finder.analyse(X)[0]
    atoms, defects = result.atoms, result.defects
    assert list(atoms.columns) == ["row", "col", "class", "class_name", "species", "x_A",
                                   "y_A", "confidence", "defect"]
    assert set(atoms["species"]) == {"C"} and len(atoms) == len(result.coords)
    atoms0 = info.structures[0]
    y0, x0 = atoms0.info["scan_region"][:2]
    site = (np.array(atoms0.info["defects"][0]["position"]) - (y0, x0)) / 0.1  # (row, col) px
    v1 = defects[defects["name"] == "V1"]
    assert len(v1) == 1
    assert np.hypot(v1["row"].iloc[0] - site[0], v1["col"].iloc[0] - site[1]) < 5
    assert (atoms["defect"] == "V1").sum() == 3
    np.testing.assert_allclose(defects["x_A"], defects["col"] * 0.1, atol=1e-3)
    assert result.classifier is not None and result.pixel_size == 0.1
    # without defects: no defect column, no table; the same atoms
    plain = AtomFinder(pixel_size=0.1).fit().analyse(X)[0]
    assert "defect" not in plain.atoms and plain.defects is None
    np.testing.assert_array_equal(plain.coords, result.coords)


def test_analyse_refuses_species_that_do_not_fit_the_model():
    with pytest.raises(ValueError, match="must name each of the model's 2 atom classes"):
        AtomFinder(species=("C",)).fit()
    with pytest.raises(ValueError, match="must name each"):
        AtomFinder(species="CSi").fit()
    with pytest.raises(ValueError, match="defects must be True or False"):
        AtomFinder(defects="yes").fit()
    # an image with fewer than three atoms has no graph: no defects, no error
    from sklatom.exceptions import ImageQualityWarning

    with pytest.warns(ImageQualityWarning, match="constant"):
        empty = AtomFinder(pixel_size=0.1, defects=True).analyse(np.ones((1, 64, 64)))[0]
    assert len(empty.atoms) == 0 and len(empty.defects) == 0 and empty.classifier is None
