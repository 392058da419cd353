"""An exact-score image model: a Gaussian mixture over procedurally drawn, captioned 32×32 shapes.

Every image μ_k of a fixed grid (shape × colour × background × size × position) is one
component N(μ_k, s² I) of p_0 in pixel space [−1, 1]^(3×32×32), so the model's ε is exact
(``paratta.models.mixture``) and sampling has no network error. Prompts select components by
their attributes; the same generator, with random jitter, makes training data for a real UNet.
"""

from __future__ import annotations

import itertools
import math
import re
import unicodedata

import torch
from torch import Tensor

from paratta.models.mixture import MixtureModel, mask_log_weights
from paratta.registry import BUILTIN_MODELS

SHAPES = ("circle", "square", "triangle", "ring", "cross", "diamond")
COLOURS = {  # shape colours, RGB in [0, 1]
    "red": (0.90, 0.12, 0.12),
    "green": (0.15, 0.75, 0.25),
    "blue": (0.15, 0.35, 0.95),
    "yellow": (0.97, 0.85, 0.10),
    "purple": (0.60, 0.20, 0.80),
    "orange": (1.00, 0.55, 0.05),
    "white": (0.96, 0.96, 0.96),
}
BACKGROUNDS = {
    "black": (0.04, 0.04, 0.05),
    "white": (0.98, 0.98, 0.98),
    "gray": (0.50, 0.50, 0.50),
    "blue": (0.08, 0.14, 0.42),
}
SIZES = {"small": 0.30, "large": 0.55}  # radius in image units (the image spans [−1, 1])
POSITIONS = {
    "centre": (0.0, 0.0),
    "left": (-0.42, 0.0),
    "right": (0.42, 0.0),
    "top": (0.0, -0.42),
    "bottom": (0.0, 0.42),
}  # (x, y), y grows downwards as in the image rows
POSITION_PHRASES = {
    "centre": "in the centre",
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
}
ALIASES = {
    "grey": "gray",
    "big": "large",
    "tiny": "small",
    "center": "centre",
    "middle": "centre",
    "disc": "circle",
    "disk": "circle",
    "plus": "cross",
    "violet": "purple",
}
STOP_WORDS = frozenset({"a", "an", "the", "on", "with", "background", "in", "of", "at", "and", "or"})
CATEGORIES = ("shape", "colour", "background", "size", "position")
SCALE = 0.06  # s: per-pixel std of every component; ±3 % noise in [0, 1] pixels, smooth responsibilities
EDGE = 0.025  # softness of the shape edges (sigmoid scale), 0.4 pixel: anti-aliased, no ringing


def vocabulary() -> dict[str, tuple[str, ...]]:
    """Prompt words by category (backgrounds are said "on <colour>" or "<colour> background")."""
    return {
        "shape": SHAPES,
        "colour": tuple(COLOURS),
        "background": tuple(BACKGROUNDS),
        "size": tuple(SIZES),
        "position": tuple(POSITIONS),
        "ignored": tuple(sorted(STOP_WORDS)),
    }


def _vocabulary_text() -> str:
    parts = [f"{cat}: {', '.join(words)}" for cat, words in vocabulary().items()]
    parts.append("aliases: " + ", ".join(f"{a}={w}" for a, w in ALIASES.items()))
    return "; ".join(parts)


def _grid_attributes() -> list[dict[str, str]]:
    """The fixed grid, in a fixed order; a shape never has its background's colour."""
    return [
        dict(zip(CATEGORIES, combo, strict=True))
        for combo in itertools.product(SHAPES, COLOURS, BACKGROUNDS, SIZES, POSITIONS)
        if combo[1] != combo[2]
    ]


def caption(attrs: dict[str, str]) -> str:
    """E.g. "a small red circle on the left, on a black background" (parses back to exactly ``attrs``)."""
    return (
        f"a {attrs['size']} {attrs['colour']} {attrs['shape']} {POSITION_PHRASES[attrs['position']]}, "
        f"on a {attrs['background']} background"
    )


