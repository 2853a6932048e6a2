"""Tune a segmenter and its peak finder together with GridSearchCV
=================================================================

A :class:`~sklearn.pipeline.Pipeline` of :class:`~sklatom.segmentation.FCNSegmenter` and
:class:`~sklatom.peaks.PeakFinder` ends in atom coordinates, so
:func:`~sklatom.metrics.make_atom_scorer` scores it by atom F1 against the label masks. The
pipeline's ``memory`` caches the fitted network: grid points that differ only in PeakFinder
settings reuse it instead of training again.

Run: ``python examples/tune_segmentation.py`` (a few minutes on 2 CPU cores).
"""

import tempfile
import time

import numpy as np
import torch
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from sklatom import FCNSegmenter, PeakFinder, make_lattice_images
from sklatom.metrics import make_atom_scorer

PIXEL = 0.1  # Å/px

if __name__ == "__main__":
    torch.set_num_threads(1)  # small networks train fastest on one thread per process
    X, y, _ = make_lattice_images(12, ["graphene", "MoS2", "SrTiO3-001"], shape=(128, 128),
                                  pixel_size=PIXEL, labels="atoms", random_state=0)
    segmenter = FCNSegmenter(module__depth=2, patch_size=64, patches_per_epoch=256,
                             max_epochs=8, validation_fraction=None, training_pixel_size=PIXEL,
                             classes=["background", "atom"], verbose=0, random_state=0)
    with tempfile.TemporaryDirectory() as cache:
        pipe = Pipeline([("segment", segmenter), ("peaks", PeakFinder())], memory=cache)
        grid = GridSearchCV(
            pipe,
            {"segment__module__base_filters": [4, 12],
             "segment__lr": [3e-4, 3e-3],
             "peaks__threshold": [0.3, 0.5, 0.8]},
            scoring={"f1": make_atom_scorer(tolerance=0.5, pixel_size=PIXEL, ignore_border=0.5),
                     "rmse": make_atom_scorer("rmse", tolerance=0.5, pixel_size=PIXEL)},
            refit="f1", cv=3,
        )
        t = time.time()
        grid.fit(X, y)
    res = grid.cv_results_
    order = np.argsort(-res["mean_test_f1"])
    print(f"{len(order)} grid points x 3 folds in {time.time() - t:.0f} s")
    print("  F1     RMSE(Å)  params")
    for i in order:
        print(f"  {res['mean_test_f1'][i]:.3f}  {-res['mean_test_rmse'][i]:.3f}    "
              f"{res['params'][i]}")
    print("best:", grid.best_params_)
