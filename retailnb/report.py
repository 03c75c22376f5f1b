"""The final report's words and tables, computed from the typed records the stages wrote.

Every sentence that judges a result ("pretraining helped", "round 2 did not help") is derived here from the
numbers, so the report cannot drift from the metrics: rerun the pipeline and the verdicts follow. The
inputs are the stages' own records (:mod:`retailnb.records`), validated when read, and which pretraining
variants combine which objectives comes from the pretraining records, not from variant names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from retailnb.records import (
    DataRecord,
    EvaluateRecord,
    HeadlineRecord,
    NoisyRecord,
    PretrainRecord,
    R,
    RoundRecord,
    TargetHeadline,
    read_record,
)

OBJECTIVE_NAMES = {"simclr": "SimCLR", "supcon": "SupCon"}
"""How the report writes each pretraining objective of :attr:`PretrainRecord.objectives`."""

Row = Mapping[str, float]
"""One method's row of :attr:`EvaluateRecord.methods`: ``probe_<shots>`` (and ``_std``), ``knn_all``, ..."""

_PROBE_KEY = re.compile(r"^probe_(\d+|all)$")
_ROUND_KEY = re.compile(r"^noisy_round_(\d+)$")


def read_optional(model: type[R], path: str | Path) -> R | None:
    """The record at ``path``, or None when the file does not exist (a stage that was not run)."""
    return read_record(model, path) if Path(path).is_file() else None


