"""Sweeps in MLflow: one parent run per `segexp train -m ...`, each job's run a child of it.

`MlflowSweepCallback` is registered in conf/train.yaml under `hydra.callbacks`. Before any
job starts it creates the parent run (and the experiment, and a new sqlite store's schema,
so parallel jobs never race to migrate it) and writes `sweep.json` into the sweep directory:
the parent's id and the swept keys. Every job - in process, in a joblib worker or on another
host sharing the directory - reads it (`read_sweep_record`), and train() makes its run a
child of that parent. At the end the parent gets a table of its children, the best child by
`cfg.objective` and a plot of their learning curves.

Hydra 1.3 calls `on_multirun_end` only when every job succeeded: if one fails, the other
jobs still run, then the sweeper re-raises the first failure and Hydra exits 1. So the
summary is also written by an atexit hook, which runs on that exit.

Children that differ only in `trainer.seed` or `data.fold` are replicates of one recipe: for each
recipe with two or more finished runs the parent also gets, per report metric, the mean, standard
deviation, 95% confidence interval and n (`report_v_rand_mean`, ... `_std`, `_ci95`, `_n`; prefixed
by the recipe's overrides when the sweep crosses recipes with seeds), and the table says the same.
"""

from __future__ import annotations

import atexit
import csv
import io
import math
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from segexp.errors import SegexpError
from segexp.experiments import replicates
from segexp.reports import Curve, curves_figure, markdown_table
from segexp.rundir import SWEEP_RECORD, RunDir, SweepJob, read_sweep_record, write_sweep_record
from segexp.tracking import sweeps as sweep_store
from segexp.tracking.processes import process_identity
from segexp.tracking.provenance import run_tags
from segexp.tracking.records import RunRecord
from segexp.tracking.store import metric_history, resolve_uri
from segexp.tracking.tags import (
    BEST_CHILD_RUN_ID,
    BEST_CHILD_RUN_NAME,
    CHILDREN,
    FAILED_CHILDREN,
    FAILURE_REASON,
    OBJECTIVE,
    OUTPUT_DIR,
    OVERRIDES,
    PROCESS_TAG,
    PRUNED_CHILDREN,
    SWEEP_DIR,
    run_name,
)

# the children's scores on the report slices, beside the objective (a selection score) that ranks them
SUMMARY_METRICS = ("report_v_rand", "report_v_info", "report_dice", "report_accuracy")
CURVES = "select_dice"  # per-epoch metric plotted for every sweep, beside the objective's own
OPTUNA_TRIALS = "optuna_trials.csv"  # an Optuna sweep's study (segexp.experiments.optuna_sweeper), logged as summary/<it>
SHOWN_REASON = 100  # characters of failure_reason in the markdown table; the CSV has all of it


def swept_keys(overrides: Sequence[str]) -> list[str]:
    """Returns the keys of the command-line overrides that sweep several values, e.g. ["optimizer.lr"]."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return [o.get_key_element() for o in parsed if o.is_sweep_override()]


def sweep_name(sweep_dir: Path, overrides: Sequence[str]) -> str:
    """Returns the parent run's name, e.g. `sweep optimizer.lr 2026-11-25/09-24-44`."""
    keys = ",".join(swept_keys(overrides))
    return " ".join(part for part in ("sweep", keys, f"{sweep_dir.parent.name}/{sweep_dir.name}") if part)


def objective_metric(cfg: DictConfig) -> tuple[str, str]:
    """Returns (the child metric that holds cfg.objective, "max" or "min")."""
    objective = cfg.objective
    key = f"ckpt_{objective}" if objective.startswith("select_") else objective  # as train() logs it
    if objective == cfg.trainer.monitor:
        return key, cfg.trainer.monitor_mode
    return key, "min" if objective.endswith("loss") else "max"


def best_child(children: Sequence[RunRecord], key: str, mode: str) -> RunRecord | None:
    """Returns the FINISHED, unpruned child with the best finite `key` metric (as Optuna's best trial), or None."""
    scored = [r for r in children if r.finished and not r.pruned and math.isfinite(r.metric(key))]
    if not scored:
        return None
    return (max if mode == "max" else min)(scored, key=lambda r: r.metrics[key])


