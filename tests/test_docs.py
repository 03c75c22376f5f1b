"""Every code block of README.md and docs/*.md runs, and every number the pages report comes from its JSON.

A code block in the docs is a promise. Each fenced block of each page (:data:`PAGES`) is one of:

* run: ``bash`` blocks in a subprocess, ``python`` blocks with ``exec``, in page order, in a copy of the
  tiny pipeline's repository (the session's ``tiny_pipeline``: ``dvc repro`` has run every stage on tiny
  parameters, so ``models/``, ``metrics/`` and ``reports/`` exist), one copy per page. The copy also gets
  the checkout's ``.dvc/plots`` templates and ``.dvc/config``, as a clone has them, the folders of photos
  the examples name (:func:`add_photos`), and links to the checkout's ``docs/``, ``benchmarks/`` and
  ``recipes/``, whose committed results some examples read (none may change them: checked after the blocks
  have run);
* checked without running: ``yaml`` blocks are merged into ``params.yaml`` and every stage's spec is
  validated; ``text`` blocks have a checker in :data:`CHECKED`;
* listed in :data:`NOT_RUN` with the reason it cannot run here (an install, the whole test suite, GPUs,
  the real dataset, hours of training). Their ``dvc exp run -S`` overrides are still validated against
  the specs, and their benchmark scripts and options must exist;
* pending: a block in a section of :data:`PENDING_FILLS`, which someone is about to write.

Any other block fails, as does an entry of these lists that matches no block. The results tables are
generated from their JSON files by ``docs/tables.py`` and must match them; every number with three
decimals in the prose of :data:`CHECKED_PROSE` must be a value, interval end, half-width or paired
difference of ``metrics/summary.json``. The experiments' prose quotes committed, frozen results (with the
commit they were made from) and is not checked number by number.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pipeline_fixture import TinyPipeline, copy_repo
from ruamel.yaml import YAML
from shared_fixtures import REPO, repo_params
from spec_paths import SPECS

import retailnb
from retailnb.config.stages import STAGES, spec_from_params

PAGES = ("README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")))
"""Every page whose code blocks are tested, relative to the repository."""

README_MAX_LINES = 250

NOT_RUN: dict[tuple[str, str], str] = {
    ("README.md", "python3 -m venv .venv"): "creates the environment; CI installs it in a fresh venv",
    ("README.md", "python -m pip install ."): "installs the package; CI installs it in a fresh venv",
    ("README.md", "python -m pytest"): "the whole test suite, this test included",
    ("README.md", 'python -m pytest -m "not pipeline"'): "the quick loop of the test suite, this test included",
    ("docs/development.md", "python -m pytest"): "the test suite, this test included",
    ("docs/development.md", "python benchmarks/bench_synthetic.py"):
        "minutes each at full size; tests/test_benchmarks.py runs every script with --smoke",
    ("docs/experiments.md", "dvc exp run -S data.source=grocery_store"):
        "the Grocery Store Dataset and an hour of training",
    ("docs/experiments.md", "python benchmarks/bench_transfer.py --noisy"):
        "the Grocery Store Dataset and half an hour per seed; tests/test_benchmarks.py runs it with --smoke",
    ("docs/experiments.md", "python benchmarks/budget_study.py --configs"):
        "an hour and a half of training on 2 cores; tests/test_benchmarks.py runs it with --smoke",
    ("docs/experiments.md", "python benchmarks/budget_study.py --target grocery --configs default rounds_4"):
        "the Grocery Store Dataset and 45 minutes per configuration on 2 cores; tests/test_benchmarks.py runs "
        "the study with --smoke",
    ("docs/experiments.md", "python benchmarks/budget_study.py --target grocery --configs default pretrain_12 \\"):
        "the Grocery Store Dataset and 45 minutes per configuration on 2 cores; tests/test_benchmarks.py runs "
        "the study with --smoke and checks the committed table against its JSON",
    ("docs/experiments.md", "python benchmarks/bench_rejection.py --pipeline ."):
        "writes the committed benchmarks/results/rejection.* (here through the workspace's link to benchmarks/), "
        "and the Grocery datasets take hours; tests/test_benchmarks.py runs it with --smoke",
    ("docs/experiments.md", "python benchmarks/rejection_levers.py --work"):
        "writes the committed benchmarks/results/rejection_levers.*, and trains on the Grocery Store Dataset for "
        "about two hours; tests/test_benchmarks.py runs it with --smoke and checks the committed table",
    ("docs/experiments.md", "python benchmarks/rejection_levers.py --levers default colour colour_only"):
        "writes the committed benchmarks/results/rejection_colour.*, and trains the default backbones on the "
        "Grocery Store Dataset for half an hour; tests/test_benchmarks.py runs both colour levers with --smoke "
        "and checks the committed table",
    ("docs/experiments.md", "dvc exp run -n more-time"):
        "eight noisy-student rounds and the evaluation again, about 35 minutes on 2 cores; "
        "tests/config/test_overrides.py checks that the recipe sets what DVC's -S sets and each stage reads it",
    ("docs/experiments.md", "python benchmarks/recipe_study.py"):
        "the Grocery Store Dataset and hours of training; tests/test_benchmarks.py runs it with --smoke",
    ("docs/experiments.md", "dvc exp run -S '+pretrain.variants.simclr="):
        "a whole default run, 20 minutes; the tiny pipeline trains SimCLR alone as one of its two variants",
    ("docs/pipeline.md", "dvc get https://github.com/marcusklasson/GroceryStoreDataset"):
        "downloads the Grocery Store Dataset, then trains on it",
    ("docs/pipeline.md", "G=$PWD/../shared/data/GroceryStoreDataset"):
        "the Grocery Store Dataset and an hour of training",
    ("docs/pipeline.md", "dvc remote add -d shared /mnt/team/retailnb-cache"):
        "a shared remote and a second clone; tests/test_pipeline.py pushes the tiny pipeline to a local-folder "
        "remote and pulls it into a fresh clone",
    ("docs/pipeline.md", "node0$ dvc exp run -S compute.devices=8"):
        "two machines with 8 GPUs each; tests/train/test_launch.py checks the command lines",
}
"""(page, the block's first line, or a prefix of it that only that block has) -> why it does not run here."""

PENDING_FILLS: dict[tuple[str, str], str] = {}
"""(page, a marker line) -> who fills the section: its blocks, up to the next heading, are pending."""

CHECKED_PROSE = ("README.md", "docs/results.md")
"""Pages whose prose numbers (three decimals) must come from metrics/summary.json."""

BLOCK = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<code>.*?)^```\s*$", re.M | re.S)


@dataclass(frozen=True)
class Block:
    """One fenced code block: its page, the line its fence opens on, its language and its code."""

    page: str
    line: int
    lang: str
    code: str

    @property
    def first(self) -> str:
        return self.code.strip().splitlines()[0].strip() if self.code.strip() else ""

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(page: str) -> list[Block]:
    text = (REPO / page).read_text()
    return [Block(page, text.count("\n", 0, m.start()) + 1, m["lang"], m["code"]) for m in BLOCK.finditer(text)]


ALL_BLOCKS = [b for page in PAGES for b in blocks(page)]


def matching(key: tuple[str, str], candidates: list[Block]) -> list[Block]:
    """The blocks of ``key``'s page whose first line is ``key``'s line, or else starts with it."""
    page, line = key
    on_page = [b for b in candidates if b.page == page]
    return [b for b in on_page if b.first == line] or [b for b in on_page if b.first.startswith(line)]


def pending(block: Block) -> str | None:
    """Why ``block`` is pending, when it sits in a section of :data:`PENDING_FILLS`."""
    text = (REPO / block.page).read_text().splitlines()
    for (page, marker), why in PENDING_FILLS.items():
        if page != block.page or marker not in text:
            continue
        start = text.index(marker) + 1
        end = next((i for i in range(start, len(text)) if text[i].startswith("#")), len(text))
        if start < block.line <= end:
            return why
    return None


def not_run(block: Block) -> str | None:
    return next((why for key, why in NOT_RUN.items() if block in matching(key, ALL_BLOCKS)), None)


# --------------------------------------------------------------------------------------------------
# Blocks checked without running
# --------------------------------------------------------------------------------------------------


def validate_params(params: dict[str, Any]) -> None:
    """Every stage's spec (for every variant and target) from ``params``; raises naming the bad key."""
    for name, stage in STAGES.items():
        keys = list(_lookup(params, stage.foreach)) if stage.foreach else [None]
        for key in keys:
            spec_from_params(SPECS[name], params, key)


def _lookup(params: dict[str, Any], dotted: str) -> Any:
    node: Any = params
    for part in dotted.split("."):
        node = node[part]
    return node


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def hydra_value(text: str) -> Any:
    """A ``-S`` value as DVC reads it: YAML, with Hydra's ``{key:value}`` dicts."""
    if text.startswith("{"):
        text = re.sub(r":(?=\S)", ": ", text)
    return YAML(typ="safe").load(text)


def apply_override(params: dict[str, Any], override: str) -> None:
    """``key.path=value`` (an existing key) or ``+key.path=value`` (a new one) set in ``params``."""
    path, _, value = override.partition("=")
    add = path.startswith("+")
    *parents, last = path.lstrip("+").split(".")
    node = _lookup(params, ".".join(parents)) if parents else params
    assert isinstance(node, dict), f"-S {override}: {'.'.join(parents)} is not a section"
    assert (last in node) != add, f"-S {override}: {'a new' if add else 'no'} key {path.lstrip('+')} in params.yaml"
    node[last] = hydra_value(value)


def commands(code: str) -> list[list[str]]:
    """Each command of a bash block as words (continuation lines joined, comments and prompts dropped)."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0].endswith("$"):  # a prompt, e.g. node0$
            words = words[1:]
        if words:
            out.append(words)
    return out


def check_static(block: Block) -> None:
    """What can be checked of a block that does not run: its experiments' overrides and its scripts."""
    for words in commands(block.code):
        if words[:3] == ["dvc", "exp", "run"]:
            params = repo_params()
            for flag, value in zip(words, words[1:]):
                if flag == "-S":
                    apply_override(params, value)
            validate_params(params)
        if len(words) > 1 and words[0] == "python" and words[1].startswith("benchmarks/"):
            script = REPO / words[1]
            assert script.is_file(), f"{block}: no script {words[1]}"
            source = script.read_text() + (REPO / "benchmarks" / "common.py").read_text()
            for option in (w.split("=")[0] for w in words[2:] if w.startswith("--")):
                assert f'"{option}"' in source, f"{block}: {words[1]} has no option {option}"


def check_yaml(block: Block) -> None:
    """A ``params.yaml`` excerpt: merged into the repository's params, every stage's spec validates."""
    params = repo_params()
    _merge(params, YAML(typ="safe").load(block.code))
    validate_params(params)


def check_layout(block: Block) -> None:
    """The README's layout tree: the layers of retailnb.LAYERS in order, and every path exists."""
    lines = block.code.splitlines()
    layers = [m[1] for line in lines if (m := re.match(r"^  (\w+)/\s", line))]
    assert tuple(layers) == retailnb.LAYERS, f"the tree's layers {layers} are not retailnb.LAYERS {retailnb.LAYERS}"
    for line in lines:
        name = line.split()[0]
        path = REPO / ("retailnb/" + name if line.startswith("  ") else name)
        assert path.exists(), f"{block}: the tree names {name}, which does not exist"


CHECKED: dict[tuple[str, str], Callable[[Block], None]] = {
    ("README.md", "retailnb/"): check_layout,
}
"""(page, first line) of each ``text`` block -> its checker."""


def check_block(block: Block) -> None:
    if block.lang == "yaml":
        check_yaml(block)
        return
    checkers = [check for key, check in CHECKED.items() if block in matching(key, ALL_BLOCKS)]
    assert checkers, (f"{block}: a ```{block.lang or '(no language)'} block that nothing runs or checks; run it "
                      "(bash, python), or list it in tests/test_docs.py (NOT_RUN with the reason, or CHECKED)")
    checkers[0](block)


