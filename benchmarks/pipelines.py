"""Pipeline × sampler: is ``ParaTAAPipeline`` exact against ``pipe(...)``, in how many parallel iterations,
or refused, and why. The table of docs/diffusers.md.

For each pipeline class paratta serves (its tiny random-weight build, ``paratta.models.diffusers.tiny``)
and each scheduler a user may set on it, at a non-square size, T steps, guidance 4 and a seeded
generator: ``pipe(..., output_type="latent")``, then the wrapper's sequential solver (its largest
deviation, relative to the largest latent value) and its default ParaTAA (parallel iterations, the RMS
distance of x_0 to the pipeline's, against the stopping rule's tol). A scheduler the wrapper refuses
is listed with the reason it gives. Random weights: a check of exactness and of the refusals, not a
forecast of the iterations of trained models.

    python benchmarks/pipelines.py                 # T = 20, markdown on stdout
    python benchmarks/pipelines.py --steps 10 --pipelines sd wan
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import (  # noqa: E402
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    HeunDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.utils import logging as diffusers_logging  # noqa: E402
from PIL import Image  # noqa: E402

from paratta import ParaTAAPipeline  # noqa: E402
from paratta.models.diffusers import tiny  # noqa: E402
from paratta.tools.machine import machine  # noqa: E402

PROMPT = "a red cat on a mat"
IMAGE = Image.fromarray((np.random.default_rng(0).random((24, 16, 3)) * 255).astype(np.uint8))
# name → (builder, the call's arguments, kind: what its network predicts)
PIPELINES: dict[str, tuple[Callable[[], Any], dict[str, Any], str]] = {
    "StableDiffusionPipeline": (tiny.tiny_sd_pipeline, {"height": 24, "width": 16}, "ddim"),
    "StableDiffusionXLPipeline": (tiny.tiny_sdxl_pipeline, {"height": 24, "width": 16}, "ddim"),
    "StableDiffusionImg2ImgPipeline": (
        tiny.tiny_sd_img2img_pipeline, {"image": IMAGE, "strength": 0.7}, "ddim",
    ),
    "StableDiffusionXLImg2ImgPipeline": (
        tiny.tiny_sdxl_img2img_pipeline, {"image": IMAGE, "strength": 0.7}, "ddim",
    ),
    "DiTPipeline": (tiny.tiny_dit_pipeline, {"class_labels": [207]}, "ddim"),
    "PixArtSigmaPipeline": (
        tiny.tiny_pixart_pipeline, {"height": 48, "width": 32, "use_resolution_binning": False}, "ddim",
    ),
    "PixArtAlphaPipeline": (
        lambda: tiny.tiny_pixart_pipeline(sigma=False),
        {"height": 48, "width": 32, "use_resolution_binning": False}, "ddim",
    ),
    "StableDiffusion3Pipeline": (tiny.tiny_sd3_pipeline, {"height": 24, "width": 16}, "flow"),
    "StableDiffusion3Pipeline (SD 3.5)": (
        lambda: tiny.tiny_sd3_pipeline(large=True), {"height": 24, "width": 16}, "flow",
    ),
    "FluxPipeline": (tiny.tiny_flux_pipeline, {"height": 24, "width": 16}, "flow"),
    "SanaPipeline": (
        tiny.tiny_sana_pipeline,
        {"height": 128, "width": 64, "use_resolution_binning": False, "complex_human_instruction": None},
        "flow",
    ),
    "WanPipeline": (tiny.tiny_wan_pipeline, {"height": 48, "width": 32, "num_frames": 5}, "flow"),
}  # fmt: skip
# kind → (sampler as people name it, the scheduler built from the pipeline's own)
SAMPLERS: dict[str, list[tuple[str, Callable[[Any], Any]]]] = {
    "ddim": [
        ("DDIM", lambda s: DDIMScheduler.from_config(s.config)),
        ("Euler", lambda s: EulerDiscreteScheduler.from_config(s.config)),
        ("Euler a", lambda s: EulerAncestralDiscreteScheduler.from_config(s.config)),
        ("Heun", lambda s: HeunDiscreteScheduler.from_config(s.config)),
        ("DPM++ 2M", lambda s: DPMSolverMultistepScheduler.from_config(s.config)),
        ("DPM++ 2M Karras",
         lambda s: DPMSolverMultistepScheduler.from_config(s.config, use_karras_sigmas=True)),
        ("UniPC", lambda s: UniPCMultistepScheduler.from_config(s.config)),
        ("PNDM", lambda s: PNDMScheduler.from_config(s.config)),
        ("LMS", lambda s: LMSDiscreteScheduler.from_config(s.config)),
    ],
    "flow": [
        ("flow Euler", lambda s: FlowMatchEulerDiscreteScheduler.from_config(s.config) if "shift" in s.config
         else FlowMatchEulerDiscreteScheduler(shift=s.config.get("flow_shift", 3.0))),
        ("DPM++ 2M on flow σ", lambda s: DPMSolverMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)),
        ("UniPC on flow σ", lambda s: UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)),
        ("flow Heun", lambda s: FlowMatchHeunDiscreteScheduler(shift=3.0)),
    ],
}  # fmt: skip


def run(pipe: Any, arguments: dict[str, Any], steps: int, **settings: Any) -> Any:
    text = {} if "class_labels" in arguments else {"prompt": PROMPT}
    output = {"output_type": "pt" if "class_labels" in arguments else "latent"}  # DiT returns no latents
    common = dict(num_inference_steps=steps, guidance_scale=4.0, generator=torch.Generator().manual_seed(0))
    if settings:
        return ParaTAAPipeline.from_pipe(pipe, **settings)(**text, **arguments, **common, **output)
    out = pipe(**text, **arguments, **common, **output)
    return out.frames if hasattr(out, "frames") else out.images


def measure(pipe: Any, arguments: dict[str, Any], steps: int) -> tuple[str, float, float, float] | str:
    """(``"k/T"``, sequential deviation, ParaTAA's RMS gap, its tol), or the reason the wrapper refuses."""
    try:
        sequential = run(pipe, arguments, steps, solver="sequential")  # a refusal comes before any run
        expected = run(pipe, arguments, steps)
        parataa = run(pipe, arguments, steps, solver="anderson")
    except ValueError as error:  # "<Pipeline>'s scheduler <Class>: <the reason>"
        text = str(error)
        if "'s scheduler " in text:
            text = text.split(": ", 1)[1]
        return text.split(" (the sampler setting offers")[0]
    deviation = float((sequential.images - expected).abs().max()) / float(expected.abs().max())
    gap = float((parataa.images.double() - expected.double()).pow(2).mean().sqrt())
    if not (deviation <= 1e-4 and parataa.converged and gap <= parataa.tol):
        raise AssertionError(f"not exact: deviation {deviation:.1e}, gap {gap:.1e} (tol {parataa.tol:.0e})")
    return f"{parataa.iterations}/{parataa.steps}", deviation, gap, parataa.tol


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--pipelines", nargs="+", default=list(PIPELINES), help="names as in the table")
    args = p.parse_args()
    torch.set_num_threads(1)
    diffusers_logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    print(f"machine: {machine()}; T = {args.steps}, guidance 4, seed 0; tiny random-weight pipelines\n")
    reasons: dict[str, str] = {}
    deviations, gaps = [], []
    for kind in ("ddim", "flow"):
        names = [n for n in args.pipelines if PIPELINES[n][2] == kind]
        if not names:
            continue
        samplers = [s for s, _ in SAMPLERS[kind]]
        print("| pipeline | " + " | ".join(samplers) + " |\n|---|" + "---|" * len(samplers), flush=True)
        for name in names:
            build, arguments, _ = PIPELINES[name]
            pipe = build()
            pipe.set_progress_bar_config(disable=True)
            shipped, cells = pipe.scheduler, []
            for _, make in SAMPLERS[kind]:
                pipe.scheduler = make(shipped)
                keys = ("use_flow_sigmas", "use_karras_sigmas")
                own = type(pipe.scheduler) is type(shipped) and all(
                    pipe.scheduler.config.get(k) == shipped.config.get(k) for k in keys
                )
                found = measure(pipe, arguments, args.steps)
                if isinstance(found, str):
                    text = f"✗ {reasons.setdefault(found, chr(ord('a') + len(reasons)))}"
                else:
                    text = found[0]
                    deviations.append(found[1])
                    gaps.append(found[2] / found[3])
                cells.append(f"**{text}**" if own else text)
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
        print()
    print(
        f"k/T: exact, in k parallel iterations of T steps (img2img: the last ⌊T · 0.7⌋); **bold**: the "
        f"scheduler the pipeline ships. Sequential: at most {max(deviations):.1e} of the largest latent "
        f"from pipe(...); ParaTAA: at most {max(gaps):.2f} × its tol (RMS of x_0; DiT: of the decoded "
        "image). ✗: refused —"
    )
    for reason, letter in reasons.items():
        print(f"- {letter}: {reason}")


if __name__ == "__main__":
    main()
