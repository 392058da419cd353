"""``python app.py --devices cuda:0,cuda:1``: where the app's models run.

One device (the default: CUDA when present, else the CPU) loads the model there. Several
devices load one replica per device and split each iteration's network rows over them in threads
(``paratta.parallel.replicas.ReplicatedModel``): the app stays one process, so no process group is needed.
"""

from __future__ import annotations

import torch

from paratta import load_model
from paratta.parallel.replicas import ReplicatedModel
from paratta.protocol import DiffusionModel

from .gpu import DEVICE

DEVICES: list[str] = []  # set once at start-up by ``configure``; empty: the default device
_replicated: dict[str, ReplicatedModel] = {}  # one per model name: its replicas and threads are reused


def parse_devices(text: str) -> list[str]:
    """``"cuda:0,cuda:1"`` → ``["cuda:0", "cuda:1"]``, each a device torch knows and this host has."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ValueError("--devices: give a comma-separated list, e.g. cuda:0,cuda:1 or cpu")
    for name in names:
        try:
            device = torch.device(name)
        except RuntimeError as err:
            raise ValueError(f"--devices: {name!r} is not a device ({err})") from None
        if device.type == "cuda":
            count = torch.cuda.device_count()
            if device.index is None:
                raise ValueError(f"--devices: name the CUDA device's index ({name!r} → cuda:0, cuda:1 …)")
            if device.index >= count:
                raise ValueError(f"--devices: {name!r} is not on this host ({count} CUDA device(s) visible)")
    return names


def configure(text: str | None) -> list[str]:
    """Set the app's devices from ``--devices`` (None: the default device)."""
    DEVICES[:] = parse_devices(text) if text else []
    _replicated.clear()
    return list(DEVICES)


def load(name: str) -> DiffusionModel:
    """The model ``name`` on the configured device(s): a ``ReplicatedModel`` when there are several."""
    if len(DEVICES) <= 1:
        return load_model(name, device=DEVICES[0] if DEVICES else DEVICE)
    if name not in _replicated:
        _replicated[name] = ReplicatedModel([load_model(name, device=d) for d in DEVICES])
    return _replicated[name]  # type: ignore[return-value]
