"""The one-line name of the machine a figure was measured on (every table and note names it)."""

from __future__ import annotations

import os
import platform

import torch

from paratta.planning.hardware import cpu_name


def machine(device: torch.device | str | None = None) -> str:
    """CPU, cores, OS, torch threads and version; the GPU's name and CUDA version when ``device`` is
    CUDA (or, with no device given, when CUDA is available)."""
    line = (
        f"{cpu_name()}, {os.cpu_count()} cores, {platform.system()}, {torch.get_num_threads()} torch "
        f"thread(s), torch {torch.__version__}"
    )
    cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
    if cuda:
        line += f", GPU: {torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return line
