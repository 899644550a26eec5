"""``seqlab serve``: an HTTP inference server with dynamic batching, metrics and a demo page."""
