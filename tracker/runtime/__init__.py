"""The streaming spine: bounded channels, stages on threads, signals and fault injection."""
