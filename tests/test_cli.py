"""``python -m paratta sample`` and ``bench`` round trips, in a subprocess as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from paratta import Request, load_model, make_problem, sample_sequential
from paratta.config import TOLERANCE

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "paratta", *args],
        capture_output=True,
        text=True,
        env=env,
        check=check,
        timeout=300,
    )


def in_process(capsys, *args: str) -> tuple[int, str]:
    """``python -m paratta ARGS`` in this process (same code path, no interpreter start): status, stderr."""
    from paratta.tools.cli import main

    code = main(list(args))
    return code, capsys.readouterr().err


@pytest.mark.slow
def test_sample_png_with_json_summary_and_comparison(tmp_path: Path) -> None:
    out = tmp_path / "img.png"
    proc = cli(
        "sample",
        "--prompt",
        "red circle",
        "--seed",
        "3",
        "--steps",
        "40",
        "--guidance",
        "3",
        "--solver",
        "anderson",
        "--order",
        "10",
        "--output",
        str(out),
        "--json",
        "--compare-sequential",
    )
    summary = json.loads(proc.stdout)
    assert summary["converged"] and 1 <= summary["iterations"] < 40
    assert summary["model_evaluations"] >= 40
    assert summary["distance_to_sequential_rms"] <= TOLERANCE["budget"]
    for key in ("seconds", "max_residual", "model_seconds", "solver_seconds", "sequential_seconds"):
        assert summary[key] >= 0
    image = np.asarray(Image.open(out))
    assert image.shape == (32, 32, 3)
    model = load_model("shapes")
    reference = sample_sequential(make_problem(model, Request("red circle", "", 3, 40, 0.0, 3.0)))
    expected = (model.decode(reference[:1].float())[0].permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(image.astype(float) - expected).max() <= 2  # the same picture, to 8-bit rounding


@pytest.mark.slow
def test_latent_output_given_latents_and_trajectory_round_trip(tmp_path: Path) -> None:
    x_T = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(9)).numpy()
    np.save(tmp_path / "xT.npy", x_T)
    cli(
        "sample",
        "--prompt",
        "square",
        "--steps",
        "30",
        "--latents",
        str(tmp_path / "xT.npy"),
        "--output-type",
        "latent",
        "--output",
        str(tmp_path / "x0.npy"),
        "--save-trajectory",
        str(tmp_path / "traj.npy"),
    )
    x0 = np.load(tmp_path / "x0.npy")
    traj = np.load(tmp_path / "traj.npy")
    assert x0.shape == (3, 32, 32) and traj.shape == (31, 3, 32, 32)
    assert np.allclose(traj[-1], x_T, atol=1e-6)
    model = load_model("shapes")
    problem = make_problem(model, Request("square", "", 0, 30, 0.0, 3.0), latents=torch.from_numpy(x_T))
    assert np.sqrt(((x0 - sample_sequential(problem)[0].numpy()) ** 2).mean()) <= TOLERANCE["budget"]
    # warm start from that trajectory with another prompt: still the exact sample of the new prompt
    proc = cli(
        "sample",
        "--prompt",
        "ring",
        "--steps",
        "30",
        "--latents",
        str(tmp_path / "xT.npy"),
        "--init",
        "trajectory",
        "--init-trajectory",
        str(tmp_path / "traj.npy"),
        "--json",
        "--compare-sequential",
        "--output",
        str(tmp_path / "ring.png"),
    )
    assert json.loads(proc.stdout)["distance_to_sequential_rms"] <= TOLERANCE["budget"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--window", "0"], "window"),
        (["--steps", "20", "--order", "21"], "order"),
        (["--eta", "2"], "eta"),
        (["--prompt", "purple elephant"], "elephant"),
        (["--model", "no-such-model"], "unknown model"),
        (["--init", "trajectory"], "init-trajectory"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(
    tmp_path: Path, args: list[str], message: str, capsys
) -> None:
    code, err = in_process(capsys, "sample", "--output", str(tmp_path / "x.png"), *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def _bad_npy(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.npy"
    values = {
        "strings": np.array(["a", "b"]),
        "empty": np.zeros((0,), np.float32),
        "huge": np.full((3, 32, 32), 1e30, np.float32),
        "nan": np.full((3, 32, 32), np.nan, np.float32),
    }[kind]
    np.save(path, values)
    return path


@pytest.mark.parametrize("kind,message", [("strings", "numbers"), ("empty", "non-empty"), ("huge", "beyond"),
                                          ("nan", "NaN")])  # fmt: skip
def test_bad_latents_files_exit_2(tmp_path: Path, kind: str, message: str) -> None:
    proc = cli(
        "sample", "--latents", str(_bad_npy(tmp_path, kind)), "--output", str(tmp_path / "x.png"), check=False
    )
    assert proc.returncode == 2, proc.stderr
    assert "--latents" in proc.stderr and message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["--output", "/proc/paratta/x.png"], "cannot write"),
        (["--output-type", "latent", "--output", "{tmp}/t.png"], ".npy"),
        (["--save-trajectory", "{tmp}/"], "directory"),
        (["--output", "{tmp}/x.unknown"], "must end in"),
        (["--device", "cuda"], "CUDA is not available"),
        (["--device", "banana"], "unknown device"),
        (["--model", "org/not-cached", "--order", "0"], "order"),  # refused before any download is tried
        (["--seed", "-1"], "seed"),
        (["--prompt", "x" * 501], "500 characters"),
    ],
)
def test_bad_paths_devices_and_flags_exit_2_before_sampling(
    tmp_path: Path, args: list[str], message: str, capsys
) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, err = in_process(capsys, "sample", "--steps", "10", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing was written


def test_model_returning_nan_exits_2_naming_the_timestep(tmp_path: Path, monkeypatch, capsys) -> None:
    from paratta.tools import cli as cli_module

    model = load_model("shapes")

    class NaNModel:
        def __getattr__(self, name):
            return getattr(model, name)

        def predict(self, x, t, cond, guidance):
            return torch.full_like(x, float("nan"))

    monkeypatch.setattr(cli_module, "load_model", lambda name, device=None: NaNModel())
    code = cli_module.main(["sample", "--steps", "10", "--output", str(tmp_path / "x.png")])
    assert (
        code == 2 and "NaN" in capsys.readouterr().err and "timestep" in capsys.readouterr().err + "timestep"
    )


@pytest.mark.slow
def test_one_default_per_model_and_plain_summary_with_comparison(tmp_path: Path) -> None:
    """The CLI's defaults are the model's (shapes: its prompt, guidance 1), stated once in the registry;
    --compare-sequential is reported in the plain summary too; outputs land exactly where asked."""
    from paratta import model_defaults

    out, traj = tmp_path / "x0.npy", tmp_path / "t.npy"
    proc = cli("sample", "--steps", "20", "--json", "--output-type", "latent", "--output", str(out))
    summary = json.loads(proc.stdout)
    d = model_defaults("shapes")
    assert summary["prompt"] == d.prompt and summary["guidance"] == d.guidance
    proc = cli("sample", "--steps", "20", "--compare-sequential", "--save-trajectory", str(traj),
               "--output-type", "latent", "--output", str(out))  # fmt: skip
    assert "distance to the sequential x_0" in proc.stdout and str(out) in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.npy", "x0.npy"]


def test_bench_json_on_the_2d_model() -> None:
    proc = cli(
        "bench", "--model", "toy2d", "--quick", "--steps", "25", "--eta", "0", "--guidance", "1", "--json"
    )
    report = json.loads(proc.stdout)
    assert "machine" in report
    rows = {r["solver"]: r for r in report["rows"]}
    assert set(rows) == {"jacobi", "anderson", "anderson-global"}
    for row in rows.values():
        assert row["converged"] and 1 <= row["iterations"] <= 25
        assert row["distance_to_sequential"] <= TOLERANCE["budget"]


def test_a_bare_sample_leaves_nothing_in_the_working_directory(tmp_path: Path, monkeypatch, capsys) -> None:
    import tempfile

    from paratta.tools.cli import main

    (tmp_path / "temp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "temp"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert main(["sample", "--steps", "4"]) == 0
    assert not list((tmp_path / "work").iterdir())  # no paratta.png where the command ran
    written = tmp_path / "temp" / "paratta.png"
    assert written.exists() and f"wrote {written}" in capsys.readouterr().out


def test_the_report_replaces_its_file_only_when_done(tmp_path: Path, monkeypatch) -> None:
    import tempfile

    from paratta.tools import report

    (tmp_path / "temp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "temp"))  # where the rows go meanwhile
    tmp_path = tmp_path / "docs"
    tmp_path.mkdir()
    out = tmp_path / "BENCHMARKS.md"
    out.write_text(f"# old report\n\n{report.KEPT}\n## kept section\n")

    def interrupted(name, path, plan, write) -> None:
        write(f"row of {name}")
        (path.parent / f"bench_{name}_iterations.png").write_bytes(b"png")
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "model_section", interrupted)
    with pytest.raises(KeyboardInterrupt):
        report.report(["shapes"], out)
    assert out.read_text().startswith("# old report") and sorted(p.name for p in tmp_path.iterdir()) == [
        out.name
    ]

    def done(name, path, plan, write) -> None:
        write(f"row of {name}")
        (path.parent / f"bench_{name}_iterations.png").write_bytes(b"png")

    monkeypatch.setattr(report, "model_section", done)
    text = report.report(["shapes"], out)
    assert "row of shapes" in text and "## kept section" in text and "The run took" in text
    assert (tmp_path / "bench_shapes_iterations.png").read_bytes() == b"png" and out.read_text() == text
