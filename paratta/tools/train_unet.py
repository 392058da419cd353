"""Train the shapes UNet (``paratta.models.unet``) on procedurally drawn, jittered shapes, on CPU.

    python -m paratta.tools.train_unet --steps 3000 --batch 64 --seed 0 --threads 1 \\
        --time-limit-minutes 60 --out paratta/models/weights/shapes_unet.safetensors
    python -m paratta.tools.train_unet --grid docs/unet_grid.png      # sample grid from the committed weights

Objective: DDPM's denoising regression with the embedded scheduler's betas (ᾱ from
``paratta.schedule``) and uniform t ∈ [0, 1000). ``--prediction epsilon`` is the plain ε-MSE;
``--prediction v_prediction`` (the default) regresses v = √ᾱ ε − √(1−ᾱ) x_0 instead, i.e. the
ε-MSE weighted by 1/ᾱ = 1 + 1/SNR: the same weight as ε-MSE where the noise is small, much more
where it is large. On a CPU budget of a few thousand steps this is what makes the background and
shape colours follow the prompt: the first DDIM steps (t ≈ 980, √ᾱ ≈ 0.007) turn ε̂ into x̂_0 by
dividing by √ᾱ, so an ε-network must be very precise there, while a v-network's x̂_0 is simply
−v̂. Either way the model hands ε̂ to the sampler (``network_output_to_eps``).

Every step draws a fresh batch from ``shapes_dataset(n=batch, seed=seed·1_000_003 + step)``.
Classifier-free-guidance dropout: each attribute is replaced by "unspecified" with probability
``--p-drop``, and all of them with ``--p-drop-all``. AdamW with a linear warm-up then a constant
learning rate; the EMA of the weights is what gets saved, every ``--checkpoint-minutes`` (temp
file, then rename), with a JSON beside it recording the command, seed, steps reached and losses
(and, with ``--init``, the metadata of the run it started from). Deterministic given the seed,
the thread count and the step count (``--time-limit-minutes`` makes the last one time-dependent;
the JSON records the steps reached, so ``--steps N`` reproduces a run).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from paratta.models.mixture import embedded_scheduler_config
from paratta.models.shapes import CATEGORIES, shapes_dataset
from paratta.models.unet import (
    ATTRIBUTE_VALUES,
    UNET_CONFIG,
    WEIGHTS_PATH,
    ShapesUNetNetwork,
    condition_dim,
    network_output_to_eps,
)
from paratta.samplers.ddim import DDIMConfig
from paratta.samplers.grids import alphas_cumprod

DATA_SEED_STRIDE = 1_000_003
EVAL_SEED = 987_654_321


def attribute_indices(attrs: list[dict[str, str]]) -> Tensor:
    """Attribute dicts → table indices (n, 5) in ``CATEGORIES`` order."""
    rows = [[ATTRIBUTE_VALUES[c].index(a[c]) for c in CATEGORIES] for a in attrs]
    return torch.tensor(rows, dtype=torch.long)


def drop_attributes(idx: Tensor, p_drop: float, p_drop_all: float, generator: torch.Generator) -> Tensor:
    """Classifier-free-guidance dropout: attributes → "unspecified" independently (p) and all at once."""
    unspecified = torch.tensor([len(ATTRIBUTE_VALUES[c]) for c in CATEGORIES], dtype=torch.long)
    drop = torch.rand(idx.shape, generator=generator) < p_drop
    drop |= torch.rand(idx.shape[0], 1, generator=generator) < p_drop_all
    return torch.where(drop, unspecified.expand_as(idx), idx)


def noised_batch(
    x0: Tensor, alpha_bar: Tensor, generator: torch.Generator, t: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """(x_t, t, ε) with x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε and t uniform over the training timesteps."""
    n = x0.shape[0]
    if t is None:
        t = torch.randint(alpha_bar.shape[0], (n,), generator=generator)
    eps = torch.randn(x0.shape, generator=generator)
    ab = alpha_bar[t].float().view(n, 1, 1, 1)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * eps, t, eps


def target(x0: Tensor, eps: Tensor, alpha_bar: Tensor, prediction: str) -> Tensor:
    """Regression target of the network output: ε, or v = √ᾱ ε − √(1−ᾱ) x_0 (Salimans & Ho 2022)."""
    if prediction == "epsilon":
        return eps
    ab = alpha_bar.float().view(-1, 1, 1, 1)
    return ab.sqrt() * eps - (1 - ab).sqrt() * x0


def save_weights(network: ShapesUNetNetwork, path: Path, metadata: dict[str, Any]) -> None:
    """Weights (safetensors) and the JSON beside them, each written to a temp file and renamed."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().contiguous().clone() for k, v in network.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    meta_path = path.with_suffix(".json")
    tmp_meta = meta_path.with_name(meta_path.name + ".tmp")
    tmp_meta.write_text(json.dumps(metadata, indent=2) + "\n")
    os.replace(tmp_meta, meta_path)


