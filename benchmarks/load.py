"""Load on the app: N concurrent gradio_client visitors against a server started here on 127.0.0.1.

Starts ``python app.py`` on a free loopback port (its own cache folder, optionally as a Space:
``--space`` sets ``SPACE_ID``, so one job at a time and the Space's limits), lets N clients (N ≤ 40,
each its own session) send R default ``/run`` requests each (R ≤ 5), waits at most ``--timeout``
seconds (≤ 600) in all, and prints per request the wait for the first update, the completion time
and the outcome, then the server's resident memory before, at its peak and after, and its cache
folder. The server is stopped at the end. Nothing leaves the machine.

    python benchmarks/load.py                       # 8 clients, 1 run each, shapes, DDIM-50
    python benchmarks/load.py --clients 16 --space  # as on a CPU Space
    python benchmarks/load.py --model shapes-unet --steps 50 --clients 4 --space
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.local import free_port  # noqa: E402

MAX_CLIENTS, MAX_RUNS, MAX_SECONDS = 40, 5, 600


@dataclass
class Outcome:
    client: int
    run: int
    first_update_s: float | None = None  # queue wait plus setup: until the first streamed update
    done_s: float | None = None
    result: str = ""


def rss_mib(pid: int) -> float:
    """Resident memory of a process (Linux /proc), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def folder_mib(root: Path) -> tuple[int, float]:
    files = [p for p in root.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files) / 2**20


def default_run(model: str, steps: int | None) -> dict[str, Any]:
    """The /run arguments a visitor gets by pressing Run: the panel's values for ``model`` (``ui.app``)."""
    from ui.app import preset_values

    return preset_values({"model": model} | ({"steps": steps} if steps else {}))


def start_server(port: int, cache: Path, log: Path, space: bool, budget: float | None) -> subprocess.Popen:
    """``python app.py`` on 127.0.0.1; its log goes to a file (a pipe could fill up and block it)."""
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(cache), HF_HUB_OFFLINE="1")
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "1")
    if space:
        env["SPACE_ID"] = "local/load-test"
    args = [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port)]
    if budget is not None:
        args += ["--budget", str(budget)]
    return subprocess.Popen(
        args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("w"), text=True
    )


def wait_up(url: str, server: subprocess.Popen, log: Path, deadline: float) -> None:
    import httpx

    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "gradio_api/info", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("the server did not come up in time")


