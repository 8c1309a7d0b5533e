"""Accuracy: landmark metrics, still-image evaluation and plots."""
