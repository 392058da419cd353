"""``ParaTAAPipeline``: a diffusers pipeline you already hold, sampled by ParaTAA, behaving like it.

``ParaTAAPipeline.from_pipe(pipe, **settings)`` wraps any pipeline an adapter serves
(``adapters.ADAPTERS``: SD, SDXL, their image-to-image pipelines, DiT, SD3/3.5, Flux, PixArt-α/Σ, Sana,
Wan 2.1); its modules are used in place, never copied; ``settings`` are ``SolverConfig``'s. Calling it
takes the pipeline's own argument names and defaults, and its result (``images``, or ``frames`` for a
video) is what ``pipe(...)`` returns for the same arguments: x_T drawn from ``generator`` as the
pipeline draws it, the same sampler on the same grid, the pipeline's own decode and ``output_type``.
The sequential solver gives the pipeline's latents up to float round-off; ParaTAA's within its stopping
guarantee, in fewer parallel iterations.

Like the pipeline: ``.to()``, ``device``, ``dtype``, ``components``, a progress bar over parallel
iterations (``set_progress_bar_config``), lists of prompts and ``num_images_per_prompt`` (one batched
system: ``batch.Batch``; each image within tol of its own sequential image), precomputed embeddings,
``callback_on_step_end`` once per parallel iteration. The scheduler is read at each call: one paratta
cannot sample as the pipeline does is refused with its reason. An argument the adapter does not honour
is refused by name, before anything runs.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from paratta.config import TOLERANCE, Request, SolverConfig, specs
from paratta.planning.plan import Plan
from paratta.planning.pose import Run, pose, solve
from paratta.problem import Problem
from paratta.samplers import check
from paratta.solver import Iterate

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
PER_PROMPT = ("num_images_per_prompt", "num_videos_per_prompt")  # the pipelines' names for the count
CALLBACK_INPUTS = ("latents",)


@dataclass(frozen=True)
class ParaTAAPipelineOutput:
    """The pipeline's result as it returns it, and the run that made it."""

    images: Any  # list of PIL images, an array or a tensor: the pipeline's own for the output_type
    iterations: int  # parallel iterations (one batched network call each)
    steps: int  # T: the sequential sampler's network calls (image-to-image: the steps it runs)
    converged: bool
    evaluations: int  # guided network evaluations, one per timestep (of all the images together)
    trajectory: Tensor  # (T+1, *latent) or, for B > 1 images, (T+1, B, *latent): x_0 … x_T, state dtype
    residuals: Tensor  # (iterations, T): each iteration's RMS anchor residual, NaN outside its window
    windows: tuple[tuple[int, int], ...]  # each iteration's window [lo, hi)
    model_seconds: float  # wall-clock inside the network
    solver_seconds: float  # wall-clock in everything else of the solve
    tol: float  # each image's bound: RMS distance of its x_0 to its sequential x_0 (the stopping rule's)

    @property
    def frames(self) -> Any:
        """A video pipeline's result (``WanPipeline(...).frames``): the same object as ``images``."""
        return self.images

    @property
    def seconds(self) -> float:
        return self.model_seconds + self.solver_seconds


@dataclass(frozen=True)
class Posed:
    """One call: its run, posed once (``paratta.planning.pose``), the output type, and the callback."""

    run: Run
    output_type: str
    images: int
    callback: Callable[..., Any] | None

    @property
    def problem(self) -> Problem:
        assert self.run.problem is not None  # posed in full
        return self.run.problem

    @property
    def plan(self) -> Plan:
        return self.run.plan


