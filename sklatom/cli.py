"""The ``sklatom`` command line: find atoms in image files, simulate training data, train.

::

    sklatom demo                               # simulate, analyse and score two test images
    sklatom find-atoms image.dm4 more/*.tif    # atoms (CSV) and overlays (PNG) per image
    sklatom find-atoms scan.emd --defects --species C,Si
    sklatom simulate --lattice MoS2 --n-images 20 --output mos2.npz
    sklatom train mos2.npz --output mos2.safetensors

Every subcommand has ``--help``. Results are written atomically and never replace existing
files unless ``--overwrite`` is given, nor a file written earlier in the same run, nor an input:
find-atoms names each input's results uniquely before writing anything (inputs with the same
name stem get more of their file name or path in the name, and the names are printed). Exit
codes: 0 success, 1 an error (for a batch: at least one image failed or was skipped because its
results exist; the others are still processed), 2 a usage error. Errors are one-line messages;
set the environment variable ``SKLATOM_DEBUG=1`` to see the traceback of a command's error.
"""

import argparse
import contextlib
import os
import sys
import time
import unicodedata
import warnings
from dataclasses import dataclass

import numpy as np

__all__ = ["main"]

PROG = "sklatom"


class UserError(Exception):
    """An error caused by the input, reported as a one-line message (no traceback)."""


_USER_ERRORS = (UserError, OSError, ValueError, TypeError, ImportError)


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number; got {text!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number; got {text!r}")
    return value


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}")
    return value


