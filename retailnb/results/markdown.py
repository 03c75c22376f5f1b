"""The final report's words and tables, computed from the results over training seeds.

Every sentence that judges a result is derived here from the numbers, so the report cannot drift from the
metrics. A judgement stands on intervals over training seeds (:mod:`retailnb.results.intervals`): one result
"beats" another only when their t-intervals do not overlap, and otherwise the report says "no difference
measured". The inputs are the stages' own records (:mod:`retailnb.results.records`) summarised over the seeds
(:mod:`retailnb.results.summary`); which pretraining variants combine which objectives comes from the pretraining
records, not from variant names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from retailnb.results.intervals import order, paired_difference, t_interval
from retailnb.config.score_names import SCORES
from retailnb.results.records import DataRecord, IntervalRecord, NoisyRecord, PretrainRecord, TargetSummary
from retailnb.results.summary import best_rejection_score, noisy_rounds, reject_key
from retailnb.util.tables import markdown_table

OBJECTIVE_NAMES = {"simclr": "SimCLR", "supcon": "SupCon", "simsiam": "SimSiam"}
"""How the report writes each pretraining objective of :attr:`PretrainRecord.objectives`."""

_PROBE_KEY = re.compile(r"^probe_(\d+|all)$")
CATALOGUE_KEY = "probe_catalogue"
"""The cell of the probe trained on the catalogue packshots alone (:func:`retailnb.evaluation.fewshot.catalogue_eval`)."""


def fmt(value: IntervalRecord | None, digits: int = 3) -> str:
    """A result as "mean ± half-width" of its interval; the mean alone with one seed; "–" when missing."""
    if value is None:
        return "–"
    half = value.half_width
    return f"{value.mean:.{digits}f}" + ("" if half is None else f" ± {half:.{digits}f}")


def _cell(values: Sequence[float], confidence: float) -> str:
    """:func:`fmt` of the interval of per-seed ``values``; "–" when there are none."""
    return fmt(t_interval(values, confidence)) if values else "–"


def interval_text(value: IntervalRecord) -> str:
    """"0.237 [0.221, 0.253]": the mean and its interval's ends; the mean alone with one seed."""
    if value.low is None or value.high is None:
        return f"{value.mean:.3f}"
    return f"{value.mean:.3f} [{value.low:.3f}, {value.high:.3f}]"


def shot_keys(methods: Mapping[str, Mapping[str, object]]) -> list[str]:
    """The ``probe_<shots>`` keys any method has, numbers ascending and ``probe_all`` last."""
    found = {m.group(1) for row in methods.values() for key in row if (m := _PROBE_KEY.match(key))}
    return [f"probe_{s}" for s in sorted(found, key=lambda s: (s == "all", int(s) if s != "all" else 0))]


def _shot_header(key: str) -> str:
    shots = key.removeprefix("probe_")
    if key == CATALOGUE_KEY:
        return "catalogue only"
    return "all images" if shots == "all" else f"{shots}-shot"


def _choices(values: Sequence[float | int]) -> str:
    """The values each seed chose, "0.001" when all agree, else "0.001/0.003/0.001"."""
    return f"{values[0]:g}" if len(set(values)) == 1 else "/".join(f"{v:g}" for v in values)


