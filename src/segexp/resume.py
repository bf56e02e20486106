"""Continuing an interrupted run: find its directory, its config and where it stopped (no TensorFlow)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf

from segexp.errors import ConfigError

STATE_FILE = "last.json"


@dataclass(frozen=True)
class ResumeState:
    run_dir: Path
    epochs_done: int
    best: float | None
    best_epoch: int | None
    run_id: str | None


def find_run_dir(resume: str, tracking_uri: str | None) -> Path:
    """Returns the run directory named by `resume`: the directory itself, or an MLflow run id's output_dir tag."""
    path = Path(resume)
    if (path / STATE_FILE).is_file():
        return path
    if not path.exists() and "/" not in resume:
        from segexp.tracking import run_tag

        tagged = run_tag(resume, "output_dir", tracking_uri)
        if tagged and (Path(tagged) / STATE_FILE).is_file():
            return Path(tagged)
    raise ConfigError(f"resume={resume}: no {STATE_FILE} there; pass a run directory that finished at least "
                      "one epoch or was interrupted, or its MLflow run id")


def read_state(run_dir: Path) -> ResumeState:
    """Returns where the run in run_dir stopped."""
    state = json.loads((run_dir / STATE_FILE).read_text())
    return ResumeState(run_dir, state["epochs_done"], state.get("best"), state.get("best_epoch"), state.get("run_id"))


def resumed_config(run_dir: Path, schema: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """Returns the run's saved config with today's command-line overrides on top (resume= itself excluded)."""
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"{saved}: the run's config is missing, so it cannot be resumed")
    extra = [o for o in overrides if not o.startswith("resume=")]
    merged = OmegaConf.merge(schema, OmegaConf.load(saved), OmegaConf.from_dotlist(extra))
    merged.resume = str(run_dir)
    return merged
