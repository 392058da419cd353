"""One process, several devices: a model whose ``predict`` fans the rows out over replicas.

The app's ``--devices cuda:0,cuda:1`` runs in one process (Gradio serves from one), so instead of
a process group it holds one replica of the model per device and one thread per replica. Each
``predict`` call splits its rows (timesteps; a guided pair stays together inside the replica's own
``predict``) into the same balanced contiguous shares as ``paratta.parallel.distributed``, runs them at once,
and concatenates the outputs in order on the first replica's device. The solver and ``evaluate``
are unchanged; ``max_batch`` applies before the split (one call's rows are shared out).

Threads suffice because the heavy work runs in CUDA kernels and torch's C++ operators, which
release the GIL; on a CPU the replicas share the cores, so there is nothing to gain there — ``cpu,cpu``
exists to test the split.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor

from paratta.problem import at_size, for_family
from paratta.protocol import DiffusionModel

from .distributed import shares


def to_device(obj: Any, device: torch.device) -> Any:
    """``obj`` with every tensor in it moved to ``device`` (tensors, dataclasses, tuples, lists, dicts)."""
    if isinstance(obj, Tensor):
        return obj.to(device)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        moved = {f.name: to_device(getattr(obj, f.name), device) for f in dataclasses.fields(obj) if f.init}
        return dataclasses.replace(obj, **moved)
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_device(v, device) for v in obj)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


class ReplicatedModel:
    """The first replica as the model (encode, decode, device, …), with ``predict`` split over all."""

    def __init__(self, replicas: list[DiffusionModel]) -> None:
        if not replicas:
            raise ValueError("devices: give at least one device")
        self.replicas = replicas
        self._pool = ThreadPoolExecutor(max_workers=len(replicas), thread_name_prefix="paratta-replica")
        self._families: dict[str, ReplicatedModel] = {}
        self._sizes: dict[tuple[int | None, int | None], ReplicatedModel] = {}

    def with_family(self, family: str) -> ReplicatedModel:
        """Every replica as sampler family ``family`` sees it (``paratta.problem.for_family``), still split
        over all devices; one view per family, so its threads are reused."""
        if family not in self._families:
            self._families[family] = ReplicatedModel([for_family(r, family) for r in self.replicas])
        return self._families[family]

    def with_size(self, height: int | None, width: int | None) -> ReplicatedModel:
        """Every replica at ``height``×``width`` pixels (``paratta.problem.at_size``), still split over all
        devices; one view per size."""
        if (height, width) not in self._sizes:
            self._sizes[height, width] = ReplicatedModel([at_size(r, height, width) for r in self.replicas])
        return self._sizes[height, width]

    # Not a probe: every declared attribute (and the pipeline) is the first replica's, forwarded as it is.
    def __getattr__(self, name: str) -> Any:
        return getattr(self.replicas[0], name)

    def predict(self, x: Tensor, t: Tensor, cond: Any, guidance: float) -> Tensor:
        """The replicas' outputs for their shares of the rows, in order, on the first replica's device."""
        t = torch.as_tensor(t).reshape(-1).expand(x.shape[0])
        spans = [(a, b) for a, b in shares(x.shape[0], len(self.replicas)) if b > a]
        jobs = [
            self._pool.submit(self._predict_share, replica, x[a:b], t[a:b], cond, guidance)
            for replica, (a, b) in zip(self.replicas, spans, strict=False)
        ]
        return torch.cat([job.result().to(self.replicas[0].device) for job in jobs])

    @staticmethod
    def _predict_share(replica: DiffusionModel, x: Tensor, t: Tensor, cond: Any, guidance: float) -> Tensor:
        device = torch.device(replica.device)
        with torch.inference_mode():  # inference mode is per thread: the caller's does not reach here
            return replica.predict(x.to(device), t.to(device), to_device(cond, device), guidance)
