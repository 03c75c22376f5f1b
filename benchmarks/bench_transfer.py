"""Features that transfer: retailnb's pretraining against the plain lightly loop, side by side.

Both sides pretrain on one half of the Grocery Store Dataset's class-disjoint split by coarse kind
(``data.kinds=even``: 35 products of 22 kinds, their train, val and test photos and iconic images) and are
scored by a logistic-regression probe on the frozen features of the *other* half (``odd``: 46 products
of 21 kinds that neither side ever saw; the probe trains on their train photos and iconic images and is
scored on their test photos). Per training seed, one after the other in one process:

1. ``retailnb``: the main pretraining variant of ``params.yaml`` (``noisy.teacher_variant``), with the
   ``-S key=value`` overrides given here, run by :func:`retailnb.train.pretraining.pretrain` exactly as the
   pipeline's pretrain stage runs it. Its training loop time (steps and data, not decoding) is the budget.
2. ``plain``: the 60-line lightly loop of issue 13, trained for the same wall-clock budget (it stops at
   the first step past it): torchvision resnet18 without ``fc``, two views of
   ``RandomResizedCrop(64, scale=(0.2, 1))``, horizontal flip, ``ColorJitter(0.4, 0.4, 0.4, 0.1)`` with
   p=0.8, ``RandomGrayscale(0.2)``, ImageNet normalisation; lightly's ``SimCLRProjectionHead(512, 512,
   128)`` and ``NTXentLoss(temperature=0.2)``; SGD lr 0.06, momentum 0.9, weight decay 5e-4, batch 128;
   images decoded once to 72 px.
3. ``--noisy``: retailnb's noisy student from (1)'s backbone on the same half, timed on its own, its last
   round probed on the target.

Random weights of each side's architecture (seeded) are probed too: a side's *gain* is its pretrained
probe accuracy minus that. The summary gives each row's mean and t-interval over the seeds, the paired
seed-by-seed differences retailnb minus plain (accuracy and gain) with theirs, the ratio of the gains, and
each side's training images per second.

Usage:
    python benchmarks/bench_transfer.py --root ../shared/data/GroceryStoreDataset [--seeds 0 1 2]
        [-S pretrain.engine.epochs=12 ...] [--noisy] [--work DIR] [--out FILE.json]

The Grocery Store Dataset is not part of the repository; without it the script exits 2 naming the root.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from lightly.loss import NTXentLoss
from lightly.models.modules.heads import SimCLRProjectionHead
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.models import resnet18
from torchvision.transforms import v2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from retailnb.config.params_file import read_params  # noqa: E402
from retailnb.config.noisy import NoisyStageSpec
from retailnb.config.pretrain import PretrainStageSpec
from retailnb.config.stages import spec_from_params  # noqa: E402
from retailnb.data.images import decode_images  # noqa: E402
from retailnb.data.manifest import read_manifest  # noqa: E402
from retailnb.data.prepare import prepare_dataset  # noqa: E402
from retailnb.evaluation.probe import probe_accuracy  # noqa: E402
from retailnb.evaluation.quickprobe import ProbeData, load_probe_data  # noqa: E402
from retailnb.results.intervals import order, paired_difference, t_interval  # noqa: E402
from retailnb.models.backbone import create_backbone  # noqa: E402
from retailnb.models.inference import extract_features  # noqa: E402
from retailnb.results.markdown import interval_text as report_interval_text  # noqa: E402
from retailnb.train.pretraining import PretrainRunSpec, pretrain, training_rows  # noqa: E402

SOURCE_KINDS, TARGET_KINDS = "even", "odd"
"""Pretraining sees the even coarse kinds; the probes train and score on the odd ones."""

PLAIN_SIZE, PLAIN_DECODE = 64, 72
"""The plain loop's crop side and the side its images are decoded to once."""


# --- data -----------------------------------------------------------------------------------------


def grocery_halves(root: Path, work: Path) -> tuple[Path, Path]:
    """Manifests of the pretraining half and the target half (written once per work folder)."""
    manifests = []
    for kinds in (SOURCE_KINDS, TARGET_KINDS):
        out = work / f"grocery_{kinds}"
        if not (out / "manifest.csv").is_file():
            prepare_dataset("grocery_store", out, root=root, labels="fine", kinds=kinds, on_error="skip")
        manifests.append(out / "manifest.csv")
    return manifests[0], manifests[1]


