"""What the page shows: the control panel (``controls``), what a run keeps (``record``), and the frames,
verdicts and charts made from it (``views``, ``render``, ``plot``). Nothing here runs the library's
solver."""
