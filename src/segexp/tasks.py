"""The Hydra task functions behind every `segexp COMMAND`: each takes the composed config Hydra hands
it and calls the plain function that does the work (train.train, predict.predict, evaluate.evaluate,
compare.compare, export.export, reproduce.reproduce, orphans.orphans, upload.upload), adding what only the
Hydra job knows (its output directory, its overrides,
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
    if sweep and cfg.resume_sweep:
        done = continue_sweep_job(cfg, sweep, Path(hydra_cfg.runtime.output_dir).resolve())
        if isinstance(done, float):
            return done
        cfg = done or cfg
    if cfg.resume:
        from omegaconf import OmegaConf

        from segexp.resume import read_state, resumed_config
        from segexp.rundir import resolve_resumable
        from segexp.schema import TrainConfig

        run = resolve_resumable(cfg.resume, cfg.tracking.uri)
        # a job of a resumed sweep continues with the config it saved (its overrides are already in it)
        cfg = resumed_config(run, OmegaConf.structured(TrainConfig), [] if cfg.resume_sweep else overrides)
        metrics = train(cfg, run.path, overrides, resume=read_state(run), sweep=sweep)
    else:
        metrics = train(cfg, Path(hydra_cfg.runtime.output_dir), overrides, sweep=sweep)
    return metrics.get(cfg.objective)


def continue_sweep_job(cfg, sweep, output_dir: Path):
    """For a job of a resumed sweep, returns its objective if its run already FINISHED (kept, not re-run),
    a config that resumes it from its checkpoint if it has one, or None to train it afresh - its failed or
    killed run without a checkpoint deleted, so the sweep keeps one run per job."""
    from segexp import tracking
    from segexp.rundir import RunDir
    from segexp.sweep import objective_metric
    from segexp.tracking import sweeps as sweep_store

    uri = tracking.resolve_uri(cfg.tracking.uri)
    runs = sweep_store.job_runs(uri, sweep.parent_run_id, str(output_dir))
    finished = [r for r in runs if r.info.status == "FINISHED"]
    if finished:
        key, _ = objective_metric(cfg)
        print(f"[segexp] job in {output_dir} already finished (run {finished[-1].info.run_id}): kept", flush=True)
        return float(finished[-1].data.metrics.get(key, float("nan")))
    if RunDir(output_dir).state_file.is_file():
        print(f"[segexp] job in {output_dir} continues from its last checkpoint", flush=True)
        cfg = cfg.copy()
        cfg.resume = str(output_dir)
        return cfg
    sweep_store.delete_runs(uri, runs)
    return None


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


def upload_task(cfg):
    from segexp.upload import upload

    upload(cfg)