def summary_metrics(children: Sequence[RunRecord]) -> list[str]:
    """Returns the report metrics a sweep summarizes: SUMMARY_METRICS and, for data of more than two classes,
    each class's report Dice (`report_dice_<class>`) the children logged."""
    logged = set().union(*(r.metrics for r in children)) if children else set()
    per_class = sorted(k for k in logged if k.startswith("report_dice_"))
    return [*SUMMARY_METRICS, *(per_class if len(per_class) > 2 else [])]


def summary_rows(children: Sequence[RunRecord], objective_key: str) -> list[dict[str, Any]]:
    """Returns one {column: value} row per child run (the objective's metric too), metrics None where missing."""
    metrics = dict.fromkeys([*summary_metrics(children), objective_key])
    return [{"run_name": r.name, "status": "PRUNED" if r.pruned else r.status, "overrides": r.overrides_text,
             **{m: r.metrics.get(m) for m in metrics}, "run_id": r.run_id, "failure_reason": r.failure_reason}
            for r in children]


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, list(rows[0]) if rows else [], lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return out.getvalue()


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """Returns (the overrides every space-separated string holds, each string without them)."""
    tokens = [o.split() for o in overrides]
    shared = [t for t in tokens[0] if all(t in ts for ts in tokens)] if tokens else []
    return shared, [" ".join(t for t in ts if t not in shared) for ts in tokens]


def to_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Returns the rows as a markdown table; the overrides all rows share are listed once above it."""
    shared, varying = split_overrides([row["overrides"] for row in rows])

    def cell(column: str, value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.4f}"
        text = " ".join(str(value).split())
        if column == "failure_reason" and len(text) > SHOWN_REASON:
            text = text[:SHOWN_REASON - 3] + "..."
        return text

    columns = list(rows[0]) if rows else ["run_name", "status"]
    table = markdown_table(columns, [[cell(c, own if c == "overrides" else row[c]) for c in columns]
                                     for row, own in zip(rows, varying)])
    return f"overrides of every run: {' '.join(shared) or '(none)'}\n\n{table}\n"


def sweep_results(children: Sequence[RunRecord], cfg: DictConfig) -> tuple[dict[str, float], dict[str, str]]:
    """Returns the parent's (metrics, tags): best child by cfg.objective, children that did not finish."""
    key, mode = objective_metric(cfg)
    tags = {OBJECTIVE: f"{cfg.objective} ({mode})", CHILDREN: str(len(children)),
            FAILED_CHILDREN: str(sum(not r.finished for r in children)),
            PRUNED_CHILDREN: str(sum(r.pruned for r in children))}
    finished = [r for r in children if r.finished and not r.pruned]
    summarized = summary_metrics(finished)
    aggregates = replicates.aggregate_metrics(replicates.group_by_recipe(finished), summarized)
    best = best_child(children, key, mode)
    if best is None:
        return aggregates, tags
    tags.update({BEST_CHILD_RUN_ID: best.run_id, BEST_CHILD_RUN_NAME: best.name})
    # the chosen child's report scores: chosen on the selection slices, so still unbiased
    reported = {f"best_child_{k}": best.metrics[k] for k in summarized if k in best.metrics}
    return {f"best_{cfg.objective}": best.metrics[key], **reported, **aggregates}, tags


def learning_curves(uri: str, children: Sequence[RunRecord], metric: str) -> list[tuple[str, list[tuple[int, float]]]]:
    """Returns [(label, [(epoch, value)])] of `metric` per child that logged it, labelled by its own overrides."""
    _, labels = split_overrides([r.overrides_text for r in children])
    return [(label or r.name, points) for label, r in zip(labels, children)
            if (points := metric_history(uri, r.run_id, metric))]


def parent_status(children: Sequence[RunRecord], interrupted: bool) -> str:
    """Returns how the parent run ends: KILLED if the sweep or any job was interrupted, FAILED if no job
    reached MLflow, else FINISHED (failed jobs are listed in the summary, they do not fail the sweep)."""
    if interrupted or any(r.status == "KILLED" for r in children):
        return "KILLED"
    return "FINISHED" if children else "FAILED"


