"""Figures of found atoms, defects and descriptor tables (matplotlib, imported on first use).

Every function draws into the given (or current) axes and returns them, so figures compose::

    fig, (a, b) = plt.subplots(1, 2)
    plot_atoms(image, coords, classes=seg.classes_, ax=a, pixel_size=0.1)
    plot_descriptors(table, "area", "mean_intensity", hue="class", ax=b)

Coordinates are ``(row, col)`` in pixels, as everywhere in sklatom; a ``pixel_size`` adds a
scale bar in Å, except in :func:`plot_defect_graph`, the bare bond-graph overlay that
:func:`plot_defects` frames with a scale bar and a title.
"""

import numbers
import warnings

import numpy as np

from .exceptions import SklatomWarning

__all__ = ["plot_atoms", "plot_defect_graph", "plot_defects", "plot_descriptors"]


def _axes(ax):
    import matplotlib.pyplot as plt

    return plt.gca() if ax is None else ax


def _check_image(image, name="image"):
    if image is None:
        return None
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"{name} must be 2-D (height, width); got shape {image.shape}")
    if image.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers; got dtype {image.dtype}")
    return image


def _check_coordinates(coordinates, name="coordinates"):
    coords = np.asarray(coordinates, dtype=float)
    if coords.size == 0:
        return np.zeros((0, 3))
    if coords.ndim != 2 or coords.shape[1] not in (2, 3):
        raise ValueError(
            f"{name} must have shape (k, 2) or (k, 3) (row, col[, class]) in px; got "
            f"{coords.shape}")
    if coords.shape[1] == 2:
        coords = np.column_stack([coords, np.ones(len(coords))])
    return coords


def _nice_length(target):
    """The largest of 1, 2, 5 x 10^k not above ``target`` (for a scale bar)."""
    if target <= 0:
        return 0.0
    base = 10.0 ** np.floor(np.log10(target))
    for m in (5.0, 2.0, 1.0):
        if m * base <= target:
            return m * base
    return base


def add_scale_bar(ax, pixel_size, width_px, height_px, color="white"):
    """Draw a scale bar of a round length in Å in the lower-left corner; return its length.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Axes showing an image in pixel coordinates.
    pixel_size : float
        Pixel size in Å/px.
    width_px, height_px : float
        Image size in px.
    color : color, default="white"
        Colour of the bar and its label.

    Returns
    -------
    length : float
        Bar length in Å.
    """
    length = _nice_length(0.25 * width_px * pixel_size)
    if length <= 0:
        return 0.0
    bar_px = length / pixel_size
    x0, y0 = 0.05 * width_px, 0.93 * height_px
    ax.plot([x0, x0 + bar_px], [y0, y0], color=color, linewidth=3, solid_capstyle="butt",
            label="_scale_bar", gid="scale_bar")
    ax.text(x0 + bar_px / 2, y0 - 0.02 * height_px, f"{length:g} Å", color=color,
            ha="center", va="bottom", fontsize="small", gid="scale_bar_label")
    return length


