"""The names of the hardware figures are measured on: the CPU's model and a device's name."""

from __future__ import annotations

import platform

import torch


def cpu_name() -> str:
    """The CPU model as ``/proc/cpuinfo`` names it (else what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def device_name(device: torch.device | str) -> str:
    """A device as a latency table names it: the GPU's name, or the CPU's model."""
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
