"""What the commands share: flags generated from the settings' declarations, the checks every
command makes before a model loads (device, output file), and the torchrun scope of a command."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, redirect_stdout
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn

import torch

from paratta.config import Spec, specs
from paratta.parallel import distributed

PER_MODEL = ("prompt", "guidance", "steps")  # defaults that depend on the model (registry)


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: a ``ValueError`` that ``main`` prints and exits 2
    on (argparse's own would print the usage first)."""

    def error(self, message: str) -> NoReturn:
        raise ValueError(f"{self.prog}: {message}")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_setting_arguments(p: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per declared setting of ``cls``; the default is None, i.e. the declared one."""
    for name, spec in specs(cls).items():
        if name in skip:
            continue
        default = (
            "the model's" if name in PER_MODEL else repr(spec.default) if spec.default == "" else spec.default
        )
        sym = f"{spec.symbol}: " if spec.symbol else ""
        auto = "" if spec.optional else f"; default {default}"  # an optional setting's hint says its auto
        text = f"{sym}{spec.hint} ({spec.range_text}{auto})"
        kind = value_parser(spec) if spec.words else spec.kind
        p.add_argument(flag(name), type=kind, default=None, choices=spec.choices or None, help=text)


def value_parser(spec: Spec) -> Callable[[str], Any]:
    """A flag's type for a number setting that also takes words (``--window auto``, and its declared
    default ``--window device``)."""

    def parse(text: str) -> Any:
        if text in spec.words or text == spec.default:
            return text
        try:
            return spec.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{spec.range_text}; got {text!r}") from None

    parse.__name__ = spec.kind.__name__  # argparse names the type in its message
    return parse


def settings_from_args(args: argparse.Namespace, cls: type, **given: Any) -> Any:
    """``cls`` from the flags that were set (and ``given``); unset flags keep the declared default."""
    names = {f.name for f in fields(cls)}
    values = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    return cls(**{**values, **{k: v for k, v in given.items() if k in names}})


def check_device(device: str | None) -> None:
    """``ValueError`` for a device string torch does not know, or CUDA that is not there."""
    if device is None:
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device: unknown device {device!r} (cpu, cuda, cuda:1, …)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")


def check_output(path: Path, suffixes: tuple[str, ...], what: str) -> None:
    """The file can be written where asked, under the exact name asked: checked before sampling."""
    if path.is_dir() or str(path).endswith(("/", "\\")):
        raise ValueError(f"{what}: {path} is a directory; give a file name")
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"{what}: {path} must end in {' or '.join(suffixes)}")
    folder = path.parent
    try:  # a real probe: permission bits say little when running as root
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ValueError(f"{what}: cannot write in {folder}: {err.strerror or err}") from None


@contextmanager
def rank_scope(args: argparse.Namespace) -> Iterator[distributed.Group | None]:
    """One CLI command under torchrun; outside torchrun, nothing changes.

    Joins the group from the environment (NCCL when ``args.device`` is CUDA; timeout from
    ``PARATTA_TIMEOUT_S``, default 300 s). Only rank 0 prints and writes files: the other ranks'
    stdout goes to /dev/null and their ``--output``/``--save-trajectory`` into a temporary folder.
    A rank that fails meets its peers at ``finish``, so every rank ends with its message.
    """
    if not distributed.launched():
        yield None
        return
    text = os.environ.get("PARATTA_TIMEOUT_S", "300")
    try:
        timeout_s = float(text)
    except ValueError:
        raise ValueError(f"PARATTA_TIMEOUT_S must be a number of seconds > 0; got {text!r}") from None
    group = distributed.init_from_env(timeout_s, getattr(args, "device", None))
    with ExitStack() as stack:
        if group.rank != 0:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="paratta-rank")))
            stack.enter_context(redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
            if hasattr(args, "output"):  # the default name would land beside rank 0's file: name one
                suffix = ".npy" if args.output_type == "latent" else ".png"
                args.output = folder / (Path(args.output).name if args.output else f"rank{suffix}")
            if getattr(args, "save_trajectory", None):
                args.save_trajectory = folder / Path(args.save_trajectory).name
        with distributed.in_step(group):
            yield group
    distributed.shutdown()
