"""The typed records the stages write as metrics and the report reads back.

Each stage function returns one of these and writes it, atomically, as the JSON file DVC tracks as the
stage's metrics; :mod:`retailnb.results.markdown` validates the files back into the same models. So the schema
between stages lives here, once, instead of in notebook cells and string keys.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict

from retailnb.util.atomic import atomic_write_text


class Record(BaseModel):
    """A stage's result: frozen, and its JSON file holds exactly its fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the record as indented JSON to ``path``, atomically (a reader sees old or new)."""
        return atomic_write_text(path, self.model_dump_json(indent=2) + "\n")


R = TypeVar("R", bound=Record)


def read_record(model: type[R], path: str | os.PathLike[str]) -> R:
    """The record of type ``model`` at ``path``.

    Raises:
        FileNotFoundError: no file at ``path`` (the stage that writes it has not run).
        pydantic.ValidationError: the file does not hold such a record (written by another version).
    """
    return model.model_validate_json(Path(path).read_text())


class DataRecord(Record):
    """``metrics/data.json``: images and classes per role, images per domain, probe depth, overlap.

    Attributes:
        images: images per role.
        classes: products per role.
        domains: images per domain (``catalogue``, ``shelf``).
        unique_images: distinct image files.
        probe_train_min_per_class: the fewest ``probe_train`` images of any target product.
        target_classes_in_source: target products that the source (pretraining) also holds.
        probe_train_unseen: ``probe_train`` images that no training role holds (the rejection thresholds are
            chosen on these when some are and some are not: ``data.calibration_folds``).
    """

    images: dict[str, int]
    classes: dict[str, int]
    domains: dict[str, int]
    unique_images: int
    probe_train_min_per_class: int
    target_classes_in_source: int
    probe_train_unseen: int


class ProbeScores(Record):
    """Frozen-feature accuracy of one backbone on a held-out split."""

    knn_accuracy: float
    probe_accuracy: float
    probe_c: float


class TrainSummary(Record):
    """How a training run ended (its throughput is a timing: it goes to the stage's log, not the record)."""

    final_loss: float


class PretrainRecord(Record):
    """``metrics/seeds/<seed>/pretrain/<variant>.json``: the monitor on held-out source products, and training.

    Attributes:
        variant: the pretraining variant.
        objectives: the weight of each objective (``simclr``, ``supcon``, ``simsiam``; 0: off), so the report
            knows which variants combine which objectives whatever they are named.
        monitor: ``pretrained`` and ``random_init`` scores on the monitor split.
        train: the final loss.
        history: loss and learning rate per epoch.
    """

    variant: str
    objectives: dict[str, float]
    monitor: dict[str, ProbeScores]
    train: TrainSummary
    history: dict[str, list[float]]


class RoundRecord(Record):
    """One noisy-student round: the probe on the target, and (from round 1) its pseudolabels' quality.

    The pseudolabel fields are None in round 0 (no pseudolabels); ``precision`` is None too when the
    truth of the selected images is unknown (real data). ``target_confidence`` is the mean largest
    target probability of the pseudolabelled training rows: exactly 1 for hard (one-hot) targets, below
    1 for soft ones, so the record shows which kind the student was trained on.
    """

    round: int
    knn_accuracy: float
    probe_accuracy: float
    probe_c: float
    precision: float | None = None
    coverage: float | None = None
    n_selected: int | None = None
    n_rows: int | None = None
    n_with_truth: int | None = None
    target_confidence: float | None = None
    train_loss: float | None = None
    images: int | None = None


class NoisyRecord(Record):
    """``metrics/seeds/<seed>/noisy.json``: every round, and the round whose features probe best."""

    rounds: list[RoundRecord]
    best_round: int


class GridRecord(Record):
    """One learning rate of a finetuning baseline's grid: best validation accuracy, its epoch, epochs trained."""

    lr: float
    val_accuracy: float
    best_epoch: int
    epochs: int


class FinetuneRecord(Record):
    """A finetuning baseline: test accuracy of the chosen run's best-validation weights, and how it was chosen.

    Attributes:
        accuracy: test accuracy (scored once).
        lr: the learning rate with the best validation accuracy.
        best_epoch: the epoch (from 1) of the scored weights.
        val_accuracy: their validation accuracy.
        grid: every learning rate tried.
    """

    accuracy: float
    lr: float
    best_epoch: int
    val_accuracy: float
    grid: list[GridRecord]


class RejectionSetup(Record):
    """The unknown-product rejection protocol of one evaluation (``evaluate.rejection``).

    Attributes:
        n_known: products enrolled (the probe's classes).
        n_unknown: products held out, whose test photos should be rejected.
        recall: the known-product recall each threshold was chosen for.
        n_source_unknown: the source's unlabelled-only products it was also measured on (the second
            unknown set, ``evaluate.rejection.source_unknowns``); 0 when not measured.
    """

    n_known: int
    n_unknown: int
    recall: float
    n_source_unknown: int = 0


