"""Landmark networks, their checkpoints and model cards, input preprocessing and heatmap decoding."""
