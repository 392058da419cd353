"""Shared test settings: quiet, offline, single-threaded torch, temp dirs per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The models here are small: on a 2-core machine, intra-op threads cost more in hand-offs than they
# save (a 20× slowdown was measured under load), and one thread keeps results reproducible.
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def quiet_diffusers() -> Iterator[None]:
    """diffusers without its logs and progress bars, for a module of pipeline runs."""
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    yield
    diffusers_logging.enable_progress_bar()
    diffusers_logging.set_verbosity(level)
