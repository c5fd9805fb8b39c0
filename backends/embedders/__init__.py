"""Embedders: items -> float32 L2-normalised vectors."""
