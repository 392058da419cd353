"""The parallel runtime: one solve across torch.distributed ranks, model replicas on several
GPUs of one process, and the measured batch-latency tables that project wall-clock."""