@torch.no_grad()
def evaluate(
    network: ShapesUNetNetwork, alpha_bar: Tensor, prediction: str, n: int = 256, chunk: int = 64
) -> float:
    """ε-MSE (of ε̂, whatever the network predicts) on a fixed held-out batch, all attributes given."""
    g = torch.Generator().manual_seed(EVAL_SEED)
    images, _, attrs = shapes_dataset(n=n, seed=EVAL_SEED)
    idx = attribute_indices(attrs)
    t = torch.linspace(0, alpha_bar.shape[0] - 1, n).round().long()
    xt, t, eps = noised_batch(images, alpha_bar, g, t)
    total = 0.0
    for s in range(0, n, chunk):
        out = network(xt[s : s + chunk], t[s : s + chunk], idx[s : s + chunk])
        pred = network_output_to_eps(out, xt[s : s + chunk], alpha_bar[t[s : s + chunk]], prediction)
        total += float((pred - eps[s : s + chunk]).pow(2).sum())
    return total / eps.numel()


def train(args: argparse.Namespace) -> Path:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    torch.manual_seed(args.seed)
    network = ShapesUNetNetwork(UNET_CONFIG)
    init_metadata: dict[str, Any] | None = None
    if args.init:
        from safetensors.torch import load_file

        network.load_state_dict(load_file(args.init))
        init_json = Path(args.init).with_suffix(".json")
        init_metadata = {"path": str(args.init)}
        if init_json.is_file():
            previous = json.loads(init_json.read_text())
            init_metadata["network_prediction"] = previous.get("network_prediction", "epsilon")
            init_metadata["training"] = {k: v for k, v in previous["training"].items() if k != "loss_curve"}
            init_metadata["loss_curve"] = previous["training"].get("loss_curve")
        print(f"initialised from {args.init}", flush=True)
    ema = copy.deepcopy(network).requires_grad_(False)
    network.train()
    ema.eval()
    n_params = sum(p.numel() for p in network.parameters())
    alpha_bar = alphas_cumprod(DDIMConfig.from_dict(embedded_scheduler_config()))
    opt = torch.optim.AdamW(network.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    g = torch.Generator().manual_seed(args.seed)
    command = "python -m paratta.tools.train_unet " + " ".join(sys.argv[1:])
    print(f"training shapes-unet: {n_params} parameters, {args.threads} thread(s); {command}", flush=True)

    stop = {"flag": False}

    def on_signal(signum: int, frame: Any) -> None:
        print(f"signal {signum}: saving and stopping", flush=True)
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    start = time.perf_counter()
    last_save = start
    curve: list[tuple[int, float]] = []
    window: list[float] = []
    smoothed = float("nan")
    step = 0

    def metadata(final: bool) -> dict[str, Any]:
        eval_loss = evaluate(ema, alpha_bar, args.prediction)
        print(f"step {step}: eval ε-MSE (EMA weights) {eval_loss:.4f}", flush=True)
        return {
            "model": "shapes-unet",
            "unet_config": {k: list(v) if isinstance(v, tuple) else v for k, v in UNET_CONFIG.items()},
            "condition_dim": condition_dim(UNET_CONFIG),
            "network_prediction": args.prediction,
            "attribute_values": {c: list(v) for c, v in ATTRIBUTE_VALUES.items()},
            "scheduler_config": embedded_scheduler_config(),
            "parameters": n_params,
            "training": {
                "command": command,
                "seed": args.seed,
                "batch": args.batch,
                "lr": args.lr,
                "warmup_steps": args.warmup,
                "weight_decay": args.weight_decay,
                "ema_decay": args.ema_decay,
                "p_drop": args.p_drop,
                "p_drop_all": args.p_drop_all,
                "threads": args.threads,
                "max_steps": args.steps,
                "steps": step,
                "finished": final,
                "minutes": round((time.perf_counter() - start) / 60, 2),
                "final_train_loss": smoothed,
                "final_eval_loss_ema_weights": eval_loss,
                "loss_curve": curve,
                "init": init_metadata,
            },
        }

    while step < args.steps and not stop["flag"]:
        if args.time_limit_minutes and time.perf_counter() - start > 60 * args.time_limit_minutes:
            print("time limit reached", flush=True)
            break
        lr = args.lr * min(1.0, (step + 1) / max(args.warmup, 1))
        for group in opt.param_groups:
            group["lr"] = lr
        images, _, attrs = shapes_dataset(n=args.batch, seed=args.seed * DATA_SEED_STRIDE + step)
        idx = drop_attributes(attribute_indices(attrs), args.p_drop, args.p_drop_all, g)
        xt, t, eps = noised_batch(images, alpha_bar, g)
        loss = (network(xt, t, idx) - target(images, eps, alpha_bar[t], args.prediction)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        opt.step()
        step += 1
        decay = min(args.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), network.parameters(), strict=True):
                pe.lerp_(p, 1 - decay)
        window.append(float(loss.detach()))
        if step % args.log_every == 0:
            smoothed = sum(window) / len(window)
            curve.append((step, round(smoothed, 5)))
            window.clear()
            elapsed = time.perf_counter() - start
            rate = f"{elapsed / step:.2f} s/step, {elapsed / 60:.1f} min"
            print(f"step {step} loss {smoothed:.4f} lr {lr:.1e} ({rate})", flush=True)
        if time.perf_counter() - last_save > 60 * args.checkpoint_minutes:
            save_weights(ema, out, metadata(final=False))
            last_save = time.perf_counter()
            print(f"checkpoint saved at step {step} → {out}", flush=True)
    if window and (len(window) >= args.log_every // 2 or not curve):
        smoothed = sum(window) / len(window)  # else keep the last full window's mean (a 2-step mean is noise)
    save_weights(ema, out, metadata(final=True))
    print(f"done: {step} steps in {(time.perf_counter() - start) / 60:.1f} min → {out}", flush=True)
    return out


GRID_PROMPTS = (
    "a red circle",
    "a large blue square on a white background",
    "a green triangle on the left",
    "a small yellow cross at the top on a gray background",
)


@torch.no_grad()
def sample_grid(
    path: str | Path,
    prompts: tuple[str, ...] = GRID_PROMPTS,
    seeds: int = 6,
    steps: int = 50,
    guidance: float = 3.0,
    weights: str | Path = WEIGHTS_PATH,
    scale: int = 4,
) -> Path:
    """A PNG grid (rows = prompts, columns = seeds) of DDIM samples, upscaled ×scale, captioned.

    Each row is one batched sequential DDIM run over the seeds: the same x_T (``draw_noise``)
    and the same steps (``Schedule.step``) as ``paratta.sequential.sample_sequential``.
    """
    import numpy as np
    from PIL import Image, ImageDraw

    from paratta.models.unet import build_shapes_unet_model
    from paratta.problem import draw_noise
    from paratta.samplers import coefficients

    model = build_shapes_unet_model(weights=weights)
    coef = coefficients(model.scheduler_config, steps)  # DDIM: one row per step
    no_draws = torch.zeros(steps, dtype=torch.bool)
    x_T = torch.stack([draw_noise(seed, model.latent_shape, no_draws)[0] for seed in range(seeds)])
    rows = []
    for prompt in prompts:
        cond, x = model.encode(prompt), x_T.double()
        for i in reversed(range(steps)):
            idx = torch.full((seeds,), i)
            f = coef.features(idx, x, model.predict(x, coef.timesteps[idx], cond, guidance))
            x = coef.p[i] * x + coef.w[i, 0] * f
        rows.append(model.decode(x))
    pad, label_h, cell = 4, 14, 32 * scale
    width = seeds * (cell + pad) + pad
    height = len(prompts) * (cell + pad + label_h) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, (prompt, row) in enumerate(zip(prompts, rows, strict=True)):
        y = pad + r * (cell + pad + label_h)
        draw.text((pad, y), f'"{prompt}"  (guidance {guidance:g}, {steps} DDIM steps)', fill=(0, 0, 0))
        for c, img in enumerate(row):
            arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            tile = Image.fromarray(arr).resize((cell, cell), Image.NEAREST)
            canvas.paste(tile, (pad + c * (cell + pad), y + label_h))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m paratta.tools.train_unet", description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=100_000, help="maximum number of optimiser steps")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(WEIGHTS_PATH), help="safetensors path (a .json is written beside it)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=200, help="linear warm-up steps, then constant lr")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--p-drop", type=float, default=0.3, help="per-attribute CFG dropout probability")
    p.add_argument("--p-drop-all", type=float, default=0.1, help="probability of dropping all attributes")
    p.add_argument(
        "--prediction",
        choices=("epsilon", "v_prediction"),
        default="v_prediction",
        help="what the network outputs (the model always returns ε̂ to the sampler)",
    )
    p.add_argument("--init", default=None, help="start from these weights (safetensors) instead of random")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--time-limit-minutes", type=float, default=0.0, help="stop and save after (0: never)")
    p.add_argument("--checkpoint-minutes", type=float, default=5.0)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--grid", default=None, help="only write a sample grid PNG from the weights at --out")
    args = p.parse_args(argv)
    if args.grid:
        torch.set_num_threads(args.threads)
        print(sample_grid(args.grid, weights=args.out))
        return
    if not math.isfinite(args.lr) or args.lr <= 0:
        p.error("--lr must be positive")
    train(args)


if __name__ == "__main__":
    main()
