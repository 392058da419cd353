"""The banded schedule (``paratta.schedule``, ``paratta.samplers.trace``) and DDIM(η) against diffusers'
own ``DDIMScheduler``, formula for formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from paratta.samplers import SAMPLERS, coefficients, sampler_config
from paratta.samplers.ddim import DDIMConfig, build, timesteps
from paratta.samplers.grids import alphas_cumprod
from paratta.samplers.trace import MAX_BAND, Trace, band_form

CONFIGS = {
    "default": {},
    "sd15": dict(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        set_alpha_to_one=False,
        steps_offset=1,
        clip_sample=False,
    ),
    "sd2-v": dict(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        set_alpha_to_one=False,
        steps_offset=1,
        clip_sample=False,
        prediction_type="v_prediction",
    ),
    "trailing-zero-snr-v": dict(
        timestep_spacing="trailing",
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        clip_sample=False,
    ),
    "linspace-cosine": dict(timestep_spacing="linspace", beta_schedule="squaredcos_cap_v2"),
    "sample-prediction": dict(prediction_type="sample", clip_sample=False, steps_offset=1),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_alphas_cumprod_and_timesteps_match_diffusers(name: str) -> None:
    ref = DDIMScheduler(**CONFIGS[name])
    config = DDIMConfig.from_dict(ref.config)
    torch.testing.assert_close(alphas_cumprod(config), ref.alphas_cumprod.double(), atol=1e-6, rtol=0)
    for steps in (1, 7, 25, 50, 100, 1000):
        ref.set_timesteps(steps)
        if int(ref.timesteps.max()) >= config.num_train_timesteps:  # steps_offset 1 at T = 1000
            with pytest.raises(
                ValueError, match="past its last training step"
            ):  # diffusers' step fails there
                timesteps(config, steps)
            continue
        assert torch.equal(torch.from_numpy(timesteps(config, steps)), ref.timesteps)


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("steps", [10, 50])
def test_every_step_matches_diffusers_step(name: str, eta: float, steps: int) -> None:
    """Formula for formula: diffusers' step run in float64 on paratta's ᾱ table (the table itself is
    compared above), so any difference is a coefficient error, not round-off; clipping included."""
    ref = DDIMScheduler(**CONFIGS[name])
    ref.set_timesteps(steps)
    config = DDIMConfig.from_dict(ref.config)
    ref.alphas_cumprod = alphas_cumprod(config)
    ref.final_alpha_cumprod = (
        torch.tensor(1.0, dtype=torch.float64) if config.set_alpha_to_one else ref.alphas_cumprod[0]
    )
    coef = build(config, steps, eta)
    assert coef.band == 1 and bool(coef.draws.all()) == (eta > 0)
    g = torch.Generator().manual_seed(steps)
    shape = (3, 4, 4)
    for n, t in enumerate(ref.timesteps):
        i = steps - 1 - n
        x, out, noise = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(3))
        expected = ref.step(
            out[None], int(t), x[None], eta=eta, variance_noise=noise[None] if eta > 0 else None
        )
        expected = expected.prev_sample[0]
        idx = torch.tensor([i])
        f = coef.features(idx, x[None], out[None])
        got = coef.step(i, x, out, f, noise if eta > 0 else None)
        assert torch.isfinite(got).all()
        if not torch.isfinite(expected).all():
            # at zero terminal SNR with η > 0 diffusers takes √(1 − ᾱ⁻ − c²) of a round-off
            # negative and returns NaN; paratta clamps the radicand at 0
            assert name == "trailing-zero-snr-v" and eta > 0 and n == 0
            continue
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)
        # the published split reassembles the same step: x_i = a_i x_{i+1} + own_i
        own = coef.own(idx, x[None], out[None], f, noise[None] if eta > 0 else None)[0]
        torch.testing.assert_close(coef.a[i] * x + own, got, atol=1e-10, rtol=1e-10)


def test_the_published_split_is_the_notes_a_i() -> None:
    """a_i = √(ᾱ⁻/ᾱ) for ε (Tang et al.'s DDIM map with the network output held fixed), c_i = η σ_i."""
    config = DDIMConfig.from_dict(CONFIGS["sd15"])
    coef = build(config, 50, 0.7)
    ac = alphas_cumprod(config)
    ts = torch.from_numpy(timesteps(config, 50)).flip(0)
    ab = ac[ts]
    abp = torch.where(ts - 20 >= 0, ac[(ts - 20).clamp_min(0)], ac[0])
    sigma = ((1 - abp) / (1 - ab)).sqrt() * (1 - ab / abp).sqrt()
    torch.testing.assert_close(coef.a, (abp / ab).sqrt())
    torch.testing.assert_close(coef.c, 0.7 * sigma)
    assert (coef.timesteps[1:] > coef.timesteps[:-1]).all() and coef.timesteps.dtype == torch.int64
    # set_alpha_to_one=False: the last step lands on ᾱ(0), not on 1
    assert coef.final_noise == pytest.approx(float((1 - ac[0]).sqrt()))


def test_band_form_finds_the_shortest_band_and_refuses_what_is_not_banded() -> None:
    """A two-step Adams-like sampler reads f_i and f_{i+1}; one that reads x_T at every step is not
    banded in the states the network sees, and is refused rather than approximated."""
    n = 6
    trace = Trace(n)
    x, previous = trace.x_T, None
    for k in range(n):
        f = trace.evaluate(x, float(k), 1.0, 0.5, 0.0, 1.0)
        x = 0.9 * x + 0.2 * f + (0.05 * previous if previous is not None else 0)
        previous = f
    trace.finish(x)
    p, w, c = band_form(trace)
    assert w.shape == (n, 2) and np.allclose(p, 0.9) and np.allclose(w[:-1], [0.2, 0.05])
    assert w[-1, 1] == 0 and not c.any()  # the first step has nothing above it
    n = MAX_BAND + 4  # x_T is then no combination of the rows in reach
    trace = Trace(n)
    x = x_T = trace.x_T
    for k in range(n):
        f = trace.evaluate(x, float(k), 1.0, 0.5, 0.0, 1.0)
        x = 0.5 * x + f + (0.3 * k) * x_T  # x_T re-enters every step: not banded
    trace.finish(x)
    with pytest.raises(ValueError, match="not a banded recurrence"):
        band_form(trace)


@pytest.mark.parametrize(
    "bad",
    [
        dict(beta_schedule="cubic"),
        dict(timestep_spacing="random"),
        dict(prediction_type="score"),
        dict(thresholding=True),
        dict(num_train_timesteps=0),
    ],
)
def test_bad_scheduler_configs_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        DDIMConfig.from_dict(bad)


@pytest.mark.parametrize("eta", [-0.1, 1.5, float("nan")])
def test_eta_out_of_range(eta: float) -> None:
    with pytest.raises(ValueError, match="eta"):
        coefficients({}, 10, eta)


def test_steps_out_of_range() -> None:
    with pytest.raises(ValueError, match="steps"):
        coefficients({}, 1001)


def fake_output(coef, j: torch.Tensor, x: torch.Tensor, kappa: torch.Tensor) -> torch.Tensor:
    """A network output at rows ``j`` whose x̂_0 and ε̂ both move as κ x (the flow frame's hypothesis: x/(α + σ)
    moves, the prediction held), written in each prediction type's own terms."""
    x0, eps = kappa[:, None] * x + 0.3, kappa[:, None] * x - 0.2
    alpha, sigma = coef.alpha[j][:, None], coef.sigma[j][:, None]
    return {
        "epsilon": eps,
        "v_prediction": alpha * eps - sigma * x0,
        "flow_prediction": eps - x0,
        "sample": x0,
    }[coef.prediction_type]


@pytest.mark.parametrize(
    "config",
    [{"prediction_type": p} for p in ("epsilon", "v_prediction", "sample")]
    + [{"_class_name": "FlowMatchEulerDiscreteScheduler"}],
    ids=["epsilon", "v", "sample", "flow"],
)
def test_each_linear_part_is_the_slope_of_its_steps_under_its_hypothesis(config) -> None:
    """(4): "published" is (3)'s a (n, 1); "flow" is, row by row, the derivative of step i in the inputs
    x_{i+b+1} when every feature is read from an output whose x̂_0 and ε̂ move as x/(α + σ) (finite
    differences of ``features``); flow Euler's own is A = 1. Every sampler the model's prediction takes."""
    names = [name for name in ("ddim", *SAMPLERS) if name not in ("auto",)]
    checked = 0
    for name in names:
        try:
            coef = coefficients(sampler_config(config, name), 12, 1.0 if name == "ddim" else 0.0)
        except ValueError:
            continue  # a sampler this prediction type cannot use (refused with its reason elsewhere)
        assert torch.equal(coef.linear_part("published"), coef.a[:, None])
        A = coef.linear_part("flow")
        j = torch.arange(coef.num_steps)
        kappa = 1 / (coef.alpha + coef.sigma)
        x, h = torch.randn(coef.num_steps, 3, dtype=torch.float64), 1e-3
        slope = (
            coef.features(j, x + h, fake_output(coef, j, x + h, kappa))
            - coef.features(j, x, fake_output(coef, j, x, kappa))
        ) / h  # ∂f_j/∂x_{j+1} under the hypothesis, per row
        s = torch.cat([slope[:, 0], slope.new_zeros(coef.band)])
        for b in range(coef.band):
            expected = coef.w[:, b] * s[b : b + coef.num_steps] + (coef.p if b == 0 else 0)
            torch.testing.assert_close(A[:, b], expected, rtol=1e-6, atol=1e-9)
        if coef.frame == "flow" and coef.prediction_type == "flow_prediction" and coef.band == 1:
            torch.testing.assert_close(A[:, 0], torch.ones_like(A[:, 0]))
        checked += 1
    assert checked >= 3
    with pytest.raises(ValueError, match="split"):
        coef.linear_part("eps")
