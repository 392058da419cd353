"""Initial guesses for the unknowns x_0…x_{T−1}. Any guess converges to the exact sequential sample;
a good one only saves iterations."""

from __future__ import annotations

import torch
from torch import Tensor

from .evaluate import evaluate
from .problem import Problem, schedule_for


def copies_of_xT(problem: Problem, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Every state a copy of x_T: the trajectory tensor (T+1, *latent)."""
    x_T = problem.x_T.to(device, dtype)
    return x_T.expand(problem.steps + 1, *x_T.shape).clone()


def from_trajectory(problem: Problem, trajectory: Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
    """A given trajectory (T+1, *latent), e.g. a run with another prompt; x_T is the problem's own."""
    expected = (problem.steps + 1, *problem.x_T.shape)
    if tuple(trajectory.shape) != expected:
        raise ValueError(f"init trajectory must have shape {expected}, got {tuple(trajectory.shape)}")
    traj = trajectory.to(device, dtype).clone()
    if not torch.isfinite(traj).all():
        raise ValueError("init trajectory contains NaN or inf")
    traj[-1] = problem.x_T.to(device, dtype)
    return traj


def coarse_pass(problem: Problem, steps: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, int]:
    """A deterministic pass of the same sampler with ``steps`` ≪ T steps, carried onto the fine grid.

    Fine state x_i lives at the noise level n_i of the fine grid (``Schedule.noise``). It is set by the
    coarse schedule's ``jump`` from the least noisy coarse evaluation at or above n_i, using that
    step's own prediction: exactly how the sampler itself moves between two noise levels (DDIM:
    √(1 − n²) x̂_0 + n ε̂; flow matching: (1 − n) x̂_0 + n ε̂). A stochastic sampler's pass runs without
    its noise. Returns the trajectory and the network calls it cost (``steps``; PLMS: one more).
    """
    fine = problem.coef.to(device, dtype)
    coarse = schedule_for(problem.model, steps, 0.0, problem.request.sampler).to(device, dtype)
    traj = copies_of_xT(problem, device, dtype)
    x = traj[-1].clone()
    evaluations = []  # (noise level of the input, row, input, network output), noisiest first
    band = x.new_zeros((coarse.band, *x.shape))
    for j in reversed(range(coarse.num_steps)):
        idx = torch.tensor([j], device=device)
        out = evaluate(problem, coarse.timesteps[idx], x[None])
        evaluations.append((float(coarse.input_noise[j]), idx, x[None], out))
        band = torch.cat([coarse.features(idx, x[None], out), band[:-1]])
        x = coarse.step(j, x, out[0], band, None)
    for i in range(problem.steps):
        level = fine.noise[i]
        above = [e for e in evaluations if e[0] >= float(level)]
        if not above:
            continue  # noisier than the whole coarse grid: keep x_T
        _, idx, state, out = above[-1]
        traj[i] = coarse.jump(idx, state, out, level)[0]
    return traj, coarse.num_steps