def method_table_markdown(summary: TargetSummary) -> str:
    """The main results table: one row per method, probe accuracy per shot count, kNN, ratio to finetuning.

    Each cell is the mean over the training seeds ± the half-width of its interval. Shot columns are those
    any method has, then "catalogue only" (the probe trained on the packshots alone) when measured; a
    method missing one shows "–". The main variant is marked, and the last rows give the
    finetuning baselines (from the main backbone, then from random weights) with the learning rate and
    epoch each seed chose. The ratio column divides a row's mean by the finetuned main backbone's mean. The
    last column is each row's fit time: the logistic regression's on all training images (features cached),
    the whole learning-rate grid's for a finetuned network.

    Args:
        summary: one target of ``metrics/summary.json``.

    Returns:
        The table as Markdown, ending with a newline.
    """
    keys = shot_keys(summary.methods)
    if any(CATALOGUE_KEY in row for row in summary.methods.values()):
        keys.append(CATALOGUE_KEY)
    header = ["method", *(_shot_header(k) for k in keys), "kNN (all images)", "ratio to finetuned"]
    main = summary.finetune.get("pretrained")
    reference = main.accuracy.mean if main else None

    def ratio(value: IntervalRecord | None) -> str:
        return f"{value.mean / reference:.2f}" if value is not None and reference else "–"

    rows = []
    for name, cells in summary.methods.items():
        label = f"`{name}`" + (" (main)" if name == summary.main_variant else "")
        rows.append([label, *(fmt(cells.get(k)) for k in keys), fmt(cells.get("knn_all")), ratio(cells.get("probe_all"))])
    for init, result in summary.finetune.items():
        shown = ["–"] * len(keys)
        if "probe_all" in keys:
            shown[keys.index("probe_all")] = fmt(result.accuracy)
        source = f"`{summary.main_variant}`" if init == "pretrained" else "random weights"
        label = f"finetuned from {source} (lr {_choices(result.lrs)}, epoch {_choices(result.best_epochs)})"
        rows.append([label, *shown, "–", ratio(result.accuracy)])
    return markdown_table(header, rows)


def _seeds_note(a: IntervalRecord, b: IntervalRecord) -> str:
    n = min(a.n, b.n)
    if n < 2:
        return "one training seed: no interval, so no difference can be measured"
    level = f"{a.confidence:.0%}"
    return f"{level} intervals over {n} training seeds"


def compare(new: tuple[str, IntervalRecord], old: tuple[str, IntervalRecord], what: str) -> str:
    """One verdict sentence from two results' intervals, with both numbers and their paired difference.

    "A beats B" only when A's interval lies wholly above B's (and the reverse when below); otherwise
    "no difference measured". The seed-by-seed difference's interval follows as information.

    Args:
        new: (label, interval) of the result with the stage or method judged.
        old: (label, interval) of the result it is compared with.
        what: the measure ("probe accuracy with all images").
    """
    (a_label, a), (b_label, b) = new, old
    numbers = f"{interval_text(a)} for {a_label} against {interval_text(b)} for {b_label}"
    verdict = order(a, b)
    if verdict == "higher":
        head = f"{a_label[0].upper()}{a_label[1:]} beats {b_label}"
        tail = "the intervals do not overlap"
    elif verdict == "lower":
        head = f"{b_label[0].upper()}{b_label[1:]} beats {a_label}"
        tail = "the intervals do not overlap"
    else:
        head = f"No difference measured between {a_label} and {b_label}"
        tail = "the intervals overlap" if min(a.n, b.n) > 1 else ""
    note = _seeds_note(a, b) + (f"; {tail}" if tail else "")
    diff = paired_difference(a, b)
    paired = ("" if diff is None or diff.low is None or diff.high is None else
              f" Paired by seed, {a_label} minus {b_label} is {diff.mean:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}].")
    return f"{head} on {what}: {numbers} ({note}).{paired}"


@dataclass(frozen=True)
class Comparison:
    """Two results judged on one measure: a line of the verdict table and a sentence of :func:`compare`.

    Attributes:
        what: the measure ("probe accuracy with all images").
        a_label: the result with the stage or method judged, and ``a`` its interval over seeds.
        b_label: the result it is compared with, and ``b`` its interval.
        note: a sentence that follows the verdict sentence (e.g. the pseudolabels' quality).
    """

    what: str
    a_label: str
    a: IntervalRecord
    b_label: str
    b: IntervalRecord
    note: str = ""

    def sentence(self) -> str:
        """The verdict in words, with both numbers and their paired difference (:func:`compare`)."""
        return compare((self.a_label, self.a), (self.b_label, self.b), self.what) + self.note

    def verdict(self) -> str:
        """Which is higher when the intervals do not overlap, else "no difference measured"."""
        found = order(self.a, self.b)
        if found == "higher":
            return f"{self.a_label} higher"
        if found == "lower":
            return f"{self.b_label} higher"
        return "no difference measured"

    def paired(self) -> str:
        """The seed-by-seed difference a − b with its interval, or "–" without one."""
        diff = paired_difference(self.a, self.b)
        if diff is None or diff.low is None or diff.high is None:
            return "–"
        return f"{diff.mean:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}]"


