"""Soak: the app as a Space for up to 2 hours of seeded mixed traffic, sampled once a minute.

Starts ``python app.py`` on a free 127.0.0.1 port as a Space (``SPACE_ID`` set: one job at a time, the
Space's caps), with ``PARATTA_PROBE=1`` (a read-only loopback probe of the sessions and the queue), a
cache folder and TMPDIR of its own, and a short cache age (``--delete-cache``, so that the sweep runs
within the soak). N visitors (N ≤ 40, one thread each) then send, until the time is up, a seeded mix on
``shapes`` and ``shapes-unet``: default runs, races, Teach, runs stopped mid-way, visitors that close the
page mid-stream, "use as initialisation", warm-start chains and bad input from a corpus (wrong types,
huge and unicode prompts, out-of-range numbers, unknown models, malformed requests). A visitor keeps
its session for a few jobs, then leaves (its heartbeat closes) and comes back as a new one.

Every ``--interval`` seconds it samples the server: resident memory, open file descriptors, threads
(``/proc/<pid>``), the cache folder's and session folders' files, bytes and oldest file, the session
state and the queue (the probe); per job it keeps the outcome and the latency. At the end it prints the
tables and the pass criteria, writes the series as JSON and a PNG of RSS and cache size over time, and
exits 1 if a criterion fails:

- no traceback in the server's stderr;
- every bad input answered with a message (or refused by a full queue);
- every good job served, or refused with "Queue is full" (a stopped or abandoned one: ended);
- the RSS floor (its lowest in each interval, read every 2 s: the server between jobs) after the
  warm-up (10 min) grows less than 5 %/hour (least-squares slope); the state's share is fitted too;
- the cache and session folders hold no file older than the declared age plus a sweep period; session
  state stays within Gradio's cap (``STATE_SESSIONS``, or ``--state-sessions``), the queue within 32;
- no growth of file descriptors or threads after the warm-up, and nothing running once the load ends;
- bad input answered within 1 s, and Stop ending a job within 1 s, at the 95th percentile.

    python benchmarks/soak.py --minutes 5 --clients 4 --warmup 1       # a shakedown
    python benchmarks/soak.py --minutes 20 --clients 4 --stop-weight 40 # more Stop samples, sooner
    python benchmarks/soak.py --minutes 30 --clients 10 --state-sessions 50 \\
        --json docs/data/soak.json --plot docs/soak_rss_cache.png        # the documented run

Session state is kept for 200 sessions (an hour each), so RSS climbs until 200 visitors have come;
``--state-sessions 50`` reaches that plateau within the warm-up of a 30-minute run.

Only 127.0.0.1 is contacted; every loop is bounded (a job at most ``JOB_TIMEOUT_S``), and the server is
stopped at the end.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.load import default_run, rss_mib, start_server, wait_up  # noqa: E402
from paratta.tools.machine import machine  # noqa: E402
from tests.local import free_port  # noqa: E402
from ui.serve.guards import PROBE_PATH, STATE_SESSIONS  # noqa: E402  (Gradio's cap here: the probe says)

MAX_MINUTES, MAX_CLIENTS = 120, 40
QUEUE_PLACES = 32  # app.py: demo.queue(max_size=32)
JOB_TIMEOUT_S = 600.0  # one job, queue wait included; longer is a failure
RSS_POLL_S = 2.0
SETTLE_S = 30.0  # after the load: heartbeats close, page-close handlers run
GENERIC_ERROR = "has not enabled verbose error reporting"  # gradio_client's text for an unexplained error
TRACEBACK = "Traceback (most recent call last)"
FD_SLACK, THREAD_SLACK = 20, 12  # growth allowed between the first and last third after the warm-up
GOOD_PROMPTS = (
    "red circle on blue",
    "green square on black",
    "blue triangle on white",
    "yellow ring on gray",
)
UNET_PROMPTS = ("red circle", "green square", "blue triangle")


# ---- records --------------------------------------------------------------------------------------


@dataclass
class Job:
    t_s: float  # when it was sent, seconds since the load began
    client: int
    kind: str
    model: str
    good: bool  # good input (must be served or refused by a full queue) or bad (must get a message)
    outcome: str = "unfinished"  # served, queue full, stopped, left, message, error, timeout
    latency_s: float | None = None
    stop_s: float | None = None  # Stop: when it was pressed (monotonic), then how long until the job ended
    note: str = ""


@dataclass
class Sample:
    t_s: float
    rss_mib: float  # at the sample
    rss_floor_mib: float  # the lowest and highest of the interval before it (read every RSS_POLL_S)
    rss_peak_mib: float
    fds: int
    threads: int
    cache_files: int
    cache_mib: float
    cache_oldest_s: float
    session_dirs: int
    session_oldest_s: float
    probe: dict[str, int]
    jobs_done: int
    load_avg: float


@dataclass
class Soak:
    """What the visitors share: the server's address, the end time and the records."""

    url: str
    deadline: float
    t0: float
    stop_weight: float = 10.0  # of "run, then Stop" in each visitor's mix
    jobs: list[Job] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, job: Job) -> Job:
        with self.lock:
            self.jobs.append(job)
        return job

    def now(self) -> float:
        return time.monotonic() - self.t0


# ---- the server, sampled from outside --------------------------------------------------------------


def proc_status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return -1


def files_under(root: Path) -> tuple[int, int, float]:
    """(files, bytes, age in s of the oldest by ctime, as ``ui.serve.cache.remove_older`` ages them)."""
    now, count, size, oldest = time.time(), 0, 0, 0.0
    for folder, _, names in os.walk(root):  # a folder swept during the walk is skipped (rglob raises)
        for name in names:
            try:
                st = os.stat(os.path.join(folder, name))
            except FileNotFoundError:  # swept meanwhile
                continue
            count, size, oldest = count + 1, size + st.st_size, max(oldest, now - st.st_ctime)
    return count, size, oldest


