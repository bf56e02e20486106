"""`segexp train`: trains one run, or each job of a sweep (-m); returns the objective for sweepers."""

from __future__ import annotations

from pathlib import Path


def task(cfg):
    """Trains one job and returns the objective, for sweepers to optimize."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from segexp.rundir import read_sweep_record
    from segexp.training.train import train

    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    sweep = None
    if hydra_cfg.mode == RunMode.MULTIRUN:
        sweep = read_sweep_record(Path(hydra_cfg.runtime.cwd) / hydra_cfg.sweep.dir)  # hydra.job.chdir-proof
    if sweep and cfg.resume_sweep:
        from segexp.experiments.sweeps import continue_job

        done = continue_job(cfg, sweep, Path(hydra_cfg.runtime.output_dir).resolve())
        if isinstance(done, float):
            return done
        cfg = done or cfg
    if cfg.resume:
        from omegaconf import OmegaConf

        from segexp.config.schema import TrainConfig
        from segexp.tracking.references import resolve_resumable
        from segexp.training.resume import read_state, resumed_config

        run = resolve_resumable(cfg.resume, cfg.tracking.uri)
        # a job of a resumed sweep continues with the config it saved (its overrides are already in it)
        cfg = resumed_config(run, OmegaConf.structured(TrainConfig), [] if cfg.resume_sweep else overrides)
        metrics = train(cfg, run.path, overrides, resume=read_state(run), sweep=sweep)
    else:
        metrics = train(cfg, Path(hydra_cfg.runtime.output_dir), overrides, sweep=sweep)
    return metrics.get(cfg.objective)