def verdict_table_markdown(comparisons: Sequence[Comparison]) -> str:
    """The verdicts as one table: measure, A, B (each mean ± half-width), A − B paired by seed, verdict."""
    rows = [[c.what, f"{c.a_label}: {fmt(c.a)}", f"{c.b_label}: {fmt(c.b)}", c.paired(), c.verdict()]
            for c in comparisons]
    return markdown_table(["measure", "A", "B", "A − B, paired by seed", "verdict"], rows)


def _measure(key: str) -> str:
    if key == CATALOGUE_KEY:
        return "probe accuracy enrolled from the catalogue packshots alone"
    shots = key.removeprefix("probe_")
    if shots == "all":
        return "probe accuracy with all images"
    return f"probe accuracy with {shots} image{'s' if shots != '1' else ''} per product"


def _compare_rows(new: tuple[str, Mapping[str, IntervalRecord]], old: tuple[str, Mapping[str, IntervalRecord]],
                  keys: Sequence[str]) -> list[Comparison]:
    """The comparisons of two method rows on each of ``keys`` both have."""
    return [Comparison(_measure(k), new[0], new[1][k], old[0], old[1][k]) for k in keys if k in new[1] and k in old[1]]


def _judged_keys(summary: TargetSummary) -> list[str]:
    """The shot counts verdicts are given at: the fewest shots and all images (those the run has)."""
    keys = shot_keys(summary.methods)
    return list(dict.fromkeys([keys[0], keys[-1]])) if keys else []


def ratio_sentence(summary: TargetSummary) -> str | None:
    """The probe/finetune ratio of the main backbone in words (mean of the per-seed ratios), if measured."""
    r = summary.probe_to_finetune
    if r is None:
        return None
    span = "" if r.low is None or r.high is None else f" (interval {r.low:.0%} to {r.high:.0%})"
    return (f"With all training images, a logistic regression on the frozen features of the main backbone "
            f"(`{summary.main_variant}`) reaches {r.mean:.0%}{span} of the accuracy of finetuning the whole "
            f"network, the mean of the per-seed ratios.")


def finetune_comparisons(summary: TargetSummary) -> list[Comparison]:
    """The probe against finetuning, and finetuning from the pretrained against from random weights."""
    main = summary.main_variant
    row = summary.methods.get(main, {})
    tuned, scratch = summary.finetune.get("pretrained"), summary.finetune.get("random_init")
    out = []
    if "probe_all" in row and tuned is not None:
        out.append(Comparison("test accuracy", "finetuning the main backbone", tuned.accuracy,
                              f"the frozen-feature probe of `{main}`", row["probe_all"]))
    if tuned is not None and scratch is not None:
        out.append(Comparison("test accuracy", f"finetuning from `{main}`", tuned.accuracy,
                              "finetuning from random weights", scratch.accuracy))
    return out


def noisy_comparisons(summary: TargetSummary, noisy: Sequence[NoisyRecord] = ()) -> list[Comparison]:
    """Each noisy-student round against round 0 (the main contrastive backbone alone), the last of each
    round noting the pseudolabels' precision and coverage averaged over the seeds' noisy records."""
    main = summary.methods.get(summary.main_variant)
    if main is None:
        return []
    out = []
    for r, name in noisy_rounds(summary.methods):
        rows = _compare_rows((f"noisy-student round {r}", summary.methods[name]),
                             ("round 0 (the contrastive backbone alone)", main), _judged_keys(summary))
        if rows:
            last = rows[-1]
            rows[-1] = Comparison(last.what, last.a_label, last.a, last.b_label, last.b, _pseudolabel_note(noisy, r))
        out += rows
    return out


