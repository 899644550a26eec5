"""Training with several processes through torch.distributed: process groups, DDP/FSDP2
wrapping, per-rank data shards and distributed (resharding) checkpoints."""
