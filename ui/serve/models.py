"""The app's models, loaded once onto their devices (``get_model``), and what the page may ask of a
model beyond the protocol: one function per optional capability, the only place ``ui`` looks one up.

Each capability is probed on the model here; once the model contract declares them as attributes
(``paratta.protocol``), each function becomes a read of that attribute and nothing else changes.
"""

from __future__ import annotations

from typing import Any

from paratta import load_model
from paratta.protocol import DiffusionModel

from . import devices
from .gpu import DEVICE

DEFAULT = "shapes"  # the model the page opens on, unless the app is started with one of its own


def get_model(name: str) -> DiffusionModel:
    """The model on DEVICE, or on each of app.py's ``--devices`` with the rows split over them."""
    return devices.load(name) if devices.DEVICES else load_model(name, device=DEVICE)


def has_both_families(model: Any) -> bool:
    """Can both sampler families sample it (DDIM on ε and flow Euler on the velocity: the mixtures)?"""
    return getattr(model, "with_family", None) is not None


def image_size(model: Any) -> tuple[int, int] | None:
    """The (height, width) a pipeline that takes an image size samples at by default; None for a model
    of one size."""
    return tuple(model.image_size) if getattr(model, "takes_image_size", False) else None


def vocabulary(model: Any) -> dict[str, tuple[str, ...]]:
    """The words an embedded model's condition is made of, by category ({} for one that reads any text)."""
    return dict(getattr(model, "vocabulary", None) or {})


def encodes_offline(model: Any) -> bool:
    """Is its condition a parse of the prompt (no text encoder: the built-ins, a class-label model), so
    that checking the prompt's words runs no network?"""
    return getattr(model, "text_encoder", None) is None
