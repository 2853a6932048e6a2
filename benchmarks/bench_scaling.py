"""Simulated images per second against the number of Dask workers.

    python benchmarks/bench_scaling.py [--n-images 8] [--workers 1 2]

Times ``MultisliceSimulator(method="prism", scheduler="distributed")`` on a
``dask.distributed.LocalCluster`` with 1, 2, ... single-threaded worker processes, beside the
default threaded scheduler in this process (``n_jobs`` = 1 and 2 threads), on the same
structures. On a real cluster the same code scales with the workers the cluster gives (see
docs/scaling.rst).
"""

import argparse
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-images", type=int, default=8)
    parser.add_argument("--size", type=float, default=12.8, help="field of view in Å")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    from distributed import Client, LocalCluster
    from sklatom.simulation import MultisliceSimulator
    from sklatom.structures import make_structure

    structures = [make_structure("MoS2", (args.size, args.size), random_state=i)
                  for i in range(args.n_images)]
    MultisliceSimulator(method="prism", progress=False).transform(structures[:1])  # warm-up
    print(f"{args.n_images} PRISM images of MoS2, {args.size} Å at 0.1 Å/px")
    reference = None
    for threads in (1, 2):
        sim = MultisliceSimulator(method="prism", progress=False, n_jobs=threads)
        t = time.perf_counter()
        images = sim.transform(structures)
        dt = time.perf_counter() - t
        reference = images if reference is None else reference
        print(f"  threads in this process, n_jobs={threads}: {args.n_images / dt:6.2f} images/s")
    for n in args.workers:
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                          host="127.0.0.1", dashboard_address=None) as cluster, \
                Client(cluster):
            sim = MultisliceSimulator(method="prism", progress=False, scheduler="distributed")
            sim.transform(structures[:n])  # start-up and imports on the workers
            t = time.perf_counter()
            images = sim.transform(structures)
            dt = time.perf_counter() - t
        same = np.allclose(images, reference, rtol=1e-4, atol=1e-8)
        print(f"  LocalCluster, {n} worker(s) x 1 thread: {args.n_images / dt:6.2f} images/s "
              f"(same images as threads: {same})")


if __name__ == "__main__":
    main()
