"""What a run is asked with (``RunSettings``) and what a finished (or stopped) run keeps for scrubbing
and downloads (``RunRecord``): small, picklable, no tensors.

Per iteration: a preview (kept PNG-encoded) and a row (the (T,) residual vector and a few numbers).
Per run: its settings read through its posed run (``paratta.Run``: the window the device chose, the
family the model samples), the reference's preview and full decode, the last iterate's full decode
(PNG too) and the final trajectory in float32 (for "use this run as initialisation"). Its size counts
in the sessions' byte budget (``ui.serve.keep.STORE``); once evicted, every use of it raises
``Expired``.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
from PIL import Image

from paratta import Request, Run, SolverConfig
from paratta.config import specs
from paratta.planning.plan import Plan

from ..serve.keep import STORE, Expired

IMAGES = ("sequential_preview", "sequential_image", "final_image")
EMPTY_PROMPT = "empty prompt: a sample of everything the model draws (no condition), not of a caption"
_ENDING = threading.Lock()  # Stop (its own event) and the run's handler may both try to end a run


def encode(image: np.ndarray) -> bytes:
    """A uint8 (h, w, 3) image as PNG bytes: lossless, a fraction of the pixels' size."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


REQUEST_SPECS = specs(Request)
CONFIG_SPECS = specs(SolverConfig)
PLANNED = {f.name for f in fields(Plan)} & set(CONFIG_SPECS)  # the settings a plan makes concrete


@dataclass(frozen=True)
class RunSettings:
    """One run's settings, typed: the model's name, what to sample and how to solve it. A setting is
    read by its declared name (``settings["window"]``): once the run is posed (``run``), the value it
    runs with (a window the device chose, the model's own family for "auto"), else as given."""

    model: str
    request: Request
    config: SolverConfig
    run: Run | None = field(default=None, compare=False, repr=False)

    def __getitem__(self, name: str) -> Any:
        if name == "model":
            return self.model
        if self.run is not None and name in PLANNED:
            return getattr(self.run.plan, name)
        if self.run is not None and name == "family":
            return self.run.family
        if name in REQUEST_SPECS:
            return getattr(self.request, name)
        if name in CONFIG_SPECS:
            return getattr(self.config, name)
        raise KeyError(name)

    def posed(self, run: Run) -> RunSettings:
        """These settings read through ``run`` (kept detached: no problem, no process-bound parts)."""
        return replace(self, run=run.detached())

    def as_dict(self) -> dict[str, Any]:
        """Every setting by name, as the run ran with it (the run JSON's ``settings``)."""
        given = {"model": self.model, **asdict(self.request), **asdict(self.config)}
        return {name: self[name] for name in given}


@dataclass
class IterationRow:
    """One parallel iteration as the UI shows it (index i of ``residual`` is step i, 0 = least noisy)."""

    iteration: int
    window: tuple[int, int]  # [lo, hi)
    anchor: int  # states >= anchor are final; 0 = done
    evaluations: int  # cumulative network evaluations
    seconds: float  # cumulative solver wall-clock (model + solver), UI excluded
    max_residual: float
    distance: float  # RMS latent distance of this iterate's x_0 to the sequential x_0
    residual: np.ndarray  # (T,) float64, NaN outside the window
    converged: bool = False


class Previews:
    """The per-iteration previews of a record, PNG-encoded; reads give uint8 (h, w, 3) arrays."""

    def __init__(self, owner: RunRecord, images: Iterable[np.ndarray] = ()) -> None:
        self.owner = owner
        self.data = [encode(i) for i in images]

    def append(self, image: np.ndarray) -> None:
        self.data.append(encode(image))
        self.owner.grew()

    def __len__(self) -> int:
        self.owner.alive()
        return len(self.data)

    def __getitem__(self, k: int) -> np.ndarray:
        self.owner.alive()
        return decode(self.data[k])

    def __iter__(self) -> Iterator[np.ndarray]:
        self.owner.alive()
        return (decode(d) for d in list(self.data))

    def __delitem__(self, k: int | slice) -> None:
        del self.data[k]

    def nbytes(self) -> int:
        return sum(len(d) for d in self.data)


