"""Temporal denoising and smoothing of landmark tracks."""
