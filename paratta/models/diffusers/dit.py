"""DiT (class-conditional latent transformer, Peebles & Xie 2023) as a paratta ``DiffusionModel``.

As in ``DiTPipeline.__call__``: the batch is [cond, null] with the null class id
``num_embeds_ada_norm`` (1000 for ImageNet DiT; the pipeline hard-codes 1000), guidance is
ε_null + s·(ε_c − ε_null) on the ε channels, and a ``learn_sigma`` transformer (2C output
channels) has its variance half dropped. The prompt is a class: an ImageNet label known to
``pipe.labels`` (from ``id2label``), or an integer id; "" samples the null class (unconditional).
DiTPipeline steps from ``scale_model_input``'s output and never scales x_T by ``init_noise_sigma``, so
with a σ-space scheduler (Euler, Heun: ``init_noise_sigma`` ≠ 1) its image is not that scheduler's:
``check_scheduler`` refuses it with that reason.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from paratta.protocol import ModelDefaults

from .base import DiffusersModel, Serves, SizeRule, cfg, per_row, pipeline_scheduler_config


@dataclass(frozen=True)
class ClassCondition:
    """The class ids (B,) fed to the label embedding, and the null id of the unconditional half."""

    class_ids: Tensor
    null_id: int


class DiTModel(DiffusersModel):
    """A ``DiTPipeline`` (transformer + VAE) for paratta; ``pipe`` moves to ``device``/``dtype`` in place."""

    serves = Serves(
        pipelines=("DiTPipeline",),
        arguments=("class_labels", "guidance_scale", "generator", "num_inference_steps", "output_type"),
        options=(),
        guidance="cfg",
        layout="(C, s, s): VAE latents × scaling_factor, s the transformer's sample_size",
        draws="randn_tensor((B, C, s, s)) in the transformer's dtype",
        replicates=("__call__",),
    )
    default_name = "dit"
    takes_negative_prompt = False
    takes_image_size = False

    def size_rule(self) -> SizeRule:
        side = int(self.pipe.transformer.config.sample_size) * self.vae_scale_factor
        return SizeRule((side, side), side, side)

    def _configure(self) -> None:
        self.transformer = self.pipe.transformer.eval()
        config = self.transformer.config
        self.channels = int(config.in_channels)
        # learn_sigma: the transformer predicts [ε, variance]; DDIM only uses ε (the pipeline's split).
        self.learn_sigma = int(config.out_channels or config.in_channels) // 2 == self.channels
        self.num_classes = int(config.num_embeds_ada_norm or 1000)
        self.latent_shape = (self.channels, int(config.sample_size), int(config.sample_size))
        self.scheduler_config = pipeline_scheduler_config(self.pipe.scheduler)
        # Label → id, lower-cased (``DiTPipeline.__init__`` maps every comma-separated synonym of id2label;
        # {} when it was built without one).
        self.labels = {k.lower(): int(v) for k, v in self.pipe.labels.items()}
        # Class-conditional: "" samples the null class; an ImageNet DiT is shown with a class it knows.
        self.defaults = ModelDefaults("golden retriever" if "golden retriever" in self.labels else "", 4.0)

    def check_scheduler(self) -> None:
        """DiTPipeline's loop equals its scheduler's only where x_T needs no scaling and the model input is
        the state (``init_noise_sigma`` 1: DDIM, DPM-Solver, UniPC, PNDM)."""
        scheduler = self.pipe.scheduler
        if float(scheduler.init_noise_sigma) != 1.0:
            raise ValueError(
                f"DiTPipeline with {type(scheduler).__name__}: the pipeline neither multiplies x_T by its "
                "init_noise_sigma nor steps from the unscaled state (it steps from scale_model_input's "
                "output), so its image is not that sampler's; use one whose init_noise_sigma is 1 (DDIM, "
                "DPM-Solver, UniPC)"
            )

    def class_id(self, prompt: str) -> int:
        """An integer id in [0, num_classes) or a ``pipe.labels`` label (any case); "" → the null class."""
        if not isinstance(prompt, str):
            raise ValueError(f"a DiT prompt is a class label or id (a string), got {type(prompt).__name__}")
        text = prompt.strip()
        if not text:
            return self.num_classes
        if text.lstrip("-").isdigit():
            k = int(text)
            if not 0 <= k < self.num_classes:
                raise ValueError(f"class id {k} is outside [0, {self.num_classes - 1}]")
            return k
        if not self.labels:
            raise ValueError(
                f"{self.name} has no class labels (no id2label): give a class id 0…{self.num_classes - 1}"
            )
        key = text.lower()
        if key not in self.labels:
            close = difflib.get_close_matches(key, list(self.labels), n=5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"unknown class label {prompt!r} (an ImageNet class name or an id){hint}")
        return self.labels[key]

    def encode(self, prompt: str, negative_prompt: str = "") -> ClassCondition:
        """The class of ``prompt``; ``negative_prompt`` is ignored (the unconditional half is class null)."""
        return self.condition({"class_labels": [self.class_id(prompt)]})

    def condition(self, arguments: dict[str, Any]) -> ClassCondition:
        """``class_labels`` (an id or a list of ids, one image each), as ``DiTPipeline`` reads them."""
        labels = arguments.get("class_labels")
        labels = list(labels) if isinstance(labels, (list, tuple)) else [labels]
        for k in labels:
            if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= self.num_classes:
                raise ValueError(f"class_labels must be class ids in [0, {self.num_classes - 1}]; got {k!r}")
        return ClassCondition(torch.tensor(labels, device=self.device), self.num_classes)

    def predict(self, x: Tensor, t: Tensor, cond: ClassCondition, guidance: float) -> Tensor:
        """Guided ε for n states at n timesteps; rows [cond, null] (2n) unless guidance == 1."""
        n = x.shape[0]
        t = torch.as_tensor(t, device=self.device).reshape(-1).expand(n)
        labels = per_row(cond.class_ids, n)
        if guidance == 1.0:
            return self._network(lambda: self._eps(x, t, labels), n)
        null = torch.full_like(labels, cond.null_id)
        out = self._network(
            lambda: self._eps(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null])), 2 * n
        )
        c, u = out.chunk(2)
        return cfg(u, c, guidance)

    def pipeline_output(self, x0: Tensor, output_type: str) -> Any:
        """``DiTPipeline``'s ``images``: its own decode and clamp; a tensor for ``"pt"``, else an
        (n, H, W, 3) array, as PIL images for ``"pil"``."""
        with torch.no_grad():
            samples = self.vae.decode(x0.to(self.device, self.dtype) / self.vae.config.scaling_factor).sample
        samples = (samples / 2 + 0.5).clamp(0, 1)
        if output_type == "pt":
            return samples
        samples = samples.cpu().permute(0, 2, 3, 1).float().numpy()
        return self.pipe.numpy_to_pil(samples) if output_type == "pil" else samples

    def _eps(self, x: Tensor, t: Tensor, labels: Tensor) -> Tensor:
        out = self.transformer(x, timestep=t, class_labels=labels, return_dict=False)[0]
        return out[:, : self.channels] if self.learn_sigma else out
