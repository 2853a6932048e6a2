"""The estimators composed as scikit-learn pipelines: tuning, cross-validation, persistence."""

import joblib
import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from sklearn.model_selection import GridSearchCV, GroupKFold, cross_validate
from sklearn.pipeline import Pipeline

from sklatom.datasets import make_lattice_images
from sklatom.metrics import make_atom_scorer
from sklatom.peaks import PeakFinder
from sklatom.segmentation import FCNSegmenter

PIXEL = 0.1


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def mixed_images():
    """Small MoS2 and graphene images with one 'atom' class, and their lattice groups."""
    Xa, ya, _ = make_lattice_images(4, "MoS2", shape=(64, 64), labels="atoms", random_state=0)
    Xb, yb, _ = make_lattice_images(4, "hBN", shape=(64, 64), labels="atoms", random_state=1)
    X, y = np.concatenate([Xa, Xb]), np.concatenate([ya, yb])
    groups = np.array(["MoS2"] * 4 + ["hBN"] * 4)
    return X, y, groups


def _tiny_segmenter(**params):
    defaults = dict(module__depth=2, module__base_filters=4, module__dropout=0.0,
                    patch_size=32, patches_per_epoch=64, batch_size=8, max_epochs=4, lr=1e-2,
                    validation_fraction=None, classes=["background", "atom"],
                    training_pixel_size=PIXEL, verbose=0, random_state=0)
    defaults.update(params)
    return FCNSegmenter(**defaults)


def test_grid_search_tunes_network_and_peak_threshold_with_atom_f1(mixed_images, tmp_path):
    X, y, _ = mixed_images
    pipe = Pipeline([("segment", _tiny_segmenter(max_epochs=8)), ("peaks", PeakFinder())],
                    memory=str(tmp_path))
    grid = GridSearchCV(
        pipe,
        {"segment__module__base_filters": [2, 8], "peaks__threshold": [0.5, 0.02]},
        scoring=make_atom_scorer(tolerance=0.5, pixel_size=PIXEL),
        cv=2,
    )
    grid.fit(X, y)
    scores = grid.cv_results_["mean_test_score"]
    assert grid.best_params_["peaks__threshold"] == 0.5
    assert scores.max() > scores.min() + 0.3
    assert grid.best_score_ > 0.5
    # the refitted best pipeline finds the atoms of the training images
    assert grid.score(X, y) > 0.8


def test_pipeline_memory_does_not_retrain_the_network_for_new_peak_settings(
        mixed_images, tmp_path):
    X, y, _ = mixed_images
    pipe = Pipeline([("segment", _tiny_segmenter()), ("peaks", PeakFinder(threshold=0.5))],
                    memory=str(tmp_path))
    pipe.fit(X[:4], y[:4])
    weights = {k: v.clone() for k, v in pipe.named_steps["segment"].net_.module_.state_dict()
               .items()}
    cached = sorted(tmp_path.rglob("output.pkl"))
    assert len(cached) == 1  # the fitted segmenter and its output
    pipe.set_params(peaks__threshold=0.8).fit(X[:4], y[:4])
    assert sorted(tmp_path.rglob("output.pkl")) == cached  # served from the cache
    for k, v in pipe.named_steps["segment"].net_.module_.state_dict().items():
        assert torch.equal(v, weights[k])
    # a network setting does retrain
    pipe.set_params(segment__lr=5e-3).fit(X[:4], y[:4])
    assert len(sorted(tmp_path.rglob("output.pkl"))) == 2


def test_cross_validation_grouped_by_lattice_reports_f1_and_rmse(mixed_images):
    X, y, groups = mixed_images
    pipe = Pipeline([("segment", _tiny_segmenter(max_epochs=6)), ("peaks", PeakFinder())])
    result = cross_validate(
        pipe, X, y, groups=groups, cv=GroupKFold(n_splits=2),
        scoring={"f1": make_atom_scorer(tolerance=0.5, pixel_size=PIXEL),
                 "rmse": make_atom_scorer("rmse", tolerance=0.5, pixel_size=PIXEL)},
    )
    f1, rmse = result["test_f1"], -result["test_rmse"]
    assert f1.shape == (2,) and rmse.shape == (2,)
    # trained on one lattice, tested on the other: the network still finds most atoms
    assert np.all(f1 > 0.5), f1
    assert np.all((rmse > 0) & (rmse < 0.25)), rmse  # Å