def _pseudolabel_note(noisy: Sequence[NoisyRecord], r: int) -> str:
    """" Its pseudolabels: precision 0.83, coverage 0.61 (means over seeds)." for round ``r`` when recorded."""
    rows = [row for record in noisy for row in record.rounds if row.round == r]
    parts = []
    for field in ("precision", "coverage"):
        values = [getattr(row, field) for row in rows if getattr(row, field) is not None]
        if values:
            parts.append(f"{field} {sum(values) / len(values):.2f}")
    return f" Its pseudolabels: {', '.join(parts)} (means over seeds)." if parts else ""


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


def comparisons(summary: TargetSummary, pretrain: Mapping[str, PretrainRecord],
                noisy: Sequence[NoisyRecord] = ()) -> list[Comparison]:
    """Every comparison the report judges for one target, each from the intervals.

    In order: the probe against finetuning (:func:`finetune_comparisons`); the main backbone against random
    weights; each variant that combines objectives against each objective alone (:func:`combination_pairs`);
    the catalogue-only probe; each noisy-student round against round 0; rejection. Pretraining and
    noisy-student comparisons are made at the fewest shots and with all images. Comparisons whose rows are
    missing are left out.

    Args:
        summary: one target of ``metrics/summary.json``.
        pretrain: the pretraining records of one seed, by variant (which objectives each had).
        noisy: every seed's noisy-student record (for the pseudolabels' precision and coverage).
    """
    methods, main = summary.methods, summary.main_variant
    keys = _judged_keys(summary)
    out = finetune_comparisons(summary)
    if main in methods and "random_init" in methods:
        out += _compare_rows((f"`{main}`", methods[main]), ("random weights", methods["random_init"]), keys)
    for combined, alone in combination_pairs(pretrain):
        if combined in methods and alone in methods:
            both, single = _label(_objectives(pretrain[combined])), _label(_objectives(pretrain[alone]))
            out += _compare_rows((both, methods[combined]), (f"{single} alone", methods[alone]), keys)
    if main in methods and "random_init" in methods and CATALOGUE_KEY in methods[main]:
        out += _compare_rows((f"`{main}`", methods[main]), ("random weights", methods["random_init"]), [CATALOGUE_KEY])
    return out + noisy_comparisons(summary, noisy) + rejection_comparisons(summary)


def verdicts(summary: TargetSummary, pretrain: Mapping[str, PretrainRecord], noisy: Sequence[NoisyRecord] = ()) -> list[str]:
    """Plain-language conclusions of one target's results: the probe/finetune ratio
    (:func:`ratio_sentence`), then each of :func:`comparisons` as a sentence."""
    ratio = ratio_sentence(summary) if "probe_all" in summary.methods.get(summary.main_variant, {}) else None
    head = [ratio] if ratio and "pretrained" in summary.finetune else []
    return head + [c.sentence() for c in comparisons(summary, pretrain, noisy)]


def data_sentence(data: DataRecord) -> str:
    """One sentence on the data from ``metrics/data.json``: labelled, unlabelled and target image counts, and the
    target's training images kept out of training (``data.calibration_folds``)."""
    images, classes = data.images, data.classes

    def part(role: str, what: str) -> str:
        return f"{images.get(role, 0)} {what} ({classes.get(role, 0)} products)"

    seen, held = data.target_classes_in_source, data.probe_train_unseen
    if seen:
        target = f"of the same products (pretraining saw {seen} of the {classes.get('probe_test', 0)} target products"
        if held:
            target += f"; {held} training images stayed out of training, for the unknown-product thresholds"
        target += ")"
    else:
        target = "of a target catalogue that pretraining never saw"
    return (
        f"Pretraining used {part('labelled', 'labelled')} and {images.get('unlabelled', 0)} unlabelled source "
        f"images; the evaluation uses {part('probe_train', 'training')} and {part('probe_test', 'test')} images "
        f"{target}."
    )


