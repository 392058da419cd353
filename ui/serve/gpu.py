"""ZeroGPU support without depending on it: ``spaces.GPU`` when the package is installed, identity otherwise.

Decorated functions run in a worker process on ZeroGPU, so they must only yield picklable values
(numpy arrays, dataclasses of them, plain dicts); figures are built outside.
"""

from __future__ import annotations

import ctypes
import gc
import importlib.util
import sys
from collections.abc import Callable
from typing import TypeVar

import torch

F = TypeVar("F", bound=Callable)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# On ZeroGPU (``spaces`` installed) a decorated generator runs in another process: what it is handed
# must pickle, so a job's interrupt (a callable of this process) stays here.
ZERO_GPU = importlib.util.find_spec("spaces") is not None


def gpu(fn: F, duration: int | Callable[..., int] = 120) -> F:
    """``fn`` under ``spaces.GPU``: ``duration`` is seconds, or a function of ``fn``'s arguments that
    returns them (ZeroGPU queues a shorter request first)."""
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        return fn
    return spaces.GPU(duration=duration)(fn)


def freeze_startup() -> None:
    """Once the app is built: what start-up made (modules, models, the page) lives as long as the
    process, so the collector stops walking it (``gc.freeze``) and ``release_memory``'s full collection
    after each job walks only what jobs made. Without it, that collection walks every start-up object
    and holds the interpreter while it does: Stop, and every other request, would wait for it."""
    gc.collect()
    gc.freeze()


def release_memory() -> None:
    """After a run: hand cached allocator memory back where the backend allows it.

    A large batch leaves its blocks in the allocator's cache: CUDA's caching allocator keeps them
    until ``empty_cache``; glibc's malloc keeps freed arenas until ``malloc_trim`` (docs/space.md,
    memory). Both calls only return memory nothing refers to.
    """
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl, …): nothing to trim
            pass