def read_records(model: type[R], path: str | Path) -> dict[str, R]:
    """Records per run of a ``foreach`` stage: the ``<name>.json`` files of a folder, or one file named by its stem.

    Pretraining writes one file per variant (``metrics/pretrain/<variant>.json``), the evaluation one per
    target (``metrics/evaluate/<target>.json``).

    Returns an empty dict when ``path`` does not exist.

    Raises:
        pydantic.ValidationError: a file does not hold a ``model`` record.
    """
    p = Path(path)
    if p.is_file():
        return {p.stem: read_record(model, p)}
    return {f.stem: read_record(model, f) for f in sorted(p.glob("*.json"))} if p.is_dir() else {}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table, the first column left-aligned and the others right-aligned."""
    align = [":---"] + ["---:"] * (len(header) - 1)
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines) + "\n"


def _fmt(value: Any, std: Any = None) -> str:
    """An accuracy with three decimals, "± std" when a spread is recorded, "–" when missing."""
    if value is None:
        return "–"
    return f"{value:.3f} ± {std:.3f}" if std is not None else f"{value:.3f}"


def shot_keys(methods: Mapping[str, Row]) -> list[str]:
    """The ``probe_<shots>`` keys any method has, numbers ascending and ``probe_all`` last."""
    found = {m.group(1) for row in methods.values() for key in row if (m := _PROBE_KEY.match(key))}
    return [f"probe_{s}" for s in sorted(found, key=lambda s: (s == "all", int(s) if s != "all" else 0))]


def _spread(row: Row, key: str) -> float | None:
    """The recorded std of ``key``; none for all images, whose single draw has no spread (recorded as 0.0)."""
    std = row.get(f"{key}_std")
    return None if key == "probe_all" and not std else std


def _shot_header(key: str) -> str:
    shots = key.removeprefix("probe_")
    return "all images" if shots == "all" else f"{shots}-shot"


def method_table_markdown(evaluate: EvaluateRecord) -> str:
    """The main results table: one row per method, probe accuracy per shot count, kNN, ratio to finetuning.

    Shot columns are those any method has (a run without 10-shot has no 10-shot column); a method
    missing one shows "–". The main variant is marked, and the last rows give the finetuning baselines
    (from the main backbone, then from random weights) with their chosen learning rate and epoch. The
    last column is each row's fit time: the logistic regression's on all training images (features
    cached), the whole learning-rate grid's for a finetuned network.

    Args:
        evaluate: the record of ``metrics/evaluate/<target>.json``.

    Returns:
        The table as Markdown, ending with a newline.
    """
    keys = shot_keys(evaluate.methods)
    header = ["method", *(_shot_header(k) for k in keys), "kNN (all images)", "ratio to finetuned", "fit time (s)"]
    rows = []
    for name, row in evaluate.methods.items():
        label = f"`{name}`" + (" (main)" if name == evaluate.main_variant else "")
        cells = [_fmt(row.get(k), _spread(row, k)) for k in keys]
        ratio, seconds = row.get("ratio_to_finetune"), row.get("probe_all_seconds")
        rows.append([label, *cells, _fmt(row.get("knn_all")), "–" if ratio is None else f"{ratio:.2f}",
                     "–" if seconds is None else f"{seconds:.2f}"])
    reference = _finetuned_accuracy(evaluate)
    for init, result in evaluate.finetune.items():
        cells = ["–"] * len(keys)
        if keys and keys[-1] == "probe_all":
            cells[-1] = _fmt(result.accuracy)
        source = f"`{evaluate.main_variant}`" if init == "pretrained" else "random weights"
        label = f"finetuned from {source} (lr {result.lr:g}, epoch {result.best_epoch})"
        ratio_text = f"{result.accuracy / reference:.2f}" if reference else "–"
        rows.append([label, *cells, "–", ratio_text, f"{result.seconds:.0f}"])
    return markdown_table(header, rows)


def _finetuned_accuracy(evaluate: EvaluateRecord) -> float | None:
    """Test accuracy of the main backbone finetuned, the reference of every ratio; None when not run."""
    main = evaluate.finetune.get("pretrained")
    return main.accuracy if main else None


def _headline_key(a: Row, b: Row) -> str | None:
    """The probe key two methods are compared on: all images if both have it, else the most shots both have."""
    common = [k for k in shot_keys({"a": a}) if k in b]
    return common[-1] if common else None


def _tolerance(a: Row, b: Row, key: str, tol: float) -> float:
    """``tol``, or the larger recorded standard deviation of ``key`` when that is larger."""
    return max([tol, *(float(r[f"{key}_std"]) for r in (a, b) if r.get(f"{key}_std") is not None)])


def judge(subject: str, new: tuple[str, float], old: tuple[str, float], tol: float, what: str = "") -> str:
    """One verdict sentence: whether ``new`` beat ``old`` by more than ``tol``, with both numbers.

    Args:
        subject: what is judged, starting the sentence ("Pretraining").
        new: (label, accuracy) of the result with the stage.
        old: (label, accuracy) of the result without it.
        tol: smallest difference counted as an improvement.
        what: the measure, written before the numbers ("probe accuracy with all images").
    """
    diff = new[1] - old[1]
    word = "helped" if diff > tol else "did not help"
    note = ""
    if abs(diff) <= tol:
        note = f", within the tolerance of ±{tol:.3f}"
    elif diff < 0:
        note = f", a drop beyond the tolerance of {tol:.3f}"
    measure = f"{what} " if what else ""
    return f"{subject} {word}: {measure}{new[1]:.3f} for {new[0]} against {old[1]:.3f} for {old[0]} ({diff:+.3f}{note})."


def _measure(key: str) -> str:
    shots = key.removeprefix("probe_")
    return "probe accuracy with all images" if shots == "all" else f"probe accuracy with {shots} images per product"


def _compare(subject: str, new: tuple[str, Row], old: tuple[str, Row], tol: float) -> str:
    """:func:`judge` of two method rows of an :class:`EvaluateRecord` on their headline probe accuracy."""
    key = _headline_key(new[1], old[1])
    if key is None:
        return f"{subject}: {new[0]} and {old[0]} share no shot count to compare."
    t = _tolerance(new[1], old[1], key, tol)
    return judge(subject, (new[0], float(new[1][key])), (old[0], float(old[1][key])), t, _measure(key))


def ratio_sentence(evaluate: EvaluateRecord) -> str:
    """How close the main backbone's all-image logistic probe comes to finetuning, as a percentage."""
    main = evaluate.main_variant
    row = evaluate.methods.get(main)
    finetuned = _finetuned_accuracy(evaluate)
    if row is None or row.get("probe_all") is None or finetuned is None:
        return f"No all-image probe of the main backbone `{main}` and finetuned accuracy to compare."
    ratio = row["probe_all"] / finetuned if finetuned else float("nan")
    sentence = (
        f"With all training images, a logistic regression on the frozen features of the main backbone (`{main}`) "
        f"reaches {ratio:.0%} of the accuracy of finetuning the whole network "
        f"({row['probe_all']:.3f} against {finetuned:.3f})"
    )
    scratch = evaluate.finetune.get("random_init")
    return sentence + (f"; finetuning from random weights reaches {scratch.accuracy:.3f}." if scratch else ".")


def _noisy_rounds(methods: Mapping[str, Row]) -> list[tuple[int, str]]:
    """(round, method name) of the noisy-student rows of ``methods``, by round number."""
    return sorted((int(m.group(1)), name) for name in methods if (m := _ROUND_KEY.match(name)))


def _round(noisy: NoisyRecord | None, r: int) -> RoundRecord | None:
    """Round ``r`` of the noisy-student record, None when it is not there."""
    return next((row for row in noisy.rounds if row.round == r), None) if noisy else None


