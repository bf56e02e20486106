"""The one vocabulary of what segexp writes into a run and reads back: tag names, artifact folders and run
names. Writers and readers import the names from here, so a rename cannot leave a reader behind."""

from __future__ import annotations

from typing import Sequence

# tags every training run carries (train and the sweep callback write them; compare, reproduce,
# replicates, the Optuna sweeper and `ckpt=RUN_ID` read them)
OVERRIDES = "overrides"  # the command-line overrides, space-separated ("(none)" for none)
OUTPUT_DIR = "output_dir"  # the run's folder (rundir.RunDir)
CHECKPOINT = "checkpoint"  # the chosen checkpoint's .keras file
SWEEP_DIR = "sweep_dir"  # a sweep parent's folder
FAILURE_REASON = "failure_reason"
PRUNED = "pruned"  # set on a job the Optuna pruner stopped early
PROCESS_TAG = "process"  # processes.process_identity() of the process that has the run open
HOSTNAME = "hostname"
DATA_DIGEST = "data_digest"
POSTPROCESS = "postprocess"  # the segmentation stage applied after the network (none: the tag is absent)
POSTPROCESS_CHOSEN_ON = "postprocess.chosen_on"  # the selection slices that chose its parameters
PRECISION = "precision"  # the dtype policy the run trained in (trainer.precision=auto: the speed probe's choice)
RESUMED_FROM_EPOCH = "resumed_from_epoch"  # set on a run that `resume=` continued, with the epoch it went on from
RESUME_OVERRIDES = "resume_overrides"  # the overrides of the command that resumed it (OVERRIDES keeps the first)
REPRODUCES = "reproduces"  # set by `segexp reproduce` on the new run: the id of the run it trains again

# provenance (tracking.provenance.run_tags): which code and packages made the run
SEGEXP_VERSION = "segexp_version"
CODE_DIGEST = "code_digest"  # sha256 over the package's source and configs
GIT_COMMIT = "git_commit"
GIT_DIRTY = "git_dirty"  # "True" or "False": uncommitted changes to tracked files
VERSION_PREFIX = "version."  # version.<distribution>, e.g. version.tensorflow

# a sweep's parent run (experiments.sweeps writes them when the sweep ends)
OBJECTIVE = "objective"  # "<metric> (max|min)"
CHILDREN = "children"  # how many child runs
FAILED_CHILDREN = "failed_children"  # children that did not finish
PRUNED_CHILDREN = "pruned_children"
BEST_CHILD_RUN_ID = "best_child_run_id"
BEST_CHILD_RUN_NAME = "best_child_run_name"

# a comparison's own run (experiments.compare)
COMPARED_RUNS = "compared_runs"  # comma-separated run ids

# MLflow's own tags that segexp writes or reads
PARENT_RUN_ID = "mlflow.parentRunId"  # a sweep job's run points at its sweep's parent run
RUN_NAME = "mlflow.runName"
NOTE = "mlflow.note.content"  # the run's description in the MLflow UI


def version_tag(distribution: str) -> str:
    """Returns the tag holding an installed distribution's version, e.g. version.keras."""
    return f"{VERSION_PREFIX}{distribution}"


def compare_tag(letter: str) -> str:
    """Returns the tag of a comparison's run naming its recipe `letter`, e.g. compare.B."""
    return f"compare.{letter}"


def split_tag(role: str) -> str:
    """Returns the tag naming a role's slices, e.g. split.report."""
    return f"split.{role}"


def split_digest_tag(role: str) -> str:
    """Returns the tag holding a digest of a role's pixels, e.g. split.report_digest."""
    return f"split.{role}_digest"


ORPHANED = "its process ("  # how the failure_reason of a run ended by store.end_orphaned_runs begins
REPORT_SLICES = "report_slices"  # run artifacts: <slice>.image.png, <slice>.truth.png, <slice>.probability.png,
# and <slice>.segments.png after a postprocess stage


def run_name(overrides: Sequence[str], swept_keys: Sequence[str] = ()) -> str:
    """Returns a readable run name from the command-line overrides, e.g. `model=unet_small,aug=heavy`;
    in a sweep only the swept ones (`optimizer.lr=0.001`), since the rest are the same in every child."""
    chosen = [o for o in overrides if not o.startswith(("hydra.", "hydra/"))]
    varying = [o for o in chosen if o.split("=", 1)[0].lstrip("+~") in set(swept_keys)]
    chosen = varying or chosen
    return ",".join(chosen) if chosen else "default"
