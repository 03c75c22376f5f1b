"""The typed, validated parameters of every stage, read from ``params.yaml``.

``params.yaml`` holds every value and every default; nothing in the package repeats them. Each stage
declares the keys it reads (:mod:`retailnb.config.stages`, mirrored by the stage's ``params:`` in
``dvc.yaml``), and :func:`retailnb.config.stages.load_stage` turns those keys into one frozen pydantic
model, checking types (a bool written ``"false"`` is an error, never truthy), ranges and unknown keys.
Every error names the ``params.yaml`` key path and the bad value.

Why pydantic v2 rather than OmegaConf structured configs: strict mode rejects ``"false"`` for a bool and
``2.5`` for an int outright, constraints (``gt``, ``ge``, ``Literal``) sit beside each field, nested
models give key paths for free, and the same models serialise to JSON for ``torchrun`` workers and the
stage records the report reads. OmegaConf would coerce ``"false"`` to ``False`` and has no range checks.

Overrides (``key.path=value``, as ``dvc exp run -S`` takes them) and the recipes of ``recipes/`` (measured
configurations as overrides, for those with more time) are :mod:`retailnb.config.overrides`.
"""