class _Console:
    """Prints progress to stdout unless quiet; warnings and errors always go to stderr."""

    def __init__(self, quiet=False):
        self.quiet = quiet

    def info(self, *lines):
        if not self.quiet:
            for line in lines:
                print(line, flush=True)

    @staticmethod
    def warn(message, *details):
        print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)
        for line in details:
            print(f"  {line}", file=sys.stderr, flush=True)

    @staticmethod
    def error(message):
        print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _warnings_to(console, item=None):
    """Show warnings raised inside the block as one-line messages on stderr; a warning about
    ``X[0]`` (the one image of the block) names ``item`` (its file) instead."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            seen = set()
            for w in caught:
                # a warning that names a keyword argument may say it as the CLI's option
                text = getattr(w.message, "cli_message", None) or str(w.message)
                if item is not None and text.startswith("X[0]"):
                    text = f"{item}{text[len('X[0]'):]}"
                if text not in seen and not issubclass(w.category, DeprecationWarning):
                    seen.add(text)
                    console.warn(text)


def _load_model(name):
    """A fitted FCNSegmenter from a pretrained model name or a .safetensors path."""
    from .finder import load_model
    from .pretrained import PRETRAINED

    if name not in PRETRAINED and not os.path.isfile(name):
        raise UserError(
            f"--model {name!r} is neither a pretrained model ({', '.join(sorted(PRETRAINED))}) "
            "nor an existing model file (.safetensors written by FCNSegmenter.save or 'sklatom "
            "train')")
    return load_model(name)


def _check_outputs(paths, overwrite):
    """The existing ones among ``paths`` (empty when overwrite)."""
    if overwrite:
        return []
    return [p for p in paths if os.path.lexists(p)]


def _ensure_dir(directory):
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output directory {directory}: {exc}") from None
    if not os.access(directory, os.W_OK):
        raise UserError(f"the output directory {directory} is not writable")


def _save_figure(fig, path, overwrite):
    from .io import atomic_path

    with atomic_path(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")


def _legend_outside(ax):
    """Move the legend to the right of the axes (defect legends can be long)."""
    if ax.get_legend() is not None:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small",
                  borderaxespad=0.0)


def _figure(n_panels=1, size=5.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size * n_panels, size))
    axes = [fig.add_subplot(1, n_panels, i + 1) for i in range(n_panels)]
    return fig, axes


# --------------------------------------------------------------------------------------------
# the analysis of one image (shared by find-atoms and demo)
# --------------------------------------------------------------------------------------------
def _class_counts(coords, classes):
    cls = coords[:, 2].astype(int)
    parts = []
    for c in range(1, len(classes)):
        n = int(np.sum(cls == c))
        if n:
            parts.append(f"{classes[c]} {n}")
    return ", ".join(parts) if parts else "none"


# --------------------------------------------------------------------------------------------
# find-atoms
# --------------------------------------------------------------------------------------------
def _name_key(name):
    """``name`` as file systems that ignore case and Unicode normalisation compare it."""
    return unicodedata.normalize("NFC", name).casefold()


def _name_candidates(path, position, depth):
    """Ever more specific output name stems of one input, ``depth + 3`` of them.

    The stem (``a`` for ``w/x/a.tif``), the file name with its dots as underscores (``a_tif``),
    then with ever more of its parent directories in front (``x_a_tif``, ``w_x_a_tif``, ...,
    repeating the longest up to ``depth`` of them), and last the file name with the input's
    position (``a_tif_3``), which no other input can share.
    """
    full = os.path.abspath(path)
    name = os.path.basename(full)
    flat = name.replace(".", "_")
    names = [os.path.splitext(name)[0], flat]
    parents = [d for d in os.path.dirname(os.path.splitdrive(full)[1]).split(os.sep) if d]
    for k in range(1, depth + 1):
        names.append("_".join([d.replace(".", "_") for d in parents[-k:]] + [flat]))
    names.append(f"{flat}_{position}")
    return names


def _output_stems(paths):
    """One output name stem per input, no two the same (ignoring case).

    An input keeps its stem (``a`` for ``a.tif``) unless another input of the run would get the
    same name; then the inputs with the least specific of the clashing names move on to their
    next name (see :func:`_name_candidates`) until no names clash. ``a.tif a.npy a_tif.npy``
    give ``a_tif``, ``a_npy``, ``a_tif_npy``; ``x/a.tif y/a.tif`` give ``x_a_tif``, ``y_a_tif``.
    The names do not depend on the order of the inputs, except the last resort (needed only
    for paths that differ in case alone). The paths must be different files.
    """
    depth = max((len(os.path.abspath(p).split(os.sep)) for p in paths), default=0)
    candidates = [_name_candidates(p, i + 1, depth) for i, p in enumerate(paths)]
    level = [0] * len(paths)
    while True:
        groups = {}
        for i, names in enumerate(candidates):
            groups.setdefault(_name_key(names[level[i]]), []).append(i)
        clashes = [group for group in groups.values() if len(group) > 1]
        if not clashes:
            return [names[k] for names, k in zip(candidates, level)]
        for group in clashes:  # the last names are unique, so the lowest level is not the last
            lowest = min(level[i] for i in group)
            for i in group:
                if level[i] == lowest:
                    level[i] += 1


@dataclass
class _Job:
    """One input of find-atoms and the files its results go to."""

    path: str
    stem: str
    outputs: dict  # kind ("atoms", "overlay", "defects") -> path


def _distinct_inputs(paths, console):
    """``paths`` without repeats of the same file (the first mention of each is kept)."""
    seen, distinct = {}, []
    for path in paths:
        real = os.path.realpath(path)
        if real in seen:
            console.warn(f"{path} is the same file as {seen[real]}; analysing it once")
        else:
            seen[real] = path
            distinct.append(path)
    return distinct


def _plan_find_atoms(paths, directory, defects, console):
    """A job per input with output paths that no other job of the run writes.

    When inputs share names, warns with the names their results get instead.
    """
    jobs = []
    for path, stem in zip(paths, _output_stems(paths)):
        outputs = {"atoms": os.path.join(directory, f"{stem}_atoms.csv"),
                   "overlay": os.path.join(directory, f"{stem}_overlay.png")}
        if defects:
            outputs["defects"] = os.path.join(directory, f"{stem}_defects.csv")
        jobs.append(_Job(path, stem, outputs))
    planned = [_name_key(os.path.abspath(p)) for job in jobs for p in job.outputs.values()]
    if len(set(planned)) != len(planned):  # a bug: the stems differ, and so do the suffixes
        raise RuntimeError(f"two results of this run would be written to the same file: "
                           f"{planned} (please report this)")
    renamed = [job for job in jobs
               if job.stem != os.path.splitext(os.path.basename(job.path))[0]]
    if renamed:
        console.warn("inputs of this run have the same names; to keep their results apart "
                     "they are named:",
                     *(f"{job.path} -> {os.path.join(directory, job.stem)}_*" for job in renamed))
    return jobs


def _parse_species(text):
    if text is None:
        return None
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise UserError(f"--species must list one name per atom class, e.g. C,Si; got {text!r}")
    return names


def _cmd_find_atoms(args):
    from .finder import AtomFinder
    from .io import read_image, write_csv_atomic
    from .plotting import plot_atoms, plot_defects
    from .segmentation import check_sampling
    from .uncertainty import OOD_THRESHOLD

    console = _Console(args.quiet)
    if args.pixel_size is not None:
        try:
            check_sampling(args.pixel_size, "--pixel-size")
        except ValueError as exc:
            raise UserError(str(exc)) from None
    species = _parse_species(args.species)
    _ensure_dir(args.output)
    inputs = _distinct_inputs(args.images, console)
    jobs = _plan_find_atoms(inputs, args.output, args.defects, console)
    # everything that exists is checked before anything is written: the run never stops
    # half-way over a file, and it never writes a file twice (the planned names are unique)
    readable = {os.path.realpath(p) for p in inputs if os.path.exists(p)}
    failed, skipped, done, todo = [], [], [], []
    for job in jobs:
        clobbered = [p for p in job.outputs.values() if os.path.realpath(p) in readable]
        existing = _check_outputs(job.outputs.values(), args.overwrite)
        if clobbered:
            console.error(f"{job.path}: its result {', '.join(clobbered)} would replace an input "
                          "of this run; use another --output directory")
            failed.append(job.path)
        elif existing:
            console.warn(f"{job.path}: results exist ({', '.join(existing)}); kept them and "
                         "skipped this image (pass --overwrite to recompute them)")
            skipped.append(job.path)
        else:
            todo.append(job)
    if todo:
        with _warnings_to(console):
            segmenter = _load_model(args.model)
        classes = list(segmenter.classes_)
        if species is not None and len(species) != len(classes) - 1:
            raise UserError(
                f"--species names {len(species)} classes ({','.join(species)}) but the model "
                f"has {len(classes) - 1} atom classes {classes[1:]}; give one name per class, "
                "in order")
        calibration = "auto"
        if args.uncertainty:  # the file beside the model: the segmenter is loaded already
            from .uncertainty import _model_file, calibration_path

            calibration = calibration_path(_model_file(args.model))
        with _warnings_to(console):
            finder = AtomFinder(segmenter, species=species, defects=args.defects,
                                uncertainty=args.uncertainty, calibration=calibration).fit()
    for job in todo:
        path, stem, outputs = job.path, job.stem, job.outputs
        t0 = time.perf_counter()
        try:
            with _warnings_to(console, item=path):
                image, file_ps, meta = read_image(path, frame=args.frame)
                if args.pixel_size is not None:
                    ps, source, known = args.pixel_size, "--pixel-size", True
                elif file_ps is not None:
                    ps, source, known = file_ps, meta["pixel_size_source"], True
                else:
                    ps, source, known = segmenter.pixel_size_, "assumed", False
                    if ps is None:
                        raise UserError(
                            f"{path}: the pixel size is unknown (not in the file, no "
                            "--pixel-size, and the model does not know its own); pass "
                            "--pixel-size")
                    console.warn(
                        f"{path}: no pixel size in the file and no --pixel-size; assuming the "
                        f"model's training pixel size {ps:g} Å/px (x_A/y_A columns omitted)")
                try:
                    ps = check_sampling(ps, f"the pixel size ({source})", allow_none=False)
                except ValueError as exc:
                    raise UserError(f"{path}: {exc}; or pass the right --pixel-size") from None
                found = finder.analyse(image[np.newaxis].astype(np.float32), ps)[0]
                coords, labels, clf = found.coords, found.labels, found.classifier
                unknown = [] if known else ["x_A", "y_A"]  # no lengths from a guessed size
                atoms = found.atoms.drop(columns=unknown)
                fig, axes = _figure(2 if args.defects else 1)
                plot_atoms(image, coords, classes=classes, ax=axes[0],
                           pixel_size=ps if known else None, title=f"{stem}: {len(coords)} atoms")
                if args.defects:
                    plot_defects(image, coords, labels, ax=axes[1], estimator=clf,
                                 pixel_size=ps if known else None, species=species,
                                 title="defects")
                    _legend_outside(axes[1])
                write_csv_atomic(atoms, outputs["atoms"], overwrite=args.overwrite)
                if args.defects:
                    write_csv_atomic(found.defects.drop(columns=unknown), outputs["defects"],
                                     overwrite=args.overwrite)
                _save_figure(fig, outputs["overlay"], args.overwrite)
        except KeyboardInterrupt:
            raise
        except _USER_ERRORS as exc:
            console.error(str(exc) if path in str(exc) else f"{path}: {exc}")
            failed.append(path)
            continue
        except Exception as exc:  # a bug: report it, keep going with the batch
            console.error(f"{path}: internal error {type(exc).__name__}: {exc} (please report "
                          "this with the file)")
            failed.append(path)
            continue
        done.append(path)
        n_def = f", {len(found.defects)} defect(s)" if args.defects else ""
        if found.uncertainty is not None:
            u = found.uncertainty
            above = ": above, see the warning" if u.out_of_distribution else ""
            n_def += (f"; out-of-distribution score {u.ood_score:.2f} (threshold "
                      f"{OOD_THRESHOLD:g}{above})")
        console.info(
            f"{path}: {len(coords)} atoms ({_class_counts(coords, classes)}){n_def}; "
            f"pixel size {ps:g} Å/px ({source}); {time.perf_counter() - t0:.1f} s -> "
            + ", ".join(outputs.values()))
    if len(jobs) > 1 or failed or skipped:
        console.info(f"{len(done)} done, {len(skipped)} skipped, {len(failed)} failed"
                     + (" (skipped: their results exist and were kept; --overwrite recomputes "
                        "them)" if skipped else ""))
    return 1 if failed or skipped else 0


# --------------------------------------------------------------------------------------------
# simulate
# --------------------------------------------------------------------------------------------
_LABEL_CHOICES = ("columns", "general", "atoms")


def _labels_arg(choice):
    if choice == "columns":
        return None
    if choice == "atoms":
        return "atoms"
    from .pretrained import GENERAL_LABELS

    return GENERAL_LABELS


def _cmd_simulate(args):
    from ._validation import check_pixel_size
    from .datasets import make_lattice_images, save_dataset
    from .simulation import AcquisitionModel, MultisliceSimulator

    console = _Console(args.quiet)
    if not args.output.endswith(".npz"):
        raise UserError(f"--output must be a .npz file; got {args.output!r}")
    try:
        ps = check_pixel_size(args.pixel_size, "--pixel-size", 0.01, 1.0)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if min(args.shape) < 8:
        raise UserError(f"--shape must be at least 8 8 px; got {args.shape[0]} {args.shape[1]}")
    if os.path.lexists(args.output) and not args.overwrite:
        raise UserError(f"{args.output} exists; use --overwrite to replace it")
    directory = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(directory):
        raise UserError(f"the directory of --output does not exist: {directory}")
    from tqdm.auto import tqdm

    rng = np.random.RandomState(args.seed)
    simulator = MultisliceSimulator(method=args.method, progress=False)
    acquisition = AcquisitionModel(dose=args.dose, blur=0.15, scan_jitter=0.02)
    images, masks, coords, lattices = [], [], [], []
    classes = None
    t0 = time.perf_counter()
    with _warnings_to(console):
        for i in tqdm(range(args.n_images), desc=f"simulating {args.lattice}", unit="image",
                      disable=args.quiet, file=sys.stderr):
            X, y, c, info = make_lattice_images(
                1, args.lattice, shape=tuple(args.shape), pixel_size=ps,
                labels=_labels_arg(args.labels), simulator=simulator, acquisition=acquisition,
                return_info=True, random_state=rng.randint(2**31 - 1))
            images.append(X[0])
            masks.append(y[0])
            coords.append(c[0])
            classes = info.classes
            lattices.append(info.lattices[0])
    metadata = {"lattices": lattices, "method": args.method, "dose": args.dose,
                "seed": args.seed}
    save_dataset(args.output, images, masks, classes=classes, coordinates=coords,
                 pixel_size=ps, metadata=metadata, overwrite=args.overwrite)
    console.info(
        f"{args.n_images} {args.lattice} image(s) {args.shape[0]}x{args.shape[1]} px at "
        f"{ps:g} Å/px ({args.method}, dose {args.dose:g} e/Å²), classes {classes}, "
        f"{sum(len(c) for c in coords)} atoms in {time.perf_counter() - t0:.1f} s -> "
        f"{args.output}")
    return 0


def _read_dataset(path):
    """:func:`sklatom.datasets.load_dataset`, its errors as the command line's."""
    from .datasets import load_dataset

    try:
        return load_dataset(path)
    except FileNotFoundError:
        raise UserError(f"no such file: {path}") from None
    except ValueError as exc:
        raise UserError(str(exc)) from None


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------
def _cmd_train(args):
    from sklearn.base import clone

    from .io import atomic_path
    from .segmentation import FCNSegmenter, check_sampling

    console = _Console(args.quiet)
    if os.path.realpath(args.output) == os.path.realpath(args.data):
        raise UserError(f"--output {args.output} is the training data file; write the model "
                        "to another file, e.g. model.safetensors")
    if os.path.lexists(args.output) and not args.overwrite:
        raise UserError(f"{args.output} exists; use --overwrite to replace it")
    data = _read_dataset(args.data)
    ps = args.pixel_size if args.pixel_size is not None else data.pixel_size
    if ps is None:
        raise UserError(f"{args.data} holds no pixel_size; pass --pixel-size (Å/px)")
    try:
        ps = check_sampling(ps, "--pixel-size", allow_none=False)
    except ValueError as exc:
        raise UserError(f"{exc}; or simulate the training images at a pixel size in that "
                        "range") from None
    n = len(data.images)
    h, w = (min(np.shape(x)[k] for x in data.images) for k in (0, 1))
    settings = dict(max_epochs=args.epochs, training_pixel_size=ps,
                    validation_fraction=0.1 if n >= 2 else None, lr_schedule="cosine",
                    verbose=0 if args.quiet else 1, random_state=args.seed, device="auto")
    if args.init:  # fine-tune a fitted model: its parameters, classes and architecture
        init = _load_model(args.init)
        if len(init.classes_) != len(data.classes):
            raise UserError(
                f"--init {args.init} has classes {init.classes_} but {args.data} has "
                f"{data.classes}; simulate the data with matching labels (e.g. --labels "
                "general for the pretrained model)")
        seg = clone(init).set_params(init_model=args.init, lr=args.lr if args.lr else init.lr / 4,
                                     **settings)
        what = f"fine-tuning {args.init}"
    else:
        seg = FCNSegmenter(module__base_filters=args.base_filters, classes=data.classes,
                           class_weight="balanced", **settings)
        if args.lr:
            seg.set_params(lr=args.lr)
        what = "training"
    # patches: the largest size up to --patch-size that the images hold and the network's
    # levels divide (space_to_depth * 2**depth px)
    params = seg.get_params()
    multiple = params["module__space_to_depth"] * 2 ** params["module__depth"]
    patch = min(args.patch_size, h, w)
    patch -= patch % multiple
    if patch < max(16, multiple):
        raise UserError(f"the images of {args.data} are {h}x{w} px; this network trains on "
                        f"patches of at least {max(16, multiple)} px (a multiple of "
                        f"{multiple})")
    seg.set_params(patch_size=patch)
    console.info(f"{what} on {n} image(s) {h}x{w} px at {ps:g} Å/px, classes "
                 f"{data.classes}, {args.epochs} epoch(s)")
    t0 = time.perf_counter()
    with _warnings_to(console):
        seg.fit(data.images, data.masks)
        seg.set_params(verbose=0)
    with atomic_path(args.output, overwrite=args.overwrite) as tmp:
        seg.save(tmp)
    console.info(f"trained in {time.perf_counter() - t0:.0f} s -> {args.output} "
                 f"(use it with: {PROG} find-atoms IMAGE --model {args.output})")
    return 0


