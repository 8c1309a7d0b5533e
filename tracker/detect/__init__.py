"""Face detectors behind one small interface."""
