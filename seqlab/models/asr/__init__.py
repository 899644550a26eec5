"""Speech-recognition models."""
