"""Continuing an interrupted run: its config and where it stopped (no TensorFlow)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf

from segexp.errors import ConfigError
from segexp.rundir import RunDir


@dataclass(frozen=True)
class ResumeState:
    run_dir: Path
    epochs_done: int
    best: float | None
    best_epoch: int | None
    run_id: str | None


def read_state(run: RunDir) -> ResumeState:
    """Returns where the run stopped."""
    state = run.read_state()
    return ResumeState(run.path, state["epochs_done"], state.get("best"), state.get("best_epoch"), state.get("run_id"))


def resumed_config(run: RunDir, schema: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """Returns the run's saved config with today's command-line overrides on top (resume= itself excluded)."""
    saved = run.saved_config()
    if saved is None:
        raise ConfigError(f"{run.config_file}: the run's config is missing, so it cannot be resumed")
    extra = [o for o in overrides if not o.startswith("resume=")]
    merged = OmegaConf.merge(schema, saved, OmegaConf.from_dotlist(extra))
    merged.resume = str(run.path)
    return merged
