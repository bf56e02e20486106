"""Reports people read: markdown tables, learning curves, and a markdown report as one self-contained
HTML page (a leaf: evaluate, sweep summaries, replicates and compare all draw and write theirs here)."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple, Sequence


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Returns a markdown table (header, rule, a line per row) of the cells as text, `|` escaped; no trailing newline."""
    def line(cells: Iterable[Any]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(columns), "|" + "---|" * len(columns), *(line(row) for row in rows)])


def html_page(text: str, directory: Path, title: str) -> str:
    """Returns markdown `text` as one HTML page (Python-Markdown with tables) whose pictures, files in
    `directory` that the text links to, are embedded, so the page opens anywhere without them."""
    import html

    import markdown

    def embed(match: re.Match) -> str:
        data = base64.b64encode((directory / html.unescape(match.group(2))).read_bytes()).decode()
        return f'{match.group(1)}"data:image/png;base64,{data}" style="max-width:100%"'

    body = re.sub(r'(<img [^>]*src=)"([^":]+)"', embed, markdown.markdown(text, extensions=["tables"]))
    style = ("body{font-family:sans-serif;max-width:1400px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}")
    return f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style>{body}"


class Curve(NamedTuple):
    """One line of a learning-curve panel: values per epoch (0-based), and a band around it or None."""

    label: str
    epochs: Sequence[int]
    values: Sequence[float]
    band: tuple[Sequence[float], Sequence[float]] | None = None


def curves_figure(panels: Mapping[str, Sequence[Curve]], title: str):
    """Returns a matplotlib Figure (Agg canvas, no pyplot state) with a panel per metric, a line per Curve,
    epochs counted from 1; `title` is formatted with the panel's metric."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(6.5 * len(panels), 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    for axes, (metric, curves) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels.items()):
        for curve in curves:
            x = [epoch + 1 for epoch in curve.epochs]
            (line,) = axes.plot(x, curve.values, marker="o", markersize=3, label=curve.label)
            if curve.band is not None:
                axes.fill_between(x, *curve.band, alpha=0.2, color=line.get_color())
        last = max((epoch for curve in curves for epoch in curve.epochs), default=0) + 1
        axes.set(xlabel="epoch", ylabel=metric, title=title.format(metric=metric), xlim=(0.5, last + 0.5))
        axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    return figure
