"""Batched network evaluation with chunking and a finiteness check, shared by both samplers."""

from __future__ import annotations

import torch
from torch import Tensor

from .problem import Problem


class NonFiniteError(FloatingPointError):
    """The model returned NaN or inf; the message names the timestep."""


def evaluate(problem: Problem, t: Tensor, x: Tensor, max_batch: int | None = None) -> Tensor:
    """Guided network output at states ``x`` (n, *latent) and integer timesteps ``t`` (n,).

    ``x`` is cast to the model's dtype for the call and the output back to ``x``'s dtype.
    ``max_batch`` caps the timesteps per network call (each is two rows under guidance).
    """
    model = problem.model
    t = t.to(model.device)
    xm = x.to(model.device, model.dtype)
    n = x.shape[0]
    chunk = n if not max_batch else max_batch
    with torch.inference_mode():
        parts = [
            model.predict(xm[s : s + chunk], t[s : s + chunk], problem.cond, problem.guidance)
            for s in range(0, n, chunk)
        ]
    out = torch.cat(parts).to(x.device, x.dtype)
    finite = torch.isfinite(out.flatten(1)).all(1)
    if not bool(finite.all()):
        bad = int(t[(~finite).nonzero()[0, 0].to(t.device)])
        raise NonFiniteError(f"model returned NaN/inf at timestep {bad}")
    return out
