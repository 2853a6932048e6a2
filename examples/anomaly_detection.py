"""Find oddly shaped atomic columns with contour descriptors and an outlier detector
=================================================================================

Simulated MoS2 images come with their ground-truth label masks. We turn the masks into
probability maps (one-hot, slightly blurred, normalised over classes: what a good segmenter
outputs) and plant a few anomalous columns in the maps: elongated, enlarged, shrunk, dumbbell
shaped and displaced (strained) ones. A scikit-learn pipeline

    ContourDescriptor -> StandardScaler -> IsolationForest

describes every contour (shape, intensity of the raw image, neighbourhood; contours within 2 Å
of the image edge are left out, as their neighbourhood is cut off) and scores how
anomalous it is; a GaussianMixture fitted on the same scaled descriptors gives a second
opinion (low log-likelihood = anomalous). We flag the 3 % most anomalous contours and report
precision and recall of the planted ones, then plot the image and the foreground probability
with the flagged contours circled.

Usage: python examples/anomaly_detection.py [output.png]
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402
from sklearn.ensemble import IsolationForest  # noqa: E402
from sklearn.mixture import GaussianMixture  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from sklatom.datasets import make_lattice_images  # noqa: E402
from sklatom.descriptors import ContourDescriptor  # noqa: E402

PIXEL_SIZE = 0.1  # Å/px
FLAG_FRACTION = 0.03  # flag the 3 % most anomalous contours
BORDER_PX = 20  # drop contours within 2 Å of the edge: their neighbourhood is cut off
KINDS = ("elongated", "enlarged", "shrunk", "dumbbell", "displaced")


def disk(shape, centre, radius):
    rr, cc = np.mgrid[:shape[0], :shape[1]]
    return (rr - centre[0]) ** 2 + (cc - centre[1]) ** 2 <= radius ** 2


def ellipse(shape, centre, a, b, angle_deg):
    """Semi-axes a, b (px); major axis at angle_deg from +col, counter-clockwise as displayed."""
    rr, cc = np.mgrid[:shape[0], :shape[1]].astype(float)
    x, y = cc - centre[1], -(rr - centre[0])
    t = np.deg2rad(angle_deg)
    u = x * np.cos(t) + y * np.sin(t)
    v = -x * np.sin(t) + y * np.cos(t)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def plant_anomalies(masks, coords, n_per_image, rng, margin=30):
    """Redraw some columns of the label masks with an anomalous shape or position."""
    masks = masks.copy()
    planted = []  # (image, row, col, kind): where the anomalous contour now is
    h, w = masks.shape[1:]
    radius = 0.5 / PIXEL_SIZE  # the masks' disk radius in px
    count = 0
    for i, (mask, cols) in enumerate(zip(masks, coords)):
        inside = np.flatnonzero((cols[:, 0] > margin) & (cols[:, 0] < h - margin)
                                & (cols[:, 1] > margin) & (cols[:, 1] < w - margin))
        chosen = []
        for j in rng.permutation(inside):
            if all(np.hypot(*(cols[j, :2] - cols[k, :2])) > 50 for k in chosen):
                chosen.append(j)
            if len(chosen) == n_per_image:
                break
        for j in chosen:
            r, c, cls = cols[j]
            kind = KINDS[count % len(KINDS)]
            count += 1
            mask[disk((h, w), (r, c), radius + 1)] = 0
            if kind == "elongated":
                new = ellipse((h, w), (r, c), 8.0, 3.0, rng.uniform(-90, 90))
            elif kind == "enlarged":
                new = disk((h, w), (r, c), 8.0)
            elif kind == "shrunk":
                new = disk((h, w), (r, c), 2.5)
            elif kind == "dumbbell":
                t = np.deg2rad(rng.uniform(0, 180))
                dr, dc = 3.5 * np.sin(t), 3.5 * np.cos(t)
                new = disk((h, w), (r + dr, c + dc), 3.5) | disk((h, w), (r - dr, c - dc), 3.5)
            else:  # displaced: moved 0.5 Å towards its nearest neighbour (local strain)
                others = np.delete(cols[:, :2], j, axis=0)
                nb = others[np.argmin(np.hypot(*(others - cols[j, :2]).T))]
                step = (nb - cols[j, :2]) / np.hypot(*(nb - cols[j, :2])) * 5.0
                r, c = r + step[0], c + step[1]
                new = disk((h, w), (r, c), radius)
            mask[new] = int(cls)
            planted.append((i, r, c, kind))
    return masks, planted


def probability_maps(masks, n_classes, sigma=1.5):
    P = np.stack([(masks == k).astype(float) for k in range(n_classes)], axis=1)
    P = ndimage.gaussian_filter(P, sigma=(0, 0, sigma, sigma))
    return (P / P.sum(axis=1, keepdims=True)).astype(np.float32)


def precision_recall(flagged, truth):
    tp = np.sum(flagged & truth)
    return tp / max(flagged.sum(), 1), tp / max(truth.sum(), 1)


def main(out="anomaly_detection.png"):
    rng = np.random.default_rng(0)
    images, masks, coords, info = make_lattice_images(
        4, "MoS2", shape=(256, 256), pixel_size=PIXEL_SIZE, defects=None, return_info=True,
        random_state=0)
    masks, planted = plant_anomalies(masks, coords, 3, rng)
    P = probability_maps(masks, len(info.classes))
    print(f"{len(images)} MoS2 images {images.shape[1:]} px at {PIXEL_SIZE} Å/px, classes "
          f"{info.classes}; planted {len(planted)} anomalies: "
          + ", ".join(f"{k} x{sum(p[3] == k for p in planted)}" for k in KINDS))

    # positions and classes of the rows, to match them to the planted columns and to plot them
    where = (ContourDescriptor(pixel_size=PIXEL_SIZE, order=3, exclude_border=BORDER_PX)
             .set_output(transform="pandas").fit_transform(P, images=images))
    image_of = where.index.get_level_values("image").to_numpy()
    truth = np.zeros(len(where), dtype=bool)
    kind_of = np.full(len(where), "", dtype=object)
    for i, r, c, kind in planted:
        d = np.hypot(where.row.to_numpy() - r, where.col.to_numpy() - c)
        d[image_of != i] = np.inf
        truth[d.argmin()] = True
        kind_of[d.argmin()] = kind

    # the pipeline takes X = (P, images): descriptors use the raw image for intensities
    descriptor = ContourDescriptor(pixel_size=PIXEL_SIZE, order=3, exclude_border=BORDER_PX,
                                   include_coordinates=False)
    pipe = make_pipeline(descriptor, StandardScaler(),
                         IsolationForest(n_estimators=300, random_state=0))
    pipe.fit((P, images))
    iso_score = -pipe.score_samples((P, images))  # high = anomalous
    n_flag = int(np.ceil(FLAG_FRACTION * len(where)))
    iso_flag = np.zeros(len(where), dtype=bool)
    iso_flag[np.argsort(iso_score)[::-1][:n_flag]] = True

    Z = pipe[:-1].transform((P, images))  # scaled descriptors
    gmm = GaussianMixture(n_components=2, covariance_type="full", reg_covar=1e-3,
                          random_state=0).fit(Z)
    gmm_score = -gmm.score_samples(Z)
    gmm_flag = np.zeros(len(where), dtype=bool)
    gmm_flag[np.argsort(gmm_score)[::-1][:n_flag]] = True

    print(f"{len(where)} contours described by {descriptor.n_features_out_} features; "
          f"flagging the {n_flag} most anomalous ({FLAG_FRACTION:.0%})")
    for name, flag in (("IsolationForest", iso_flag), ("GaussianMixture", gmm_flag)):
        p, r = precision_recall(flag, truth)
        missed = sorted(kind_of[truth & ~flag])
        print(f"  {name:16s} precision {p:.2f}  recall {r:.2f}  missed: {missed or 'none'}")
    ranks = np.argsort(np.argsort(-iso_score))
    print("  IsolationForest rank of each planted anomaly (0 = most anomalous): "
          + ", ".join(f"{kind_of[k]} {ranks[k]}" for k in np.flatnonzero(truth)))

    # figure: image 0, its foreground probability, flagged (red) and planted (yellow) contours
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.5))
    sel = image_of == 0
    for ax, data, title in ((axes[0], images[0], "simulated image"),
                            (axes[1], 1 - P[0, 0], "foreground probability 1 - P[background]")):
        ax.imshow(data, cmap="gray")
        ax.scatter(where.col[sel & truth], where.row[sel & truth], s=80, marker="+",
                   color="yellow", label="planted")
        ax.scatter(where.col[sel & iso_flag], where.row[sel & iso_flag], s=400,
                   facecolors="none", edgecolors="red", linewidths=1.5,
                   label="flagged (IsolationForest)")
        ax.set_title(title)
        ax.set_axis_off()
    axes[0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(f"saved {out}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
