"""Peers of sklatom, each run in its own virtualenv through a subprocess.

This file is imported by ``python -m benchmarks`` (to build the virtualenvs and call the peers)
and is also run as a script *inside* a peer's virtualenv::

    <venv>/bin/python benchmarks/peers.py atomap-find  request.npz result.npz
    <venv>/bin/python benchmarks/peers.py atomai-train request.npz model.pt
    <venv>/bin/python benchmarks/peers.py atomai-find  request.npz result.npz
    <venv>/bin/python benchmarks/peers.py atomai-locate request.npz result.npz

so at module level it uses the standard library only; numpy and the peer are imported inside
the functions that run in the venv. Data go both ways as ``.npz`` files: the request holds
``images`` (n, height, width) float32 and the parameters, the result ``coords_<i>`` arrays of
row, col (px) per image plus ``seconds`` (the peer's own time per image, loading excluded).

The peers are only ever called as installed packages through their documented API; none of
their code is copied here (atomap is GPL-3).
"""

import json
import os
import subprocess
import sys
import time

#: Default folder of the peer virtualenvs (and of trained peer models); reused across runs.
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "sklatom-bench")

#: Peer name -> pip install steps (each a list of requirement strings, installed in order).
PEERS = {
    "atomap": [["atomap"]],
    # AtomAI 0.8.1 imports torchvision; pip takes torch/torchvision from the local disk here.
    # (mendeleev 0.6.1, which atomai 0.8.1 pins, imports six without declaring it)
    "atomai": [["torch==2.14.1", "torchvision==0.29.1"], ["atomai==0.8.1"], ["six"]],
}


class PeerUnavailable(RuntimeError):
    """A peer could not be installed or run; the message is the reason shown in the tables."""


def _short(text, n=300):
    text = " ".join(str(text).split())
    return text if len(text) <= n else "..." + text[-n:]


def venv_python(name, cache_dir=DEFAULT_CACHE):
    return os.path.join(cache_dir, "venvs", name, "bin", "python")


def ensure_venv(name, cache_dir=DEFAULT_CACHE, timeout=1800, log=print):
    """Create (once) the virtualenv of peer ``name`` and return its python executable.

    A marker file lists the install steps done, so a finished venv is reused, a venv whose
    steps are a prefix of the wanted ones only gets the missing steps, and any other (e.g. a
    killed install) is rebuilt. Raises :class:`PeerUnavailable` with pip's last words when a
    step fails or the install runs past ``timeout`` seconds.
    """
    steps = PEERS[name]
    root = os.path.join(cache_dir, "venvs", name)
    marker = os.path.join(root, ".sklatom-bench-steps.json")
    py = venv_python(name, cache_dir)
    done = []
    if os.path.exists(marker) and os.path.exists(py):
        with open(marker) as f:
            done = json.load(f)
    if done == steps:
        return py
    os.makedirs(os.path.dirname(root), exist_ok=True)
    logfile = os.path.join(cache_dir, f"install-{name}.log")
    cmds = []
    if done != steps[:len(done)] or not done:
        done = []
        cmds = [[sys.executable, "-m", "venv", "--clear", root],
                [py, "-m", "pip", "install", "--upgrade", "pip"]]
    todo = steps[len(done):]
    cmds += [[py, "-m", "pip", "install", *reqs] for reqs in todo]
    log(f"[peers] installing {name} into {root}: {todo} (log: {logfile})")
    t0 = time.time()
    with open(logfile, "a") as out:
        for cmd in cmds:
            out.write("$ " + " ".join(cmd) + "\n")
            out.flush()
            remaining = timeout - (time.time() - t0)
            try:
                proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT,
                                      timeout=max(remaining, 1))
            except subprocess.TimeoutExpired:
                raise PeerUnavailable(f"installing {name} took longer than {timeout} s") from None
            if proc.returncode != 0:
                out.flush()
                with open(logfile) as f:
                    tail = f.read()[-600:]
                raise PeerUnavailable(f"`{' '.join(cmd[2:])}` failed: {_short(tail)}")
            if cmd[1:4] == ["-m", "pip", "install"] and cmd[4:] in steps:
                done.append(cmd[4:])
                with open(marker, "w") as f:
                    json.dump(done, f)
    log(f"[peers] {name} installed in {time.time() - t0:.0f} s")
    return py


