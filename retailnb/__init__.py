"""retailnb: contrastive pretraining and noisy-student pseudolabels for retail product classification.

The package holds every piece of logic that the pipeline's notebooks call. Its sub-packages are layers,
listed in :data:`LAYERS` from the ground up; a module imports only from its own layer and the layers
below it, never from one above (a test walks every import):

=============  ===========================================================================================
``util``       atomic writes, file locks, process pools, progress, errors, tables
``config``     ``params.yaml`` read into typed, validated specs (one module per ``params.yaml`` section)
``data``       the synthetic generator, dataset adapters, manifests, image decoding and the image cache
``transforms`` augmented views, RandAugment noise, evaluation crops
``losses``     SupCon (lightly's own losses are used directly)
``models``     timm backbones, checkpoints, classifiers, batched inference
``train``      the Fabric training engine, samplers, datasets and contrastive pretraining
``evaluation`` frozen features, linear probes, few-shot, finetuning baselines, unknown-product rejection
``results``    the stages' records, their summary over seeds with intervals, the report's tables and words
``noisy``      the noisy student: pseudolabels, students and rounds
``plots``      the figures the notebooks show
``bundle``     the product: a fitted model bundle, its file format and the ``retailnb`` command line
``stages``     what DVC runs: one function per stage, the torchrun entries, the notebook runner and display
=============  ===========================================================================================
"""

__version__ = "0.1.0"

LAYERS: tuple[str, ...] = ("util", "config", "data", "transforms", "losses", "models", "train", "evaluation",
                           "results", "noisy", "plots", "bundle", "stages")
"""The sub-packages from the ground up: each may import from those before it, none from those after it."""
