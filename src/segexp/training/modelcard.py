"""A model card (Markdown) for a finished run: what it was trained on, how, for how long, where, and what
it scores on slices no choice saw. Pure: built from the config, the split and the final metrics."""

from __future__ import annotations

from typing import Any, Mapping

from omegaconf import DictConfig

from segexp.tracking.tags import (
    DATA_DIGEST,
    GIT_COMMIT,
    GIT_DIRTY,
    HOSTNAME,
    OVERRIDES,
    PRECISION,
    SEGEXP_VERSION,
    version_tag,
)

SCORES = (("report_v_rand", "V_rand"), ("report_v_info", "V_info"), ("report_map_v_rand", "V_rand of the map"),
          ("report_map_v_info", "V_info of the map"), ("report_dice", "Dice"), ("report_iou", "IoU"),
          ("report_accuracy", "pixel accuracy"))


def slices_line(role: str, names: list[str], what: str) -> str:
    return f"- {role} ({len(names)}): {', '.join(names) if names else '(none)'} - {what}"


def model_card(cfg: DictConfig, run_name: str, run_id: str | None, parts: Mapping[str, Any],
               metrics: Mapping[str, float], tags: Mapping[str, str], source: str, postprocess: str = "") -> str:
    """Returns the run's model card as Markdown; `postprocess` describes the segmentation stage, if any
    (postprocessing.stage.Stage.describe)."""
    t, m = cfg.trainer, cfg.model
    chosen = (f"best `{t.monitor}` ({t.monitor_mode}) on the selection slices" if t.checkpoint == "best"
              else "the last epoch")
    scores = [(label, metrics[key]) for key, label in SCORES if key in metrics]
    classes = parts["train"].classes
    per_class = [(f"Dice {n}", metrics[f"report_dice_{n}"]) for n in classes.names if f"report_dice_{n}" in metrics]
    weights = tags.get("loss.class_weights_used")
    lines = [
        f"# Model card: {run_name}", "",
        f"MLflow run `{run_id or '(tracking off)'}`; segexp {tags.get(SEGEXP_VERSION, '?')} at commit "
        f"`{tags.get(GIT_COMMIT, 'unknown')}`" + (" with uncommitted changes" if tags.get(GIT_DIRTY) == "True" else "")
        + f"; overrides: `{tags.get(OVERRIDES, '(none)')}`.", "",
        "## Data", "",
        f"- data set `{cfg.data.name}` from `{source}`; pixel digest of all its slices "
        f"`{tags.get(DATA_DIGEST, '?')[:16]}` (full digests per slice in the run's config/split.json)",
        slices_line("train", parts["train"].names, "the model learned from these"),
        slices_line("select", parts["select"].names, "every choice (checkpoint, early stopping, schedule) looked here"),
        slices_line("report", parts["report"].names, "scored once, at the end; no choice saw them"),
        f"- {classes.count} classes: " + ", ".join(f"{i} `{n}`" for i, n in enumerate(classes.names))
        + (f"; unlabelled pixels marked {classes.ignore} are left out of the loss and the scores"
           if classes.ignore is not None else ""),
        "", "## Recipe", "",
        f"- model `{m._target_}`: depth {m.depth}, {m.base_filters} base filters, upsampling {m.upsampling}, "
        f"batch norm {m.batch_norm}, dropout {m.dropout}",
        f"- loss: {'BCE' if classes.binary else 'cross-entropy'} x{cfg.loss.fn.bce} + Dice x{cfg.loss.fn.dice}"
        + (f" (class weights {weights})" if weights else "")
        + (f" + clDice x{cfg.loss.fn.cldice} ({cfg.loss.fn.skeleton_iterations} skeleton iterations)"
           if cfg.loss.fn.cldice else "")
        + f", focal gamma {cfg.loss.fn.focal_gamma}, border "
        f"weight map {'on' if cfg.loss.weight_map is not None else 'off'}; optimizer `{cfg.optimizer.fn._target_}` "
        f"at lr {cfg.optimizer.lr} "
        f"({cfg.optimizer.schedule._target_.rsplit('.', 1)[-1]} schedule)"
        + (f", moving average of the weights (momentum {cfg.optimizer.ema}) scored and saved" if cfg.optimizer.ema else ""),
        f"- the network predicts: {output_line(cfg)}",
        f"- segmentation stage after the network: {postprocess or 'none (the probability map)'}",
        f"- augmentation: {', '.join(n._target_.rsplit('.', 1)[-1] for n in cfg.aug.transforms) or 'none'}",
        f"- crops {t.crop_size} px, batch {t.batch_size}, {t.steps_per_epoch} steps per epoch, seed {t.seed}, "
        f"precision {tags.get(PRECISION, t.precision)}",
        "", "## Budget and machine", "",
        f"- {int(metrics.get('epochs_run', 0))} epochs of at most {t.epochs}"
        + (f", stopped by the {t.max_minutes}-minute budget" if t.max_minutes else "")
        + f"; {metrics.get('train_minutes', 0):.1f} minutes; checkpoint of epoch "
        f"{int(metrics.get('checkpoint_epoch', -1)) + 1}, chosen by {chosen}",
        f"- {tags.get('device', '?')} on host `{tags.get(HOSTNAME, '?')}`; TensorFlow "
        f"{tags.get(version_tag('tensorflow'), '?')}, Keras {tags.get(version_tag('keras'), '?')}",
        "", "## Scores on the report slices", "",
    ]
    if scores:
        lines += ["| " + " | ".join(label for label, _ in scores) + " |", "|---" * len(scores) + "|",
                  "| " + " | ".join(f"{value:.4f}" for _, value in scores) + " |", "",
                  f"Predicted as `segexp evaluate` predicts (inference: tile {cfg.inference.tile}, TTA "
                  f"{cfg.inference.tta}), scored at the labels' resolution. V_rand and V_info follow the ISBI 2012 "
                  "reference (Fiji): best over its 11 thresholds, averaged per slice; Dice/IoU of the "
                  + (f"{'membrane (black)' if cfg.data.foreground == 0 else 'white'} class and accuracy at "
                     f"{cfg.inference.threshold}." if classes.binary else
                     "mean over the classes (each pixel's most probable class), per class below.")
                  + (" With a segmentation stage, V_rand and V_info score its segments (one binary map, so one "
                     "threshold) and `of the map` the probability map; the pixel scores are the map's."
                     if postprocess else "")]
        if per_class:
            lines += ["", "| " + " | ".join(label for label, _ in per_class) + " |", "|---" * len(per_class) + "|",
                      "| " + " | ".join(f"{value:.4f}" for _, value in per_class) + " |",
                      "", "The confusion matrix of the report slices is in the run's `confusion/report.png`."]
    else:
        lines += ["No report slices (split.report is empty): this run has no unbiased score."]
    lines += ["", "## Use", "",
              f"    python -m segexp predict ckpt={run_id or '<run dir>'} input=IMAGES output=DIR",
              f"    python -m segexp evaluate ckpt={run_id or '<run dir>'} data=folder data.images=DIR data.masks=DIR",
              "", "Input: float32 images in [0, 1], (batch, height, width, channels), any size; output: "
              + ("the probability that a pixel is white (cell in ISBI)." if classes.binary else
                 f"the probability of each of the {classes.count} classes, in the order above (softmax).")]
    return "\n".join(lines) + "\n"


def output_line(cfg: DictConfig) -> str:
    """Returns what the model's outputs mean, for the card: a boundary map, or affinities at their offsets."""
    target = cfg.get("target")
    if target is None or target.kind != "affinities":
        return "one probability map (the boundary map, or one map per class)"
    offsets = ", ".join(f"[{dy}, {dx}]" for dy, dx in target.offsets)
    return (f"affinities, one sigmoid per offset ({offsets}): the probability that a pixel and its neighbour there "
            "are the same object; the scores read the cell map its direct neighbours imply")
