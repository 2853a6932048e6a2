"""Follow a structural transformation through a movie with contour descriptors and KMeans
======================================================================================

An STM-like movie of molecules self-assembled on a surface: broad, elongated blobs on a lattice
that, over 11 frames, shears from hexagonal into square while the molecules stretch and turn to
lie along the new lattice rows. Every frame is turned into a foreground probability map, every
molecule (contour) into descriptors with :class:`~sklatom.descriptors.ContourDescriptor` (shape
and orientation, neighbour distances, 6-fold and 4-fold bond-orientational order), and KMeans
on the standardised descriptors of all frames groups the molecules into 3 structural states.
The fraction of each state per frame shows the transformation; the states are named by the
mean frame of their members (early / intermediate / late).

Usage: python examples/descriptor_time_series.py [output.png]
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from sklatom.descriptors import ContourDescriptor  # noqa: E402

PIXEL_SIZE = 0.25  # Å/px
SHAPE = (320, 320)  # px
SPACING = 8.0  # lattice constant, Å
N_FRAMES = 11


def frame(t, rng):
    """Foreground probability (H, W) of the lattice at transformation progress t in [0, 1]."""
    a = SPACING / PIXEL_SIZE  # px
    a1 = np.array([0.0, a])  # (drow, dcol)
    # second lattice vector: 60° from a1 (hexagonal) sheared to 90° (square)
    a2 = a * np.array([-((1 - t) * np.sqrt(3) / 2 + t), (1 - t) * 0.5])
    n = int(2 * max(SHAPE) / a)
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    pts = i.reshape(-1, 1) * a1 + j.reshape(-1, 1) * a2 + np.array(SHAPE) / 2
    pts = pts[(pts[:, 0] > -10) & (pts[:, 0] < SHAPE[0] + 10)
              & (pts[:, 1] > -10) & (pts[:, 1] < SHAPE[1] + 10)]
    pts = pts + rng.normal(0, 0.4, size=pts.shape)  # thermal jitter, px
    # molecules: round-ish (sigma 1.0 x 0.9 Å) -> elongated (1.6 x 0.7 Å) along 45°
    s_major = (1.0 + 0.6 * t) / PIXEL_SIZE
    s_minor = (0.9 - 0.2 * t) / PIXEL_SIZE
    rr, cc = np.mgrid[:SHAPE[0], :SHAPE[1]].astype(float)
    fg = np.zeros(SHAPE)
    for (r0, c0), ang in zip(pts, rng.normal(45.0 * t, 8.0, size=len(pts))):
        win = (slice(max(int(r0) - 20, 0), int(r0) + 21),
               slice(max(int(c0) - 20, 0), int(c0) + 21))
        x, y = cc[win] - c0, -(rr[win] - r0)
        th = np.deg2rad(ang)
        u = x * np.cos(th) + y * np.sin(th)
        v = -x * np.sin(th) + y * np.cos(th)
        fg[win] += 0.95 * np.exp(-0.5 * ((u / s_major) ** 2 + (v / s_minor) ** 2))
    return np.clip(fg, 0.0, 1.0)


def main(out="descriptor_time_series.png"):
    rng = np.random.default_rng(0)
    progress = np.linspace(0.0, 1.0, N_FRAMES)
    fg = np.stack([frame(t, rng) for t in progress])
    P = np.stack([1.0 - fg, fg], axis=1)  # (n_frames, 2 classes, H, W)

    border = int(SPACING / PIXEL_SIZE)  # leave out molecules whose neighbours are cut off
    common = dict(pixel_size=PIXEL_SIZE, exclude_border=border)
    d6 = ContourDescriptor(order=6, **common).set_output(transform="pandas").fit_transform(P)
    d4 = (ContourDescriptor(order=4, include_coordinates=False, **common)
          .set_output(transform="pandas").fit_transform(P))
    table = d6.join(d4["psi4"])
    features = ["eccentricity", "orientation_cos2", "orientation_sin2",
                "minor_axis_length_A", "major_axis_length_A", "nn_distance_A",
                "nn_mean_distance_A", "psi6", "psi4"]
    model = make_pipeline(StandardScaler(), KMeans(n_clusters=3, n_init=10, random_state=0))
    labels = model.fit_predict(table[features])

    frame_of = table.index.get_level_values("image").to_numpy()
    order = np.argsort([frame_of[labels == k].mean() for k in range(3)])
    names = ["early", "intermediate", "late"]
    state = pd.Series(np.array(names)[np.argsort(order)][labels], index=table.index)
    fractions = (pd.crosstab(frame_of, state, normalize="index")
                 .reindex(columns=names, fill_value=0.0))
    fractions.index.name = "frame"
    means = table.groupby(level="image")[["eccentricity", "orientation_deg", "psi6", "psi4",
                                          "nn_distance_A"]].mean()
    summary = fractions.join(means.rename_axis("frame")).assign(progress=progress)

    print(f"{N_FRAMES} frames {SHAPE} px at {PIXEL_SIZE} Å/px, {len(table)} molecules described; "
          f"KMeans(3) on {len(features)} standardised descriptors")
    with pd.option_context("display.width", 160, "display.precision", 2):
        print(summary.to_string(float_format=lambda v: f"{v:.2f}"))

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    axes[0].imshow(fg[0], cmap="afmhot")
    axes[0].set_title("frame 0: hexagonal, round molecules")
    axes[1].imshow(fg[-1], cmap="afmhot")
    axes[1].set_title(f"frame {N_FRAMES - 1}: square, elongated molecules")
    for ax in axes[:2]:
        ax.set_axis_off()
    for name, marker in zip(names, "o^s"):
        axes[2].plot(fractions.index, fractions[name], marker=marker, label=name)
    axes[2].plot(summary.index, summary["psi6"], "k--", lw=1, label="mean |psi6|")
    axes[2].plot(summary.index, summary["psi4"], "k:", lw=1, label="mean |psi4|")
    axes[2].set_xlabel("frame")
    axes[2].set_ylabel("fraction of molecules in cluster")
    axes[2].set_ylim(-0.02, 1.02)
    axes[2].legend(fontsize=8)
    axes[2].set_title("KMeans states of the contour descriptors")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(f"saved {out}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