def monitor_table_markdown(pretrain: Sequence[Mapping[str, PretrainRecord]], confidence: float = 0.95) -> str:
    """Per pretraining variant: its objectives, and kNN and probe accuracy on held-out source products,
    pretrained vs random weights, over the seeds (one mapping of variant -> record per seed)."""
    header = ["variant", "objectives", "kNN pretrained", "kNN random", "probe pretrained", "probe random"]
    rows = []
    for name, record in (pretrain[0] if pretrain else {}).items():
        runs = [seed[name] for seed in pretrain if name in seed]
        cells = []
        for metric in ("knn_accuracy", "probe_accuracy"):
            for weights in ("pretrained", "random_init"):
                cells.append(_cell([getattr(run.monitor[weights], metric) for run in runs if weights in run.monitor],
                                   confidence))
        rows.append([f"`{name}`", _label(_objectives(record)), *cells])
    return markdown_table(header, rows)


def noisy_table_markdown(noisy: Sequence[NoisyRecord], summary: TargetSummary, confidence: float = 0.95) -> str:
    """Per noisy-student round, over the seeds: the evaluation's all-image probe accuracy on the target (round
    0 is the main backbone: the same value as its row in the results table), then the pseudolabels'
    precision and coverage from the noisy-student records."""
    header = ["round", "probe, all images", "pseudolabel precision", "pseudolabel coverage"]
    rows = []
    by_round = {0: summary.main_variant, **dict(noisy_rounds(summary.methods))}
    rounds = sorted({row.round for record in noisy for row in record.rounds} | set(by_round))
    for r in rounds:
        probe = fmt(summary.methods.get(by_round.get(r, ""), {}).get("probe_all"))
        cells = [_cell([getattr(row, field) for record in noisy for row in record.rounds
                        if row.round == r and getattr(row, field) is not None], confidence)
                 for field in ("precision", "coverage")]
        label = f"0 (`{summary.main_variant}`, contrastive only)" if r == 0 else f"{r}"
        rows.append([label, probe, *cells])
    return markdown_table(header, rows)


def target_heading(name: str, summary: TargetSummary) -> str:
    """A Markdown heading naming a target, its source, its size and the seeds.

    E.g. "### Target `prepared`, prepared: 40 products, 400 training and 600 test images, 3 training seeds".
    """
    dropped = (f" ({summary.n_overlap_dropped} more training images left out: identical to test images)"
               if summary.n_overlap_dropped else "")
    n = len(summary.seeds)
    return (f"### Target `{name}`, {summary.target_source}: {summary.n_classes} products, "
            f"{summary.n_train} training and {summary.n_test} test images{dropped}, "
            f"{n} training seed{'s' if n != 1 else ''}\n")


SCORE_NAMES = {"msp": "max. softmax probability", "energy": "energy", "prototype": "nearest prototype",
               "knn": "nearest image", "mahalanobis": "Mahalanobis", "relative_mahalanobis": "relative Mahalanobis"}
"""How the report names each rejection score of :data:`retailnb.config.score_names.SCORES`."""


SOURCE_COLUMNS = {"source_auroc": "AUROC, source products", "source_unknown_rejection": "source products rejected"}
"""The rejection table's columns of the second unknown set, the source's unlabelled-only products, for the
best score (measures of :data:`retailnb.evaluation.rejection.SOURCE_METRICS`)."""


