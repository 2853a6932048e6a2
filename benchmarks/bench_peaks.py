"""Benchmark PeakFinder against scikit-image's peak_local_max on a large synthetic map.

Builds a probability map ``(1, 3, size, size)`` (background + 2 atom classes) with about
``n_atoms`` Gaussian blobs (sigma 2 px) on a jittered square lattice, then times
``PeakFinder(method="components")``, ``PeakFinder(method="maxima")`` and
``skimage.feature.peak_local_max`` (same ``min_distance`` and threshold, on ``1 - P[0]``),
and scores each against the true positions with :func:`sklatom.metrics.atom_scores`.

Usage::

    python benchmarks/bench_peaks.py --size 4096 --n-atoms 100000 --repeat 3
"""

import argparse
import time

import numpy as np
from skimage.feature import peak_local_max

from sklatom.metrics import atom_scores
from sklatom.peaks import PeakFinder


def make_map(size, n_atoms, sigma=2.0, amplitude=0.95, random_state=0):
    """Jittered-lattice Gaussian blobs; returns P (1, 3, size, size) float32 and truth (k, 3)."""
    rng = np.random.default_rng(random_state)
    n_side = max(int(np.sqrt(n_atoms)), 1)
    spacing = (size - 8.0) / n_side
    g = (np.arange(n_side) + 0.5) * spacing + 4.0
    rows, cols = np.meshgrid(g, g, indexing="ij")
    jitter = rng.uniform(-0.15, 0.15, (2, n_side, n_side)) * spacing
    pos = np.column_stack([(rows + jitter[0]).ravel(), (cols + jitter[1]).ravel()])
    cls = rng.integers(1, 3, len(pos))
    # render every blob in an 11 x 11 window with one bincount per class
    rad = int(np.ceil(3 * sigma)) + 1
    off = np.arange(-rad, rad + 1)
    centre = np.rint(pos).astype(np.intp)
    rr = centre[:, 0, None, None] + off[None, :, None]
    cc = centre[:, 1, None, None] + off[None, None, :]
    val = amplitude * np.exp(-((rr - pos[:, 0, None, None]) ** 2
                               + (cc - pos[:, 1, None, None]) ** 2) / (2 * sigma ** 2))
    inside = (rr >= 0) & (rr < size) & (cc >= 0) & (cc < size)
    P = np.zeros((3, size, size), np.float32)
    for c in (1, 2):
        sel = (cls == c)[:, None, None] & inside
        flat = (rr * size + cc)[sel]
        P[c] = np.bincount(flat, val[sel], minlength=size * size).reshape(size, size)
    fg = P[1] + P[2]
    over = fg > 0.999
    if over.any():
        P[1:, over] *= 0.999 / fg[over]
    P[0] = 1.0 - P[1] - P[2]
    return P[np.newaxis], np.column_stack([pos, cls]).astype(np.float64)


def best_time(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="map height and width (px)")
    parser.add_argument("--n-atoms", type=int, default=100_000, help="approximate atom count")
    parser.add_argument("--repeat", type=int, default=3, help="timings per method (best kept)")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--min-distance", type=int, default=2, help="px")
    parser.add_argument("--tolerance", type=float, default=1.0, help="matching tolerance (px)")
    args = parser.parse_args(argv)

    t = time.perf_counter()
    P, truth = make_map(args.size, args.n_atoms)
    print(f"map {P.shape} float32, {len(truth)} atoms, built in {time.perf_counter() - t:.2f} s")

    results = {}
    for method in ("components", "maxima"):
        finder = PeakFinder(method=method, threshold=args.threshold,
                            min_distance=args.min_distance).fit(P)
        dt, coords = best_time(lambda: finder.transform(P)[0], args.repeat)
        results[f"PeakFinder({method})"] = (dt, coords)
    finder = PeakFinder(threshold=args.threshold, refine="gaussian").fit(P)
    dt, coords = best_time(lambda: finder.transform(P)[0], 1)
    results["PeakFinder(comp.+gauss)"] = (dt, coords)

    fg = 1.0 - P[0, 0]

    def skimage_peaks():
        pk = peak_local_max(fg, min_distance=args.min_distance, threshold_abs=args.threshold,
                            exclude_border=False)
        cls = np.argmax(P[0, 1:, pk[:, 0], pk[:, 1]], axis=1) + 1
        return np.column_stack([pk, cls]).astype(np.float64)

    dt, coords = best_time(skimage_peaks, args.repeat)
    results["skimage.peak_local_max"] = (dt, coords)

    ref = results["skimage.peak_local_max"][0]
    print(f"best of {args.repeat} (refine='gaussian': 1 run, refined on 1 - P[0]); F1/RMSE "
          f"against the truth with tolerance {args.tolerance} px")
    print(f"{'method':<26}{'time (s)':>10}{'atoms/s':>12}{'speed-up':>10}{'found':>9}"
          f"{'F1':>8}{'RMSE (px)':>11}{'class acc':>11}")
    for name, (dt, coords) in results.items():
        s = atom_scores(coords, truth, tolerance=args.tolerance)
        print(f"{name:<26}{dt:>10.3f}{len(truth) / dt:>12.3g}{ref / dt:>9.1f}x{len(coords):>9d}"
              f"{s['f1']:>8.4f}{s['rmse']:>11.4f}{s['class_accuracy']:>11.4f}")
    atomai_locator(P, truth, ref, args)


def atomai_locator(P, truth, ref, args):
    """AtomAI's Locator on the same map, in the virtualenv ``python -m benchmarks`` made."""
    import os
    import tempfile

    import sys

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run as a script
    from peers import PeerUnavailable, run_in_venv, venv_python

    python = venv_python("atomai")
    if not os.path.exists(python):
        print("AtomAI Locator: not measured (no AtomAI virtualenv; `python -m benchmarks` "
              "creates it)")
        return
    maps = np.moveaxis(P, 1, -1)
    maps = np.concatenate([maps[..., 1:], maps[..., :1]], axis=-1)  # background last
    with tempfile.TemporaryDirectory() as tmp:
        request, result = os.path.join(tmp, "req.npz"), os.path.join(tmp, "res.npz")
        np.savez(request, maps=maps.astype(np.float32), threshold=0.5)
        try:
            run_in_venv(python, "atomai-locate", request, result, timeout=3600)
        except PeerUnavailable as exc:
            print(f"AtomAI Locator: not measured ({exc})")
            return
        with np.load(result) as data:
            dt = float(data["seconds"][0])
            coords = data["coords_0"]
    s = atom_scores(coords, truth[:, :2], tolerance=args.tolerance)
    print(f"{'AtomAI Locator (venv)':<26}{dt:>10.3f}{len(truth) / dt:>12.3g}{ref / dt:>9.1f}x"
          f"{len(coords):>9d}{s['f1']:>8.4f}{s['rmse']:>11.4f}{'-':>11}")


if __name__ == "__main__":
    main()
