"""Turn raw control values (from the browser or a gradio_client call) into a Request and a SolverConfig.

Numbers are checked here (a non-number is a clear ``ValueError``), the app's caps are applied,
and everything else is left to the library's own validation so its messages reach the user.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Any

from paratta import Request, SolverConfig
from paratta.config import INITS, SOLVERS


@dataclass(frozen=True)
class Caps:
    """Per-run limits so one user cannot hog a shared machine (stricter on a Hugging Face Space)."""

    max_steps: int
    max_window: int

    @classmethod
    def from_env(cls) -> Caps:
        return cls(100, 100) if os.environ.get("SPACE_ID") else cls(200, 200)


@dataclass(frozen=True)
class RunSettings:
    model: str
    request: Request
    config: SolverConfig

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, **asdict(self.request), **asdict(self.config)}


def as_int(name: str, value: Any) -> int:
    """An int from an int, an integral float or a numeric string; else ``ValueError`` naming ``name``."""
    number = as_float(name, value)
    if number != int(number):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return int(number)


def as_float(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


def parse_settings(
    model: str,
    prompt: str | None,
    negative_prompt: str | None,
    seed: Any,
    steps: Any,
    eta: Any,
    guidance: Any,
    solver: str,
    order: Any,
    window: Any,
    history: Any,
    tol: Any,
    max_iters: Any,
    init: str,
    caps: Caps,
    needs_prompt: bool = False,
    stopping: str = "budget",
) -> RunSettings:
    """Validate everything a run needs; raises ``ValueError`` with a message meant for the user."""
    prompt, negative_prompt = (prompt or "").strip(), (negative_prompt or "").strip()
    if needs_prompt and not prompt:
        raise ValueError("prompt is empty: this model needs a text prompt")
    steps_ = as_int("steps", steps)
    if steps_ > caps.max_steps:
        raise ValueError(
            f"steps must be at most {caps.max_steps} in this app (a cap that keeps the machine "
            f"shared fairly); got {steps_}"
        )
    window_ = as_int("window", window)
    if window_ > caps.max_window:
        raise ValueError(f"window must be at most {caps.max_window} in this app; got {window_}")
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}; got {solver!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}; got {init!r}")
    request = Request(
        prompt=prompt,
        negative_prompt=negative_prompt,
        seed=as_int("seed", seed),
        steps=steps_,
        eta=as_float("eta", eta),
        guidance=as_float("guidance", guidance),
    )
    request.validate()
    order_ = as_int("order", order)
    if solver == "sequential":  # order and window are hidden for it and do not apply
        order_, window_ = 1, 1
    config = SolverConfig(
        solver=solver,
        order=order_,
        window=window_,
        history=as_int("history", history),
        tol=as_float("tolerance", tol),
        max_iters=as_int("max_iters", max_iters),
        init=init,
        stopping=stopping,
    )
    config.validate(steps_)
    return RunSettings(model=model, request=request, config=config)