def folders_under(root: Path) -> tuple[int, float]:
    """(session folders, age in s of the least recently touched), as ``ui.serve.cache.prune`` ages them."""
    now, ages = time.time(), []
    for folder in root.glob("*") if root.is_dir() else ():
        try:
            ages.append(now - folder.stat().st_mtime)
        except FileNotFoundError:
            continue
    return len(ages), max(ages, default=0.0)


def probe(url: str) -> dict[str, int]:
    import httpx

    try:
        return httpx.get(url + PROBE_PATH.lstrip("/"), timeout=10).json()
    except (httpx.HTTPError, ValueError):
        return {}


def sample(soak: Soak, pid: int, cache: Path, sessions: Path, rss: list[float] | None = None) -> Sample:
    """The server now; ``rss``: its resident memory read during the interval before."""
    now = rss_mib(pid)
    rss = [*(rss or []), now]
    files, size, oldest = files_under(cache)
    dirs, dir_oldest = folders_under(sessions)
    done = sum(j.outcome != "unfinished" for j in list(soak.jobs))
    return Sample(
        t_s=round(soak.now(), 1),
        rss_mib=round(now, 1),
        rss_floor_mib=round(min(rss), 1),
        rss_peak_mib=round(max(rss), 1),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        threads=proc_status(pid, "Threads"),
        cache_files=files,
        cache_mib=round(size / 2**20, 2),
        cache_oldest_s=round(oldest, 1),
        session_dirs=dirs,
        session_oldest_s=round(dir_oldest, 1),
        probe=probe(soak.url),
        jobs_done=done,
        load_avg=round(os.getloadavg()[0], 2),
    )


def sampler(soak: Soak, pid: int, dirs: tuple[Path, Path], interval: float, out: list[Sample]) -> None:
    """A sample now and every ``interval`` s until the deadline (the caller takes the last, quiet one);
    in between, RSS every ``RSS_POLL_S``: its floor (between jobs) is what a leak would raise, a sample
    alone mostly says which job was running."""
    out.append(sample(soak, pid, *dirs))
    while time.monotonic() + interval <= soak.deadline:
        end, rss = time.monotonic() + interval, []
        while time.monotonic() < end:
            rss.append(rss_mib(pid))
            time.sleep(min(RSS_POLL_S, max(0.0, end - time.monotonic())))
        out.append(sample(soak, pid, *dirs, rss))


# ---- following one job -------------------------------------------------------------------------------


def follow(
    job: Any,
    record: Job,
    started: float,
    stop_after: float | None = None,
    stop: Callable[[], None] | None = None,
) -> Any:
    """Poll ``job`` to its end (at most ``JOB_TIMEOUT_S``); fills ``record``'s outcome and latency and
    returns the result when served. ``stop_after``: press Stop (``stop``) that many seconds after the
    first update."""
    from gradio_client.exceptions import AppError, ValidationError

    first, stopped = None, False
    while not job.done():
        if time.monotonic() - started > JOB_TIMEOUT_S:
            job.cancel()
            record.outcome, record.note = "timeout", f"no end after {JOB_TIMEOUT_S:g} s"
            record.latency_s = time.monotonic() - started
            return None
        if job.status().code.name == "QUEUE_FULL":
            record.outcome, record.latency_s = "queue full", time.monotonic() - started
            return None
        if first is None and job.outputs():
            first = time.monotonic()
        if (
            stop_after is not None
            and first is not None
            and not stopped
            and time.monotonic() - first > stop_after
        ):
            stopped = press_stop(record, stop or job.cancel)
        time.sleep(0.05)
    record.latency_s = time.monotonic() - started
    if record.stop_s is not None:
        record.stop_s = round(time.monotonic() - record.stop_s, 2)
    try:
        result = job.result()
    except (AppError, ValidationError) as err:  # a message, unless gradio's text for an unexplained exception
        text = str(err)
        record.outcome = "error" if GENERIC_ERROR in text or not text.strip() else "message"
        record.note = text[:160]
        return None
    except Exception as err:  # cancelled, connection lost: the figure to report
        record.outcome = "stopped" if stopped else "error"
        record.note += f"{type(err).__name__}: {str(err)[:120]}"
        return None
    record.outcome = "stopped" if stopped else "served"
    record.note += verdict(result)
    return result


def press_stop(record: Job, stop: Callable[[], None]) -> bool:
    """Stop: ``stop`` posts the job's ``/cancel`` (``Visitor.stop_job``, as the page's button does); the
    press is timed from here to the job's end."""
    import httpx

    pressed = time.monotonic()
    try:
        stop()
    except httpx.TimeoutException:
        record.note = "Stop answered after more than 5 s; "
    record.stop_s = pressed
    return True


def verdict(result: Any) -> str:
    """A served job's end in a few words (run: the info dict; race: per lane; teach: its text)."""
    info = result[6] if isinstance(result, (list, tuple)) and len(result) > 6 else None
    if isinstance(result, (list, tuple)) and isinstance(result[-1], dict) and "jacobi" in result[-1]:
        return "race: " + ", ".join(
            f"{k} {v.get('iteration')} it" for k, v in result[-1].items() if isinstance(v, dict)
        )
    if isinstance(info, dict):
        if info.get("converged"):
            return f"converged in {info.get('iteration')} it"
        return f"ended: {str(info.get('reason') or info.get('phase'))[:60]}"
    return "served"


# ---- the visitors' actions -----------------------------------------------------------------------


def run_settings(rng: random.Random, model: str) -> dict[str, Any]:
    settings = default_run(model, None)
    prompts = UNET_PROMPTS if model == "shapes-unet" else GOOD_PROMPTS
    return settings | {"prompt": rng.choice(prompts), "seed": rng.randrange(2**31)}


