"""Data stage: reading audio, downloading corpora and cutting them into 24 kHz shards."""
