"""``ParaTAAPipeline``: a diffusers pipeline you already hold, sampled by ParaTAA.

``ParaTAAPipeline.from_pipe(pipe, **settings)`` wraps a ``StableDiffusionPipeline``, ``DiTPipeline``,
``StableDiffusion3Pipeline`` or ``FluxPipeline`` object (its modules are used in place, never copied);
``settings`` are ``SolverConfig``'s declared settings by name. Calling it takes the pipeline's own
argument names and defaults, and ``images`` is what ``pipe(...)`` returns for the same arguments: x_T
(and DDIM's η-noises) drawn from ``generator`` as the pipeline draws them, the same sampler on the same
grid, the pipeline's own decode and ``output_type``. The sequential solver gives the pipeline's latents
up to float round-off; ParaTAA's within its stopping guarantee, in fewer parallel iterations.

Only what paratta can honour is accepted: one image per call, a prompt string (a class label for
DiT), no precomputed embeddings or callbacks of the pipeline's; any other argument is refused by name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from paratta.config import Request, SolverConfig, specs
from paratta.planning.pose import Run, pose
from paratta.solver import Iterate, solve

# The __call__ arguments paratta honours, by pipeline class, beyond the ones every pipeline shares.
SHARED = ("num_inference_steps", "guidance_scale", "generator", "output_type", "num_images_per_prompt")
SIZED = ("prompt", "height", "width", "latents")
HONOURED: dict[str, tuple[str, ...]] = {
    "StableDiffusionPipeline": (*SHARED, *SIZED, "negative_prompt", "eta"),
    "StableDiffusion3Pipeline": (*SHARED, *SIZED, "negative_prompt", "max_sequence_length"),
    "FluxPipeline": (*SHARED, *SIZED, "max_sequence_length"),
    "DiTPipeline": (*SHARED, "class_labels"),
}
OUTPUT_TYPES = ("pil", "np", "pt", "latent")
# Pipeline argument → the Request setting it is checked as.
AS_SETTING = {
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "num_inference_steps": "steps",
    "guidance_scale": "guidance",
    "eta": "eta",
    "height": "height",
    "width": "width",
}
# Pipelines whose classifier-free guidance is off for a scale ≤ 1 (the conditional output alone).
CFG_ABOVE_ONE = ("StableDiffusionPipeline", "StableDiffusion3Pipeline", "DiTPipeline")


@dataclass(frozen=True)
class ParaTAAPipelineOutput:
    """``images`` as the wrapped pipeline returns them, and the run that made them."""

    images: Any  # list of PIL images, an array or a tensor: the pipeline's own for the output_type
    iterations: int  # parallel iterations (one batched network call each)
    steps: int  # T: the sequential sampler's network calls
    converged: bool
    evaluations: int  # guided network evaluations, one per timestep
    trajectory: Tensor  # (T+1, *latent): the final iterate x_0 … x_T, in the solver's state dtype
    residuals: Tensor  # (iterations, T): each iteration's RMS anchor residual, NaN outside its window
    windows: tuple[tuple[int, int], ...]  # each iteration's window [lo, hi)
    model_seconds: float  # wall-clock inside the network
    solver_seconds: float  # wall-clock in everything else of the solve

    @property
    def seconds(self) -> float:
        return self.model_seconds + self.solver_seconds


class ParaTAAPipeline:
    """A diffusers pipeline sampled by parallel fixed-point iteration; see the module docstring."""

    def __init__(self, pipe: Any, config: SolverConfig) -> None:
        from .load import from_pipeline  # imports diffusers: only when a pipeline is wrapped

        self.pipe = pipe
        self.config = config
        self.pipeline_name = type(pipe).__name__
        self.model = from_pipeline(pipe, device=pipe.device, dtype=pipe.dtype)  # refuses other classes
        own, used = type(pipe.scheduler).__name__, self.model.scheduler_config["_class_name"]
        if own != used:
            raise ValueError(
                f"the pipeline's scheduler is {own}, which paratta does not sample for "
                f"{self.pipeline_name} (it would run {used}, another image): set "
                f"pipe.scheduler = {used}.from_config(pipe.scheduler.config) to compare like with like"
            )
        self.parameters = inspect.signature(type(pipe).__call__).parameters
        self.honoured = tuple(n for n in HONOURED[self.pipeline_name] if n in self.parameters)
        self._lengths: dict[int, Any] = {}

    @classmethod
    def from_pipe(cls, pipe: Any, **settings: Any) -> ParaTAAPipeline:
        """Wrap ``pipe`` (not copied); ``settings`` are ``SolverConfig``'s (solver, window, order, tol,
        stopping, init, max_batch, …), each checked against its declared range."""
        declared = specs(SolverConfig)
        unknown = sorted(set(settings) - set(declared))
        if unknown:
            raise ValueError(f"unknown setting {unknown[0]!r}: the settings are {', '.join(declared)}")
        return cls(pipe, SolverConfig(**settings))

    def __call__(
        self, prompt: Any = None, *, on_iteration: Callable[[Iterate], None] | None = None, **arguments: Any
    ) -> ParaTAAPipelineOutput:
        """Sample as ``pipe(prompt, **arguments)`` would; ``on_iteration`` gets each immutable record."""
        posed, output_type = self.pose(prompt, **arguments)
        problem = posed.problem
        assert problem is not None  # posed with its problem (not dry)
        residuals, windows = [], []
        for last in solve(problem, posed.plan):
            residuals.append(last.residual)
            windows.append(last.window)
            if on_iteration is not None:
                on_iteration(last)
        return ParaTAAPipelineOutput(
            images=problem.model.pipeline_images(last.x0[None], output_type),
            iterations=last.iteration,
            steps=problem.steps,
            converged=last.converged,
            evaluations=last.evaluations,
            trajectory=last.trajectory,
            residuals=torch.stack(residuals),
            windows=tuple(windows),
            model_seconds=last.model_seconds,
            solver_seconds=last.solver_seconds,
        )

    def iterate(self, prompt: Any = None, **arguments: Any) -> Iterator[Iterate]:
        """The run's immutable records as they come, one per parallel iteration (the caller may stop)."""
        posed, _ = self.pose(prompt, **arguments)
        assert posed.problem is not None
        yield from solve(posed.problem, posed.plan)

    def pose(self, prompt: Any = None, **arguments: Any) -> tuple[Run, str]:
        """The run ``pipe(prompt, **arguments)`` makes, posed once (its problem and plan), and the output
        type asked for."""
        if prompt is not None:
            arguments["prompt"] = prompt
        for name in arguments:
            if name not in self.parameters:
                raise ValueError(f"{name!r} is not an argument of {self.pipeline_name}")
            if name not in self.honoured:
                raise ValueError(
                    f"{name!r}: paratta does not honour this argument of {self.pipeline_name} (it takes "
                    f"{', '.join(self.honoured)})"
                )
        given = {name: self._default(name) for name in self.honoured} | arguments
        for name in ("prompt", "negative_prompt"):
            if name in given:
                given[name] = _one(name, given[name])
        for name, setting in AS_SETTING.items():
            if name in given and given[name] is not None:
                try:
                    specs(Request)[setting].check(given[name])
                except ValueError as error:
                    raise ValueError(f"{name}: {error}") from None
        if (count := given.get("num_images_per_prompt")) not in (None, 1):
            raise ValueError(f"num_images_per_prompt: paratta samples one image per call; got {count!r}")
        length = given.get("max_sequence_length")
        if length is not None and (
            isinstance(length, bool) or not isinstance(length, int) or not 0 < length <= 512
        ):
            raise ValueError(f"max_sequence_length must be an integer in [1, 512] (T5's); got {length!r}")
        output_type = given["output_type"]
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}; got {output_type!r}")
        guidance = float(given["guidance_scale"])
        if self.pipeline_name in CFG_ABOVE_ONE and guidance <= 1:
            guidance = 1.0  # the pipeline runs the conditional half alone
        request = Request(
            prompt=self._prompt(given),
            negative_prompt=given.get("negative_prompt") or "",
            steps=given["num_inference_steps"],
            eta=float(given.get("eta") or 0.0),
            guidance=guidance,
            height=given.get("height") or None,
            width=given.get("width") or None,
        )
        model = self._model(given.get("max_sequence_length"))
        generator = _one("generator", given["generator"]) or _global_generator(model.device)
        return pose(
            model, request, self.config, latents=given.get("latents"), generator=generator
        ), output_type

    def _model(self, max_sequence_length: int | None) -> Any:
        """The adapter for a T5 prompt length (SD3, Flux): the pipeline's default one, or one more."""
        if max_sequence_length in (None, getattr(self.model, "max_sequence_length", None)):
            return self.model
        if max_sequence_length not in self._lengths:
            model = self.model
            options = {**model.options, "max_sequence_length": max_sequence_length}
            self._lengths[max_sequence_length] = type(model)(
                self.pipe, model.device, model.dtype, model.name, model.tiny_vae, **options
            )
        return self._lengths[max_sequence_length]

    def _default(self, name: str) -> Any:
        default = self.parameters[name].default
        return None if default is inspect.Parameter.empty else default

    def _prompt(self, given: dict[str, Any]) -> str:
        """The prompt as paratta's models read it: text, or a DiT class id as text."""
        if self.pipeline_name == "DiTPipeline":
            label = _one("class_labels", given["class_labels"])
            if isinstance(label, bool) or not isinstance(label, int):
                raise ValueError(
                    f"class_labels must be one integer class id (or a list of one); got {label!r}"
                )
            return str(label)
        prompt = given["prompt"]
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be a string (or a list of one); got {type(prompt).__name__}")
        return prompt


def _one(name: str, value: Any) -> Any:
    """A value given alone or as a list of one (one image per call)."""
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise ValueError(f"{name}: paratta samples one image per call; got a list of {len(value)}")
        return value[0]
    return value


def _global_generator(device: torch.device) -> torch.Generator:
    """The generator a pipeline draws from when given none: torch's default one on the device."""
    if device.type == "cuda":
        return torch.cuda.default_generators[
            device.index if device.index is not None else torch.cuda.current_device()
        ]
    return torch.default_generator
