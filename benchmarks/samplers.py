"""Does a higher-order sampler at fewer steps keep a parallel gain? Parallel iterations per sampler.

For each sampler of the registry (``paratta.samplers.SAMPLERS``, the ``sampler`` setting) at each T on the
embedded models, the same prompt and seeds solved by Jacobi and Anderson (budget rule, auto tolerance,
the window every network row: W = T, or T + 1 for PLMS, 2T − 1 for Heun): the median *stop* (the rule's
own end), the median *oracle* (the first iteration from which the decoded x_0 stays within one 8-bit
level of that sampler's own sequential image), the seeds that end more than one level off (8-bit
exactness), the network calls paid in all (mean), and the wall-clock of the parallel run and of the
sequential calls *projected* from the shipped batch-latency table (``paratta/data/latency.json``,
measured on an H200; only models it holds: shapes-unet), never measured here.

    python benchmarks/samplers.py                          # shapes and shapes-unet, T = 10 20 25 50
    python benchmarks/samplers.py --models shapes --seeds 3 --steps 20 50
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from paratta import (  # noqa: E402
    Request,
    SolverConfig,
    load_model,
    make_problem,
    model_defaults,
    sample_sequential,
    solve,
)
from paratta.metrics import to_8bit  # noqa: E402
from paratta.planning.latency import TABLE_NAME, project, table_for  # noqa: E402
from paratta.samplers import SAMPLERS as REGISTRY  # noqa: E402
from paratta.tools.bench import oracle_iteration  # noqa: E402
from paratta.tools.machine import machine  # noqa: E402

SAMPLERS = tuple(REGISTRY)
SOLVERS = ("jacobi", "anderson")
HEAD = (
    "| model | sampler | T | sequential calls | solver | stop (median) | oracle (median) | off > 1 level "
    "| network calls (mean) "
    "| projected parallel ms | projected sequential ms |"
)


def row(model_name: str, model, sampler: str, steps: int, solver: str, seeds: list[int]) -> str:
    """One table line: this sampler, T and solver over ``seeds`` (the model's default prompt and guidance)."""
    defaults = model_defaults(model_name, model)
    table = table_for(model_name)
    stops, oracles, off, calls, parallel, sequential = [], [], 0, [], [], []
    for seed in seeds:
        request = Request(defaults.prompt, "", seed, steps, 0.0, defaults.guidance, sampler=sampler)
        problem = make_problem(model, request)
        target = to_8bit(model, sample_sequential(problem)[0])
        levels, windows, last = [], [], None
        for last in solve(problem, SolverConfig(solver=solver)):  # W = every network call's row
            levels.append(int((to_8bit(model, last.x0) - target).abs().max()))
            windows.append(last.window[1] - last.window[0])
        oracle = oracle_iteration(levels)
        stops.append(last.iteration)
        off += levels[-1] > 1
        calls.append(last.evaluations)
        if oracle is not None:
            oracles.append(oracle)
        if table is not None:
            p = project(table, windows, problem.steps, defaults.guidance)  # the rows sequential evaluates
            parallel.append(1e3 * p.parallel_s)
            sequential.append(1e3 * p.sequential_s)
    oracle = f"{statistics.median(oracles):g}" if oracles else "—"
    par = f"{statistics.mean(parallel):.0f}" if parallel else "—"
    seq = f"{statistics.mean(sequential):.0f}" if sequential else "—"
    stop = statistics.median(stops)
    return (
        f"| {model_name} | {problem.sampler} | {steps} | {problem.steps} | {solver} | {stop:g} | {oracle} | "
        f"{off}/{len(seeds)} | {statistics.mean(calls):.0f} | {par} | {seq} |"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["shapes", "shapes-unet"])
    p.add_argument("--steps", type=int, nargs="+", default=[10, 20, 25, 50])
    p.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    p.add_argument("--seeds", type=int, default=2, help="seeds per row (default 2)")
    args = p.parse_args()
    print(f"machine: {machine()}; {args.seeds} seed(s) per row; budget rule, auto tolerance, W = all rows")
    print(
        f"projections: {TABLE_NAME} ({table_for('shapes-unet').device if table_for('shapes-unet') else '—'})"
    )
    print(HEAD + "\n|" + "---|" * HEAD.count(" | ") + "---|", flush=True)
    for model_name in args.models:
        model = load_model(model_name)
        for steps in args.steps:
            for sampler in args.samplers:
                for solver in SOLVERS:
                    print(row(model_name, model, sampler, steps, solver, list(range(args.seeds))), flush=True)


if __name__ == "__main__":
    main()
