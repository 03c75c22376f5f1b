"""Every training seed's records, summarised: each result's mean and t-interval over the seeds.

The pipeline runs pretraining, the noisy student and the evaluation once per training seed
(``evaluate.seeds``), each writing its records under ``metrics/seeds/<seed>/``. This module reads exactly
the seeds the parameters name (runs of seeds no longer listed may still lie on disk), checks that every
one is complete, and turns the per-seed values of each cell into an :class:`~retailnb.results.records.IntervalRecord`.
The report's table and verdicts, and the headline metrics, are computed from that summary.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from retailnb.results.intervals import ratio_values, t_interval
from retailnb.results.records import (
    EvaluateRecord,
    FinetuneSummary,
    HeadlineFigure,
    HeadlineRecord,
    IntervalRecord,
    NoisyRecord,
    PretrainRecord,
    R,
    SummaryRecord,
    TargetSummary,
    read_record,
)
from retailnb.config.score_names import SCORES

_ROUND_KEY = re.compile(r"^noisy_round_(\d+)$")

@dataclass(frozen=True)
class SeedRecords:
    """What one training seed's stages recorded (``metrics/seeds/<seed>/``).

    Attributes:
        pretrain: pretraining variant -> its record.
        noisy: the noisy-student record, None when that stage has not run.
        evaluations: target -> its evaluation record.
    """

    pretrain: dict[str, PretrainRecord]
    noisy: NoisyRecord | None
    evaluations: dict[str, EvaluateRecord]


def seed_folder(root: str | Path, seed: int) -> Path:
    """The folder of one training seed's records: ``<root>/<seed>``."""
    return Path(root) / str(seed)


