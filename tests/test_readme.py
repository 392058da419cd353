"""The README's knobs table lists every declared setting with its declared default (it cannot drift)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
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
    "window": "T on a CPU, auto on CUDA",
    "max_iters": "T",
    "coarse_steps": "max(2, T // 10)",
    "max_batch": "all",
    "height": "the pipeline's",
    "width": "the pipeline's",
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


ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def python_blocks() -> list[str]:
    return [body for lang, body in FENCE.findall(README) if lang == "python"]


def test_readme_fits_in_15000_bytes() -> None:
    size = len((ROOT / "README.md").read_bytes())
    assert size <= 15_000, f"README.md is {size} bytes; move detail to docs/"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_points_to_a_file(doc: Path) -> None:
    text = re.sub(r"`[^`\n]*`", "", FENCE.sub("", doc.read_text(encoding="utf-8")))
    missing = []
    for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor on the same page
        if not (doc.parent / target.split("#", 1)[0]).exists():
            missing.append(target)
    assert not missing, f"{doc.relative_to(ROOT)} links to missing files: {missing}"


def test_readme_has_a_python_example() -> None:
    assert python_blocks(), "README.md has no ```python block"


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_blocks_run(index: int) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    block = python_blocks()[index]
    done = subprocess.run(
        [sys.executable, "-c", block], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"README python block {index} failed:\n{block}\n{done.stderr[-3000:]}"
    if "distance(" in block:  # the Library example: its last line is x_0's distance to sequential
        assert float(done.stdout.split()[-1]) <= 2e-3, done.stdout


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_blocks_are_ruff_formatted(index: int) -> None:
    block = python_blocks()[index]
    # the project's settings (pyproject.toml) apply: ruff runs in the repository root
    command = [sys.executable, "-m", "ruff", "format", "--stdin-filename", "README_block.py", "-"]
    done = subprocess.run(command, cwd=ROOT, input=block, capture_output=True, text=True, check=True)
    formatted = done.stdout
    assert formatted == block, f"README python block {index} is not ruff-formatted:\n{formatted}"


@pytest.mark.slow
def test_the_package_installs_and_the_library_example_runs_outside_the_clone(tmp_path: Path) -> None:
    """`pip install .` puts paratta (its code, shipped tables and weights) on the path: the README's
    library example runs from a folder that is not the repository root."""
    source = tmp_path / "source"  # a copy, so the build leaves nothing in the work tree
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        (source / name).write_bytes((ROOT / name).read_bytes())
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "paratta", source / "paratta", ignore=ignore)
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps"]
    pip += ["--no-build-isolation", "--target", str(site), str(source)]
    built = subprocess.run(pip, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    assert (site / "paratta" / "models" / "weights" / "shapes_unet.safetensors").is_file()
    assert (site / "paratta" / "data" / "latency.json").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    block = next(b for b in python_blocks() if "distance(" in b)
    done = subprocess.run(
        [sys.executable, "-c", "import paratta; print(paratta.__file__)\n" + block],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[0].startswith(str(site)), done.stdout
    assert float(done.stdout.split()[-1]) <= 2e-3, done.stdout