def belongs_to_job(run: RunRecord, overrides_tag: str, output_dir: Path) -> bool:
    """True if `run` is the one a job started: same output dir, or same overrides if it died before tagging that."""
    if run.output_dir is not None:
        return Path(run.output_dir).resolve() == output_dir
    return run.overrides_text == overrides_tag


def continue_job(cfg, sweep: SweepJob, output_dir: Path):
    """For a job of a resumed sweep, returns its objective if its run already FINISHED (kept, not re-run),
    a config that resumes it from its checkpoint if it has one, or None to train it afresh - its failed or
    killed run without a checkpoint deleted, so the sweep keeps one run per job."""
    uri = resolve_uri(cfg.tracking.uri)
    runs = sweep_store.job_runs(uri, sweep.parent_run_id, str(output_dir))
    finished = [r for r in runs if r.finished]
    if finished:
        key, _ = objective_metric(cfg)
        print(f"[segexp] job in {output_dir} already finished (run {finished[-1].run_id}): kept", flush=True)
        return float(finished[-1].metric(key))
    if RunDir(output_dir).state_file.is_file():
        print(f"[segexp] job in {output_dir} continues from its last checkpoint", flush=True)
        cfg = cfg.copy()
        cfg.resume = str(output_dir)
        return cfg
    sweep_store.delete_runs(uri, runs)
    return None


def records_runs(config: DictConfig) -> bool:
    """True when the tracking group's tracker writes to a store (not tracking=none)."""
    from hydra.utils import get_class

    return bool(get_class(config.tracking._target_).records)


