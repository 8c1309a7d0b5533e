"""Following faces from frame to frame: detector gating, rotated ROIs, ids, scene cuts."""