def rejection_table_markdown(summary: TargetSummary) -> str:
    """Unknown-product rejection per method: AUROC of each score, then, for the best score
    (:func:`best_rejection_score`), known-product accuracy, unknown rejection and known acceptance at the
    threshold chosen on the enrolled images, and, when the source's unlabelled-only products were measured
    (:data:`SOURCE_COLUMNS`), their AUROC and the share of them rejected. Empty when not measured."""
    best = best_rejection_score(summary)
    if best is None:
        return ""
    scores = [s for s in SCORES if any(reject_key(s, "auroc") in row for row in summary.methods.values())]
    source = [m for m in SOURCE_COLUMNS if any(reject_key(best, m) in row for row in summary.methods.values())]
    measures = ["known_accuracy", "unknown_rejection", "known_acceptance", *source]
    header = ["method", *(f"AUROC, {SCORE_NAMES[s]}" for s in scores), "known accuracy", "unknown rejected",
              "known accepted", *(SOURCE_COLUMNS[m] for m in source)]
    rows = []
    for name, cells in summary.methods.items():
        label = f"`{name}`" + (" (main)" if name == summary.main_variant else "")
        rows.append([label, *(fmt(cells.get(reject_key(s, "auroc"))) for s in scores),
                     *(fmt(cells.get(reject_key(best, m))) for m in measures)])
    return markdown_table(header, rows) + calibration_sentence(summary, best)


CALIBRATION_TOLERANCE = 0.02
"""How far the known-product share accepted on test may fall from the recall a threshold was chosen for
(on the enrolled images alone) for the threshold to count as calibrated."""


def calibration_sentence(summary: TargetSummary, score: str) -> str:
    """Whether ``score``'s thresholds hold on test: per method, the known test photos accepted against the
    recall they were chosen for, within :data:`CALIBRATION_TOLERANCE`; empty without a protocol."""
    setup = summary.rejection
    if setup is None:
        return ""
    off = {name: cells[reject_key(score, "known_acceptance")].mean for name, cells in summary.methods.items()
           if reject_key(score, "known_acceptance") in cells}
    off = {name: value for name, value in off.items() if abs(value - setup.recall) > CALIBRATION_TOLERANCE}
    if not off:
        return (f"\nCalibration holds: with every method the {SCORE_NAMES[score]} threshold accepts the known test "
                f"photos within {CALIBRATION_TOLERANCE * 100:.0f} points of the {setup.recall:.0%} it was chosen for.\n")
    listed = ", ".join(f"`{name}` {value:.1%}" for name, value in off.items())
    return (f"\nCalibration misses by more than {CALIBRATION_TOLERANCE * 100:.0f} points of the {setup.recall:.0%} "
            f"the {SCORE_NAMES[score]} thresholds were chosen for: known test photos accepted {listed}.\n")


def rejection_heading(summary: TargetSummary) -> str:
    """What the rejection table measures, with its protocol's numbers (and the second unknown set's, the
    source's unlabelled-only products, when it was measured)."""
    setup, best = summary.rejection, best_rejection_score(summary)
    if setup is None or best is None:
        return ""
    source = ""
    if setup.n_source_unknown:
        source = (f" A second unknown set, the source's {setup.n_source_unknown} unlabelled-only products (seen "
                  f"without a label in pretraining and the noisy student, never enrolled: shelf products not in "
                  f"the catalogue), is scored against the known test photos at the same threshold: its AUROC "
                  f"and the share of its photos rejected.")
    return (f"Unknown-product rejection: {setup.n_unknown} of the {setup.n_known + setup.n_unknown} products held "
            f"out of the probe; AUROC of known against held-out products' test photos (0.5: chance), and with "
            f"the best score ({SCORE_NAMES[best]}) at the threshold chosen on the enrolled products' own "
            f"training images for a known-product recall of {setup.recall:.0%}: known photos accepted and named "
            f"correctly, held-out photos rejected, known photos accepted.{source}\n")


