"""mastctl: find mast cells in H&E histology images."""

__version__ = "0.1.0"
