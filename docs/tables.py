"""The results tables of README.md and docs/*.md, generated from the JSON files they report.

Each generated table sits between ``<!-- table: NAME -->`` and ``<!-- /table -->``, NAME one of
:data:`TABLES`. After the committed baseline (``metrics/``) or a benchmark's results
(``benchmarks/results/``) change::

    python docs/tables.py            # rewrite every generated table in place
    python docs/tables.py --check    # exit 1 naming each table that differs from its JSON

``tests/test_docs.py`` runs the check, so a page cannot drift from the numbers it reports. The
intervals are Student's t-intervals over training seeds, as the report and the benchmarks compute them.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from scipy import stats

REPO = Path(__file__).resolve().parents[1]
PAGES = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))
"""Every page that may hold a generated table."""

SUMMARY = REPO / "metrics" / "summary.json"
RESULTS = REPO / "benchmarks" / "results"

MARKER = re.compile(r"<!-- table: (?P<name>[\w-]+) -->\n(?P<body>.*?)<!-- /table -->", re.S)


def read(path: Path) -> Any:
    return json.loads(path.read_text())


def interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float | None]:
    """The mean of per-seed ``values`` and the half-width of its t-interval (None with one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(stats.t.ppf(0.5 + confidence / 2, df=n - 1) * sd / math.sqrt(n))


def pm(cell: Mapping[str, Any] | None) -> str:
    """A summary cell as "mean ± half-width"; "–" when not measured."""
    if cell is None:
        return "–"
    if cell.get("low") is None:
        return f"{cell['mean']:.3f}"
    return f"{cell['mean']:.3f} ± {(cell['high'] - cell['low']) / 2:.3f}"


def brackets(values: Sequence[float]) -> str:
    """Per-seed values as "mean [low, high]"."""
    mean, half = interval(values)
    return f"{mean:.3f}" if half is None else f"{mean:.3f} [{mean - half:.3f}, {mean + half:.3f}]"


def markdown(header: Sequence[str], align: str, rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table; ``align`` has one letter per column, l or r."""
    rule = [":---" if a == "l" else "---:" for a in align]
    return "\n".join("| " + " | ".join(row) + " |" for row in (header, rule, *rows)) + "\n"


def _choices(values: Sequence[float]) -> str:
    return f"{values[0]:g}" if len(set(values)) == 1 else "/".join(f"{v:g}" for v in values)


def _shots(methods: Mapping[str, Mapping[str, Any]]) -> list[str]:
    found = {key.removeprefix("probe_") for row in methods.values() for key in row
             if re.fullmatch(r"probe_(\d+|all)", key)}
    return sorted(found, key=lambda s: (s == "all", int(s) if s != "all" else 0))


def _label(name: str, main: str) -> str:
    return f"`{name}`" + (" (main)" if name == main else "")


def method_table(target: Mapping[str, Any]) -> str:
    """Every method's probe accuracy per shot count, from catalogue packshots alone, kNN, and its share of
    the finetuned main backbone's accuracy; then both finetuning baselines."""
    methods, main = target["methods"], target["main_variant"]
    shots = _shots(methods)
    header = ["method", *("all images" if s == "all" else f"{s}-shot" for s in shots), "catalogue only",
              "kNN (all images)", "share of finetuned"]
    reference = target["finetune"]["pretrained"]["accuracy"]["mean"]
    rows = []
    for name, cells in methods.items():
        share = f"{cells['probe_all']['mean'] / reference:.2f}"
        rows.append([_label(name, main), *(pm(cells.get(f"probe_{s}")) for s in shots),
                     pm(cells.get("probe_catalogue")), pm(cells.get("knn_all")), share])
    for init, result in target["finetune"].items():
        source = f"`{main}`" if init == "pretrained" else "random weights"
        label = f"finetuned from {source} (lr {_choices(result['lrs'])}, epoch {_choices(result['best_epochs'])})"
        cells = ["–"] * len(shots)
        cells[shots.index("all")] = pm(result["accuracy"])
        rows.append([label, *cells, "–", "–", f"{result['accuracy']['mean'] / reference:.2f}"])
    return markdown(header, "l" + "r" * (len(header) - 1), rows)


def rejection_table(target: Mapping[str, Any], score: str) -> str:
    """Each backbone's AUROC per known-ness score it was measured with, then ``score`` at its 95%-recall
    threshold: known photos named correctly, held-out products rejected, known accepted; and the source's
    unseen brands where measured."""
    from retailnb.results.markdown import SCORE_NAMES

    measures = {"known_accuracy": "known accuracy", "unknown_rejection": "held-out rejected",
                "known_acceptance": "known accepted", "source_auroc": "AUROC, other brands",
                "source_unknown_rejection": "other brands rejected"}
    measures = {m: name for m, name in measures.items()
                if any(f"reject_{score}_{m}" in cells for cells in target["methods"].values())}
    scores = [s for s in SCORE_NAMES if any(f"reject_{s}_auroc" in cells for cells in target["methods"].values())]
    header = ["method", *(f"AUROC, {SCORE_NAMES[s]}" for s in scores), *measures.values()]
    rows = [[_label(name, target["main_variant"]), *(pm(cells.get(f"reject_{s}_auroc")) for s in scores),
             *(pm(cells.get(f"reject_{score}_{m}")) for m in measures)] for name, cells in target["methods"].items()]
    return markdown(header, "l" + "r" * (len(header) - 1), rows)


BENCH_COLUMNS = {"auroc": "AUROC, held out", "sibling_auroc": "AUROC, siblings", "new_group_auroc": "AUROC, new kinds",
                 "unknown_rejection": "held out rejected",
                 "known_acceptance": "known accepted", "accuracy_drop": "accuracy drop",
                 "source_auroc": "AUROC, second set"}
"""The columns of ``bench_rejection.py``'s tables in the docs, from its JSON's measures."""


def rejection_bench_table(dataset: str) -> str:
    """``benchmarks/bench_rejection.py``'s results on ``dataset``: per backbone and score (``+neg``: with the
    store's negatives), each measure as mean ± half-width of its t-interval over the seeds."""
    rows_of = read(RESULTS / "rejection.json")["datasets"][dataset]
    columns = {m: name for m, name in BENCH_COLUMNS.items()
               if any(m in cells for scores in rows_of.values() for cells in scores.values())}
    rows = []
    for backbone, scores in rows_of.items():
        for score, cells in scores.items():
            rows.append([backbone, score, *(_pm_values(cells.get(m)) for m in columns)])
    header = ["backbone", "score", *columns.values()]
    return markdown(header, "ll" + "r" * len(columns), rows)


TRADEOFF_COLUMNS = {"unknown_rejection": "held out rejected", "known_acceptance": "known accepted",
                    "accuracy_drop": "accuracy drop", "source_unknown_rejection": "second set rejected"}
"""The columns of the recall trade-off table, from ``bench_rejection.py``'s JSON's ``tradeoff`` measures."""


def rejection_tradeoff_table(backbone: str = "student") -> str:
    """``benchmarks/bench_rejection.py``'s trade-off on every dataset for ``backbone``: the bundle's default
    score (and with the store's negatives) and ``background`` at each known-product recall its threshold was
    chosen for."""
    costs = read(RESULTS / "rejection.json")["tradeoff"]
    rows = []
    for dataset, backbones in costs.items():
        for score, recalls in backbones[backbone].items():
            for recall, cells in recalls.items():
                rows.append([f"`{dataset}`", score, recall, *(_pm_values(cells.get(m)) for m in TRADEOFF_COLUMNS)])
    header = ["dataset", "score", "recall", *TRADEOFF_COLUMNS.values()]
    return markdown(header, "ll" + "r" * (1 + len(TRADEOFF_COLUMNS)), rows)


def _pm_values(values: Sequence[float] | None) -> str:
    if not values:
        return "–"
    mean, half = interval(values)
    return f"{mean:.3f}" if half is None else f"{mean:.3f} ± {half:.3f}"


def headline_table(target: Mapping[str, Any]) -> str:
    """The README's table: random weights, the main backbone, each noisy-student round, both finetunings."""
    methods, main = target["methods"], target["main_variant"]
    header = ["frozen features + logistic regression", "1 image per product", "10 images", "all images",
              "catalogue packshots only"]
    names = {"random_init": "random weights", main: f"contrastive pretraining (`{main}`)"}
    rows = []
    for name, cells in methods.items():
        label = names.get(name) or name.replace("noisy_round_", "noisy student, round ")
        rows.append([label, *(pm(cells.get(k)) for k in ("probe_1", "probe_10", "probe_all", "probe_catalogue"))])
    for init, result in target["finetune"].items():
        source = "the pretrained backbone" if init == "pretrained" else "random weights"
        rows.append([f"*finetuned end to end, from {source}*", "–", "–", pm(result["accuracy"]), "–"])
    return markdown(header, "lrrrr", rows)


def _side_cells(sides: Sequence[Mapping[str, Any]]) -> list[str]:
    speeds = [s["images"] / s["seconds"] for s in sides]
    speed = sum(speeds) / len(speeds)
    return [brackets([s["accuracy"] for s in sides]), brackets([s["random_accuracy"] for s in sides]),
            brackets([s["accuracy"] - s["random_accuracy"] for s in sides]),
            f"{sum(s['seconds'] for s in sides) / len(sides):.0f}", f"{speed:.0f}" if speed else "-",
            f"{sum(s['epochs'] for s in sides) / len(sides):.1f}"]


TRANSFER_RUNS = {
    "transfer_default_resnet10t": "default (`resnet10t`, 6 epochs)",
    "transfer_resnet10t": "`resnet10t`, 8 epochs",
    "transfer_resnet10t_noisy": "`resnet10t`, 8 epochs, second run",
    "transfer_resnet10t_simsiam": "`resnet10t`, 8 epochs, SimSiam alone",
    "transfer_default": "`mobilenetv3_small_100`, 10 epochs",
}
"""The transfer benchmark's runs (benchmarks/results/<name>.json) in the order the page shows them."""

SIDES = {"retailnb": "retailnb", "plain": "plain lightly loop", "noisy": "retailnb noisy student, round 2"}


def transfer_table() -> str:
    """Per run of :data:`TRANSFER_RUNS`, each side's probe accuracy on the unseen half, its random weights',
    the gain, the training-loop seconds, images per second and epochs (mean [t-interval] over seeds)."""
    header = ["recipe", "side", "probe accuracy", "random weights", "gain", "loop s", "img/s", "epochs"]
    rows = []
    for run, label in TRANSFER_RUNS.items():
        saved = read(RESULTS / f"{run}.json")
        for i, (side, sides) in enumerate(saved["rows"].items()):
            rows.append([label if i == 0 else "", SIDES[side], *_side_cells(sides)])
    return markdown(header, "llrrrrrr", rows)


def recipe_table(target: str) -> str:
    """The recipe study on ``target``: per recipe (in recipes.yaml's order of first appearance) its probe
    accuracy, random weights, gain, mean training-loop seconds and images per second."""
    results = read(RESULTS / f"recipe_study_{target}.json")
    names = list(dict.fromkeys(r["recipe"] for r in results))
    rows = []
    for name in names:
        runs = sorted((r for r in results if r["recipe"] == name), key=lambda r: r["seed"])
        acc, rnd = [r["accuracy"] for r in runs], [r["random_accuracy"] for r in runs]
        rows.append([name, str(len(runs)), brackets(acc), brackets(rnd), brackets([a - b for a, b in zip(acc, rnd)]),
                     f"{sum(r['seconds'] for r in runs) / len(runs):.0f}",
                     f"{sum(r['images'] / r['seconds'] for r in runs) / len(runs):.0f}"])
    return markdown(["recipe", "seeds", "probe accuracy", "random weights", "gain", "loop s", "img/s"], "lrrrrrr", rows)


def scale_table() -> str:
    """``bench_scale.py``'s first run: peak memory and throughput of each image holding at each size."""
    rows = [[f"{r['images']:,}", r["storage"], f"{r['peak_rss_mib']:.0f}", f"{r['train_images_per_second']:.0f}",
             f"{r['pseudolabel_ms_per_image']:.2f}"] for r in read(RESULTS / "scale_run1.json")]
    return markdown(["images", "holding", "peak RSS (MiB)", "train img/s", "pseudolabelling ms/img"], "rlrrr", rows)


def budget_table(target: str, which: int = 0) -> str:
    """``benchmarks/budget_study.py``'s table number ``which`` on ``target``, as the study wrote it beside its
    JSON (from the same results, in the same run): 0, ratio and accuracies per configuration; 1, the ratio
    after each noisy-student round; each cell with its t-interval."""
    return _nth_table((RESULTS / f"budget_{target}.md").read_text(), which)


def _nth_table(text: str, which: int) -> str:
    """The ``which``-th run of consecutive ``|`` lines of ``text``, each line ending in a newline."""
    tables: list[list[str]] = []
    previous = False
    for line in text.splitlines():
        if line.startswith("|"):
            if not previous:
                tables.append([])
            tables[-1].append(line)
        previous = line.startswith("|")
    return "".join(line + "\n" for line in tables[which])


def _default() -> Mapping[str, Any]:
    return read(SUMMARY)["targets"]["prepared"]


def _grocery() -> Mapping[str, Any]:
    return read(RESULTS / "grocery_pipeline_simsiam_summary.json")["targets"]["prepared"]


LEVER_COLUMNS = {"auroc": "AUROC, held out", "sibling_auroc": "AUROC, siblings", "source_auroc": "AUROC, second set",
                 "closed_accuracy": "accuracy, no rejection", "known_acceptance": "known accepted"}
"""The columns of the rejection levers table, from ``rejection_levers.py``'s JSON's measures."""
LEVER_SCORES = ("prototype", "prototype+neg", "background")
"""The scores the docs show of the levers study: the bundle's default, with the negatives, and ``background``."""


def rejection_levers_table(results: str = "rejection_levers", backbone: str = "student") -> str:
    """``benchmarks/rejection_levers.py``'s results (``benchmarks/results/<results>.json``) for ``backbone``:
    per lever and score of :data:`LEVER_SCORES`, each measure as mean ± half-width; then, for each lever but
    the default, the held-out AUROC paired with that run's default by seed (lever minus default, mean [95%
    t-interval])."""
    levers = read(RESULTS / f"{results}.json")["levers"]
    rows = []
    for lever, backbones in levers.items():
        for score in LEVER_SCORES:
            cells = backbones[backbone][score]
            base = levers["default"][backbone][score]["auroc"]
            paired = "–" if lever == "default" else brackets([a - b for a, b in zip(cells["auroc"], base)])
            rows.append([f"`{lever}`", score, *(_pm_values(cells.get(m)) for m in LEVER_COLUMNS), paired])
    header = ["lever", "score", *LEVER_COLUMNS.values(), "AUROC, held out, paired with default"]
    return markdown(header, "ll" + "r" * (len(header) - 2), rows)


TABLES: dict[str, Callable[[], str]] = {
    "headline": lambda: headline_table(_default()),
    "default": lambda: method_table(_default()),
    "rejection": lambda: rejection_table(_default(), "prototype"),
    "grocery": lambda: method_table(_grocery()),
    "grocery-rejection": lambda: rejection_table(_grocery(), "energy"),
    "transfer": transfer_table,
    "recipes-grocery": lambda: recipe_table("grocery"),
    "recipes-synthetic": lambda: recipe_table("synthetic"),
    "scale": scale_table,
    "rejection-synthetic": lambda: rejection_bench_table("synthetic"),
    "rejection-grocery-disjoint": lambda: rejection_bench_table("grocery_disjoint"),
    "rejection-grocery-all": lambda: rejection_bench_table("grocery_all"),
    "rejection-recall": rejection_tradeoff_table,
    "rejection-levers": rejection_levers_table,
    "rejection-colour": lambda: rejection_levers_table("rejection_colour"),
    "budget-synthetic": lambda: budget_table("synthetic"),
    "budget-synthetic-rounds": lambda: budget_table("synthetic", 1),
    "budget-grocery": lambda: budget_table("grocery"),
    "budget-grocery-rounds": lambda: budget_table("grocery", 1),
    "budget-grocery-levers": lambda: budget_table("grocery_levers"),
}
"""Every generated table by name, and how it is made."""


def render(text: str) -> str:
    """``text`` with every generated table made again from its JSON."""
    def table(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in TABLES:
            raise KeyError(f"unknown table {name!r}; tables are {', '.join(TABLES)}")
        return f"<!-- table: {name} -->\n{TABLES[name]()}<!-- /table -->"

    return MARKER.sub(table, text)


def stale(pages: Sequence[Path] = PAGES) -> list[str]:
    """The generated tables of ``pages`` that differ from their JSON, as ``page: table``; and every table
    of :data:`TABLES` that no page shows."""
    out, shown = [], set()
    for page in pages:
        text = page.read_text()
        for match in MARKER.finditer(text):
            shown.add(match["name"])
            if render(match[0]) != match[0]:
                out.append(f"{page.relative_to(REPO)}: {match['name']}")
    out += [f"no page shows the table {name}" for name in TABLES if name not in shown]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report stale tables (exit 1 when any)")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale()
        for problem in problems:
            print(f"stale: {problem} (run python docs/tables.py)", file=sys.stderr)
        return 1 if problems else 0
    for page in PAGES:
        text = page.read_text()
        if (new := render(text)) != text:
            page.write_text(new)
            print(f"rewrote {page.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
