"""``python -m paratta``: ``sample`` (one image or latent, solved by ParaTAA, Jacobi or the sequential
sampler itself, with any sampler and family the model takes) and ``bench`` (``paratta.tools.bench``).

The sampling and solver arguments are generated from the declarations in ``paratta.config`` (one
``--flag`` per setting, its range and hint in ``--help``); per-model defaults come from the registry.
Everything that can be checked is checked before a model is loaded: a bad flag against a hub id
costs nothing. A sample is posed once (``paratta.pose``: its problem, plan and sampler), and its
summary reads them from there. Bad input exits with status 2 and one line naming the problem.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from paratta.config import Request, SolverConfig
from paratta.evaluate import NonFiniteError
from paratta.metrics import distance
from paratta.parallel import distributed
from paratta.planning.pose import pose
from paratta.registry import BUILTIN_MODELS, load_model, model_defaults
from paratta.sequential import sample_sequential
from paratta.solver import run
from paratta.tools import bench, report, scaling
from paratta.tools.args import (
    Parser,
    add_setting_arguments,
    check_device,
    check_output,
    rank_scope,
    settings_from_args,
)

LATENT_LIMIT = 1e4  # |x_T| beyond this is no Gaussian draw: refuse it before the network overflows
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def add_sample_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", default="shapes", help=f"built-in ({', '.join(BUILTIN_MODELS)}), folder or hub id"
    )
    add_setting_arguments(p, Request)
    add_setting_arguments(p, SolverConfig)
    p.add_argument(
        "--init-trajectory", type=Path, help=".npy trajectory (T+1, *latent) for --init trajectory"
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: the model's)")
    p.add_argument(
        "--latents",
        type=Path,
        help=".npy x_T, the pipeline's own latents= (packed for Flux: give --height/--width too)",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=None,
        help="default paratta.png (.npy for latents) in the system's temp folder; the summary says where",
    )
    p.add_argument("--output-type", choices=("pil", "latent"), default="pil", help="an image, or x_0 as .npy")
    p.add_argument(
        "--save-trajectory", type=Path, help="write the final trajectory as .npy (for warm starts)"
    )
    p.add_argument(
        "--compare-sequential", action="store_true", help="also run sequentially and report the gap"
    )
    p.add_argument("--json", action="store_true", help="print a one-object JSON summary")


def load_array(path: Path, what: str) -> torch.Tensor:
    """A finite float array from a .npy file (no pickles), or ``ValueError`` naming the flag."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"--{what}: cannot read {path}: {err}") from None
    if array.dtype.kind not in "fiu" or array.size == 0:
        raise ValueError(
            f"--{what}: {path} must hold a non-empty array of numbers; got {array.dtype}, {array.shape}"
        )
    tensor = torch.from_numpy(array.astype(np.float32 if array.dtype.kind != "f" else array.dtype))
    if not torch.isfinite(tensor).all():
        raise ValueError(f"--{what}: {path} contains NaN or inf")
    if tensor.abs().max() > LATENT_LIMIT:
        raise ValueError(f"--{what}: {path} has values beyond ±{LATENT_LIMIT:g}; x_T is a unit Gaussian draw")
    return tensor


def prepare(args: argparse.Namespace) -> tuple[Request, SolverConfig, dict[str, Any]]:
    """Validate every flag that needs no model; the request's guidance may still be the model's."""
    defaults = model_defaults(args.model) if args.model in BUILTIN_MODELS else None
    steps = args.steps if args.steps is not None else (defaults.steps if defaults else 50)
    request = settings_from_args(args, Request, steps=steps)  # validates seed, steps, η, guidance
    config = settings_from_args(args, SolverConfig)
    config.validate(steps)
    if config.init == "trajectory" and args.init_trajectory is None:
        raise ValueError("--init trajectory needs --init-trajectory FILE.npy")
    check_device(args.device)
    if args.output is None:  # the system's temporary folder: a bare run leaves nothing in the working tree
        args.output = Path(tempfile.gettempdir()) / (
            "paratta.npy" if args.output_type == "latent" else "paratta.png"
        )
    suffixes = (".npy",) if args.output_type == "latent" else IMAGE_SUFFIXES
    check_output(args.output, suffixes, "--output")
    if args.save_trajectory:
        check_output(args.save_trajectory, (".npy",), "--save-trajectory")
    arrays = {
        "latents": load_array(args.latents, "latents") if args.latents else None,
        "init_trajectory": load_array(args.init_trajectory, "init-trajectory")
        if args.init_trajectory
        else None,
    }
    return request, config, arrays


