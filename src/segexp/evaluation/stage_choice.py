"""The segmentation stage a checkpoint is scored with: the one its run chose (recalled from postprocess.json),
or chosen again on its run's selection slices, scored by the challenge's metric of the segments."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from segexp.checks import check_stage
from segexp.data.affinities import BOUNDARY, Target
from segexp.data.images import to_channels
from segexp.evaluation.metrics import segmentation_scores
from segexp.evaluation.slices import role_set
from segexp.postprocessing import stage as stages
from segexp.rundir import ModelSource, RunDir


def run_stage(node: DictConfig | None, source: ModelSource, predictor, channels: int, where: str,
              target: Target = BOUNDARY) -> stages.Stage:
    """Returns the segmentation stage for a checkpoint: `node` (postprocess=...) or its run's own, with the
    parameters the run chose (for an ensemble: that all its members chose), or chosen again on the selection
    slices (for an ensemble: those no member trained on), predicted by `predictor`, when tune=true or no
    choice of that method was recorded."""
    run = source.members[0][1]
    saved = run.saved_config() if run else None
    node = stages.of_run(node, saved)
    # a run's recorded choice was made on its chosen checkpoint's maps; another of its checkpoints chooses anew
    choices = [stages.from_record(r.read_postprocess()) if r and is_chosen(c, r) else None for c, r in source.members]
    recalled = choices[0] if all(c == choices[0] for c in choices) else None
    record = source.split_record()

    def selection():
        chosen = role_set(run, "select", record)
        return (list(chosen.names), [predictor(to_channels(image, channels)) for image in chosen.images],
                list(chosen.masks))
    has_selection = saved is not None and record is not None
    check_stage(node, target)
    return stages.resolve(node, recalled, selection if has_selection else None, stages.objective_of_run(saved), where,
                          segmentation_scores, target)


def is_chosen(checkpoint: Path, run: RunDir | None) -> bool:
    """True when `checkpoint` is its run's chosen one (model.keras), not e.g. the last epoch's last.keras."""
    return run is not None and checkpoint.resolve() == run.checkpoint.resolve()
