"""`segexp reproduce RUN`: trains a finished run again from what the tracking store holds - its resolved
config, overrides, code digest and package versions - and prints each final metric's difference from the
original. It refuses, in one line, when this code or an installed package differs from the run's (and says
which): then a difference would say nothing. With trainer.deterministic=true and no wall-clock budget the
difference is zero; a run stopped by trainer.max_minutes may run a different number of steps.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

from segexp.errors import ConfigError
from segexp.tracking.records import RunRecord

FINAL = ("report_", "ckpt_select_", "checkpoint_epoch", "epochs_run")  # metrics the run logs once, at the end


def environment_differences(run: RunRecord, now: RunRecord) -> list[str]:
    """Returns what differs between the run's provenance and this environment's (`now`: a record of today's
    provenance tags), e.g. ["code (digest ab12cd34ef56 then, 9f8e7d6c5b4a here; ...)", "numpy 2.4.6 then, 2.3.0 here"]."""
    found = []
    if run.code_digest is None:
        found.append("code (the run records no code digest: made by an older segexp)")
    elif run.code_digest != now.code_digest:
        commits = f"; git commit {(run.git_commit or '?')[:10]} then, {(now.git_commit or '?')[:10]} here"
        found.append(f"code (digest {run.code_digest[:12]} then, {(now.code_digest or '?')[:12]} here{commits})")
    versions, installed = run.versions, now.versions
    for dist in sorted(versions):
        if versions[dist] != installed.get(dist):
            found.append(f"{dist} {versions[dist]} then, {installed.get(dist, 'not installed')} here")
    return found


def original_config(uri: str, run: RunRecord) -> DictConfig:
    """Returns the run's resolved config (its config/config.yaml artifact) merged into the train schema."""
    import tempfile

    from segexp.config.schema import TrainConfig, register_configs
    from segexp.tracking.store import download_artifacts

    register_configs()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = download_artifacts(uri, run.run_id, "config/config.yaml", Path(tmp))
        except Exception as err:  # noqa: BLE001 - any failure to read it is the same for the user
            raise ConfigError(f"run {run.run_id} has no config/config.yaml artifact to reproduce it from "
                              f"({type(err).__name__})") from None
        return OmegaConf.merge(OmegaConf.structured(TrainConfig), OmegaConf.load(path))


def metric_diff(original: dict[str, float], again: dict[str, float]) -> list[tuple[str, float, float, float]]:
    """Returns (metric, original, reproduced, reproduced - original) for each final metric of the original."""
    rows = []
    for key in sorted(k for k in original if k.startswith(FINAL)):
        if key in again:
            rows.append((key, original[key], again[key], again[key] - original[key]))
    return rows


# trains a config into a folder with the given overrides and extra tags; returns the final metrics as MLflow keys
Retrain = Callable[[DictConfig, Path, Sequence[str], Mapping[str, str]], dict[str, float]]


def reproduce(cfg: DictConfig, output_dir: Path, retrain: Retrain) -> list[tuple[str, float, float, float]]:
    """Re-trains the run cfg.run names into output_dir with `retrain` (the command passes training's train, so
    that this module stays above the store and below the command); prints and writes diff.json; returns the rows."""
    from segexp.tracking.provenance import run_tags
    from segexp.tracking.store import existing_store, find_run
    from segexp.tracking.tags import REPRODUCES

    uri = existing_store(cfg.tracking.uri)
    run = find_run(uri, str(cfg.run))
    if not run.finished:
        raise ConfigError(f"run {run.run_id} is {run.status}; only a FINISHED run can be reproduced")
    differences = environment_differences(run, RunRecord("", tags=run_tags([])))
    if differences:
        raise ConfigError(f"cannot reproduce run {run.run_id} here: {'; '.join(differences)}; check out "
                          "its commit and install its versions (its tags list them)")
    train_cfg = original_config(uri, run)
    train_cfg.tracking.uri = uri
    if train_cfg.trainer.max_minutes:
        print(f"[segexp] note: the run had a {train_cfg.trainer.max_minutes}-minute budget; the number of steps "
              "may differ", flush=True)
    print(f"[segexp] reproducing run {run.run_id} ({run.name}) into {output_dir}", flush=True)
    again = retrain(train_cfg, output_dir, run.overrides, {REPRODUCES: run.run_id})
    rows = metric_diff(dict(run.metrics), again)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "diff.json").write_text(json.dumps(
        {"original_run": run.run_id, "rows": [dict(zip(("metric", "original", "reproduced", "difference"), r))
                                                    for r in rows]}, indent=2))
    width = max(len(r[0]) for r in rows) if rows else 6
    print(f"{'metric':<{width}}  {'original':>10}  {'reproduced':>10}  {'difference':>11}")
    for key, before, after, delta in rows:
        print(f"{key:<{width}}  {before:>10.6f}  {after:>10.6f}  {delta:>+11.2e}")
    largest = max((abs(r[3]) for r in rows if math.isfinite(r[3])), default=0.0)
    print(f"[segexp] reproduced run {run.run_id}: largest difference {largest:.2e} over {len(rows)} final "
          "metrics", flush=True)
    return rows


