"""The Teach room: Jacobi, global Anderson and Triangular Anderson on the 2-D model, played for a lecture.

``lanes`` solves the three lanes with the library's solver and holds their records; ``draw`` draws
the frames, the exports and the lesson's figures; ``text`` says what they show; ``tab`` is the page
and its wiring. ``ui.app`` places ``build_teach_tab`` in its tab, adds ``CSS`` and runs ``room_js`` on
each tab's select (the Teach tab hides the image sidebar and the presets).
"""

from .lanes import DEFAULTS, LANES, Lesson, checked, lesson
from .tab import CSS, build_teach_tab, room_js, teach_run
from .text import verdict

__all__ = [
    "CSS",
    "DEFAULTS",
    "LANES",
    "Lesson",
    "build_teach_tab",
    "checked",
    "lesson",
    "room_js",
    "teach_run",
    "verdict",
]
