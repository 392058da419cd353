"""The app's models, loaded once onto their devices (``get_model``), and what the page asks of a model
beyond the protocol's methods: one function per capability, each a read of what the model declares
(``paratta.protocol.DiffusionModel``), so the page and the door ask in one place and probe nothing.
"""

from __future__ import annotations

from paratta import load_model
from paratta.protocol import DiffusionModel

from . import devices
from .gpu import DEVICE

DEFAULT = "shapes"  # the model the page opens on, unless the app is started with one of its own


def get_model(name: str) -> DiffusionModel:
    """The model on DEVICE, or on each of app.py's ``--devices`` with the rows split over them."""
    return devices.load(name) if devices.DEVICES else load_model(name, device=DEVICE)


def has_both_families(model: DiffusionModel) -> bool:
    """Can both sampler families sample it (DDIM on ε and flow Euler on the velocity: the mixtures)?"""
    return len(model.families) > 1


def image_size(model: DiffusionModel) -> tuple[int, int] | None:
    """The (height, width) a pipeline that takes an image size samples at by default; None for a model
    of one size."""
    return model.image_size if model.takes_image_size else None


def vocabulary(model: DiffusionModel) -> dict[str, tuple[str, ...]]:
    """The words an embedded model's condition is made of, by category ({} for one that reads any text)."""
    return dict(model.vocabulary or {})


def encodes_offline(model: DiffusionModel) -> bool:
    """Is its condition a parse of the prompt (a vocabulary, or a class-label model's class names: no
    text encoder), so that checking the prompt's words runs no network?"""
    return model.vocabulary is not None or model.labels is not None
