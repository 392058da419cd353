"""The adapter registry: every diffusers pipeline paratta serves, found by what each adapter declares.

Loading a folder or hub id (``load``) and wrapping a pipeline (``ParaTAAPipeline.from_pipe``) both ask
``adapter_for``; adding a pipeline is one adapter module and one entry in ``ADAPTERS``.
"""

from __future__ import annotations

from .base import DiffusersModel
from .dit import DiTModel
from .flux import FluxModel
from .img2img import StableDiffusionImg2ImgModel, StableDiffusionXLImg2ImgModel
from .pixart import PixArtModel
from .sana import SanaModel
from .sd import StableDiffusionModel
from .sd3 import StableDiffusion3Model
from .sdxl import StableDiffusionXLModel
from .wan import WanModel

ADAPTERS: tuple[type[DiffusersModel], ...] = (
    StableDiffusionModel,
    StableDiffusionXLModel,
    StableDiffusionImg2ImgModel,
    StableDiffusionXLImg2ImgModel,
    DiTModel,
    StableDiffusion3Model,
    FluxModel,
    PixArtModel,
    SanaModel,
    WanModel,
)


def served() -> tuple[str, ...]:
    """Every pipeline class served, by name."""
    return tuple(name for adapter in ADAPTERS for name in adapter.serves.pipelines)


def unsupported(name: str | None) -> str:
    return (
        f"unsupported diffusers pipeline {name!r}: paratta serves {', '.join(served())} "
        "(each exact against its pipe(...))"
    )


def adapter_named(name: str | None) -> type[DiffusersModel]:
    """The adapter serving the pipeline class named ``name`` (a folder's ``model_index.json``)."""
    for adapter in ADAPTERS:
        if name in adapter.serves.pipelines:
            return adapter
    raise ValueError(unsupported(name))


def adapter_for(pipeline: type) -> type[DiffusersModel]:
    """The adapter serving the pipeline class ``pipeline``: its own, or its nearest served base class's when
    it overrides none of the methods that adapter reproduces (``Serves.replicates``); else refused, naming
    the class, the base and the method."""
    for base in pipeline.__mro__:
        if not base.__module__.startswith("diffusers.") or base.__name__ not in served():
            continue
        adapter = adapter_named(base.__name__)
        overridden = [m for m in adapter.serves.replicates if getattr(pipeline, m) is not getattr(base, m)]
        if overridden:
            raise ValueError(
                f"{pipeline.__name__} overrides {base.__name__}.{overridden[0]}: paratta reproduces "
                f"{base.__name__}'s own {overridden[0]}, so it cannot vouch for {pipeline.__name__}'s images"
            )
        return adapter
    raise ValueError(unsupported(pipeline.__name__))
