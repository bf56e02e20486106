"""What segexp reads back from the store, as its own types: a run's record and a sweep's (its parent and
children). They are built from MLflow's objects in one place (`run_record`), and segexp's own tags are read by
name here, so code outside tracking/ sees neither MLflow's classes nor a tag's spelling."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from segexp.tracking.tags import (
    BEST_CHILD_RUN_ID,
    BEST_CHILD_RUN_NAME,
    CHECKPOINT,
    CODE_DIGEST,
    FAILED_CHILDREN,
    FAILURE_REASON,
    GIT_COMMIT,
    GIT_DIRTY,
    HOSTNAME,
    NOTE,
    OUTPUT_DIR,
    OVERRIDES,
    PARENT_RUN_ID,
    PRECISION,
    PROCESS_TAG,
    PRUNED,
    RESUMED_FROM_EPOCH,
    RUN_NAME,
    VERSION_PREFIX,
)

FINISHED = "FINISHED"


@dataclass(frozen=True)
class RunRecord:
    """One MLflow run as segexp reads it: params and tags are text (as MLflow stores them), metrics the last
    value logged per key, times in ms since the epoch (None while unknown)."""

    run_id: str
    name: str = ""
    experiment_id: str = ""
    status: str = ""
    start_time: int | None = None
    end_time: int | None = None
    params: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    artifact_uri: str = ""

    @property
    def parent_id(self) -> str | None:
        """The sweep parent's run id of a sweep job's run, else None."""
        return self.tags.get(PARENT_RUN_ID)

    @property
    def finished(self) -> bool:
        return self.status == FINISHED

    def metric(self, key: str, default: float = math.nan) -> float:
        return self.metrics.get(key, default)

    def tag(self, key: str, default: str | None = None) -> str | None:
        """A tag by a name from tracking.tags (split_tag(...), POSTPROCESS, ...) that has no accessor of its own."""
        return self.tags.get(key, default)

    # --- segexp's own tags ---------------------------------------------------------------------------------------
    @property
    def overrides(self) -> list[str]:
        """The command-line overrides the run was started with ([] for none)."""
        return [o for o in self.tags.get(OVERRIDES, "").split() if o != "(none)"]

    @property
    def overrides_text(self) -> str:
        """The overrides tag as written ("" when the run has none recorded)."""
        return self.tags.get(OVERRIDES, "")

    @property
    def display_name(self) -> str:
        """The run's name as its own tag holds it (the same as `name` for a run segexp made)."""
        return self.tags.get(RUN_NAME, self.name)

    @property
    def output_dir(self) -> str | None:
        return self.tags.get(OUTPUT_DIR)

    @property
    def checkpoint(self) -> str | None:
        return self.tags.get(CHECKPOINT)

    @property
    def failure_reason(self) -> str:
        return self.tags.get(FAILURE_REASON, "")

    @property
    def pruned(self) -> bool:
        """True for a job the Optuna pruner stopped early (FINISHED in MLflow, PRUNED in the study)."""
        return PRUNED in self.tags

    @property
    def process(self) -> str:
        """processes.process_identity() of the process that has (or had) the run open; "" when not recorded."""
        return self.tags.get(PROCESS_TAG, "")

    @property
    def hostname(self) -> str | None:
        return self.tags.get(HOSTNAME)

    @property
    def precision(self) -> str | None:
        return self.tags.get(PRECISION)

    @property
    def code_digest(self) -> str | None:
        return self.tags.get(CODE_DIGEST)

    @property
    def git_commit(self) -> str | None:
        return self.tags.get(GIT_COMMIT)

    @property
    def git_dirty(self) -> bool | None:
        value = self.tags.get(GIT_DIRTY)
        return None if value is None else value == "True"

    @property
    def versions(self) -> dict[str, str]:
        """{distribution: version} of the packages the run recorded, e.g. {"keras": "3.12.0", ...}."""
        return {k.removeprefix(VERSION_PREFIX): v for k, v in self.tags.items() if k.startswith(VERSION_PREFIX)}

    @property
    def resumed_from_epoch(self) -> int | None:
        value = self.tags.get(RESUMED_FROM_EPOCH)
        return int(value) if value is not None else None

    @property
    def note(self) -> str | None:
        """The run's description (MLflow's note): a comparison's verdicts."""
        return self.tags.get(NOTE)

    # --- a sweep parent's summary tags ---------------------------------------------------------------------------
    @property
    def best_child_id(self) -> str | None:
        return self.tags.get(BEST_CHILD_RUN_ID)

    @property
    def best_child_name(self) -> str | None:
        return self.tags.get(BEST_CHILD_RUN_NAME)

    @property
    def failed_children(self) -> int | None:
        value = self.tags.get(FAILED_CHILDREN)
        return int(value) if value is not None else None


@dataclass(frozen=True)
class SweepRecord:
    """A multirun in the store: its parent run and its jobs' runs, oldest first."""

    parent: RunRecord
    children: tuple[RunRecord, ...]

    @property
    def finished(self) -> tuple[RunRecord, ...]:
        return tuple(r for r in self.children if r.finished)


def run_record(run: Any) -> RunRecord:
    """Returns the RunRecord of an mlflow.entities.Run: the one place that reads MLflow's run objects."""
    info, data = run.info, run.data
    return RunRecord(run_id=info.run_id, name=info.run_name or data.tags.get(RUN_NAME, ""),
                     experiment_id=info.experiment_id, status=info.status, start_time=info.start_time,
                     end_time=info.end_time, params=dict(data.params), metrics=dict(data.metrics),
                     tags=dict(data.tags), artifact_uri=info.artifact_uri or "")