# --------------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------------

#: Demo images: (title, lattice, species of the general model's classes "light", "heavy").
DEMO_IMAGES = (
    ("graphene", "graphene", ["C", "Si"]),
    ("MoS2", "MoS2", ["S2", "Mo"]),
)


def _cmd_demo(args):
    import pandas as pd

    from .datasets import make_lattice_images
    from .finder import AtomFinder, image_defects
    from .io import write_csv_atomic
    from .metrics import EDGE_BAND, TOLERANCE, atom_scores
    from .plotting import plot_atoms, plot_defects
    from .pretrained import GENERAL_LABELS
    from .simulation import AcquisitionModel, MultisliceSimulator

    console = _Console(args.quiet)
    t_start = time.perf_counter()
    _ensure_dir(args.output)
    paths = {title: (os.path.join(args.output, f"{title}_atoms.csv"),
                     os.path.join(args.output, f"{title}_overlay.png"))
             for title, _, _ in DEMO_IMAGES}
    existing = _check_outputs([p for pair in paths.values() for p in pair], args.overwrite)
    if existing:
        raise UserError(f"{', '.join(existing)} already exist(s); use --overwrite or another "
                        "--output directory")
    with _warnings_to(console):
        segmenter = _load_model(args.model)
        finder = AtomFinder(segmenter).fit()
    classes = list(segmenter.classes_)
    ps = 0.1
    tolerance, border = TOLERANCE, EDGE_BAND  # Å, the protocol of the model card
    rows = []
    for k, (title, lattice, species) in enumerate(DEMO_IMAGES):
        t0 = time.perf_counter()
        with _warnings_to(console):
            X, _, truth, info = make_lattice_images(
                1, lattice, shape=(256, 256), pixel_size=ps, labels=GENERAL_LABELS,
                simulator=MultisliceSimulator(method="prism", progress=False),
                acquisition=AcquisitionModel(dose=5e6, blur=0.15, scan_jitter=0.02),
                return_info=True, random_state=args.seed + k)
        t_sim = time.perf_counter() - t0
        if list(info.classes) != classes:
            raise UserError(f"the model's classes {classes} differ from the demo's "
                            f"{list(info.classes)}; the demo needs the 'general' model")
        image, truth = X[0], truth[0]
        t1 = time.perf_counter()
        with _warnings_to(console):
            finder.set_params(species=species, defects=True).fit()
            found = finder.analyse(image[np.newaxis], ps)[0]
        coords, labels, clf = found.coords, found.labels, found.classifier
        t_find = time.perf_counter() - t1
        s = atom_scores(coords, truth, tolerance=tolerance, pixel_size=ps)
        inner = atom_scores(coords, truth, tolerance=tolerance, pixel_size=ps,
                            ignore_border=border, image_shape=image.shape)
        _, _, true_clf = image_defects(truth, ["background", *species], ps, image.shape)
        names = dict(zip(classes[1:], species))
        console.info(
            "",
            f"== {title}: 256x256 px at {ps} Å/px, PRISM multislice ({t_sim:.1f} s), dose "
            f"5e6 e/Å²; atoms and defects found in {t_find:.1f} s",
            "   classes: " + ", ".join(f"{c} = {n}" for c, n in names.items()),
            f"   atoms: {s['n_pred']} found, {s['n_true']} true, {s['n_matched']} matched "
            f"within {tolerance} Å",
            f"   precision {s['precision']:.3f}  recall {s['recall']:.3f}  F1 {s['f1']:.3f}  "
            f"RMSE {s['rmse']:.3f} Å  class accuracy {s['class_accuracy']:.3f}",
            f"   atoms >= {border} Å inside the edge: precision {inner['precision']:.3f}  "
            f"recall {inner['recall']:.3f}  F1 {inner['f1']:.3f}  RMSE {inner['rmse']:.3f} Å",
        )
        found_cat = _catalogue_counts(clf, coords)
        true_cat = _catalogue_counts(true_clf, truth)
        kinds = sorted(set(found_cat) | set(true_cat), key=lambda n: (-true_cat.get(n, 0), n))
        console.info("   defects (graph classification of the found atoms vs. of the true "
                     "atoms):")
        if not kinds:
            console.info("     none")
        for name in kinds:
            console.info(f"     {name:<16s} found {found_cat.get(name, 0):>3d}   true "
                         f"{true_cat.get(name, 0):>3d}")
        write_csv_atomic(found.atoms, paths[title][0], overwrite=args.overwrite)
        fig, axes = _figure(2)
        plot_atoms(image, coords, classes=["background", *species], ax=axes[0], pixel_size=ps,
                   title=f"{title}: {len(coords)} atoms, F1 {s['f1']:.2f}")
        plot_defects(image, coords, labels, ax=axes[1], estimator=clf, pixel_size=ps,
                     title="defects")
        _legend_outside(axes[1])
        _save_figure(fig, paths[title][1], args.overwrite)
        console.info(f"   -> {paths[title][0]}, {paths[title][1]}")
        rows.append({"image": title, **{key: s[key] for key in ("precision", "recall", "f1",
                                                                "rmse")}})
    summary = pd.DataFrame(rows)
    console.info("", f"demo finished in {time.perf_counter() - t_start:.0f} s; mean F1 "
                 f"{summary['f1'].mean():.3f}, mean RMSE {summary['rmse'].mean():.3f} Å")
    return 0