def _signed_distance(shape: Tensor, qx: Tensor, qy: Tensor, r: Tensor) -> Tensor:
    """Signed distance (negative inside) of each shape, in shape-local coordinates q, radius r.

    Exact inside; the max-of-half-planes forms are slight underestimates outside corners, which
    only sharpens the corners by a fraction of a pixel.
    """
    ax, ay, rho = qx.abs(), qy.abs(), torch.hypot(qx, qy)
    h = 0.82 * r  # square half-side: area close to the circle's

    def box(a: Tensor, b: Tensor) -> Tensor:
        return torch.maximum(ax - a, ay - b)

    rt, c30 = 1.15 * r, math.cos(math.pi / 6)
    ty = qy - rt / 4  # centre the triangle's bounding box, not its centroid
    triangle = torch.maximum(torch.maximum(ty, c30 * qx - 0.5 * ty), -c30 * qx - 0.5 * ty) - rt / 2
    table = torch.stack(
        [
            rho - r,
            box(h, h),
            triangle,
            (rho - 0.70 * r).abs() - 0.28 * r,
            torch.minimum(box(r, 0.32 * r), box(0.32 * r, r)),
            (ax + ay - 1.05 * r) / math.sqrt(2),
        ]
    )
    return table.gather(0, shape.view(1, -1, 1, 1).expand(1, *qx.shape)).squeeze(0)


def render(
    shape: Tensor,
    colour: Tensor,
    background: Tensor,
    centre: Tensor,
    radius: Tensor,
    angle: Tensor,
    resolution: int = 32,
) -> Tensor:
    """Images (K, 3, H, W) in [−1, 1]: colour · α + background · (1 − α), α = sigmoid(−sdf / EDGE).

    shape (K,) indexes SHAPES; colour, background (K, 3) RGB in [0, 1]; centre (K, 2) (x, y);
    radius, angle (K,) (angle in radians, clockwise on screen).
    """
    p = (torch.arange(resolution, dtype=torch.float64) + 0.5) / resolution * 2 - 1
    py, px = torch.meshgrid(p, p, indexing="ij")
    dx, dy = px - centre[:, 0, None, None], py - centre[:, 1, None, None]
    cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
    qx, qy = cos * dx + sin * dy, -sin * dx + cos * dy
    alpha = torch.sigmoid(-_signed_distance(shape, qx, qy, radius[:, None, None]) / EDGE)[:, None]
    rgb = colour[:, :, None, None] * alpha + background[:, :, None, None] * (1 - alpha)
    return (rgb * 2 - 1).float()


def shapes_dataset(
    n: int | None = None,
    seed: int = 0,
    resolution: int = 32,
) -> tuple[Tensor, list[str], list[dict[str, str]]]:
    """Captioned shape images (K, 3, H, W) in [−1, 1], their captions and attribute dicts.

    ``n=None``: the fixed grid the mixture model uses, no jitter (K = 1560). Otherwise ``n``
    images with grid attributes drawn uniformly and jittered position (±0.08), radius (×0.9–1.1),
    rotation (±17°) and colours (std 0.03), deterministic in ``seed``.
    """
    grid = _grid_attributes()
    if n is None:
        attrs, g = grid, None
    else:
        g = torch.Generator().manual_seed(seed)
        attrs = [grid[i] for i in torch.randint(len(grid), (n,), generator=g).tolist()]
    k = len(attrs)
    shape = torch.tensor([SHAPES.index(a["shape"]) for a in attrs])
    colour = torch.tensor([COLOURS[a["colour"]] for a in attrs], dtype=torch.float64)
    background = torch.tensor([BACKGROUNDS[a["background"]] for a in attrs], dtype=torch.float64)
    centre = torch.tensor([POSITIONS[a["position"]] for a in attrs], dtype=torch.float64).reshape(k, 2)
    radius = torch.tensor([SIZES[a["size"]] for a in attrs], dtype=torch.float64)
    angle = torch.zeros(k, dtype=torch.float64)
    if g is not None:

        def uniform(*shape_: int) -> Tensor:
            return torch.rand(*shape_, generator=g, dtype=torch.float64) * 2 - 1

        radius = radius * (1 + 0.1 * uniform(k))
        limit = (0.98 - radius)[:, None]  # keep the jittered shape inside the frame
        centre = torch.maximum(torch.minimum(centre + 0.08 * uniform(k, 2), limit), -limit)
        angle = 0.3 * uniform(k)
        colour = (colour + 0.03 * torch.randn(k, 3, generator=g, dtype=torch.float64)).clamp(0, 1)
        background = (background + 0.03 * torch.randn(k, 3, generator=g, dtype=torch.float64)).clamp(0, 1)
    images = render(shape, colour, background, centre, radius, angle, resolution)
    return images, [caption(a) for a in attrs], attrs


def _normalise(word: str) -> str:
    word = ALIASES.get(word, word)
    known = set(SHAPES) | set(COLOURS) | set(BACKGROUNDS) | set(SIZES) | set(POSITIONS) | STOP_WORDS
    for stem in (word, word[:-1], word[:-2]):  # plurals: circles, crosses
        if stem in known:
            return stem
    return word