def sample_command(args: argparse.Namespace) -> dict:
    """Run ``sample`` and return its summary (also written to stdout)."""
    request, config, arrays = prepare(args)
    model = load_model(args.model, device=args.device)  # the network runs where the solver does
    defaults = model_defaults(args.model, model)
    request = settings_from_args(
        args,
        Request,
        steps=request.steps,
        prompt=defaults.prompt if args.prompt is None else args.prompt,
        guidance=defaults.guidance if args.guidance is None else args.guidance,
    )
    group = distributed.current()  # under torchrun: the group this process joined, split over
    posed = pose(model, request, config, args.device, group, latents=arrays["latents"])  # may calibrate
    problem, planned = posed.problem, posed.plan
    assert problem is not None  # posed with its problem (not dry)

    start = time.perf_counter()
    last = run(problem, planned, arrays["init_trajectory"])
    seconds = time.perf_counter() - start
    summary: dict[str, Any] = {
        "model": args.model,
        "prompt": request.prompt,
        "guidance": request.guidance,
        "solver": config.solver,
        "stopping": config.stopping,
        "steps": request.steps,
        "sampler": posed.sampler,
        "iterations": last.iteration,
        "model_evaluations": last.evaluations,
        "converged": last.converged,
        "seconds": round(seconds, 4),
        "model_seconds": round(last.model_seconds, 4),
        "solver_seconds": round(last.solver_seconds, 4),
        "max_residual": last.max_residual,
        "world_size": group.world if group is not None else 1,
        "window": planned.window,
        "window_source": "given" if args.window is not None else f"default on {model.device.type}: W = T",
        "output": str(args.output),
    }
    if planned.projection is not None:
        summary |= planned.projection.summary() | {"window_note": planned.projection.line()}
    if args.compare_sequential:
        t0 = time.perf_counter()
        reference = sample_sequential(problem, device=args.device, dtype=planned.dtype)
        summary["sequential_seconds"] = round(time.perf_counter() - t0, 4)
        gap = (last.x0 - reference[0].to(last.x0.device)).double()
        summary["distance_to_sequential_rms"] = distance(last.x0, reference[0].to(last.x0.device))
        summary["distance_to_sequential_max"] = float(gap.abs().max())
    write_output(problem.model, last.x0, args.output, args.output_type)  # at the run's image size
    if args.save_trajectory:
        with open(args.save_trajectory, "wb") as f:  # a file object: np.save adds no suffix
            np.save(f, last.trajectory.cpu().numpy())
    if args.json:
        print(json.dumps(summary))
    else:
        print(summary_line(summary))
    return summary


def summary_line(s: dict[str, Any]) -> str:
    line = (
        f"{s['solver']}: {s['iterations']} parallel iterations for {s['sampler']}, T = {s['steps']} "
        f"({'converged' if s['converged'] else 'NOT converged'}), "
        f"{s['model_evaluations']} model evaluations, {s['seconds']:.2f} s"
    )
    if "distance_to_sequential_rms" in s:
        line += (
            f"; sequential {s['sequential_seconds']:.2f} s, distance to the sequential x_0 "
            f"{s['distance_to_sequential_rms']:.2e} RMS, {s['distance_to_sequential_max']:.2e} max"
        )
    if "window_note" in s:
        line += f"; {s['window_note']}"
    return line + f"; wrote {s['output']}"


def write_output(model, x0: torch.Tensor, path: Path, output_type: str) -> None:
    """Write exactly ``path``: x_0 as .npy, or the decoded image in the format its suffix names (a video's
    frames as one strip)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if output_type == "latent":
        with open(path, "wb") as f:
            np.save(f, x0.cpu().float().numpy())
        return
    from PIL import Image

    rgb = model.decode(x0[None].to(model.device, model.dtype))[0]
    if model.frames is not None:  # a video (F, 3, H, W): its frames side by side, first on the left
        rgb = torch.cat(list(rgb), dim=-1)
    Image.fromarray((rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)


def bench_dispatch(args: argparse.Namespace) -> None:
    """``bench``: ``--report`` writes the report; under torchrun, the rank scaling table; else the table."""
    bench.check_arguments(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.report:
        figures = report.Figures(
            steps=tuple(args.steps or bench.STEPS),
            etas=tuple(args.eta or bench.ETAS),
            tol=args.tol,
            seeds=args.seeds,
            guidance=args.guidance,
            device=args.device,
            quick=args.quick,
        )
        report.report(args.models or ["shapes", "shapes-unet"], Path(args.report), figures)
        print(f"wrote {args.report}")
    elif distributed.current() is not None:
        etas = [0.0] if bench.deterministic(args) else list(bench.ETAS)  # only DDIM takes η > 0
        args.steps, args.eta = args.steps or list(bench.STEPS), args.eta or etas
        if args.guidance is None:
            args.guidance = model_defaults(args.model).guidance
        scaling.scaling_command(args)
    else:
        bench.bench_command(args)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m paratta", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add_sample_arguments(sub.add_parser("sample", help="sample one image"))
    bench.add_bench_arguments(sub.add_parser("bench", help="iterations and wall-clock against sequential"))
    try:
        args = parser.parse_args(argv)
        with rank_scope(args):  # under torchrun: rank 0 prints and writes; failures shared
            if args.command == "sample":
                sample_command(args)
            else:
                bench_dispatch(args)
    except (distributed.RankFailure, distributed.CollectiveTimeout) as err:
        return distributed.report_failure(err)
    except (ValueError, NonFiniteError, MemoryError, OSError) as err:
        # Bad input, a model that returns NaN, out of memory, a file that cannot be written: one line.
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