class MlflowSweepCallback(Callback):
    """Groups a multirun's MLflow runs under one parent run and summarizes them on it."""

    def __init__(self) -> None:
        # plain strings only: joblib pickles this object into its worker processes
        self.uri: str | None = None
        self.parent_run_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra turns an exception raised here into a warning and runs the jobs anyway: unparented, unresumable
        # and each failing on the same store. A sweep whose parent run cannot be made stops before any job.
        try:
            self._start(config)
        except SegexpError as err:
            print(f"segexp: error: {err}", file=sys.stderr, flush=True)
            raise SystemExit(err.exit_code) from err

    def _start(self, config: DictConfig) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        if config.resume_sweep and records_runs(config) and (sweep_dir / SWEEP_RECORD).is_file():
            self._reopen(config, sweep_dir)
            return
        (sweep_dir / SWEEP_RECORD).unlink(missing_ok=True)  # a stale record must not adopt these jobs
        if not records_runs(config):
            return
        overrides = list(config.hydra.overrides.task)
        self.uri = resolve_uri(config.tracking.uri)
        tags = {**run_tags(overrides), SWEEP_DIR: str(sweep_dir), PROCESS_TAG: process_identity()}
        self.parent_run_id = sweep_store.start_parent_run(self.uri, config.tracking.experiment_name,
                                                          sweep_name(sweep_dir, overrides), tags)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        write_sweep_record(sweep_dir, SweepJob(self.parent_run_id, tuple(swept_keys(overrides))))
        atexit.register(self._end_at_exit, config)
        print(f"[segexp] sweep parent run {self.parent_run_id} in {self.uri}", flush=True)

    def _reopen(self, config: DictConfig, sweep_dir: Path) -> None:
        """Continues the sweep recorded in sweep_dir: its parent run RUNNING again, held by this process."""
        self.uri = resolve_uri(config.tracking.uri)
        self.parent_run_id = read_sweep_record(sweep_dir).parent_run_id
        sweep_store.reopen_parent_run(self.uri, self.parent_run_id, process_identity())
        atexit.register(self._end_at_exit, config)
        print(f"[segexp] resuming sweep {self.parent_run_id} in {sweep_dir}: finished jobs are kept", flush=True)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """Gives a job that failed before its own run started (bad data or config) a FAILED child run.

        Runs wherever the job ran (a joblib worker too), so it reads the parent from the sweep's record.
        """
        if job_return.status != JobStatus.FAILED:
            return
        sweep = read_sweep_record(Path(str(config.hydra.runtime.cwd)) / str(config.hydra.sweep.dir))
        if sweep is None:
            return
        uri = resolve_uri(config.tracking.uri)  # as the job's own tracker resolves it
        output_dir = Path(config.hydra.runtime.output_dir).resolve()
        overrides = list(job_return.overrides or [])
        tags = {**run_tags(overrides), OUTPUT_DIR: str(output_dir)}
        if any(belongs_to_job(run, tags[OVERRIDES], output_dir)
               for run in sweep_store.child_runs(uri, sweep.parent_run_id)):
            return  # the job's run exists and MlflowTracker.run already marked it FAILED
        reason = "the job failed"
        try:
            job_return.return_value  # re-raises the job's exception
        except Exception as error:  # noqa: BLE001 - any failure of the job is recorded as it was
            reason = f"{type(error).__name__}: {error}"
        sweep_store.record_failed_child(uri, sweep.parent_run_id,
                                        config.run_name or run_name(overrides, sweep.swept_keys), tags, reason)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent_run_id:
            self._end(config, interrupted=False)

    def _end_at_exit(self, config: DictConfig) -> None:
        """atexit: a job failed (Hydra ran the rest, then exits 1) or the sweep was interrupted."""
        if self.parent_run_id:
            self._end(config, interrupted=isinstance(getattr(sys, "last_value", None), KeyboardInterrupt))

    def _end(self, config: DictConfig, interrupted: bool) -> None:
        """Logs the summary onto the parent run, ends it and prints the table."""
        parent, self.parent_run_id = self.parent_run_id, None
        atexit.unregister(self._end_at_exit)

        children = sweep_store.child_runs(self.uri, parent)
        metrics, tags = sweep_results(children, config)
        status = parent_status(children, interrupted)
        if not children:
            tags[FAILURE_REASON] = "no job reached MLflow; see the sweep's terminal output"
        rows = summary_rows(children, objective_metric(config)[0])
        groups = replicates.group_by_recipe([r for r in children if r.finished and not r.pruned])
        replicated = replicates.aggregate_table(groups, summary_metrics([r for runs in groups.values() for r in runs]))
        table = to_markdown(rows) + (f"\nreplicates, per recipe: mean ± std [95% CI of the mean] (n)\n\n{replicated}"
                                     if replicated else "")
        curves = {m: lines for m in dict.fromkeys([CURVES, config.objective])
                  if (lines := learning_curves(self.uri, children, m))}
        figures = {"summary/learning_curves.png": curves_figure(
            {metric: [Curve(label, *zip(*points)) for label, points in lines] for metric, lines in curves.items()},
            "{metric} per epoch, one line per sweep job")} if curves else {}
        texts = {"summary/children.md": table, "summary/children.csv": to_csv(rows)}
        study = Path(str(config.hydra.sweep.dir)) / OPTUNA_TRIALS
        if study.is_file():
            texts[f"summary/{OPTUNA_TRIALS}"] = study.read_text()
        sweep_store.end_parent_run(self.uri, parent, status, metrics, tags, texts, figures)

        registered = config.tracking.get("register_as")
        if registered and config.tracking.log_model and BEST_CHILD_RUN_ID in tags:
            version = sweep_store.alias_best_version(self.uri, registered, tags[BEST_CHILD_RUN_ID])
            if version:
                print(f"[segexp] registered model {registered}: alias 'best' -> version {version} "
                      f"({tags[BEST_CHILD_RUN_NAME]})", flush=True)
        print(f"[segexp] sweep {parent} {status}: {len(children)} runs, {tags[FAILED_CHILDREN]} not finished, "
              f"{tags[PRUNED_CHILDREN]} pruned", flush=True)
        print(table, end="", flush=True)
        if f"best_{config.objective}" in metrics:
            reported = "".join(f", {k.removeprefix('best_child_')} {v:.4f}" for k, v in metrics.items()
                               if k.startswith("best_child_report_"))
            print(f"[segexp] best {tags[OBJECTIVE]}: {metrics[f'best_{config.objective}']:.4f}, "
                  f"{tags[BEST_CHILD_RUN_NAME]} (run {tags[BEST_CHILD_RUN_ID]}){reported}", flush=True)
