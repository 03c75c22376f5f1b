"""Overview figures of a dataset: catalogue against shelf images, and images per class and role."""

from __future__ import annotations

from collections import Counter, defaultdict

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from retailnb.data.manifest import ROLES, Manifest, ManifestRow


def pick_family(manifest: Manifest, roles: tuple[str, ...] = ("labelled", "probe_train")) -> str:
    """The group (brand family or coarse class) with the most classes among ``roles``; '' if none.

    A family with several members is what shows the fine-grained neighbours the task is about.
    """
    members: dict[str, set[str]] = defaultdict(set)
    for r in manifest.select(*roles):
        members[r.group].add(r.class_name)
    if not members:
        return ""
    return max(sorted(members), key=lambda g: len(members[g]))


def catalogue_vs_shelf(
    manifest: Manifest, *, group: str | None = None, n_classes: int = 4, n_shelf: int = 5
) -> Figure:
    """A grid with one row per class of ``group``: its first catalogue image, then shelf images.

    The gap between the first column and the rest is the domain gap the method has to bridge.
    """
    group = pick_family(manifest) if group is None else group
    by_class: dict[str, list[ManifestRow]] = defaultdict(list)
    for r in manifest.records:
        if r.group == group and r.class_name:
            by_class[r.class_name].append(r)
    classes = sorted(by_class)[:n_classes]
    if not classes:
        raise ValueError(f"no images in group {group!r}")
    fig, axes = plt.subplots(len(classes), 1 + n_shelf, figsize=(1.6 * (1 + n_shelf), 1.7 * len(classes)), squeeze=False)
    for row, name in zip(axes, classes):
        first: dict[str, ManifestRow] = {}
        for r in by_class[name]:
            first.setdefault(r.path, r)  # an image listed under several roles is shown once
        unique = list(first.values())
        catalogue = [r for r in unique if r.domain == "catalogue"][:1]
        shelf = [r for r in unique if r.domain != "catalogue"][:n_shelf]
        for ax, rec in zip(row, catalogue + shelf):
            with Image.open(manifest.resolve(rec)) as im:
                ax.imshow(im.convert("RGB"))
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(name, fontsize=8)
    axes[0][0].set_title("catalogue", fontsize=9)
    for ax in axes[0][1:]:
        ax.set_title("shelf", fontsize=9)
    fig.suptitle(f"Catalogue vs shelf: {group or 'all classes'}", fontsize=10)
    fig.tight_layout()
    return fig


MAX_BARS = 12
"""Above this many distinct images-per-class counts, :func:`class_counts` draws a histogram instead of bars."""


def images_per_class(manifest: Manifest, role: str) -> Counter[str]:
    """Images of each class in ``role``."""
    return Counter(r.class_name for r in manifest.select(role))


def uneven_roles(manifest: Manifest) -> list[str]:
    """The roles present whose classes do not all have the same number of images: those worth a figure."""
    return [role for role, n in manifest.role_counts().items() if n and len(set(images_per_class(manifest, role).values())) > 1]


def class_counts(manifest: Manifest, roles: list[str] | None = None) -> Figure:
    """Images per class for each of ``roles`` (default: every role present): how many classes have each
    count (few-shot depth and imbalance). Counts are whole numbers: one bar per count that occurs, each
    labelled, or a histogram on whole-number bins when there are many."""
    roles = roles or [role for role, n in manifest.role_counts().items() if n]
    fig, axes = plt.subplots(1, len(roles), figsize=(2.6 * len(roles), 2.4), squeeze=False)
    for ax, role in zip(axes[0], roles):
        counts = images_per_class(manifest, role)
        spread = sorted(Counter(counts.values()).items())  # (images per class, classes with that many)
        values = [v for v, _ in spread]
        if len(spread) <= MAX_BARS:
            ax.bar(range(len(spread)), [n for _, n in spread], color="tab:blue", width=0.6)
            ax.set_xticks(range(len(spread)), [str(v) for v in values], fontsize=7)
            ax.set_xlim(-0.75, len(spread) - 0.25)
        else:  # many distinct counts (real data): a histogram on whole-number bins
            ax.hist(list(counts.values()), bins=min(20, values[-1] - values[0] + 1), color="tab:blue")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        same = f"every class {values[0]}" if len(values) == 1 else f"{values[0]} to {values[-1]} per class"
        ax.set_title(f"{role}\n{len(counts)} classes, {sum(counts.values())} images\n{same}", fontsize=8)
        ax.set_xlabel("images per class", fontsize=8)
    axes[0][0].set_ylabel("classes")
    fig.tight_layout()
    return fig


__all__ = ["ROLES", "catalogue_vs_shelf", "class_counts", "images_per_class", "pick_family", "uneven_roles"]
