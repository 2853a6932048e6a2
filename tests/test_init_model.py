"""FCNSegmenter(init_model=...): fine-tuning a saved or pretrained model, also under clone."""

import copy

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from sklatom.datasets import make_lattice_images
from sklatom.metrics import EDGE_BAND, TOLERANCE, make_atom_scorer
from sklatom.peaks import PeakFinder
from sklatom.pretrained import GENERAL_LABELS, PRETRAINED, load_pretrained
from sklatom.segmentation import FCNSegmenter
from test_segmentation import CLASSES, TINY, make_blobs

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: Training settings of the fine-tuning runs (the network comes from the init model).
TRAIN = {k: v for k, v in TINY.items() if not k.startswith("module__")}


@pytest.fixture(scope="module")
def data():
    return make_blobs(n=6, seed=0)


@pytest.fixture(scope="module")
def model_file(data, tmp_path_factory):
    """A tiny fitted segmenter (depth 2, not the default 3) saved to a file."""
    X, y = data
    seg = FCNSegmenter(**TINY, max_epochs=10, classes=CLASSES, training_pixel_size=0.1,
                       random_state=0).fit(X, y)
    return seg.save(tmp_path_factory.mktemp("init") / "tiny.safetensors")


def parameters(seg):
    return {k: v.detach().clone() for k, v in seg.net_.module_.named_parameters()}


def test_fine_tuning_keeps_the_batch_norm_statistics(model_file, data):
    # a few images must not replace what the init model learned of its whole training set
    X, y = data
    saved = FCNSegmenter.load(model_file)
    seg = FCNSegmenter(init_model=model_file, **{**TRAIN, "lr": 1e-3}, max_epochs=2,
                       validation_fraction=None, random_state=1).fit(X[:2] * 3 + 1, y[:2])
    buffers = dict(seg.net_.module_.named_buffers())
    norms = [k for k in buffers if k.endswith("running_mean") or k.endswith("running_var")]
    assert norms
    for key, value in saved.net_.module_.named_buffers():
        if key in norms:
            torch.testing.assert_close(buffers[key], value)
    tuned, start = parameters(seg), parameters(saved)
    assert any(not torch.equal(tuned[k], start[k]) for k in start)
    # and the layers keep their momentum for a later training from scratch
    assert all(m.momentum == 0.1 for m in seg.net_.module_.modules()
               if isinstance(m, torch.nn.BatchNorm2d))


def test_fine_tuning_on_a_training_set_of_its_own_updates_the_batch_norm(model_file, data):
    # fine_tune_batch_norm=True: the statistics follow the new data (here rescaled images)
    X, y = data
    saved = dict(FCNSegmenter.load(model_file).net_.module_.named_buffers())
    seg = FCNSegmenter(init_model=model_file, fine_tune_batch_norm=True,
                       **{**TRAIN, "lr": 1e-3}, max_epochs=2, validation_fraction=None,
                       random_state=1).fit(X[:2] * 3 + 1, y[:2])
    buffers = dict(seg.net_.module_.named_buffers())
    means = [k for k in saved if k.endswith("running_mean")]
    assert means and all(not torch.allclose(buffers[k], saved[k]) for k in means)
    assert clone(seg).get_params()["fine_tune_batch_norm"] is True


def test_fit_starts_from_the_init_model_weights(model_file, data, tmp_path):
    X, y = data
    saved = FCNSegmenter.load(model_file)
    # the module__ settings are left at their defaults: they come from the file
    seg = clone(FCNSegmenter(init_model=model_file, **{**TRAIN, "lr": 1e-9}, max_epochs=1,
                             validation_fraction=None, random_state=1))
    assert seg.init_model == model_file
    seg.fit(X, y)
    assert seg.classes_ == CLASSES and seg.pixel_size_ == 0.1
    assert seg.net_.module_.depth == 2 and seg.net_.module__base_filters == 8
    start, now = parameters(saved), parameters(seg)
    assert now.keys() == start.keys()
    for key in start:  # Adam moves each weight by about lr per step
        torch.testing.assert_close(now[key], start[key], rtol=0, atol=1e-6)
    # one epoch from the file's weights is far better than one from scratch (0.07 against
    # 0.6 when measured), and without init_model the same settings train a new network
    scratch = FCNSegmenter(**TINY, max_epochs=1, validation_fraction=None,
                           random_state=1).fit(X, y)
    loss = seg.net_.history[-1, "train_loss"]
    assert loss < 0.3 * scratch.net_.history[-1, "train_loss"]
    cold = clone(seg).set_params(init_model=None, **TINY).fit(X, y)
    assert cold.net_.history[-1, "train_loss"] > 3 * loss
    # the fine-tuned model saves and loads (its file holds the network's module__ settings)
    again = FCNSegmenter.load(seg.save(tmp_path / "tuned.safetensors"))
    assert again.init_model == model_file and again.module__depth == 2
    np.testing.assert_array_equal(again.predict_proba(X[:2]), seg.predict_proba(X[:2]))


