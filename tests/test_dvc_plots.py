"""``dvc plots show`` draws every declared series, with named axes and titles, on a page that needs no network.

The declarations (``dvc.yaml``'s ``plots:``), the templates and the page template of ``.dvc/plots`` are
checked as files, then DVC itself renders them from small plot files written as the stages write them.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from configobj import ConfigObj
from shared_fixtures import REPO, repo_params

from retailnb.evaluation.compare import FINETUNED_SERIES, images_per_product, shots_rows
from retailnb.noisy.rounds import PLOTTED_ACCURACY, PLOTTED_QUALITY

PLOTS_DIR = REPO / ".dvc" / "plots"


def _offline_page_module() -> Any:
    """The page builder, a development tool beside the page it writes (not part of the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("offline_page", PLOTS_DIR / "offline_page.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["offline_page"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


_page = _offline_page_module()
LOAD_ORDER, Library, page, read_npm_tarball, script_block = (
    _page.LOAD_ORDER, _page.Library, _page.page, _page.read_npm_tarball, _page.script_block)
BUILTIN_TEMPLATES = {"linear", "simple", "confusion", "confusion_normalized", "scatter", "scatter_jitter", "smooth",
                     "bar_horizontal", "bar_horizontal_sorted"}


def dvc_yaml() -> dict[str, Any]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())


def top_plots() -> dict[str, dict[str, Any]]:
    """Plot id (or file) -> its properties, of dvc.yaml's top-level ``plots:``."""
    return {name: props for entry in dvc_yaml()["plots"] for name, props in entry.items()}


def stage_plots() -> dict[str, dict[str, Any]]:
    """File -> properties of the evaluate stage's ``plots:`` (paths still holding ``${item.*}``)."""
    return {name: props for entry in dvc_yaml()["stages"]["evaluate"]["plots"] for name, props in entry.items()}


def html_template() -> Path:
    """The page template ``.dvc/config`` names (relative to ``.dvc``, as DVC resolves it)."""
    return REPO / ".dvc" / ConfigObj(str(REPO / ".dvc" / "config"))["plots"]["html_template"]


# --- the page template


def test_dvc_config_names_a_page_template_that_exists() -> None:
    assert html_template().is_file()


def test_the_page_template_loads_no_script_from_the_network() -> None:
    text = html_template().read_text()
    assert "{plot_divs}" in text  # where DVC puts the plots
    assert "{scripts}" not in text  # where DVC would put its CDN <script src> tags
    assert not re.search(r"<script[^>]*\bsrc\s*=", text, re.IGNORECASE)
    assert not re.search(r"<link[^>]*https?://", text, re.IGNORECASE)


def test_the_page_template_inlines_the_three_libraries_in_load_order_with_their_licences() -> None:
    text = html_template().read_text()
    headers = [re.search(rf"^{re.escape(name)} (\d+\.\d+\.\d+): build/{re.escape(name)}\.min\.js", text, re.MULTILINE)
               for name in LOAD_ORDER]
    assert all(headers), "each library is inlined after a header naming its npm package and version"
    assert [h.start() for h in headers if h] == sorted(h.start() for h in headers if h)
    assert text.count("licence: BSD-3-Clause") == 3
    assert "Redistribution and use in source and binary forms" in text
    # the UMD builds define the globals DVC's plot divs call
    assert 'vegaEmbed=' in text and '.vegaLite={}' in text and '.vega={}' in text


def fake_tarball(path: Path, name: str, code: str, licence_file: str | None = "BSD licence text") -> Path:
    files = {"package/package.json": json.dumps({"name": name, "version": "1.2.3", "license": "BSD-3-Clause",
                                                  "repository": "vega/" + name}),
             f"package/build/{name}.min.js": code}
    if licence_file is not None:
        files["package/LICENSE"] = licence_file
    with tarfile.open(path, "w:gz") as tar:
        for member, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_page_builder_reads_npm_tarballs_and_inlines_them_in_load_order(tmp_path: Path) -> None:
    libraries = [read_npm_tarball(fake_tarball(tmp_path / f"{name}.tgz", name, f"var {name.replace('-', '_')} = 1;",
                                               licence_file=None if name == "vega" else "BSD licence text"))
                 for name in reversed(LOAD_ORDER)]
    assert libraries[-1].repository == "https://github.com/vega/vega"
    text = page(libraries)
    positions = [text.index(f"var {name.replace('-', '_')} = 1;") for name in LOAD_ORDER]
    assert positions == sorted(positions)
    assert "{plot_divs}" in text and "{scripts}" not in text
    assert "sha256 " + libraries[0].sha256 in text
    assert "the tarball has no LICENSE file" in text  # vega's tarball: its licence id is still stated


def test_page_builder_refuses_a_missing_library_or_code_that_closes_the_script() -> None:
    lib = Library("vega", "5.0.0", "BSD-3-Clause", "", "", "var v;")
    with pytest.raises(ValueError, match="need exactly the libraries"):
        page([lib])
    with pytest.raises(ValueError, match="end the inlined script"):
        script_block(Library("vega", "5.0.0", "BSD-3-Clause", "", "", "x = '</script>';"))


# --- the declarations


def test_every_declared_plot_has_a_title_and_named_axes() -> None:
    for name, props in {**top_plots(), **stage_plots()}.items():
        for key in ("title", "x_label", "y_label"):
            assert props.get(key), f"{name} declares no {key}"
        assert props["y_label"] != "y" and "/" not in props["title"], name


def test_every_custom_template_exists_and_takes_dvc_data() -> None:
    used = {props["template"] for props in {**top_plots(), **stage_plots()}.values() if "template" in props}
    for name in used - BUILTIN_TEMPLATES:
        spec = json.loads((PLOTS_DIR / f"{name}.json").read_text())
        assert spec["data"]["values"] == "<DVC_METRIC_DATA>", name
        assert "<DVC_METRIC_TITLE>" in json.dumps(spec), name


def test_shots_plot_draws_the_shot_counts_as_categories_in_order_of_images() -> None:
    """Evenly spaced 1, 5, 10, all (not "all" at x = 12 on a linear axis), in the order of images per product."""
    (props,) = [p for name, p in stage_plots().items() if name.endswith("/shots.json")]
    assert (props["x"], props["y"], props["template"]) == ("shots", "accuracy", "shots")
    spec = json.loads((PLOTS_DIR / "shots.json").read_text())
    assert spec["encoding"]["x"]["type"] == "ordinal"
    assert spec["encoding"]["x"]["sort"] == {"field": "images_per_product", "op": "min"}
    assert '"field": "method"' in json.dumps(spec)  # one line per method of the file


def test_rounds_and_epochs_are_drawn_one_tick_per_value() -> None:
    """An ordinal x: ticks are the values written (1, 2), never a quantitative axis's 1.5 shown as "2"."""
    for name, props in top_plots().items():
        assert props.get("template") == "series", name
        assert "0 = the first" not in props.get("x_label", ""), name  # epochs count from 1, as in the notebooks
    spec = json.loads((PLOTS_DIR / "series.json").read_text())
    assert spec["encoding"]["x"]["type"] == "ordinal"


def test_every_pretraining_variant_has_its_loss_curves_declared() -> None:
    plots = top_plots()
    for variant, weights in repo_params()["pretrain"]["variants"].items():
        files = set(plots.get(f"pretrain_loss_{variant}", {}).get("y", {}))
        live = f"dvclive/seeds/0/pretrain/{variant}/plots/metrics/train"
        expected = {f"{live}/loss.tsv"} | {f"{live}/{o}.tsv" for o in ("simclr", "supcon") if weights[f"{o}_weight"] > 0}
        assert files == expected, f"pretraining variant {variant}: declare pretrain_loss_{variant} with {sorted(expected)}"


# --- the plotted data


def test_shots_rows_draw_every_method_with_its_all_point_on_a_numeric_axis() -> None:
    summaries = {name: [{"shots": s, "probe_accuracy_mean": base + 0.1 * i, "probe_accuracy_std": 0.01}
                        for i, s in enumerate([1, 5, "all"])] for name, base in (("random_init", 0.1), ("simclr", 0.4))}
    rows = shots_rows(summaries, 0.8, 12.0)
    assert len({frozenset(r) for r in rows}) == 1  # dvc draws a file only when every row has the same fields
    assert {r["method"] for r in rows} == {"random_init", "simclr", FINETUNED_SERIES}
    for method in ("random_init", "simclr", FINETUNED_SERIES):
        mine = [r for r in rows if r["method"] == method]
        assert [(r["shots"], r["images_per_product"]) for r in mine] == [("1", 1.0), ("5", 5.0), ("all", 12.0)]
    assert all(isinstance(r["images_per_product"], float) for r in rows)
    assert [r["accuracy"] for r in rows if r["method"] == FINETUNED_SERIES] == [0.8] * 3


def test_the_all_point_sits_at_the_mean_training_images_per_product() -> None:
    assert images_per_product(np.repeat([0, 1, 2], 12)) == 12.0
    assert images_per_product(np.array([0, 0, 1, 1, 1, 2])) == 2.0
    assert images_per_product(np.array([0, 0, 1])) == 1.5
    with pytest.raises(ValueError, match="no training labels"):
        images_per_product(np.array([], dtype=int))


# --- DVC renders them


def write_tsv(path: Path, field: str, values: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"step\t{field}\n" + "".join(f"{i}\t{v}\n" for i, v in enumerate(values)))


def write_json(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows))


