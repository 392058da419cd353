"""The README: its knobs table lists every declared setting with its declared default (it cannot drift), its
examples run, and every command the README and docs/ give runs here, as written or as its small case."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
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
        assert float(done.stdout.split()[-1]) <= TOLERANCE["budget"], done.stdout


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
    assert float(done.stdout.split()[-1]) <= TOLERANCE["budget"], done.stdout


# ---------------------------------------------------------------- every command the README and docs give

SHELL_LANGS = ("bash", "sh", "shell")
INLINE = re.compile(r"`((?:python3?|torchrun|bash|pip)\s[^`]*)`")


def strip_comment(line: str) -> str:
    """A shell line without its ``# comment`` (a # that starts a word, outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def documented_commands() -> dict[str, str]:
    """Every shell command of the README and docs/*.md (fenced shell blocks, and commands in backticks
    in the text), whitespace normalised, ``a && b`` split: command → the file that gives it first."""
    found: dict[str, str] = {}
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for lang, body in FENCE.findall(text):
            if lang in SHELL_LANGS:
                for line in body.replace("\\\n", " ").splitlines():
                    for part in " ".join(strip_comment(line).split()).split(" && "):
                        if part:
                            found.setdefault(part, doc.name)
        for command in INLINE.findall(FENCE.sub("", text)):
            found.setdefault(" ".join(command.split()), doc.name)
    return found


@dataclass(frozen=True)
class Case:
    """How the test runs a documented command here: ``run`` is its small case (placeholders: {tmp} a
        scratch folder, {sd}/{sd3} tiny offline pipeline folders, {xT} latents for the SD3 one,
        {port} a free port), "" = as written; ``why`` says why it differs; ``server``: it serves the app,
        which must answer on / before it is stopped; ``by``: a test of its own runs it; ``first``: the
    documented command whose output this one reads, run before it."""

    run: str = ""
    why: str = ""
    server: bool = False
    by: str = ""
    first: str = ""  # a command run before, in the same scratch folder (what this one reads)


