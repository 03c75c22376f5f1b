"""The choices and defaults of the bundle's functions and commands, in plain Python.

They live apart from the modules that act on them so that the command line (:mod:`retailnb.bundle.cli`)
offers them in ``--help`` and checks its arguments against them before it imports torch or
scikit-learn. Every other module of the package takes them from here.
"""

from __future__ import annotations

from retailnb.config.score_names import Score

IMAGE_KINDS = ("shelf", "catalogue")
"""What a product's enrolment images are: photos from the shelf, or catalogue packshots (often one or two)."""

DEVICES = ("auto", "cpu", "cuda")
"""Device names :func:`~retailnb.bundle.model.inference_device` takes (also ``cuda:<index>``); ``auto`` is
CUDA when available."""

DEFAULT_REJECTION_SCORE: Score = "prototype"
"""The known-ness score a new bundle rejects unknown products with
(:attr:`~retailnb.bundle.model.ProbeSettings.rejection_score`; ``retailnb fit --rejection-score`` chooses
another): one of :data:`retailnb.config.score_names.BUNDLE_SCORES`."""

ON_ERROR = ("raise", "skip")
"""What :func:`~retailnb.bundle.embed.embed_files`, :func:`~retailnb.bundle.predict.predict_files` and the
command line (``--on-error``) do with an image that cannot be read: ``raise`` (the default of all three) stops
at the first with an :class:`~retailnb.data.images.ImageError` naming the file; ``skip`` goes on without it
and returns (or, on the command line, lists) the files it skipped."""

FORMATS = ("table", "json", "csv")
"""What ``retailnb predict --format`` writes."""

TABLE_WIDTH = 100
"""Characters per line of ``retailnb predict``'s table (a terminal's width, with room to spare)."""

EMBEDDINGS_ARRAYS = "features (N, D) float32, paths (N,), architecture, image_size, bundle"
"""What the ``.npz`` of ``retailnb embed`` holds, in words (its ``--out`` help)."""

WAIT_S = 600.0
"""How long, in seconds, an edit of a bundle waits for another edit of the same file to finish
(:func:`~retailnb.bundle.io.edit_bundle`'s ``timeout``, ``--wait`` on the command line)."""