def run_in_venv(python, command, request, result_path, timeout, env=None):
    """Run ``peers.py <command> request result`` with the venv's python; return its stdout."""
    cmd = [python, os.path.abspath(__file__), command, request, result_path]
    full_env = dict(os.environ, **(env or {}))
    full_env.pop("PYTHONPATH", None)  # the peer sees its own venv only
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=full_env, cwd=os.path.dirname(result_path) or ".")
    except subprocess.TimeoutExpired:
        raise PeerUnavailable(f"`{command}` ran longer than {timeout} s") from None
    if proc.returncode != 0:
        raise PeerUnavailable(f"`{command}` failed: {_short(proc.stderr or proc.stdout)}")
    return proc.stdout


def peer_version(python, package):
    """The installed version of ``package`` in a venv (or "?")."""
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return proc.stdout.strip() or "?"


# --------------------------------------------------------------------------------------------
# Below: code that runs inside a peer's venv (numpy and the peer imported lazily).
# --------------------------------------------------------------------------------------------

def _load_request(path):
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _save_result(path, coords, seconds, errors=None):
    """``errors``: one string per image, "" when that image went well."""
    import numpy as np

    arrays = {f"coords_{i}": np.asarray(c, dtype=np.float64).reshape(-1, 2)
              for i, c in enumerate(coords)}
    errors = errors or [""] * len(coords)
    np.savez(path, n=len(coords), seconds=np.asarray(seconds, dtype=np.float64),
             errors=np.asarray(errors, dtype=str), **arrays)


def atomap_find(request, result):
    """Atomap: ``get_atom_positions`` then 2-D Gaussian refinement, per image.

    Request: ``images``, ``separation`` (px, one per image), ``threshold_rel`` (one per image),
    ``refine`` (0: peak finding only, for tuning; 1: centre of mass then 2-D Gaussians, the
    recipe of atomap's documentation).
    """
    import logging
    import warnings

    import numpy as np

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import atomap.api as am
    import hyperspy.api as hs

    req = _load_request(request)
    images = req["images"]
    refine = bool(int(req["refine"]))
    coords, seconds, errors = [], [], []
    for img, sep, thr in zip(images, req["separation"], req["threshold_rel"]):
        t0 = time.perf_counter()
        try:
            s = hs.signals.Signal2D(np.asarray(img, dtype=np.float64))
            pos = am.get_atom_positions(s, separation=int(sep), threshold_rel=float(thr))
            pos = np.asarray(pos, dtype=float).reshape(-1, 2)  # (x, y) = (col, row)
            if refine and len(pos) >= 2:
                sub = am.Sublattice(pos, image=s.data, fix_negative_values=True)
                # atomap's default of 9 neighbours needs at least 10 atoms
                sub.find_nearest_neighbors(nearest_neighbors=min(9, len(pos) - 1))
                sub.refine_atom_positions_using_center_of_mass(show_progressbar=False)
                sub.refine_atom_positions_using_2d_gaussian(show_progressbar=False)
                pos = np.stack([sub.x_position, sub.y_position], axis=1).astype(float)
            errors.append("")
        except Exception as exc:  # reported per image, the other images still count
            pos = np.zeros((0, 2))
            errors.append(f"atomap failed on an image: {type(exc).__name__}: {exc}")
        seconds.append(time.perf_counter() - t0)
        coords.append(pos[:, ::-1] if len(pos) else np.zeros((0, 2)))
    _save_result(result, coords, seconds, errors)