@cache
def target_data(manifest: Path, size: int) -> ProbeData:
    """The target half's probe_train/probe_test images decoded at ``size`` (once per size)."""
    return load_probe_data(read_manifest(manifest), size, "probe_train", "probe_test")


def probe(backbone: nn.Module, data: ProbeData) -> float:
    """Accuracy of a logistic-regression probe on ``backbone``'s frozen features (all training images)."""
    f_train = extract_features(backbone, data.x_train, precision="fp32")
    f_test = extract_features(backbone, data.x_test, precision="fp32")
    return float(probe_accuracy(f_train, data.y_train, f_test, data.y_test)["accuracy"])


# --- params ---------------------------------------------------------------------------------------


def apply_overrides(params: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``params`` with ``key.path=value`` overrides applied, values parsed as YAML (like ``dvc exp run -S``).

    Raises:
        ValueError: an override without ``=`` or whose path does not exist in ``params``.
    """
    params = json.loads(json.dumps(params))
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"-S {item!r}: expected key.path=value")
        *parents, last = key.split(".")
        node = params
        for part in parents:
            if not isinstance(node, dict) or part not in node:
                raise ValueError(f"-S {item!r}: params.yaml has no {key!r}")
            node = node[part]
        if not isinstance(node, dict) or (last not in node and parents[:2] != ["pretrain", "variants"]):
            raise ValueError(f"-S {item!r}: params.yaml has no {key!r}")
        node[last] = yaml.safe_load(text)
    return params


# --- the two sides --------------------------------------------------------------------------------


@dataclass
class Side:
    """One side's run for one seed: probe accuracy pretrained and from random weights, and its cost."""

    accuracy: float
    random_accuracy: float
    seconds: float
    images: int
    epochs: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def gain(self) -> float:
        """What pretraining added to the probe over random weights of the same architecture."""
        return self.accuracy - self.random_accuracy

    @property
    def images_per_second(self) -> float:
        """Training images (each seen in two views) per second of the training loop."""
        return self.images / self.seconds if self.seconds else 0.0


def run_retailnb(params: dict[str, Any], seed: int, source: Path, target: Path, out_dir: Path,
                 variant: str | None = None) -> tuple[Side, Path]:
    """Pretrain retailnb's ``variant`` (default: the noisy student's teacher) for training seed ``seed``."""
    variant = variant or params["noisy"]["teacher_variant"]
    spec = spec_from_params(PretrainStageSpec, params, variant).with_seed(seed)
    run = PretrainRunSpec(spec=spec, manifest=str(source), out_dir=str(out_dir), live_dir="")
    result = pretrain(run)
    size = spec.backbone.image_size
    trained = create_backbone(spec.backbone.architecture, weights=str(out_dir / "backbone.pt"))
    torch.manual_seed(spec.engine.seed)
    random_init = create_backbone(spec.backbone.architecture)
    data = target_data(target, size)
    side = Side(accuracy=probe(trained, data), random_accuracy=probe(random_init, data),
                seconds=result.data_seconds + result.step_seconds, images=result.images,
                epochs=float(result.epochs_run), extra={"final_loss": result.history["loss"][-1]})
    return side, out_dir / "backbone.pt"


class PlainViews(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Two SimCLR views of each image, drawn image by image (lightly's example, on decoded tensors)."""

    def __init__(self, images: torch.Tensor, size: int = PLAIN_SIZE) -> None:
        self.images = images
        self.transform = v2.Compose([
            v2.RandomResizedCrop(size, scale=(0.2, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        return self.transform(image), self.transform(image)


class PlainSimCLR(nn.Module):
    """torchvision resnet18 without its classifier, and lightly's SimCLR projection head."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = resnet18()
        self.backbone.fc = nn.Identity()
        self.projection_head = SimCLRProjectionHead(512, 512, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head(self.backbone(x))


def run_plain(params: dict[str, Any], seed: int, budget_s: float, source: Path, target: Path, *,
              workers: int = 0) -> Side:
    """Train the plain lightly loop until ``budget_s`` seconds of loop time are spent, on the images
    retailnb's main variant (of ``params``) pretrains on: every labelled and unlabelled image of the source."""
    spec = spec_from_params(PretrainStageSpec, params, params["noisy"]["teacher_variant"])
    paths, _, _ = training_rows(PretrainRunSpec(spec=spec, manifest=str(source), out_dir="", live_dir=""))
    images = torch.from_numpy(decode_images(paths, PLAIN_DECODE)).permute(0, 3, 1, 2).contiguous()
    torch.manual_seed(seed)
    np.random.seed(seed)
    model = PlainSimCLR()
    torch.manual_seed(seed)
    random_init = PlainSimCLR().backbone
    criterion = NTXentLoss(temperature=0.2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)
    loader = DataLoader(PlainViews(images), batch_size=128, shuffle=True, drop_last=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(seed))
    seconds, seen, steps = 0.0, 0, 0
    losses: list[float] = []
    while seconds < budget_s:
        model.train()
        tick = time.perf_counter()
        for x0, x1 in loader:
            loss = criterion(model(x0), model(x1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss))
            seen, steps = seen + len(x0), steps + 1
            tock = time.perf_counter()
            seconds, tick = seconds + (tock - tick), tock
            if seconds >= budget_s:
                break
    data = target_data(target, PLAIN_SIZE)
    return Side(accuracy=probe(model.backbone, data), random_accuracy=probe(random_init, data), seconds=seconds,
                images=seen, epochs=steps / max(len(loader), 1), extra={"final_loss": float(np.mean(losses[-5:]))})


def run_noisy(params: dict[str, Any], seed: int, source: Path, target: Path, teacher: Side, teacher_path: Path,
              out_dir: Path) -> Side:
    """retailnb's noisy student on the source half from ``teacher``'s backbone; its last round probed on the
    target (random weights as the teacher's row, so the noisy row's gain is comparable with it)."""
    from retailnb.stages import noisy

    spec = spec_from_params(NoisyStageSpec, params).with_seed(seed)
    paths = noisy.NoisyPaths(manifest=str(source), teacher_backbone=str(teacher_path), out_dir=str(out_dir),
                             metrics=str(out_dir / "noisy.json"), rounds_plot=str(out_dir / "rounds.json"),
                             pseudolabels_plot=str(out_dir / "pseudolabels.json"))
    start = time.perf_counter()
    result = noisy.run(spec, paths)
    seconds = time.perf_counter() - start
    last = result.record.rounds[-1].round
    student = create_backbone(spec.backbone.architecture, weights=str(out_dir / f"round_{last}" / "backbone.pt"))
    data = target_data(target, spec.backbone.image_size)
    return Side(accuracy=probe(student, data), random_accuracy=teacher.random_accuracy, seconds=seconds,
                images=0, epochs=float(spec.noisy.engine.epochs * spec.noisy.rounds),
                extra={"rounds": [r.model_dump() for r in result.record.rounds]})


# --- summary --------------------------------------------------------------------------------------


def interval_text(values: Sequence[float], confidence: float = 0.95) -> str:
    """``mean [low, high]`` of ``values`` over seeds (just the mean with one seed), as the report writes it."""
    return report_interval_text(t_interval(list(values), confidence))


def paired_text(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> str:
    """The seed-by-seed difference ``a - b`` with its t-interval, and whether the interval excludes 0."""
    diff = paired_difference(t_interval(list(a), confidence), t_interval(list(b), confidence))
    if diff is None or diff.low is None or diff.high is None:
        return f"{np.mean(np.subtract(a, b)):+.3f} (one seed: no interval)"
    verdict = "above 0" if diff.low > 0 else "below 0" if diff.high < 0 else "no difference measured"
    return f"{diff.mean:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}] ({verdict})"


def summary_lines(rows: dict[str, list[Side]]) -> list[str]:
    """The printed table: each side's accuracy, random-weights accuracy and gain over seeds, then the
    paired differences and the throughput."""
    lines = ["| side | probe accuracy | random weights | gain | loop s | img/s | epochs |", "|---|---|---|---|---|---|---|"]
    for name, sides in rows.items():
        speed = np.mean([s.images_per_second for s in sides])
        lines.append(
            f"| {name} | {interval_text([s.accuracy for s in sides])} | "
            f"{interval_text([s.random_accuracy for s in sides])} | {interval_text([s.gain for s in sides])} | "
            f"{np.mean([s.seconds for s in sides]):.0f} | {f'{speed:.0f}' if speed else '-'} | "
            f"{np.mean([s.epochs for s in sides]):.1f} |"
        )
    ours, plain = rows["retailnb"], rows["plain"]
    plain_gain = float(np.mean([s.gain for s in plain]))
    lines += [
        "",
        f"retailnb minus plain, accuracy, paired by seed: {paired_text([s.accuracy for s in ours], [s.accuracy for s in plain])}",
        f"retailnb minus plain, gain over random weights: {paired_text([s.gain for s in ours], [s.gain for s in plain])}",
        f"gain ratio retailnb / plain (mean gains): {np.mean([s.gain for s in ours]) / plain_gain:.2f}"
        if plain_gain > 0 else f"gain ratio: none, the plain loop gained nothing over its random weights ({plain_gain:+.3f})",
    ]
    if "noisy" in rows:
        noisy = rows["noisy"]
        lines.append(f"noisy last round minus its teacher (the retailnb row), paired by seed: "
                     f"{paired_text([s.accuracy for s in noisy], [s.accuracy for s in ours])}")
        verdict = order(t_interval([s.accuracy for s in noisy]), t_interval([s.accuracy for s in ours]))
        lines.append(f"noisy last round against its teacher, by their intervals: {verdict}")
    verdict = order(t_interval([s.accuracy for s in ours]), t_interval([s.accuracy for s in plain]))
    lines.append(f"retailnb against plain, by their intervals: {verdict}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data" / "GroceryStoreDataset",
                        help="the Grocery Store Dataset")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[],
                        help="params.yaml override for retailnb's side, key.path=value (repeatable)")
    parser.add_argument("--noisy", action="store_true", help="also run and time retailnb's noisy student")
    parser.add_argument("--plain-workers", type=int, default=0, help="DataLoader workers of the plain loop")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a new temporary one)")
    parser.add_argument("--out", type=Path, default=None, help="write every seed's figures here as JSON")
    parser.add_argument("--summarize", type=Path, default=None, help="only print the summary of an --out file")
    args = parser.parse_args(argv)
    if args.summarize:
        saved = json.loads(args.summarize.read_text())
        print(f"{args.summarize}: seeds {saved['seeds']}; overrides {saved['overrides'] or 'none'}")
        print("\n".join(summary_lines({k: [Side(**s) for s in v] for k, v in saved["rows"].items()})))
        return
    if not (args.root / "dataset" / "classes.csv").is_file() and not (args.root / "classes.csv").is_file():
        parser.exit(2, f"bench_transfer: no Grocery Store Dataset at {args.root} (--root)\n")
    work = args.work or Path(tempfile.mkdtemp(prefix="retailnb-transfer-"))
    params = apply_overrides(read_params(REPO / "params.yaml"), args.overrides)
    source, target = grocery_halves(args.root, work)
    rows: dict[str, list[Side]] = {"retailnb": [], "plain": []}
    if args.noisy:
        rows["noisy"] = []
    for seed in args.seeds:
        ours, teacher = run_retailnb(params, seed, source, target, work / f"seed{seed}" / "pretrain")
        rows["retailnb"].append(ours)
        print(f"seed {seed} retailnb: {ours.accuracy:.3f} (random {ours.random_accuracy:.3f}) "
              f"in {ours.seconds:.0f} s, {ours.images_per_second:.0f} img/s", flush=True)
        plain = run_plain(params, seed, ours.seconds, source, target, workers=args.plain_workers)
        rows["plain"].append(plain)
        print(f"seed {seed} plain: {plain.accuracy:.3f} (random {plain.random_accuracy:.3f}) "
              f"in {plain.seconds:.0f} s, {plain.images_per_second:.0f} img/s", flush=True)
        if args.noisy:
            student = run_noisy(params, seed, source, target, ours, teacher, work / f"seed{seed}" / "noisy")
            rows["noisy"].append(student)
            print(f"seed {seed} noisy student: {student.accuracy:.3f} (its teacher {ours.accuracy:.3f}) "
                  f"in {student.seconds:.0f} s", flush=True)
    heading = (f"Grocery transfer: pretrain on the {SOURCE_KINDS} coarse kinds, probe on the {TARGET_KINDS} ones; "
               f"seeds {args.seeds}; overrides {args.overrides or 'none'}")
    print(f"\n{heading}\n" + "\n".join(summary_lines(rows)))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(heading + "\n\n" + "\n".join(summary_lines(rows)) + "\n")
        args.out.write_text(json.dumps({"seeds": args.seeds, "overrides": args.overrides,
                                        "rows": {k: [asdict(s) for s in v] for k, v in rows.items()}}, indent=2) + "\n")


if __name__ == "__main__":
    main()
