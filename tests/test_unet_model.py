"""The trained shapes UNet: committed weights, protocol, guidance, prompt fidelity, and ParaTAA on it."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch import Tensor

from paratta import run
from paratta.config import SolverConfig
from paratta.models.mixture import embedded_scheduler_config
from paratta.models.unet import (
    WEIGHTS_PATH,
    ShapesUNetModel,
    ShapesUNetNetwork,
    build_shapes_unet_model,
    prompt_attributes,
)
from paratta.problem import Request, make_problem
from paratta.protocol import DiffusionModel
from paratta.sequential import sample_sequential

TIMESTEPS = torch.tensor([1, 21, 481, 761, 981])  # a different t on every row


@pytest.fixture(scope="module")
def model() -> ShapesUNetModel:
    return build_shapes_unet_model()


def test_committed_weights_load_offline(model: ShapesUNetModel) -> None:
    assert WEIGHTS_PATH.is_file()
    assert WEIGHTS_PATH.stat().st_size <= 20 * 2**20
    assert model.metadata["load_seconds"] < 5.0  # < 3 s unloaded; slack for a busy CI machine
    meta = json.loads(WEIGHTS_PATH.with_suffix(".json").read_text())
    training = meta["training"]
    assert re.match(r"python -m paratta\.(tools\.)?train_unet ", training["command"])  # as it was run
    assert training["steps"] > 0 and isinstance(training["seed"], int)
    assert meta["parameters"] == sum(p.numel() for p in model.network.parameters())


def test_missing_weights_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="train_unet"):
        build_shapes_unet_model(weights=tmp_path / "nope.safetensors")


def test_protocol(model: ShapesUNetModel) -> None:
    assert isinstance(model, DiffusionModel)
    assert model.name == "shapes-unet"
    assert model.latent_shape == (3, 32, 32)
    assert model.takes_negative_prompt
    assert model.scheduler_config == embedded_scheduler_config()
    assert model.families == ("ddim",) and not model.takes_image_size and model.image_size == (32, 32)
    assert (
        model.vocabulary and model.labels is None and model.frames is None and model.defaults.guidance == 3.0
    )
    x = torch.randn(2, 3, 32, 32) * 3
    for out in (model.decode(x), model.preview(x)):
        assert out.shape == (2, 3, 32, 32) and out.dtype == torch.float32 and out.device.type == "cpu"
        assert 0 <= float(out.min()) and float(out.max()) <= 1


def test_predict_mixed_timesteps_and_guidance(model: ShapesUNetModel) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, 32, 32, generator=g)
    cond = model.encode("a small red circle on the left")
    out = model.predict(x, TIMESTEPS, cond, guidance=3.0)
    assert out.shape == x.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    # Rows are independent: the mixed-t batch equals row-by-row calls.
    rows = torch.cat([model.predict(x[i : i + 1], TIMESTEPS[i : i + 1], cond, 3.0) for i in range(5)])
    torch.testing.assert_close(out, rows, atol=1e-4, rtol=1e-4)
    # u + s(c − u), with u the empty prompt's branch.
    c = model.predict(x, TIMESTEPS, cond, guidance=1.0)
    u = model.predict(x, TIMESTEPS, model.encode(""), guidance=1.0)
    torch.testing.assert_close(out, u + 3.0 * (c - u), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(c, u, atol=1e-3)  # the condition does something
    # float64 in, float64 out.
    assert model.predict(x.double(), TIMESTEPS, cond, 2.0).dtype == torch.float64


def test_negative_prompt_replaces_unconditional_branch(model: ShapesUNetModel) -> None:
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    t = TIMESTEPS[:3]
    cond = model.encode("a red circle", "a blue square")
    c = model.predict(x, t, model.encode("a red circle"), 1.0)
    n = model.predict(x, t, model.encode("a blue square"), 1.0)
    torch.testing.assert_close(model.predict(x, t, cond, 4.0), n + 4.0 * (c - n), atol=1e-4, rtol=1e-4)
    assert cond.attributes == {"shape": "circle", "colour": "red"}


def test_prompt_errors(model: ShapesUNetModel) -> None:
    with pytest.raises(ValueError, match="unknown word"):
        model.encode("a red dragon")
    with pytest.raises(ValueError, match="takes one colour"):
        model.encode("a red or blue circle")
    with pytest.raises(ValueError, match="takes one shape"):
        model.encode("a circle", negative_prompt="squares and circles")
    assert prompt_attributes("") == {}
    assert prompt_attributes("a big red disc on grey") == {
        "size": "large",
        "colour": "red",
        "shape": "circle",
        "background": "gray",
    }


def foreground_colour(image: Tensor) -> tuple[Tensor, float]:
    """Mean RGB of the pixels far from the border's median colour, and the fraction they cover."""
    border = torch.cat([image[:, 0], image[:, -1], image[:, :, 0], image[:, :, -1]], dim=1)
    background = border.median(dim=1).values
    far = (image - background[:, None, None]).norm(dim=0) > 0.3
    if not far.any():
        return background, 0.0
    return image[:, far].mean(1), float(far.float().mean())


