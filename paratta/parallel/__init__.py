"""One solve across torch.distributed ranks (``distributed``), and model replicas on several GPUs of one
process (``replicas``). What is decided before a run (its plan, the cost model) is ``paratta.planning``."""