def test_fitted_pipeline_round_trips_through_joblib(mixed_images, tmp_path):
    X, y, _ = mixed_images
    pipe = Pipeline([("segment", _tiny_segmenter()), ("peaks", PeakFinder())]).fit(X, y)
    before = pipe.transform(X[:2])
    joblib.dump(pipe, tmp_path / "pipe.joblib")
    after = joblib.load(tmp_path / "pipe.joblib").transform(X[:2])
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_segmenter_passes_raw_images_to_gaussian_refinement(mixed_images):
    X, y, _ = mixed_images
    seg = _tiny_segmenter(passthrough_images=True).fit(X[:4], y[:4])
    out = seg.transform(X[:2])
    assert isinstance(out, tuple) and np.array_equal(out[1], X[:2])
    pipe = Pipeline([("segment", seg), ("peaks", PeakFinder(refine="gaussian"))])
    refined = pipe.transform(X[:2])
    plain = PeakFinder().transform(out[0])
    assert [len(a) for a in refined] == [len(a) for a in plain]
    # refinement on the intensities moves atoms by sub-pixel amounts, not by whole columns
    shift, _ = cKDTree(plain[0][:, :2]).query(refined[0][:, :2])
    assert 0 < shift.max() < 3


def test_grid_search_and_batch_inference_on_a_dask_cluster(mixed_images):
    distributed = pytest.importorskip("distributed")
    from joblib import parallel_backend

    X, y, _ = mixed_images
    seg = _tiny_segmenter().fit(X, y)
    P = seg.transform(X)
    search = GridSearchCV(PeakFinder(), {"threshold": [0.3, 0.6, 0.999]},
                          scoring=make_atom_scorer(tolerance=0.5, pixel_size=PIXEL), cv=2,
                          n_jobs=2)
    local = PeakFinder(n_jobs=1).transform(P)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client, parallel_backend("dask"):
        with distributed.get_task_stream(client) as stream:
            search.fit(P, y)
            remote = PeakFinder(n_jobs=2).transform(P)
        # the work ran as tasks on the cluster's two workers
        assert len(stream.data) >= 6
        assert len({task["worker"] for task in stream.data}) == 2
    assert search.best_params_["threshold"] != 0.999
    for a, b in zip(local, remote):
        np.testing.assert_array_equal(a, b)


def _end_to_end_pipeline():
    from sklearn.frozen import FrozenEstimator

    from sklatom.graphs import GraphDefectClassifier
    from sklatom.pretrained import load_pretrained
    from sklatom.simulation import AcquisitionModel, MultisliceSimulator

    return Pipeline([
        ("simulate", MultisliceSimulator(method="incoherent", progress=False)),
        ("record", AcquisitionModel(dose=5e6, blur=0.15, random_state=0)),
        ("segment", FrozenEstimator(load_pretrained())),  # pretrained: fit leaves it alone
        ("peaks", PeakFinder()),
        ("defects", GraphDefectClassifier(species=["background", "C", "Si"], pixel_size=PIXEL)),
    ])


def test_structures_to_defect_catalogue_in_one_pipeline_and_joblib_round_trip(tmp_path):
    from sklatom.structures import make_structure

    structures = [make_structure("Si-graphene", (19.2, 19.2),
                                 defects={"substitution": 3}, random_state=s)
                  for s in range(3)]
    pipe = _end_to_end_pipeline().fit(structures)
    labels = pipe.predict(structures)
    assert len(labels) == 3
    # every planted Si dopant is found and named as a Si with three C neighbours
    n_si = [int(np.sum(lab == "Si1C3")) for lab in labels]
    assert n_si == [3, 3, 3], n_si
    table = pipe[-1].catalogue(pipe[:-1].transform(structures))
    assert table.set_index("name").loc["Si1C3", "count"] == 9
    # the fitted pipeline, saved and loaded with joblib, predicts the same
    joblib.dump(pipe, tmp_path / "pipeline.joblib")
    again = joblib.load(tmp_path / "pipeline.joblib").predict(structures)
    for a, b in zip(labels, again):
        np.testing.assert_array_equal(a, b)
