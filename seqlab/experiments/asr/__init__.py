"""Speech-recognition experiments."""
