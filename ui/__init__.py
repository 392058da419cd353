"""The Gradio demo of paratta: controls, live rendering, race and teaching tabs.

Everything here only displays what ``paratta.solve`` and ``paratta.iterate_sequential`` yield;
the solver itself lives in the library.
"""
