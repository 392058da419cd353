"""``window="auto"`` against W = T and sequential: measured here, and projected on the shipped GPU table.

    python benchmarks/auto_window.py                      # this machine, shapes and shapes-unet, T = 50, 100
    python benchmarks/auto_window.py --models shapes --steps 50 --repeats 3

Part 1 runs on this device: the auto plan (a calibration, cached after the first use), then the
library's wall-clock of the auto window, of W = T and of the sequential sampler, best of
``--repeats``, each run checked against the sequential x_0. Part 2 needs no device: for each model of
``paratta/data/latency.json`` the window auto would choose there, and its projected time against
W = T and sequential — a projection from that table, labelled so.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from paratta import Request, SolverConfig, load_model, make_problem, model_defaults, run  # noqa: E402
from paratta import plan as paratta_plan  # noqa: E402
from paratta.metrics import distance  # noqa: E402
from paratta.planning.calibration import CACHE_ENV  # noqa: E402
from paratta.planning.latency import TABLE_NAME, load_tables  # noqa: E402
from paratta.planning.window import choose  # noqa: E402
from paratta.sequential import sample_sequential  # noqa: E402
from paratta.tools.machine import machine  # noqa: E402

GPU_MODELS = {"sd15-unet": 7.5, "dit-xl-2-256": 4.0, "shapes-unet": 3.0}  # guidance as the tables were run


def best_of(repeats: int, fn) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def here(models: list[str], steps: list[int], repeats: int) -> None:
    print(f"## On this machine: {machine()}\n")
    print("| model | T | auto W | curve | projected auto s | projected W=T s | projected seq s | "
          "auto s | W=T s | sequential s | auto vs seq | auto dist |")  # fmt: skip
    print("|---" * 12 + "|")
    for name in models:
        model = load_model(name)
        d = model_defaults(name, model)
        for T in steps:
            problem = make_problem(model, Request(d.prompt, steps=T, guidance=d.guidance))
            planned = paratta_plan(problem, SolverConfig(window="auto"))
            plan = planned.projection
            assert plan is not None
            auto_s, last = best_of(repeats, lambda c=planned, p=problem: run(p, c))
            full_s, _ = best_of(repeats, lambda p=problem, t=T: run(p, SolverConfig(window=t)))
            seq_s, reference = best_of(repeats, lambda p=problem: sample_sequential(p))
            source = "cached" if "cached" in plan.source else "new" if "now" in plan.source else "shipped"
            cells = [name, T, plan.window, source, f"{plan.projected_s:.3f}", f"{plan.by_window[T]:.3f}"]
            cells += [f"{plan.sequential_s:.3f}", f"{auto_s:.3f}", f"{full_s:.3f}", f"{seq_s:.3f}"]
            cells += [f"{seq_s / auto_s:.2f}×", f"{distance(last.x0, reference[0]):.1e}"]
            print("| " + " | ".join(map(str, cells)) + " |", flush=True)


def projected(steps: list[int]) -> None:
    tables = load_tables()
    print(f"\n## Projected on the shipped tables ({TABLE_NAME}), not measured here\n")
    print(
        "| model | device | T | auto W | auto s | W=T s | W=T/4 s | sequential s | auto vs seq | W=T vs seq |"
    )
    print("|---" * 10 + "|")
    for name, guidance in GPU_MODELS.items():
        table = tables[name]
        for T in steps:
            W, t = choose(table, T, guidance, 0.0)
            seq = T * table.call_ms(1 if guidance == 1 else 2) / 1000
            cells = [name, table.device, T, W, f"{t[W]:.3f}", f"{t[T]:.3f}", f"{t[T // 4]:.3f}", f"{seq:.3f}"]
            print("| " + " | ".join(map(str, cells + [f"{seq / t[W]:.2f}×", f"{seq / t[T]:.2f}×"])) + " |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["shapes", "shapes-unet"])
    p.add_argument("--steps", type=int, nargs="+", default=[50, 100])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--fresh", action="store_true", help="calibrate anew (a temporary cache folder)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.fresh:
        os.environ[CACHE_ENV] = tempfile.mkdtemp(prefix="paratta-calibration-")
    here(args.models, args.steps, args.repeats)
    projected(args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
