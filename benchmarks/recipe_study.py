"""The pretraining recipe study of issue 13: which choices make frozen features transfer to unseen products.

Each recipe of ``benchmarks/recipes.yaml`` is a list of params.yaml overrides (``key.path=value``, as
``dvc exp run -S`` takes them) applied to the main pretraining variant (``noisy.teacher_variant``). For
every recipe and training seed the variant is pretrained as the pipeline's stage runs it
(:func:`common.run_retailnb`, as in ``bench_transfer.py``), and scored by a logistic-regression probe on
the frozen features of a transfer target whose products pretraining never saw:

* ``--target grocery`` (default): pretrain on the even coarse kinds of the Grocery Store Dataset, probe on
  the odd ones (see ``bench_transfer.py``).
* ``--target synthetic``: the synthetic default's source roles (``labelled``, ``unlabelled``) and its
  target catalogue (``probe_train``/``probe_test``, brand families pretraining never saw), generated from
  params.yaml's ``data.synthetic`` into the work folder.

Results are appended to ``--out`` (JSON, one entry per recipe and seed; a rerun skips what is there, so
an interrupted study continues) and the table of every recipe in it is printed and written beside it as
Markdown: per recipe
the probe accuracy, the random weights of its architecture and the gain, each as a mean and t-interval
over the seeds, and the mean training-loop seconds and images per second.

Usage:
    python benchmarks/recipe_study.py [--target grocery|synthetic] [--seeds 0 1 2] [--recipes a b ...]
        [--root ../shared/data/GroceryStoreDataset] [--work DIR] [--out benchmarks/results/recipe_study_grocery.json]
    python benchmarks/recipe_study.py --smoke   # checks the script runs: the first recipe, tiny, in a temp folder

``--smoke`` runs on the synthetic target with the smoke runs' tiny data and model and one epoch
(``common.smoke_params``, over each recipe's overrides), one seed, the first recipe unless ``--recipes`` names
others, and writes its results in the work folder (a new temporary one unless ``--work``), not in
``benchmarks/results``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import yaml

from common import (
    GROCERY,
    PARAMS,
    REPO,
    add_smoke,
    apply_smoke,
    grocery_halves,
    has_grocery,
    interval_text,
    run_retailnb,
    smoke_params,
    synthetic_halves,
)
from retailnb.config.overrides import apply_overrides
from retailnb.config.params_file import read_params

SMOKE = {"target": "synthetic", "seeds": [0]}
"""``--smoke``: the synthetic target, one seed (and :func:`common.smoke_params` over every recipe)."""


def flatten(items: list[Any]) -> list[str]:
    """A recipe's overrides with YAML-aliased groups (lists inside the list) spliced in."""
    out: list[str] = []
    for item in items:
        out += flatten(item) if isinstance(item, list) else [str(item)]
    return out


def load_recipes(path: Path) -> dict[str, list[str]]:
    """Every recipe of the YAML file, its overrides flattened."""
    recipes = yaml.safe_load(path.read_text())["recipes"]
    return {name: flatten(items) for name, items in recipes.items()}


def manifests(target: str, params: dict[str, Any], root: Path, work: Path) -> tuple[Path, Path]:
    """(pretraining manifest, target manifest) of ``target``."""
    if target == "grocery":
        return grocery_halves(root, work)
    return synthetic_halves(params, work)


def table(results: list[dict[str, Any]], names: list[str]) -> list[str]:
    """The Markdown table of the recipes in ``names`` order."""
    lines = ["| recipe | seeds | probe accuracy | random weights | gain | loop s | img/s |", "|---|---|---|---|---|---|---|"]
    for name in names:
        rows = sorted((r for r in results if r["recipe"] == name), key=lambda r: r["seed"])
        if not rows:
            continue
        acc, rnd = [r["accuracy"] for r in rows], [r["random_accuracy"] for r in rows]
        secs = sum(r["seconds"] for r in rows) / len(rows)
        ips = sum(r["images"] / r["seconds"] for r in rows) / len(rows)
        lines.append(f"| {name} | {len(rows)} | {interval_text(acc)} | {interval_text(rnd)} | "
                     f"{interval_text([a - b for a, b in zip(acc, rnd, strict=True)])} | {secs:.0f} | {ips:.0f} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=("grocery", "synthetic"), default="grocery")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--recipes", nargs="*", default=None, help="names from --recipes-file (default: all)")
    parser.add_argument("--recipes-file", type=Path, default=REPO / "benchmarks" / "recipes.yaml")
    parser.add_argument("--root", type=Path, default=GROCERY)
    parser.add_argument("--work", type=Path, default=None, help="work folder (default /tmp/retailnb-recipe-study)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON (default benchmarks/results/recipe_study_<target>.json)")
    add_smoke(parser, "the first recipe, one seed, one epoch of a tiny model on tiny synthetic data")
    args = apply_smoke(parser.parse_args(argv), SMOKE)
    if args.work is None:
        args.work = Path(tempfile.mkdtemp(prefix="retailnb-recipe-smoke-")) if args.smoke else Path(
            "/tmp/retailnb-recipe-study")
    recipes = load_recipes(args.recipes_file)
    names = args.recipes or list(recipes)[: 1 if args.smoke else None]
    unknown = sorted(set(names) - set(recipes))
    if unknown:
        parser.exit(2, f"recipe_study: unknown recipe(s) {unknown}; {args.recipes_file} has {sorted(recipes)}\n")
    if args.target == "grocery" and not has_grocery(args.root):
        parser.exit(2, f"recipe_study: no Grocery Store Dataset at {args.root} (--root)\n")
    default_out = args.work / "recipe_study_smoke.json" if args.smoke else (
        REPO / "benchmarks" / "results" / f"recipe_study_{args.target}.json")
    out = args.out or default_out
    results: list[dict[str, Any]] = json.loads(out.read_text()) if out.is_file() else []
    base = read_params(PARAMS)
    source, target = manifests(args.target, smoke_params(base) if args.smoke else base, args.root, args.work)
    for name in names:
        params = apply_overrides(base, recipes[name])
        if args.smoke:
            params = smoke_params(params)
        for seed in args.seeds:
            if any(r["recipe"] == name and r["seed"] == seed and r["overrides"] == recipes[name] for r in results):
                continue
            side, _ = run_retailnb(params, seed, source, target, args.work / "runs" / args.target / f"{name}-{seed}")
            results = [r for r in results if not (r["recipe"] == name and r["seed"] == seed)]
            results.append({"recipe": name, "seed": seed, "overrides": recipes[name], "accuracy": side.accuracy,
                            "random_accuracy": side.random_accuracy, "seconds": side.seconds, "images": side.images,
                            "epochs": side.epochs, "final_loss": side.extra["final_loss"]})
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=2) + "\n")
            print(f"{name} seed {seed}: {side.accuracy:.3f} (random {side.random_accuracy:.3f}) "
                  f"in {side.seconds:.0f} s", flush=True)
    studied = [name for name in recipes if any(r["recipe"] == name for r in results)]
    lines = [f"Recipe study, target {args.target} (pretraining never saw its products); mean [95% t-interval] "
             "over training seeds; the overrides of each recipe are in benchmarks/recipes.yaml", "",
             *table(results, studied)]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
