"""ParaTAA live demo.

    python app.py                          # the embedded shapes model: no GPU, no network
    python app.py --model path/or/hub-id   # Stable Diffusion (a diffusers folder or a hub id)

Also ``--host``, ``--port`` and ``--share`` (off by default). On a Hugging Face Space the model can
come from the ``PARATTA_MODEL`` variable; ZeroGPU is used when the ``spaces`` package is installed.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no look-ups of outside hosts at launch


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
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from ui.app import build_demo, concurrency_limit, launch_options  # gradio and the models: seconds

    demo = build_demo(extra_model=args.model)
    demo.queue(default_concurrency_limit=concurrency_limit(), max_size=32)
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        state_session_capacity=200,
        **launch_options(),
    )


if __name__ == "__main__":
    main()
