"""Tests of sklatom.plotting: artists, legend labels and point counts (Agg backend), not pixels."""

import doctest

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402

import sklatom.plotting  # noqa: E402
from sklatom.graphs import GraphDefectClassifier  # noqa: E402
from sklatom.plotting import (plot_atoms, plot_defect_graph, plot_defects,  # noqa: E402
                              plot_descriptors)
from sklatom.structures import make_structure, project_columns  # noqa: E402

PS = 0.1  # Å/px


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def _scatters(ax):
    return [c for c in ax.collections if isinstance(c, PathCollection)]


def _legend(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def _points(collection):
    return collection.get_offsets().shape[0]


COORDS = np.array([[5.0, 5.0, 1], [5.0, 15.0, 2], [15.0, 10.0, 1], [12.0, 3.0, 1]])


def test_plot_atoms_one_scatter_per_class_with_names(ax):
    out = plot_atoms(np.zeros((20, 24)), COORDS, classes=["background", "C", "Si"], ax=ax)
    assert out is ax
    assert _legend(ax) == ["C", "Si"]
    by_label = {c.get_label(): c for c in _scatters(ax)}
    assert _points(by_label["C"]) == 3 and _points(by_label["Si"]) == 1
    # x is the column, y the row
    np.testing.assert_array_equal(by_label["Si"].get_offsets(), [[15.0, 5.0]])
    assert len(ax.get_images()) == 1
    assert ax.get_xlim() == (-0.5, 23.5) and ax.get_ylim() == (19.5, -0.5)


def test_plot_atoms_without_class_names_image_or_class_column(ax):
    plot_atoms(None, COORDS[:, :2], ax=ax)
    assert _legend(ax) == ["class 1"]
    assert _points(_scatters(ax)[0]) == 4
    assert ax.get_images() == []


def test_plot_atoms_scale_bar_in_angstrom(ax):
    plot_atoms(np.zeros((100, 200)), COORDS, ax=ax, pixel_size=0.1)
    labels = [t.get_text() for t in ax.texts if t.get_gid() == "scale_bar_label"]
    assert labels == ["5 Å"]  # a round length near a quarter of the 20 Å width
    bars = [ln for ln in ax.lines if ln.get_gid() == "scale_bar"]
    assert len(bars) == 1
    np.testing.assert_allclose(np.ptp(bars[0].get_xdata()), 50.0)  # 5 Å / 0.1 Å/px
    assert "_scale_bar" not in _legend(ax)


def test_plot_atoms_confidence_sets_opacity(ax):
    conf = np.array([1.0, 0.5, 0.0, 0.9])
    plot_atoms(None, COORDS, ax=ax, confidence=conf)
    c1 = [c for c in _scatters(ax) if c.get_label() == "class 1"][0]
    np.testing.assert_allclose(c1.get_facecolors()[:, 3], [1.0, 0.2, 0.9])


def test_plot_atoms_no_atoms_no_legend(ax):
    plot_atoms(np.zeros((8, 8)), np.zeros((0, 3)), ax=ax)
    assert ax.get_legend() is None and _scatters(ax) == []


def test_plot_atoms_uses_current_axes():
    fig = plt.figure()
    try:
        ax = plot_atoms(None, COORDS)
        assert ax is fig.gca()
    finally:
        plt.close(fig)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(image=np.zeros((2, 3, 3))), ValueError, "image must be 2-D"),
    (dict(coordinates=np.zeros((3, 4))), ValueError, r"coordinates must have shape \(k, 2\)"),
    (dict(confidence=[0.5]), ValueError, "confidence has 1 values for 4 atoms"),
    (dict(pixel_size=-1), ValueError, "pixel_size must be a positive number"),
])
def test_plot_atoms_errors(ax, kwargs, error, match):
    args = dict(image=np.zeros((20, 20)), coordinates=COORDS)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        plot_atoms(args.pop("image"), args.pop("coordinates"), ax=ax, **args)


@pytest.fixture(scope="module")
def fitted():
    """A classifier fitted on 20 x 20 Å of graphene with one vacancy, and its columns."""
    atoms = make_structure("graphene", (20.0, 20.0), defects={"vacancy": 1}, random_state=0)
    cols = project_columns(atoms, PS)
    clf = GraphDefectClassifier(species=cols.classes, pixel_size=PS).fit([cols.coordinates])
    return clf, cols


