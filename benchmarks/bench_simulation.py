"""Simulation speed and accuracy: sklatom's methods beside plain abTEM, measured in one run.

    python benchmarks/bench_simulation.py                 # 256x256 px at 0.1 Å/px
    python benchmarks/bench_simulation.py --size 128 --baseline-size 48

For graphene and MoS2 it times, per image:
  * sklatom ``incoherent``, ``prism`` and ``multislice`` (Nyquist scan + Fourier interpolation)
    at ``--size`` px, and
  * at ``--baseline-size`` px (plain abTEM is too slow for 256x256 px on 2 cores): plain abTEM
    as its tutorials use it (``Potential(sampling=0.05)``, ``GridScan(sampling=pixel_size)``, the
    probe scanned at every output pixel), beside sklatom's methods on the same structure.
Agreement with the plain-abTEM reference: Pearson r and the mean offset (Å) of each column's
intensity centroid from the ground-truth column.
"""

import argparse
import time

import numpy as np

from sklatom.simulation import MultisliceSimulator
from sklatom.structures import make_structure, project_columns


def plain_abtem(atoms, pixel_size, energy=80e3, semiangle=25.0, n_jobs=2):
    """What an abTEM tutorial does: scan every output pixel with multislice."""
    import abtem

    y0, x0, height, width = atoms.info["scan_region"]
    potential = abtem.Potential(atoms, sampling=0.05, slice_thickness=1.0,
                                projection="infinite", parametrization="lobato")
    probe = abtem.Probe(energy=energy, semiangle_cutoff=semiangle)
    shape = (int(round(height / pixel_size)), int(round(width / pixel_size)))
    scan = abtem.GridScan(start=(x0, y0), end=(x0 + width, y0 + height),
                          gpts=(shape[1], shape[0]), endpoint=False)  # exactly pixel_size
    image = probe.scan(potential, scan=scan, detectors=abtem.AnnularDetector(80, 190))
    array = image.compute(scheduler="threads", num_workers=n_jobs, progress_bar=False).array
    return np.asarray(array, dtype=np.float32).T


def column_offset(image, atoms, pixel_size, radius=4):
    coords = project_columns(atoms, pixel_size, shape=image.shape).coordinates
    rr, cc = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    out = []
    for r, c, _ in coords:
        r0, c0 = int(round(r)), int(round(c))
        if radius <= r0 < image.shape[0] - radius and radius <= c0 < image.shape[1] - radius:
            w = image[r0 - radius:r0 + radius + 1, c0 - radius:c0 + radius + 1]
            w = np.clip(w - np.percentile(w, 60), 0, None)
            out.append(np.hypot((w * rr).sum() / w.sum() + r0 - r,
                                (w * cc).sum() / w.sum() + c0 - c) * pixel_size)
    return float(np.mean(out))


def timed(fn, repeat=1):
    best, result = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--baseline-size", type=int, default=48)
    parser.add_argument("--pixel-size", type=float, default=0.1)
    parser.add_argument("--baseline-only", action="store_true",
                        help="only the comparison with plain abTEM at --baseline-size")
    parser.add_argument("--skip-multislice", action="store_true",
                        help="skip sklatom multislice at --size (the slowest)")
    args = parser.parse_args()
    ps = args.pixel_size
    print(f"pixel size {ps} Å/px, 80 kV, 25 mrad, HAADF 80-190 mrad, 2 dask threads")
    # warm-up: abTEM import, numba compilation, the cross-section tables of every element
    for lattice in ("graphene", "MoS2"):
        MultisliceSimulator(method="incoherent", progress=False).transform(
            [make_structure(lattice, (5.0, 5.0), random_state=0)])

    for lattice in ("graphene", "MoS2"):
        print(f"\n== {lattice} ==")
        big = make_structure(lattice, (args.size * ps,) * 2, random_state=1)
        methods = ["incoherent", "prism"] + ([] if args.skip_multislice else ["multislice"])
        if args.baseline_only:
            methods = []
        for method in methods:
            sim = MultisliceSimulator(method=method, pixel_size=ps, n_jobs=2, progress=False)
            t, _ = timed(lambda: sim.transform([big]), repeat=3 if method == "incoherent" else 1)
            print(f"{method:>11s} {args.size}x{args.size} px: {t:8.2f} s/image "
                  f"= {60 / t:8.1f} images/min")

        small = make_structure(lattice, (args.baseline_size * ps,) * 2, random_state=2)
        t_ref, ref = timed(lambda: plain_abtem(small, ps))
        n = args.baseline_size
        print(f"--- {n}x{n} px, against plain abTEM (every pixel scanned): {t_ref:.1f} s/image, "
              f"column offset {column_offset(ref, small, ps):.3f} Å")
        for method in ("multislice", "prism", "incoherent"):
            sim = MultisliceSimulator(method=method, pixel_size=ps, n_jobs=2, progress=False)
            t, img = timed(lambda: sim.transform([small])[0], repeat=2)
            r = np.corrcoef(img.ravel(), ref.ravel())[0, 1]
            print(f"{method:>11s} {n}x{n} px: {t:7.2f} s/image, {t_ref / t:7.1f}x faster than "
                  f"plain abTEM, r = {r:.5f}, column offset "
                  f"{column_offset(img, small, ps):.3f} Å")


if __name__ == "__main__":
    main()
