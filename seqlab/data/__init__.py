"""Data: corpora preparers, tokenizers, readers, batching."""
