"""The product: a model bundle (backbone + linear probe) that is fitted, edited, saved and used to predict, and its command line.

This package's ``__init__`` imports nothing, so that ``retailnb --help`` answers without loading torch.
"""
