"""A training run's folder and a sweep's: the one place that knows their file names (a leaf: no
TensorFlow, no MLflow, so resume and evaluate can check their inputs in milliseconds).

    outputs/runs/<date>/<time>/
      model.keras    the chosen checkpoint (best by trainer.monitor, or the last epoch)
      last.keras     the newest epoch, with optimizer state, for resuming
      last.json      epochs done and best score so far
      split.json     which slices trained, selected and report (names and pixel digests)
      postprocess.json  the segmentation stage's parameters and the selection slices that chose them
      config.yaml    the composed config the run trained with (also when train() is called from Python)
      .hydra/        Hydra's record of the composed config and overrides (CLI runs)

    outputs/multirun/<date>/<time>/
      sweep.json     the sweep's parent MLflow run and swept keys, for its jobs
      <n>/           one run folder per job
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def checkpoint(self) -> Path:
        return self.path / "model.keras"

    @property
    def last_checkpoint(self) -> Path:
        return self.path / "last.keras"

    @property
    def state_file(self) -> Path:
        return self.path / "last.json"

    @property
    def split_file(self) -> Path:
        return self.path / "split.json"

    @property
    def postprocess_file(self) -> Path:
        return self.path / "postprocess.json"

    def read_postprocess(self) -> dict[str, Any] | None:
        """Returns the segmentation stage the run chose (postprocessing.stage.Stage.record), or None."""
        return json.loads(self.postprocess_file.read_text()) if self.postprocess_file.is_file() else None

    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def hydra_dir(self) -> Path:
        return self.path / ".hydra"

    def read_state(self) -> dict[str, Any]:
        return json.loads(self.state_file.read_text())

    def write_state(self, state: dict[str, Any]) -> None:
        write_json_atomically(self.state_file, state)

    def read_split(self) -> dict[str, Any] | None:
        """Returns the split record train wrote (data.split_record), or None for a run without one."""
        return json.loads(self.split_file.read_text()) if self.split_file.is_file() else None

    def write_split(self, record: dict[str, Any]) -> None:
        write_json_atomically(self.split_file, record)

    def saved_config(self):
        """Returns the run's composed config (an OmegaConf DictConfig), or None if it has none; runs from
        before config.yaml existed have only Hydra's record."""
        from omegaconf import OmegaConf

        for path in (self.config_file, self.hydra_dir / "config.yaml"):
            if path.is_file():
                return OmegaConf.load(path)
        return None

    def write_config(self, cfg) -> None:
        """Saves the composed config, interpolations kept, as resume and evaluate read it back."""
        from omegaconf import OmegaConf

        temporary = self.config_file.with_name(f".{self.config_file.name}.tmp")
        OmegaConf.save(cfg, temporary)
        os.replace(temporary, self.config_file)


def write_json_atomically(path: Path, data: Any) -> None:
    """Writes JSON via a temporary file and rename, so a kill never leaves half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=1))
    os.replace(temporary, path)


@dataclass(frozen=True)
class ModelSource:
    """What a `ckpt=` names: one checkpoint, or the checkpoints of a sweep's finished jobs (an ensemble,
    e.g. the folds of a cross-validation), with the sweep's parent MLflow run id when it has one."""

    members: tuple[tuple[Path, "RunDir | None"], ...]
    parent_run_id: str | None = None

    @property
    def is_ensemble(self) -> bool:
        return len(self.members) > 1

    def split_record(self) -> dict[str, Any] | None:
        """Returns one split record for all members: a slice is `train` if any member trained on it, else
        `select` if any selected on it, else `report`; None if a member has no record."""
        records = [run.read_split() if run else None for _, run in self.members]
        if any(r is None for r in records):
            return None
        rank = {"train": 0, "select": 1, "report": 2}
        chosen: dict[str, tuple[str, dict]] = {}
        for record in records:
            for role, entries in record["roles"].items():
                for entry in entries:
                    key = entry["digest"] or entry["name"]
                    if key not in chosen or rank[role] < rank[chosen[key][0]]:
                        chosen[key] = (role, entry)
        roles: dict[str, list] = {role: [] for role in rank}
        for role, entry in chosen.values():
            roles[role].append(entry)
        return {"data": records[0].get("data"), "roles": roles}


def sweep_members(directory: Path) -> list[Path]:
    """Returns the job folders of a sweep directory that hold a checkpoint, in job order."""
    jobs = [d for d in directory.iterdir() if d.is_dir() and (d / "model.keras").is_file()]
    return sorted(jobs, key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name))


SWEEP_RECORD = "sweep.json"  # in a sweep directory: how its jobs find their parent run


@dataclass(frozen=True)
class SweepJob:
    """What a job of a multirun knows of its sweep (its sweep directory's sweep.json)."""

    parent_run_id: str
    swept_keys: tuple[str, ...] = ()


def read_sweep_record(sweep_dir: Path) -> SweepJob | None:
    """Returns the SweepJob the sweep in `sweep_dir` recorded for its jobs, or None (no tracking)."""
    path = Path(sweep_dir) / SWEEP_RECORD
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return SweepJob(record["parent_run_id"], tuple(record["swept_keys"]))


def write_sweep_record(sweep_dir: Path, job: SweepJob) -> None:
    write_json_atomically(Path(sweep_dir) / SWEEP_RECORD,
                          {"parent_run_id": job.parent_run_id, "swept_keys": list(job.swept_keys)})