def plot_repo(root: Path) -> Path:
    """A DVC repository with the project's dvc.yaml, params, plot templates and config, and plot files."""
    root.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, root / name)
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, check=True)
    shutil.copytree(PLOTS_DIR, root / ".dvc" / "plots")
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")
    params = repo_params()
    for variant in params["pretrain"]["variants"]:
        for field in ("loss", "simclr", "supcon", "lr"):
            write_tsv(root / f"dvclive/seeds/0/pretrain/{variant}/plots/metrics/train/{field}.tsv", field, [3.0, 2.5, 2.0])
    write_json(root / "metrics/seeds/0/noisy_rounds.json",
               [dict(zip(PLOTTED_ACCURACY, (r, 0.3 + 0.01 * r, 0.25))) for r in range(3)])
    write_json(root / "metrics/seeds/0/noisy_pseudolabels.json",
               [dict(zip(PLOTTED_QUALITY, (r, 0.9, 0.5))) for r in range(1, 3)])
    summaries = {name: [{"shots": s, "probe_accuracy_mean": 0.2, "probe_accuracy_std": 0.01} for s in (1, 5, "all")]
                 for name in ("random_init", "simclr_supcon")}
    for seed in params["evaluate"]["seeds"]:
        for target in params["evaluate"]["targets"]:
            folder = root / f"metrics/seeds/{seed}/evaluate/{target}"
            write_json(folder / "shots.json", shots_rows(summaries, 0.5, 12.0))
            write_json(folder / "confusion.json", [{"actual": "a", "predicted": "b"}, {"actual": "b", "predicted": "b"}])
    return root


