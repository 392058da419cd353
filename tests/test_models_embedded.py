"""The embedded exact-score models: ε against autograd, prompts, protocol, and sampling behaviour."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from paratta.models.mixture import IsotropicMixture, mixture_eps, mixture_log_density, nearest_component
from paratta.models.shapes import ShapesModel, build_shapes_model, parse_prompt, shapes_dataset
from paratta.models.toy2d import Toy2DModel, build_toy2d_model
from paratta.protocol import DiffusionModel
from paratta.samplers import coefficients
from paratta.samplers.ddim import DDIMConfig

TIMESTEPS = torch.tensor([0, 7, 250, 600, 999])  # a different t on every row


@pytest.fixture(scope="module")
def shapes() -> ShapesModel:
    return build_shapes_model()


@pytest.fixture(scope="module")
def toy() -> Toy2DModel:
    return build_toy2d_model()


def brute_force_eps(
    x: Tensor, alpha_bar: Tensor, means: Tensor, scales: Tensor, log_weights: Tensor
) -> Tensor:
    """−√(1−ᾱ) ∇ log p_t(x), with p_t built by torch.distributions and differentiated by autograd."""
    x = x.double().detach().requires_grad_(True)
    ab = alpha_bar.double()[:, None, None]
    loc = ab.sqrt() * means.double()[None]  # (n, K, D)
    scale = (ab * scales.double()[None, :, None] ** 2 + 1 - ab).sqrt().expand_as(loc)
    logits = log_weights.double().expand(x.shape[0], -1)
    p_t = MixtureSameFamily(Categorical(logits=logits), Independent(Normal(loc, scale), 1))
    (grad,) = torch.autograd.grad(p_t.log_prob(x).sum(), x)
    return -(1 - alpha_bar.double())[:, None].sqrt() * grad


def noised_points(means: Tensor, alpha_bar: Tensor, generator: torch.Generator) -> Tensor:
    """x_t = √ᾱ μ_j + √(1−ᾱ) z for random components j: points where samplers actually go."""
    j = torch.randint(means.shape[0], (alpha_bar.shape[0],), generator=generator)
    z = torch.randn(alpha_bar.shape[0], means.shape[1], generator=generator, dtype=torch.float64)
    return alpha_bar[:, None].sqrt() * means[j] + (1 - alpha_bar[:, None]).sqrt() * z


def ddim_sample(model: DiffusionModel, x_T: Tensor, prompt: str, guidance: float, steps: int = 20) -> Tensor:
    """Batched sequential DDIM (η = 0) from the schedule alone: x_i = p_i x_{i+1} + w_i f_i."""
    coef = coefficients(model.scheduler_config, steps)
    cond, x = model.encode(prompt), x_T.double()
    for i in reversed(range(steps)):
        idx = torch.full((x.shape[0],), i)
        f = coef.features(idx, x, model.predict(x, coef.timesteps[idx], cond, guidance))
        x = coef.p[i] * x + coef.w[i, 0] * f
    return x


def test_mixture_eps_matches_autograd_with_mixed_scales_weights_and_times() -> None:
    g = torch.Generator().manual_seed(0)
    means = torch.randn(6, 5, generator=g, dtype=torch.float64) * 2
    scales = torch.tensor([0.05, 0.1, 0.3, 0.5, 1.0, 0.2], dtype=torch.float64)
    log_weights = torch.tensor([0.0, -1.0, 0.5, -math.inf, 0.2, -2.0], dtype=torch.float64)
    mix = IsotropicMixture.create(means, scales)
    alpha_bar = torch.tensor([0.9999, 0.9, 0.5, 0.1, 0.005], dtype=torch.float64)
    x = noised_points(means, alpha_bar, g)
    x[1] += 10.0  # far from everything: responsibilities saturate, logsumexp must hold
    expected = brute_force_eps(x, alpha_bar, means, scales, log_weights)
    torch.testing.assert_close(mixture_eps(x, alpha_bar, mix, log_weights), expected, rtol=1e-9, atol=1e-9)
    # Two weightings share one distance computation and match separate calls.
    both = mixture_eps(x, alpha_bar, mix, torch.stack([log_weights, torch.zeros(6, dtype=torch.float64)]))
    torch.testing.assert_close(both[0], expected, rtol=1e-9, atol=1e-9)
    uniform = mixture_eps(x, alpha_bar, mix, torch.zeros(6))
    torch.testing.assert_close(both[1], uniform, rtol=1e-12, atol=1e-12)
    assert mixture_eps(x.float(), alpha_bar, mix, log_weights).dtype == torch.float32
    with pytest.raises(ValueError, match="no component"):
        mixture_eps(x, alpha_bar, mix, torch.full((6,), -math.inf))


def test_mixture_log_density_is_normalised_in_2d(toy: Toy2DModel) -> None:
    for t in (0, 500):
        p = toy.density_grid(t, extent=6.0, n=200)
        assert math.isclose(float(torch.from_numpy(p).exp().sum()) * (12.0 / 200) ** 2, 1.0, rel_tol=1e-3)
    t = 321
    assert (toy.density_grid(t, n=16) == toy.density_grid(float(toy.alphas_cumprod[t]), n=16)).all()
    log_p = mixture_log_density(torch.zeros(1, 2), 0.5, toy.mixture, torch.zeros(8))
    assert log_p.shape == (1,)


def test_shapes_predict_matches_autograd_with_guidance_and_negative_prompt(shapes: ShapesModel) -> None:
    cond = shapes.encode("red circle", negative_prompt="blue square")
    keep_c, keep_u = (torch.isfinite(w).cpu() for w in cond.log_weights)
    assert 0 < keep_c.sum() < 100 and 0 < keep_u.sum() < 100  # small enough for the brute force
    g = torch.Generator().manual_seed(1)
    means = shapes.mixture.means.cpu()
    alpha_bar = shapes.alphas_cumprod[TIMESTEPS].cpu()
    x = noised_points(means[keep_c], alpha_bar, g)
    scales = torch.full((int(keep_c.sum()),), shapes.scale)
    eps_c = brute_force_eps(x, alpha_bar, means[keep_c], scales, torch.zeros(len(scales)))
    eps_u = brute_force_eps(
        x,
        alpha_bar,
        means[keep_u],
        torch.full((int(keep_u.sum()),), shapes.scale),
        torch.zeros(int(keep_u.sum())),
    )
    out = shapes.predict(x.reshape(-1, 3, 32, 32), TIMESTEPS, cond, guidance=2.5).reshape(len(x), -1)
    torch.testing.assert_close(out, eps_u + 2.5 * (eps_c - eps_u), rtol=1e-7, atol=1e-7)
    only_c = shapes.predict(x.reshape(-1, 3, 32, 32), TIMESTEPS, cond, guidance=1.0).reshape(len(x), -1)
    torch.testing.assert_close(only_c, eps_c, rtol=1e-7, atol=1e-7)


def test_toy2d_predict_matches_autograd(toy: Toy2DModel) -> None:
    g = torch.Generator().manual_seed(2)
    alpha_bar = toy.alphas_cumprod[TIMESTEPS].cpu()
    x = noised_points(toy.means, alpha_bar, g)
    scales = torch.full((8,), toy.scale)
    full = brute_force_eps(x, alpha_bar, toy.means, scales, torch.zeros(8))
    torch.testing.assert_close(toy.predict(x, TIMESTEPS, toy.encode(""), 1.0), full, rtol=1e-9, atol=1e-9)
    north = brute_force_eps(x, alpha_bar, toy.means[2:3], scales[:1], torch.zeros(1))
    guided = toy.predict(x, TIMESTEPS, toy.encode("the north cluster"), 3.0)
    torch.testing.assert_close(guided, full + 3.0 * (north - full), rtol=1e-9, atol=1e-9)


def test_mixed_timesteps_batch_equals_row_by_row(shapes: ShapesModel, toy: Toy2DModel) -> None:
    for model in (shapes, toy):
        x = torch.randn(len(TIMESTEPS), *model.latent_shape, generator=torch.Generator().manual_seed(3))
        cond = model.encode("", "")
        batch = model.predict(x, TIMESTEPS, cond, 2.0)
        assert batch.shape == x.shape and batch.dtype == torch.float32
        rows = [model.predict(x[i : i + 1], TIMESTEPS[i : i + 1], cond, 2.0) for i in range(len(x))]
        torch.testing.assert_close(batch, torch.cat(rows), rtol=1e-5, atol=1e-6)


def test_protocol_conformance(shapes: ShapesModel, toy: Toy2DModel) -> None:
    for model, size in ((shapes, 32), (toy, 64)):
        assert isinstance(model, DiffusionModel)
        assert DDIMConfig.from_dict(model.scheduler_config).set_alpha_to_one is False
        x0 = torch.randn(2, *model.latent_shape) * 3
        for image in (model.decode(x0), model.preview(x0)):
            assert image.shape == (2, 3, size, size) and image.device.type == "cpu"
            assert image.min() >= 0 and image.max() <= 1
    assert shapes.name == "shapes" and shapes.latent_shape == (3, 32, 32) and shapes.num_components >= 500
    assert toy.name == "toy2d" and toy.latent_shape == (2,)


def test_declared_capabilities(shapes: ShapesModel, toy: Toy2DModel) -> None:
    """Each capability is an attribute the library reads as declared (``paratta.protocol``)."""
    from paratta.problem import at_size, for_family
    from paratta.registry import BUILTIN_MODELS, model_defaults

    for model in (shapes, toy):
        assert model.defaults is BUILTIN_MODELS[model.name].defaults == model_defaults(model.name, model)
        assert model.families == ("ddim", "flow") and for_family(model, "flow").families == model.families
        assert (
            not model.takes_image_size
            and model.frames is None
            and model.rows_per_timestep == 1
            and model.classifier_free
        )
        assert (
            model.labels is None
            and "colour" in (shapes.vocabulary or {})
            and model.schedule_arguments(5) == {}
        )
        assert at_size(model, None, None) is model
        draw = model.draw_latents(torch.Generator().manual_seed(0))
        assert torch.equal(
            draw, torch.randn((1, *model.latent_shape), generator=torch.Generator().manual_seed(0))[0]
        )
    assert shapes.image_size == (32, 32) and toy.image_size == (64, 64)


def test_unknown_word_lists_the_vocabulary(shapes: ShapesModel, toy: Toy2DModel) -> None:
    with pytest.raises(ValueError, match="unknown word 'dog'") as err:
        shapes.encode("a red dog")
    for word in ("circle", "triangle", "purple", "small", "left", "gray"):
        assert word in str(err.value)
    with pytest.raises(ValueError, match="unknown word 'hexagon'"):
        shapes.encode("red circle", negative_prompt="hexagon")
    with pytest.raises(ValueError, match="unknown word 'up'.*northeast"):
        toy.encode("up")


def test_prompt_matching_no_image_is_an_error(shapes: ShapesModel) -> None:
    with pytest.raises(ValueError, match="no image matches"):
        shapes.encode("white square on white")
    with pytest.raises(ValueError, match="not a background colour"):
        shapes.encode("circle on a red background")


def test_prompt_parsing(shapes: ShapesModel) -> None:
    assert parse_prompt("") == {}
    assert parse_prompt("A blue ring on white") == {
        "colour": {"blue"},
        "shape": {"ring"},
        "background": {"white"},
    }
    assert parse_prompt("white circles on a blue background") == {
        "colour": {"white"},
        "shape": {"circle"},
        "background": {"blue"},
    }
    assert parse_prompt("big crosses, black, grey") == {
        "size": {"large"},
        "shape": {"cross"},
        "background": {"black", "gray"},
    }
    assert parse_prompt("red or green square in the center") == {
        "colour": {"red", "green"},
        "shape": {"square"},
        "position": {"centre"},
    }
    # Every caption names exactly its own image.
    for k in range(0, shapes.num_components, 97):
        keep = torch.isfinite(shapes.encode(shapes.captions[k]).log_weights[0]).nonzero().flatten()
        assert keep.tolist() == [k]
    assert shapes.encode("").num_matching == shapes.num_components


def test_empty_prompts_skip_guidance(shapes: ShapesModel) -> None:
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    t = torch.tensor([10, 500, 900])
    cond = shapes.encode("")
    assert torch.equal(shapes.predict(x, t, cond, 7.5), shapes.predict(x, t, cond, 1.0))
    negative = shapes.encode("", negative_prompt="red")
    assert not torch.equal(shapes.predict(x, t, negative, 7.5), shapes.predict(x, t, cond, 1.0))


def test_sampling_is_not_chaotic_and_is_varied(shapes: ShapesModel) -> None:
    g = torch.Generator().manual_seed(5)
    x_T = torch.randn(8, 3, 32, 32, generator=g)
    nudged = x_T + 1e-3 * torch.randn(8, 3, 32, 32, generator=g)
    x0 = ddim_sample(shapes, torch.cat([x_T, nudged]), "", 1.0)
    k = nearest_component(x0, shapes.mixture)
    assert torch.equal(k[:8], k[8:])
    assert (x0[:8] - x0[8:]).abs().max() < 0.02
    assert len(set(k[:8].tolist())) >= 6  # different seeds, different pictures


def test_prompt_adherence(shapes: ShapesModel) -> None:
    x_T = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    for guidance in (1.0, 3.0):
        x0 = ddim_sample(shapes, x_T, "red circle", guidance)
        k = nearest_component(x0, shapes.mixture)
        assert all(shapes.attributes[i]["colour"] == "red" for i in k.tolist())
        assert all(shapes.attributes[i]["shape"] == "circle" for i in k.tolist())
        rms = (x0 - shapes.mixture.means[k].reshape(x0.shape)).pow(2).mean((1, 2, 3)).sqrt()
        assert (rms < 2 * shapes.scale).all()  # a clean picture of that image, not a blend


def test_toy2d_prompt_adherence(toy: Toy2DModel) -> None:
    x_T = torch.randn(16, 2, generator=torch.Generator().manual_seed(7))
    x0 = ddim_sample(toy, x_T, "north", 2.0)
    assert (nearest_component(x0, toy.mixture) == 2).all()
    assert len(set(nearest_component(ddim_sample(toy, x_T, "", 1.0), toy.mixture).tolist())) >= 4


def test_determinism(shapes: ShapesModel) -> None:
    again = build_shapes_model()
    assert torch.equal(again.images, shapes.images) and again.captions == shapes.captions
    a, captions_a, attrs_a = shapes_dataset(n=16, seed=3)
    b, captions_b, attrs_b = shapes_dataset(n=16, seed=3)
    c, _, _ = shapes_dataset(n=16, seed=4)
    assert torch.equal(a, b) and captions_a == captions_b and attrs_a == attrs_b
    assert not torch.equal(a, c)
    assert a.shape == (16, 3, 32, 32) and a.min() >= -1 and a.max() <= 1
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    cond = shapes.encode("small triangle", "large")
    t = torch.tensor([100, 800])
    repeat = again.predict(x, t, again.encode("small triangle", "large"), 3.0)
    assert torch.equal(shapes.predict(x, t, cond, 3.0), repeat)