def _records(model: type[R], folder: Path) -> dict[str, R]:
    return {f.stem: read_record(model, f) for f in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


def read_seed(root: str | Path, seed: int, variants: Collection[str] | None = None) -> SeedRecords:
    """The records of one training seed under ``root`` (``pretrain/<variant>.json``, ``noisy.json``,
    ``evaluate/<target>.json``), validated; with ``variants``, only those pretraining variants' records
    (a removed variant's record, left on disk by DVC, is not read).

    Raises:
        FileNotFoundError: the seed has no evaluation record: its ``evaluate`` stage has not run.
    """
    folder = seed_folder(root, seed)
    evaluations = _records(EvaluateRecord, folder / "evaluate")
    if not evaluations:
        raise FileNotFoundError(f"{folder / 'evaluate'}: no evaluation records of training seed {seed}; run its "
                                f"stages first (dvc repro evaluate@<target>-{seed})")
    noisy = folder / "noisy.json"
    pretrain = _records(PretrainRecord, folder / "pretrain")
    if variants is not None:
        pretrain = {name: record for name, record in pretrain.items() if name in variants}
    return SeedRecords(pretrain=pretrain,
                       noisy=read_record(NoisyRecord, noisy) if noisy.is_file() else None, evaluations=evaluations)


def read_seeds(root: str | Path, seeds: Sequence[int],
               variants: Collection[str] | None = None) -> dict[int, SeedRecords]:
    """:func:`read_seed` of every seed, in the given order."""
    return {seed: read_seed(root, seed, variants) for seed in seeds}


def noisy_rounds(methods: Mapping[str, object]) -> list[tuple[int, str]]:
    """(round, method name) of the noisy-student rows of a table, by round number."""
    return sorted((int(m.group(1)), name) for name in methods if (m := _ROUND_KEY.match(name)))


def _common_keys(rows: Sequence[Mapping[str, object]]) -> list[str]:
    """The keys every row has, in the first row's order."""
    return [k for k in rows[0] if all(k in row for row in rows[1:])]


def summarize_target(name: str, per_seed: Mapping[int, EvaluateRecord], confidence: float) -> TargetSummary:
    """One target's evaluation over the training seeds.

    Every cell a method has in every seed (``probe_<shots>``, ``knn_all``; not the
    draws' ``_std``, which the seeds' spread replaces) becomes the interval of its per-seed values.

    Raises:
        ValueError: the seeds' records disagree on the main variant or the target's images (the runs are
            not repetitions of one experiment).
    """
    seeds = list(per_seed)
    records = [per_seed[s] for s in seeds]
    first = records[0]
    for seed, record in per_seed.items():
        same = (record.main_variant, record.n_classes, record.n_train, record.n_test)
        if same != (first.main_variant, first.n_classes, first.n_train, first.n_test):
            raise ValueError(f"target {name!r}: training seed {seed} evaluated another setup (main variant, "
                             f"products, images {same}) than seed {seeds[0]}; rerun its stages")
    methods = {}
    for method in _common_keys([r.methods for r in records]):
        rows = [r.methods[method] for r in records]
        keys = [k for k in _common_keys(rows) if not k.endswith("_std") and k != "ratio_to_finetune"]
        methods[method] = {k: t_interval([row[k] for row in rows], confidence) for k in keys}
    finetune = {}
    for init in _common_keys([r.finetune for r in records]):
        runs = [r.finetune[init] for r in records]
        finetune[init] = FinetuneSummary(accuracy=t_interval([f.accuracy for f in runs], confidence),
                                         lrs=[f.lr for f in runs], best_epochs=[f.best_epoch for f in runs])
    main = first.main_variant
    ratio = None
    if "pretrained" in finetune and all("probe_all" in r.methods.get(main, {}) for r in records):
        values = ratio_values([r.methods[main]["probe_all"] for r in records],
                              [r.finetune["pretrained"].accuracy for r in records])
        ratio = t_interval(values, confidence) if values else None
    gain = None
    rounds = noisy_rounds(methods)
    if rounds and main in methods and "probe_all" in methods[main] and "probe_all" in methods[rounds[-1][1]]:
        last = rounds[-1][1]
        gain = t_interval([r.methods[last]["probe_all"] - r.methods[main]["probe_all"] for r in records], confidence)
    return TargetSummary(target=name, target_source=first.target_source, seeds=seeds, main_variant=main,
                         methods=methods, finetune=finetune, probe_to_finetune=ratio, noisy_gain=gain,
                         n_classes=first.n_classes, n_train=first.n_train, n_test=first.n_test,
                         n_overlap_dropped=first.n_overlap_dropped, rejection=first.rejection)


def summarize(records: Mapping[int, SeedRecords], confidence: float) -> SummaryRecord:
    """Every target's :func:`summarize_target` over the seeds of ``records``.

    Raises:
        ValueError: no seeds, or a seed lacks a target another seed has.
    """
    if not records:
        raise ValueError("no training seeds to summarise (evaluate.seeds is empty)")
    seeds = list(records)
    targets = list(records[seeds[0]].evaluations)
    for seed in seeds:
        missing = sorted(set(targets) ^ set(records[seed].evaluations))
        if missing:
            raise ValueError(f"training seeds {seeds[0]} and {seed} evaluated different targets ({', '.join(missing)} "
                             f"in one only); run every evaluate@<target>-<seed> stage (dvc repro evaluate)")
    return SummaryRecord(seeds=seeds, confidence=confidence, targets={
        name: summarize_target(name, {s: records[s].evaluations[name] for s in seeds}, confidence)
        for name in targets})


def reject_key(score: str, measure: str) -> str:
    """The table cell of a rejection ``measure`` of ``score`` (:func:`retailnb.evaluation.rejection.rejection_cells`)."""
    return f"reject_{score}_{measure}"


def best_rejection_score(summary: TargetSummary) -> str | None:
    """The score with the highest AUROC averaged over the methods (the one the bundle should use), or None
    when the target's rejection was not measured."""
    means = {score: [row[reject_key(score, "auroc")].mean for row in summary.methods.values()
                     if reject_key(score, "auroc") in row] for score in SCORES}
    means = {score: values for score, values in means.items() if values}
    if not means:
        return None
    return max(means, key=lambda score: sum(means[score]) / len(means[score]))


def _figure(cell: IntervalRecord) -> HeadlineFigure:
    half = cell.half_width
    return HeadlineFigure(all=round(cell.mean, 3), ci=None if half is None else round(half, 3))


def _mean(cell: IntervalRecord | None) -> float | None:
    return None if cell is None else round(cell.mean, 3)


def headline(summary: SummaryRecord) -> HeadlineRecord:
    """The record of ``metrics/headline.json``: the first target's all-image probe accuracy of random
    weights, the main backbone and the last noisy-student round, the finetuned main backbone, and the
    probe/finetune ratio, each over the training seeds.

    Raises:
        ValueError: the summary has no target, or its main backbone has no all-image probe.
    """
    if not summary.targets:
        raise ValueError("the summary holds no target: nothing to put in the headline")
    target = next(iter(summary.targets.values()))
    methods = target.methods
    if "probe_all" not in methods.get(target.main_variant, {}):
        raise ValueError(f"target {target.target!r}: the main backbone {target.main_variant!r} has no all-image probe")
    rounds = noisy_rounds(methods)
    last = methods[rounds[-1][1]].get("probe_all") if rounds else None
    tuned = target.finetune.get("pretrained")
    return HeadlineRecord(seeds=len(summary.seeds), random=_mean(methods.get("random_init", {}).get("probe_all")),
                          main=_figure(methods[target.main_variant]["probe_all"]),
                          student=None if last is None else _figure(last),
                          finetune=None if tuned is None else _mean(tuned.accuracy),
                          ratio=_mean(target.probe_to_finetune))
