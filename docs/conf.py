"""Sphinx configuration for the sklatom documentation.

Build (what CI runs)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The build needs no network: intersphinx has no mapping, and the example gallery is rendered
from the sources of ``examples/*.py`` without running them.
"""

import os
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # the package itself (also installed editable)

import sklatom  # noqa: E402

# -- project ---------------------------------------------------------------------------------
project = "sklatom"
author = "sklatom developers"
copyright = "sklatom developers"
release = sklatom.__version__
version = ".".join(release.split(".")[:2])

# -- extensions ------------------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "_gallery_src", "_generated", "gallery_header.rst", "Thumbs.db",
                    ".DS_Store"]
default_role = "literal"  # `x` in our prose and in docstrings means code, not a cross-reference
root_doc = "index"
language = "en"

# -- autodoc / autosummary -------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"  # the numpydoc docstrings state the types

# -- numpydoc --------------------------------------------------------------------------------
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()  # no validation warnings; style is checked in review

# -- intersphinx: no network, so no mapping ---------------------------------------------------
intersphinx_mapping = {}

# -- sphinx-gallery: render examples/*.py as source, never execute them ----------------------
# sphinx-gallery needs a gallery header next to the scripts; examples/ has none, so the
# scripts are copied into docs/_gallery_src/ next to docs/gallery_header.rst at build time.
_GALLERY_SRC = DOCS / "_gallery_src"


def _prepare_gallery_sources():
    if _GALLERY_SRC.exists():
        shutil.rmtree(_GALLERY_SRC)
    _GALLERY_SRC.mkdir()
    shutil.copyfile(DOCS / "gallery_header.rst", _GALLERY_SRC / "GALLERY_HEADER.rst")
    for script in sorted((ROOT / "examples").glob("*.py")):
        shutil.copyfile(script, _GALLERY_SRC / script.name)


_prepare_gallery_sources()

sphinx_gallery_conf = {
    "examples_dirs": os.path.relpath(_GALLERY_SRC, DOCS),
    "gallery_dirs": "auto_examples",
    "plot_gallery": False,  # do not execute the examples during the build
    "filename_pattern": r"^$",  # and, belt and braces, match no file for execution
    "download_all_examples": False,
    "remove_config_comments": True,
    "show_memory": False,
    "show_signature": False,
}

# -- model card: held-out metrics of the pretrained model ------------------------------------
# scripts/train_pretrained.py writes sklatom/models/<name>.metrics.json next to the model; the
# table in model_card.rst is generated from it at build time (a placeholder when it is absent).
_GENERATED = DOCS / "_generated"
_METRIC_COLUMNS = (("precision", "{:.3f}"), ("recall", "{:.3f}"), ("f1", "{:.3f}"),
                   ("rmse", "{:.3f}"), ("class_accuracy", "{:.3f}"))


def _metric_rows(table):
    """Rows (group, values...) of one test set, per lattice and dose, then per lattice, then all."""
    def order(key):
        lattice, _, dose = key.partition(" @ ")
        return (key == "all", lattice, dose != "", float(dose) if dose else 0.0)

    rows = []
    for key in sorted(table, key=order):
        values = table[key]
        cells = []
        for name, fmt in _METRIC_COLUMNS:
            v = values.get(name)
            cells.append("n/a" if v is None or v != v else fmt.format(v))
        lattice, _, dose = key.partition(" @ ")
        label = f"{lattice}, {float(dose):.0e} e/Å²" if dose else (
            "all" if key == "all" else f"{lattice}, all doses")
        rows.append([label, *cells])
    return rows


def _rst_table(title, head, rows):
    """A reST list-table with a header row."""
    lines = [f".. list-table:: {title}", "   :header-rows: 1", ""]
    for row in [head, *rows]:
        lines.append(f"   * - {row[0]}")
        lines.extend(f"     - {cell}" for cell in row[1:])
    return "\n".join(lines) + "\n"


def _list_table(title, rows):
    head = ["test images", "precision", "recall", "F1", "RMSE (Å)", "class accuracy"]
    return _rst_table(title, head, rows)


def _scene_table(table):
    """Held-out scenes of each kind: scores and false atoms per image."""
    if not table:
        return ""
    head = ["scene (pixel size)", "precision", "recall", "F1", "RMSE (Å)",
            "false atoms / image"]
    rows = []
    for name, v in table.items():
        n_true = v.get("n_true", 0)
        cells = ["n/a (nothing to find)" if n_true == 0 else
                 ("n/a" if v.get(k) is None or v.get(k) != v.get(k) else f"{v[k]:.3f}")
                 for k in ("precision", "recall", "f1", "rmse")]
        rows.append([f"{name} ({v.get('pixel_size', '?')} Å/px)", *cells,
                     f"{v.get('false_atoms_per_image', float('nan')):.1f}"])
    return _rst_table("Held-out scenes of each kind (incoherent simulation, 1e6 e/Å², scored "
                      "at their own pixel size)", head, rows)


