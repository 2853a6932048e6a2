"""sklatom: scikit-learn-compatible analysis of atomic-resolution microscope images.

The estimators compose into scikit-learn pipelines::

    structures ─ MultisliceSimulator ─► images ─ FCNSegmenter ─► probability maps
        ─ PeakFinder ─► coordinates ─ GraphDefectClassifier ─► defects
                     └ ContourDescriptor ─► feature table (for clustering / outliers)

Submodules are imported on first use, so ``import sklatom`` stays fast (torch and abTEM load
only when a class that needs them is touched).
"""

import importlib

__version__ = "0.1.0.dev0"

_EXPORTS = {
    "MultisliceSimulator": "simulation",
    "AcquisitionModel": "simulation",
    "FCNSegmenter": "segmentation",
    "PeakFinder": "peaks",
    "AtomFinder": "finder",
    "ContourDescriptor": "descriptors",
    "GraphDefectClassifier": "graphs",
    "load_pretrained": "pretrained",
    "make_lattice_images": "datasets",
    "make_scene_images": "datasets",
    "make_scene": "scenes",
    "make_structure": "structures",
    "make_atom_scorer": "metrics",
    "atom_scores": "metrics",
    "read_image": "io",
    "rank_for_labelling": "uncertainty",
    "plot_atoms": "plotting",
    "plot_defects": "plotting",
    "plot_descriptors": "plotting",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sklatom' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
