"""Small utilities every layer may use: atomic writes, file locks, process pools, progress, errors, tables."""