def plot_atoms(image, coordinates, classes=None, ax=None, pixel_size=None, *,
               confidence=None, cmap="gray", marker_size=16, colors=None, title=None):
    """Overlay found atoms on an image, one colour per class, with a legend.

    Parameters
    ----------
    image : ndarray of shape (height, width) or None
        The image, shown in ``cmap``; None draws the atoms only.
    coordinates : ndarray of shape (k, 3) or (k, 2)
        Row, column (px) and class index of each atom, as returned by
        :class:`~sklatom.peaks.PeakFinder` (a missing class column means class 1).
    classes : sequence of str or None, default=None
        Name of each class index, e.g. a segmenter's ``classes_`` (index 0 = background). None
        names the classes by their index.
    ax : matplotlib.axes.Axes or None, default=None
        Where to draw; None uses the current axes.
    pixel_size : float or None, default=None
        Pixel size in Å/px; when given, a scale bar in Å is drawn.
    confidence : array-like of shape (k,) or None, default=None
        Per-atom confidence in [0, 1]; when given, markers are as opaque as they are confident
        (at least 0.2).
    cmap : str, default="gray"
        Colour map of the image.
    marker_size : float, default=16
        Marker area in points².
    colors : sequence of colors or None, default=None
        Colour of each class index (index 0 unused); None uses matplotlib's "tab10" cycle.
    title : str or None, default=None
        Axes title.

    Returns
    -------
    ax : matplotlib.axes.Axes
        The axes, with one scatter collection per class present (label: the class name) and a
        legend.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> coords = np.array([[5.0, 5.0, 1], [5.0, 15.0, 2], [15.0, 10.0, 1]])
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> ax = plot_atoms(np.zeros((20, 20)), coords, classes=["background", "C", "Si"], ax=ax,
    ...                 pixel_size=0.1)
    >>> [t.get_text() for t in ax.get_legend().get_texts()]
    ['C', 'Si']
    """
    import matplotlib

    image = _check_image(image)
    coords = _check_coordinates(coordinates)
    if confidence is not None:
        confidence = np.asarray(confidence, dtype=float).reshape(-1)
        if len(confidence) != len(coords):
            raise ValueError(
                f"confidence has {len(confidence)} values for {len(coords)} atoms; expected one "
                "per atom")
    if pixel_size is not None:
        if (isinstance(pixel_size, bool) or not isinstance(pixel_size, numbers.Real)
                or not np.isfinite(pixel_size) or pixel_size <= 0):
            raise ValueError(f"pixel_size must be a positive number in Å/px; got {pixel_size!r}")
    ax = _axes(ax)
    if image is not None:
        ax.imshow(image, cmap=cmap, interpolation="nearest")
    cycle = matplotlib.colormaps["tab10"]
    class_idx = coords[:, 2].astype(int)
    for c in np.unique(class_idx):
        sel = class_idx == c
        if classes is not None and 0 <= c < len(classes):
            name = str(classes[c])
        else:
            name = f"class {c}"
        color = colors[c] if colors is not None and 0 <= c < len(colors) else cycle((c - 1) % 10)
        kwargs = {}
        if confidence is not None:
            from matplotlib.colors import to_rgba

            rgba = np.tile(to_rgba(color), (int(sel.sum()), 1))
            rgba[:, 3] = np.clip(confidence[sel], 0.2, 1.0)
            kwargs["c"] = rgba
        else:
            kwargs["color"] = color
        ax.scatter(coords[sel, 1], coords[sel, 0], s=marker_size, label=name,
                   edgecolors="none", **kwargs)
    if len(coords):
        ax.legend(loc="upper right", fontsize="small", markerscale=1.5)
    if image is None:
        ax.set_aspect("equal")
        if not ax.yaxis_inverted():
            ax.invert_yaxis()
    return _frame(ax, image, pixel_size, title)


def _frame(ax, image, pixel_size, title):
    """Limits to the image with a scale bar (when the pixel size is known), no ticks, title."""
    if image is not None:
        h, w = image.shape
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        if pixel_size is not None:
            add_scale_bar(ax, float(pixel_size), w, h)
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title)
    return ax


