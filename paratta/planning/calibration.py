"""The batch-latency curve of one model on this device, measured in a few seconds and cached on disk.

``curve`` answers, in order: a table shipped in ``paratta/data/latency.json`` measured on a device of
this name; a calibration cached earlier for this device, model, latent shape, dtype and rows per
timestep; a new calibration (``calibrate``), which it then caches. A cache file that cannot be read
or does not match its key is refused with a warning that names it, and recalibrated.

Calibration times ``model.predict`` on n timesteps (n·r rows under guidance) for n = 1, 2, 4, … up
to the run's T, with the device synchronised around each call, within a time budget: beyond the
largest size measured, ``LatencyTable.call_ms`` extrapolates by chunks of that size.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from paratta.problem import Problem

from .hardware import device_name
from .latency import TABLE_NAME, Curve, LatencyTable, load_tables, rows_per_step

CACHE_ENV = "PARATTA_CACHE_DIR"  # where calibrations are cached (default ~/.cache/paratta)
SLOW_S = 0.25  # a call slower than this is timed once: repeating it would only add seconds


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "paratta")


def cache_key(problem: Problem, device: torch.device) -> dict[str, Any]:
    """What a calibration depends on: device, model, latent shape, dtype, rows per timestep, torch."""
    model = problem.model
    return {
        "device": device_name(device),
        "model": model.name,
        "latent_shape": list(model.latent_shape),
        "dtype": str(model.dtype).removeprefix("torch."),
        "rows_per_step": rows_per_step(problem.guidance, model),
        "torch": torch.__version__,
    }


def cache_path(key: dict[str, Any]) -> Path:
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"latency-{digest}.json"


def calibrate(
    problem: Problem, device: torch.device, repeats: int = 5, budget_s: float = 10.0
) -> LatencyTable:
    """Measure the latency of one network call on 1, 2, 4, … up to T timesteps (see the module doc).

    Each size gets one untimed warm-up call, then the fastest of ``repeats`` timed calls (one for a
    call slower than ``SLOW_S``): the least disturbed call, which other work on the machine can only
    slow down. Sizes stop growing once the calibration has taken ``budget_s``.
    """
    model = problem.model
    per_step = rows_per_step(problem.guidance, model)
    T = problem.steps
    sizes = sorted({min(2**j, T) for j in range(T.bit_length() + 1)})
    rows, ms = [], []
    start = time.perf_counter()
    for n in sizes:
        x = problem.x_T[None].expand(n, *problem.x_T.shape).to(model.device, model.dtype)
        t = problem.coef.timesteps[torch.arange(n) % T].to(model.device)
        warm = _timed(model, x, t, problem, device)
        times = [_timed(model, x, t, problem, device) for _ in range(repeats if warm < 1e3 * SLOW_S else 1)]
        rows.append(n * per_step)
        ms.append(min(times))
        if time.perf_counter() - start > budget_s:
            break
    return LatencyTable(
        model=model.name,
        device=device_name(device),
        rows=tuple(rows),
        ms=tuple(ms),
        dtype=str(model.dtype).removeprefix("torch."),
        date=time.strftime("%Y-%m-%d"),
    )


def _timed(model: Any, x: torch.Tensor, t: torch.Tensor, problem: Problem, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        model.predict(x, t, problem.cond, problem.guidance)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 1e3 * (time.perf_counter() - t0)


def read_cache(path: Path, key: dict[str, Any]) -> LatencyTable | None:
    """The cached table at ``path`` for ``key``; None when there is none; a warning, then None, when
    the file is unreadable, malformed or for another key."""
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("key") != key:
            raise ValueError("its key does not match this device, model, shape and dtype")
        table = doc["table"]
        return LatencyTable(**{**table, "rows": tuple(table["rows"]), "ms": tuple(table["ms"])})
    except (OSError, ValueError, KeyError, TypeError) as err:
        warnings.warn(f"latency cache {path} refused ({err}); recalibrating", RuntimeWarning, stacklevel=3)
        return None


def write_cache(path: Path, key: dict[str, Any], table: LatencyTable) -> None:
    """Write atomically (a rename), so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_text(json.dumps({"key": key, "table": asdict(table)}, indent=1), encoding="utf-8")
    os.replace(staging, path)


def shipped(problem: Problem, device: torch.device) -> LatencyTable | None:
    """The shipped table of this model, if it was measured on a device of this name."""
    table = load_tables().get(problem.model.name.strip().rstrip("/"))
    if table is None or device.type != "cuda":
        return None
    return table if table.device.startswith(device_name(device)) else None


def curve(problem: Problem, device: torch.device) -> Curve:
    """This device's batch-latency curve for the problem's model (see the module docstring)."""
    table = shipped(problem, device)
    if table is not None:
        return Curve(table, f"latency table shipped in {TABLE_NAME} ({table.device}, {table.date})")
    key = cache_key(problem, device)
    path = cache_path(key)
    table = read_cache(path, key)
    if table is not None:
        return Curve(table, f"calibration on this device ({table.date}, cached in {path})")
    table = calibrate(problem, device)
    try:
        write_cache(path, key, table)
    except OSError as err:  # a read-only home: the curve is still good for this run
        warnings.warn(f"latency cache {path} not written ({err})", RuntimeWarning, stacklevel=2)
    return Curve(table, "calibration on this device, made now")
