"""Runners: trainer, evaler, decoder, checkpoints, optimizers, summaries."""
