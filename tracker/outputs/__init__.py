"""What a run writes: JSON lines, annotated video, preview, drawings."""