def race_args(settings: dict[str, Any], contest: str) -> dict[str, Any]:
    """/race's arguments by name: the run's less the two each lane sets itself, and the contest."""
    return {k: v for k, v in settings.items() if k not in ("solver", "init")} | {"contest": contest}


class Visitor:
    """One thread: a session (a ``gradio_client.Client``) for a few jobs, then a new one."""

    def __init__(self, n: int, soak: Soak, seed: int) -> None:
        self.n, self.soak, self.rng = n, soak, random.Random(seed * 1000 + n)
        self._client: Any = None
        self._http: Any = None  # the visitor's own kept-alive connection (for Stop)
        self.jobs_left = 0

    def client(self) -> Any:
        from gradio_client import Client

        if self._client is None or self.jobs_left <= 0:
            self.leave()
            self._client = Client(self.soak.url, verbose=False, download_files=False)
            self.jobs_left = self.rng.randint(1, 6)
        self.jobs_left -= 1
        return self._client

    def reserve(self, jobs: int) -> None:
        """The next ``jobs`` jobs go to one session (a chain needs the session's stored trajectory)."""
        if self._client is None or self.jobs_left < jobs:
            self.jobs_left = 0  # a new session now: the current one may leave before the chain ends
            self.client()
            self.jobs_left += 1  # (creating it counted no job)
        self.jobs_left = max(self.jobs_left, jobs)

    def leave(self) -> None:
        """The visitor closes the page: its heartbeat ends, so the server runs the page-close handler."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def model(self) -> str:
        return "shapes-unet" if self.rng.random() < 0.25 else "shapes"

    def job(self, kind: str, model: str, good: bool = True) -> tuple[Job, float]:
        return self.soak.record(Job(round(self.soak.now(), 1), self.n, kind, model, good)), time.monotonic()

    def submit(self, kind: str, model: str, args: dict | list, api: str, stop: float | None = None) -> Any:
        record, _ = self.job(kind, model)
        c = self.client()
        started = time.monotonic()  # from the press: the visitor's page is loaded already
        job = c.submit(*args, api_name=api) if isinstance(args, list) else c.submit(**args, api_name=api)
        return follow(job, record, started, stop, lambda: self.stop_job(c, job, api)), record

    def stop_job(self, c: Any, job: Any, api: str) -> None:
        """Stop as the page's button sends it: the event's ``/cancel`` (its fn_index, the session, the
        event id), on the visitor's kept-alive connection. gradio_client's ``job.cancel()`` posts the
        same body through a new HTTP client each time, whose set-up (a TLS context) takes a few hundred
        ms of a loaded CPU that are the client's, not the app's. The job then ends as the server says."""
        fn_index = dependency(self.soak.url, api.strip("/"))[0]
        body = {"fn_index": fn_index, "session_hash": c.session_hash, "event_id": job.communicator.event_id}
        self.http().post(c.src_prefixed + "cancel", json=body, timeout=5)

    def http(self) -> Any:
        import httpx

        if self._http is None:
            self._http = httpx.Client()
        return self._http

    # -- good traffic --

    def run(self) -> None:
        model = self.model()
        self.submit("run", model, run_settings(self.rng, model), "/run")

    def race(self) -> None:
        model = "shapes" if self.rng.random() < 0.8 else "shapes-unet"
        contest = self.rng.choice(("solvers", "stopping"))
        settings = run_settings(self.rng, model)
        if model == "shapes-unet":  # its race at T = 50 is above a Space's work cap; 30 iterations fit
            settings |= {"max_iters": 30}
        self.submit("race", model, race_args(settings, contest), "/race")

    def teach(self) -> None:
        prompt = self.rng.choice(("north", "", "north south", "east west"))
        args = [prompt, self.rng.randrange(1000), self.rng.choice((20, 50)), self.rng.choice((1, 3, 20))]
        self.submit("teach", "toy2d", args, "/teach")

    def stop(self) -> None:
        """Run, then Stop a little after the first frame (or while it still waits in the queue)."""
        model = self.model()
        settings = run_settings(self.rng, model)
        if model == "shapes":  # long enough to be stopped; shapes-unet at T = 100 is above the work cap
            settings |= {"steps": 100, "window": 100, "max_iters": 100}
        self.submit("stop", model, settings, "/run", stop=self.rng.uniform(0.0, 3.0))
        self.jobs_left = min(self.jobs_left, 1)  # a page that pressed Stop is reused at most once more

    def use_as_init(self) -> None:
        """Run, store it ("use this run as initialisation"), run the same prompt from it."""
        settings = run_settings(self.rng, "shapes")
        self.reserve(3)
        result, first = self.submit("run", "shapes", settings, "/run")
        if first.outcome != "served" or not self.init_from_last():
            return
        self.submit("init run", "shapes", settings | {"init": "trajectory"}, "/run")

    def warm_chain(self) -> None:
        """Warm-start chain: each prompt's run starts from the previous prompt's trajectory."""
        prompts = self.rng.sample(GOOD_PROMPTS, 3)
        settings = run_settings(self.rng, "shapes")
        self.reserve(2 * len(prompts) - 1)
        for k, prompt in enumerate(prompts):
            change = {"prompt": prompt, "init": "trajectory" if k else "xT"}
            _, record = self.submit("warm chain", "shapes", settings | change, "/run")
            if record.outcome != "served" or (k + 1 < len(prompts) and not self.init_from_last()):
                return

    def init_from_last(self) -> bool:
        from gradio_client.exceptions import AppError

        record, started = self.job("use as init", "shapes")
        try:
            record.note = str(self.client().predict(api_name="/use_as_init"))[:80]
            record.outcome = "served"
        except AppError as err:
            record.outcome, record.note = "error", str(err)[:120]
        record.latency_s = time.monotonic() - started
        return record.outcome == "served"

    def leave_mid_stream(self) -> None:
        """A new page that starts a run and closes after its first update (or while still queued)."""
        model = self.model()
        record, started = self.job("leave", model)
        record.outcome, record.note = raw_run_then_leave(
            self.soak.url, run_settings(self.rng, model), self.rng
        )
        record.latency_s = time.monotonic() - started

    # -- bad input --

    def bad(self) -> None:
        label, api, make = self.rng.choice(BAD_INPUT)
        record, started = self.job(f"bad: {label}", "shapes", good=False)
        if api == "http":
            record.outcome, record.note = make(self.soak.url)
        else:
            c = self.client()
            started = time.monotonic()  # from the press: the visitor's page is loaded already
            args = make(default_run("shapes", None))
            job = c.submit(*args, api_name=api) if isinstance(args, list) else c.submit(**args, api_name=api)
            follow(job, record, started)
            if record.outcome == "served":
                record.outcome = "served bad input"  # a failure: it should have been refused
        record.latency_s = time.monotonic() - started

    def live(self) -> None:
        """Actions until the deadline, with a pause of a visitor's size in between; then leave."""
        actions: list[tuple[Callable[[], None], float]] = [
            (self.run, 22), (self.race, 8), (self.teach, 10), (self.stop, self.soak.stop_weight),
            (self.leave_mid_stream, 8), (self.use_as_init, 8), (self.warm_chain, 6), (self.bad, 22),
        ]  # fmt: skip
        while time.monotonic() < self.soak.deadline:
            action = self.rng.choices([a for a, _ in actions], [w for _, w in actions])[0]
            try:
                action()
            except Exception as err:  # the driver's own failure: kept as an error, the soak goes on
                record, _ = self.job(f"driver: {action.__name__}", "-")
                record.outcome, record.note = "error", f"{type(err).__name__}: {str(err)[:120]}"
                self.leave()
            time.sleep(self.rng.uniform(0.2, 3.0))
        self.leave()
        if self._http is not None:
            self._http.close()