@dataclass(eq=False)
class RunRecord:
    """Everything one run leaves behind; lives in a ``gr.State``, its size counted in ``STORE``."""

    settings: RunSettings
    steps: int
    tol: float
    latent_shape: tuple[int, ...]
    rows_per_step: int | None = None  # network rows a timestep costs; None: from the guidance (1 or 2)
    sampler: str | None = None  # the sampler's name (``paratta.Run.sampler``); None: DDIM(η) or flow Euler
    notes: list[str] = field(default_factory=list)  # clamps and other things the stats line must say
    session: str = "local"  # the session whose folder holds its downloads (ui.serve.cache.session_folder)
    stopped: bool = False  # set once by whoever ends the run (Stop, or its limits); read by the others
    sequential_seconds: float = 0.0
    expired: bool = False  # evicted from STORE: every use raises Expired
    _rows: list[IterationRow] = field(default_factory=list, repr=False)
    _previews: Previews | None = field(default=None, repr=False)
    _images: dict[str, bytes] = field(default_factory=dict, repr=False)
    _trajectory: np.ndarray | None = field(default=None, repr=False)

    def claim_stop(self) -> bool:
        """Mark the run stopped; True only for the one caller that did (Stop and the run's own limits
        race for it: the winner shows the last iteration, the other leaves it)."""
        with _ENDING:
            if self.stopped or self.has("final_image"):
                return False
            self.stopped = True
            return True

    @property
    def points(self) -> bool:
        """A state of one axis (toy2d's (2,)) is a point of the plane, its picture drawn around it."""
        return len(self.latent_shape) == 1

    def alive(self) -> None:
        if self.expired:
            raise Expired()

    @classmethod
    def of(cls, settings: RunSettings, run: Run, session: str = "local") -> RunRecord:
        """The record of ``run``, posed from ``settings``: what the views say of it comes from the run
        (T, the tolerance, the latent shape, the rows per timestep, the sampler's name)."""
        notes = []
        if run.plan.projection is not None:
            notes.append(run.plan.projection.line())
        if not run.request.prompt:
            notes.append(EMPTY_PROMPT)
        return cls(
            settings=settings.posed(run),
            steps=run.steps,
            tol=run.plan.tol,
            latent_shape=run.latent_shape,
            rows_per_step=run.rows_per_step,
            sampler=run.sampler,
            notes=notes,
            session=session,
        )

    def grew(self) -> None:
        """Tell the store this record's size now."""
        STORE.hold(self.session, self)

    def nbytes(self) -> int:
        rows = sum(r.residual.nbytes for r in self._rows)
        previews = self._previews.nbytes() if self._previews is not None else 0
        trajectory = self._trajectory.nbytes if self._trajectory is not None else 0
        return rows + previews + trajectory + sum(len(b) for b in self._images.values())

    def expire(self) -> None:
        self.expired = True
        self._rows, self._previews, self._images, self._trajectory = [], None, {}, None

    @property
    def rows(self) -> list[IterationRow]:
        self.alive()
        return self._rows

    @rows.setter
    def rows(self, rows: list[IterationRow]) -> None:
        self._rows = rows

    @property
    def previews(self) -> Previews:
        self.alive()
        if self._previews is None:
            self._previews = Previews(self)
        return self._previews

    @previews.setter
    def previews(self, images: Iterable[np.ndarray]) -> None:
        self._previews = Previews(self, images)
        self.grew()

    @property
    def trajectory(self) -> np.ndarray | None:
        """float32 (T+1, *latent): the last iterate."""
        self.alive()
        return self._trajectory

    @trajectory.setter
    def trajectory(self, value: np.ndarray | None) -> None:
        self._trajectory = None if value is None else np.asarray(value, dtype=np.float32)
        self.grew()

    def _image(self, name: str) -> np.ndarray | None:
        self.alive()
        data = self._images.get(name)
        return None if data is None else decode(data)

    def _set_image(self, name: str, image: np.ndarray | None) -> None:
        if image is None:
            self._images.pop(name, None)
        else:
            self._images[name] = encode(image)
        self.grew()

    sequential_preview = property(
        lambda self: self._image("sequential_preview"),
        lambda self, v: self._set_image("sequential_preview", v),
        doc="uint8 (h, w, 3): the reference's latest preview",
    )
    sequential_image = property(
        lambda self: self._image("sequential_image"),
        lambda self, v: self._set_image("sequential_image", v),
        doc="uint8: the full decode of the sequential x_0",
    )
    final_image = property(
        lambda self: self._image("final_image"),
        lambda self, v: self._set_image("final_image", v),
        doc="uint8: the full decode of the last iterate's x_0",
    )

    def has(self, name: str) -> bool:
        """Whether image ``name`` (of ``IMAGES``) is set, without decoding it."""
        self.alive()
        return name in self._images

    @property
    def iterations(self) -> int:
        return len(self.rows)

    @property
    def converged(self) -> bool:
        return bool(self.rows) and self.rows[-1].converged

    def residual_matrix(self, upto: int | None = None) -> np.ndarray:
        """(n, T) residuals of the first ``upto`` iterations (all by default)."""
        rows = self.rows[:upto] if upto is not None else self.rows
        if not rows:
            return np.zeros((0, self.steps))
        return np.stack([r.residual for r in rows])
