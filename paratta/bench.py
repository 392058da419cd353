"""``python -m paratta bench``: parallel iterations and wall-clock of every solver against sequential DDIM.

For each T and η, each solver runs at each candidate order and the order with the fewest
iterations is reported ("best order"). Iteration counts are the hardware-free figure; wall-clock
depends on how much of the machine one sequential step leaves idle, and is reported with the
machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict, dataclass

import torch

from .config import SolverConfig
from .problem import Request, make_problem
from .registry import load_model
from .sequential import sample_sequential
from .solver import run

PROMPTS = {"shapes": "circle", "toy2d": "", "shapes-unet": "red circle"}


@dataclass(frozen=True)
class Row:
    model: str
    steps: int
    eta: float
    solver: str
    order: int
    iterations: float  # mean over seeds
    speedup_steps: float  # T / iterations
    evaluations: float  # mean guided network evaluations (sequential: T)
    parallel_seconds: float  # mean wall-clock of the parallel run
    sequential_seconds: float  # mean wall-clock of the sequential run
    solver_ms_per_iter: float  # everything but the network, per iteration
    distance_to_sequential: float  # max over seeds of RMS(x_0 − x_0^seq), latent units
    converged: bool  # every seed converged


def machine() -> str:
    """A one-line description of where the figures were measured."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    line = (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()}, {torch.get_num_threads()} torch thread(s), "
        f"torch {torch.__version__}"
    )
    if torch.cuda.is_available():
        line += f", {torch.cuda.get_device_name()}"
    return line


def measure(
    model_name: str,
    steps: int,
    eta: float,
    solver: str,
    orders: list[int],
    seeds: list[int],
    guidance: float,
    tol: float = 1e-3,
    device: str | None = None,
) -> Row:
    """Best-order row for one (T, η, solver), averaged over ``seeds``."""
    model = load_model(model_name, device=device)
    prompt = PROMPTS.get(model_name, "")
    best: Row | None = None
    problems = [make_problem(model, Request(prompt, "", s, steps, eta, guidance)) for s in seeds]
    refs, seq_seconds = [], []
    for p in problems:
        t0 = time.perf_counter()
        refs.append(sample_sequential(p, device=device))
        seq_seconds.append(time.perf_counter() - t0)
    for order in orders:
        iters, evals, secs, solver_ms, dist, ok = [], [], [], [], [], True
        for p, ref in zip(problems, refs, strict=True):
            t0 = time.perf_counter()
            last = run(p, SolverConfig(solver=solver, order=order, tol=tol), device=device)
            secs.append(time.perf_counter() - t0)
            iters.append(last.iteration)
            evals.append(last.evaluations)
            solver_ms.append(1e3 * last.solver_seconds / last.iteration)
            dist.append(float((last.x0 - ref[0]).pow(2).mean().sqrt()))
            ok &= last.converged
        n = len(seeds)
        row = Row(
            model_name,
            steps,
            eta,
            solver,
            order,
            sum(iters) / n,
            steps * n / sum(iters),
            sum(evals) / n,
            sum(secs) / n,
            sum(seq_seconds) / n,
            sum(solver_ms) / n,
            max(dist),
            ok,
        )
        if best is None or row.iterations < best.iterations:
            best = row
    assert best is not None
    return best


def table(rows: list[Row]) -> str:
    head = (
        "| model | T | η | solver | order | iterations | T/iter | evaluations | parallel s | "
        "sequential s | solver ms/iter | distance to seq. |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.steps} | {r.eta:g} | {r.solver} | {r.order} | {r.iterations:.1f} | "
            f"{r.speedup_steps:.1f}× | {r.evaluations:.0f} | {r.parallel_seconds:.3f} | "
            f"{r.sequential_seconds:.3f} | {r.solver_ms_per_iter:.2f} | {r.distance_to_sequential:.1e}"
            + ("" if r.converged else " (not converged)")
            + " |"
        )
    return "\n".join(lines)


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="shapes")
    p.add_argument("--quick", action="store_true", help="fewer seeds and orders (under 2 min on 2 CPU cores)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per row (default 3, quick 1)")
    p.add_argument("--steps", type=int, nargs="+", default=[25, 50, 100])
    p.add_argument("--eta", type=float, nargs="+", default=[0.0, 1.0])
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--device", default=None)
    p.add_argument("--json", action="store_true", help="print rows as JSON instead of a table")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument(
        "--report",
        nargs="?",
        const="docs/BENCHMARKS.md",
        default=None,
        help="write the full report (sweeps and plots for every embedded model) to this path",
    )
    p.add_argument(
        "--models", nargs="+", default=None, help="models for --report (default: the embedded ones)"
    )


def bench_command(args: argparse.Namespace) -> list[Row]:
    from . import distributed

    if distributed.launched():  # under torchrun: one run split over 1, 2 … N ranks
        from .scaling import scaling_command

        return scaling_command(args)  # type: ignore[return-value]
    if args.threads:
        torch.set_num_threads(args.threads)
    n_seeds = args.seeds or (1 if args.quick else 3)
    if args.report:
        from pathlib import Path

        from .registry import BUILTIN_MODELS
        from .report import report

        models = args.models or [m for m in ("shapes", "shapes-unet") if m in BUILTIN_MODELS]
        report(models, Path(args.report), args.guidance, args.seeds or 2, quick=args.quick)
        print(f"wrote {args.report}")
        return []
    rows = []
    for steps in args.steps:
        for eta in args.eta:
            for solver in ("jacobi", "anderson", "anderson-global"):
                orders = sorted(
                    {min(20, steps), steps} if args.quick else {min(5, steps), min(20, steps), steps}
                )
                rows.append(
                    measure(
                        args.model,
                        steps,
                        eta,
                        solver,
                        orders,
                        list(range(n_seeds)),
                        args.guidance,
                        args.tol,
                        args.device,
                    )
                )
    if args.json:
        print(json.dumps({"machine": machine(), "rows": [asdict(r) for r in rows]}))
    else:
        print(
            f"machine: {machine()}; tol {args.tol:g}; {n_seeds} seed(s) per row; guidance {args.guidance:g}"
        )
        print(table(rows))
    return rows