class ParaTAAPipeline:
    """A diffusers pipeline sampled by parallel fixed-point iteration; see the module docstring."""

    def __init__(self, pipe: Any, config: SolverConfig) -> None:
        from .adapters import adapter_for  # imports diffusers: only when a pipeline is wrapped

        self.adapter = adapter_for(type(pipe))  # refuses an unserved class by name, before anything moves
        self.adapter.check(pipe)
        self.pipe = pipe
        self.config = config
        self.pipeline_name = type(pipe).__name__
        self.parameters = inspect.signature(type(pipe).__call__).parameters
        self.honoured = tuple(n for n in self.adapter.serves.arguments if n in self.parameters)
        self.model = self.adapter(pipe, device=pipe.device, dtype=pipe.dtype)
        self._seen = self._scheduler_now()  # the scheduler is judged at each call (``_model_now``)

    @classmethod
    def from_pipe(cls, pipe: Any, **settings: Any) -> ParaTAAPipeline:
        """Wrap ``pipe`` (not copied); ``settings`` are ``SolverConfig``'s (solver, window, order, tol,
        stopping, init, max_batch, …), each checked against its declared range."""
        declared = specs(SolverConfig)
        unknown = sorted(set(settings) - set(declared))
        if unknown:
            raise ValueError(f"unknown setting {unknown[0]!r}: the settings are {', '.join(declared)}")
        return cls(pipe, SolverConfig(**settings))

    # ------------------------------------------------------------ the pipeline's own surface

    def to(self, *args: Any, **kwargs: Any) -> ParaTAAPipeline:
        """``pipe.to(...)`` (a device, a dtype or both, as diffusers takes them), then the adapter follows."""
        self.pipe.to(*args, **kwargs)
        self.model = self.adapter(self.pipe, device=self.pipe.device, dtype=self.pipe.dtype)
        self._seen = self._scheduler_now()
        return self

    @property
    def device(self) -> torch.device:
        return self.pipe.device

    @property
    def dtype(self) -> torch.dtype:
        return self.pipe.dtype

    @property
    def components(self) -> dict[str, Any]:
        return self.pipe.components

    @property
    def scheduler(self) -> Any:
        return self.pipe.scheduler

    @scheduler.setter
    def scheduler(self, scheduler: Any) -> None:
        self.pipe.scheduler = scheduler

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        """The pipeline's own (tqdm's keywords); its bar and this one are configured together."""
        self.pipe.set_progress_bar_config(**kwargs)

    # ------------------------------------------------------------ calling it

    def __call__(
        self, prompt: Any = None, *, on_iteration: Callable[[Iterate], None] | None = None, **arguments: Any
    ) -> ParaTAAPipelineOutput:
        """Sample as ``pipe(prompt, **arguments)`` would; ``on_iteration`` gets each immutable record.

        ``callback_on_step_end(pipe, i, t, {"latents": x_0})`` (with ``callback_on_step_end_tensor_inputs``
        ["latents"], the default) is called once per parallel iteration, i = 0, 1, …: t is the timestep of
        the noisiest step that is not final after that iteration (the last step's once all are) and
        ``latents`` the iterate's x_0 as ``output_type="latent"`` would return it if the solve stopped
        there. It may read them; a returned dict that replaces them is refused, since an iterate of a
        fixed-point solve cannot be swapped mid-way.
        """
        posed = self.pose(prompt, **arguments)
        residuals, windows = [], []
        with self.pipe.progress_bar(total=posed.plan.max_iters) as bar:
            for last in solve(posed.problem, posed.plan):
                residuals.append(last.residual)
                windows.append(last.window)
                if on_iteration is not None:
                    on_iteration(last)
                if posed.callback is not None:
                    self._callback(posed, last)
                bar.update()
                bar.set_postfix_str(f"anchor {last.anchor}/{posed.problem.steps}")
        x0 = last.x0 if posed.images > 1 else last.x0[None]
        return ParaTAAPipelineOutput(
            images=posed.problem.model.pipeline_output(x0, posed.output_type),
            iterations=last.iteration,
            steps=posed.problem.steps,
            converged=last.converged,
            evaluations=last.evaluations,
            trajectory=last.trajectory,
            residuals=torch.stack(residuals),
            windows=tuple(windows),
            model_seconds=last.model_seconds,
            solver_seconds=last.solver_seconds,
            tol=posed.plan.tol * math.sqrt(posed.images),
        )

    def iterate(self, prompt: Any = None, **arguments: Any) -> Iterator[Iterate]:
        """The run's immutable records as they come, one per parallel iteration (the caller may stop)."""
        posed = self.pose(prompt, **arguments)
        yield from solve(posed.problem, posed.plan)

    def problem(self, prompt: Any = None, **arguments: Any) -> tuple[Problem, str]:
        """The sampling problem ``pipe(prompt, **arguments)`` solves, and the output type asked for."""
        posed = self.pose(prompt, **arguments)
        return posed.problem, posed.output_type

    def pose(self, prompt: Any = None, **arguments: Any) -> Posed:
        """The call posed: every argument checked by name (before anything runs), the adapter at its
        options, the condition, x_T as the pipeline draws it, the plan with the per-image tol."""
        if prompt is not None:
            arguments["prompt"] = prompt
        for name in arguments:
            if name not in self.parameters:
                raise ValueError(f"{name!r} is not an argument of {self.pipeline_name}")
            if name not in self.honoured and name not in (
                "callback_on_step_end",
                "callback_on_step_end_tensor_inputs",
            ):
                raise ValueError(
                    f"{name!r}: paratta does not honour this argument of {self.pipeline_name} (it takes "
                    f"{', '.join(self.honoured)})"
                )
        given = {n: self._default(n) for n in self.honoured} | arguments
        self._check(given)
        callback = self._check_callback(given)
        model = self._model_now()
        options = {n: given[n] for n in model.serves.options if n in given}
        pixels = None
        if "image" in model.serves.arguments:
            if given.get("image") is None:
                raise ValueError(f"image: {self.pipeline_name} samples from an image; give one (image=…)")
            pixels, (height, width) = model.image_size_of(given["image"])
            options |= {"height": height, "width": width}
        model = model.configured(**options) if options else model
        cond = model.condition(given)
        images = _images_in(cond)
        solved = model if images == 1 else _batch(model, images)
        request = Request(
            prompt=_first(given.get("prompt")) or "",
            negative_prompt=_first(given.get("negative_prompt")) or "",
            steps=given["num_inference_steps"],
            eta=float(given.get("eta") or 0.0),
            guidance=model.guidance_for(given["guidance_scale"]),
        )
        generator = given.get("generator")
        if generator is None:
            generator = _global_generator(model.device)
        elif isinstance(generator, (list, tuple)) and len(generator) != images:
            raise ValueError(f"generator: a list of {len(generator)} generators for {images} images")
        latents, begin = given.get("latents"), None
        if pixels is not None:
            begin, latents = model.start(given, pixels, request.steps, images, generator)
        per_image = 1 / math.sqrt(images)  # the rule bounds the RMS over all images: √B × tighter
        tol = self.config.tol if self.config.tol is not None else TOLERANCE[self.config.stopping]
        config = replace(self.config, tol=tol * per_image, tol2=self.config.tol2 * per_image)
        run = pose(solved, request, config, latents=latents, generator=generator, cond=cond, begin=begin)
        return Posed(run, given["output_type"], images, callback)

    # ------------------------------------------------------------ the parts of pose

    def _scheduler_now(self) -> tuple[Any, dict[str, Any]]:
        return self.pipe.scheduler, dict(self.pipe.scheduler.config)

    def _model_now(self) -> Any:
        """The adapter on the pipeline's scheduler as it is now (one set after wrapping is read again),
        refused with the reason when paratta cannot sample it as the pipeline does."""
        now = self._scheduler_now()
        if now[0] is not self._seen[0] or now[1] != self._seen[1]:
            self.model, self._seen = self.model.configured(), now
        try:
            check(self.model.scheduler_config)  # the sampler registry: expressed exactly, or the reason
            self.model.check_scheduler()  # the pipeline's own loop (DiT's)
        except ValueError as error:
            raise ValueError(f"{self.pipeline_name}'s scheduler {type(now[0]).__name__}: {error}") from None
        return self.model

    def _default(self, name: str) -> Any:
        default = self.parameters[name].default
        return None if default is inspect.Parameter.empty else default

    def _check(self, given: dict[str, Any]) -> None:
        """Each argument that is a setting against its declared range; prompts, counts, output type."""
        for name in ("prompt", "negative_prompt"):
            value = given.get(name)
            if isinstance(value, (list, tuple)) and not all(isinstance(v, str) for v in value):
                raise ValueError(f"{name} must be a string or a list of strings; got {value!r}")
        for name, setting in AS_SETTING.items():
            for value in _each(given.get(name)):
                if value is None:
                    continue
                try:
                    specs(Request)[setting].check(value)
                except ValueError as error:
                    raise ValueError(f"{name}: {error}") from None
        for name in PER_PROMPT:
            count = given.get(name)
            if name in given and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
                raise ValueError(f"{name} must be a positive integer; got {count!r}")
        if "prompt" in given and given["prompt"] is None and given.get("prompt_embeds") is None:
            raise ValueError("prompt: give a prompt (or a list of them) or prompt_embeds")
        length = given.get("max_sequence_length")
        if length is not None and (
            isinstance(length, bool) or not isinstance(length, int) or not 0 < length <= 512
        ):
            raise ValueError(f"max_sequence_length must be an integer in [1, 512] (T5's); got {length!r}")
        if given["output_type"] not in OUTPUT_TYPES:
            raise ValueError(
                f"output_type must be one of {', '.join(OUTPUT_TYPES)}; got {given['output_type']!r}"
            )

    def _check_callback(self, given: dict[str, Any]) -> Callable[..., Any] | None:
        callback = given.get("callback_on_step_end")
        if callback is None:
            return None
        if "callback_on_step_end" not in self.parameters:
            raise ValueError(f"'callback_on_step_end' is not an argument of {self.pipeline_name}")
        from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

        if not callable(callback) or isinstance(callback, (PipelineCallback, MultiPipelineCallbacks)):
            raise ValueError(
                "callback_on_step_end: paratta calls a plain function once per parallel iteration with "
                "{'latents': x_0}; PipelineCallback objects (which rewrite the pipeline's state mid-loop) "
                "are not supported"
            )
        inputs = given.get("callback_on_step_end_tensor_inputs") or ["latents"]
        extra = [n for n in inputs if n not in CALLBACK_INPUTS]
        if extra:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs: {extra[0]!r} is not given per parallel iteration "
                f"(paratta gives {', '.join(CALLBACK_INPUTS)})"
            )
        return callback

    def _callback(self, posed: Posed, record: Iterate) -> None:
        problem = posed.problem
        x0 = record.x0 if posed.images > 1 else record.x0[None]
        latents = x0.to(problem.model.device, problem.model.latent_dtype or problem.model.dtype)
        t = problem.coef.timesteps[
            max(record.anchor - 1, 0)
        ]  # the noisiest step not final yet (done: the last)
        out = posed.callback(self.pipe, record.iteration - 1, t, {"latents": latents})
        if isinstance(out, dict) and out.get("latents", latents) is not latents:
            raise ValueError(
                "callback_on_step_end returned new latents: an iterate of a fixed-point solve cannot be "
                "replaced mid-way (read them; return the dict unchanged)"
            )


def _batch(model: Any, images: int) -> Any:
    from .batch import Batch

    return Batch(model, images)


def _images_in(cond: Any) -> int:
    """Images the condition is for: its first tensor's leading axis (one entry per image)."""
    first = next(v for v in vars(cond).values() if isinstance(v, Tensor))
    return int(first.shape[0])


def _each(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, (list, tuple)) and value else value


def _global_generator(device: torch.device) -> torch.Generator:
    """The generator a pipeline draws from when given none: torch's default one on the device."""
    if device.type == "cuda":
        return torch.cuda.default_generators[
            device.index if device.index is not None else torch.cuda.current_device()
        ]
    return torch.default_generator
