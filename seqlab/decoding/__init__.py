"""Decoding from incremental models: batched beam search and greedy search."""
