"""``torchrun --nproc_per_node=N -m paratta bench``: one ParaTAA run on 1, 2, 4 … N ranks (N ≥ 1).

For each rank count k the first k ranks form a subgroup and solve the same problem, the others
wait. Per iteration, the wall-clock is split into the rank's share of the network, communication
(the status exchange and the row gather, waiting for slower peers included) and the solver update
(computed by every rank). The figures are means over the k ranks. Also reported: what the
alternative design — rank 0 computes the update and broadcasts the window's new states — would add
per iteration (a measured broadcast of W states), and x_0's largest difference to the 1-rank run.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, replace
from datetime import timedelta

import torch
import torch.distributed as dist

from paratta.config import SolverConfig
from paratta.parallel import distributed
from paratta.planning.plan import plan
from paratta.problem import Request, make_problem
from paratta.registry import load_model, model_defaults
from paratta.solver import run
from paratta.tools.machine import machine


@dataclass(frozen=True)
class ScalingRow:
    model: str
    steps: int
    eta: float
    ranks: int
    iterations: int
    ms_per_iter: float  # wall-clock of the whole solve / iterations (rank 0)
    network_ms: float  # per iteration, this rank's share of the network, mean over ranks
    communication_ms: float  # per iteration, status exchange + row gather, mean over ranks
    solver_ms: float  # per iteration, the update (every rank computes it), mean over ranks
    broadcast_ms: float  # per iteration, a broadcast of the window's states from rank 0 (the alternative)
    speedup: float  # 1-rank ms/iter over this ms/iter
    x0_difference: float  # max |x_0 − x_0 of the 1-rank run|


def rank_counts(world: int) -> list[int]:
    """1, 2, 4 … and world itself."""
    counts = [1]
    while counts[-1] * 2 < world:
        counts.append(counts[-1] * 2)
    return counts + [world] if world > 1 else counts


def _subgroups(group: distributed.Group) -> dict[int, distributed.Group | None]:
    """This rank's view of the first-k-ranks subgroup for each k (None where it is not a member).

    Every rank must create every subgroup, in the same order (torch.distributed's rule).
    """
    out: dict[int, distributed.Group | None] = {}
    timeout = {"timeout": timedelta(seconds=group.timeout_s)} if group.timeout_s else {}
    for k in rank_counts(group.world):
        handle = dist.new_group(ranks=list(range(k)), **timeout)
        member = group.rank < k
        out[k] = distributed.Group(group.rank, k, group.device, group.timeout_s, handle) if member else None
    return out


def _broadcast_ms(sub: distributed.Group, shape: tuple[int, ...], repeats: int = 5) -> float:
    """Mean time to broadcast one window of float64 states from rank 0 over ``sub``."""
    states = torch.zeros(shape, dtype=torch.float64, device=sub.device)
    dist.broadcast(states, src=0, group=sub.handle)  # warm-up: connections are set up lazily
    t0 = time.perf_counter()
    for _ in range(repeats):
        dist.broadcast(states, src=0, group=sub.handle)
    if sub.device.type == "cuda":
        torch.cuda.synchronize(sub.device)
    return 1e3 * (time.perf_counter() - t0) / repeats


def _measure(sub: distributed.Group, problem, config: SolverConfig, device: str | None) -> dict:
    """One timed solve on ``sub`` (after an untimed one-iteration warm-up): this rank's figures."""
    planned = plan(problem, config, device, sub)
    run(problem, replace(planned, max_iters=1))
    sub.timers.reset()
    t0 = time.perf_counter()
    last = run(problem, planned)
    wall = time.perf_counter() - t0
    n = last.iteration
    window = (planned.window, *problem.x_T.shape)
    return {
        "iterations": n,
        "ms_per_iter": 1e3 * wall / n,
        "network_ms": 1e3 * sub.timers.network / n,
        "communication_ms": 1e3 * sub.timers.communication / n,
        "solver_ms": 1e3 * last.solver_seconds / n,
        "broadcast_ms": _broadcast_ms(sub, window) if sub.world > 1 else 0.0,
        "x0": last.x0.cpu(),
    }


def scaling_command(args: argparse.Namespace) -> list[ScalingRow]:
    """The bench under torchrun: rows on rank 0, printed as a table or JSON."""
    if args.threads:
        torch.set_num_threads(args.threads)
    group = distributed.current()
    if group is None:
        raise ValueError("the scaling bench runs under torchrun (python -m paratta's CLI joins the group)")
    subgroups = _subgroups(group)
    model = load_model(args.model, device=args.device)
    prompt = model_defaults(args.model, model).prompt
    rows: list[ScalingRow] = []
    for steps in args.steps:
        for eta in args.eta:
            family = getattr(args, "family", "auto")
            problem = make_problem(model, Request(prompt, "", 0, steps, eta, args.guidance, family))
            config = SolverConfig(solver="anderson", tol=args.tol)
            base: dict | None = None
            for k, sub in subgroups.items():
                mine = _measure(sub, problem, config, args.device) if sub is not None else None
                everyone: list[dict | None] = [None] * group.world
                dist.all_gather_object(everyone, mine)
                figures = [f for f in everyone if f is not None]
                base = base or figures[0]
                rows.append(_row(args.model, steps, eta, k, figures, base))
    if group.rank == 0:
        if args.json:
            print(json.dumps({"machine": machine(), "rows": [asdict(r) for r in rows]}))
        else:
            print(f"machine: {machine()}; model {args.model}; Anderson, W = T; guidance {args.guidance:g}")
            print(table(rows))
    return rows


def _row(model: str, steps: int, eta: float, k: int, figures: list[dict], base: dict) -> ScalingRow:
    def mean(key: str) -> float:
        return sum(f[key] for f in figures) / len(figures)

    return ScalingRow(
        model,
        steps,
        eta,
        k,
        figures[0]["iterations"],
        figures[0]["ms_per_iter"],
        mean("network_ms"),
        mean("communication_ms"),
        mean("solver_ms"),
        mean("broadcast_ms"),
        base["ms_per_iter"] / figures[0]["ms_per_iter"],
        float((figures[0]["x0"] - base["x0"]).abs().max()),
    )


def table(rows: list[ScalingRow]) -> str:
    head = (
        "| model | T | η | ranks | iterations | ms/iter | network ms | communication ms | solver ms | "
        "broadcast ms (alternative) | speedup | x_0 difference |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.steps} | {r.eta:g} | {r.ranks} | {r.iterations} | {r.ms_per_iter:.1f} | "
            f"{r.network_ms:.1f} | {r.communication_ms:.1f} | {r.solver_ms:.1f} | {r.broadcast_ms:.2f} | "
            f"{r.speedup:.2f}× | {r.x0_difference:.1e} |"
        )
    return "\n".join(lines)