def test_plot_defect_graph(fitted):
    clf, cols = fitted
    labels = clf.predict([cols.coordinates])[0]
    fig, ax = plt.subplots()
    image = np.zeros((200, 200))
    out = plot_defect_graph(image, cols.coordinates, labels, ax=ax, estimator=clf)
    assert out is ax
    legend = sorted(t.get_text() for t in ax.get_legend().get_texts())
    assert legend == ["V1", "lattice"]
    (lines,) = [c for c in ax.collections if isinstance(c, matplotlib.collections.LineCollection)]
    assert len(lines.get_segments()) == len(clf.bonds([cols.coordinates])[0])
    assert len(ax.get_images()) == 1
    plt.close(fig)
    # without an estimator: bonds learned from the image itself
    fig, ax = plt.subplots()
    plot_defect_graph(None, cols.coordinates, labels, ax=ax, pixel_size=PS,
                      species=cols.classes)
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["V1", "lattice"]
    plt.close(fig)
    with pytest.raises(ValueError, match="labels"):
        plot_defect_graph(None, cols.coordinates, labels[:3], pixel_size=PS)


def test_plot_defects_wraps_the_graph_plot(ax):
    coords = np.array([[10, 10, 1], [10, 24, 1], [22, 17, 1], [30, 30, 2]], dtype=float)
    labels = ["lattice", "lattice", "V1", "Si1C3"]
    out = plot_defects(np.zeros((40, 40)), coords, labels, ax=ax, pixel_size=0.1,
                       species=["C", "Si"], title="defects")
    assert out is ax
    assert sorted(_legend(ax)) == ["Si1C3", "V1", "lattice"]
    assert sum(_points(c) for c in _scatters(ax)) == 4
    assert ax.get_title() == "defects"
    assert [t.get_text() for t in ax.texts if t.get_gid() == "scale_bar_label"] == ["1 Å"]


def test_plot_defects_label_count_mismatch(ax):
    with pytest.raises(ValueError, match="labels has 1 entries for 4 atoms"):
        plot_defects(None, COORDS, ["lattice"], ax=ax, pixel_size=0.1)


@pytest.fixture
def table():
    rng = np.random.default_rng(0)
    return pd.DataFrame({"area": rng.random(30), "intensity": rng.random(30),
                         "species": ["C"] * 20 + ["Si"] * 10,
                         "ring": rng.integers(5, 8, 30), "score": rng.random(30)})


def test_plot_descriptors_categorical_hue(ax, table):
    plot_descriptors(table, "area", "intensity", hue="species", ax=ax)
    assert _legend(ax) == ["C", "Si"]
    assert [_points(c) for c in _scatters(ax)] == [20, 10]
    assert ax.get_xlabel() == "area" and ax.get_ylabel() == "intensity"
    assert ax.get_legend().get_title().get_text() == "species"


def test_plot_descriptors_integer_hue_is_categorical(ax, table):
    plot_descriptors(table, "area", "intensity", hue="ring", ax=ax)
    assert _legend(ax) == [str(v) for v in sorted(table["ring"].unique())]


def test_plot_descriptors_continuous_hue_has_colorbar(ax, table):
    plot_descriptors(table, "area", "intensity", hue="score", ax=ax)
    (sc,) = _scatters(ax)
    assert _points(sc) == 30
    np.testing.assert_allclose(sc.get_array(), table["score"])
    assert ax.get_legend() is None
    assert len(ax.figure.axes) == 2  # the colour bar


def test_plot_descriptors_no_hue_and_array_hue(ax, table):
    plot_descriptors(table, "area", "score", ax=ax)
    assert len(_scatters(ax)) == 1
    fig, ax2 = plt.subplots()
    try:
        plot_descriptors(table, "area", "score", hue=np.array(["a", "b"] * 15), ax=ax2)
        assert _legend(ax2) == ["a", "b"]
    finally:
        plt.close(fig)


def test_plot_descriptors_unknown_column(ax, table):
    with pytest.raises(ValueError, match=r"y='volume' is not a column.*'area'"):
        plot_descriptors(table, "area", "volume", ax=ax)
    with pytest.raises(ValueError, match=r"hue='kind' is not a column"):
        plot_descriptors(table, "area", "score", hue="kind", ax=ax)


def test_docstring_examples():
    result = doctest.testmod(sklatom.plotting, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 4 and result.failed == 0