def colour_matches(rgb: Tensor, name: str) -> bool:
    r, g, b = rgb.tolist()
    return {
        "red": r > g + 0.3 and r > b + 0.3,
        "green": g > r + 0.25 and g > b + 0.2,
        "blue": b > r + 0.3 and b > g + 0.2,
    }[name]


SAMPLES = [  # (prompt, seed): each sampled once with 50 DDIM steps, guidance 3, and shared by the tests
    ("a red circle on a black background", 0),
    ("a large blue square on a white background", 1),
    ("a green triangle on a gray background", 2),
]
COLOUR_OF = {
    "a red circle on a black background": "red",
    "a large blue square on a white background": "blue",
    "a green triangle on a gray background": "green",
}


def sample_x0(model: DiffusionModel, prompt: str, seed: int, steps: int = 50) -> Tensor:
    """Sequential DDIM x_0 with paratta's sampler (guidance 3)."""
    request = Request(prompt=prompt, seed=seed, steps=steps, guidance=3.0)
    return sample_sequential(make_problem(model, request))[0]


def colour_failures(model: DiffusionModel, samples: dict[tuple[str, int], Tensor]) -> list[str]:
    """Samples whose foreground is not the prompt's colour (or covers no sensible area)."""
    failures = []
    for (prompt, seed), x0 in samples.items():
        rgb, fraction = foreground_colour(model.decode(x0[None])[0])
        if not (0.02 < fraction < 0.8 and colour_matches(rgb, COLOUR_OF[prompt])):
            failures.append(f"{prompt!r} seed {seed}: foreground {rgb.tolist()} on {fraction:.0%}")
    return failures


@pytest.fixture(scope="module")
def samples(model: ShapesUNetModel) -> dict[tuple[str, int], Tensor]:
    return {(prompt, seed): sample_x0(model, prompt, seed) for prompt, seed in SAMPLES}


def test_samples_match_prompt_colour(model: ShapesUNetModel, samples: dict[tuple[str, int], Tensor]) -> None:
    assert colour_failures(model, samples) == []


def test_colour_check_fails_for_untrained_weights() -> None:
    torch.manual_seed(0)
    untrained = ShapesUNetModel(ShapesUNetNetwork())
    noisy = {(prompt, seed): sample_x0(untrained, prompt, seed, steps=10) for prompt, seed in SAMPLES}
    assert len(colour_failures(untrained, noisy)) == len(SAMPLES)


@pytest.mark.slow
@pytest.mark.parametrize("which, guidance", [(0, 3.0), (1, 1.0)])
def test_parataa_converges_to_sequential(
    model: ShapesUNetModel, samples: dict[tuple[str, int], Tensor], which: int, guidance: float
) -> None:
    prompt, seed = SAMPLES[which]
    problem = make_problem(model, Request(prompt=prompt, seed=seed, steps=50, guidance=guidance))
    sequential = samples[prompt, seed] if guidance == 3.0 else sample_sequential(problem)[0]
    result = run(problem, SolverConfig(solver="anderson", order=20))
    assert result.converged
    rms = float((result.x0.double() - sequential.double()).pow(2).mean().sqrt())
    assert rms < 1e-3, rms
    assert result.iteration < problem.steps  # actually parallel: fewer iterations than steps