def dvc_plots(root: Path, *args: str) -> str:
    run = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", *args], cwd=root, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def series(spec: dict[str, Any], key: str) -> set[str]:
    return {row[key] for row in spec["data"]["values"]}


@pytest.mark.pipeline
def test_dvc_draws_every_declared_series_on_an_offline_page(tmp_path: Path) -> None:
    root = plot_repo(tmp_path / "repo")
    shown = json.loads(dvc_plots(root, "--json"))
    assert not shown.get("errors"), shown["errors"]
    specs = {name: entries[0]["content"] for name, entries in shown["data"].items()}
    plots = top_plots()
    for name, props in plots.items():
        spec = specs[name]
        assert spec["title"]["text"] == props["title"] and spec["encoding"]["y"]["title"] == props["y_label"]
        declared = props["y"] if isinstance(props["y"], list) else list(props["y"].values())
        assert series(spec, "field") == set(declared), name
    for variant in repo_params()["pretrain"]["variants"]:
        assert f"pretrain_loss_{variant}" in specs
    shots = specs["metrics/seeds/0/evaluate/prepared/shots.json"]
    assert series(shots, "method") == {"random_init", "simclr_supcon", FINETUNED_SERIES}
    assert {(r["shots"], r["images_per_product"]) for r in shots["data"]["values"]} == {("1", 1.0), ("5", 5.0),
                                                                                      ("all", 12.0)}
    dvc_plots(root, "-o", "page")
    text = (root / "page" / "index.html").read_text()
    assert not re.search(r"<script[^>]*\bsrc\s*=", text, re.IGNORECASE)  # DVC's CDN tags are not there
    assert text.count("vegaEmbed('#") == len(specs)
