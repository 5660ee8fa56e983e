"""Self-training stage: teacher activations, k-means and cluster-id targets."""
