"""Experiment tracking: the only package that imports mlflow.

tags: the vocabulary of tag and artifact names; records: the typed records (RunRecord, SweepRecord) that
carry runs out of this package; store: the store's location, checks and read-back (as records);
trackers: the per-run trackers the `tracking` config group builds, over spool (the journal that keeps
a run's logging alive through an outage); sweeps: a multirun's parent run and its children;
references: a `ckpt=`/`resume=` that names an MLflow run id; provenance and processes: where a run comes
from and which process holds it.
"""
