"""The model: input features, span masking, the transformer encoder/decoder and the loss."""
