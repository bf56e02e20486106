"""The segmentation stage as configured (conf/postprocess/), a label image per map (one integer per segment, 0
on the one-pixel boundaries between them): its parameters chosen on selection slices or
recalled from the run that chose them, applied to probability maps, and its scores named for what they
scored. Pure numpy + config: the model and the predictor stay with the callers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from segexp.data.affinities import BOUNDARY, Target, cell_map
from segexp.errors import ConfigError
from segexp.postprocessing import partition
from segexp.postprocessing.search import Scorer, choose, grid_points
from segexp.postprocessing.watershed import agglomerate, watershed


# method -> (function, what it segments): "map" a cell-probability map (an affinity model's derived one, see
# data.affinities.cell_map), "affinities" the same-object probabilities with their Target
SEGMENTERS: dict[str, tuple[Callable[..., np.ndarray], str]] = {
    "watershed": (watershed, "map"), "agglomerate": (agglomerate, "map"), "multicut": (partition.multicut, "map"),
    "gasp": (partition.gasp, "map"), "mutex_watershed": (partition.mutex_watershed, "affinities")}
METHODS = ("none", *SEGMENTERS)
OBJECTIVES = ("v_rand", "v_info")


def segment(prediction: np.ndarray, method: str, params: Mapping[str, Any], target: Target = BOUNDARY) -> np.ndarray:
    """Returns the label image of `method` with `params` on a model's prediction: a cell-probability map, or for
    an affinity `target` its affinities (H, W, C)."""
    if method not in SEGMENTERS:
        raise ValueError(f"postprocess.method={method}: choose one of {', '.join(SEGMENTERS)}")
    function, segments = SEGMENTERS[method]
    prediction = np.asarray(prediction, np.float32)
    if segments == "affinities":
        if not target.affinities:
            raise ValueError(f"postprocess.method={method} segments affinities; this model predicts a boundary map")
        return function(prediction, target, **params)
    return function(cell_map(prediction, target) if target.affinities else prediction, **params)


def method_params(method: str) -> list[str]:
    """Returns the parameters a method takes from postprocess.params / grid (not its input)."""
    import inspect

    return [n for n in inspect.signature(SEGMENTERS[method][0]).parameters if n not in ("prob", "affinities", "target")]


def segmenter(method: str, target: Target = BOUNDARY) -> Callable[[np.ndarray, Mapping[str, Any]], np.ndarray]:
    """Returns (prediction, params) -> label image of `method`, as `choose` takes it."""
    return lambda prediction, params: segment(prediction, method, params, target)


def boundary_map(labels: np.ndarray) -> np.ndarray:
    """Returns the map the ISBI challenge takes: uint8, cells 255, boundaries 0."""
    return np.where(labels > 0, 255, 0).astype(np.uint8)


@dataclass(frozen=True)
class Stage:
    """One segmentation stage: a method, its parameters and, when they were chosen, where and by what."""

    method: str = "none"
    params: dict[str, Any] = field(default_factory=dict)
    chosen_on: tuple[str, ...] = ()  # the selection slices that chose the parameters; () when given
    objective: str | None = None
    score: float | None = None  # the objective on chosen_on: selected there, so never a reported score
    target: Target = BOUNDARY  # what the model's output means (the run's target group), not recorded with the stage

    @property
    def active(self) -> bool:
        return self.method != "none"

    def apply(self, prediction: np.ndarray) -> np.ndarray:
        """Returns the label image of a model's prediction (0 on boundaries)."""
        return segment(prediction, self.method, self.params, self.target)

    def record(self) -> dict[str, Any]:
        return {"method": self.method, "params": self.params, "chosen_on": list(self.chosen_on),
                "objective": self.objective, "score": self.score}

    def describe(self) -> str:
        if not self.active:
            return "none (the probability map)"
        params = ", ".join(f"{k}={v}" for k, v in self.params.items())
        chosen = (f", chosen on slices {','.join(self.chosen_on)} ({self.objective} {self.score:.4f} there)"
                  if self.chosen_on else ", as configured")
        return f"{self.method} ({params}{chosen})"

    def tracking_params(self) -> dict[str, Any]:
        """MLflow params of the stage as applied (the config's postprocess.params are only its defaults)."""
        return {"postprocess_applied.method": self.method,
                **{f"postprocess_applied.{k}": v for k, v in self.params.items()}}


def from_record(record: dict[str, Any] | None) -> Stage | None:
    if record is None:
        return None
    return Stage(record["method"], dict(record["params"]), tuple(record.get("chosen_on") or ()),
                 record.get("objective"), record.get("score"))