class EvaluateRecord(Record):
    """``metrics/seeds/<seed>/evaluate/<target>.json``: the results table of one downstream target.

    Attributes:
        target: the key of ``evaluate.targets``.
        target_source: its source (``prepared``, ``grocery_store``, ``imagefolder``).
        methods: method -> ``probe_<shots>`` (and ``_std``; ``probe_catalogue``: the probe trained on the
            catalogue packshots alone), ``reject_<score>_<measure>`` (unknown-product rejection, see
            ``rejection``), ``knn_all``, ``ratio_to_finetune`` (to the
            finetuned main backbone).
        finetune: the finetuning baselines, ``pretrained`` (the main backbone) and, when
            ``evaluate.finetune.random_init`` is on, ``random_init``.
        main_variant: the main backbone's name.
        n_classes: products of the target.
        n_train: its training images (after ``n_overlap_dropped``).
        n_test: its test images.
        n_overlap_dropped: training images left out because a test image is identical
            (``evaluate.on_overlap: drop``).
        rejection: the rejection protocol whose ``reject_<score>_<measure>`` cells ``methods`` holds (None:
            not measured).
    """

    target: str
    target_source: str
    methods: dict[str, dict[str, float]]
    finetune: dict[str, FinetuneRecord]
    main_variant: str
    n_classes: int
    n_train: int
    n_test: int
    n_overlap_dropped: int
    rejection: RejectionSetup | None = None


class IntervalRecord(Record):
    """A result over training seeds: its mean and t-interval (see :mod:`retailnb.results.intervals`).

    Attributes:
        mean: the mean over the seeds.
        low: the interval's lower end; None with a single seed.
        high: its upper end; None with a single seed.
        n: the number of seeds.
        confidence: the interval's level (``report.confidence``).
        values: the result of each seed, in seed order.
    """

    mean: float
    low: float | None
    high: float | None
    n: int
    confidence: float
    values: list[float]

    @property
    def half_width(self) -> float | None:
        """Half the interval's width (the t-interval is symmetric about the mean); None with one seed."""
        return None if self.low is None or self.high is None else (self.high - self.low) / 2


class FinetuneSummary(Record):
    """A finetuning baseline over the training seeds.

    Attributes:
        accuracy: its test accuracy.
        lrs: the learning rate each seed chose.
        best_epochs: the epoch (from 1) of each seed's scored weights.
    """

    accuracy: IntervalRecord
    lrs: list[float]
    best_epochs: list[int]


class TargetSummary(Record):
    """One target's results over the training seeds (an entry of ``metrics/summary.json``).

    Attributes:
        target: the key of ``evaluate.targets``.
        target_source: its source.
        seeds: the training seeds aggregated, in order.
        main_variant: the main backbone's name.
        methods: method -> ``probe_<shots>``, ``knn_all`` -> the interval of the
            per-seed values (each the mean over the shot draws of that seed).
        finetune: ``pretrained`` (and ``random_init``, when it ran) over the seeds.
        probe_to_finetune: per seed, the main backbone's all-image probe over its finetuned accuracy.
        noisy_gain: per seed, the last noisy-student round's all-image probe minus the main backbone's
            (the last round, not the best on test: choosing on the test split would flatter it).
        n_classes: products of the target.
        n_train: its training images.
        n_test: its test images.
        n_overlap_dropped: training images left out because a test image is identical.
        rejection: the unknown-product rejection protocol (None: not measured).
    """

    target: str
    target_source: str
    seeds: list[int]
    main_variant: str
    methods: dict[str, dict[str, IntervalRecord]]
    finetune: dict[str, FinetuneSummary]
    probe_to_finetune: IntervalRecord | None
    noisy_gain: IntervalRecord | None
    n_classes: int
    n_train: int
    n_test: int
    n_overlap_dropped: int
    rejection: RejectionSetup | None = None


class SummaryRecord(Record):
    """``metrics/summary.json``: every target's results over the training seeds (the report's table)."""

    seeds: list[int]
    confidence: float
    targets: dict[str, TargetSummary]


class HeadlineFigure(Record):
    """An accuracy over the training seeds, as the headline shows it: the mean and the half-width of its
    t-interval (the interval is ``all`` ± ``ci``; ``ci`` is None with a single seed), rounded to 3 digits."""

    all: float
    ci: float | None


class HeadlineRecord(Record):
    """``metrics/headline.json``: the few figures ``dvc metrics show`` and ``dvc exp show`` compare, for the
    first target of ``evaluate.targets``; short keys, so that ``dvc metrics show`` fits 120 columns.

    The full summary of every target is ``metrics/summary.json``; every run's record stays in its own
    JSON file under ``metrics/seeds/``. Accuracies are of the logistic probe on all training images.

    Attributes:
        seeds: training seeds the figures are over.
        random: the probe on random weights (mean).
        main: the probe on the main backbone (``all``, ``ci``).
        student: the probe on the last noisy-student round (``all``, ``ci``); None without noisy rounds.
        finetune: the main backbone finetuned (mean test accuracy).
        ratio: the main backbone's probe over its finetuned accuracy (mean of the per-seed ratios): the
            paper's claim is that it comes close to 1.
    """

    seeds: int
    random: float | None
    main: HeadlineFigure
    student: HeadlineFigure | None
    finetune: float | None
    ratio: float | None


class NewProductsRecord(Record):
    """``metrics/new_products.json``: accuracy and time of each enrolment.

    Attributes:
        architecture: the bundle's backbone.
        image_size: its input size.
        n_old: products in the first bundle.
        n_new: products held out and then enrolled.
        held_out: their names.
        first_c: the C cross-validation chose for the first bundle (reused by every enrolment).
        enrolment: one row per shot count (see :func:`retailnb.bundle.enrolment.enrolment_curve`).
    """

    architecture: str
    image_size: int
    n_old: int
    n_new: int
    held_out: list[str]
    first_c: float
    enrolment: list[dict[str, Any]]
