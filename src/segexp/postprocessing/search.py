"""Choosing a segmentation method's parameters: every point of a small grid segments the selection slices, and
the best by a segmentation score wins. What chooses must never be reported: callers pass selection slices, and
the score function, so this package needs no metric of its own."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

# label images, truths -> {"v_rand": ..., "v_info": ...} (evaluation.metrics.segmentation_scores)
OBJECTIVES = ("v_rand", "v_info")
Scorer = Callable[[Sequence[np.ndarray], Sequence[np.ndarray]], dict[str, float]]


@dataclass(frozen=True)
class Choice:
    """What `choose` found: the parameters, their score on the slices that chose them, and every grid point's."""

    params: dict[str, Any]
    score: float
    objective: str
    table: list[dict[str, Any]] = field(default_factory=list)


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Returns every combination of the grid's values, in order."""
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(list(grid[n]) for n in names))]


def choose(probs: Sequence[np.ndarray], truths: Sequence[np.ndarray],
           segment: Callable[[np.ndarray, dict[str, Any]], np.ndarray], grid: Mapping[str, Sequence[Any]],
           score: Scorer, objective: str = "v_rand") -> Choice:
    """Returns the grid point whose segmentations (`segment(prob, params)`) of `probs` score best on `objective`
    against `truths` (ties: the first in grid order)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective {objective}: choose one of {', '.join(OBJECTIVES)}")
    table, best = [], None
    for params in grid_points(grid):
        scores = score([segment(p, params) for p in probs], truths)
        table.append({**params, **scores})
        if best is None or scores[objective] > best[objective]:
            best = table[-1]
    if best is None:
        raise ValueError("postprocess.grid is empty")
    params = {k: best[k] for k in grid}
    return Choice(params, float(best[objective]), objective, table)
