"""Evaluation: frozen features, linear probes and few-shot accuracy.

The question this package answers is whether a logistic regression on FROZEN backbone features
classifies new products about as well as finetuning the whole network. :mod:`.features` extracts and
caches the features, :mod:`.probe` fits the logistic-regression (and k-nearest-neighbour) probes, and
:mod:`.fewshot` repeats the probe over seeded per-class samples of 1, 5, 10, ... training images.
"""
