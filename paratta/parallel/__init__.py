"""Around the iteration: the plan of a run (``plan``: an auto window chosen for the device, a group to
split rows over), the cost model on measured batch-latency tables (``cost``, ``latency``,
``calibration``), one solve across torch.distributed ranks, and model replicas on several GPUs of
one process."""
