"""Neural network layers: embeddings, attention, feed-forward, Transformer stacks and losses."""
