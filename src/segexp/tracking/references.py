"""What a `ckpt=` or `resume=` names: a path (a .keras file, a run folder, a sweep folder) or an MLflow
run id, whose tags say where its files are."""

from __future__ import annotations

from pathlib import Path

from segexp.errors import ConfigError
from segexp.rundir import ModelSource, RunDir, read_sweep_record, sweep_members
from segexp.tracking.store import run_tag
from segexp.tracking.tags import CHECKPOINT, OUTPUT_DIR, SWEEP_DIR


def _tagged_path(reference: str, tag: str, tracking_uri: str | None) -> Path | None:
    """Returns the path an MLflow run's `tag` holds when `reference` looks like a run id, else None."""
    if Path(reference).exists() or "/" in reference:
        return None
    tagged = run_tag(reference, tag, tracking_uri)
    return Path(tagged) if tagged else None


def resolve_checkpoint(reference: str, tracking_uri: str | None = None) -> tuple[Path, RunDir | None]:
    """Returns (the .keras file, its run folder or None) that `reference` names: a .keras file, a run
    folder, or an MLflow run id (its `checkpoint` tag). A file outside a run folder has no split record."""
    path = Path(reference)
    if not path.is_file() and (path / "model.keras").is_file():
        path = path / "model.keras"
    elif not path.exists():
        path = _tagged_path(reference, CHECKPOINT, tracking_uri) or path
    if not path.is_file():
        raise ConfigError(f"ckpt={reference}: no model.keras there; pass a .keras file, a run directory or an "
                          "MLflow run id")
    path = path.resolve()
    run = RunDir(path.parent)
    return path, (run if run.split_file.is_file() or run.saved_config() is not None else None)


def resolve_model_source(reference: str, tracking_uri: str | None = None) -> ModelSource:
    """Returns the ModelSource `reference` names: anything resolve_checkpoint takes, or a sweep - its
    directory or its parent run's MLflow id - whose finished jobs' checkpoints form an ensemble."""
    path = Path(reference)
    if not path.exists():
        path = _tagged_path(reference, SWEEP_DIR, tracking_uri) or path
    if path.is_dir() and not (path / "model.keras").is_file() and (jobs := sweep_members(path)):
        record = read_sweep_record(path)
        parent = record.parent_run_id if record else None
        return ModelSource(tuple(resolve_checkpoint(str(job)) for job in jobs), parent)
    return ModelSource((resolve_checkpoint(reference, tracking_uri),))


def resolve_resumable(reference: str, tracking_uri: str | None = None) -> RunDir:
    """Returns the run folder `reference` names (a folder, or an MLflow run id's output_dir tag) that
    has a state file to continue from."""
    path = Path(reference)
    if not RunDir(path).state_file.is_file():
        path = _tagged_path(reference, OUTPUT_DIR, tracking_uri) or path
    run = RunDir(path)
    if not run.state_file.is_file():
        raise ConfigError(f"resume={reference}: no {run.state_file.name} there; pass a run directory that finished "
                          "at least one epoch or was interrupted, or its MLflow run id")
    return run
