"""``python -m paratta bench --report``: docs/BENCHMARKS.md, both stopping rules and sweeps per model.

Every row is measured here with ``bench.measure`` (one loop, one table writer), on the machine named
at the top of the report; every row carries the oracle, stop − oracle, the largest 8-bit difference
and the distance to the sequential x_0.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from paratta.config import SolverConfig
from paratta.metrics import to_8bit
from paratta.planning.pose import solve
from paratta.tools.bench import ETAS, STEPS, Row, measure, problems, table_header, table_line, tol_text
from paratta.tools.machine import machine

# Sections after this line in the report's file are written by other benchmarks; the report keeps them.
KEPT = "<!-- kept by `bench --report`: the sections below are written by other benchmarks -->"
EXACT_MODELS = ("shapes", "toy2d")  # cheap exact scores; networks get fewer seeds on a CPU
WARM_PROMPTS = {"shapes": "ring", "shapes-unet": "red ring"}  # a related prompt for the warm start


@dataclass(frozen=True)
class Figures:
    """What the report measures; every field has a command-line flag (``bench --report``)."""

    steps: tuple[int, ...] = STEPS
    etas: tuple[float, ...] = ETAS
    tol: float | None = None  # None: each rule's auto tolerance
    seeds: int | None = None  # per row; None: 10 for the exact models, 4 for networks (1 when quick)
    guidance: float | None = None  # None: the model's own default
    device: str | None = None
    quick: bool = False

    def seeds_for(self, model: str) -> list[int]:
        n = self.seeds or (1 if self.quick else 10 if model in EXACT_MODELS else 4)
        return list(range(n))

    def sweep_steps(self, model: str) -> int:
        """T of the sweeps: the largest planned T up to 100 for the exact models, 50 for networks."""
        cap = 100 if model in EXACT_MODELS and not self.quick else 50
        return max([T for T in self.steps if T <= cap] or [min(self.steps)])


def rules(tol: float | None) -> list[tuple[str, SolverConfig]]:
    """The budget rule at the defaults and with the published split, and the published algorithm (the
    per-step rule on the published split)."""
    published = "split published"
    return [
        ("", SolverConfig(tol=tol)),
        (published, SolverConfig(split="published", tol=tol)),
        (published, SolverConfig(stopping="per-step", split="published", tol=tol)),
    ]


def sweeps(T: int, tol: float | None) -> list[tuple[str, SolverConfig]]:
    """One setting at a time away from the defaults (anderson, order min(20, T), window T, history 2, x_T,
    the flow split)."""
    configs = [
        ("", SolverConfig(tol=tol)),
        ("split published", SolverConfig(split="published", tol=tol)),
        ("", SolverConfig(solver="jacobi", tol=tol)),
        ("split published", SolverConfig(solver="jacobi", split="published", tol=tol)),
        ("", SolverConfig(solver="anderson-global", tol=tol)),
    ]
    configs += [(f"order {k}", SolverConfig(order=k, tol=tol)) for k in sorted({5, T})]
    configs += [(f"window {w}", SolverConfig(window=w, tol=tol)) for w in (T // 4, T // 2)]
    configs += [(f"history {m}", SolverConfig(history=m, tol=tol)) for m in (1, 3, 4)]
    configs += [(f"init {i}", SolverConfig(init=i, tol=tol)) for i in ("coarse", "trajectory")]
    return configs


def plot_stops(rows: list[Row], path: Path) -> None:
    """Median stop and oracle against T, each rule and split of ``rules``, one panel per η."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    etas = sorted({r.eta for r in rows})
    fig, axes = plt.subplots(1, len(etas), figsize=(4.6 * len(etas), 3.4), squeeze=False)
    for ax, eta in zip(axes[0], etas, strict=True):
        lanes = sorted({(r.stopping, r.setting) for r in rows}, key=lambda lane: (lane[1], lane[0]))
        for colour, (stopping, setting) in zip(("C0", "C2", "C3", "C1"), lanes, strict=False):
            sel = sorted(
                (r.steps, r.iterations, r.oracle)
                for r in rows
                if r.eta == eta and r.stopping == stopping and r.setting == setting
            )
            if not sel:
                continue
            T, stop, oracle = zip(*sel, strict=True)
            name = f"{stopping}, {setting}" if setting else stopping
            ax.plot(T, stop, "o-", color=colour, label=f"{name}: stop")
            ax.plot(
                T,
                [np.nan if o is None else o for o in oracle],
                "s:",
                color=colour,
                label=f"{name}: oracle",
            )
        ax.set(title=f"η = {eta:g}", xlabel="T (steps)", ylabel="parallel iterations (median)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_convergence(model_name: str, T: int, wanted: Figures, path: Path) -> None:
    """Largest 8-bit difference of x_0 to sequential per iteration, seed 0, with each rule's stop."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (problem,), (reference,), _ = problems(model_name, T, 0.0, [0], wanted.guidance, wanted.device)
    model = problem.model
    target = to_8bit(model, reference[0])
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for label, config in (
        ("jacobi", SolverConfig(solver="jacobi", tol=wanted.tol)),
        ("anderson, budget", SolverConfig(tol=wanted.tol)),
        ("anderson, budget, split published", SolverConfig(split="published", tol=wanted.tol)),
        (
            "anderson, per-step, split published",
            SolverConfig(stopping="per-step", split="published", tol=wanted.tol),
        ),
    ):
        levels = [
            float((to_8bit(model, it.x0) - target).abs().max())
            for it in solve(problem, config, device=wanted.device)
        ]
        ax.semilogy(np.arange(1, len(levels) + 1), np.maximum(levels, 0.5), marker=".", label=label)
    ax.axhline(1, color="k", ls=":", lw=1, label="one 8-bit level")
    ax.set(
        xlabel="parallel iteration (the last point is the stop)",
        ylabel="max 8-bit difference to sequential",
        title=f"{model_name}, DDIM T = {T}, seed 0 (0 drawn at 0.5)",
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def model_section(name: str, out: Path, wanted: Figures, write) -> list[Row]:
    """Both rules at every (T, η), then the sweeps; each row is written as soon as it is measured."""
    seeds = wanted.seeds_for(name)
    write(
        f"\n## `{name}`\n\n### Both stopping rules, anderson at its defaults ({len(seeds)} seed(s) per row)\n"
    )
    write(table_header())
    rows = []
    for steps in wanted.steps:
        for eta in wanted.etas:
            rows += measure(
                name,
                steps,
                eta,
                rules(wanted.tol),
                seeds,
                wanted.guidance,
                wanted.device,
                on_row=lambda r: write(table_line(r)),
            )
    plot_stops(rows, out.parent / f"bench_{name}_iterations.png")
    T = wanted.sweep_steps(name)
    plot_convergence(name, T, wanted, out.parent / f"bench_{name}_convergence.png")
    figures = (
        f"![stop and oracle vs T](bench_{name}_iterations.png) ![convergence](bench_{name}_convergence.png)"
    )
    write(f"\n{figures}\n")
    sweep_seeds = seeds[: max(1, min(len(seeds), 4 if name in EXACT_MODELS else 2))]
    warm = WARM_PROMPTS.get(name)
    write(
        f"\n### What lowers the oracle: one setting at a time (DDIM T = {T}, budget rule, "
        f"{len(sweep_seeds)} seed(s); warm start from prompt {warm!r})\n"
    )
    write(table_header())
    rows += measure(
        name, T, 0.0, sweeps(T, wanted.tol), sweep_seeds, wanted.guidance, wanted.device,
        on_row=lambda r: write(table_line(r)), warm_prompt=warm,
    )  # fmt: skip
    return rows


def device_line(device: str | None) -> str:
    """Where the rows ran: the GPU's name when a CUDA device was asked for, else the CPU."""
    if device is not None and torch.device(device).type == "cuda":
        return f"GPU rows: measured on {torch.cuda.get_device_name(torch.device(device))}."
    return "No GPU rows: measured on the CPU."


def report(models: list[str], out: Path, wanted: Figures | None = None) -> str:
    """Write the report, and return its text.

    Rows and figures go to a temporary folder as they finish (its path is printed first: a long run
    shows progress there); ``out`` and its figures are replaced only once every model is done, so an
    interrupted run leaves the tracked report as it was. The header says how long the run took.
    """
    wanted = wanted or Figures()
    out.parent.mkdir(parents=True, exist_ok=True)
    existing = out.read_text(encoding="utf-8") if out.exists() else ""
    kept = existing[existing.index(KEPT) :] if KEPT in existing else ""  # other benchmarks' sections
    staging = Path(tempfile.mkdtemp(prefix="paratta-report-"))
    final, out = out, staging / out.name
    print(f"writing to {out}; {final} is replaced when every model is done", flush=True)
    started = time.perf_counter()
    where = device_line(wanted.device)
    header = [
        "# Benchmarks",
        "",
        f"Generated by `python -m paratta bench --report` on: **{machine()}** "
        f"({time.strftime('%Y-%m-%d')}). {where}",
        "",
        f"{tol_text(wanted.tol)}; each model at its own default prompt and guidance. *stop* is the iteration "
        "the stopping rule ends on; *oracle* the first iteration from which the decoded x_0 stays "
        "within one 8-bit level of the sequential image (median over the seeds that end within one "
        "level); *off > 1 level* counts seeds whose final image differs from the sequential one by more "
        "than one 8-bit level; *distance* is the RMS of x_0 − sequential x_0 in latent units. "
        "`budget` is paratta's rule (x_0 within tol of sequential, first order), `per-step` the "
        "published one (one-step residual ≤ tol or ≤ tol·σ); *split published*: the update carries the "
        "published linear part (ε held) instead of the default flow frame (docs/stopping.md). Seconds are "
        "the library's own time (network + solver), on the CPU named above (what a batch costs there: "
        "docs/gpu.md, auto window).",
    ]
    lines: list[str] = []

    def write(line: str) -> None:
        lines.append(line)
        out.write_text("\n".join(header + lines) + "\n" + (f"\n\n{kept}" if kept else ""))
        print(line, flush=True)

    for name in models:
        model_section(name, out, wanted, write)
    header[2] += f" The run took {(time.perf_counter() - started) / 60:.0f} min."
    write("")
    for made in staging.iterdir():
        shutil.move(made, final.parent / made.name)
    staging.rmdir()
    return final.read_text()
