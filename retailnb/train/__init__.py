"""Training: batch sampling, the device-agnostic training engine, and the method-specific steps."""
