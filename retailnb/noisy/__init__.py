"""Noisy student: a teacher labels the unlabelled pool, and a noised student learns from those labels.

Self-training as in Xie et al. (2020), "Self-training with Noisy Student improves ImageNet
classification": the teacher (here the contrastive backbone with a classifier head) predicts class
probabilities for every unlabelled image; the confident predictions become pseudolabels; a student is
trained, with noise (augmentation, dropout, stochastic depth), on labelled and pseudolabelled images
together; the student then becomes the next round's teacher.

:mod:`.pseudolabels` turns the teacher's probabilities into the student's training set (confidence
threshold, per-class balancing, hard or sharpened soft targets) and scores pseudolabels against the
truth where the truth is known.
"""
