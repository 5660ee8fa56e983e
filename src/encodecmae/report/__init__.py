"""Report stage: Table 1, training curves and the shared metrics."""
