"""Datasets: one manifest format, a synthetic generator and adapters for real image collections."""