def atomai_train(request, result):
    """AtomAI: train ``Segmentor("Unet")`` on images and masks for a fixed wall-time budget.

    Request: ``images`` (n, h, w), ``masks`` (n, h, w) int, ``budget_seconds``, ``seed``,
    ``batch_size``. AtomAI trains for a number of iterations, not seconds, so two short trial
    runs measure the start-up cost and the time per iteration, and the real run gets the
    iterations that fit in the budget. Writes the trained model (AtomAI's own
    ``save_model``) next to ``result``.

    No on-the-fly augmentation: with more than one atom class AtomAI's augmentor
    (``transforms.imaug.squeeze_channels``) drops every tile whose mask lacks one of the
    classes (a graphene tile without Si dopant), and a batch of such tiles crashes training
    with "need at least one array to concatenate".
    """
    import warnings

    import numpy as np

    warnings.filterwarnings("ignore")
    import atomai as aoi
    import torch

    torch.set_num_threads(int(os.environ.get("SKLATOM_BENCH_THREADS", "1")))
    req = _load_request(request)
    X = req["images"].astype(np.float32)
    # AtomAI expects images normalized to [0, 1] and 0-based class labels
    X = np.stack([(x - x.min()) / max(float(x.max() - x.min()), 1e-12) for x in X])
    y = req["masks"].astype(np.int64)
    nb_classes = int(y.max()) + 1
    # sklatom's masks have background = 0; AtomAI's Locator takes the *last* channel as the
    # background, so class c becomes c - 1 and the background nb_classes - 1
    y = (y - 1) % nb_classes
    n_val = max(1, len(X) // 10)
    budget = float(req["budget_seconds"])
    seed = int(req["seed"])
    batch = int(req["batch_size"])

    def fit(iterations):
        t = time.perf_counter()
        model = aoi.models.Segmentor("Unet", nb_classes=nb_classes)
        model.fit(X[n_val:], y[n_val:], X[:n_val], y[:n_val], training_cycles=iterations,
                  compute_accuracy=False, swa=False, batch_size=batch, seed=seed,
                  print_loss=10**9, plot_training_history=False)
        return model, time.perf_counter() - t

    # two short trials separate the fixed start-up cost from the time per iteration, so the
    # real run's wall time (start-up included) matches the budget
    _, t_short = fit(10)
    _, t_long = fit(40)
    per_iter = max((t_long - t_short) / 30, 1e-6)
    overhead = max(t_short - 10 * per_iter, 0.0)
    iters = max(10, int((budget - overhead) / per_iter))
    model, train_seconds = fit(iters)
    base = os.path.splitext(result)[0]
    model.save_model(base)
    with open(base + ".json", "w") as f:
        json.dump({"iterations": iters, "train_seconds": train_seconds,
                   "seconds_per_iteration": per_iter, "nb_classes": nb_classes,
                   "batch_size": batch}, f)


def atomai_find(request, result):
    """AtomAI: the trained Segmentor's ``predict``, which runs AtomAI's ``Locator``.

    Request: ``images``, ``model`` (path of the saved model, or "" for an untrained default
    ``Segmentor("Unet", nb_classes=nb_classes)``: same network, for timing only),
    ``threshold`` (Locator's), ``refine`` (Locator's Gaussian refinement), optionally
    ``coords`` (0: time the probability maps only, ``compute_coords=False``; no atoms are
    returned) and ``repeats`` (each image's time is the fastest of this many runs, default
    1). The first image is run once untimed (warm-up).
    """
    import warnings

    import numpy as np

    warnings.filterwarnings("ignore")
    import atomai as aoi
    import torch

    torch.set_num_threads(int(os.environ.get("SKLATOM_BENCH_THREADS", "1")))
    # the allocator state sklatom sets up before predicting (freeing a 30 MiB block raises
    # glibc's mmap threshold), so that both sides are timed alike
    block = np.empty(30 << 20, dtype=np.uint8)
    del block
    req = _load_request(request)
    if str(req["model"]):
        model = aoi.load_model(str(req["model"]))
    else:
        model = aoi.models.Segmentor("Unet", nb_classes=int(req["nb_classes"]))
    thresh = float(req["threshold"])
    coords, seconds = [], []
    coords_too = bool(int(req.get("coords", 1)))
    model.predict(req["images"][0].astype(np.float32), thresh=thresh, verbose=False)
    for img in req["images"]:
        best = np.inf
        for _ in range(int(req.get("repeats", 1))):
            t0 = time.perf_counter()
            # Segmentor.predict normalizes to [0, 1] and runs AtomAI's Locator on the output
            out = model.predict(img.astype(np.float32), thresh=thresh, verbose=False,
                                refine=bool(int(req["refine"])), compute_coords=coords_too)
            found = out[1] if coords_too else {0: np.zeros((0, 3))}
            pos = np.asarray(found[0], dtype=float).reshape(-1, 3)[:, :2]  # row, col, class
            best = min(best, time.perf_counter() - t0)
        seconds.append(best)
        coords.append(pos)
    _save_result(result, coords, seconds)


def atomai_locate(request, result):
    """AtomAI's ``Locator`` on given probability maps (timing of the post-processing only).

    Request: ``maps`` ``(n, height, width, n_classes)`` with the background as the *last*
    channel (AtomAI's convention) and ``threshold``.
    """
    import warnings

    warnings.filterwarnings("ignore")
    from atomai.predictors import Locator

    req = _load_request(request)
    locator = Locator(threshold=float(req["threshold"]), dist_edge=0, refine=False)
    coords, seconds = [], []
    for maps in req["maps"]:
        t0 = time.perf_counter()
        found = locator.run(maps[None])[0]
        seconds.append(time.perf_counter() - t0)
        coords.append(found[:, :2])
    _save_result(result, coords, seconds)


COMMANDS = {"atomap-find": atomap_find, "atomai-train": atomai_train,
            "atomai-find": atomai_find, "atomai-locate": atomai_locate}

if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: peers.py {{{','.join(COMMANDS)}}} request.npz result.npz")
    COMMANDS[sys.argv[1]](sys.argv[2], sys.argv[3])