# ---- the raw protocol: a page that closes, malformed requests --------------------------------------


@functools.lru_cache(maxsize=8)
def dependency(url: str, api: str) -> tuple[int, int, int]:
    """(fn_index, trigger id, number of inputs) of a named event, from the app's config."""
    import httpx

    for dep in httpx.get(url + "config", timeout=30).json()["dependencies"]:
        if dep.get("api_name") == api:
            return dep["id"], dep["targets"][0][0], len(dep["inputs"])
    raise LookupError(api)


def join_body(url: str, api: str, data: list[Any], session: str) -> dict[str, Any]:
    fn, trigger, n = dependency(url, api)
    data = data + [None] * (n - len(data))  # gr.State inputs: the server uses the session's own
    return {"data": data, "fn_index": fn, "trigger_id": trigger, "session_hash": session, "event_data": None}


def raw_run_then_leave(url: str, settings: dict[str, Any], rng: random.Random) -> tuple[str, str]:
    """Open a page's heartbeat, join /run, read its stream until the first update (or a random moment in
    the queue) and close both connections, as a closed tab does."""
    import httpx

    session = uuid.uuid4().hex[:11]
    leave_at = time.monotonic() + rng.uniform(0.5, 20.0)
    api = url + "gradio_api/"
    with httpx.Client(timeout=httpx.Timeout(30, read=60)) as http:
        with http.stream("GET", f"{api}heartbeat/{session}") as heartbeat:
            next(heartbeat.iter_lines())
            reply = http.post(api + "queue/join", json=join_body(url, "run", page_row(settings), session))
            if reply.status_code != 200 or "error" in reply.json():
                text = reply.text[:100]
                return ("queue full" if "Queue is full" in text else "error"), text
            with http.stream("GET", f"{api}queue/data", params={"session_hash": session}) as data:
                for line in data.iter_lines():
                    msg = json.loads(line[5:]).get("msg") if line.startswith("data:") else None
                    if msg == "process_completed":
                        return "served", "ended before the page closed"
                    if msg == "process_generating" or time.monotonic() > leave_at:  # (a heartbeat ≤ 15 s)
                        return "left", f"closed at {msg or 'a heartbeat'}"
    return "left", "stream ended"


def page_row(settings: dict[str, Any]) -> list[Any]:
    """All of /run's inputs in the page's order, as the browser sends them (the settings given, the
    API's defaults for the rest)."""
    from ui.view.controls import RUN_INPUT_NAMES

    defaults = default_run(settings.get("model", "shapes"), None)
    return [settings[n] if n in settings else defaults[n] for n in RUN_INPUT_NAMES]


def raw_join(body: bytes | dict[str, Any], wrong: Callable[[str], dict[str, Any]] | None = None) -> Callable:
    """A malformed /queue/join: the answer must be a 4xx with a reason, or a stream that ends in an error
    message; a 5xx or a silent end is a failure."""

    def send(url: str) -> tuple[str, str]:
        import httpx

        session = uuid.uuid4().hex[:11]
        payload = wrong(url) | {"session_hash": session} if wrong else body
        api = url + "gradio_api/"
        deadline = time.monotonic() + JOB_TIMEOUT_S
        with httpx.Client(timeout=60) as http:
            content = json.dumps(payload).encode() if isinstance(payload, dict) else payload  # NaN stays NaN
            reply = http.post(
                api + "queue/join", headers={"content-type": "application/json"}, content=content
            )
            if reply.status_code != 200 or "error" in reply.json():
                return answered(reply.status_code, reply.text)
            with http.stream("GET", f"{api}queue/data", params={"session_hash": session}) as data:
                for line in data.iter_lines():
                    if time.monotonic() > deadline:
                        return "timeout", f"no answer after {JOB_TIMEOUT_S:g} s"
                    message = json.loads(line[5:]) if line.startswith("data:") else {}
                    if message.get("msg") == "process_completed":
                        output = message.get("output") or {}
                        if message.get("success"):
                            return "served bad input", str(output)[:100]
                        text = str(output.get("error") or message.get("title") or "")
                        return ("message" if text.strip() else "error"), text[:160] or "no message"
        return "error", "the stream ended without an answer"

    return send


