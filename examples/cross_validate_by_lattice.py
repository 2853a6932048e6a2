"""Cross-validate atom finding with folds grouped by lattice
===========================================================

Does a network trained on some lattices find atoms in another one? ``GroupKFold`` keeps each
lattice in a single fold, so every fold tests on a lattice the network never saw;
:func:`~sklearn.model_selection.cross_validate` reports F1 and position RMSE (Å) per fold.

Run: ``python examples/cross_validate_by_lattice.py`` (a few minutes on 2 CPU cores).
"""

import numpy as np
import torch
from sklearn.model_selection import GroupKFold, cross_validate
from sklearn.pipeline import Pipeline

from sklatom import FCNSegmenter, PeakFinder, make_lattice_images
from sklatom.metrics import make_atom_scorer

PIXEL = 0.1  # Å/px
LATTICES = ["graphene", "hBN", "MoS2", "WS2", "SrTiO3-001"]

if __name__ == "__main__":
    torch.set_num_threads(2)
    images, masks, groups = [], [], []
    for k, lattice in enumerate(LATTICES):
        X, y, _ = make_lattice_images(6, lattice, shape=(128, 128), pixel_size=PIXEL,
                                      labels="atoms", random_state=k)
        images.append(X)
        masks.append(y)
        groups += [lattice] * len(X)
    X, y, groups = np.concatenate(images), np.concatenate(masks), np.array(groups)
    pipe = Pipeline([
        ("segment", FCNSegmenter(module__depth=2, module__base_filters=8, patch_size=64,
                                 patches_per_epoch=256, max_epochs=10, lr=3e-3,
                                 validation_fraction=None, training_pixel_size=PIXEL,
                                 classes=["background", "atom"], verbose=0, random_state=0)),
        ("peaks", PeakFinder()),
    ])
    cv = GroupKFold(n_splits=len(LATTICES))
    result = cross_validate(
        pipe, X, y, groups=groups, cv=cv,
        scoring={"f1": make_atom_scorer(tolerance=0.5, pixel_size=PIXEL, ignore_border=0.5),
                 "rmse": make_atom_scorer("rmse", tolerance=0.5, pixel_size=PIXEL)},
    )
    print("held-out lattice   F1     RMSE (Å)")
    for (_, test), f1, rmse in zip(cv.split(X, y, groups), result["test_f1"],
                                   result["test_rmse"]):
        print(f"  {groups[test][0]:15s}  {f1:.3f}  {-rmse:.3f}")
    print(f"mean F1 {result['test_f1'].mean():.3f}")