def plot_defect_graph(image, coordinates, labels, ax=None, pixel_size=None, *, estimator=None,
                      species=None, cmap="gray", bond_color="0.6"):
    """Show an image with its bond graph and atoms coloured by defect kind.

    Parameters
    ----------
    image : ndarray of shape (height, width) or None
        The image (shown in grey under the graph); None draws the graph only.
    coordinates : ndarray of shape (k, 3)
        Atoms: row, col (px) and class index.
    labels : array-like of shape (k,) of str
        Per-atom labels, e.g. one entry of
        :meth:`~sklatom.graphs.GraphDefectClassifier.predict`.
    ax : matplotlib.axes.Axes, optional
        Where to draw; default the current axes.
    pixel_size : float, optional
        Pixel size in Å/px, needed only when ``estimator`` is None (bonds are then learned
        from this image alone); None then measures in pixels.
    estimator : GraphDefectClassifier, optional
        A fitted classifier whose bond rules draw the bonds.
    species : list of str, optional
        Species names for the classes when ``estimator`` is None.
    cmap : str, default="gray"
        Colour map of the image.
    bond_color : color, default="0.6"
        Colour of the bond lines.

    Returns
    -------
    ax : matplotlib.axes.Axes
        The axes, with one scatter per label and a legend naming the labels.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> coords = np.array([[10, 10, 1], [10, 24, 1], [22, 17, 1]], dtype=float)
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> ax = plot_defect_graph(None, coords, ["lattice", "lattice", "V1"], ax=ax, pixel_size=0.1)
    >>> len(ax.collections[0].get_segments())  # bond lines: the third atom cuts the 1.4 Å pair
    2
    >>> sorted(t.get_text() for t in ax.get_legend().get_texts())
    ['V1', 'lattice']
    """
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    from .graphs import GraphDefectClassifier

    coords = np.asarray(coordinates, dtype=float).reshape(-1, 3)
    labels = np.asarray(labels, dtype=object).reshape(-1)
    if len(labels) != len(coords):
        raise ValueError(f"labels has {len(labels)} entries for {len(coords)} atoms in "
                         f"coordinates; expected one label per atom")
    if ax is None:
        ax = plt.gca()
    if image is not None:
        image = np.asarray(image)
        if image.ndim != 2:
            raise ValueError(f"image must be 2-D (height, width); got shape {image.shape}")
        ax.imshow(image, cmap=cmap)
    if estimator is None and len(coords):
        estimator = GraphDefectClassifier(
            species=species, pixel_size=1.0 if pixel_size is None else pixel_size)
        with warnings.catch_warnings():
            if pixel_size is None:  # lengths in px, not bonds in Å
                warnings.filterwarnings("ignore", "fit learned bond lengths", SklatomWarning)
            estimator.fit([coords])
    if len(coords) >= 2:
        (pairs,) = estimator.bonds([coords])
        segs = coords[pairs][:, :, [1, 0]]
        ax.add_collection(LineCollection(segs, colors=bond_color, linewidths=1.0, zorder=1,
                                         label="_bonds"))
    kinds = sorted(set(labels.tolist()), key=lambda s: (s != "lattice", s))
    colours = plt.get_cmap("tab10")
    for i, kind in enumerate(kinds):
        sel = labels == kind
        ax.scatter(coords[sel, 1], coords[sel, 0], s=12 if kind == "lattice" else 30,
                   color=colours(i % 10), label=kind, zorder=2)
    if kinds:
        ax.legend(loc="upper right", fontsize="small")
    if image is None and len(coords):
        ax.set_aspect("equal")
        if not ax.yaxis_inverted():
            ax.invert_yaxis()
    return ax


def plot_defects(image, coordinates, labels, ax=None, pixel_size=None, *, estimator=None,
                 species=None, cmap="gray", title=None):
    """Show an image with its bond graph and the atoms coloured by defect name.

    A thin wrapper of :func:`plot_defect_graph` that adds a scale bar and a title.

    Parameters
    ----------
    image : ndarray of shape (height, width) or None
        The image; None draws the graph only.
    coordinates : ndarray of shape (k, 3)
        Row, column (px) and class index of each atom.
    labels : array-like of shape (k,) of str
        Per-atom labels, ``"lattice"`` or a defect name, e.g. one entry of
        :meth:`~sklatom.graphs.GraphDefectClassifier.predict`.
    ax : matplotlib.axes.Axes or None, default=None
        Where to draw; None uses the current axes.
    pixel_size : float or None, default=None
        Pixel size in Å/px: draws a scale bar, and without ``estimator`` sets the bond lengths
        learned from this image.
    estimator : GraphDefectClassifier or None, default=None
        A fitted classifier whose bond rules draw the bonds.
    species : list of str or None, default=None
        Species names of the classes when ``estimator`` is None.
    cmap : str, default="gray"
        Colour map of the image.
    title : str or None, default=None
        Axes title.

    Returns
    -------
    ax : matplotlib.axes.Axes
        The axes, with one scatter collection per label and a legend naming them.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> coords = np.array([[10, 10, 1], [10, 24, 1], [22, 17, 1]], dtype=float)
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> ax = plot_defects(None, coords, ["lattice", "lattice", "V1"], ax=ax, pixel_size=0.1)
    >>> sorted(t.get_text() for t in ax.get_legend().get_texts())
    ['V1', 'lattice']
    """
    image = _check_image(image)
    coords = _check_coordinates(coordinates)
    ax = plot_defect_graph(image, coords, labels, ax=_axes(ax), pixel_size=pixel_size,
                           estimator=estimator, species=species, cmap=cmap)
    return _frame(ax, image, pixel_size, title)


