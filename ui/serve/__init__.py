"""The server's side of a public Space: the models on their devices (``models``, ``devices``, ``gpu``),
what a visitor may cost (``limits``: the caps and the work cap's arithmetic; ``jobs``: one job per
session and its time budget), what a visitor may send and leave (``guards``, ``cache``, ``keep``), and
the one module that reads or writes Gradio's private objects (``gradio_private``)."""
