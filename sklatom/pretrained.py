"""Pretrained segmentation models that ship inside the package.

Each model is a single ``.safetensors`` file in ``sklatom/models`` (weights plus a JSON
configuration; loading executes no code) made by ``scripts/train_pretrained.py``. Its model card
(training data, pixel size, held-out metrics) is ``docs/model_card.rst``.

=========== ================================================================================
name        what it finds
=========== ================================================================================
"general"   atomic columns in annular dark-field (MAADF to HAADF) images of 2-D materials,
            thick crystals along a zone axis, nanoparticles and single atoms on supports,
            and nothing in vacuum, amorphous material or saturated regions; two Z-contrast
            classes: ``"light"`` (C, B, N, S2, O, Si of a Si crystal) and ``"heavy"``
            (transition metals and heavier: Mo, W, Sr, Ti-O, Pt, ...; Si dopants and
            adatoms). Works at 0.1 Å/px and rescales images of 0.05-0.5 Å/px.
"graphene"  the general model fine-tuned on graphene (and Si-doped graphene) only, down to
            3e3 e/Å²: at 80 kV HAADF it finds the lattice at 2e4 e/Å² (F1 0.89, general
            0.14) and 5e4 (0.99, general 0.90). Other lattices: see the model card.
=========== ================================================================================
"""

import os
from importlib import resources

__all__ = ["load_pretrained", "PRETRAINED", "GENERAL_LABELS", "LATTICE_MODELS"]

#: Column name -> class of the general model (background is class 0).
GENERAL_LABELS = {
    # graphene and hBN: light columns; Si (and other heavier dopants) heavy
    "C": "light", "Si": "heavy", "B": "light", "N": "light",
    # transition-metal dichalcogenides: metal columns heavy, chalcogen columns light
    "Mo": "heavy", "W": "heavy", "S2": "light", "S": "light", "SSe": "heavy",
    # perovskite [001]: cation columns heavy, pure-oxygen columns light (an HAADF image does
    # not show them: sklatom.groundtruth leaves them unlabelled)
    "Sr": "heavy", "OTi": "heavy", "O": "light",
}

#: Lattice-specific models: name -> the lattices (:data:`sklatom.structures.LATTICES`) it is
#: trained on (``scripts/train_lattice_models.py``); the shipped ones are in :data:`PRETRAINED`.
LATTICE_MODELS = {
    "graphene": ("graphene", "Si-graphene"),
    "hBN": ("hBN",),
    "MoS2": ("MoS2", "WS2"),
    "SrTiO3-001": ("SrTiO3-001",),
}

#: Shipped models: name -> (file in sklatom/models, one-line description).
PRETRAINED = {
    "general": ("general.safetensors",
                "light/heavy atomic columns in ADF images of 2-D materials, crystals, "
                "nanoparticles and single atoms; nothing in vacuum or amorphous material; "
                "0.1 Å/px (images of 0.05-0.5 Å/px rescaled)"),
    "graphene": ("graphene.safetensors",
                 "graphene and Si-doped graphene down to about 2e4 e/Å² (the general model "
                 "stops near 5e4); same classes; trained on graphene only"),
}


def load_pretrained(name="general", device="auto"):
    """Load a pretrained :class:`~sklatom.segmentation.FCNSegmenter`.

    Parameters
    ----------
    name : str, default="general"
        A key of :data:`PRETRAINED`.
    device : str, default="auto"
        Torch device for inference: "auto" uses a GPU when present, else the CPU.

    Returns
    -------
    segmenter : FCNSegmenter
        Fitted: ``classes_``, ``pixel_size_`` (the training sampling, Å/px). Set its
        ``pixel_size`` parameter to the sampling of your images (0.05 to 0.5 Å/px) and it
        rescales them for you.

    Examples
    --------
    >>> seg = load_pretrained()
    >>> seg.classes_, seg.pixel_size_
    (['background', 'light', 'heavy'], 0.1)
    """
    from .segmentation import FCNSegmenter

    if name not in PRETRAINED:
        raise ValueError(f"no pretrained model named {name!r}; available: {sorted(PRETRAINED)}")
    filename, _ = PRETRAINED[name]
    path = _pretrained_file(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"the pretrained model file {filename} is missing from this installation "
            f"({path}); rebuild it with scripts/train_pretrained.py --name {name}"
        )
    with resources.as_file(path) as real_path:
        segmenter = FCNSegmenter.load(str(real_path), device=device)
    return segmenter


def _pretrained_file(name):
    """Where the file of the pretrained model ``name`` (a key of :data:`PRETRAINED`) lives in
    the installed package (an importlib.resources path; it may be missing)."""
    return resources.files("sklatom") / "models" / PRETRAINED[name][0]


def _load_model(model, name="model", device="auto"):
    """A fitted :class:`~sklatom.segmentation.FCNSegmenter` from a pretrained model name or a
    ``.safetensors`` file written by :meth:`FCNSegmenter.save
    <sklatom.segmentation.FCNSegmenter.save>`; ``name`` is the argument named in the errors."""
    from .segmentation import FCNSegmenter

    if isinstance(model, str) and model in PRETRAINED:
        return load_pretrained(model, device=device)
    if isinstance(model, (str, os.PathLike)) and os.path.isfile(model):
        return FCNSegmenter.load(model, device=device)
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"{name} must be a pretrained model name or a path to a .safetensors "
                        f"file; got {type(model).__name__}")
    raise ValueError(
        f"{name}={os.fspath(model)!r} is neither a pretrained model (available: "
        f"{', '.join(sorted(PRETRAINED))}) nor an existing model file (.safetensors written by "
        "FCNSegmenter.save or 'sklatom train')")
