"""ParaTAA live demo.

    python app.py                          # the embedded shapes model: no GPU, no network
    python app.py --model path/or/hub-id   # Stable Diffusion (a diffusers folder or a hub id)
    python app.py --devices cuda:0,cuda:1  # each iteration's network rows split over two GPUs

Also ``--host``, ``--port``, ``--share`` (off by default) and ``--budget`` (seconds per run). On a
Hugging Face Space the model can come from the ``PARATTA_MODEL`` variable; ZeroGPU is used when the
``spaces`` package is installed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no look-ups of outside hosts at launch
# A cache folder of the app's own: ui.serve.cache sweeps it, and must never touch another app's files.
os.environ.setdefault("GRADIO_TEMP_DIR", os.path.join(tempfile.gettempdir(), "paratta-gradio"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="ParaTAA: parallel diffusion sampling, converging live (Gradio)")
    p.add_argument(
        "--model",
        default=os.environ.get("PARATTA_MODEL") or None,
        help="a diffusers folder or hub id to add (and select); built-ins are always there",
    )
    p.add_argument("--host", default=None, help="address to bind (default 127.0.0.1, or GRADIO_SERVER_NAME)")
    p.add_argument("--port", type=int, default=None, help="port (default 7860 or the next free one)")
    p.add_argument("--share", action="store_true", help="create a public gradio.live link (needs internet)")
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        help="wall-clock seconds a run may take before it ends as if stopped "
        "(default 30 on a Space, 300 elsewhere; or PARATTA_BUDGET_S)",
    )
    p.add_argument(
        "--devices",
        default=None,
        help="devices to split each iteration's network evaluations over, e.g. cuda:0,cuda:1 "
        "(one replica per device; default: cuda if present, else cpu)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.budget is not None:
        os.environ["PARATTA_BUDGET_S"] = str(args.budget)  # read by ui.serve.limits.Caps, like on a Space
    from ui.serve.devices import configure

    try:
        configure(args.devices)  # before the models load: they load onto these devices
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    from ui.app import build_demo, concurrency_limit, launch_options  # gradio and the models: seconds
    from ui.serve.gpu import freeze_startup
    from ui.serve.guards import launch_limits

    demo = build_demo(extra_model=args.model)
    freeze_startup()  # start-up's objects stay: each job's collection walks only its own
    # The queue is the bound across visitors; ui.serve.jobs bounds each one (one job per session).
    demo.queue(default_concurrency_limit=concurrency_limit(), max_size=32)
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        **launch_limits(),  # no uploads, a bounded number of sessions' state
        **launch_options(),
    )


if __name__ == "__main__":
    main()
