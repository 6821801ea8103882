"""Data: the batch contract, the synthetic face generator, real-format readers and the datamodule."""