def _pseudolabel_note(noisy: NoisyRecord | None, r: int) -> str:
    """" Its pseudolabels: precision 0.83, coverage 0.61." for round ``r`` when recorded, else ""."""
    row = _round(noisy, r)
    values = {"precision": row.precision, "coverage": row.coverage} if row else {}
    parts = [f"{k} {v:.2f}" for k, v in values.items() if v is not None]
    return f" Its pseudolabels: {', '.join(parts)}." if parts else ""


def noisy_verdicts(evaluate: EvaluateRecord, noisy: NoisyRecord | None, tol: float) -> list[str]:
    """One verdict per noisy-student round against round 0, the contrastive backbone alone.

    The rounds' rows of ``metrics/evaluate/<target>.json`` are compared with the main variant's row (round 0's
    teacher), on the same protocol as the table. When evaluate has no such rows, the probe accuracies of
    ``metrics/noisy.json`` are used instead. Pseudolabel precision and coverage come from ``noisy``.
    """
    methods = evaluate.methods
    main = evaluate.main_variant
    rounds = _noisy_rounds(methods)
    if rounds and main in methods:
        old = ("round 0, the contrastive backbone alone", methods[main])
        return [_compare(f"Noisy-student round {r}", (f"round {r}", methods[name]), old, tol)
                + _pseudolabel_note(noisy, r) for r, name in rounds]
    first = _round(noisy, 0)
    if noisy is None or first is None:
        return []
    base = ("round 0, the contrastive backbone alone", first.probe_accuracy)
    return [judge(f"Noisy-student round {row.round}", (f"round {row.round}", row.probe_accuracy), base, tol,
                  "probe accuracy") + _pseudolabel_note(noisy, row.round) for row in noisy.rounds if row.round > 0]


def _objectives(record: PretrainRecord) -> list[str]:
    """The objectives a pretraining run had switched on (weight > 0), in the record's order."""
    return [name for name, weight in record.objectives.items() if weight > 0]


def _label(objectives: Sequence[str]) -> str:
    return " + ".join(OBJECTIVE_NAMES.get(name, name) for name in objectives)


def combination_pairs(pretrain: Mapping[str, PretrainRecord]) -> list[tuple[str, str]]:
    """(combined variant, single-objective variant) pairs: a variant that combines objectives, against each
    variant that trained one of those objectives alone; from the records, whatever the variants are named."""
    pairs: list[tuple[str, str]] = []
    for combined, record in pretrain.items():
        on = _objectives(record)
        if len(on) < 2:
            continue
        for objective in on:
            pairs.extend((combined, alone) for alone, other in pretrain.items() if _objectives(other) == [objective])
    return pairs


def verdicts(evaluate: EvaluateRecord, noisy: NoisyRecord | None, pretrain: Mapping[str, PretrainRecord], *,
             tol: float) -> list[str]:
    """Plain-language conclusions of the evaluation, each computed from the numbers.

    In order: the main backbone's probe against finetuning (as a percentage); pretraining against random
    weights; each variant that combines objectives against each objective alone (:func:`combination_pairs`);
    each noisy-student round against round 0; the best round. A stage "helped" when it raised the headline
    probe accuracy (all images, else the most shots both rows have) by more than ``tol`` or the larger
    recorded standard deviation, and otherwise "did not help". Comparisons whose rows are missing are left
    out.

    Args:
        evaluate: the record of ``metrics/evaluate/<target>.json``.
        noisy: the record of ``metrics/noisy.json``, or None when that stage did not run.
        pretrain: the records of ``metrics/pretrain/<variant>.json`` by variant (which objectives each had).
        tol: smallest accuracy difference counted as an improvement (``report.tolerance``).

    Returns:
        One sentence per conclusion.
    """
    methods = evaluate.methods
    main = evaluate.main_variant
    out = [ratio_sentence(evaluate)]
    if main in methods and "random_init" in methods:
        out.append(_compare("Pretraining", (f"`{main}`", methods[main]), ("random weights", methods["random_init"]), tol))
    for combined, alone in combination_pairs(pretrain):
        if combined in methods and alone in methods:
            both, single = _label(_objectives(pretrain[combined])), _label(_objectives(pretrain[alone]))
            out.append(_compare(f"Combining {both.replace(' + ', ' and ')} (against {single} alone)",
                                (both, methods[combined]), (f"{single} alone", methods[alone]), tol))
    out.extend(noisy_verdicts(evaluate, noisy, tol))
    if noisy is not None:
        out.append(f"The best noisy-student round by probe accuracy is round {noisy.best_round}.")
    return out


