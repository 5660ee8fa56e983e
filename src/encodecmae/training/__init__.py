"""Training stage: the settings, batches of shards, the loop and its checkpoints."""
