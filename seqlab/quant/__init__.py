"""Quantization: QAT fake-quant domains and config rewrites, post-training int8 converters."""
