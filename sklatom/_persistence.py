"""The ``.safetensors`` file of a fitted segmenter, without pickle.

What :meth:`sklatom.segmentation.FCNSegmenter.save` writes and
:meth:`~sklatom.segmentation.FCNSegmenter.load` reads: the U-Net weights as plain tensors and,
in the file's string metadata under the key :data:`METADATA_KEY`, a JSON document with the
format version, the estimator parameters, ``classes_``, ``pixel_size_``, the input
normalisation, a little of the network's shape and a SHA-256 digest of it all. Reading checks
the file, its metadata, the digest and the tensors against the network and executes no code.
"""

import hashlib
import json
import numbers
import os
from dataclasses import dataclass

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ._inference import NORMALISATION
from ._training import network_settings

__all__ = ["FORMAT_VERSION", "METADATA_KEY", "digest", "write_model", "StoredModel",
           "read_model", "load_weights"]

#: Version of the ``save``/``load`` file layout.
FORMAT_VERSION = 1
#: Key of the JSON document in the file's metadata.
METADATA_KEY = "sklatom"
#: Keys the JSON document must have.
_REQUIRED = ("format_version", "params", "classes_", "pixel_size_", "normalisation", "sha256")


def digest(config_without_digest, tensors):
    """SHA-256 of the JSON document (without its ``sha256``) and the tensors, as hex."""
    h = hashlib.sha256(json.dumps(config_without_digest, sort_keys=True).encode())
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _optimizer_name(optimizer):
    if isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer):
        if getattr(torch.optim, optimizer.__name__, None) is optimizer:
            return optimizer.__name__
    raise ValueError(
        f"save() stores optimizers from torch.optim by name; got optimizer={optimizer!r}. "
        "Use joblib.dump for estimators with custom optimizers."
    )


def _optimizer_from_name(name, path):
    opt = getattr(torch.optim, name, None) if isinstance(name, str) else None
    if not (isinstance(opt, type) and issubclass(opt, torch.optim.Optimizer)):
        raise ValueError(f"{path}: optimizer {name!r} is not an optimizer of torch.optim")
    return opt


def _json_params(segmenter):
    """The parameters as JSON values; ``module__`` settings those of the fitted network
    (an ``init_model`` may have set them)."""
    params = segmenter.get_params(deep=False)
    params.update({k: v for k, v in network_settings(segmenter).items()
                   if k.startswith("module__")})
    if params["init_model"] is not None:
        params["init_model"] = os.fspath(params["init_model"])
    params["optimizer"] = _optimizer_name(params["optimizer"])
    if params["augment_zoom"] is not None:
        params["augment_zoom"] = [float(z) for z in params["augment_zoom"]]
    cw = params["class_weight"]
    if cw is not None and not isinstance(cw, str):
        params["class_weight"] = [float(v) for v in np.asarray(cw).ravel()]
    if params["classes"] is not None:
        params["classes"] = list(params["classes"])
    rs = params["random_state"]
    if not (rs is None or isinstance(rs, numbers.Integral)):
        params["random_state"] = None
    elif rs is not None:
        params["random_state"] = int(rs)
    if isinstance(params["device"], torch.device):
        params["device"] = str(params["device"])
    return params


def write_model(segmenter, path):
    """Write a fitted segmenter to ``path`` (see the module docstring); return the path."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot save the model to {path!r}: the folder {folder!r} "
                                f"does not exist; create it first")
    module = segmenter.net_.module_
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    config = {
        "format_version": FORMAT_VERSION,
        "estimator": type(segmenter).__name__,
        "params": _json_params(segmenter),
        "classes_": list(segmenter.classes_),
        "pixel_size_": segmenter.pixel_size_,
        "normalisation": dict(NORMALISATION),
        "module": {"depth": module.depth, "dilation": module.dilation,
                   "space_to_depth": module.space_to_depth},
    }
    config["sha256"] = digest(config, tensors)
    save_file(tensors, path, metadata={METADATA_KEY: json.dumps(config)})
    return path


@dataclass
class StoredModel:
    """What :func:`read_model` found in a model file."""

    #: the file
    path: str
    #: estimator parameters, ready for the estimator's constructor (not checked yet)
    params: dict
    #: class names (at least two)
    classes: list
    #: the training pixel size in Å/px or None (not checked yet)
    pixel_size: object
    #: the network's weights by name
    tensors: dict


def read_model(path, param_names):
    """Read and verify a file written by :func:`write_model`.

    ``param_names`` are the estimator's parameter names: the file may hold no others.
    Raises FileNotFoundError for a missing file and ValueError, naming the file, for one
    that is unreadable, or whose metadata is missing, malformed, of another format version
    or input normalisation, or modified (the digest does not match).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such model file: {path!r}")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(
            f"{path!r} is not a readable safetensors file (truncated or corrupt?): {exc}"
        ) from exc
    if METADATA_KEY not in metadata:
        raise ValueError(
            f"{path!r} has no {METADATA_KEY!r} metadata; it was not written by "
            "FCNSegmenter.save"
        )
    try:
        config = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path!r}: the sklatom metadata is not valid JSON: {exc}") from exc
    if not isinstance(config, dict) or any(k not in config for k in _REQUIRED):
        raise ValueError(
            f"{path!r}: the sklatom metadata must be a JSON object with keys {_REQUIRED}"
        )
    if config["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"{path!r}: format_version {config['format_version']!r} is not supported "
            f"(expected {FORMAT_VERSION})"
        )
    expected_digest = config.pop("sha256")
    if digest(config, tensors) != expected_digest:
        raise ValueError(
            f"{path!r}: SHA-256 digest mismatch; the weights or metadata were modified or "
            "corrupted"
        )
    if config["normalisation"] != NORMALISATION:
        raise ValueError(
            f"{path!r}: unsupported input normalisation {config['normalisation']!r}"
        )
    params = config["params"]
    valid = set(param_names)
    if not isinstance(params, dict) or not set(params) <= valid:
        extra = sorted(set(params) - valid) if isinstance(params, dict) else params
        raise ValueError(f"{path!r}: unknown estimator parameters {extra!r}")
    params = dict(params)
    params["optimizer"] = _optimizer_from_name(params.get("optimizer", "Adam"), path)
    if isinstance(params.get("augment_zoom"), list):
        params["augment_zoom"] = tuple(params["augment_zoom"])
    classes = config["classes_"]
    if (not isinstance(classes, list) or len(classes) < 2
            or not all(isinstance(c, str) for c in classes)):
        raise ValueError(f"{path!r}: classes_ must be a list of >= 2 names; got {classes!r}")
    return StoredModel(path, params, list(classes), config["pixel_size_"], tensors)


def load_weights(module, tensors, path):
    """Load ``tensors`` into ``module`` after checking their names, shapes and dtypes
    against it (errors name the file ``path``); leave the module in eval mode."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{path!r}: tensors do not match the network: missing {missing}, "
            f"unexpected {unexpected}"
        )
    for key, ref in expected.items():
        t = tensors[key]
        if tuple(t.shape) != tuple(ref.shape) or t.dtype != ref.dtype:
            raise ValueError(
                f"{path!r}: tensor {key!r} has shape {tuple(t.shape)} and dtype {t.dtype}; "
                f"the network expects {tuple(ref.shape)} and {ref.dtype}"
            )
    module.load_state_dict(tensors)
    module.eval()
