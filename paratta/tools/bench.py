"""``python -m paratta bench``: parallel iterations against sequential DDIM, with both stopping rules.

Every row runs one solver configuration over seeds and reports, beside the iterations, the
*oracle*: the first iteration from which the decoded x_0 stays within one 8-bit level of the
sequential image (what an observer with the sequential image would call "done"), how many
iterations the stopping rule spent after it (stop − oracle), and the largest 8-bit difference of the
final image. Iteration counts are the hardware-free figure; wall-clock is the library's own
(model + solver, decoding excluded) on the machine named with the table. ``report`` uses the same
loop (``measure``), table writer (``table``), ``machine`` and distance helpers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

from torch import Tensor

from paratta.config import FAMILIES, TOLERANCE, SolverConfig, specs
from paratta.metrics import distance, to_8bit
from paratta.planning.plan import Plan, plan
from paratta.planning.window import WindowChoice
from paratta.problem import Problem, Request, make_problem
from paratta.registry import load_model, model_defaults
from paratta.sequential import sample_sequential
from paratta.solver import run, solve
from paratta.tools.args import check_device, value_parser
from paratta.tools.machine import machine

STEPS = (25, 50, 100)  # the T of the benchmark plan
ETAS = (0.0, 1.0)  # DDIM and DDPM-like


def tol_text(tol: float | None) -> str:
    """The tolerance a table was measured at; None is each rule's own (``config.TOLERANCE``)."""
    if tol is not None:
        return f"tol {tol:g}"
    return "tol auto (" + ", ".join(f"{rule} {value:g}" for rule, value in TOLERANCE.items()) + ")"


@dataclass(frozen=True)
class Trial:
    """One seed of one configuration."""

    iterations: int
    oracle: int | None  # first iteration from which x_0 stays within one 8-bit level; None: it never does
    pixels: int  # largest 8-bit difference of the final image to the sequential one
    distance: float  # RMS(x_0 − x_0^seq), latent units
    evaluations: int
    seconds: float  # library time of the parallel run (network + solver)
    solver_seconds: float
    sequential_seconds: float
    converged: bool


@dataclass(frozen=True)
class Row:
    """One configuration over seeds. Medians for iteration counts, worst case for the image."""

    model: str
    steps: int
    eta: float
    solver: str
    stopping: str
    setting: str  # what else differs from the defaults, e.g. "order 100" ("" = defaults)
    seeds: int
    iterations: float  # median stop
    oracle: float | None  # median oracle over the seeds that end within one level
    over_oracle: float | None  # median of stop − oracle
    off: int  # seeds ending more than one 8-bit level from sequential
    pixels: int  # max over seeds of the largest 8-bit difference
    distance_to_sequential: float  # max over seeds, RMS latent units
    speedup_steps: float  # T / median stop
    evaluations: float  # mean guided network evaluations (sequential: T)
    parallel_seconds: float  # mean
    sequential_seconds: float  # mean
    solver_ms_per_iter: float  # everything but the network, per iteration
    converged: bool  # every seed converged


def oracle_iteration(levels: list[int]) -> int | None:
    """The first iteration (1-based) from which every 8-bit difference is ≤ 1; None if the last is not."""
    if not levels or levels[-1] > 1:
        return None
    n = len(levels)
    while n > 1 and levels[n - 2] <= 1:
        n -= 1
    return n


def run_once(problem: Problem, planned: Plan, reference: Tensor, warm: Tensor | None = None) -> Trial:
    """Solve ``problem`` once (from ``warm`` for ``init="trajectory"``), decoding x_0 after every
    iteration to find the oracle."""
    model = problem.model
    target = to_8bit(model, reference[0])
    levels, last = [], None
    for last in solve(problem, planned, warm):
        levels.append(int((to_8bit(model, last.x0) - target).abs().max()))
    assert last is not None
    return Trial(
        iterations=last.iteration,
        oracle=oracle_iteration(levels),
        pixels=levels[-1],
        distance=distance(last.x0.cpu(), reference[0].cpu()),
        evaluations=last.evaluations,
        seconds=last.seconds,
        solver_seconds=last.solver_seconds,
        sequential_seconds=0.0,
        converged=last.converged,
    )


