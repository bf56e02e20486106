"""The Hydra task functions behind `segexp train|predict|evaluate|compare|export`: each takes the composed
config Hydra hands it and calls the plain function that does the work (train.train, predict.predict,
evaluate.evaluate, compare.compare), adding what only the Hydra job knows (its output directory, its overrides,
the sweep it belongs to, the run it resumes)."""

from __future__ import annotations

from pathlib import Path


def train_task(cfg):
    """Trains one job and returns the objective, for sweepers to optimize."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from segexp.train import train

    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    sweep = None
    if hydra_cfg.mode == RunMode.MULTIRUN:
        from segexp.sweep import read_sweep_record

        sweep = read_sweep_record(Path(hydra_cfg.runtime.cwd) / hydra_cfg.sweep.dir)  # hydra.job.chdir-proof
    if cfg.resume:
        from omegaconf import OmegaConf

        from segexp.resume import read_state, resumed_config
        from segexp.rundir import resolve_resumable
        from segexp.schema import TrainConfig

        run = resolve_resumable(cfg.resume, cfg.tracking.uri)
        cfg = resumed_config(run, OmegaConf.structured(TrainConfig), overrides)
        metrics = train(cfg, run.path, overrides, resume=read_state(run), sweep=sweep)
    else:
        metrics = train(cfg, Path(hydra_cfg.runtime.output_dir), overrides, sweep=sweep)
    return metrics.get(cfg.objective)


def predict_task(cfg):
    from segexp.native_logs import import_tensorflow

    import_tensorflow()
    from segexp.predict import predict

    predict(cfg)


def evaluate_task(cfg):
    from hydra.core.hydra_config import HydraConfig

    from segexp.native_logs import import_tensorflow

    import_tensorflow()
    from segexp.evaluate import evaluate

    return evaluate(cfg, Path(HydraConfig.get().runtime.output_dir))


def compare_task(cfg):
    from hydra.core.hydra_config import HydraConfig

    from segexp.compare import compare

    compare(cfg, Path(HydraConfig.get().runtime.output_dir))


def export_task(cfg):
    from segexp.native_logs import import_tensorflow

    import_tensorflow()
    from segexp.export import export

    export(cfg)


def reproduce_task(cfg):
    from hydra.core.hydra_config import HydraConfig

    from segexp.reproduce import reproduce

    reproduce(cfg, Path(HydraConfig.get().runtime.output_dir))


def orphans_task(cfg):
    from segexp.orphans import orphans

    orphans(cfg)
