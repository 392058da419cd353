"""``python -m paratta sample``: one image (or latent) by ParaTAA, Jacobi or sequential DDIM."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .config import INITS, SOLVERS, SolverConfig
from .problem import Request, make_problem
from .registry import BUILTIN_MODELS, load_model
from .sequential import sample_sequential
from .solver import run


def add_sample_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", default="shapes", help=f"built-in ({', '.join(BUILTIN_MODELS)}), folder or hub id"
    )
    p.add_argument("--prompt", default="")
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=50, help="T, sampling steps")
    p.add_argument("--eta", type=float, default=0.0, help="0 = DDIM, 1 = DDPM-like")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale")
    p.add_argument("--solver", choices=SOLVERS, default="anderson")
    p.add_argument("--order", type=int, default=None, help="k (default min(20, T))")
    p.add_argument("--window", type=int, default=None, help="W (default T)")
    p.add_argument("--history", type=int, default=2, help="m, Anderson history (1 = fixed point)")
    p.add_argument("--tol", type=float, default=1e-3, help="RMS anchor-residual tolerance, latent units")
    p.add_argument("--max-iters", type=int, default=None, help="iteration budget (default T)")
    p.add_argument("--init", choices=INITS, default="xT")
    p.add_argument(
        "--init-trajectory", type=Path, help=".npy trajectory (T+1, *latent) for --init trajectory"
    )
    p.add_argument("--coarse-steps", type=int, default=None)
    p.add_argument("--max-batch", type=int, default=None, help="timesteps per network call")
    p.add_argument("--state-dtype", choices=("float64", "float32"), default="float64")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: the model's)")
    p.add_argument("--latents", type=Path, help=".npy x_T, shape of one latent")
    p.add_argument("--output", type=Path, default=Path("paratta.png"))
    p.add_argument("--output-type", choices=("pil", "latent"), default="pil", help="PNG, or x_0 as .npy")
    p.add_argument(
        "--save-trajectory", type=Path, help="write the final trajectory as .npy (for warm starts)"
    )
    p.add_argument(
        "--compare-sequential", action="store_true", help="also run sequentially and report the gap"
    )
    p.add_argument("--json", action="store_true", help="print a one-object JSON summary")


def default_guidance(model_name: str) -> float:
    return 1.0 if model_name == "toy2d" else 3.0


def sample_command(args: argparse.Namespace) -> dict:
    """Run ``sample`` and return its summary (also written to stdout)."""
    model = load_model(args.model)
    guidance = args.guidance if args.guidance is not None else default_guidance(args.model)
    latents = _load_npy(args.latents, "latents") if args.latents else None
    request = Request(args.prompt, args.negative_prompt, args.seed, args.steps, args.eta, guidance)
    problem = make_problem(model, request, latents)
    config = SolverConfig(
        solver=args.solver,
        order=args.order,
        window=args.window,
        history=args.history,
        tol=args.tol,
        max_iters=args.max_iters,
        init=args.init,
        coarse_steps=args.coarse_steps,
        max_batch=args.max_batch,
        state_dtype=args.state_dtype,
    )
    config.validate(args.steps)
    init_traj = _load_npy(args.init_trajectory, "init-trajectory") if args.init_trajectory else None
    if args.init == "trajectory" and init_traj is None:
        raise ValueError("--init trajectory needs --init-trajectory FILE.npy")

    start = time.perf_counter()
    last = run(problem, config, init_traj, device=args.device)
    seconds = time.perf_counter() - start
    summary = {
        "model": args.model,
        "solver": args.solver,
        "steps": args.steps,
        "iterations": last.iteration,
        "model_evaluations": last.evaluations,
        "converged": last.converged,
        "seconds": round(seconds, 4),
        "model_seconds": round(last.model_seconds, 4),
        "solver_seconds": round(last.solver_seconds, 4),
        "max_residual": last.max_residual,
        "output": str(args.output),
    }
    if args.compare_sequential:
        t0 = time.perf_counter()
        reference = sample_sequential(problem, device=args.device, dtype=config.dtype)
        summary["sequential_seconds"] = round(time.perf_counter() - t0, 4)
        gap = (last.x0 - reference[0]).double()
        summary["distance_to_sequential_rms"] = float(gap.pow(2).mean().sqrt())
        summary["distance_to_sequential_max"] = float(gap.abs().max())
    _write_output(model, last.x0, args.output, args.output_type)
    if args.save_trajectory:
        np.save(args.save_trajectory, last.trajectory.cpu().numpy())
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{args.solver}: {last.iteration} parallel iterations for T = {args.steps} "
            f"({'converged' if last.converged else 'NOT converged'}), {last.evaluations} model evaluations, "
            f"{seconds:.2f} s; wrote {args.output}"
        )
    return summary


def _load_npy(path: Path, what: str) -> torch.Tensor:
    try:
        return torch.from_numpy(np.load(path))
    except (OSError, ValueError) as err:
        raise ValueError(f"--{what}: cannot read {path}: {err}") from err


def _write_output(model, x0: torch.Tensor, path: Path, output_type: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if output_type == "latent":
        np.save(path, x0.cpu().float().numpy())
        return
    from PIL import Image

    rgb = model.decode(x0[None].to(model.device, model.dtype))[0]
    Image.fromarray((rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paratta", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add_sample_arguments(sub.add_parser("sample", help="sample one image"))
    from .bench import add_bench_arguments, bench_command

    add_bench_arguments(sub.add_parser("bench", help="iterations and wall-clock against sequential"))
    args = parser.parse_args(argv)
    try:
        if args.command == "sample":
            sample_command(args)
        else:
            bench_command(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
