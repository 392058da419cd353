"""Everything decided before the iteration: a run posed once (``pose``: its problem, plan, sampler
and work bound), its plan (``plan``: the settings made concrete, a window chosen for the device),
and the cost model on measured batch-latency tables (``cost``, ``latency``, ``calibration``,
``window``; ``hardware`` names the devices the tables were measured on). The distributed code that
runs a plan over several processes or devices is ``paratta.parallel``."""
