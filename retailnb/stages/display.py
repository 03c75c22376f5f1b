"""What a stage notebook shows its reader: figures with alt text, tables, settings folded away, quiet logs.

The executed notebooks are the reports people share (their HTML exports hide the code), so what a cell
displays is the report's content: a figure needs a description for screen readers and for the moment
it fails to load, a list of records reads better as a table than as a JSON dump, and the full settings
of a run belong in a folded block rather than in the reader's way. Library INFO lines (timm announcing
each model it builds) are noise there; the project's own INFO lines say what a stage did.
"""

from __future__ import annotations

import html
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from retailnb.util.tables import markdown_table

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def setup_logging() -> None:
    """Log the project's INFO lines and only warnings and errors of every library, in one format.

    Call it before the libraries are imported: it also silences tqdm's complaint that a notebook kernel
    has no widget library (``tqdm.auto`` imported by a dependency); the project draws no bars there.
    """
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT, force=True)
    logging.getLogger("retailnb").setLevel(logging.INFO)
    warnings.filterwarnings("ignore", message="IProgress not found")


def figure_metadata(alt: str) -> dict[str, str]:
    """The display metadata that carries a figure's description (``alt``) into the notebook and its HTML."""
    if not alt.strip():
        raise ValueError("a figure needs a description (alt text)")
    return {"alt": alt}


def show_figure(fig: Any, path: str | os.PathLike[str], alt: str, *, dpi: int = 120) -> None:
    """Save a matplotlib figure as PNG at ``path``, close it, and display the file with its description.

    Displaying the saved file (not the live figure) makes the report show exactly what was written
    beside it, and the description travels as the image's ``alt`` metadata, which
    :func:`retailnb.stages.run_notebook.export_html` writes into the HTML. Returns nothing, so that a call ending
    a cell prints nothing after the figure.
    """
    import matplotlib.pyplot as plt
    from IPython.display import Image, display

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    display(Image(filename=str(path), metadata=figure_metadata(alt)))


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "–" if value is None else str(value)


def records_markdown(rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None) -> str:
    """Records (one mapping per row) as a Markdown table; floats to three decimals, None as a dash."""
    if not rows:
        return "*(none)*"
    columns = list(columns) if columns is not None else list(rows[0])
    return markdown_table(columns, [[_cell(row.get(c)) for c in columns] for row in rows])


def show_records(rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None) -> None:
    """Display records as a table (see :func:`records_markdown`)."""
    from IPython.display import Markdown, display

    display(Markdown(records_markdown(rows, columns)))


def settings_html(title: str, settings: Mapping[str, Any]) -> str:
    """A folded HTML block (``<details>``) holding ``settings`` as indented YAML."""
    import yaml

    text = yaml.safe_dump(dict(settings), sort_keys=False, default_flow_style=False, allow_unicode=True)
    return f"<details><summary>{html.escape(title)}</summary><pre>{html.escape(text)}</pre></details>"


def show_settings(title: str, spec: Any) -> None:
    """Display a stage's typed spec (a pydantic model) folded away, for the reader who wants every value."""
    from IPython.display import HTML, display

    display(HTML(settings_html(title, spec.model_dump(mode="json"))))
