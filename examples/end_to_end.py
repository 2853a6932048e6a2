"""From structures to a defect catalogue in one pipeline
=======================================================

Simulation, acquisition, the pretrained segmenter, peak finding and the graph classifier form
one scikit-learn :class:`~sklearn.pipeline.Pipeline`. The pretrained segmenter is wrapped in
:class:`sklearn.frozen.FrozenEstimator` so that fitting the pipeline (which teaches the graph
classifier the lattice) does not retrain it. The fitted pipeline is saved with joblib, loaded
back and checked to predict the same; an overlay shows the defects it named.

Run: ``python examples/end_to_end.py [overlay.png]`` (about a minute on 2 CPU cores).
"""

import sys
import tempfile

import joblib
import matplotlib
import numpy as np
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline

from sklatom import (AcquisitionModel, GraphDefectClassifier, MultisliceSimulator, PeakFinder,
                     load_pretrained, make_structure)
from sklatom.plotting import plot_defect_graph

PIXEL = 0.1  # Å/px

if __name__ == "__main__":
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    structures = [make_structure("Si-graphene", (25.6, 25.6), random_state=s)
                  for s in range(6)]
    pipe = Pipeline([
        ("simulate", MultisliceSimulator(method="incoherent", pixel_size=PIXEL)),
        ("record", AcquisitionModel(dose=5e6, blur=0.15, scan_jitter=0.02, random_state=0)),
        ("segment", FrozenEstimator(load_pretrained())),
        ("peaks", PeakFinder()),
        ("defects", GraphDefectClassifier(species=["background", "C", "Si"],
                                          pixel_size=PIXEL)),
    ])
    pipe.fit(structures)
    labels = pipe.predict(structures)
    coords = pipe[:-1].transform(structures)
    print(pipe[-1].catalogue(coords)[["name", "count"]].to_string(index=False))
    planted = {}
    for s in structures:
        for d in s.info["defects"]:
            planted[d["kind"]] = planted.get(d["kind"], 0) + 1
    print("planted:", planted)

    with tempfile.TemporaryDirectory() as tmp:
        joblib.dump(pipe, f"{tmp}/pipeline.joblib")
        again = joblib.load(f"{tmp}/pipeline.joblib").predict(structures)
    assert all(np.array_equal(a, b) for a, b in zip(labels, again))
    print("reloaded pipeline predicts the same labels")

    image = pipe[:2].transform(structures[:1])[0]
    fig, ax = plt.subplots(figsize=(7, 7))
    plot_defect_graph(image, coords[0], labels[0], ax=ax, pixel_size=PIXEL)
    out = sys.argv[1] if len(sys.argv) > 1 else "end_to_end.png"
    fig.savefig(out, dpi=100)
    print("wrote", out)
