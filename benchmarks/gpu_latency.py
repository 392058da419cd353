"""Batch latency of one network call, sequential DDIM and ParaTAA wall-clock, on a GPU.

For three networks: the trained ``shapes-unet``, a full-size Stable Diffusion 1.5 UNet and a
DiT-XL/2-256 transformer (both built from their configs with random weights: the cost of a call
does not depend on the weights). Per network:

1. the latency of one guided call at 1, 2, 4, … timesteps (2, 4, 8, … rows; plus one unguided
   row), median of ``--repeats`` CUDA-synchronised calls after a warm-up;
2. sequential DDIM-T wall-clock (T calls one after another);
3. ParaTAA (Anderson, order min(20, T)) wall-clock at windows T, T/2, T/4. ``shapes-unet`` (float32) is a
   trained network and is solved to convergence; the random-weight networks do not converge, so
   they run exactly the iteration count that ``shapes-unet`` needed at the same T and window
   (``max_iters``), with every window full: an upper bound on the cost of those iterations.

The latency table is written to ``--table`` (the app's projection reads it) and everything to
``--json``. On a CPU, ``--quick`` runs the same code on small sizes in about a minute.

    python benchmarks/gpu_latency.py --table paratta/data/latency.json --json gpu.json
    python benchmarks/gpu_latency.py --quick --device cpu
    python benchmarks/gpu_latency.py --markdown docs/data/gpu_benchmark.json   # docs/gpu.md's tables
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from sd_speed import SD15_VAE, Clock, build_sd15  # noqa: E402

from paratta import Request, SolverConfig, make_problem, sample_sequential, solve  # noqa: E402
from paratta.metrics import distance  # noqa: E402
from paratta.planning.latency import LatencyTable, project  # noqa: E402
from paratta.tools.machine import machine  # noqa: E402

DIT_XL_2_256: dict[str, Any] = dict(  # facebook/DiT-XL-2-256's transformer
    num_attention_heads=16,
    attention_head_dim=72,
    in_channels=4,
    out_channels=8,
    num_layers=28,
    sample_size=32,
    patch_size=2,
    num_embeds_ada_norm=1000,
    norm_type="ada_norm_zero",
)
ALIASES = {
    "shapes-unet": ["shapes-unet"],
    "sd15-unet": ["stable-diffusion-v1-5/stable-diffusion-v1-5", "runwayml/stable-diffusion-v1-5", "sd15"],
    "dit-xl-2-256": ["facebook/DiT-XL-2-256"],
}
DESCRIPTIONS = {
    "shapes-unet": "paratta's trained shapes UNet (1.1 M parameters), 3×32×32",
    "sd15-unet": "Stable Diffusion 1.5 UNet (860 M parameters, random weights), 4×64×64 latents (512 px)",
    "dit-xl-2-256": "DiT-XL/2 transformer (675 M parameters, random weights), 4×32×32 latents (256 px)",
}
PROMPTS = {
    "shapes-unet": "red circle",
    "sd15-unet": "a photograph of an astronaut riding a horse",
    "dit-xl-2-256": "1",
}


def build_dit(device: torch.device, dtype: torch.dtype, quick: bool):
    from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    from paratta.models.diffusers.dit import DiTModel

    config = dict(DIT_XL_2_256, num_layers=2, sample_size=8) if quick else DIT_XL_2_256
    torch.manual_seed(0)
    with torch.device(device):
        transformer = DiTTransformer2DModel(**config).to(dtype).eval()
        vae = AutoencoderKL(**SD15_VAE).to(dtype).eval()
    scheduler = DDIMScheduler(beta_schedule="linear", beta_start=0.0001, beta_end=0.02, clip_sample=False)
    pipe = DiTPipeline(transformer=transformer, vae=vae, scheduler=scheduler)
    return DiTModel(pipe, device=device, dtype=dtype, name="dit-xl-2-256")


def build(name: str, device: torch.device, dtype: torch.dtype, quick: bool):
    if name == "shapes-unet":
        from paratta.models.unet import build_shapes_unet_model

        return build_shapes_unet_model(device=device, dtype=dtype)
    if name == "sd15-unet":
        if quick:
            from paratta.models.diffusers.sd import StableDiffusionModel
            from paratta.models.diffusers.tiny import tiny_sd_pipeline

            return StableDiffusionModel(
                tiny_sd_pipeline(sample_size=8), device=device, dtype=dtype, name=name
            )
        return build_sd15(device, dtype)
    return build_dit(device, dtype, quick)


def call_ms(model, cond, n: int, guidance: float, repeats: int) -> float:
    """Median milliseconds of one ``predict`` with n timesteps (2n rows when guided)."""
    x = torch.randn((n, *model.latent_shape), device=model.device, dtype=model.dtype)
    t = torch.linspace(999, 1, n, device=model.device).long()
    times = []
    with torch.inference_mode():
        model.predict(x, t, cond, guidance)  # warm-up: kernel choice, allocator
        for _ in range(repeats):
            with Clock(model.device) as clock:
                model.predict(x, t, cond, guidance)
            times.append(clock.seconds)
    return 1e3 * statistics.median(times)


def latency_table(model, cond, steps_list: list[int], repeats: int) -> dict[str, list]:
    """Guided calls at powers of two and at every window the runs use (T, T/2, T/4), up to 2T rows."""
    T = max(steps_list)
    sizes = {2**j for j in range(T.bit_length()) if 2**j <= T}
    sizes |= {max(1, s // d) for s in steps_list for d in (1, 2, 4)}
    rows, ms = [1], [call_ms(model, cond, 1, 1.0, repeats)]  # unguided: one row
    for n in sorted(sizes):
        try:
            ms.append(call_ms(model, cond, n, 3.0, repeats))
        except MemoryError:  # the adapters raise ModelOutOfMemoryError (a MemoryError): the table ends here
            break
        rows.append(2 * n)
    return {"rows": rows, "ms": [round(v, 4) for v in ms]}


def timed_solve(problem, config: SolverConfig, device: torch.device) -> tuple[Any, float, list[int]]:
    """The last record, the wall-clock and the window size (timesteps) of every iteration."""
    windows = []
    with Clock(device) as clock:
        last = None
        for last in solve(problem, config):
            windows.append(last.window[1] - last.window[0])
    return last, clock.seconds, windows


def runs(
    name: str, model, steps_list: list[int], iterations: dict, table: LatencyTable
) -> list[dict[str, Any]]:
    """Sequential and ParaTAA wall-clock; fills ``iterations`` from shapes-unet, reads it otherwise.

    Each run also gets the wall-clock that ``paratta.planning.latency.project`` predicts from the table just
    measured (network calls only), so the app's projection is checked against a measurement."""
    out = []
    warm = make_problem(model, Request(PROMPTS[name], seed=1, steps=10, guidance=3.0))
    timed_solve(warm, SolverConfig(), model.device)  # untimed: lazy CUDA initialisation, allocator
    for T in steps_list:
        problem = make_problem(model, Request(PROMPTS[name], seed=0, steps=T, guidance=3.0))
        with Clock(model.device) as clock:
            reference = sample_sequential(problem, dtype=torch.float32)[0]
        seq_s = clock.seconds
        out.append({"model": name, "steps": T, "solver": "sequential", "window": 1, "iterations": T,
                    "seconds": round(seq_s, 4), "peak_mib": clock.peak_mib,
                    "projected_seconds": round(project(table, [], T, 3.0).sequential_s, 4)})  # fmt: skip
        for W in sorted({T, max(1, T // 2), max(1, T // 4)}, reverse=True):
            fixed = name != "shapes-unet"
            budget = iterations.get((T, W)) if fixed else None
            if fixed and budget is None:
                continue
            # Random weights: tol 1e-12 keeps every window full for exactly ``budget`` iterations.
            config = SolverConfig(window=W, max_iters=budget, tol=1e-12 if fixed else 1e-3)
            try:
                last, seconds, windows = timed_solve(problem, config, model.device)
            except (FloatingPointError, MemoryError) as err:  # random weights may overflow in fp16; OOM
                out.append({"model": name, "steps": T, "window": W, "error": str(err)})
                print(json.dumps(out[-1]), flush=True)
                continue
            if not fixed:
                iterations[(T, W)] = last.iteration
            solver_s = seconds - last.model_seconds
            gap = distance(last.x0.float(), reference.float())
            out.append({"model": name, "steps": T, "solver": "anderson", "window": W,
                        "iterations": last.iteration, "converged": bool(last.converged),
                        "fixed_iterations": fixed, "seconds": round(seconds, 4),
                        "seconds_per_iteration": round(seconds / last.iteration, 5),
                        "network_seconds": round(last.model_seconds, 4),
                        "speedup_wall_clock": round(seq_s / seconds, 3),
                        "rms_to_sequential": gap if not fixed else None,
                        "projected_seconds": round(project(table, windows, T, 3.0).parallel_s, 4),
                        "solver_ms_per_iteration": round(1e3 * solver_s / last.iteration, 3),
                        "peak_mib": clock_peak(model.device)})  # fmt: skip
            print(json.dumps(out[-1]), flush=True)
    return out


def clock_peak(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None


def markdown(summary: dict[str, Any]) -> str:
    """docs/gpu.md's tables from a saved ``--json`` run: latency by batch rows, then the runs."""
    models = summary["latency"]["models"]
    sizes = sorted({r for m in models.values() for r in m["rows"]})
    head = "| rows per call | " + " | ".join(f"{name} ({m['dtype']})" for name, m in models.items()) + " |"
    lines = [f"Measured on {summary['machine']}.", "", head, "|---" * (len(models) + 1) + "|"]
    for r in sizes:
        cells = [f"{m['ms'][m['rows'].index(r)]:.1f}" if r in m["rows"] else "—" for m in models.values()]
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    lines += ["", "| model | T | solver | W | iterations | wall-clock s | vs sequential | projected s | "
              "solver ms/iter | peak MiB |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in summary["runs"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['steps']} | — | {r['window']} | {r['error']} |||||")
            continue
        its = f"{r['iterations']}{' (fixed)' if r.get('fixed_iterations') else ''}"
        speed = f"{r['speedup_wall_clock']:.2f}×" if "speedup_wall_clock" in r else "1×"
        peak = f"{r['peak_mib']:.0f}" if r.get("peak_mib") else "—"
        solver = f"{r['solver_ms_per_iteration']:.1f}" if "solver_ms_per_iteration" in r else "—"
        cells = [r["model"], r["steps"], r["solver"], r["window"], its, f"{r['seconds']:.3f}", speed,
                 f"{r['projected_seconds']:.3f}", solver, peak]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", nargs="+", default=["shapes-unet", "sd15-unet", "dit-xl-2-256"])
    p.add_argument("--steps", nargs="+", type=int, default=[50, 100])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="small sizes (CPU check of the script)")
    p.add_argument("--table", type=Path, help="write the latency table (the app's projection reads it)")
    p.add_argument("--json", type=Path, help="write every measurement")
    p.add_argument("--markdown", type=Path, help="print the tables of a saved --json run, measure nothing")
    args = p.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    steps_list = [10] if args.quick else args.steps
    started = time.perf_counter()
    table: dict[str, Any] = {
        "device": machine(device),
        "date": time.strftime("%Y-%m-%d"),
        "source": "benchmarks/gpu_latency.py",
        "models": {},
    }
    results: list[dict[str, Any]] = []
    iterations: dict[tuple[int, int], int] = {}
    for name in args.models:
        t0 = time.perf_counter()
        # The 1.1 M-parameter UNet is launch-bound: float32 costs no time and keeps its iterates as
        # exact as on a CPU (in float16 its ε wobbles by ~1e-3, the size of the default budget).
        model_dtype = torch.float32 if name == "shapes-unet" else dtype
        model = build(name, device, model_dtype, args.quick)
        cond = model.encode(PROMPTS[name], "")
        lat = latency_table(model, cond, steps_list, args.repeats)
        table["models"][name] = {"description": DESCRIPTIONS[name], "aliases": ALIASES[name],
                                 "dtype": str(model_dtype).removeprefix("torch."), **lat}  # fmt: skip
        print(
            json.dumps({"model": name, **lat, "build_and_scan_s": round(time.perf_counter() - t0, 1)}),
            flush=True,
        )
        measured = LatencyTable(name, table["device"], tuple(lat["rows"]), tuple(lat["ms"]))
        results += runs(name, model, steps_list, iterations, measured)
        del model, cond
        if device.type == "cuda":
            torch.cuda.empty_cache()
    summary = {"machine": table["device"], "latency": table, "runs": results,
               "total_s": round(time.perf_counter() - started, 1)}  # fmt: skip
    if args.table:
        args.table.parent.mkdir(parents=True, exist_ok=True)
        args.table.write_text(json.dumps(table, indent=1) + "\n")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"done in {summary['total_s']} s on {table['device']}")


if __name__ == "__main__":
    main()
