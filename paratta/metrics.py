"""How far one result is from another: the distances every report, test and view uses.

All distances are RMS in latent units (for the embedded models: pixels in [−1, 1]), computed in
float64 whatever the inputs' dtype, so the same pair always gives the same figure.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .protocol import DiffusionModel


def distance(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    """RMS(a − b) over every entry."""
    gap = torch.as_tensor(a, device="cpu").double() - torch.as_tensor(b, device="cpu").double()
    return float(gap.pow(2).mean().sqrt())


def largest_state_distance(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    """max_i RMS(a_i − b_i) over matching states of two trajectories (n, *state)."""
    gap = torch.as_tensor(a, device="cpu").double() - torch.as_tensor(b, device="cpu").double()
    return float(gap.flatten(1).pow(2).mean(1).sqrt().max())


def to_8bit(model: DiffusionModel, x0: Tensor) -> Tensor:
    """The decoded image of ``x0`` in 8-bit levels (0…255), float on CPU."""
    return (model.decode(x0[None].to(model.device, model.dtype))[0].float().cpu() * 255).round()
