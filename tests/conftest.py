"""Shared test settings: quiet, offline, single-threaded torch, temp dirs per test session."""

from __future__ import annotations

import os

import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The models here are small: on a 2-core machine, intra-op threads cost more in hand-offs than they
# save (a 20× slowdown was measured under load), and one thread keeps results reproducible.
torch.set_num_threads(1)
