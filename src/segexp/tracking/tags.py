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