def stray_characters(prompt: str) -> list[str]:
    """Characters that are neither in a word nor a separator one can see: control and format characters
    (NUL, zero-width, bidi controls), marks on their own, and symbols such as emoji."""
    return [
        c
        for c in dict.fromkeys(prompt)
        if not c.isspace() and (unicodedata.category(c)[0] in "CM" or unicodedata.category(c) in ("So", "Sk"))
    ]


def prompt_words(prompt: str) -> list[str]:
    """The prompt's words, lower-cased: runs of letters or digits in any script, so that a word outside
    the vocabulary ("红色", "3") is named rather than silently dropped. A prompt with characters that
    would otherwise silently split or join words (``stray_characters``) is refused, naming them."""
    stray = stray_characters(prompt)
    if stray:
        named = ", ".join(f"U+{ord(c):04X} {unicodedata.name(c, 'unnamed')}" for c in stray[:6])
        more = f" and {len(stray) - 6} more" if len(stray) > 6 else ""
        raise ValueError(
            f"prompt has characters that are neither words nor separators: {named}{more}; remove them"
        )
    return re.findall(r"[^\W_]+", prompt.lower())


def unknown_words_error(words: list[str], prompt: str, vocabulary_text: str) -> ValueError:
    """One error naming every unknown word (each, and the prompt, cut short: the message stays small)."""
    cut = [w if len(w) <= 30 else w[:30] + "…" for w in dict.fromkeys(words)]
    named = ", ".join(repr(w) for w in cut[:12]) + (f" and {len(cut) - 12} more" if len(cut) > 12 else "")
    quoted = repr(prompt if len(prompt) <= 80 else prompt[:80] + "…")
    plural = "s" if len(cut) > 1 else ""
    return ValueError(f"unknown word{plural} {named} in prompt {quoted}; vocabulary: {vocabulary_text}")


def parse_prompt(prompt: str) -> dict[str, set[str]]:
    """Attribute values named by a prompt, by category; empty dict for an empty prompt.

    A colour right after "on" or right before "background" is a background colour; so is a
    colour that only exists as a background ("black", "gray"); any other colour is the shape's.
    """
    words = [_normalise(w) for w in prompt_words(prompt)]
    query: dict[str, set[str]] = {}
    unknown = []
    for i, w in enumerate(words):
        if w in STOP_WORDS:
            continue
        after_on = i > 0 and words[i - 1] == "on"
        said_background = after_on or (i + 1 < len(words) and words[i + 1] == "background")
        if w in COLOURS and not said_background:
            category = "colour"
        elif w in BACKGROUNDS or (said_background and w in COLOURS):
            if w not in BACKGROUNDS:
                raise ValueError(f"{w!r} is not a background colour; backgrounds: {', '.join(BACKGROUNDS)}")
            category = "background"
        else:
            category = next((c for c in CATEGORIES if w in vocabulary()[c]), "")
            if not category:
                unknown.append(w)
                continue
        query.setdefault(category, set()).add(w)
    if unknown:
        raise unknown_words_error(unknown, prompt, _vocabulary_text())
    return query


def match(attributes: list[dict[str, str]], query: dict[str, set[str]]) -> Tensor:
    """Boolean mask (K,): for every category the query mentions, the component's value is one named."""
    return torch.tensor([all(a[c] in values for c, values in query.items()) for a in attributes])


class ShapesModel(MixtureModel):
    """The mixture of ``shapes_dataset()`` images with exact ε; implements ``DiffusionModel``."""

    name = "shapes"
    defaults = BUILTIN_MODELS["shapes"].defaults
    image_size = (32, 32)

    def __init__(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        images, self.captions, self.attributes = shapes_dataset()
        self.images = images  # μ_k, (K, 3, 32, 32), CPU float32
        super().__init__(images, SCALE, device, dtype)
        self.vocabulary = vocabulary()

    def _select(self, prompt: str) -> Tensor:
        mask = match(self.attributes, parse_prompt(prompt))
        if not mask.any():
            raise ValueError(
                f"no image matches {prompt!r} (every image has one shape, colour, background, "
                "size and position, and a shape never has its background's colour)"
            )
        return mask_log_weights(mask)

    def decode(self, x0: Tensor) -> Tensor:
        return ((x0.detach().float().cpu() + 1) / 2).clamp(0, 1)

    def preview(self, x0: Tensor) -> Tensor:
        return self.decode(x0)


def build_shapes_model(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> ShapesModel:
    return ShapesModel(device=device, dtype=dtype)
