"""Several images as one sampling problem: the states of B images side by side, one triangular system.

``pipe(prompt=[p1, p2], num_images_per_prompt=2)`` samples B = 4 images whose trajectories never
interact: each image's step reads only its own state. So the B trajectories are one system whose
unknowns are (B, *latent) per timestep, and one parallel iteration evaluates the window for all B
images in one network batch (rows ordered timestep-major: row r is image r mod B, which is how the
adapters' ``per_row`` lays a condition of B images over the rows). The sequential solution is each
image's own sequential trajectory; the stopping rule bounds the RMS over all B images, so the
wrapper divides its tol by √B: then each image's own RMS distance, at most √B times the whole's, is
within tol too.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import DiffusersModel


class Batch:
    """The adapter ``model`` sampling ``count`` images at once: a ``DiffusionModel`` whose state is
    (count, *model.latent_shape); everything but the shape, the rows and the draw is the model's."""

    def __init__(self, model: DiffusersModel, count: int) -> None:
        self.model, self.count = model, count
        self.latent_shape = (count, *model.latent_shape)
        self.rows_per_timestep = count * model.rows_per_timestep

    # Not a probe: the declared capabilities and the pipeline are the wrapped model's, forwarded as they are.
    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def predict(self, x: Tensor, t: Tensor, cond: Any, guidance: float) -> Tensor:
        """The model on n · count rows (timestep-major), reshaped back to (n, count, *latent)."""
        n = x.shape[0]
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(n).repeat_interleave(self.count)
        out = self.model.predict(x.flatten(0, 1), t, cond, guidance)
        return out.view(n, self.count, *out.shape[1:])

    def draw_latents(self, generator: Any) -> Tensor:
        """All images' x_T in one draw, as the pipeline draws them (``draw_batch``)."""
        return self.model.draw_batch(generator, self.count)

    def pipeline_output(self, x0: Tensor, output_type: str) -> Any:
        """``pipe(...)``'s result for one batched state (count, *latent)."""
        return self.model.pipeline_output(x0, output_type)

    def decode(self, x0: Tensor) -> Tensor:
        """(n, count, *latent) → the model's decode of all n · count images, in that order."""
        return self.model.decode(x0.flatten(0, 1))

    def preview(self, x0: Tensor) -> Tensor:
        return self.model.preview(x0.flatten(0, 1))
