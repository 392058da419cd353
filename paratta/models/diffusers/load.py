"""Loading a diffusers pipeline (a folder or a hub id) as a paratta model, through the adapter registry.

Every pipeline class an adapter declares (``adapters.ADAPTERS``) is served: the class is read from
``model_index.json`` first, so an unsupported pipeline fails before any weights load.

diffusers and transformers are imported by this subpackage only, never from ``paratta/__init__``
(``import diffusers`` alone takes seconds): ``paratta.registry`` imports this module when a
diffusers model is asked for.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import torch

from .adapters import adapter_for, adapter_named
from .base import DiffusersModel, resolve_device_dtype


def from_pipeline(
    pipe: Any,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    name: str | None = None,
    **options: Any,
) -> DiffusersModel:
    """Wrap an already built pipeline object with the adapter that serves its class (``adapter_for``);
    ``ValueError`` naming the class and the reason when none does, before anything moves. ``options``:
    the adapter's (``Serves.options``: size, prompt length, …) and ``tiny_vae``."""
    adapter = adapter_for(type(pipe))
    adapter.check(pipe)
    return adapter(pipe, device=device, dtype=dtype, name=name, **options)


def load_diffusers_model(
    name_or_path: str,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    *,
    tiny_vae: Any = None,
    height: int | None = None,
    width: int | None = None,
) -> DiffusersModel:
    """Load a diffusers pipeline from a local folder or a hub id and wrap it as a ``DiffusionModel``.

    The pipeline class is read from ``model_index.json`` first, so an unsupported pipeline fails
    before any weights load. Hub ids are looked up in the local cache first; the hub is asked only
    when it is reachable and ``HF_HUB_OFFLINE`` is not set, otherwise a ``ValueError`` names the id.
    ``tiny_vae`` (an ``AutoencoderTiny`` or its folder/hub id, e.g. TAESD) is used for previews;
    ``height``/``width`` override the pipeline's default image size where it takes one.
    """
    source = name_or_path.strip()
    device, dtype = resolve_device_dtype(device, dtype)
    local = os.path.isdir(source)
    offline = not local and _offline()
    index = _model_index(source, local, offline)
    adapter = adapter_named(index.get("_class_name"))
    import diffusers

    cls = getattr(diffusers, index["_class_name"])
    extra: dict[str, Any] = {}
    if "safety_checker" in index:
        # The safety checker and its image processor are not used by paratta; skip loading them.
        extra = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    pipe = _fetch(
        source,
        lambda: cls.from_pretrained(source, local_files_only=local or offline, dtype=dtype, **extra),
    )
    if isinstance(tiny_vae, str):
        from diffusers import AutoencoderTiny

        tv_local = os.path.isdir(tiny_vae)
        tv_offline = not tv_local and _offline()
        tiny_vae = _fetch(
            tiny_vae,
            lambda: AutoencoderTiny.from_pretrained(
                tiny_vae, local_files_only=tv_local or tv_offline, dtype=dtype
            ),
        )
    name = os.path.basename(os.path.normpath(source)) if local else source
    size = {"height": height, "width": width} if adapter.takes_image_size else {}
    adapter.check(pipe)
    return adapter(pipe, device=device, dtype=dtype, name=name, tiny_vae=tiny_vae, **size)


def _model_index(source: str, local: bool, offline: bool) -> dict[str, Any]:
    """``model_index.json`` of a folder or a hub repo (cache first), as a dict."""
    if local:
        path = os.path.join(source, "model_index.json")
        if not os.path.isfile(path):
            raise ValueError(f"{source!r} is a folder but not a diffusers pipeline (no model_index.json)")
    else:
        from huggingface_hub import hf_hub_download

        path = _fetch(
            source, lambda: hf_hub_download(source, "model_index.json", local_files_only=True), cached=True
        )
        if path is None:
            if offline:
                raise ValueError(
                    f"model {source!r} is not in the local Hugging Face cache and this machine is offline "
                    "(HF_HUB_OFFLINE is set or huggingface.co is unreachable). Download it where there is "
                    f"network (`hf download {source}`) and copy the cache, or pass a local pipeline folder."
                )
            path = _fetch(source, lambda: hf_hub_download(source, "model_index.json"))
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _fetch(source: str, fn: Callable[[], Any], cached: bool = False) -> Any:
    """Run a hub/cache lookup; errors become a ``ValueError`` naming ``source`` (``None``: cache miss)."""
    try:
        return fn()
    except (MemoryError, torch.OutOfMemoryError):
        raise
    except Exception as error:  # hub, HTTP, validation and file errors all mean "cannot load this id"
        if cached:
            return None
        # diffusers loads a network that keeps modules in float32 (Wan's transformer) only through accelerate
        hint = (
            "; diffusers needs `accelerate` installed to load it"
            if "keep_in_fp32_modules" in str(error)
            else ""
        )
        raise ValueError(
            f"could not load diffusers model {source!r}: {type(error).__name__}: {error}{hint}"
        ) from error


def _offline() -> bool:
    """True when HF_HUB_OFFLINE is set (read now, not at import) or the hub host is unreachable."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE"):
        return True
    return not _reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """Can a TCP connection to the endpoint be opened within ``timeout`` s (DNS included)?

    The attempt runs in a daemon thread because a DNS lookup ignores socket timeouts.
    """
    parsed = urlparse(url)
    host, port = parsed.hostname or "huggingface.co", parsed.port or (443 if parsed.scheme != "http" else 80)
    ok = threading.Event()

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.set()
        except OSError:
            pass

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout)
    return ok.is_set()
