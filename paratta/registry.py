"""One registry for every model: built-in names, local diffusers folders and hub ids.

Models are built once per process and reused (building a pipeline is the slow part of a run).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib import import_module

import torch

from .protocol import DiffusionModel

# name → (module, builder, one-line description); modules are imported only when asked for.
BUILTIN_MODELS: dict[str, tuple[str, str, str]] = {
    "shapes": (
        "paratta.models.shapes",
        "build_shapes_model",
        "exact-score Gaussian mixture over coloured shapes, 3×32×32",
    ),
    "toy2d": ("paratta.models.toy2d", "build_toy2d_model", "2-D Gaussian mixture for teaching"),
    "shapes-unet": (
        "paratta.models.unet",
        "build_shapes_unet_model",
        "small trained UNet (1.1 M parameters) on the coloured shapes, 3×32×32",
    ),
}

_cache: dict[tuple[str, str, str], DiffusionModel] = {}


def register(name: str, module: str, builder: str, description: str) -> None:
    """Add a built-in model (a builder taking ``device`` and ``dtype``)."""
    BUILTIN_MODELS[name] = (module, builder, description)


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
        module, builder, _ = BUILTIN_MODELS[name]
        build: Callable[..., DiffusionModel] = getattr(import_module(module), builder)
        kwargs = {}
        if device is not None:
            kwargs["device"] = device
        if dtype is not None:
            kwargs["dtype"] = dtype
        return build(**kwargs)
    looks_like_hub_id = name.count("/") == 1 and not name.startswith((".", "/"))
    if os.path.isdir(name) or looks_like_hub_id:
        from .models.diffusers_adapter import load_diffusers_model

        return load_diffusers_model(name, device=device, dtype=dtype)
    raise ValueError(
        f"unknown model {name!r}: use a built-in name ({', '.join(BUILTIN_MODELS)}), "
        "a local diffusers folder, or a hub id like 'org/name'"
    )
