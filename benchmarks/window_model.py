"""Measure parallel iterations against the window W and fit the model ``paratta.planning.window`` uses.

    python benchmarks/window_model.py                 # writes paratta/data/iterations.json
    python benchmarks/window_model.py --print-only
    python benchmarks/window_model.py --refit        # fit the counts already in the file again

For each embedded model, T and η it runs Anderson (the default solver and stopping rule) at
W = T/16 … T over a few seeds, then fits

    n(W) = min(T, n_T · (1 + κ (T/W − 1))),       n_T = a_η + b_η · log2 T

κ_η by least squares (through the origin) on n(W)/n_T − 1 against T/W − 1, over every model and T;
a_η, b_η on the full-window counts of the embedded ``shapes`` model; between η = 0 and 1 the
library interpolates linearly. The measured counts go into the
file beside the fit, with the machine; iteration counts depend on the model, not on the hardware.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from paratta import Request, SolverConfig, load_model, make_problem, model_defaults, run  # noqa: E402
from paratta.tools.machine import machine  # noqa: E402

OUT = ROOT / "paratta" / "data" / "iterations.json"
PLAN = {"shapes": ((25, 50, 100), (0.0, 1.0), 3), "shapes-unet": ((50,), (0.0,), 1)}


def windows(T: int) -> list[int]:
    return sorted({max(1, T // d) for d in (16, 8, 4, 3, 2)} | {T})


def measure() -> list[dict]:
    points = []
    for name, (steps, etas, seeds) in PLAN.items():
        model = load_model(name)
        d = model_defaults(name, model)
        for T in steps:
            for eta in etas:
                for W in windows(T):
                    its = []
                    for seed in range(seeds):
                        request = Request(d.prompt, seed=seed, steps=T, eta=eta, guidance=d.guidance)
                        its.append(run(make_problem(model, request), SolverConfig(window=W)).iteration)
                    points.append({"model": name, "T": T, "eta": eta, "W": W, "iterations": its})
                    print(f"{name} T={T} η={eta:g} W={W}: {its}", flush=True)
    return points


def fit(points: list[dict]) -> dict:
    """κ_η by least squares through the origin, per η over every model and T; a_η, b_η on ``shapes``."""
    full = {
        (p["model"], p["T"], p["eta"]): statistics.median(p["iterations"]) for p in points if p["W"] == p["T"]
    }
    kappa, full_window = {}, {}
    for eta in sorted({p["eta"] for p in points}):
        xs, ys = [], []
        for p in points:
            if p["eta"] == eta and 1 < p["W"] < p["T"]:
                xs.append(p["T"] / p["W"] - 1)
                ys.append(statistics.median(p["iterations"]) / full[(p["model"], p["T"], eta)] - 1)
        kappa[f"{eta:g}"] = round(sum(x * y for x, y in zip(xs, ys, strict=True)) / sum(x * x for x in xs), 4)
        pts = [(math.log2(T), n) for (m, T, e), n in full.items() if m == "shapes" and e == eta]
        mx, my = statistics.fmean(x for x, _ in pts), statistics.fmean(y for _, y in pts)
        b = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
        full_window[f"{eta:g}"] = {"a": round(my - b * mx, 3), "b": round(b, 3)}
    return {"kappa": kappa, "full_window": full_window}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--print-only", action="store_true", help="measure and fit, write nothing")
    p.add_argument("--refit", action="store_true", help="fit the counts already in the file, measure nothing")
    args = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    if args.refit:
        previous = json.loads(OUT.read_text(encoding="utf-8"))
        doc = {**previous, **fit(previous["measured"])}
        print(json.dumps({k: v for k, v in doc.items() if k != "measured"}, indent=1))
        if not args.print_only:
            OUT.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        return 0
    points = measure()
    doc = {
        **fit(points),
        "model": "n(W) = min(T, n_T (1 + kappa (T/W - 1))), n_T = a + b log2 T; kappa, a, b by eta",
        "solver": "anderson, budget rule, auto tol, defaults otherwise",
        "source": "benchmarks/window_model.py",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.perf_counter() - t0, 1),
        "measured": points,
    }
    print(json.dumps({k: v for k, v in doc.items() if k != "measured"}, indent=1))
    if not args.print_only:
        OUT.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
