"""``python -m paratta bench --report``: docs/BENCHMARKS.md with sweeps and plots for each embedded model.

Every row is measured here, on the machine named at the top of the report; every row carries its
distance to the sequential x_0 (RMS, latent units) and the 8-bit pixel difference of the images.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .bench import PROMPTS, Row, machine, measure, table
from .config import SolverConfig
from .problem import Request, make_problem
from .registry import load_model
from .sequential import sample_sequential
from .solver import run, solve


@dataclass(frozen=True)
class Sweep:
    label: str  # the setting that varies, e.g. "order 20"
    iterations: float
    evaluations: float
    seconds: float
    distance: float  # max over seeds, RMS latent units
    pixels: int  # max over seeds of the largest 8-bit pixel difference
    converged: bool


def _pixels(model, a: torch.Tensor, b: torch.Tensor) -> int:
    pa = (model.decode(a[None].to(model.dtype))[0] * 255).round()
    pb = (model.decode(b[None].to(model.dtype))[0] * 255).round()
    return int((pa - pb).abs().max())


def sweep(
    model_name: str,
    label: str,
    configs: list[SolverConfig],
    seeds: list[int],
    steps: int,
    guidance: float,
    warm_prompt: str | None = None,
) -> list[Sweep]:
    """One row per config; ``warm_prompt`` runs the init trajectory with another prompt first."""
    model = load_model(model_name)
    prompt = PROMPTS.get(model_name, "")
    rows = []
    problems = [make_problem(model, Request(prompt, "", s, steps, 0.0, guidance)) for s in seeds]
    refs = [sample_sequential(p) for p in problems]
    for config in configs:
        its, evals, secs, dist, pix, ok = [], [], [], [], [], True
        for seed, p, ref in zip(seeds, problems, refs, strict=True):
            warm = None
            if config.init == "trajectory":
                other = make_problem(model, Request(warm_prompt or "", "", seed, steps, 0.0, guidance))
                warm = run(other, SolverConfig()).trajectory
            t0 = time.perf_counter()
            last = run(p, config, warm)
            secs.append(time.perf_counter() - t0)
            its.append(last.iteration)
            evals.append(last.evaluations)
            dist.append(float((last.x0 - ref[0]).pow(2).mean().sqrt()))
            pix.append(_pixels(model, last.x0, ref[0]))
            ok &= last.converged
        value = getattr(config, label) if label != "init" else config.init
        n = len(seeds)
        rows.append(
            Sweep(
                f"{config.solver}, {label} {value}",
                sum(its) / n,
                sum(evals) / n,
                sum(secs) / n,
                max(dist),
                max(pix),
                ok,
            )
        )
    return rows


def sweep_table(rows: list[Sweep]) -> str:
    lines = [
        "| setting | iterations | evaluations | seconds | distance to seq. | max 8-bit pixel diff |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.label} | {r.iterations:.1f} | {r.evaluations:.0f} | {r.seconds:.2f} | "
            f"{r.distance:.1e} | {r.pixels}" + ("" if r.converged else " (not converged)") + " |"
        )
    return "\n".join(lines)


def plot_iterations(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, eta in zip(axes, (0.0, 1.0), strict=True):
        for solver, marker in (("jacobi", "o"), ("anderson", "s"), ("anderson-global", "^")):
            pts = sorted((r.steps, r.iterations) for r in rows if r.eta == eta and r.solver == solver)
            if pts:
                ax.plot(*zip(*pts, strict=True), marker=marker, label=solver)
        steps = sorted({r.steps for r in rows})
        ax.plot(steps, steps, "k:", label="sequential (T)")
        ax.set(title=f"η = {eta:g}", xlabel="T (steps)", ylabel="parallel iterations")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_convergence(model_name: str, steps: int, guidance: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = load_model(model_name)
    problem = make_problem(model, Request(PROMPTS.get(model_name, ""), "", 0, steps, 0.0, guidance))
    ref = sample_sequential(problem)
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for solver in ("jacobi", "anderson", "anderson-global"):
        dist = [
            float((r.x0 - ref[0]).pow(2).mean().sqrt()) for r in solve(problem, SolverConfig(solver=solver))
        ]
        ax.semilogy(np.arange(1, len(dist) + 1), np.maximum(dist, 1e-12), marker=".", label=solver)
    ax.axhline(1e-3, color="k", ls=":", lw=1, label="tol")
    ax.set(
        xlabel="parallel iteration",
        ylabel="RMS distance of x_0 to sequential",
        title=f"{model_name}, DDIM T = {steps}",
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


EXACT_MODELS = ("shapes", "toy2d")  # cheap exact scores; networks get the lighter plan on a CPU


def model_section(name: str, out: Path, guidance: float, seeds: int, quick: bool) -> list[str]:
    """Tables and plots for one model. Networks on a CPU: T = 50, one seed, no order-1 rows."""
    light = quick or name not in EXACT_MODELS
    T = 50 if light else 100
    seed_list = list(range(1 if name not in EXACT_MODELS else seeds))
    bench_rows = [
        measure(name, steps, eta, solver, sorted({min(20, steps), steps}), seed_list, guidance)
        for steps in ((25, 50) if light else (25, 50, 100))
        for eta in (0.0, 1.0)
        for solver in ("jacobi", "anderson", "anderson-global")
    ]
    plot_iterations(bench_rows, out.parent / f"bench_{name}_iterations.png")
    plot_convergence(name, T, guidance, out.parent / f"bench_{name}_convergence.png")
    orders = (5, 20, T) if light else (1, 5, 20, T)

    def run_sweep(label: str, configs: list[SolverConfig], warm: str | None = None) -> list[Sweep]:
        return sweep(name, label, configs, seed_list, T, guidance, warm_prompt=warm)

    sweeps = {
        "Order": run_sweep("order", [SolverConfig(order=k) for k in orders])
        + run_sweep("order", [SolverConfig(solver="jacobi", order=k) for k in orders[-1:] if k > 1]),
        "Window": run_sweep("window", [SolverConfig(window=w) for w in (T // 10, T // 4, T // 2, T)]),
        "History": run_sweep("history", [SolverConfig(history=m) for m in (1, 2, 3, 4, 5)]),
        "Initialisation": run_sweep(
            "init",
            [SolverConfig(), SolverConfig(init="coarse"), SolverConfig(init="trajectory")],
            warm=_warm_prompt(name),
        ),
    }
    parts = [
        "",
        f"## `{name}`",
        "",
        f"Prompt {PROMPTS.get(name, '')!r}, guidance {guidance:g}; sweeps at DDIM T = {T}, "
        f"{len(seed_list)} seed(s) per row.",
        "",
        "### Iterations vs T (best order per solver, DDIM η = 0 and DDPM-like η = 1)",
        "",
        table(bench_rows),
        "",
        f"![iterations vs T](bench_{name}_iterations.png) ![convergence](bench_{name}_convergence.png)",
    ]
    for title, rows in sweeps.items():
        note = f" — warm start from prompt {_warm_prompt(name)!r}" if title == "Initialisation" else ""
        parts += ["", f"### {title} sweep{note}", "", sweep_table(rows)]
    return parts


def report(models: list[str], out: Path, guidance: float, seeds: int, quick: bool = False) -> str:
    out.parent.mkdir(parents=True, exist_ok=True)
    parts = [
        "# Benchmarks",
        "",
        f"Generated by `python -m paratta bench --report` on: **{machine()}** "
        f"({time.strftime('%Y-%m-%d')}). No GPU rows: no GPU was available.",
        "",
        "Iterations are parallel iterations to the default stopping rule (tol 1e-3: the trajectory's "
        "error budget); *distance* is the RMS of x_0 − sequential x_0; *8-bit* is the largest pixel "
        "difference of the decoded images (0 = identical). Sweeps vary one setting from the default "
        "(anderson, order 20, window T, history 2, x_T init). Wall-clock on this CPU says little: a "
        "batch of W evaluations costs about W single ones here.",
    ]
    for name in models:
        parts += model_section(name, out, guidance, seeds, quick)
    text = "\n".join(parts) + "\n"
    out.write_text(text)
    return text


def _warm_prompt(name: str) -> str:
    return {"shapes": "ring", "shapes-unet": "red ring"}.get(name, "")
