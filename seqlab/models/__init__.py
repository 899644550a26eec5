"""Tasks: models with their loss, decoding and metrics."""
