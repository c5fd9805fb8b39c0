"""Detectors: an image -> cells."""
