"""One ParaTAA run split over 2 CPU processes (gloo) equals the single-process run; failures stop every rank.

Ranks are spawned with ``torch.multiprocessing`` running ``_worker`` below (the same entry point
torchrun would run: ``init_from_env`` from the environment); each writes its results to a temp file
and the test compares them with a single-process run in the test's own process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from paratta import Request, SolverConfig, load_model, make_problem, run, solve
from paratta.parallel import distributed
from tests.local import free_port

WORLD = 2
STEPS = 10
REPO = Path(__file__).resolve().parents[1]


def _cases(model: str) -> list[dict]:
    """Jacobi and Anderson, η = 0 and 1, window < T; max_batch (chunks within a rank); on ``shapes``
    also the global-γ Anderson, a low order, history 3 and the coarse initialisation."""
    solvers = ("jacobi", "anderson")
    cases = [{"model": model, "solver": s, "eta": eta, "window": 7} for s in solvers for eta in (0.0, 1.0)]
    cases.append({"model": model, "solver": "anderson", "eta": 1.0, "window": 7, "max_batch": 2})
    if model == "shapes":
        cases.append({"model": model, "solver": "anderson-global", "eta": 0.0, "order": 3, "init": "coarse"})
        cases.append({"model": model, "solver": "anderson", "eta": 1.0, "window": 4, "history": 3})
    return cases


def _run_case(case: dict) -> dict:
    """One solve; what must match: (iteration, window, anchor) per iterate and the final x_0."""
    model = load_model(case["model"])
    problem = make_problem(model, Request("red circle", seed=3, steps=STEPS, eta=case["eta"], guidance=3.0))
    config = SolverConfig(**{k: v for k, v in case.items() if k not in ("model", "eta")})
    its = list(solve(problem, config, group=distributed.current()))
    return {"path": [(i.iteration, i.window, i.anchor) for i in its], "x0": its[-1].x0}


class _FailingModel:
    """A model that raises (``mode="raise"``) or returns NaN (``mode="nan"``) on one rank only."""

    def __init__(self, inner, rank: int, mode: str) -> None:
        self._inner, self._fail, self._mode = inner, rank == 1, mode

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    def predict(self, x, t, cond, guidance):
        out = self._inner.predict(x, t, cond, guidance)
        if self._fail and self._mode == "raise":
            raise RuntimeError("CUDA out of memory (simulated on rank 1)")
        return out * float("nan") if self._fail and self._mode == "nan" else out


def _failure_case(rank: int, mode: str) -> dict:
    problem = make_problem(load_model("shapes"), Request("circle", steps=STEPS, guidance=3.0))
    problem = replace(problem, model=_FailingModel(problem.model, rank, mode))
    t0 = time.perf_counter()
    try:
        with distributed.in_step(distributed.current()):
            if mode == "outside" and rank == 1:  # fails before its first exchange; rank 0 is in solve
                raise ValueError("latents must be finite (rank 1 only)")
            list(solve(problem, SolverConfig(window=7), group=distributed.current()))
        return {"error": None}
    except (distributed.RankFailure, distributed.CollectiveTimeout) as err:
        return {"error": str(err), "type": type(err).__name__, "seconds": time.perf_counter() - t0}


class _CountingModel:
    """A model that counts the timesteps (rows) its ``predict`` is asked for on this rank."""

    def __init__(self, inner) -> None:
        self._inner, self.rows = inner, 0

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    def predict(self, x, t, cond, guidance):
        self.rows += x.shape[0]
        return self._inner.predict(x, t, cond, guidance)


def _own_group_case() -> dict:
    """``paratta.run`` in a process group the caller set up itself: without a group, then with it."""
    problem = make_problem(load_model("shapes"), Request("red circle", seed=3, steps=STEPS, guidance=3.0))
    out = {}
    for name, group in (("alone", None), ("split", distributed.adopt())):
        counting = _CountingModel(problem.model)
        last = run(replace(problem, model=counting), SolverConfig(window=7), group=group)
        out[name] = {"rows": counting.rows, "evaluations": last.evaluations, "x0": last.x0}
    return out


def _worker(rank: int, port: int, out: str, job: str, arg: str, timeout_s: float) -> None:
    torch.set_num_threads(1)
    env = {"RANK": rank, "WORLD_SIZE": WORLD, "LOCAL_RANK": rank, "MASTER_ADDR": "127.0.0.1"}
    env["MASTER_PORT"] = port
    os.environ.update({k: str(v) for k, v in env.items()})
    if job == "own-group":  # a user's own DDP-style job: torch.distributed set up without paratta
        torch.distributed.init_process_group("gloo", timeout=timedelta(seconds=timeout_s))
        torch.save(_own_group_case(), f"{out}/rank{rank}.pt")
        torch.distributed.destroy_process_group()
        return
    distributed.init_from_env(timeout_s=timeout_s, device="cpu")
    if job == "equal":
        result = [_run_case(case) for case in _cases(arg)]
    elif job == "fail":
        result = [_failure_case(rank, mode) for mode in ("raise", "nan", "outside")]
    else:  # "hang": rank 1 never reaches the first exchange; rank 0 must give up after the timeout
        if rank == 1:
            time.sleep(timeout_s + 6)
            result = []
        else:
            result = [_failure_case(rank, "none")]
    torch.save(result, f"{out}/rank{rank}.pt")
    distributed.shutdown()


def _cli_worker(rank: int, port: int, out: str) -> None:
    """``python -m paratta sample`` as rank ``rank`` of 2 (a slow run: Jacobi at order 1, tol 1e-12);
    rank 1 marks its first network call, for the test to kill it mid-solve."""
    import contextlib
    import io

    from paratta import evaluate
    from paratta.tools.cli import main

    torch.set_num_threads(1)
    env = {"RANK": rank, "WORLD_SIZE": WORLD, "LOCAL_RANK": rank, "MASTER_ADDR": "127.0.0.1"}
    os.environ.update({k: str(v) for k, v in {**env, "MASTER_PORT": port, "PARATTA_TIMEOUT_S": 20}.items()})
    if rank == 1:
        inner = evaluate._evaluate_rows

        def marked(*args):
            Path(out, "rank1-solving").touch()
            return inner(*args)

        evaluate._evaluate_rows = marked
    args = [
        "sample",
        "--model",
        "shapes",
        "--steps",
        "200",
        "--solver",
        "jacobi",
        "--order",
        "1",
        "--tol",
        "1e-12",
    ]
    args += ["--output-type", "latent", "--output", f"{out}/x0.npy"]
    err = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(err):
        code = main(args)
    result = {"code": code, "stderr": err.getvalue(), "seconds": time.perf_counter() - t0}
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))


def _spawn(tmp_path: Path, job: str, arg: str = "", timeout_s: float = 60.0) -> list:
    ctx = mp.start_processes(
        _worker, args=(free_port(), str(tmp_path), job, arg, timeout_s), nprocs=WORLD, join=False
    )
    deadline = time.monotonic() + 300
    while not ctx.join(timeout=5):
        assert time.monotonic() < deadline, "ranks did not finish"
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]


def test_shares_are_balanced_contiguous_and_ordered():
    for n in range(0, 30):
        for world in (1, 2, 3, 8):
            spans = distributed.shares(n, world)
            sizes = [b - a for a, b in spans]
            assert spans[0][0] == 0 and spans[-1][1] == n
            assert all(spans[r][1] == spans[r + 1][0] for r in range(world - 1))
            assert max(sizes) - min(sizes) <= 1


def test_status_record_carries_the_message_and_the_kind():
    record = distributed._status_record(ValueError("window must be in [1, T]"), 7, 981)
    flag, n, t0, length = record[:32].view(torch.int64).tolist()
    assert (flag, n, t0) == (distributed.BAD_INPUT, 7, 981)
    assert bytes(record[32 : 32 + length].tolist()).decode() == "ValueError: window must be in [1, T]"


def test_backend_follows_the_device():
    assert distributed.backend_for("cpu") == "gloo"
    assert distributed.backend_for("cuda:1") == "nccl"


def _assert_equal_to_single_process(results: list, model: str) -> None:
    torch.set_num_threads(1)
    for case, *ranks in zip(_cases(model), *results, strict=True):
        single = _run_case(case)
        for got in ranks:
            assert got["path"] == single["path"], case  # iterations, windows and anchors identical
            torch.testing.assert_close(got["x0"], single["x0"], rtol=0, atol=1e-5)


@pytest.mark.slow
def test_two_ranks_match_single_process_on_shapes(tmp_path):
    _assert_equal_to_single_process(_spawn(tmp_path, "equal", "shapes"), "shapes")


@pytest.mark.slow
def test_two_ranks_match_single_process_on_shapes_unet(tmp_path):
    _assert_equal_to_single_process(_spawn(tmp_path, "equal", "shapes-unet"), "shapes-unet")


@pytest.mark.slow
def test_a_library_call_in_someone_elses_process_group_splits_only_when_given_the_group(tmp_path):
    torch.set_num_threads(1)
    alone = _run_case({"model": "shapes", "solver": "anderson", "eta": 0.0, "window": 7})
    results = _spawn(tmp_path, "own-group")
    for rank in results:  # without a group: every rank evaluates every row of every window itself
        assert rank["alone"]["rows"] == rank["alone"]["evaluations"]
        torch.testing.assert_close(rank["alone"]["x0"], alone["x0"], rtol=0, atol=1e-5)
    split = [rank["split"]["rows"] for rank in results]
    evaluations = results[0]["split"]["evaluations"]
    assert sum(split) == evaluations and 0 < min(split) and max(split) < evaluations  # shared out
    for rank in results:  # … and x_0 is unchanged
        torch.testing.assert_close(rank["split"]["x0"], alone["x0"], rtol=0, atol=1e-5)


@pytest.mark.slow
def test_a_failing_rank_stops_both_with_its_message(tmp_path):
    for rank_results in _spawn(tmp_path, "fail"):
        raised, nan, outside = rank_results
        assert raised["type"] == "RankFailure"
        assert raised["error"] == "rank 1: RuntimeError: CUDA out of memory (simulated on rank 1)"
        assert nan["type"] == "RankFailure"
        assert nan["error"].startswith("rank 1: NonFiniteError: model returned NaN/inf at timestep")
        assert outside["error"] == "rank 1: ValueError: latents must be finite (rank 1 only)"


@pytest.mark.slow
def test_a_silent_rank_ends_the_run_at_the_timeout(tmp_path):
    waiting, _ = _spawn(tmp_path, "hang", timeout_s=3.0)
    assert waiting[0]["type"] == "CollectiveTimeout"
    assert "did not complete within 3 s timeout" in waiting[0]["error"]


@pytest.mark.slow
def test_a_killed_rank_ends_the_survivor_within_the_timeout_naming_it_and_leaves_no_output(tmp_path):
    import signal

    ctx = mp.start_processes(_cli_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=False)
    survivor, victim = ctx.processes
    deadline = time.monotonic() + 120
    while not (tmp_path / "rank1-solving").exists():
        assert time.monotonic() < deadline and victim.is_alive(), "rank 1 never started solving"
        time.sleep(0.05)
    killed_at = time.monotonic()
    os.kill(victim.pid, signal.SIGKILL)
    survivor.join(timeout=60)
    ended_after = time.monotonic() - killed_at
    assert not survivor.is_alive(), "the survivor did not end"
    result = json.loads((tmp_path / "rank0.json").read_text())
    assert result["code"] == 2 and ended_after < 20 + 10  # within the collective timeout (and the roll call)
    lines = [line for line in result["stderr"].splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "lost: rank 1" in lines[0], result["stderr"]
    assert not list(tmp_path.glob("*.npy"))  # nothing half-written
    victim.join(timeout=5)


def _torchrun(
    *args: str, nproc: int = WORLD, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **(env or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_port"]
    cmd += [str(free_port()), "-m", "paratta", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


@pytest.mark.slow
def test_torchrun_sample_writes_once_and_matches_single_process(tmp_path):
    common = ["sample", "--model", "shapes", "--prompt", "circle", "--steps", str(STEPS), "--window", "7"]
    common += ["--output-type", "latent", "--json"]
    dist_run = _torchrun(*common, "--output", str(tmp_path / "x0_dist.npy"))
    assert dist_run.returncode == 0, dist_run.stderr
    lines = [line for line in dist_run.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # only rank 0 prints the summary
    single = subprocess.run(
        [sys.executable, "-m", "paratta", *common, "--output", str(tmp_path / "x0.npy")],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    summary, alone = json.loads(lines[0]), json.loads(single.stdout)
    assert summary["iterations"] == alone["iterations"]
    assert (summary["world_size"], alone["world_size"]) == (WORLD, 1)
    np.testing.assert_allclose(np.load(tmp_path / "x0_dist.npy"), np.load(tmp_path / "x0.npy"), atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x0.npy", "x0_dist.npy"]


@pytest.mark.slow
def test_torchrun_auto_window_is_chosen_once_for_every_rank(tmp_path):
    """Rank 0 measures and chooses; the ranks solve with its window (out of step they would stop)."""
    env_cache = {"PARATTA_CACHE_DIR": str(tmp_path / "cache")}
    run = _torchrun("sample", "--model", "shapes", "--steps", str(STEPS), "--window", "auto", "--json",
                    "--output", str(tmp_path / "x.png"), env=env_cache)  # fmt: skip
    assert run.returncode == 0, run.stderr
    (line,) = [line for line in run.stdout.splitlines() if line.startswith("{")]
    summary = json.loads(line)
    assert summary["world_size"] == WORLD and summary["converged"] and 1 <= summary["window"] <= STEPS
    assert (
        "over 2 ranks" in summary["window_note"]
        or summary["window"] == 1
        or "ranks" in summary["window_note"]
    )
    assert len(list((tmp_path / "cache").glob("latency-*.json"))) == 1  # one calibration, on rank 0


@pytest.mark.slow
def test_torchrun_bench_prints_the_rank_scaling_table():
    run = _torchrun("bench", "--model", "shapes", "--device", "cpu", "--steps", str(STEPS), "--eta", "0", "1",
                    "--threads", "1", "--json")  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # rank 0 prints
    rows = json.loads(lines[0])["rows"]
    expected = [(STEPS, eta, ranks) for eta in (0.0, 1.0) for ranks in (1, 2)]
    assert [(r["steps"], r["eta"], r["ranks"]) for r in rows] == expected
    for one, two in zip(rows[::2], rows[1::2], strict=True):
        assert one["iterations"] == two["iterations"] and two["x0_difference"] <= 1e-5
        assert one["speedup"] == 1.0 and two["ms_per_iter"] > 0 and two["communication_ms"] > 0


@pytest.mark.slow
def test_torchrun_bad_input_exits_2_with_one_line(tmp_path):
    run = _torchrun("sample", "--steps", str(STEPS), "--window", "0", "--output", str(tmp_path / "x.png"))
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "window" in errors[0]


def test_replicas_on_cpu_cpu_give_the_single_device_result():
    from paratta.parallel.replicas import ReplicatedModel

    model = load_model("shapes")
    request = Request("red circle", seed=2, steps=STEPS, eta=1.0, guidance=3.0)
    for max_batch in (None, 3):
        config = SolverConfig(window=7, max_batch=max_batch)
        single = list(solve(make_problem(model, request), config))
        split = list(solve(make_problem(ReplicatedModel([model, model]), request), config))
        assert [(i.window, i.anchor) for i in split] == [(i.window, i.anchor) for i in single]
        torch.testing.assert_close(split[-1].x0, single[-1].x0, rtol=0, atol=1e-6)


def test_to_device_moves_tensors_inside_conditions():
    from paratta.parallel.replicas import to_device

    cond = make_problem(load_model("shapes"), Request("circle", steps=STEPS)).cond
    moved = to_device({"c": cond, "pair": (torch.ones(2), 3)}, torch.device("meta"))
    tensors = [v for v in vars(moved["c"]).values() if isinstance(v, torch.Tensor)]
    assert tensors and all(v.is_meta for v in tensors)
    assert moved["pair"][0].is_meta and moved["pair"][1] == 3


def test_app_devices_load_replicas_and_reject_unknown_devices(capsys):
    import app
    from ui.serve import devices, models

    try:
        assert devices.configure("cpu, cpu") == ["cpu", "cpu"]
        model = models.get_model("shapes")
        assert len(model.replicas) == 2 and model.latent_shape == (3, 32, 32)
        assert models.get_model("shapes") is model  # one set of replicas and threads per model
        for bad in ("cuda:7", "gpu0", " , "):
            with pytest.raises(ValueError, match="--devices"):
                devices.parse_devices(bad)
        with pytest.raises(SystemExit) as stop:
            app.main(["--devices", "cuda:7"])
        assert stop.value.code == 2
        assert capsys.readouterr().err.startswith("error: --devices")
    finally:
        devices.configure(None)
    assert not hasattr(models.get_model("shapes"), "replicas")
