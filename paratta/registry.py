"""One registry for every model: built-in names, local diffusers folders and hub ids.

Models are built once per process and reused (building a pipeline is the slow part of a run).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module

import torch

from .protocol import DiffusionModel, ModelDefaults


@dataclass(frozen=True)
class BuiltinModel:
    module: str
    builder: str  # a function taking ``device`` and ``dtype``
    description: str
    defaults: ModelDefaults  # the one home of a built-in's defaults: its model class declares these


# Modules are imported only when a model is asked for.
BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "shapes": BuiltinModel(
        "paratta.models.shapes",
        "build_shapes_model",
        "exact-score Gaussian mixture over coloured shapes, 3×32×32",
        ModelDefaults(prompt="red circle on blue", guidance=1.0),
    ),
    "toy2d": BuiltinModel(
        "paratta.models.toy2d",
        "build_toy2d_model",
        "2-D Gaussian mixture for teaching",
        ModelDefaults(prompt="north", guidance=1.0),
    ),
    "shapes-unet": BuiltinModel(
        "paratta.models.unet",
        "build_shapes_unet_model",
        "small trained UNet (1.1 M parameters) on the coloured shapes, 3×32×32",
        ModelDefaults(prompt="red circle", guidance=3.0),
    ),
}
# The loader of diffusers folders and hub ids, named like the built-ins' builders: the registry
# knows the models by name only (they import the core; the core does not import them).
DIFFUSERS_LOADER = ("paratta.models.diffusers.load", "load_diffusers_model")
# The defaults of a text-to-image pipeline that states none of its own (SD 1.x, 2.x, SDXL), and what
# ``model_defaults`` gives for a diffusers folder or hub id before it is loaded.
TEXT_TO_IMAGE_DEFAULTS = ModelDefaults("a watercolour painting of a lighthouse at dawn", 7.5, 50, True)


def model_defaults(name: str, model: DiffusionModel | None = None) -> ModelDefaults:
    """A built-in's declared defaults, a loaded model's own (``model.defaults``), else (a diffusers
    folder or hub id not loaded yet) a text-to-image pipeline's."""
    if name in BUILTIN_MODELS:
        return BUILTIN_MODELS[name].defaults
    if model is not None:
        return model.defaults
    return TEXT_TO_IMAGE_DEFAULTS


_cache: dict[tuple[str, str, str], DiffusionModel] = {}


def load_model(
    name: str, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> DiffusionModel:
    """A built-in name, a local diffusers folder, or a hub id → a model, built once per process."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"model must be a built-in name ({', '.join(BUILTIN_MODELS)}), a folder or a hub id")
    name = name.strip()
    key = (name, str(device), str(dtype))
    if key not in _cache:
        _cache[key] = _build(name, device, dtype)
    return _cache[key]


def _build(name: str, device: torch.device | str | None, dtype: torch.dtype | None) -> DiffusionModel:
    if name in BUILTIN_MODELS:
        entry = BUILTIN_MODELS[name]
        build: Callable[..., DiffusionModel] = getattr(import_module(entry.module), entry.builder)
        kwargs = {}
        if device is not None:
            kwargs["device"] = device
        if dtype is not None:
            kwargs["dtype"] = dtype
        return build(**kwargs)
    looks_like_hub_id = name.count("/") == 1 and not name.startswith((".", "/"))
    if os.path.isdir(name) or looks_like_hub_id:
        module, loader = DIFFUSERS_LOADER
        load: Callable[..., DiffusionModel] = getattr(import_module(module), loader)
        return load(name, device=device, dtype=dtype)
    raise ValueError(
        f"unknown model {name!r}: use a built-in name ({', '.join(BUILTIN_MODELS)}), "
        "a local diffusers folder, or a hub id like 'org/name'"
    )
