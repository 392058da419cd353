"""ZeroGPU support without depending on it: ``spaces.GPU`` when the package is installed, identity otherwise.

Decorated functions run in a worker process on ZeroGPU, so they must only yield picklable values
(numpy arrays, dataclasses of them, plain dicts); figures are built outside.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

F = TypeVar("F", bound=Callable)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def gpu(fn: F, duration: int = 120) -> F:
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        return fn
    return spaces.GPU(duration=duration)(fn)
