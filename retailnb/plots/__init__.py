"""Figures a person wants to look at, drawn with matplotlib from manifests, metrics and features."""