def plot_descriptors(table, x, y, hue=None, ax=None, *, max_categories=20, cmap="viridis",
                     s=10, alpha=0.8):
    """Scatter two columns of a descriptor table, optionally coloured by a third.

    Parameters
    ----------
    table : pandas.DataFrame or anything ``pandas.DataFrame`` accepts
        The table, e.g. ``ContourDescriptor().set_output(transform="pandas").fit_transform(P)``
        or :meth:`~sklatom.graphs.GraphDefectClassifier.transform` wrapped in a DataFrame.
    x, y : str
        Column names for the horizontal and vertical axes.
    hue : str, array-like of shape (n_rows,) or None, default=None
        Colour by this column (or these values). Strings, booleans, categoricals and integer
        columns with at most ``max_categories`` values give one scatter per value and a legend;
        other numbers a continuous colour map with a colour bar.
    ax : matplotlib.axes.Axes or None, default=None
        Where to draw; None uses the current axes.
    max_categories : int, default=20
        Most distinct integer values treated as categories.
    cmap : str, default="viridis"
        Colour map of a continuous ``hue``.
    s : float, default=10
        Marker area in points².
    alpha : float, default=0.8
        Marker opacity.

    Returns
    -------
    ax : matplotlib.axes.Axes
        The axes: one collection (continuous or no hue) or one per category with a legend.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import pandas as pd
    >>> table = pd.DataFrame({"area": [1.0, 2.0, 3.0], "intensity": [3.0, 1.0, 2.0],
    ...                       "class": ["C", "C", "Si"]})
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> ax = plot_descriptors(table, "area", "intensity", hue="class", ax=ax)
    >>> [t.get_text() for t in ax.get_legend().get_texts()]
    ['C', 'Si']
    """
    import matplotlib
    import pandas as pd

    df = table if isinstance(table, pd.DataFrame) else pd.DataFrame(table)
    for name, value in (("x", x), ("y", y)):
        if value not in df.columns:
            raise ValueError(
                f"{name}={value!r} is not a column of the table; columns: {list(df.columns)}")
    if hue is None:
        hue_values = None
        hue_name = None
    elif isinstance(hue, str):
        if hue not in df.columns:
            raise ValueError(
                f"hue={hue!r} is not a column of the table; columns: {list(df.columns)}")
        hue_values = df[hue]
        hue_name = hue
    else:
        hue_values = pd.Series(np.asarray(hue).reshape(-1), index=df.index)
        hue_name = "hue"
        if len(hue_values) != len(df):
            raise ValueError(f"hue has {len(hue_values)} values for {len(df)} rows")
    ax = _axes(ax)
    xs, ys = df[x].to_numpy(), df[y].to_numpy()
    if hue_values is None:
        ax.scatter(xs, ys, s=s, alpha=alpha, edgecolors="none")
    else:
        kind = hue_values.dtype.kind
        categorical = (kind in "OUSb" or isinstance(hue_values.dtype, pd.CategoricalDtype)
                       or (kind in "iu" and hue_values.nunique() <= max_categories))
        if categorical:
            cycle = matplotlib.colormaps["tab10"]
            if isinstance(hue_values.dtype, pd.CategoricalDtype):
                levels = list(hue_values.cat.categories)
            else:
                levels = sorted(pd.unique(hue_values.dropna()), key=lambda v: (str(type(v)), v))
            for i, level in enumerate(levels):
                sel = (hue_values == level).to_numpy()
                if sel.any():
                    ax.scatter(xs[sel], ys[sel], s=s, alpha=alpha, color=cycle(i % 10),
                               label=str(level), edgecolors="none")
            ax.legend(title=hue_name, fontsize="small")
        else:
            sc = ax.scatter(xs, ys, c=hue_values.to_numpy(dtype=float), cmap=cmap, s=s,
                            alpha=alpha, edgecolors="none")
            ax.figure.colorbar(sc, ax=ax, label=hue_name)
    ax.set_xlabel(str(x))
    ax.set_ylabel(str(y))
    return ax
