"""The README's knobs table lists every declared setting with its declared default (it cannot drift)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from paratta.config import TOLERANCE, Request, SolverConfig, specs

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
PER_MODEL = {
    "prompt",
    "guidance",
    "steps",
}  # stated per model in the registry; the row says so or gives T = 50
AUTO = {
    "order": "min(20, T)",
    "window": "T",
    "max_iters": "T",
    "coarse_steps": "max(2, T // 10)",
    "max_batch": "all",
    "tol": ", ".join(f"{v:.0e}".replace("e-0", "e-") + f" ({rule})" for rule, v in TOLERANCE.items()),
}


def knob_rows() -> dict[str, list[str]]:
    section = README.split("## The knobs", 1)[1].split("\n### ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        for name in re.findall(r"`(\w+)`", cells[0]) if line.startswith("| `") else []:
            rows[name] = cells
    return rows


@pytest.mark.parametrize("name", [*specs(Request), *specs(SolverConfig)])
def test_every_setting_has_a_row_with_its_default(name: str) -> None:
    spec = {**specs(Request), **specs(SolverConfig)}[name]
    rows = knob_rows()
    assert name in rows, f"README knobs table has no row for {name}"
    default = rows[name][2]
    if name in AUTO:
        assert default == AUTO[name]
    elif name in PER_MODEL - {"steps"}:
        assert default.startswith("the model's")
    elif spec.choices:
        assert f"`{spec.default}`" == default
    elif name == "negative_prompt":
        assert default.endswith('""')
    else:
        assert float(default) == float(spec.default), (name, default, spec.default)