def runs(block: Block) -> bool:
    return block.lang in ("bash", "python") and not_run(block) is None and pending(block) is None


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if not runs(b)], ids=str)
def test_block_is_checked(block: Block) -> None:
    """A block that does not run is pending, or listed with its reason (and checked where it can be),
    or has a checker."""
    if (why := pending(block)) is not None:
        pytest.skip(f"pending: {why}")
    if not_run(block) is not None:
        check_static(block)
        return
    check_block(block)


def test_every_list_entry_names_one_block() -> None:
    for key in [*NOT_RUN, *CHECKED]:
        assert len(matching(key, ALL_BLOCKS)) == 1, f"{key} should match exactly one block"
    for page, marker in PENDING_FILLS:
        assert marker in (REPO / page).read_text().splitlines(), f"{page} has no line {marker}"


# --------------------------------------------------------------------------------------------------
# Blocks that run, in a copy of the tiny pipeline
# --------------------------------------------------------------------------------------------------

PHOTOS: dict[str, dict[str, tuple[int, int, int]]] = {
    "my_shop/train": {"cola": (200, 30, 30), "crisps": (230, 210, 40), "tea": (40, 160, 60)},
    "new_products": {"oat_milk": (240, 240, 230), "jam": (120, 20, 90)},
    "packshots": {"honey": (230, 150, 20)},
}
"""The product folders the examples name: products told apart by colour."""

