"""Parallel iterations to the sequential image: DDIM against flow matching on the same embedded mixture.

The embedded mixtures have an exact ε and an exact velocity (``paratta.models.mixture``), so the two
sampler families draw from the same distribution with no network error: DDIM(η = 0) on the mixture's
linear-β schedule, and flow-matching Euler on the rectified-flow path, evenly spaced σ (shift 1) and
SD3's static shift 3. A fourth column runs flow matching on DDIM's own grid: the σ of each DDIM
timestep, σ = √(1 − ᾱ) / (√ᾱ + √(1 − ᾱ)) (the same noise-to-signal ratio). DDIM and the flow Euler
step are the same map in different coordinates (both move along the line through x̂_0 and ε̂; the
states differ by a factor √ᾱ + √(1 − ᾱ) per step), so that column separates what the grid does from
what the affine split x_i = a_i x_{i+1} + d_i does (DDIM: a_i = √(ᾱ_i⁻/ᾱ_i) > 1; flow: a_i = 1), which
the order-k system unrolls (``--orders`` adds Jacobi rows at other orders k).

Each row solves the same prompts and seeds with each family and reports the median *stop* (the
budget rule's own end) and *oracle* (the first iteration from which the decoded x_0 stays within one
8-bit level of that family's own sequential image), as ``paratta bench`` does.

    python benchmarks/flow_vs_ddim.py                       # shapes and toy2d, T = 25, 50, 100, 3 seeds
    python benchmarks/flow_vs_ddim.py --models toy2d --seeds 2 --steps 25
    python benchmarks/flow_vs_ddim.py --models toy2d --steps 50 --orders 1 2 5
    python benchmarks/flow_vs_ddim.py --full                # also every row of every family in full
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from paratta import Request, SolverConfig, load_model, make_problem, model_defaults, plan, sample_sequential  # noqa: E402
from paratta.samplers.ddim import DDIMConfig, timesteps  # noqa: E402
from paratta.samplers.grids import alphas_cumprod  # noqa: E402
from paratta.tools.bench import Row, run_once, summarise, table, tol_text  # noqa: E402
from paratta.tools.machine import machine  # noqa: E402

FAMILIES = ("DDIM", "flow", "flow, shift 3", "flow on DDIM's grid")  # the columns, in order


def ddim_grid_sigmas(model: Any, steps: int) -> np.ndarray:
    """The flow σ of each timestep of the model's DDIM grid, noisiest first: equal √(1−ᾱ)/√ᾱ = σ/(1−σ)."""
    config = DDIMConfig.from_dict(model.with_family("ddim").scheduler_config)
    ab = alphas_cumprod(config)[torch.from_numpy(timesteps(config, steps))]
    return (1 - ab).sqrt().div(ab.sqrt() + (1 - ab).sqrt()).numpy()


def sampled_by(model: Any, column: str) -> Any:
    """The mixture as one column's sampler sees it: DDIM, or flow matching on one of three grids."""
    if column == "DDIM":
        return model.with_family("ddim")
    view = model.with_family("flow")
    if column == "flow":
        return view
    other = copy.copy(view)  # the same velocity field on another grid
    if column == "flow, shift 3":  # SD3's
        other.scheduler_config = {**view.scheduler_config, "shift": 3.0}
    else:  # custom sigmas pass a shift of 1 unchanged
        other.schedule_arguments = lambda steps: {"sigmas": ddim_grid_sigmas(model, steps)}
    return other


def configs(steps: int, windows: list[int], orders: list[int]) -> list[tuple[str, SolverConfig]]:
    """Jacobi and Anderson at the full window and at each smaller one (budget rule, auto tolerance and
    order), then Jacobi at the full window and each order in ``orders``."""
    out = []
    for w in [steps, *(w for w in windows if w < steps)]:
        label = "" if w == steps else f"window {w}"
        out += [
            (label, SolverConfig(solver="jacobi", window=w)),
            (label, SolverConfig(solver="anderson", window=w)),
        ]
    return out + [(f"order {k}", SolverConfig(solver="jacobi", order=k)) for k in orders if k <= steps]


def measure(
    name: str, steps: int, column: str, seeds: int, windows: list[int], orders: list[int]
) -> list[Row]:
    model = sampled_by(load_model(name), column)
    defaults = model_defaults(name)
    problems = [
        make_problem(model, Request(defaults.prompt, "", s, steps, 0.0, defaults.guidance))
        for s in range(seeds)
    ]
    references = [sample_sequential(p) for p in problems]
    rows = []
    for setting, config in configs(steps, windows, orders):
        planned = plan(problems[0], config)  # one plan for every seed
        runs = [run_once(p, planned, ref) for p, ref in zip(problems, references, strict=True)]
        rows.append(summarise(f"{name} ({column})", steps, 0.0, config, setting, runs))
    return rows


def comparison(rows: dict[tuple[str, int, str], list[Row]], models: list[str], steps: list[int]) -> str:
    """One line per (model, T, solver, window or order): stop / oracle of each family side by side."""
    head = "| model | T | solver | setting | " + " | ".join(f"{c}: stop / oracle" for c in FAMILIES) + " |"
    lines = [head, "|" + "---|" * (4 + len(FAMILIES))]
    for name in models:
        for T in steps:
            by_column = [rows[(name, T, c)] for c in FAMILIES]
            for k, first in enumerate(by_column[0]):
                cells = []
                for column_rows in by_column:
                    r = column_rows[k]
                    oracle = "—" if r.oracle is None else f"{r.oracle:g}"
                    off = "" if r.off == 0 else f" ({r.off} off)"
                    cells.append(f"{r.iterations:g} / {oracle}{off}")
                setting = first.setting or f"W = T, k = {min(20, T)}"
                lines.append(f"| {name} | {T} | {first.solver} | {setting} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["shapes", "toy2d"])
    p.add_argument("--steps", type=int, nargs="+", default=[25, 50, 100])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--windows", type=int, nargs="*", default=[10], help="windows below T (besides W = T)")
    p.add_argument("--orders", type=int, nargs="*", default=[], help="Jacobi rows at these orders k (W = T)")
    p.add_argument("--full", action="store_true", help="also print every row in full (bench's table)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    rows = {
        (name, T, column): measure(name, T, column, args.seeds, args.windows, args.orders)
        for name in args.models
        for T in args.steps
        for column in FAMILIES
    }
    print(
        f"machine: {machine()}; {tol_text(None)}; budget rule; {args.seeds} seed(s) per cell; η = 0; "
        "each model's default prompt and guidance\n"
    )
    print(comparison(rows, args.models, args.steps))
    if args.full:
        print("\n" + table([r for group in rows.values() for r in group]))
    print(f"\n({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
