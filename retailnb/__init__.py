"""retailnb: contrastive pretraining and noisy-student pseudolabels for retail product classification.

The package holds every piece of logic that the pipeline's notebooks call: data (synthetic generator,
dataset adapters, manifests), models, losses, training, noisy student and evaluation.
"""

__version__ = "0.1.0"
