"""Evaluation stage: embeddings, the HEAR API, HEAR tasks, the MLP protocol and scores."""