def answered(status: int, text: str) -> tuple[str, str]:
    if 400 <= status < 500 and text.strip():
        return "message", f"HTTP {status}: {text[:120]}"
    return "error", f"HTTP {status}: {text[:120]}"


def raw_get(path: str) -> Callable[[str], tuple[str, str]]:
    def send(url: str) -> tuple[str, str]:
        import httpx

        reply = httpx.get(url + path, timeout=30)
        return answered(reply.status_code, reply.text)

    return send


def raw_post(path: str, body: dict[str, Any]) -> Callable[[str], tuple[str, str]]:
    def send(url: str) -> tuple[str, str]:
        import httpx

        reply = httpx.post(url + path, json=body, timeout=30)
        return answered(reply.status_code, reply.text)

    return send


def raw_upload(url: str) -> tuple[str, str]:
    import httpx

    reply = httpx.post(url + "gradio_api/upload", files={"files": ("x.bin", b"x" * 2_000_000)}, timeout=30)
    return answered(reply.status_code, reply.text)


def changed(**change: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda base: base | change


def raced(**change: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda base: race_args(
        base | {k: v for k, v in change.items() if k != "contest"}, change.get("contest", "solvers")
    )


def taught(*args: Any) -> Callable[[dict[str, Any]], list[Any]]:
    return lambda base: list(args)


def wrong_inputs(url: str) -> dict[str, Any]:
    return join_body(url, "run", [], "") | {"data": ["shapes", "red"]}  # 2 of 16 inputs


def non_finite(name: str, value: float) -> Callable[[str], dict[str, Any]]:
    """A /run join whose ``name`` is NaN or Infinity: JSON allows neither, but Python's parser (the
    server's) reads both; gradio_client refuses to send them, so this goes raw."""
    return lambda url: join_body(url, "run", list((default_run("shapes", None) | {name: value}).values()), "")


def wrong_fn(url: str) -> dict[str, Any]:
    return {"data": [], "fn_index": 9999, "trigger_id": None, "event_data": None}


def data_not_a_list(url: str) -> dict[str, Any]:
    return join_body(url, "run", [], "") | {"data": "red circle"}


UNET_TOO_MUCH = dict(
    model="shapes-unet", prompt="red circle", guidance=3.0, steps=100, window=100, max_iters=100
)
BAD_INPUT: list[tuple[str, str, Callable]] = [
    ("prompt int", "/run", changed(prompt=123)),
    ("prompt list", "/run", changed(prompt=["red", "circle"])),
    ("prompt dict", "/run", changed(prompt={"a": 1})),
    ("prompt 1 MB", "/run", changed(prompt="q" * 1_000_000)),
    ("prompt 600 k unicode", "/run", changed(prompt="红色圆圈" * 150_000)),
    ("prompt unknown unicode words", "/run", changed(prompt="红色 圆圈 on blue")),
    ("steps 10**9", "/run", changed(steps=10**9)),
    ("steps -5", "/run", changed(steps=-5)),
    ("steps 1.5", "/run", changed(steps=1.5)),
    ("steps text", "/run", changed(steps="ten")),
    ("steps above the Space cap", "/run", changed(steps=200, window=200, max_iters=200)),
    ("seed 2**64", "/run", changed(seed=2**64)),
    ("seed float 2**60", "/run", changed(seed=2.0**60)),
    ("seed text", "/run", changed(seed="12abc")),
    ("guidance 1e308", "/run", changed(guidance=1e308)),
    ("guidance NaN (raw JSON)", "http", raw_join(b"", non_finite("guidance", math.nan))),
    ("eta Infinity (raw JSON)", "http", raw_join(b"", non_finite("eta", math.inf))),
    ("eta -1", "/run", changed(eta=-1.0)),
    ("tol text", "/run", changed(tol="abc")),
    ("tol -1", "/run", changed(tol="-1")),
    ("window 0", "/run", changed(window=0)),
    ("order 10**6", "/run", changed(order=10**6)),
    ("history -1", "/run", changed(history=-1)),
    ("max_iters 0", "/run", changed(max_iters=0)),
    ("model unknown", "/run", changed(model="sd-xl-turbo-not-here")),
    ("model hub id", "/run", changed(model="stabilityai/sd-turbo")),
    ("model path", "/run", changed(model="../../etc/passwd")),
    ("model list", "/run", changed(model=["shapes"])),
    ("solver unknown", "/run", changed(solver="newton")),
    ("stopping unknown", "/run", changed(stopping="whenever")),
    ("init trajectory of another T", "/run", changed(init="trajectory", steps=13, window=13, order=13,
                                                     max_iters=13)),
    ("work cap: shapes-unet T = W = 100", "/run", changed(**UNET_TOO_MUCH)),
    ("race contest unknown", "/race", raced(contest="who-wins")),
    ("race steps text", "/race", raced(steps="fifty")),
    ("race work cap", "/race", raced(**UNET_TOO_MUCH)),
    ("teach prompt int", "/teach", taught(123, 0, 20, 20)),
    ("teach steps 10**6", "/teach", taught("north", 0, 10**6, 1)),
    ("teach unknown word", "/teach", taught("up north", 3, 20, 1)),
    ("teach order -1", "/teach", taught("north", 0, 20, -1)),
    ("teach seed text", "/teach", taught("north", "x", 20, 1)),
    ("join: not JSON", "http", raw_join(b"{not json")),
    ("join: data not a list", "http", raw_join(b"", data_not_a_list)),
    ("join: 2 of 16 inputs", "http", raw_join(b"", wrong_inputs)),
    ("join: unknown fn_index", "http", raw_join(b"", wrong_fn)),
    ("file route: /etc/passwd", "http", raw_get("gradio_api/file=/etc/passwd")),
    ("call: /call/run with 1 of 16 inputs", "http", raw_post("gradio_api/call/run", {"data": ["shapes"]})),
    ("call: unknown name on /call/v2", "http", raw_post("gradio_api/call/v2/nothing", {"prompt": "x"})),
    ("upload 2 MB", "http", raw_upload),
]  # fmt: skip


# ---- the pass criteria -----------------------------------------------------------------------------

GOOD_ENDS = {"served", "queue full", "stopped", "left"}
BAD_ENDS = {"message", "queue full"}


@dataclass
class Criterion:
    name: str
    status: str  # pass, fail, n/a
    detail: str


def check(name: str, ok: bool | None, detail: str) -> Criterion:
    return Criterion(name, "n/a" if ok is None else "pass" if ok else "fail", detail)


def tracebacks(log: Path) -> Criterion:
    text = log.read_text(errors="replace")
    n = text.count(TRACEBACK)
    last = ""
    if n:
        tail = text[text.index(TRACEBACK) :].splitlines()
        last = next((line for line in tail[1:] if line and not line.startswith(" ")), tail[-1])
    return check(
        "no server traceback", n == 0, f"{n} in the server's stderr" + (f"; first: {last[:120]}" if n else "")
    )


def outcomes(jobs: list[Job], good: bool) -> Criterion:
    mine = [j for j in jobs if j.good == good and not j.kind.startswith("driver")]
    ends = GOOD_ENDS if good else BAD_ENDS
    wrong = [j for j in mine if j.outcome not in ends]
    counts = ", ".join(f"{k} {v}" for k, v in Counter(j.outcome for j in mine).most_common())
    examples = "; ".join(f"{j.kind} → {j.outcome}: {j.note[:70]}" for j in wrong[:3])
    name = (
        "every good job served or refused (queue full)" if good else "every bad input answered with a message"
    )
    return check(
        name, not wrong if mine else None, f"{len(mine)} jobs: {counts}" + (f"; {examples}" if wrong else "")
    )


def driver_errors(jobs: list[Job]) -> Criterion:
    errors = [j for j in jobs if j.kind.startswith("driver")]
    detail = "; ".join(f"{j.kind}: {j.note[:80]}" for j in errors[:3]) or "none"
    return check("the driver itself ran clean", not errors, detail)


def answered_within(jobs: list[Job], limit_s: float) -> Criterion:
    """Bad input is refused at the door: answered within ``limit_s`` at the 95th percentile."""
    times = [j.latency_s for j in jobs if not j.good and j.latency_s is not None and j.outcome in BAD_ENDS]
    p95 = quantile(times, 0.95) if times else float("nan")
    detail = f"p95 {p95:.2f} s, p50 {quantile(times, 0.5):.2f} s, max {max(times):.2f} s over {len(times)}"
    return check(f"bad input answered p95 < {limit_s:g} s", p95 < limit_s if times else None, detail)


def stop_within(jobs: list[Job], limit_s: float) -> Criterion:
    """Stop ends a job (press → the job's stream ends) within ``limit_s`` at the 95th percentile."""
    times = [j.stop_s for j in jobs if j.stop_s is not None]
    p95 = quantile(times, 0.95) if times else float("nan")
    detail = f"p95 {p95:.2f} s, p50 {quantile(times, 0.5):.2f} s, max {max(times):.2f} s over {len(times)}"
    return check(f"Stop ends a job p95 < {limit_s:g} s", p95 < limit_s if times else None, detail)


def covered(samples: list[Sample], load_s: float, interval_s: float) -> Criterion:
    """The samples span the load (a sampler that stopped early would leave the growth criteria blind)."""
    last = max((s.t_s for s in samples), default=0.0)
    return check(
        "the server was sampled to the end", last >= load_s - 2 * interval_s, f"last sample {last:.0f} s"
    )


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value), per hour."""
    ts, vs = [t for t, _ in points], [v for _, v in points]
    mt, mv = statistics.fmean(ts), statistics.fmean(vs)
    var = sum((t - mt) ** 2 for t in ts)
    return 3600 * sum((t - mt) * (v - mv) for t, v in zip(ts, vs, strict=True)) / var if var else 0.0


def rss_growth(samples: list[Sample], warmup_s: float) -> Criterion:
    """The slope of the RSS floor (its lowest in each interval: between jobs) after the warm-up, and how
    much of the RSS the session state explains (MiB per state value held, least squares)."""
    name = "RSS floor after the warm-up grows < 5 %/h"
    after = [s for s in samples[1:] if s.t_s >= warmup_s]
    if len(after) < 3 or after[-1].t_s - after[0].t_s < 300:
        return check(name, None, "under 5 min of samples after the warm-up")
    start = after[0].rss_floor_mib
    rate = 100 * slope_per_hour([(s.t_s, s.rss_floor_mib) for s in after]) / start
    held = [(float(s.probe.get("state_values", 0)), s.rss_floor_mib) for s in samples[1:] if s.probe]
    per_value = slope_per_hour(held) / 3600 if len(held) > 2 else float("nan")
    detail = f"{rate:+.2f} %/h (least squares, {len(after)} samples, floor {start:.0f} → "
    detail += f"{after[-1].rss_floor_mib:.0f} MiB); RSS floor vs state values held: {per_value:.2f} MiB each"
    return check(name, rate < 5.0, detail)


def bounded_state(samples: list[Sample], age_s: float, frequency_s: float) -> list[Criterion]:
    limit = age_s + frequency_s + 120  # the age, a sweep period, and the wait for the next job's start
    cache = max(s.cache_oldest_s for s in samples)
    folders = max(s.session_oldest_s for s in samples)
    peak_mib = max(s.cache_mib for s in samples)
    probes = [s.probe for s in samples if s.probe]
    sessions = max((p.get("sessions", 0) for p in probes), default=-1)
    cap = min((p.get("session_capacity", 0) for p in probes), default=0)
    values = max((p.get("state_values", 0) for p in probes), default=-1)
    waiting = max((p.get("queue_waiting", 0) for p in probes), default=-1)
    return [
        check(
            "cache and session folders bounded by their age",
            cache <= limit and folders <= limit,
            f"oldest cache file {cache:.0f} s, oldest session folder {folders:.0f} s (limit {limit:.0f} s: "
            f"age {age_s:g} + sweep {frequency_s:g} + 120); cache peak {peak_mib:.1f} MiB",
        ),
        check(
            "session state and queue bounded",
            0 <= sessions <= cap and 0 <= waiting <= QUEUE_PLACES if probes else None,
            f"sessions ≤ {sessions} (limit {cap}), state values ≤ {values}, "
            f"queue waiting ≤ {waiting} (limit {QUEUE_PLACES})",
        ),
    ]


def no_growth(samples: list[Sample], quiet: Sample, warmup_s: float) -> list[Criterion]:
    after = [s for s in samples if s.t_s >= warmup_s]
    p = quiet.probe
    idle = bool(p) and all(p.get(k) == 0 for k in ("jobs", "queue_running", "queue_waiting", "queue_events"))
    idle_detail = f"after the load: {p.get('jobs')} jobs, {p.get('queue_running')} running"
    idle_detail += f", {p.get('queue_waiting')} waiting, {p.get('queue_events')} events known"
    done = check(
        "nothing left running after the load",
        idle,
        idle_detail + f", {p.get('queue_sessions')} sessions' message queues (Gradio keeps ≤ 2000)",
    )
    if len(after) < 3:
        return [check("no fd or thread growth", None, "under 3 samples after the warm-up"), done]
    third = max(1, len(after) // 3)
    first, last = after[:third], after[-third:]
    fds = max(s.fds for s in last) - max(s.fds for s in first)
    threads = max(s.threads for s in last) - max(s.threads for s in first)
    detail = (
        f"peak fds {max(s.fds for s in first)} → {max(s.fds for s in last)}, threads "
        f"{max(s.threads for s in first)} → {max(s.threads for s in last)} (first vs last third after the "
        f"warm-up); quiet at the end: {quiet.fds} fds, {quiet.threads} threads"
    )
    return [check("no fd or thread growth", fds <= FD_SLACK and threads <= THREAD_SLACK, detail), done]


# ---- report ----------------------------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def job_table(jobs: list[Job]) -> list[dict[str, Any]]:
    """Per kind (bad input together): count, outcomes, latency p50 / p95 / max."""
    groups: dict[str, list[Job]] = defaultdict(list)
    for j in jobs:
        groups["bad input" if not j.good else f"{j.kind} ({j.model})"].append(j)
    rows = []
    for kind, group in sorted(groups.items()):
        times = [j.latency_s for j in group if j.latency_s is not None]
        stops = [j.stop_s for j in group if j.stop_s is not None]
        rows.append({
            "kind": kind,
            "jobs": len(group),
            "outcomes": dict(Counter(j.outcome for j in group).most_common()),
            "p50_s": round(quantile(times, 0.5), 2) if times else None,
            "p95_s": round(quantile(times, 0.95), 2) if times else None,
            "max_s": round(max(times), 2) if times else None,
            "stop_to_end_s": f"{quantile(stops, 0.5):.1f} / {max(stops):.1f}" if stops else "—",
        })  # fmt: skip
    return rows


def print_report(samples: list[Sample], quiet: Sample, rows: list[dict], criteria: list[Criterion]) -> None:
    head = "min | RSS MiB floor / peak | fds | threads | cache files | cache MiB | session dirs | sessions"
    head += " | state values | kept MiB"
    print(f"\n| {head} | queue waiting | running | jobs done | load avg |\n|" + "---|" * 14)
    for s in [*samples, quiet]:
        p = s.probe
        cells = [
            f"{s.t_s / 60:.1f}",
            f"{s.rss_floor_mib:.0f} / {s.rss_peak_mib:.0f}",
            s.fds,
            s.threads,
            s.cache_files,
            f"{s.cache_mib:.1f}",
        ]
        kept = f"{p['kept_bytes'] / 2**20:.1f}" if "kept_bytes" in p else "?"
        cells += [s.session_dirs, p.get("sessions", "?"), p.get("state_values", "?"), kept]
        cells += [p.get("queue_waiting", "?"), p.get("queue_running", "?"), s.jobs_done, s.load_avg]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    print("\n| job | n | outcomes | p50 s | p95 s | max s | Stop → ended s, p50 / max |\n|" + "---|" * 7)
    for r in rows:
        outs = ", ".join(f"{k} {v}" for k, v in r["outcomes"].items())
        cells = [r["kind"], r["jobs"], outs, r["p50_s"], r["p95_s"], r["max_s"], r["stop_to_end_s"]]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    print("\n| criterion | result | detail |\n|---|---|---|")
    for c in criteria:
        print(f"| {c.name} | {c.status} | {c.detail} |")


def plot(samples: list[Sample], warmup_s: float, machine: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s.t_s / 60 for s in samples]
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=110)
    floor, peak = [s.rss_floor_mib for s in samples], [s.rss_peak_mib for s in samples]
    ax.fill_between(minutes, floor, peak, color="tab:orange", alpha=0.15, label="RSS, lowest to highest")
    ax.plot(minutes, floor, "o-", color="tab:orange", label="server RSS floor (between jobs), MiB")
    ax.set_xlabel("minutes")
    ax.set_ylabel("server RSS, MiB", color="tab:orange")
    ax.set_ylim(bottom=0)
    twin = ax.twinx()
    twin.plot(minutes, [s.cache_mib for s in samples], "s-", color="tab:cyan", label="cache folder (MiB)")
    twin.set_ylabel("cache folder, MiB", color="tab:cyan")
    twin.set_ylim(bottom=0)
    ax.axvline(warmup_s / 60, color="gray", linestyle=":", label="end of warm-up")
    ax.set_title(f"Soak: server RSS and cache folder — {machine}", fontsize=9)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.legend(loc="lower center", ncol=4, fontsize=7, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


# ---- main ----------------------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30, help=f"how long the load runs (≤ {MAX_MINUTES})")
    p.add_argument("--clients", type=int, default=10, help=f"visitors at once (1–{MAX_CLIENTS})")
    p.add_argument("--seed", type=int, default=0, help="seeds the mix of every visitor")
    p.add_argument("--interval", type=float, default=60, help="seconds between samples (10–600)")
    p.add_argument("--warmup", type=float, default=10, help="minutes before the growth criteria start")
    p.add_argument(
        "--delete-cache", default="60,600",
        help="the server's PARATTA_DELETE_CACHE 'frequency,age' in s (the Space's own 300,3600 would not "
        "age a file within a short soak)",
    )  # fmt: skip
    p.add_argument(
        "--state-sessions",
        type=int,
        default=STATE_SESSIONS,
        help=f"sessions whose state Gradio keeps (the app's {STATE_SESSIONS}; lower: a plateau sooner)",
    )
    p.add_argument(
        "--stop-weight", type=float, default=10,
        help="weight of 'run, then Stop' in each visitor's mix (the others': run 22, race 8, Teach 10, "
        "leave 8, use as init 8, warm chain 6, bad input 22); more: more Stop samples in a shorter run",
    )  # fmt: skip
    p.add_argument("--json", type=Path, default=None, help="where the series go (default: the work folder)")
    p.add_argument("--plot", type=Path, default=None, help="where the PNG goes (default: the work folder)")
    a = p.parse_args(argv)
    if not (0 < a.minutes <= MAX_MINUTES and 1 <= a.clients <= MAX_CLIENTS and 10 <= a.interval <= 600):
        p.error(f"minutes in (0, {MAX_MINUTES}], clients in [1, {MAX_CLIENTS}], interval in [10, 600]")
    if not 0 <= a.stop_weight <= 1000:
        p.error("stop-weight in [0, 1000]")
    return a


def serve(work: Path, delete_cache: str, state_sessions: int) -> tuple[Any, str, Path]:
    """The app as a Space on a free loopback port, with the probe on; returns (process, url, log)."""
    cache, log = work / "cache", work / "server.log"
    (work / "tmp").mkdir(parents=True, exist_ok=True)
    os.environ |= {"PARATTA_PROBE": "1", "PARATTA_DELETE_CACHE": delete_cache, "TMPDIR": str(work / "tmp")}
    os.environ["PARATTA_STATE_SESSIONS"] = str(state_sessions)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    server = start_server(port, cache, log, space=True, budget=None)
    wait_up(url, server, log, time.monotonic() + 180)
    return server, url, log


def drive(a: argparse.Namespace, server: Any, url: str, work: Path) -> tuple[Soak, list[Sample], Sample]:
    soak = Soak(url, time.monotonic() + 60 * a.minutes, time.monotonic(), stop_weight=a.stop_weight)
    dirs = (work / "cache", work / "tmp" / "paratta-sessions")
    samples: list[Sample] = []
    watch = threading.Thread(target=sampler, args=(soak, server.pid, dirs, a.interval, samples), daemon=True)
    watch.start()
    dependency(url, "run")  # the events' ids, read once before the load (Stop names its event by id)
    visitors = [Visitor(n, soak, a.seed) for n in range(a.clients)]
    threads = [threading.Thread(target=v.live, daemon=True) for v in visitors]
    for t in threads:
        t.start()
        time.sleep(0.5)  # visitors arrive one after another
    end = soak.deadline + JOB_TIMEOUT_S + 60
    for t in [*threads, watch]:
        t.join(max(0.0, end - time.monotonic()))
    time.sleep(SETTLE_S)
    return soak, samples, sample(soak, server.pid, *dirs)


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    frequency, age = (float(v) for v in a.delete_cache.split(","))
    work = Path(tempfile.mkdtemp(prefix="paratta-soak-"))
    server, url, log = serve(work, a.delete_cache, a.state_sessions)
    try:
        soak, samples, quiet = drive(a, server, url, work)
    finally:
        server.terminate()
        try:
            server.wait(20)
        except Exception:
            server.kill()
    warmup_s, jobs = 60 * a.warmup, list(soak.jobs)
    criteria = [tracebacks(log), outcomes(jobs, good=False), outcomes(jobs, good=True), driver_errors(jobs)]
    criteria += [rss_growth(samples, warmup_s), *bounded_state(samples, age, frequency)]
    criteria += no_growth(samples, quiet, warmup_s)
    criteria += [
        answered_within(jobs, 1.0),
        stop_within(jobs, 1.0),
        covered(samples, 60 * a.minutes, a.interval),
    ]
    rows, where = job_table(jobs), machine()
    print(f"soak: {a.minutes:g} min, {a.clients} visitors, seed {a.seed}, {len(jobs)} jobs; {where}")
    print(f"server log: {log}")
    print_report(samples, quiet, rows, criteria)
    out = {
        "machine": where,
        "settings": vars(a) | {"json": str(a.json), "plot": str(a.plot)},
        "samples": [asdict(s) for s in samples],
        "quiet_after": asdict(quiet),
        "job_table": rows,
        "criteria": [asdict(c) for c in criteria],
        "jobs": [asdict(j) for j in jobs],
    }
    path, png = a.json or work / "soak.json", a.plot or work / "soak_rss_cache.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False))
    plot(samples, warmup_s, where, png)
    print(f"series: {path}; plot: {png}")
    return 1 if any(c.status == "fail" for c in criteria) else 0


if __name__ == "__main__":
    raise SystemExit(main())
