"""Coefficients and the single DDIM step against diffusers' own DDIMScheduler."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler

from paratta.schedule import (
    SchedulerConfig,
    alphas_cumprod,
    ddim_coefficients,
    inference_timesteps,
)

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
    config = SchedulerConfig.from_dict(ref.config)
    torch.testing.assert_close(alphas_cumprod(config), ref.alphas_cumprod.double(), atol=1e-6, rtol=0)
    for steps in (1, 7, 25, 50, 100, 1000):
        ref.set_timesteps(steps)
        assert torch.equal(inference_timesteps(config, steps), ref.timesteps)


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("steps", [10, 50])
def test_every_step_matches_diffusers_step(name: str, eta: float, steps: int) -> None:
    """Formula for formula: diffusers' step run in float64 on paratta's ᾱ table (the table itself
    is compared above), so any difference is a coefficient error, not round-off."""
    ref = DDIMScheduler(**CONFIGS[name])
    ref.set_timesteps(steps)
    config = SchedulerConfig.from_dict(ref.config)
    ref.alphas_cumprod = alphas_cumprod(config)
    ref.final_alpha_cumprod = (
        torch.tensor(1.0, dtype=torch.float64) if config.set_alpha_to_one else ref.alphas_cumprod[0]
    )
    coef = ddim_coefficients(config, steps, eta)
    g = torch.Generator().manual_seed(steps)
    shape = (2, 3, 4, 4)
    for n, t in enumerate(ref.timesteps):
        i = steps - 1 - n
        x, out, noise = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(3))
        expected = ref.step(out, int(t), x, eta=eta, variance_noise=noise if eta > 0 else None).prev_sample
        idx = torch.full((shape[0],), i)
        got = coef.step(idx, x, out, noise if eta > 0 else None)
        assert torch.isfinite(got).all()
        if not torch.isfinite(expected).all():
            # at zero terminal SNR with η > 0 diffusers takes √(1 − ᾱ⁻ − c²) of a round-off
            # negative and returns NaN; paratta clamps the radicand at 0
            assert name == "trailing-zero-snr-v" and eta > 0 and n == 0
            continue
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)
        # the affine split used by the parallel solver reassembles the same step
        d = coef.increment(idx, x, out, noise if eta > 0 else None)
        torch.testing.assert_close(coef.a[i] * x + d, got, atol=1e-12, rtol=0)


def test_coefficients_follow_the_notes_formulas() -> None:
    config = SchedulerConfig.from_dict(CONFIGS["sd15"])
    coef = ddim_coefficients(config, 50, 0.7)
    ab, abp = coef.alpha_bar, coef.alpha_bar_prev
    sigma = ((1 - abp) / (1 - ab)).sqrt() * (1 - ab / abp).sqrt()
    torch.testing.assert_close(coef.sigma, sigma)
    torch.testing.assert_close(coef.c, 0.7 * sigma)
    torch.testing.assert_close(coef.a, (abp / ab).sqrt())
    assert coef.alpha_bar.dtype == torch.float64
    # set_alpha_to_one=False: the last step lands on ᾱ(0), not on 1
    assert float(abp[0]) == pytest.approx(float(alphas_cumprod(config)[0]))
    assert (coef.timesteps[1:] > coef.timesteps[:-1]).all()


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
        SchedulerConfig.from_dict(bad)


@pytest.mark.parametrize("eta", [-0.1, 1.5, float("nan")])
def test_eta_out_of_range(eta: float) -> None:
    with pytest.raises(ValueError, match="eta"):
        ddim_coefficients(SchedulerConfig(), 10, eta)


def test_steps_out_of_range() -> None:
    with pytest.raises(ValueError, match="steps"):
        ddim_coefficients(SchedulerConfig(), 1001)
