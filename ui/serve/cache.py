"""Files the app leaves on disk for its visitors, and their sweep.

- **Gradio's cache** (streamed frames, downloads): ``delete_cache`` gives ``gr.Blocks`` its timer; the
  app also sweeps the folder itself (``SWEEP``): Gradio's own sweep misses the images a streaming event
  yields (they are cached through a per-session copy of the component, whose file set it never sees).
  ``app.py`` gives the app a cache folder of its own, so no other app's files are touched.
- **Session folders**: each session writes its downloads into its own folder, removed when the
  session ends (``forget_folder``) or, for API clients that never send the unload event, once untouched
  for the cache's age.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

from .gradio_private import cache_folder

CACHE_FREQUENCY_S, CACHE_AGE_S = 300, 3600  # Gradio's cache: swept every 5 min, files kept for an hour


def delete_cache() -> tuple[int, int]:
    """``gr.Blocks(delete_cache=(frequency, age))``: every ``frequency`` s, Gradio deletes the files it
    cached (streamed frames, downloads) older than ``age`` s; ``PARATTA_DELETE_CACHE="60,600"`` sets it."""
    text = os.environ.get("PARATTA_DELETE_CACHE", f"{CACHE_FREQUENCY_S},{CACHE_AGE_S}")
    try:
        frequency, age = (int(v) for v in text.split(","))
    except ValueError:
        message = f"PARATTA_DELETE_CACHE must be two whole seconds 'frequency,age'; got {text!r}"
        raise ValueError(message) from None
    return frequency, age


def session_folder(session: str) -> Path:
    """This session's folder for downloads (one set per session, overwritten by its next run)."""
    safe = session if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", session) else hashlib.sha256(session.encode())
    safe = safe if isinstance(safe, str) else safe.hexdigest()  # never a path made of what a client sent
    folder = Path(tempfile.gettempdir()) / "paratta-sessions" / safe
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def forget_folder(session: str) -> None:
    shutil.rmtree(session_folder(session), ignore_errors=True)


class Sweep:
    """At most once per ``delete_cache`` frequency: remove the cached files older than its age, and the
    session folders untouched as long. One per process (the folders are the process's); thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last = 0.0

    def __call__(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        frequency, age = delete_cache()
        with self.lock:
            if now - self.last < frequency:
                return
            self.last = now
        remove_older(Path(cache_folder()), age, now)
        prune(Path(tempfile.gettempdir()) / "paratta-sessions", age)


SWEEP = Sweep()


def remove_older(root: Path, age_s: float, now: float) -> None:
    """Files under ``root`` whose ctime is more than ``age_s`` old (Gradio's own ageing), and the folders
    that leaves empty."""
    for path in sorted(root.rglob("*"), reverse=True) if root.is_dir() else ():
        try:
            if path.is_file() and now - path.stat().st_ctime > age_s:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        except (FileNotFoundError, OSError):  # removed meanwhile, or not empty after all
            continue


def prune(root: Path, age_s: float) -> None:
    """Remove session folders untouched for ``age_s`` (API clients may never send the unload event)."""
    now = time.time()
    for folder in root.glob("*") if root.is_dir() else ():
        try:
            if now - folder.stat().st_mtime > age_s:
                shutil.rmtree(folder, ignore_errors=True)
        except FileNotFoundError:
            continue
