"""The pipeline's stages as package functions: a typed spec and paths in, outputs written, a record out.

Each module holds one stage of ``dvc.yaml``: ``run(spec, paths)`` writes every output the stage declares
(models, metrics, plot data) atomically and returns the typed record of :mod:`retailnb.results.records` that
its metrics file holds. The notebooks call these, narrate and draw; they build no metrics themselves.
"""