PER_PRODUCT = {"my_shop/train": 4, "new_products": 3, "packshots": 2}


def _photo(colour: tuple[int, int, int], rng: np.random.Generator) -> Image.Image:
    pixels = np.clip(rng.normal(colour, 12, (48, 48, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def add_photos(root: Path) -> None:
    """The examples' folders: ``my_shop/train/<product>/``, ``new_products/<product>/``,
    ``packshots/<product>/`` and ``shelf_photos/`` (known products and one the bundles never see)."""
    rng = np.random.default_rng(0)
    for folder, products in PHOTOS.items():
        for name, colour in products.items():
            (root / folder / name).mkdir(parents=True)
            for i in range(PER_PRODUCT[folder]):
                _photo(colour, rng).save(root / folder / name / f"{i}.jpg", quality=90)
    shelf = root / "shelf_photos"
    shelf.mkdir()
    colours = {**PHOTOS["my_shop/train"], **PHOTOS["new_products"], "unseen": (30, 40, 220)}
    for name, colour in colours.items():
        _photo(colour, rng).save(shelf / f"{name}.jpg", quality=90)


@pytest.fixture(scope="module")
def workspaces(tiny_pipeline: TinyPipeline, tmp_path_factory: pytest.TempPathFactory,
               ) -> Iterator[Callable[[str], Path]]:
    """The copy of the tiny pipeline each page's blocks run in, made on first use. Its ``docs/``,
    ``benchmarks/`` and ``recipes/`` are links to the checkout's: after the blocks, the checkout's committed results and
    pages must be as they were (a block that wrote them would leave the tables stale, as a CI run found)."""
    made: dict[str, Path] = {}
    base = tmp_path_factory.mktemp("docs")

    def committed() -> dict[str, bytes]:
        files = [*(REPO / "benchmarks" / "results").iterdir(), *(REPO / "docs").glob("*.md")]
        return {str(f.relative_to(REPO)): f.read_bytes() for f in files if f.is_file()}

    before = committed()

    def workspace(page: str) -> Path:
        if page not in made:
            root = copy_repo(tiny_pipeline.root, base / page.replace("/", "_"))
            shutil.copytree(REPO / ".dvc" / "plots", root / ".dvc" / "plots", dirs_exist_ok=True)
            shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")  # the plots' page template
            add_photos(root)
            for name in ("docs", "benchmarks", "recipes"):
                (root / name).symlink_to(REPO / name)
            made[page] = root
        return made[page]

    yield workspace
    after = committed()
    changed = sorted(name for name in {*before, *after} if before.get(name) != after.get(name))
    assert not changed, f"the docs' blocks changed files of the checkout: {changed}"


def run_bash(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if runs(b)], ids=str)
def test_block_runs(block: Block, workspaces: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The block runs without error where a reader would run it: in the repository after ``dvc repro``."""
    cwd = workspaces(block.page)
    if block.lang == "bash":
        done = run_bash(block.code, cwd)
        assert done.returncode == 0, f"{block} exited {done.returncode}:\n{block.code}\n{done.stdout}\n{done.stderr}"
    else:
        monkeypatch.chdir(cwd)
        exec(compile(block.code, str(block), "exec"), {"__name__": "__main__"})


# --------------------------------------------------------------------------------------------------
# Numbers, links, length
# --------------------------------------------------------------------------------------------------


def load_tables() -> ModuleType:
    """``docs/tables.py``, the generator of every results table."""
    spec = importlib.util.spec_from_file_location("docs_tables", REPO / "docs" / "tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tables_match_their_json() -> None:
    assert load_tables().stale() == [], "regenerate the tables with: python docs/tables.py"


def intervals(node: Any) -> Iterator[dict[str, Any]]:
    """Every interval record (mean, low, high, values) in a JSON tree."""
    if isinstance(node, dict):
        if {"mean", "low", "high", "values"} <= node.keys():
            yield node
        for value in node.values():
            yield from intervals(value)
    elif isinstance(node, list):
        for value in node:
            yield from intervals(value)


def leaves(node: Any) -> Iterator[Any]:
    """Every value of a JSON tree that is not a mapping or a list."""
    if isinstance(node, dict | list):
        for value in node.values() if isinstance(node, dict) else node:
            yield from leaves(value)
    else:
        yield node


def summary_triples() -> Iterator[tuple[float, float | None, float | None]]:
    """(mean, low, high) of every interval of metrics/summary.json: each result's, and the paired (seed by
    seed) difference of any two results of one target."""
    import json

    from retailnb.results.intervals import t_interval

    summary = json.loads((REPO / "metrics" / "summary.json").read_text())
    for target in summary["targets"].values():
        records = list(intervals(target))
        for r in records:
            yield r["mean"], r["low"], r["high"]
        for a, b in itertools.combinations(records, 2):
            if len(a["values"]) == len(b["values"]) > 1:
                d = t_interval([x - y for x, y in zip(a["values"], b["values"])])
                yield d.mean, d.low, d.high


def summary_numbers() -> set[str]:
    """Every number of metrics/summary.json the prose may quote, as ``0.123``: its values (means, interval
    ends, learning rates), half-widths, and the paired (seed by seed) differences of any two results of
    one target."""
    import json

    summary = json.loads((REPO / "metrics" / "summary.json").read_text())
    out = {f"{abs(v):.3f}" for v in leaves(summary) if isinstance(v, float)}
    for mean, low, high in summary_triples():
        values = [mean] if low is None or high is None else [mean, low, high, (high - low) / 2]
        out.update(f"{abs(v):.3f}" for v in values)
    return out


def prose(page: str) -> str:
    """A page without its code blocks, generated tables and comments."""
    text = BLOCK.sub("", (REPO / page).read_text())
    text = re.sub(r"<!-- table: .*?<!-- /table -->", "", text, flags=re.S)
    return re.sub(r"<!--.*?-->", "", text, flags=re.S)


def summary_intervals() -> set[tuple[str, ...]]:
    """Every interval of metrics/summary.json (:func:`summary_triples`) as (mean, low, high) at three
    decimals, signs dropped, either way round (a paired difference may be quoted as B - A)."""
    out: set[tuple[str, ...]] = set()
    for mean, low, high in summary_triples():
        if low is not None and high is not None:
            out.add(tuple(f"{abs(v):.3f}" for v in (mean, low, high)))
            out.add(tuple(f"{abs(v):.3f}" for v in (-mean, -high, -low)))
    return out


INTERVAL = re.compile(r"(?<![\d.])[+-]?(\d\.\d{3})\s+\[[+-]?(\d\.\d{3}),\s+[+-]?(\d\.\d{3})\]")
"""A quoted interval, ``0.489 [0.474, 0.505]`` or ``+0.187 [+0.143, +0.230]``, wherever the line breaks."""


BENCHMARK_SOURCES = {"README.md": ("benchmarks/results/rejection.md", "benchmarks/results/rejection_levers.md",
                                   "benchmarks/results/rejection_colour.md")}
"""Benchmark tables a checked page quotes by name besides the summary (README's store section quotes
``benchmarks/bench_rejection.py`` and ``benchmarks/rejection_levers.py``, the colour levers included): their
intervals count as known for that page."""


@pytest.mark.parametrize("page", CHECKED_PROSE)
def test_prose_intervals_are_intervals_of_the_summary(page: str) -> None:
    """Each quoted ``mean [low, high]`` is one interval of the summary (or of a benchmark table the page
    names), as a whole: three numbers that each occur somewhere in it are not enough (a stale interval's
    numbers can match others by chance)."""
    known = summary_intervals()
    for source in BENCHMARK_SOURCES.get(page, ()):
        known |= {m.groups() for m in INTERVAL.finditer((REPO / source).read_text())}
    quoted = [m.groups() for m in INTERVAL.finditer(prose(page))]
    assert quoted, f"{page} quotes no interval"
    stale = [q for q in quoted if q not in known]
    assert stale == [], f"{page} quotes intervals that metrics/summary.json does not hold: {stale}"


@pytest.mark.parametrize("page", CHECKED_PROSE)
def test_prose_numbers_come_from_the_summary(page: str) -> None:
    known = summary_numbers()
    quoted = set(re.findall(r"(?<![\d.])[+-]?(\d\.\d{3})(?!\d)", prose(page)))
    assert sorted(quoted - known) == [], f"{page} quotes numbers that metrics/summary.json does not hold"


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = BLOCK.sub("", page.read_text())
    return {slug(m[1]) for m in re.finditer(r"^#+ (.*)$", text, re.M)}


@pytest.mark.parametrize("page", PAGES)
def test_links_lead_somewhere(page: str) -> None:
    path = REPO / page
    for target in re.findall(r"\]\(([^)\s]+)\)", prose(page)):
        if re.match(r"https?://", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        assert dest.exists(), f"{page}: link to {target}, which does not exist"
        if anchor:
            assert anchor in anchors(dest), f"{page}: link to {target}, whose page has no such heading"


def test_readme_is_a_guide() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES


@pytest.mark.parametrize("page", [p for p in PAGES if p != "docs/experiments.md"])
def test_user_docs_carry_no_history(page: str) -> None:
    """Commit hashes and issue numbers belong to git and the experiments' provenance, not to a guide."""
    text = prose(page)
    hashes = [w for w in re.findall(r"\b[0-9a-f]{7,40}\b", text) if re.search(r"\d", w) and re.search(r"[a-f]", w)]
    assert hashes == [], f"{page} names commits {hashes}"
    assert not re.search(r"\bissue \d+|Done-when|this VM", text, re.I), f"{page} tells history"


def test_half_widths_are_t_intervals() -> None:
    """docs/tables.py computes the benchmarks' intervals as the report does (retailnb.results.intervals)."""
    from retailnb.results.intervals import t_interval

    values = [0.4668, 0.4638, 0.4735]
    mean, half = load_tables().interval(values)
    expected = t_interval(values)
    assert expected.high is not None and half is not None
    assert math.isclose(mean, expected.mean) and math.isclose(half, expected.high - expected.mean)
