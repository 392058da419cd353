"""Sequential sampling, any sampler of ``paratta.samplers``: T network calls, one after another — the
reference every solver must reproduce."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from .evaluate import evaluate
from .problem import Problem


@dataclass(frozen=True)
class SequentialState:
    """State after one sequential step: x_i has just been computed from x_{i+1}."""

    index: int  # i; 0 is the last step
    x: Tensor  # x_i
    model_seconds: float  # cumulative time inside the network
    seconds: float  # cumulative time inside the sampler (the caller's time between steps excluded)


def iterate_sequential(
    problem: Problem, device: torch.device | str | None = None, dtype: torch.dtype = torch.float64
) -> Iterator[SequentialState]:
    """x_i = p_i x_{i+1} + Σ_b w_{i,b} f_{i+b} + c_i ξ_i (``paratta.schedule`` (2)) for i = T−1…0, the
    network evaluated at x_{i+1}, yielding after each step."""
    device = torch.device(device) if device is not None else problem.model.device
    coef = problem.coef.to(device, dtype)
    x = problem.x_T.to(device, dtype)
    xi = problem.xi.to(device, dtype) if problem.xi is not None else None
    band = x.new_zeros((coef.band, *x.shape))  # f_i … f_{i+B−1}: this step's feature, then the ones before
    model_seconds, seconds = 0.0, 0.0
    for i in reversed(range(problem.steps)):
        start = time.perf_counter()  # restarted per step: time spent by the caller is not counted
        idx = torch.tensor([i], device=device)
        t0 = time.perf_counter()
        out = evaluate(problem, coef.timesteps[idx], x[None])
        model_seconds += time.perf_counter() - t0
        band = torch.cat([coef.features(idx, x[None], out), band[:-1]])
        x = coef.step(i, x, out[0], band, xi[i] if xi is not None else None)
        seconds += time.perf_counter() - start
        yield SequentialState(i, x, model_seconds, seconds)


def sample_sequential(
    problem: Problem, device: torch.device | str | None = None, dtype: torch.dtype = torch.float64
) -> Tensor:
    """The whole sequential trajectory x_0…x_T, shape (T+1, *latent), in ``dtype``."""
    device = torch.device(device) if device is not None else problem.model.device
    traj = torch.empty((problem.steps + 1, *problem.x_T.shape), device=device, dtype=dtype)
    traj[-1] = problem.x_T.to(device, dtype)
    for s in iterate_sequential(problem, device, dtype):
        traj[s.index] = s.x
    return traj