NO_CUDA = "no CUDA device here: the same command on the CPU"
HUB = "no model hub here: a tiny random-weight pipeline folder of the same kind"
LONG = "a full run is long: its small case"
TWO_RANKS = "two CPU ranks (gloo) stand for the GPUs"
BENCH_SMALL = "--quick --steps 10 --eta 0"
CASES: dict[str, Case] = {
    # README
    "pip install -r requirements.txt -e .": Case(
        by="test_the_first_command_makes_the_library_importable_anywhere"
    ),
    "python app.py": Case("python app.py --port {port}", "a free port", server=True),
    "bash .ci/run": Case(by="test_ci_installs_requirements_alone_and_runs_ruff_and_pytest"),
    "python -m paratta sample --steps 50 --compare-sequential": Case(),
    'python -m paratta sample --model shapes-unet --prompt "blue square" --stopping per-step --json': Case(),
    'python -m paratta sample --model path/to/sd-folder --prompt "a lighthouse" --steps 50 --guidance 7.5 '
    "--device cuda --json": Case(
        'python -m paratta sample --model {sd} --prompt "a lighthouse" --steps 50 --guidance 7.5 '
        "--device cpu "
        "--json",
        f"{HUB}; {NO_CUDA}",
    ),
    "python -m paratta sample --window auto --json": Case(),
    "python -m paratta bench --quick": Case(f"python -m paratta bench {BENCH_SMALL}", LONG),
    "python -m paratta bench --report": Case(
        "python -m paratta bench --report {tmp}/report.md --models toy2d --quick --steps 10 --eta 0",
        f"{LONG}, written to a scratch file",
    ),
    "torchrun --nproc_per_node=2 -m paratta bench --model shapes --device cpu": Case(
        f"torchrun --nproc_per_node=2 -m paratta bench --model shapes --device cpu {BENCH_SMALL}", LONG
    ),
    "python -m paratta sample --family flow --steps 50 --compare-sequential": Case(),
    "python -m paratta sample --sampler dpm++2m-karras --steps 20 --compare-sequential": Case(),
    "python benchmarks/pipelines.py": Case(
        "python benchmarks/pipelines.py --steps 6 --pipelines StableDiffusionPipeline", LONG
    ),
    "python benchmarks/samplers.py": Case(
        "python benchmarks/samplers.py --models shapes --seeds 1 --steps 20 --samplers ddim", LONG
    ),
    "python app.py --model <diffusers folder or hub id>": Case(
        "python app.py --model {sd} --port {port}", HUB, server=True
    ),
    'python3 -m pytest -q -m "not slow"': Case(
        'python3 -m pytest -q -m "not slow" --collect-only', "it is this test suite: collected, not rerun"
    ),
    "python -m paratta.tools.layout": Case(),
    # docs/BENCHMARKS.md
    "python benchmarks/flow_vs_ddim.py --models shapes --seeds 2": Case(
        "python benchmarks/flow_vs_ddim.py --models shapes --seeds 1 --steps 25 --windows", LONG
    ),
    "python benchmarks/flow_vs_ddim.py --models toy2d --seeds 3 --orders 1 5": Case(
        "python benchmarks/flow_vs_ddim.py --models toy2d --seeds 1 --steps 25 --windows --orders 1", LONG
    ),
    "python benchmarks/samplers.py --models shapes --seeds 2": Case(
        "python benchmarks/samplers.py --models shapes --seeds 1 --steps 20 --samplers ddim euler", LONG
    ),
    "python benchmarks/samplers.py --models shapes-unet --steps 20 --seeds 1": Case(
        "python benchmarks/samplers.py --models shapes-unet --steps 20 --seeds 1 --samplers ddim", LONG
    ),
    # docs/diffusers.md
    # docs/distributed.md
    "torchrun --nproc_per_node=4 -m paratta sample --model stable-diffusion-v1-5/stable-diffusion-v1-5 "
    '--device cuda --prompt "an astronaut riding a horse" --steps 50 --guidance 7.5 --json': Case(
        "torchrun --nproc_per_node=2 -m paratta sample --model {sd} --device cpu "
        '--prompt "an astronaut riding '
        'a horse" --steps 50 --guidance 7.5 --json',
        f"{HUB}; {TWO_RANKS}",
    ),
    "torchrun --nproc_per_node=4 -m paratta bench --model shapes --device cuda "
    "--steps 50 100 --eta 0 1": Case(
        f"torchrun --nproc_per_node=2 -m paratta bench --model shapes --device cpu {BENCH_SMALL}",
        f"{TWO_RANKS}; {LONG}",
    ),
    "torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=node0:29500 "
    "--rdzv_id=paratta "
    "-m paratta sample --model ... --device cuda": Case(
        "torchrun --nnodes=1 --nproc_per_node=2 --rdzv_backend=c10d --rdzv_endpoint=127.0.0.1:{port} "
        "--rdzv_id=paratta -m paratta sample --model shapes --device cpu --steps 20",
        f"one node here, its own endpoint; {TWO_RANKS}",
    ),
    "torchrun --nproc_per_node=2 -m paratta bench --model shapes --device cpu "
    "--steps 50 100 --threads 1": Case(
        f"torchrun --nproc_per_node=2 -m paratta bench --model shapes --device cpu {BENCH_SMALL} --threads 1",
        LONG,
    ),
    "python app.py --devices cuda:0,cuda:1": Case(
        "python app.py --devices cpu,cpu --port {port}", f"{NO_CUDA} (two replicas)", server=True
    ),
    "torchrun --nproc_per_node=N -m paratta bench --device … --threads 1": Case(
        f"torchrun --nproc_per_node=2 -m paratta bench --device cpu {BENCH_SMALL} --threads 1",
        "N = 2, on the CPU",
    ),
    "torchrun --nproc_per_node=1 -m paratta sample --model shapes --device cuda --steps 50 --json": Case(
        "torchrun --nproc_per_node=1 -m paratta sample --model shapes --device cpu --steps 50 --json", NO_CUDA
    ),
    # docs/flow.md
    "python -m paratta sample --model stabilityai/stable-diffusion-3-medium-diffusers "
    '--prompt "a lighthouse" '
    "--latents xT.npy --output-type latent --output x0.npy --compare-sequential": Case(
        'python -m paratta sample --model {sd3} --prompt "a lighthouse" --latents {xT} --output-type latent '
        "--output {tmp}/x0.npy --compare-sequential --steps 12",
        f"{HUB}; x_0 written to a scratch folder",
    ),
    "python -m paratta sample --model shapes --family flow --steps 50 --compare-sequential": Case(),
    "python -m paratta bench --model toy2d --family flow --quick": Case(),
    "python benchmarks/flow_vs_ddim.py": Case(
        "python benchmarks/flow_vs_ddim.py --models toy2d --seeds 1 --steps 25 --windows", LONG
    ),
    # docs/gpu.md
    "python app.py --model stable-diffusion-v1-5/stable-diffusion-v1-5": Case(
        "python app.py --model {sd} --port {port}", HUB, server=True
    ),
    "python -m paratta sample --model stable-diffusion-v1-5/stable-diffusion-v1-5 "
    '--prompt "an astronaut riding '
    'a horse" --steps 50 --guidance 7.5 --window 50 --order 20': Case(
        'python -m paratta sample --model {sd} --prompt "an astronaut riding a horse" '
        "--steps 50 --guidance 7.5 "
        "--window 50 --order 20",
        HUB,
    ),
    "python benchmarks/window_model.py": Case(
        "python benchmarks/window_model.py --refit --print-only", "it rewrites a shipped file: refit, printed"
    ),
    "python benchmarks/auto_window.py": Case(
        "python benchmarks/auto_window.py --models shapes --steps 50 --repeats 1 --fresh", LONG
    ),
    "python benchmarks/auto_window.py --fresh": Case(
        "python benchmarks/auto_window.py --models shapes --steps 50 --repeats 1 --fresh", LONG
    ),
    "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126": Case(
        by="test_the_cuda_torch_the_docs_install_is_the_pinned_one"
    ),
    "python benchmarks/gpu_latency.py": Case(
        "python benchmarks/gpu_latency.py --quick --device cpu --models shapes-unet --steps 8 --repeats 1",
        f"{NO_CUDA}; {LONG}",
    ),
    # docs/models.md
    "python -m paratta.tools.train_unet --prediction epsilon --steps 1486 --batch 64 --seed 0 --threads 1 "
    "--out /tmp/stage1_eps.safetensors": Case(
        "python -m paratta.tools.train_unet --prediction epsilon --steps 2 --batch 4 --seed 0 --threads 1 "
        "--out {tmp}/stage1_eps.safetensors",
        LONG,
    ),
    "python -m paratta.tools.train_unet --init /tmp/stage1_eps.safetensors --prediction v_prediction "
    "--steps 1602 "
    "--batch 64 --seed 1 --threads 1 --out paratta/models/weights/shapes_unet.safetensors": Case(
        "python -m paratta.tools.train_unet --init {tmp}/stage1_eps.safetensors --prediction v_prediction "
        "--steps 2 --batch 4 --seed 1 --threads 1 --out {tmp}/shapes_unet.safetensors",
        f"{LONG}, from the small stage 1, never over the shipped weights",
        first="python -m paratta.tools.train_unet --prediction epsilon --steps 1486 --batch 64 --seed 0 "
        "--threads 1 --out /tmp/stage1_eps.safetensors",
    ),
    "python -m paratta.tools.train_unet --grid docs/unet_grid.png": Case(
        "python -m paratta.tools.train_unet --grid {tmp}/unet_grid.png", "written to a scratch file"
    ),
    "python -m paratta.tools.train_unet": Case(
        "python -m paratta.tools.train_unet --steps 2 --batch 4 --out {tmp}/unet.safetensors", LONG
    ),
    # docs/space.md, docs/stopping.md, docs/teach.md
    "python benchmarks/load.py --clients N --space": Case(
        "python benchmarks/load.py --clients 1 --space --steps 10", f"N = 1; {LONG}"
    ),
    "python -m paratta bench --quick --threads 1": Case(
        f"python -m paratta bench {BENCH_SMALL} --threads 1", LONG
    ),
    "python benchmarks/teach_lesson.py": Case(
        "python benchmarks/teach_lesson.py --out {tmp} --seeds 1", f"{LONG}; figures to a scratch folder"
    ),
}


