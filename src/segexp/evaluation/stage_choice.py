"""The segmentation stage a checkpoint is scored with: the one its run chose (recalled from postprocess.json),
or chosen again on its run's selection slices, scored by the challenge's metric of the segments."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from segexp.checks import check_stage
from segexp.data.affinities import BOUNDARY, Target
from segexp.data.images import to_channels
from segexp.data.sets import SegmentationSet
from segexp.evaluation.metrics import segmentation_scores
from segexp.evaluation.slices import role_set
from segexp.postprocessing import stage as stages
from segexp.rundir import ModelSource, RunDir


@dataclass(frozen=True)
class StagePlan:
    """What a checkpoint's segmentation stage needs but its model's predictions: the node, the choice its run
    recorded, the selection slices to choose on (when a choice must be made) and by which score."""
    node: DictConfig | None
    recalled: stages.Stage | None
    selection: SegmentationSet | None
    objective: str
    where: str
    target: Target


def plan_stage(node: DictConfig | None, source: ModelSource, where: str, target: Target = BOUNDARY) -> StagePlan:
    """Returns the StagePlan of `node` (postprocess=...) or the run's own stage for a model of `target`; refuses a
    stage the model cannot take, or one with nothing to choose its parameters on, before any model loads. A run's
    recorded choice is recalled (for an ensemble: the one all its members chose); with tune=true, or no choice of
    that method recorded, the stage is chosen on the selection slices (for an ensemble: those no member trained on)."""
    run = source.members[0][1]
    saved = run.saved_config() if run else None
    node = stages.of_run(node, saved)
    check_stage(node, target)
    # a run's recorded choice was made on its chosen checkpoint's maps; another of its checkpoints chooses anew
    choices = [stages.from_record(r.read_postprocess()) if r and is_chosen(c, r) else None for c, r in source.members]
    recalled = choices[0] if all(c == choices[0] for c in choices) else None
    selection = None
    if stages.needs_selection(node, recalled):
        record = source.split_record()
        selection = role_set(run, "select", record) if saved is not None and record is not None else None
        stages.check_choosable(node, recalled, None if selection is None else selection.names, where)
    return StagePlan(node, recalled, selection, stages.objective_of_run(saved), where, target)


def run_stage(plan: StagePlan, predictor, channels: int) -> stages.Stage:
    """Returns the planned stage, its parameters chosen (when the plan says so) on `predictor`'s maps of the
    selection slices."""
    chosen = plan.selection

    def selection():
        return (list(chosen.names), [predictor(to_channels(image, channels)) for image in chosen.images],
                list(chosen.masks))
    return stages.resolve(plan.node, plan.recalled, selection if chosen is not None else None, plan.objective,
                          plan.where, segmentation_scores, plan.target)


def is_chosen(checkpoint: Path, run: RunDir | None) -> bool:
    """True when `checkpoint` is its run's chosen one (model.keras), not e.g. the last epoch's last.keras."""
    return run is not None and checkpoint.resolve() == run.checkpoint.resolve()
