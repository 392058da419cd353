"""Wall-clock of sequential DDIM vs ParaTAA (Jacobi, Anderson) on a Stable-Diffusion-1.5-sized network.

The UNet, VAE and text encoder are built from the SD 1.5 configs written out below with random
weights (nothing is downloaded): a random UNet draws garbage but costs exactly what the trained
one costs per call. Its fixed-point iteration does not converge like a trained model's, so
``--fixed-iters N`` times exactly N parallel iterations; the "break-even" column says how many
parallel iterations fit in one sequential run (ParaTAA wins when it needs fewer; the paper's
reference SD runs need about 7–18 at T = 50–100).

Two tables: the batch scan (one guided network call with W timesteps = 2W rows: its time and
peak memory, up to the largest window that fits) and the solver runs.

    python benchmarks/sd_speed.py                  # CUDA fp16 when available, T = 50 and 100
    python benchmarks/sd_speed.py --fixed-iters 10 --windows 16 32 50 100
    python benchmarks/sd_speed.py --tiny           # the tiny test pipeline on CPU, under a minute
    python benchmarks/sd_speed.py --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from paratta import Request, SolverConfig, make_problem, run, sample_sequential  # noqa: E402
from paratta.metrics import distance  # noqa: E402
from paratta.models.diffusers.base import ModelOutOfMemoryError  # noqa: E402
from paratta.tools.machine import machine  # noqa: E402

# Stable Diffusion v1.5 (runwayml/stable-diffusion-v1-5), written out so nothing is fetched.
SD15_UNET: dict[str, Any] = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    flip_sin_to_cos=True,
    freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    downsample_padding=1,
    mid_block_scale_factor=1,
    act_fn="silu",
    norm_num_groups=32,
    norm_eps=1e-5,
    cross_attention_dim=768,
    attention_head_dim=8,
)
SD15_VAE: dict[str, Any] = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)
SD15_TEXT: dict[str, Any] = dict(  # CLIP ViT-L/14 text tower
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
    bos_token_id=0,
    eos_token_id=1,
    pad_token_id=1,
)
SD15_SCHEDULER: dict[str, Any] = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
)


def build_sd15(device: torch.device, dtype: torch.dtype):
    """SD 1.5-sized StableDiffusionModel with random weights, initialised directly on ``device``."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from paratta.models.diffusers.sd import StableDiffusionModel
    from paratta.models.diffusers.tiny import tiny_tokenizer

    torch.manual_seed(0)
    with torch.device(device):  # random init on the GPU takes seconds, on the CPU a minute
        unet = UNet2DConditionModel(**SD15_UNET).to(dtype).eval()
        vae = AutoencoderKL(**SD15_VAE).to(dtype).eval()
        text_encoder = CLIPTextModel(CLIPTextConfig(**SD15_TEXT)).to(dtype).eval()
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tiny_tokenizer(),  # ids < 49408; the tokenizer does not change the UNet's cost
        unet=unet,
        scheduler=DDIMScheduler(**SD15_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return StableDiffusionModel(pipe, device=device, dtype=dtype, name="sd15-random")


def build_tiny(device: torch.device, dtype: torch.dtype):
    from paratta.models.diffusers.sd import StableDiffusionModel
    from paratta.models.diffusers.tiny import tiny_sd_pipeline

    return StableDiffusionModel(tiny_sd_pipeline(sample_size=8), device=device, dtype=dtype, name="tiny-sd")


class Clock:
    """Wall-clock with CUDA synchronisation and peak-memory tracking (MiB; None on CPU)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __enter__(self) -> Clock:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.start
        self.peak_mib = torch.cuda.max_memory_allocated() / 2**20 if self.cuda else None


def batch_scan(model, cond, guidance: float, windows: list[int], repeats: int) -> list[dict[str, Any]]:
    """Time one guided call with W timesteps (2W rows) for growing W; stop at the first out-of-memory."""
    rows = []
    device = model.device
    for w in windows:
        x = torch.randn((w, *model.latent_shape), device=device, dtype=model.dtype)
        t = torch.linspace(999, 1, w, device=device).long()
        try:
            with torch.inference_mode():
                model.predict(x, t, cond, guidance)  # warm-up (kernel selection, allocator)
                times = []
                for _ in range(repeats):
                    with Clock(device) as clock:
                        model.predict(x, t, cond, guidance)
                    times.append(clock.seconds)
        except ModelOutOfMemoryError:
            rows.append({"window": w, "fits": False})
            break
        best = min(times)
        rows.append(
            {"window": w, "fits": True, "call_s": best, "per_step_s": best / w, "peak_mib": clock.peak_mib}
        )
        del x
    return rows


def solver_runs(model, args: argparse.Namespace, steps: int) -> list[dict[str, Any]]:
    request = Request(
        prompt="a photograph of an astronaut riding a horse", seed=0, steps=steps, guidance=args.guidance
    )
    problem = make_problem(model, request)
    with Clock(model.device) as clock:
        reference = sample_sequential(problem, dtype=torch.float64)[0]
    seq_s = clock.seconds
    out = [
        dict(
            steps=steps,
            solver="sequential",
            window=1,
            order=1,
            iters=steps,
            converged=True,
            total_s=seq_s,
            per_iter_s=seq_s / steps,
            speedup=1.0,
            breakeven_iters=float(steps),
            peak_mib=clock.peak_mib,
            rms_vs_seq=0.0,
        )
    ]
    for window in [w for w in args.windows if w <= steps]:
        for solver in args.solvers:
            fixed = args.fixed_iters is not None
            config = SolverConfig(
                solver=solver,
                window=window,
                order=min(args.order, window),
                tol=1e-12 if fixed else args.tol,  # fixed: nothing converges early, exactly N iterations
                max_iters=min(args.fixed_iters, steps) if fixed else None,
                max_batch=args.max_batch,
            )
            try:
                with Clock(model.device) as clock:
                    last = run(problem, config)
            except ModelOutOfMemoryError as error:
                out.append(dict(steps=steps, solver=solver, window=window, error=str(error)))
                continue
            per_iter = clock.seconds / last.iteration
            out.append(
                dict(
                    steps=steps,
                    solver=solver,
                    window=window,
                    order=config.order,
                    iters=last.iteration,
                    converged=last.converged,
                    total_s=clock.seconds,
                    per_iter_s=per_iter,
                    speedup=seq_s / clock.seconds,
                    breakeven_iters=seq_s / per_iter,
                    peak_mib=clock.peak_mib,
                    rms_vs_seq=distance(last.x0, reference),
                )
            )
    return out


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def print_tables(result: dict[str, Any]) -> None:
    print(
        f"# {result['model']} on {result['machine']}, dtype {result['dtype']}, guidance {result['guidance']}"
    )
    print("\n## one guided call with W timesteps (2W rows)")
    print(f"{'W':>5} {'call s':>9} {'s/step':>9} {'peak MiB':>9}")
    for r in result["batch_scan"]:
        if r["fits"]:
            print(f"{r['window']:>5} {r['call_s']:>9.4f} {r['per_step_s']:>9.5f} {_mib(r['peak_mib']):>9}")
        else:
            print(f"{r['window']:>5} {'out of memory':>29}")
    print(f"largest window that fits: {result['largest_window']}")
    print("\n## solvers" + (f" (fixed {result['fixed_iters']} iterations)" if result["fixed_iters"] else ""))
    head = f"{'T':>4} {'solver':>10} {'W':>4} {'k':>3} {'iters':>5} {'conv':>5} {'total s':>8} {'s/iter':>8}"
    print(head + f" {'speedup':>7} {'break-even':>10} {'peak MiB':>9} {'RMS vs seq':>10}")
    for r in result["runs"]:
        if "error" in r:
            print(f"{r['steps']:>4} {r['solver']:>10} {r['window']:>4}  {r['error']}")
            continue
        print(
            f"{r['steps']:>4} {r['solver']:>10} {r['window']:>4} {r['order']:>3} {r['iters']:>5} "
            f"{'yes' if r['converged'] else 'no':>5} {r['total_s']:>8.3f} {r['per_iter_s']:>8.4f} "
            f"{r['speedup']:>7.2f} {r['breakeven_iters']:>10.1f} {_mib(r['peak_mib']):>9} "
            f"{r['rms_vs_seq']:>10.2e}"
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tiny", action="store_true", help="tiny test pipeline on CPU (runs anywhere, < 1 min)"
    )
    parser.add_argument("--steps", type=int, nargs="+", default=[50, 100], help="T values")
    parser.add_argument("--windows", type=int, nargs="+", help="ParaTAA windows (default 8 16 32 50 100)")
    parser.add_argument("--solvers", nargs="+", default=["jacobi", "anderson"])
    parser.add_argument("--order", type=int, default=20, help="order k (clamped to the window)")
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--fixed-iters", type=int, help="time exactly N parallel iterations")
    parser.add_argument("--max-batch", type=int, help="timesteps per network call")
    parser.add_argument("--scan", type=int, nargs="+", help="windows for the batch scan (default 8…256)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per batch-scan point")
    parser.add_argument("--device", help="default: cuda when available (cpu with --tiny)")
    parser.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], help="default: fp16 on CUDA")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default 1 with --tiny: shared CPUs)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args(argv)
    if args.threads or args.tiny:
        torch.set_num_threads(args.threads or 1)
    args.windows = args.windows or [8, 16, 32, 50, 100]
    scan = args.scan or [8, 16, 32, 50, 64, 100, 128, 200, 256]
    default_device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    device = torch.device(args.device or default_device)
    dtype = (
        getattr(torch, args.dtype)
        if args.dtype
        else (torch.float16 if device.type == "cuda" else torch.float32)
    )
    warnings.filterwarnings("ignore", category=FutureWarning)
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()

    started = time.perf_counter()
    model = (build_tiny if args.tiny else build_sd15)(device, dtype)
    cond = model.encode("a photograph of an astronaut riding a horse")
    scan_rows = batch_scan(model, cond, args.guidance, scan, args.repeats)
    fitting = [r["window"] for r in scan_rows if r["fits"]]
    result: dict[str, Any] = {
        "model": model.name,
        "machine": machine(device),
        "dtype": str(dtype).replace("torch.", ""),
        "latent_shape": list(model.latent_shape),
        "guidance": args.guidance,
        "fixed_iters": args.fixed_iters,
        "batch_scan": scan_rows,
        "largest_window": max(fitting) if fitting else 0,
        "runs": [row for steps in args.steps for row in solver_runs(model, args, steps)],
    }
    result["seconds"] = time.perf_counter() - started
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_tables(result)
        print(f"\n(total {result['seconds']:.1f} s)")
    return result


if __name__ == "__main__":
    main()
