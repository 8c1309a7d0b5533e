"""Video input (PyAV sources) and landmark files."""
