"""The CPU latency table of the built-in networks: one call at 1, 2, 4, … rows, one torch thread.

The cost model (``paratta.planning.cost``) charges a run on a CPU with this table, as it charges a
run on a GPU with ``paratta/data/latency.json``. Each size is timed by ``calibration.calibrate``
(the fastest of a few calls after a warm-up) on unguided rows, ``--runs`` times, keeping each size's
fastest (the least disturbed by other work on the machine); a guided timestep is two rows.

    python benchmarks/cpu_latency.py --table paratta/data/latency-cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from paratta import Request, load_model, make_problem, model_defaults  # noqa: E402
from paratta.planning.calibration import calibrate  # noqa: E402
from paratta.planning.cost import parameters  # noqa: E402
from paratta.planning.hardware import cpu_name  # noqa: E402
from paratta.registry import BUILTIN_MODELS  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(BUILTIN_MODELS))
    p.add_argument("--rows", type=int, default=128, help="the largest batch measured")
    p.add_argument("--runs", type=int, default=2, help="calibrations per model; each size's fastest is kept")
    p.add_argument("--table", type=Path, help="write the table here (default: print it)")
    args = p.parse_args()
    torch.set_num_threads(1)
    models = {}
    for name in args.models:
        model = load_model(name, device="cpu")
        problem = make_problem(model, Request(model_defaults(name).prompt, steps=args.rows, guidance=1.0))
        tables = [calibrate(problem, torch.device("cpu"), repeats=5, budget_s=60.0) for _ in range(args.runs)]
        table = min(tables, key=lambda t: len(t.rows))  # every size that all runs reached
        fastest = [min(t.ms[j] for t in tables) for j in range(len(table.rows))]
        models[name] = {
            "description": BUILTIN_MODELS[name].description,
            "aliases": [name],
            "dtype": table.dtype,
            "parameters": parameters(model),  # a network without a row here is charged per parameter
            "rows": list(table.rows),
            "ms": [round(m, 4) for m in fastest],
        }
        print(name, dict(zip(table.rows, models[name]["ms"], strict=True)), flush=True)
    doc = {
        "device": f"{cpu_name()}, 1 torch thread, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "source": "benchmarks/cpu_latency.py",
        "models": models,
    }
    text = json.dumps(doc, indent=1) + "\n"
    if args.table:
        args.table.write_text(text, encoding="utf-8")
    else:
        print(text)


if __name__ == "__main__":
    main()
