"""The Gradio demo of paratta, in rooms: ``run/`` (a job from its settings to its updates), ``view/``
(the panel and what the page shows) and ``serve/`` (models, limits and the server's guards), under
``app`` (the page: layout and wiring) and ``teach`` (the Teach tab).

Everything here only displays what ``paratta.pose`` poses and ``paratta.solve`` and
``paratta.iterate_sequential`` yield; the solver itself lives in the library.
"""