def test_every_documented_command_has_a_case_and_every_case_a_command() -> None:
    documented = documented_commands()
    missing = {c: where for c, where in documented.items() if c not in CASES}
    assert not missing, f"commands in the docs that no test runs (add them to CASES): {missing}"
    stale = [c for c in CASES if c not in documented]
    assert not stale, f"CASES for commands the docs no longer give: {stale}"
    for command, case in CASES.items():
        assert not (case.by and case.run), f"{command}: run by its own test or here, not both"
        assert case.run == "" or case.why, f"{command}: a small case says why it differs"


def program(words: list[str]) -> list[str]:
    """The documented program run with this interpreter: python, python3, pip, torchrun."""
    head = {
        "python": [sys.executable],
        "python3": [sys.executable],
        "pip": [sys.executable, "-m", "pip"],
        "torchrun": [sys.executable, "-m", "torch.distributed.run"],
    }
    return head.get(words[0], words[:1]) + words[1:]


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Tiny offline pipeline folders (SD, SD3, Flux) and latents for them, made once."""
    import numpy as np

    from paratta.models.diffusers.tiny import save_tiny_sd, tiny_sd3_pipeline

    root = tmp_path_factory.mktemp("pipelines")
    save_tiny_sd(root / "sd")
    tiny_sd3_pipeline().save_pretrained(root / "sd3", safe_serialization=True)
    rng = np.random.default_rng(0)
    np.save(root / "xT.npy", rng.standard_normal((1, 4, 8, 8)).astype(np.float32))  # the tiny SD3's latents
    return {k: str(root / v) for k, v in
            dict(sd="sd", sd3="sd3", xT="xT.npy").items()}  # fmt: skip


def command_env(tmp: Path) -> dict[str, str]:
    return dict(
        os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
        OMP_NUM_THREADS="1", TMPDIR=str(tmp), PARATTA_CACHE_DIR=str(tmp / "cache"),
        GRADIO_TEMP_DIR=str(tmp / "gradio"),
    )  # fmt: skip


def serves(words: list[str], env: dict[str, str], port: int, timeout: float = 240) -> str:
    """Start the app, wait until it answers on /, stop it; the output when it did not answer."""
    import time
    import urllib.request

    proc = subprocess.Popen(
        words, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        end = time.monotonic() + timeout
        while time.monotonic() < end and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as answer:
                    if answer.status == 200:
                        return ""
            except OSError:
                time.sleep(1)
        return f"no answer on port {port}"
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        if proc.returncode not in (0, -15, None):  # a crash, not our stop
            print(out[-3000:])


@pytest.mark.slow
@pytest.mark.parametrize("command", [c for c, case in CASES.items() if not case.by], ids=lambda c: c[:80])
def test_documented_command_runs(command: str, assets: dict[str, str], tmp_path: Path) -> None:
    from tests.local import free_port

    case = CASES[command]
    port = free_port()
    env = command_env(tmp_path)
    if case.first:
        before = CASES[case.first].run.format(tmp=tmp_path, port=port, **assets)
        subprocess.run(
            program(shlex.split(before)), cwd=ROOT, env=env, check=True, capture_output=True, timeout=900
        )
    line = (case.run or command).format(tmp=tmp_path, port=port, **assets)
    words = program(shlex.split(line))
    if case.server:
        failure = serves(words, env, port)
        assert not failure, f"{command!r} ({line}): {failure}"
        return
    done = subprocess.run(words, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{command!r} ran as {line!r}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"


def test_ci_installs_requirements_alone_and_runs_ruff_and_pytest() -> None:
    """`bash .ci/run` is this suite's own runner (a fresh environment, then every test): it parses, and it
    installs requirements.txt alone (as a Space does), then runs ruff and pytest."""
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert subprocess.run(["bash", "-n", str(ROOT / ".ci" / "run")], capture_output=True).returncode == 0
    assert re.search(r"pip install .*-r requirements\.txt\s*$", script, re.M)
    for step in ("ruff check .", "ruff format --check .", "python -m pytest"):
        assert step in script, step


def test_the_cuda_torch_the_docs_install_is_the_pinned_one() -> None:
    """The CUDA build docs/gpu.md installs (not run: it would replace this machine's torch) is the
    version requirements.txt and pyproject.toml pin."""
    pin = re.search(r"^torch==([\w.]+)", (ROOT / "requirements.txt").read_text(encoding="utf-8"), re.M)
    assert pin and f'"torch=={pin.group(1)}"' in (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert f"pip install torch=={pin.group(1)} --index-url" in " ".join(documented_commands())


@pytest.mark.slow
def test_the_first_command_makes_the_library_importable_anywhere(tmp_path: Path) -> None:
    """`pip install -r requirements.txt -e .` (the requirements are this interpreter's already): in a
    fresh environment that sees them, the editable install puts `paratta` on the path, the README's
    library example runs from another folder, and the clone is left as it was (build outputs ignored)."""
    import sysconfig

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    (site / "base.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch, diffusers, pip …
    python = str(venv / "bin" / "python")
    before = subprocess.run(
        ["git", "status", "--porcelain", "--ignored"], cwd=ROOT, capture_output=True, text=True
    )
    pip = [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(ROOT)]
    built = subprocess.run(pip, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    block = next(b for b in python_blocks() if "distance(" in b)
    done = subprocess.run([python, "-c", "import paratta; print(paratta.__file__)\n" + block], cwd=elsewhere,
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[0] == str(ROOT / "paratta" / "__init__.py"), done.stdout
    after = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
    tracked_or_new = [line for line in after.stdout.splitlines() if line not in before.stdout.splitlines()]
    assert not tracked_or_new, f"the install left files the repository does not ignore: {tracked_or_new}"


def test_build_outputs_are_ignored() -> None:
    outputs = ["build/lib", "dist/paratta.whl", "paratta.egg-info/PKG-INFO"]
    ignored = subprocess.run(["git", "check-ignore", *outputs], cwd=ROOT, capture_output=True, text=True)
    assert ignored.stdout.split() == outputs


@pytest.mark.parametrize("script", sorted((ROOT / "benchmarks").glob("*.py")), ids=lambda p: p.name)
def test_every_benchmark_answers_help(script: Path) -> None:
    """On any machine (this one has no GPU): ``--help`` prints the usage and exits 0."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, str(script), "--help"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0 and "usage:" in done.stdout, done.stderr[-2000:]


@pytest.mark.slow
def test_the_api_examples_run_against_the_app(tmp_path: Path) -> None:
    """docs/api.md's Python blocks, in order in one process (the warm start reuses the first block's
    settings), against `python app.py` started here: the only change is the app's address. (The blocks of
    docs/diffusers.md are fragments, with "…" for a model id; tests/test_pipeline.py runs that code.)"""
    import time
    import urllib.request

    from tests.local import free_port

    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    blocks = [body for lang, body in FENCE.findall(text) if lang == "python"]
    assert len(blocks) >= 3
    port = free_port()
    script = "\n".join(blocks).replace("http://127.0.0.1:7860/", f"http://127.0.0.1:{port}/")
    env = command_env(tmp_path)
    app = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        for _ in range(240):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5):
                    break
            except OSError:
                time.sleep(1)
        done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)  # fmt: skip
    finally:
        app.terminate()
        app.wait(timeout=30)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Same image as sequential" in done.stdout and "Parallel iterations: TAA" in done.stdout, (
        done.stdout
    )