def _catalogue_counts(clf, coords):
    if clf is None:
        return {}
    cat = clf.catalogue([coords])
    counts = {}
    for name, count in zip(cat["name"], cat["count"]):
        counts[name] = counts.get(name, 0) + int(count)
    return counts


# --------------------------------------------------------------------------------------------
# the parser
# --------------------------------------------------------------------------------------------
class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Wraps each paragraph of a description; keeps the blank lines between them."""

    def _fill_text(self, text, width, indent):
        import textwrap

        paragraphs = text.split("\n\n")
        return "\n\n".join(textwrap.fill(" ".join(p.split()), width, initial_indent=indent,
                                         subsequent_indent=indent) for p in paragraphs)


def _build_parser():
    from .io import SUPPORTED_EXTENSIONS

    fmt = _HelpFormatter
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=fmt,
        description="Find atoms and defects in atomic-resolution STEM images.",
        epilog="Run 'sklatom COMMAND --help' for the options of a command.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    quiet = dict(action="store_true", help="print only warnings and errors")
    overwrite = dict(action="store_true", help="replace existing output files")

    p = sub.add_parser(
        "demo", formatter_class=fmt, help="simulate two images, find their atoms, score them",
        description="Simulate a defective graphene and a MoS2 image (PRISM multislice, "
        "256x256 px at 0.1 Å/px, dose 5e6 e/Å²), find their atoms with the pretrained model, "
        "print precision, recall, F1 and RMSE against the ground truth and the defect "
        "catalogue, and write an overlay PNG and an atoms CSV per image. About a minute on "
        "two CPU cores.")
    p.add_argument("--output", default="sklatom_demo", metavar="DIR",
                   help="output directory (default: ./sklatom_demo)")
    p.add_argument("--model", default="general", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--overwrite", **overwrite)
    p.add_argument("--quiet", **quiet)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "find-atoms", formatter_class=fmt, help="find the atoms in image files",
        description="Find the atoms in each image and write <stem>_atoms.csv (row, col in px; "
        "class, class_name; x_A, y_A in Å when the pixel size is known; confidence) and "
        "<stem>_overlay.png. With --defects also a 'defect' column and <stem>_defects.csv; "
        "with --uncertainty also existence, class_probability and sigma_A.\n\n"
        f"Formats: {', '.join(sorted(SUPPORTED_EXTENSIONS))} (.dm3/.dm4/.emd/.ser/.hspy need "
        "pip install \"sklatom[io]\"). The pixel size comes from --pixel-size, else from the "
        "file, else the model's training pixel size is assumed (with a warning).\n\n"
        "Inputs with the same stem (a.tif, a.npy) get their file name instead (a_tif_atoms.csv, "
        "a_npy_atoms.csv), and more of their path if that is not enough (x_a_tif, y_a_tif for "
        "x/a.tif, y/a.tif); the names are printed.\n\n"
        "A failing image, or one whose results exist (they are kept unless --overwrite is "
        "given), is reported and the others are still processed; the exit code is 1 if any "
        "image failed or was skipped.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--pixel-size", type=_positive_float, metavar="Å",
                   help="pixel size in Å/px (overrides the file's calibration)")
    p.add_argument("--model", default="general",
                   help="pretrained model name or a .safetensors file (default: general)")
    p.add_argument("--output", default=".", metavar="DIR",
                   help="output directory (default: the current directory)")
    p.add_argument("--frame", type=int, default=None,
                   help="frame of a stack to analyse (default: the first, with a warning)")
    p.add_argument("--defects", action="store_true",
                   help="classify defects from the bond graph of the atoms")
    p.add_argument("--species", metavar="A,B",
                   help="chemical names of the model's atom classes in order (e.g. C,Si for "
                        "graphene or S2,Mo for MoS2 with the general model's light,heavy "
                        "classes): adds a 'species' column and names the defects of "
                        "--defects; default: generic names")
    p.add_argument("--uncertainty", action="store_true",
                   help="run the model as an ensemble of the 8 flips and rotations of each "
                        "image (8 times slower) and add the columns existence (calibrated "
                        "probability that the atom is real), class_probability and sigma_A "
                        "(position uncertainty per axis, Å); the report gives each image's "
                        "out-of-distribution score and warns above its threshold")
    p.add_argument("--overwrite", **overwrite)
    p.add_argument("--quiet", **quiet)
    p.set_defaults(func=_cmd_find_atoms)

    from .structures import LATTICES

    p = sub.add_parser(
        "simulate", formatter_class=fmt, help="simulate labelled training images",
        description="Simulate labelled STEM images of a lattice with point defects and save "
        "them to a .npz file with the arrays images (n, H, W) float32, masks (n, H, W), "
        "coordinates (N, 4): image index, row, col (px), class; classes, lattices, "
        "pixel_size (Å/px), method, dose, seed.")
    p.add_argument("--lattice", required=True, choices=sorted(LATTICES))
    p.add_argument("--n-images", type=_positive_int, required=True, metavar="N")
    p.add_argument("--shape", type=_positive_int, nargs=2, default=(256, 256),
                   metavar=("H", "W"), help="image size in px (default: 256 256)")
    p.add_argument("--pixel-size", type=_positive_float, default=0.1, metavar="Å",
                   help="pixel size in Å/px (default: 0.1)")
    p.add_argument("--method", choices=("incoherent", "prism", "multislice"),
                   default="incoherent", help="simulator (default: incoherent, the fastest)")
    p.add_argument("--dose", type=_positive_float, default=5e6,
                   help="electron dose in e/Å² (default: 5e6)")
    p.add_argument("--labels", choices=_LABEL_CHOICES, default="columns",
                   help="classes of the masks: one per column kind (columns, default), the "
                        "pretrained model's light/heavy (general) or a single atom class")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--output", required=True, metavar="FILE.npz")
    p.add_argument("--overwrite", **overwrite)
    p.add_argument("--quiet", **quiet)
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser(
        "train", formatter_class=fmt, help="train a segmentation model on simulated data",
        description="Train an FCNSegmenter (U-Net) on a data set written by 'sklatom "
        "simulate' and save it as a .safetensors file for 'sklatom find-atoms --model'.")
    p.add_argument("data", metavar="DATA.npz")
    p.add_argument("--output", required=True, metavar="MODEL.safetensors")
    p.add_argument("--epochs", type=_positive_int, default=20, help="epochs (default: 20)")
    p.add_argument("--base-filters", type=_positive_int, default=16,
                   help="channels of the first U-Net level (default: 16)")
    p.add_argument("--patch-size", type=_positive_int, default=128,
                   help="training patch size in px (default: 128)")
    p.add_argument("--pixel-size", type=_positive_float, metavar="Å",
                   help="pixel size of the training images in Å/px (default: from DATA)")
    p.add_argument("--init", metavar="MODEL",
                   help="fine-tune this model (a pretrained name such as 'general', or a "
                   ".safetensors file) instead of training a new network")
    p.add_argument("--lr", type=_positive_float,
                   help="learning rate (default: 1e-3 new, a quarter of the model's when "
                   "fine-tuning)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--overwrite", **overwrite)
    p.add_argument("--quiet", **quiet)
    p.set_defaults(func=_cmd_train)
    return parser


def main(argv=None):
    """Run the ``sklatom`` command line.

    Parameters
    ----------
    argv : list of str or None, default=None
        Arguments without the program name; None uses ``sys.argv[1:]``.

    Returns
    -------
    status : int
        0 on success, 1 on an error (for a batch: when any image failed), 2 on a usage error.
    """
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        _Console.error("interrupted")
        return 130
    except _USER_ERRORS as exc:
        if os.environ.get("SKLATOM_DEBUG"):
            raise
        _Console.error(f"{args.command}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