def _placeholder_rows():
    """Empty rows for the lattices and test doses of scripts/train_pretrained.py."""
    import ast

    from sklatom.structures import LATTICES

    doses = ()
    tree = ast.parse((ROOT / "scripts" / "train_pretrained.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                getattr(t, "id", None) == "TEST_DOSES" for t in node.targets):
            doses = ast.literal_eval(node.value)
    rows = [[f"{lattice}, {dose:.0e} e/Å²", *["TBD"] * 5]
            for lattice in sorted(LATTICES) for dose in doses]
    return rows + [["all", *["TBD"] * 5]]


def _write_model_metrics(name="general"):
    import json

    _GENERATED.mkdir(exist_ok=True)
    path = ROOT / "sklatom" / "models" / f"{name}.metrics.json"
    out = _GENERATED / f"{name}_metrics.inc"
    if not path.is_file():
        text = (
            ".. note::\n\n"
            f"   **Placeholder.** ``sklatom/models/{name}.metrics.json`` was not present when\n"
            "   these pages were built. The table is produced by\n"
            "   ``python scripts/train_pretrained.py`` (held-out images per lattice and dose,\n"
            "   scored with the default :class:`~sklatom.peaks.PeakFinder` and\n"
            "   :func:`~sklatom.metrics.atom_scores` at a 0.5 Å tolerance) and is filled in\n"
            "   from that file automatically when the documentation is built after training.\n\n"
            + _list_table("Held-out metrics by lattice and dose (to be filled)",
                          _placeholder_rows())
        )
    else:
        report = json.loads(path.read_text())
        text = (
            f"From ``sklatom/models/{name}.metrics.json``, written by "
            f"``{str(report.get('command') or 'scripts/train_pretrained.py').strip()}``: "
            f"{report.get('train_images', '?')} training images "
            f"({report.get('train_prism_images', '?')} PRISM), "
            f"{report.get('epochs_run', '?')} epochs, "
            f"{report.get('train_seconds', '?')} s of training.\n\n"
            + _list_table("Held-out metrics by lattice and dose (incoherent simulation)",
                          _metric_rows(report.get("test_incoherent", {})))
            + "\n"
            + _list_table("Held-out metrics on PRISM images (5e6 e/Å²)",
                          _metric_rows(report.get("test_prism", {})))
            + "\n"
            + _scene_table(report.get("test_scenes", {}))
        )
    out.write_text(text, encoding="utf-8")


_write_model_metrics()


def _write_lattice_model_metrics():
    """One table per shipped lattice model (scripts/train_lattice_models.py's metrics file):
    F1 and vacancy sites filled per lattice and dose, beside the general model's."""
    import json

    _GENERATED.mkdir(exist_ok=True)
    from sklatom.pretrained import LATTICE_MODELS, PRETRAINED

    parts = []
    for name in LATTICE_MODELS:
        path = ROOT / "sklatom" / "models" / f"{name}.metrics.json"
        if name not in PRETRAINED or not path.is_file():
            continue
        report = json.loads(path.read_text())
        head = ["test images", f'"{name}" F1', "vacancies filled", '"general" F1',
                "vacancies filled (general)"]
        rows = []
        for key, row in report.get("test", {}).items():
            lattice, _, dose = key.partition(" @ ")
            mine, general = row[name], row["general"]
            rows.append([f"{lattice}, {float(dose):.0e} e/Å²", f"{mine['f1']:.3f}",
                         f"{mine['vacancies_filled']} / {mine['vacancy_sites']}",
                         f"{general['f1']:.3f}",
                         f"{general['vacancies_filled']} / {general['vacancy_sites']}"])
        table = _rst_table(f'"{name}": held-out images per lattice and dose', head, rows)
        parts.append(
            f'**"{name}"** (``{report.get("command", "")}``, code '
            f'{str(report.get("code_commit"))[:7]}): fine-tuned from '
            f'``{report.get("init_model")}`` on {report.get("train_images")} images of '
            f'{", ".join(report.get("lattices", []))} ({report.get("train_kinds")}), doses '
            f'{report["train_doses"][0]:.0e}-{report["train_doses"][1]:.0e} e/Å², '
            f'{report.get("epochs_run")} epochs, {report.get("train_seconds")} s of training, '
            f'seed {report.get("train_seed")}.\n\n' + table)
    text = "\n".join(parts) if parts else (
        "No lattice model ships yet: ``python scripts/train_lattice_models.py NAME`` trains "
        "one.\n")
    (_GENERATED / "lattice_models_metrics.inc").write_text(text, encoding="utf-8")


_write_lattice_model_metrics()

# -- HTML ------------------------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"sklatom {release}"
html_theme_options = {
    "description": "atoms and defects from atomic-resolution STEM images",
    "fixed_sidebar": True,
}
html_sidebars = {"**": ["about.html", "navigation.html", "searchbox.html"]}


# -- skip scikit-learn's generated metadata-routing methods -----------------------------------
# ``set_fit_request`` / ``set_transform_request`` are added by scikit-learn to every estimator
# whose fit/transform take extra arguments (``images=``); their docstrings point into
# scikit-learn's own glossary, which this build cannot link to without intersphinx.
def _skip_metadata_requests(app, what, name, obj, skip, options):
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_metadata_requests)