def rejection_comparisons(summary: TargetSummary) -> list[Comparison]:
    """Does pretraining make rejection better? The best score's AUROC of the main backbone against random
    weights, and of the last noisy-student round against the main backbone."""
    best = best_rejection_score(summary)
    if best is None:
        return []
    key, methods, main = reject_key(best, "auroc"), summary.methods, summary.main_variant
    what = f"unknown-product rejection (AUROC of the {SCORE_NAMES[best]} score)"
    out = []
    if key in methods.get(main, {}) and key in methods.get("random_init", {}):
        out.append(Comparison(what, f"`{main}`", methods[main][key], "random weights", methods["random_init"][key]))
    rounds = noisy_rounds(methods)
    if rounds and key in methods[rounds[-1][1]] and key in methods.get(main, {}):
        r, last = rounds[-1]
        out.append(Comparison(what, f"noisy-student round {r}", methods[last][key], f"`{main}`", methods[main][key]))
    return out


def results_markdown(targets: Mapping[str, TargetSummary], confidence: float) -> str:
    """The results of every target: a heading, :func:`method_table_markdown` and, when measured, the
    rejection table (:func:`rejection_table_markdown`) each, in the given order, and what the ± means
    (intervals at level ``confidence``, ``report.confidence``)."""
    def section(name: str, t: TargetSummary) -> str:
        rejection = rejection_table_markdown(t)
        return (f"{target_heading(name, t)}\n{method_table_markdown(t)}"
                + (f"\n{rejection_heading(t)}\n{rejection}" if rejection else ""))

    tables = "\n".join(section(name, t) for name, t in targets.items())
    return (tables + f"\nEach cell: the mean over the training seeds ± the half-width of its {confidence:.0%} "
            "t-interval (the mean alone with one seed).\n")


def _judged(c: Comparison) -> str:
    """A comparison's verdict as a clause: "A is ahead: the intervals do not overlap" or "no difference measured"."""
    found = order(c.a, c.b)
    if found == "no difference measured":
        return "no difference measured" + (": the intervals overlap" if min(c.a.n, c.b.n) > 1 else "")
    ahead = c.a_label if found == "higher" else c.b_label
    return f"{ahead} is ahead: the intervals do not overlap"


def answer_sentences(summary: TargetSummary) -> list[str]:
    """What the run shows for one target, in at most three sentences computed from the intervals: the probe
    against finetuning (the paper's claim), the last noisy-student round against the main backbone, and the
    main backbone against random weights. A sentence whose results are missing is left out."""
    methods, main = summary.methods, summary.main_variant
    probe = methods.get(main, {}).get("probe_all")
    out = []
    tuned = summary.finetune.get("pretrained")
    if probe is not None and tuned is not None:
        c = Comparison("test accuracy", "finetuning", tuned.accuracy, "the probe", probe)
        r = summary.probe_to_finetune
        share = "" if r is None else (f", {r.mean:.0%}" + ("" if r.low is None or r.high is None else
                                                             f" ({r.low:.0%} to {r.high:.0%})") + " of")
        out.append(f"A logistic regression on the frozen features of the main backbone (`{main}`) reaches "
                   f"{fmt(probe)} with all training images{share} finetuning the whole network "
                   f"({fmt(tuned.accuracy)}): {_judged(c)}.")
    rounds = noisy_rounds(methods)
    if probe is not None and rounds and "probe_all" in methods[rounds[-1][1]]:
        r_last, name = rounds[-1]
        c = Comparison("probe accuracy with all images", f"round {r_last}", methods[name]["probe_all"],
                       "the main backbone", probe)
        paired = c.paired()
        gain = "" if paired == "–" else f", {paired} over the main backbone paired by seed"
        out.append(f"The noisy student's round {r_last} reaches {fmt(c.a)}{gain}: {_judged(c)}.")
    random = methods.get("random_init", {}).get("probe_all")
    if probe is not None and random is not None:
        c = Comparison("probe accuracy with all images", "the pretrained backbone", probe, "random weights", random)
        out.append(f"The same probe on random weights reaches {fmt(random)}: {_judged(c)}.")
    return out
