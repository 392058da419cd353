"""On a CUDA device: the tiny SD3 and Flux pipelines in float16 and bfloat16, ParaTAA against sequential.

    python benchmarks/gpu_flow_check.py          # prints one line per (pipeline, dtype); exit 1 on a miss

The test suite runs these pipelines in float32 on the CPU; this script is the half-precision check a
session with a GPU runs (one short command, a few seconds). Each line names the device.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paratta import Request, SolverConfig, make_problem, run, sample_sequential  # noqa: E402
from paratta.metrics import distance  # noqa: E402
from paratta.models.diffusers.load import from_pipeline  # noqa: E402
from paratta.models.diffusers.tiny import tiny_flux_pipeline, tiny_sd3_pipeline  # noqa: E402

FLUX_SIZE = {"height": 16, "width": 16, "max_sequence_length": 32}
TOL = 2e-3  # the budget rule's auto tolerance, latent RMS


def main() -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # --help on any machine
    if not torch.cuda.is_available():
        print("error: no CUDA device here", file=sys.stderr)
        return 2
    failed = 0
    for dtype in (torch.float16, torch.bfloat16):
        for name, model in (
            ("sd3", from_pipeline(tiny_sd3_pipeline(), device="cuda", dtype=dtype)),
            ("flux", from_pipeline(tiny_flux_pipeline(), device="cuda", dtype=dtype, **FLUX_SIZE)),
        ):
            problem = make_problem(model, Request("a red circle", seed=1, steps=10, guidance=3.0))
            reference = sample_sequential(problem, device="cuda")
            last = run(problem, SolverConfig(), device="cuda")
            gap = distance(last.x0, reference[0])
            ok = last.converged and gap <= TOL
            failed += not ok
            where = f"{name} {str(dtype)[6:]} on {torch.cuda.get_device_name()}"
            print(f"{'ok' if ok else 'MISS'} {where}: {last.iteration} iterations, {gap:.1e} RMS off")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