def test_warm_start_continues_from_its_own_weights_not_the_init_models(model_file, data):
    X, y = data
    seg = FCNSegmenter(init_model=model_file, **{**TRAIN, "lr": 1e-2}, max_epochs=2,
                       random_state=0).fit(X, y)
    tuned = parameters(seg)
    assert any(not torch.allclose(tuned[k], v, atol=1e-4)
               for k, v in parameters(FCNSegmenter.load(model_file)).items())
    seg.set_params(warm_start=True, lr=1e-9, max_epochs=1).fit(X, y)
    for key, value in parameters(seg).items():
        torch.testing.assert_close(value, tuned[key], rtol=0, atol=1e-6)
    # a clone is not fitted: it starts from the init model again (and keeps its settings)
    assert clone(seg).fit(X, y).net_.module_.depth == 2


@pytest.mark.parametrize("params, match", [
    ({"classes": ["background", "atom"]}, r"the fit would have 2 classes \['background', "
                                          r"'atom'\].*fine-tuning keeps the classes"),
    ({"classes": ["background", "dim", "bright"]}, "fine-tuning keeps the classes"),
    ({"module__depth": 4}, r"module__depth=4 \(the network's: 2\); fine-tuning keeps the "
                           "architecture"),
    ({"module__base_filters": 4}, "module__base_filters=4 .*keeps the architecture"),
    ({"training_pixel_size": 0.2}, "trained at 0.1 Å/px; fine-tuning keeps the sampling"),
])
def test_settings_that_contradict_the_init_model_raise(model_file, data, params, match):
    X, y = data
    with pytest.raises(ValueError, match=match):
        FCNSegmenter(init_model=model_file, **TRAIN, **params).fit(X, (y > 0).astype(int))


def test_settings_equal_to_the_init_models_are_no_contradiction(model_file, data):
    X, y = data
    seg = FCNSegmenter(init_model=model_file, **TRAIN, classes=CLASSES, module__depth=2,
                       module__base_filters=8, training_pixel_size=0.1, module__dropout=0.3,
                       max_epochs=1).fit(X, y)
    assert seg.net_.module__dropout == 0.3  # dropout is no part of the weights: it may change


def test_masks_beyond_the_init_models_classes_raise(model_file, data):
    X, y = data
    with pytest.raises(ValueError, match=r"y contains label 3 but classes \(those of "
                                         r"init_model=.*tiny.safetensors'\) has only 3 names"):
        FCNSegmenter(init_model=model_file, **TRAIN).fit(X, y + (y == 2))


@pytest.mark.parametrize("init_model, error, match", [
    ("genral", ValueError, r"init_model='genral' is neither a pretrained model \(available: "
                           + ", ".join(sorted(PRETRAINED))),
    ("no/such/model.safetensors", ValueError, "init_model='no/such/model.safetensors' is "
                                              "neither .* nor an existing model file"),
    (3, TypeError, "init_model must be a pretrained model name or a path"),
])
def test_bad_init_model_names_what_is_accepted(data, init_model, error, match):
    X, y = data
    with pytest.raises(error, match=match):
        FCNSegmenter(init_model=init_model, **TRAIN).fit(X, y)


def test_a_corrupt_init_model_file_is_refused(model_file, data, tmp_path):
    X, y = data
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(open(model_file, "rb").read()[:1000])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        FCNSegmenter(init_model=bad, **TRAIN).fit(X, y)


def test_init_model_survives_copy_and_get_params(model_file):
    seg = FCNSegmenter(init_model=model_file)
    assert clone(seg).get_params()["init_model"] == model_file
    assert copy.deepcopy(seg).init_model == model_file
    assert FCNSegmenter().init_model is None


def test_grid_search_fine_tunes_the_general_model():
    # four 128 x 128 px MoS2 images labelled like the general model's training data
    X, y, _ = make_lattice_images(4, "MoS2", shape=(128, 128), labels=GENERAL_LABELS,
                                  random_state=7)
    # 64 px patches (a multiple of the general model's 16): a quarter of the time of 128 px
    pipe = Pipeline([("segment", FCNSegmenter(init_model="general", max_epochs=1, patch_size=64,
                                              verbose=0, random_state=0)),
                     ("peaks", PeakFinder())])
    # make_atom_scorer's default tolerance is 1 px (no pixel size), 0.1 Å here, which the
    # general model's columns miss by a little (F1 0.94 when measured): score with the
    # evaluation protocol of the model card, in Å at 0.1 Å/px
    scorer = make_atom_scorer(tolerance=TOLERANCE, pixel_size=0.1, ignore_border=EDGE_BAND)
    search = GridSearchCV(pipe, {"segment__lr": [1e-5, 1e-4]}, scoring=scorer, cv=2)
    search.fit(X, y)
    # measured: F1 1.0 for both learning rates in both folds (0.015 from scratch, the same
    # network with init_model=None), 30-37 s on one thread
    assert search.best_score_ >= 0.95, search.cv_results_["mean_test_score"]
    segment = search.best_estimator_.named_steps["segment"]
    general = load_pretrained("general", device="cpu")
    assert segment.classes_ == general.classes_ and segment.pixel_size_ == general.pixel_size_
    assert segment.net_.module_.size_multiple == general.net_.module_.size_multiple
