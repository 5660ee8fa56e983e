"""Targets stage: the EnCodec codec, quantiser fitting, gamma_q and tokenisation of shards."""
