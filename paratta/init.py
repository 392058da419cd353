"""Initial guesses for the unknowns x_0…x_{T−1}. Any guess converges to the exact sequential sample;
a good one only saves iterations."""

from __future__ import annotations

import torch
from torch import Tensor

from .evaluate import evaluate
from .problem import Problem
from .schedule import SchedulerConfig, alphas_cumprod, ddim_coefficients


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


def coarse_pass(problem: Problem, steps: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """A deterministic DDIM pass with ``steps`` ≪ T steps, carried onto the fine grid.

    State x_i of the fine grid lives at ᾱ(s_i), s_i = τ_{i−1} (s_0: the final ᾱ). It is set to the
    DDIM jump from the nearest coarse state at or above s_i, √ᾱ(s_i) x̂_0 + √(1−ᾱ(s_i)) ε̂, using
    that coarse step's own prediction: exactly how DDIM itself moves between any two noise levels.
    Costs ``steps`` sequential network calls.
    """
    config = SchedulerConfig.from_dict(problem.model.scheduler_config)
    fine = problem.coef
    coarse = ddim_coefficients(config, steps, 0.0).to(device, dtype)
    ac = alphas_cumprod(config).to(device, dtype)
    traj = copies_of_xT(problem, device, dtype)
    x = traj[-1].clone()
    x0s, epss, taus = [], [], []
    for j in reversed(range(steps)):
        idx = torch.tensor([j], device=device)
        out = evaluate(problem, coarse.timesteps[idx], x[None])
        x0, eps = coarse.x0_eps(idx, x[None], out)
        x0s.append(x0[0])
        epss.append(eps[0])
        taus.append(int(coarse.timesteps[j]))
        x = coarse.step(idx, x[None], out, None)[0]
    final = fine.alpha_bar_prev[0].to(device, dtype)
    for i in range(problem.steps):
        s = int(fine.timesteps[i - 1]) if i > 0 else -1
        above = [n for n, tau in enumerate(taus) if tau >= s]
        if not above:
            continue  # noisier than the whole coarse grid: keep x_T
        n = above[-1]
        ab = ac[s] if s >= 0 else final
        traj[i] = ab.sqrt() * x0s[n] + (1 - ab).sqrt() * epss[n]
    return traj