def visitor(url: str, n: int, runs: int, settings: dict[str, Any], out: list[Outcome]) -> None:
    from gradio_client import Client

    client = Client(url, verbose=False, download_files=False)
    for r in range(runs):
        o = Outcome(n, r)
        out.append(o)
        start = time.monotonic()
        try:
            job = client.submit(**dict(settings, seed=abs(n) * MAX_RUNS + r), api_name="/run")
            # Polled, not iterated: a job refused by a full queue never ends an iteration (gradio_client 2.7).
            while not job.done():
                if job.status().code.name == "QUEUE_FULL":
                    o.result = "refused: the queue is full"
                    break
                if o.first_update_s is None and job.outputs():
                    o.first_update_s = time.monotonic() - start
                time.sleep(0.05)
            else:
                info = job.result()[6]
                reason = info.get("reason") or "; ".join(info.get("notes", [])) or info.get("phase")
                o.result = "converged" if info.get("converged") else f"ended: {str(reason)[:80]}"
        except Exception as err:  # the figure to report: which errors a visitor sees under load
            o.result = f"error: {type(err).__name__}: {str(err)[:80]}"
        o.done_s = time.monotonic() - start


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=8, help=f"concurrent visitors (1–{MAX_CLIENTS})")
    p.add_argument("--runs", type=int, default=1, help=f"runs per visitor, one after another (1–{MAX_RUNS})")
    p.add_argument("--timeout", type=float, default=300, help=f"seconds for the whole load (≤ {MAX_SECONDS})")
    p.add_argument("--model", default="shapes", help="a built-in model")
    p.add_argument("--steps", type=int, default=None, help="T (default: the model's)")
    p.add_argument("--space", action="store_true", help="run the server as on a Space (SPACE_ID set)")
    p.add_argument("--budget", type=float, default=None, help="the server's seconds per run")
    p.add_argument(
        "--slow-visitor",
        action="store_true",
        help="first, one visitor sends the heaviest run a Space's work cap lets through (shapes-unet, "
        "guidance 3, Jacobi, order 1, tol 1e-12, T = window = 100, 21 iterations): it holds a worker "
        "until the time budget ends it (client -1 below)",
    )
    a = p.parse_args(argv)
    if not (1 <= a.clients <= MAX_CLIENTS and 1 <= a.runs <= MAX_RUNS and 0 < a.timeout <= MAX_SECONDS):
        p.error(f"clients in [1, {MAX_CLIENTS}], runs in [1, {MAX_RUNS}], timeout in (0, {MAX_SECONDS}]")

    settings = default_run(a.model, a.steps)
    work = Path(tempfile.mkdtemp(prefix="paratta-load-"))
    cache, log = work / "cache", work / "server.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    server = start_server(port, cache, log, a.space, a.budget)
    try:
        wait_up(url, server, log, time.monotonic() + 180)
        rss_before, peak = rss_mib(server.pid), 0.0
        out: list[Outcome] = []
        t0 = time.monotonic()
        visitors = [(n, a.runs, settings) for n in range(a.clients)]
        if a.slow_visitor:
            slow = default_run("shapes-unet", 100) | dict(order=1, solver="jacobi", tol=1e-12, max_iters=21)
            visitors.insert(0, (-1, 1, slow))
        threads = [threading.Thread(target=visitor, args=(url, *v, out), daemon=True) for v in visitors]
        for n, t in enumerate(threads):
            t.start()
            if n == 0 and a.slow_visitor:
                time.sleep(1.0)  # the slow job is first in the queue
        while any(t.is_alive() for t in threads) and time.monotonic() - t0 < a.timeout:
            peak = max(peak, rss_mib(server.pid))
            time.sleep(0.25)
        wall = time.monotonic() - t0
        time.sleep(1.0)
        rss_after = rss_mib(server.pid)
        report(a, settings, out, wall, (rss_before, peak, rss_after), folder_mib(cache))
        print(f"server log: {log}")
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()


def report(
    a: argparse.Namespace,
    settings: dict[str, Any],
    out: list[Outcome],
    wall: float,
    rss: tuple[float, float, float],
    cache: tuple[int, float],
) -> None:
    T, model = settings["steps"], settings["model"]
    where = "as a Space (SPACE_ID set)" if a.space else "not as a Space"
    print(
        f"{a.clients} clients × {a.runs} runs, /run {model} T = {T} defaults, server {where}; "
        f"wall {wall:.1f} s"
    )
    print("| client | run | first update s | done s | result |\n|---|---|---|---|---|")
    for o in sorted(out, key=lambda o: (o.client, o.run)):
        first = f"{o.first_update_s:.2f}" if o.first_update_s is not None else "—"
        done = f"{o.done_s:.2f}" if o.done_s is not None else "unfinished"
        print(f"| {o.client} | {o.run} | {first} | {done} | {o.result or 'unfinished'} |")
    times = [o.done_s for o in out if o.done_s is not None]
    ok = sum(o.result == "converged" for o in out)
    errors = [o.result for o in out if o.result.startswith(("error", "refused"))]
    if times:
        median = statistics.median(times)
        print(f"completion s: min {min(times):.2f}, median {median:.2f}, max {max(times):.2f}")
    print(f"converged {ok} of {len(out)}; errors {len(errors)}" + (f": {errors[:3]}" if errors else ""))
    print(f"server RSS MiB: before {rss[0]:.0f}, peak {rss[1]:.0f}, after {rss[2]:.0f}")
    print(f"cache folder after: {cache[0]} files, {cache[1]:.1f} MiB")


if __name__ == "__main__":
    main()