def problems(
    model_name: str,
    steps: int,
    eta: float,
    seeds: list[int],
    guidance: float | None,
    device: str | None,
    prompt: str | None = None,
    family: str = "auto",
    sampler: str = "auto",
) -> tuple[list[Problem], list[Tensor], list[float]]:
    """The model's default prompt (or ``prompt``) and guidance (or ``guidance``) at each seed, sampled
    by ``family`` and ``sampler``, with its sequential trajectory and that trajectory's wall-clock."""
    model = load_model(model_name, device=device)
    defaults = model_defaults(model_name, model)
    g = defaults.guidance if guidance is None else guidance
    out, refs, secs = [], [], []
    for seed in seeds:
        text = defaults.prompt if prompt is None else prompt
        p = make_problem(model, Request(text, "", seed, steps, eta, g, family, sampler=sampler))
        t0 = time.perf_counter()
        refs.append(sample_sequential(p, device=device))
        secs.append(time.perf_counter() - t0)
        out.append(p)
    return out, refs, secs


def measure(
    model_name: str,
    steps: int,
    eta: float,
    configs: list[tuple[str, SolverConfig]],
    seeds: list[int],
    guidance: float | None = None,
    device: str | None = None,
    on_row: Callable[[Row], None] | None = None,
    warm_prompt: str | None = None,
    family: str = "auto",
    sampler: str = "auto",
) -> list[Row]:
    """One ``Row`` per (setting label, config), all on the same problems; ``on_row`` sees each row as
    it ends. ``init="trajectory"`` configs start from a default run with ``warm_prompt`` (same seed).
    A ``family`` or ``sampler`` other than auto is named in the rows' model column, e.g. "shapes (flow)"."""
    probs, refs, seq_secs = problems(
        model_name, steps, eta, seeds, guidance, device, family=family, sampler=sampler
    )
    warms: list[Tensor | None] = [None] * len(probs)
    if any(c.init == "trajectory" for _, c in configs):
        others, _, _ = problems(
            model_name, steps, eta, seeds, guidance, device, warm_prompt or "", family, sampler
        )
        warms = [run(o, plan(o, SolverConfig(), device)).trajectory for o in others]
    rows = []
    for setting, config in configs:
        planned = plan(probs[0], config, device)  # one plan for every seed: same T, η, model, device
        runs = [
            replace(
                run_once(p, planned, ref, w if config.init == "trajectory" else None),
                sequential_seconds=s,
            )
            for p, ref, s, w in zip(probs, refs, seq_secs, warms, strict=True)
        ]
        chosen = [c for c in (family, sampler) if c != "auto"]
        label = f"{model_name} ({', '.join(chosen)})" if chosen else model_name
        row = summarise(label, steps, eta, config, setting, runs)
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def summarise(
    model: str, steps: int, eta: float, config: SolverConfig, setting: str, runs: list[Trial]
) -> Row:
    n = len(runs)
    exact = [r for r in runs if r.oracle is not None]
    stop = statistics.median(r.iterations for r in runs)
    return Row(
        model=model,
        steps=steps,
        eta=eta,
        solver=config.solver,
        stopping=config.stopping,
        setting=setting,
        seeds=n,
        iterations=stop,
        oracle=statistics.median(r.oracle for r in exact) if exact else None,
        over_oracle=statistics.median(r.iterations - r.oracle for r in exact) if exact else None,
        off=n - len(exact),
        pixels=max(r.pixels for r in runs),
        distance_to_sequential=max(r.distance for r in runs),
        speedup_steps=steps / stop,
        evaluations=sum(r.evaluations for r in runs) / n,
        parallel_seconds=sum(r.seconds for r in runs) / n,
        sequential_seconds=sum(r.sequential_seconds for r in runs) / n,
        solver_ms_per_iter=1e3 * sum(r.solver_seconds / r.iterations for r in runs) / n,
        converged=all(r.converged for r in runs),
    )