def of_run(node: DictConfig | None, saved: DictConfig | None) -> DictConfig | None:
    """Returns the postprocess node to use: `node` if given (postprocess=... on the command line), else the
    stage of the run's saved config (None for a run from before the stage existed)."""
    if node is not None:
        return node
    return OmegaConf.select(saved, "postprocess") if saved is not None else None


def objective_of(monitor: str) -> str:
    """Returns the segmentation score the stage is chosen by: the topology score trainer.monitor names
    (select_v_info -> v_info), else V_rand (a pixel score says nothing about segments)."""
    name = monitor.removeprefix("select_")
    return name if name in OBJECTIVES else "v_rand"


def objective_of_run(saved: DictConfig | None) -> str:
    """Returns the objective a run's saved config chooses its stage by (objective_of its trainer.monitor)."""
    monitor = OmegaConf.select(saved, "trainer.monitor", default="select_v_rand") if saved is not None else None
    return objective_of(str(monitor or "select_v_rand"))


def configured(node: DictConfig | None) -> tuple[str, dict, dict, bool | None]:
    """Returns (method, params, grid, tune) of a postprocess node (None: no stage)."""
    if node is None or str(node.method) == "none":
        return "none", {}, {}, None
    plain = OmegaConf.to_container(node, resolve=True)
    return str(node.method), dict(plain.get("params") or {}), dict(plain.get("grid") or {}), plain.get("tune")


def needs_selection(node: DictConfig | None, recalled: Stage | None = None) -> bool:
    """True when the stage must be chosen on selection slices (nothing given or recalled to apply)."""
    method, _, _, tune = configured(node)
    if method == "none" or tune is False:
        return False
    return tune is True or recalled is None or recalled.method != method


def check_choosable(node: DictConfig | None, recalled: Stage | None, names: Sequence[str] | None, where: str) -> None:
    """Raises ConfigError when the stage must be chosen on selection slices and there are none: `names` is None
    when `where` has no labelled selection data at all, empty when the run's are all taken (every slice of an
    ensemble's data was trained on by one of its members)."""
    if not needs_selection(node, recalled):
        return
    method = configured(node)[0]
    if names is None:
        raise ConfigError(f"postprocess={method}: {where} has no selection slices with labels to choose its "
                          "parameters on; set postprocess.tune=false to apply postprocess.params as given")
    if not names:
        raise ConfigError(f"postprocess={method}: the run has no selection slices to choose its parameters on; "
                          "set postprocess.tune=false to apply postprocess.params as given")


def resolve(node: DictConfig | None, recalled: Stage | None, select: Callable[[], tuple[list, list, list]] | None,
            objective: str, where: str, score: Scorer, target: Target = BOUNDARY) -> Stage:
    """Returns the stage to apply to the predictions of a model of `target`: none; `params` as given (tune=false);
    the `recalled` choice of the same method (tune=null); else chosen on the selection slices `select()` returns
    as (names, predictions, truths), by `score` of the segments. `where` names the command for the error when
    there is nothing to choose on."""
    from dataclasses import replace

    method, params, grid, tune = configured(node)
    if method == "none":
        return Stage()
    if tune is False:
        return Stage(method, params, target=target)
    if not needs_selection(node, recalled):
        return replace(recalled, target=target)
    if select is None:
        check_choosable(node, recalled, None, where)  # raises: there is nothing to choose on
    names, probs, truths = select()
    check_choosable(node, recalled, names, where)
    print(f"[segexp] choosing postprocess={method} on selection slices {','.join(names)} "
          f"({len(grid_points(grid))} settings, by {objective})", flush=True)
    chosen = choose(probs, truths, segmenter(method, target), grid, score, objective)
    stage = Stage(method, chosen.params, tuple(names), objective, chosen.score, target)
    print(f"[segexp] postprocess: {stage.describe()}", flush=True)
    return stage


def scores(stage: Stage, probs: Sequence[np.ndarray], truths: Sequence[np.ndarray], map_scores: dict[str, float],
           score: Scorer) -> tuple[dict[str, float], list[np.ndarray]]:
    """Returns (scores, label images): with an active stage, v_rand / v_info become those `score` gives its
    segmentation and the map's move to map_v_rand / map_v_info (map_v_rand_threshold, ...); pixel scores stay the
    map's. Without one, unchanged."""
    if not stage.active:
        return dict(map_scores), []
    labels = [stage.apply(p) for p in probs]
    of_map = [k for k in map_scores if k.startswith(("v_rand", "v_info"))]  # v_rand_threshold too
    named = {k: v for k, v in map_scores.items() if k not in of_map}
    named.update({f"map_{k}": map_scores[k] for k in of_map})
    named.update(score(labels, truths))
    return named, labels
