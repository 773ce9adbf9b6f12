"""Valet: elastic GPU training with a healing buffer packed with spot batch inference."""

__version__ = "0.1.0"