HEAD = (
    "| model | T | η | solver | stopping | setting | seeds | stop (median) | oracle (median) | stop − oracle "
    "| off > 1 level | max 8-bit diff | max distance | T/stop | evaluations | parallel s | sequential s |"
)


def table_header() -> str:
    return HEAD + "\n|" + "---|" * HEAD.count(" | ") + "---|"


def table_line(r: Row) -> str:
    def num(v: float | None) -> str:
        return "—" if v is None else f"{v:g}"

    return (
        f"| {r.model} | {r.steps} | {r.eta:g} | {r.solver} | {r.stopping} | {r.setting or 'defaults'} | "
        f"{r.seeds} | {r.iterations:g}{'' if r.converged else ' (not converged)'} | {num(r.oracle)} | "
        f"{num(r.over_oracle)} | {r.off}/{r.seeds} | {r.pixels} | {r.distance_to_sequential:.1e} | "
        f"{r.speedup_steps:.1f}× | {r.evaluations:.0f} | {r.parallel_seconds:.2f} | "
        f"{r.sequential_seconds:.2f} |"
    )


def table(rows: list[Row]) -> str:
    """The one table writer: a Markdown table of rows (bench and report)."""
    return "\n".join([table_header(), *(table_line(r) for r in rows)])


def solver_rows(tol: float | None) -> list[tuple[str, SolverConfig]]:
    """The solvers side by side at their defaults, and Anderson with the published stopping rule."""
    return [
        ("", SolverConfig(solver="jacobi", tol=tol)),
        ("", SolverConfig(solver="anderson", tol=tol)),
        ("", SolverConfig(solver="anderson", stopping="per-step", tol=tol)),
        ("", SolverConfig(solver="anderson-global", tol=tol)),
    ]


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="shapes")
    p.add_argument("--quick", action="store_true", help="one seed per row (under 2 min on 2 CPU cores)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per row (default 3, quick 1; report: 10/4)")
    p.add_argument("--steps", type=int, nargs="+", default=None, help=f"T values (default {STEPS})")
    p.add_argument("--eta", type=float, nargs="+", default=None, help=f"η values (default {ETAS}; flow: 0)")
    p.add_argument(
        "--family", choices=FAMILIES, default="auto", help="sampler family (default: the model's own)"
    )
    sampler = specs(Request)["sampler"]
    p.add_argument("--sampler", choices=sampler.choices, default=sampler.default, help=sampler.hint)
    p.add_argument("--guidance", type=float, default=None, help="default: the model's own")
    p.add_argument("--tol", type=float, default=None, help="stopping tolerance (default: each rule's auto)")
    window = specs(SolverConfig)["window"]
    p.add_argument("--window", type=value_parser(window), default=None, help=f"every row's W: {window.hint}")
    split = specs(SolverConfig)["split"]
    p.add_argument(
        "--split", choices=split.choices, default=split.default, help=f"every row's split: {split.hint}"
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: the model's)")
    p.add_argument("--json", action="store_true", help="print rows as JSON instead of a table")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument(
        "--report",
        nargs="?",
        const="docs/BENCHMARKS.md",
        default=None,
        help="write the full report (every embedded model, both stopping rules, sweeps, plots) to this path, "
        "replaced when done; long: tens of minutes on a 2-core CPU (the report's header says how long)",
    )
    p.add_argument(
        "--models", nargs="+", default=None, help="models for --report (default: shapes and shapes-unet)"
    )


def check_arguments(args: argparse.Namespace) -> None:
    """``ValueError`` naming the flag for values outside the declared ranges, before any model loads."""
    for steps in args.steps or ():
        specs(Request)["steps"].check(steps)
    for eta in args.eta or ():
        specs(Request)["eta"].check(eta)
    if args.guidance is not None:
        specs(Request)["guidance"].check(args.guidance)
    if args.tol is not None:
        specs(SolverConfig)["tol"].check(args.tol)
    if args.report and args.json:
        raise ValueError("--json does not apply to --report (the report is Markdown)")
    if args.report and args.family != "auto":
        raise ValueError("--family applies to the table, not to --report (benchmarks/flow_vs_ddim.py)")
    if args.family == "flow" and any(eta != 0 for eta in args.eta or ()):
        raise ValueError("--eta must be 0 with --family flow (flow-matching Euler is deterministic)")
    if args.report and args.split != specs(SolverConfig)["split"].default:
        raise ValueError("--split applies to the table, not to --report (the report has both)")
    if args.report and args.sampler != "auto":
        raise ValueError("--sampler applies to the table, not to --report (benchmarks/samplers.py)")
    if deterministic(args) and any(eta != 0 for eta in args.eta or ()):
        raise ValueError(f"--eta must be 0 with --sampler {args.sampler} (a deterministic sampler)")
    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1; got {args.seeds}")
    check_device(args.device)


def deterministic(args: argparse.Namespace) -> bool:
    """Whether the chosen sampler takes only η = 0 (flow Euler, Euler, DPM-Solver++)."""
    return args.family == "flow" or getattr(args, "sampler", "auto") not in ("auto", "ddim")


def bench_command(args: argparse.Namespace) -> list[Row]:
    """Print a table (or JSON) of every solver and both stopping rules, rows printed as they finish."""
    tol = args.tol  # None: each rule at its own auto tolerance
    n_seeds = args.seeds or (1 if args.quick else 3)
    guidance = model_defaults(args.model).guidance if args.guidance is None else args.guidance
    if not args.json:
        print(f"machine: {machine()}; {tol_text(tol)}; {n_seeds} seed(s) per row; guidance {guidance:g}")
        print(table_header(), flush=True)
    rows, windows = [], []
    given = " ".join(
        [f"window {args.window}"] * (args.window is not None)
        + [f"split {args.split}"] * (args.split != specs(SolverConfig)["split"].default)
    )
    window = args.window if args.window is not None else specs(SolverConfig)["window"].default
    configs = [
        (setting or given, replace(c, window=window, split=args.split)) for setting, c in solver_rows(tol)
    ]
    etas = args.eta or ((0.0,) if deterministic(args) else ETAS)  # only DDIM takes η > 0
    for steps in args.steps or STEPS:
        for eta in etas:
            chosen = window_choice(
                args.model, Request(steps=steps, eta=eta, guidance=guidance), configs[1][1], args
            )
            if chosen is not None:
                windows.append({"steps": steps, "eta": eta, **chosen.summary(), "note": chosen.line()})
                if not args.json:
                    print(f"| T = {steps}, η = {eta:g}: {chosen.line()} |", flush=True)
            rows += measure(
                args.model,
                steps,
                eta,
                configs,
                list(range(n_seeds)),
                guidance,
                args.device,
                on_row=None if args.json else lambda r: print(table_line(r), flush=True),
                family=args.family,
                sampler=args.sampler,
            )
    if args.json:
        summary = {"machine": machine(), "tol": tol, "rows": [asdict(r) for r in rows], "windows": windows}
        print(json.dumps(summary))
    return rows


def window_choice(
    model_name: str, request: Request, config: SolverConfig, args: argparse.Namespace
) -> WindowChoice | None:
    """The choice an auto window makes for this T and η (seed 0; every seed has the same curve), if any."""
    model = load_model(model_name, device=args.device)
    request = replace(
        request, prompt=model_defaults(model_name, model).prompt, family=args.family, sampler=args.sampler
    )
    return plan(make_problem(model, request), config, args.device).projection
