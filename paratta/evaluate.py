"""Batched network evaluation with chunking and a finiteness check, shared by both samplers.

This is the one place the network is called. Given a group of ranks (``Plan.group``, e.g.
``paratta.parallel.distributed.Group``) a call with several rows is split: each rank evaluates its
contiguous share and every rank gets all rows back, in order, so the callers (``solve``) run
unchanged and identically on every rank. A single row (the sequential sampler, the coarse
initialisation, a one-row window) is evaluated by every rank locally: splitting it would only add a
round trip. Without a group every row is evaluated here, whatever process group may be initialised.

An ``interrupt`` (``Plan.interrupt``: a callable, e.g. a job's "has Stop been pressed?") is asked
before every network call, each chunk of ``max_batch`` timesteps included: a True answer raises
``Interrupted``, so a solve ends within one call of being asked to, not at the end of its batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .planning.plan import RowGroup
from .problem import Problem


class NonFiniteError(FloatingPointError):
    """The model returned NaN or inf; the message names the timestep."""


class Interrupted(Exception):
    """The plan's interrupt asked the solve to end (before a network call)."""


def evaluate(
    problem: Problem,
    t: Tensor,
    x: Tensor,
    max_batch: int | None = None,
    group: RowGroup | None = None,
    interrupt: Callable[[], bool] | None = None,
) -> Tensor:
    """Guided network output at states ``x`` (n, *latent) and integer timesteps ``t`` (n,).

    ``x`` is cast to the model's dtype for the call and the output back to ``x``'s dtype.
    ``max_batch`` caps the timesteps per network call (each is two rows under guidance); in a
    group it applies within each rank's share. ``interrupt``: see the module docstring.
    """
    n = x.shape[0]
    if group is None or n < 2:
        return _evaluate_rows(problem, t, x, max_batch, interrupt)
    # Outputs travel in the model's precision (at least float32): the cast to x's dtype is exact after.
    wire = torch.promote_types(problem.model.dtype, torch.float32)
    out = group.gather_rows(
        lambda start, stop: _evaluate_rows(problem, t[start:stop], x[start:stop], max_batch, interrupt),
        n,
        tuple(x.shape[1:]),
        wire,
        t0=int(t[0]),
    )
    return out.to(x.device, x.dtype)


def _evaluate_rows(
    problem: Problem, t: Tensor, x: Tensor, max_batch: int | None, interrupt: Callable[[], bool] | None
) -> Tensor:
    """The network on this process: chunks of ``max_batch`` timesteps, each after asking ``interrupt``,
    then the finiteness check."""
    model = problem.model
    t = t.to(model.device)
    xm = x.to(model.device, model.dtype)
    n = x.shape[0]
    chunk = n if not max_batch else max_batch
    parts = []
    with torch.inference_mode():
        for s in range(0, n, chunk):
            if interrupt is not None and interrupt():
                raise Interrupted(f"interrupted before timesteps {s}…{min(s + chunk, n) - 1} of {n}")
            parts.append(model.predict(xm[s : s + chunk], t[s : s + chunk], problem.cond, problem.guidance))
    out = torch.cat(parts).to(x.device, x.dtype)
    finite = torch.isfinite(out.flatten(1)).all(1)
    if not bool(finite.all()):
        bad = int(t[(~finite).nonzero()[0, 0].to(t.device)])
        raise NonFiniteError(f"model returned NaN/inf at timestep {bad}")
    return out
