"""A posed run: what a front end states about one run, made once, before the run starts.

``pose(model, request, config, device, group)`` makes, once: the problem (the condition, the
coefficients, the noises; ``paratta.problem.make_problem``), the plan (``plan.plan``), the sampler's
name, the image size, the network rows per timestep and the work bound (``cost.work``). The CLI,
``ParaTAAPipeline``, the app and its Teach tab each pose a run once and read everything else from the
``Run``; ``solve`` and ``run`` (``paratta.solve``,
``paratta.run``) iterate a problem on its plan, planning first when given a config.

Posed ``dry``, a run is what is known without the network: no condition is encoded (a text encoder is
a network), nothing is calibrated, and a window the device would choose is planned at its largest,
W = T, which bounds the work of any window it could choose. The app's door poses dry to check a job's
settings before the job takes a queue slot.

An ``interrupt`` (a callable; True ends the solve, ``paratta.evaluate.Interrupted``) is asked before
every network call; ``call_s`` bounds the projected time of one call (on the device's latency table)
by splitting an iteration's batch, so that an interrupt is answered within about that long. The work
bound charges each iteration as the batch the plan would make without ``call_s``: a split batch costs
about the same on the table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from paratta import solver
from paratta.config import Request, SolverConfig
from paratta.problem import Problem, at_size, for_family, make_problem, schedule_for
from paratta.protocol import DiffusionModel
from paratta.samplers import family
from paratta.solver import Iterate

from .cost import Work, area, call_steps, cost_table, work
from .latency import rows_per_step
from .plan import Plan, RowGroup, plan, resolve


@dataclass(frozen=True)
class Run:
    """One run, posed: its problem and plan, and what is said about it (see the module docstring)."""

    model: str  # the model's name (a built-in's registry name, a folder or a hub id)
    request: Request  # as asked
    plan: Plan
    sampler: str  # the sampler solved, by its usual name ("DDIM", "DPM++ 2M Karras", "flow Euler")
    family: str  # the sampler family solved, "ddim" or "flow" ("auto" made the model's own)
    size: tuple[int, int] | None  # (height, width) in pixels; None for a model of one size
    latent_shape: tuple[int, ...]
    rows_per_step: int  # network rows one timestep costs (two under classifier-free guidance)
    work: Work  # the worst case of the reference and the solve on the device the network runs on
    problem: Problem | None = None  # None when posed dry, or detached

    @property
    def steps(self) -> int:
        return self.plan.steps

    def detached(self) -> Run:
        """This run without what binds it to the process that posed it (the problem and its model, the
        plan's group and interrupt): small and picklable, for an event or a record."""
        return replace(self, problem=None, plan=replace(self.plan, group=None, interrupt=None))


def pose(
    model: DiffusionModel,
    request: Request,
    config: SolverConfig | None = None,
    device: torch.device | str | None = None,
    group: RowGroup | None = None,
    *,
    dry: bool = False,
    problem: Problem | None = None,
    latents: Tensor | None = None,
    generator: Any = None,
    cond: Any = None,
    begin: int | None = None,
    interrupt: Callable[[], bool] | None = None,
    call_s: float | None = None,
) -> Run:
    """``request`` on ``model`` with ``config``, posed once (``ValueError`` naming the setting at fault).

    ``device`` is where the solver state lives (default: the model's) and the device whose latency
    table charges the work bound; ``group`` the ranks that share each call's rows. ``problem``: one
    posed already for the same request (a race's lanes share it); ``latents``, ``generator``, ``cond``
    and ``begin`` as ``make_problem`` takes them (a pipeline's own x_T, condition, image-to-image
    start). ``dry``, ``interrupt`` and ``call_s``: see the module docstring.
    """
    config = config or SolverConfig()
    if dry:  # the schedule needs no network: it says how many rows the sampler evaluates (PLMS: T + 1)
        sized = at_size(for_family(model, request.family), request.height, request.width)
        schedule = schedule_for(sized, request.steps, request.eta, request.sampler)
        name = schedule.name
        planned = resolve(config, schedule.num_steps, device=device, group=group)
    else:
        problem = problem or make_problem(model, request, latents, generator, cond=cond, begin=begin)
        sized, name = problem.model, problem.sampler
        planned = plan(problem, config, device, group)
    network = torch.device(device) if device is not None else torch.device(sized.device)
    per_step = rows_per_step(request.guidance, sized)
    curve = cost_table(model.name, sized, network)
    bound = work(planned, per_step, curve, area(model, request.height, request.width))
    if call_s is not None:
        steps = call_steps(curve.table, per_step, call_s, planned.window)
        if steps < min(planned.window, planned.max_batch or planned.window):
            planned = replace(planned, max_batch=steps)
    return Run(
        model=model.name,
        request=request,
        plan=replace(planned, interrupt=interrupt),
        sampler=name,
        family=family(sized.scheduler_config),
        size=sized.image_size if sized.takes_image_size else None,
        latent_shape=tuple(sized.latent_shape),
        rows_per_step=per_step,
        work=bound,
        problem=problem,
    )


def solve(
    problem: Problem,
    config: SolverConfig | Plan | None = None,
    init_trajectory: Tensor | None = None,
    device: torch.device | str | None = None,
    group: RowGroup | None = None,
) -> Iterator[Iterate]:
    """``paratta.solver.solve`` on ``config``'s plan (made here once by ``plan`` when a config is given)."""
    return solver.solve(problem, _planned(problem, config, device, group), init_trajectory)


def run(
    problem: Problem,
    config: SolverConfig | Plan | None = None,
    init_trajectory: Tensor | None = None,
    device: torch.device | str | None = None,
    group: RowGroup | None = None,
) -> Iterate:
    """Solve to the end and return the last ``Iterate`` (see ``solve``)."""
    return solver.run(problem, _planned(problem, config, device, group), init_trajectory)


def _planned(
    problem: Problem,
    config: SolverConfig | Plan | None,
    device: torch.device | str | None,
    group: RowGroup | None,
) -> Plan:
    if not isinstance(config, Plan):
        return plan(problem, config, device, group)
    if device is not None or group is not None:
        raise ValueError("device and group are part of the plan: pass them to paratta.plan, not with a plan")
    return config