def data_sentence(data: DataRecord) -> str:
    """One sentence on the data from ``metrics/data.json``: labelled, unlabelled and target image counts."""
    images, classes = data.images, data.classes

    def part(role: str, what: str) -> str:
        return f"{images.get(role, 0)} {what} ({classes.get(role, 0)} products)"

    seen = data.target_classes_in_source
    if seen:
        target = f"of the same products (pretraining saw {seen} of the {classes.get('probe_test', 0)} target products)"
    else:
        target = "of a target catalogue that pretraining never saw"
    return (
        f"Pretraining used {part('labelled', 'labelled')} and {images.get('unlabelled', 0)} unlabelled source "
        f"images; the evaluation uses {part('probe_train', 'training')} and {part('probe_test', 'test')} images "
        f"{target}."
    )


def monitor_table_markdown(pretrain: Mapping[str, PretrainRecord]) -> str:
    """Per pretraining variant: its objectives, and kNN and probe accuracy on held-out source products,
    pretrained vs random weights."""
    header = ["variant", "objectives", "kNN pretrained", "kNN random", "probe pretrained", "probe random"]
    rows = []
    for name, record in pretrain.items():
        scores = [record.monitor.get(w) for w in ("pretrained", "random_init")]
        cells = [_fmt(getattr(s, m) if s else None) for m in ("knn_accuracy", "probe_accuracy") for s in scores]
        rows.append([f"`{name}`", _label(_objectives(record)), *cells])
    return markdown_table(header, rows)


def noisy_table_markdown(noisy: NoisyRecord) -> str:
    """Per noisy-student round: probe and kNN accuracy, pseudolabel precision and coverage; best round marked."""
    header = ["round", "probe", "kNN", "pseudolabel precision", "pseudolabel coverage"]
    rows = []
    for row in noisy.rounds:
        r = row.round
        label = f"{r}" + (" (best)" if r == noisy.best_round else "") + (" (contrastive only)" if r == 0 else "")
        rows.append([label, *(_fmt(v) for v in (row.probe_accuracy, row.knn_accuracy, row.precision, row.coverage))])
    return markdown_table(header, rows)


def target_heading(name: str, evaluate: EvaluateRecord) -> str:
    """A Markdown heading naming a target, its source and its size.

    E.g. "### Target `prepared`, prepared: 40 products, 400 training and 600 test images".
    """
    dropped = (f" ({evaluate.n_overlap_dropped} more training images left out: identical to test images)"
               if evaluate.n_overlap_dropped else "")
    return (f"### Target `{name}`, {evaluate.target_source}: {evaluate.n_classes} products, "
            f"{evaluate.n_train} training and {evaluate.n_test} test images{dropped}\n")


def results_markdown(evaluations: Mapping[str, EvaluateRecord]) -> str:
    """The results of every target: a heading and :func:`method_table_markdown` each, in the given order."""
    return "\n".join(f"{target_heading(name, ev)}\n{method_table_markdown(ev)}" for name, ev in evaluations.items())


HEADLINE_SHOTS = ("1", "10", "all")
"""The shot counts the headline metrics keep (those a run has)."""


def target_headline(evaluate: EvaluateRecord, noisy: NoisyRecord | None) -> TargetHeadline:
    """The headline figures of one target: random weights, the main backbone and each noisy-student round at
    1 and 10 shots and all images; both finetuning baselines; the probe/finetune ratio; the noisy-student gain.

    The gain is that of the round ``metrics/noisy.json`` calls best (0 when that is round 0); None without
    the noisy stage or without that round's row.
    """
    main = evaluate.main_variant
    rows = ["random_init", main, *(name for _, name in _noisy_rounds(evaluate.methods))]
    probe = {name: {s: evaluate.methods[name][f"probe_{s}"] for s in HEADLINE_SHOTS
                    if f"probe_{s}" in evaluate.methods[name]}
             for name in rows if name in evaluate.methods}
    finetuned = {init: result.accuracy for init, result in evaluate.finetune.items()}
    main_all = evaluate.methods.get(main, {}).get("probe_all")
    reference = _finetuned_accuracy(evaluate)
    ratio = main_all / reference if main_all is not None and reference else None
    gain = None
    if noisy is not None and main_all is not None:
        best = "" if noisy.best_round == 0 else f"noisy_round_{noisy.best_round}"
        best_all = main_all if not best else evaluate.methods.get(best, {}).get("probe_all")
        gain = None if best_all is None else best_all - main_all
    return TargetHeadline(probe=probe, finetuned=finetuned, probe_to_finetune=ratio, noisy_gain=gain)


def headline(evaluations: Mapping[str, EvaluateRecord], noisy: NoisyRecord | None) -> HeadlineRecord:
    """The record of ``metrics/headline.json``: :func:`target_headline` of every target."""
    return HeadlineRecord(targets={name: target_headline(ev, noisy) for name, ev in evaluations.items()})
