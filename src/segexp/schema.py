"""Typed schemas for every config group, registered in Hydra's ConfigStore.

Hydra merges the YAML files in conf/ into these dataclasses, so a misspelled key or a
value of the wrong type fails at composition time, before TensorFlow is even imported.
Value ranges (lr > 0, epochs >= 1, ...) are checked by `validate`, also before any work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from segexp.errors import ConfigError

UPSAMPLING = ("transpose", "bilinear", "upsample_conv")
SCHEDULES = ("constant", "cosine", "plateau", "warmup_cosine")
OPTIMIZERS = ("adam", "adamw", "sgd")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16", "auto")
NORMALIZATIONS = ("dtype", "percentile")
STRATEGIES = ("default", "mirrored", "multi_worker_mirrored")
CHECKPOINTS = ("best", "last")


@dataclass
class ModelConfig:
    _target_: str = "segexp.models.unet.build_unet"
    depth: int = 4
    base_filters: int = 16
    batch_norm: bool = True
    dropout: float = 0.0
    dropout_levels: int = 2  # dropout applies to this many deepest levels
    upsampling: str = "transpose"
    activation: str = "relu"
    head_filters: int = 0  # >0: an extra 3x3 conv before the 1x1 classifier (the seed has 2)


@dataclass
class LossFnConfig:
    _target_: str = "segexp.losses.SegmentationLoss"
    bce: float = 1.0
    dice: float = 0.0
    focal_gamma: float = 0.0
    foreground: int = 0  # mask value the Dice term is computed on (0 = membrane)


@dataclass
class WeightMapConfig:
    """U-Net paper border weights: w = w_class + w0 * exp(-(d1 + d2)^2 / (2 sigma^2))."""

    w0: float = 10.0
    sigma: float = 5.0
    class_balance: bool = True


@dataclass
class LossConfig:
    fn: LossFnConfig = field(default_factory=LossFnConfig)
    weight_map: Optional[WeightMapConfig] = None


@dataclass
class OptimizerConfig:
    _target_: str = "segexp.optim.build_optimizer"
    name: str = "adam"
    lr: float = 1e-4
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: str = "constant"
    warmup_epochs: int = 0
    min_lr_ratio: float = 0.01  # cosine decays to lr * min_lr_ratio
    plateau_patience: int = 3
    plateau_factor: float = 0.5


@dataclass
class AugConfig:
    # albumentations transforms, each a {_target_: albumentations.X, ...} node
    transforms: List[Any] = field(default_factory=list)


@dataclass
class DataConfig:
    _target_: str = MISSING
    name: str = MISSING
    channels: Optional[int] = None  # None: inferred from the first image
    normalize: str = "dtype"
    foreground: int = 0  # mask value that Dice/IoU score (0 = membrane in ISBI)
    mask_threshold: Optional[int] = None  # binarize non-binary masks at this value
    resize: Optional[List[int]] = None  # [height, width] to resize every slice to at load time


@dataclass
class Isbi2012DataConfig(DataConfig):
    _target_: str = "segexp.data.load_isbi2012"
    name: str = "isbi2012"
    root: Optional[str] = None
    verify: bool = True


@dataclass
class FolderDataConfig(DataConfig):
    _target_: str = "segexp.data.load_folder"
    name: str = "folder"
    images: str = MISSING
    masks: str = MISSING
    foreground: int = 1


@dataclass
class SyntheticDataConfig(DataConfig):
    _target_: str = "segexp.data.make_synthetic"
    name: str = "synthetic"
    count: int = 12
    size: int = 128
    cells: int = 40
    seed: int = 0


@dataclass
class SplitConfig:
    """Three disjoint roles for the labelled slices, by position in sorted order (negative from the end).

    `select` is all that any choice may look at (best checkpoint, early stopping, plateau schedule,
    sweep objective); `report` is scored once, at the end, on the chosen checkpoint; training uses
    every other slice. Contiguous blocks, since adjacent EM sections are correlated.
    """

    select: List[int] = MISSING
    report: List[int] = MISSING


@dataclass
class TrainerConfig:
    epochs: int = 10
    steps_per_epoch: int = 50
    batch_size: int = 4
    crop_size: int = 256
    seed: int = 42
    deterministic: bool = False
    precision: str = "float32"
    checkpoint: str = "best"  # best: by `monitor` on the selection slices; last: the final epoch
    monitor: str = "select_v_rand"
    monitor_mode: str = "max"
    early_stopping_patience: int = 0  # 0 = off
    max_minutes: Optional[float] = None  # wall-clock budget: stop training (mid-epoch) once it is spent
    preview_slices: int = 2  # selection slices drawn into the per-epoch mask image
    topology_metrics: bool = True  # V_rand / V_info on the selection slices every epoch
    aug_workers: int = -1  # tf.data parallel calls; -1 = AUTOTUNE
    jit_compile: bool = False
    strategy: str = "default"  # tf.distribute: default | mirrored | multi_worker_mirrored
    verbose: int = 1


@dataclass
class TrackingConfig:
    _target_: str = "segexp.tracking.open_tracker"
    backend: str = "mlflow"  # mlflow | none
    uri: Optional[str] = None  # None: sqlite:///<cwd>/outputs/mlflow.db (or $MLFLOW_TRACKING_URI)
    experiment_name: str = "segexp"
    log_model: bool = True


@dataclass
class TrainConfig:
    model: ModelConfig = MISSING
    loss: LossConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    aug: AugConfig = MISSING
    data: Any = MISSING
    split: SplitConfig = MISSING
    trainer: TrainerConfig = MISSING
    tracking: TrackingConfig = MISSING
    objective: str = "select_v_rand"  # metric the Hydra entry point returns to sweepers: a selection score
    run_name: Optional[str] = None  # None: made from the command-line overrides
    resume: Optional[str] = None  # a run directory or MLflow run id to continue


@dataclass
class InferenceConfig:
    tile: int = 768  # largest tile: images up to tile - overlap go through in one pass
    overlap: int = 32
    batch_size: int = 4
    tta: bool = False  # average over the 8 flips/rotations
    threshold: float = 0.5
    # [height, width] the model sees; the probabilities go back to each image's own size. null: the
    # training run's data.resize when the checkpoint's run directory records one, else native size
    resize: Optional[List[int]] = None


@dataclass
class PredictConfig:
    ckpt: str = MISSING  # model.keras, a run directory, or an MLflow run id
    input: str = MISSING  # an image file or a directory of images
    output: str = MISSING
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    normalize: str = "dtype"
    save_mask: bool = True
    save_overlay: bool = False


@dataclass
class EvaluateConfig:
    ckpt: str = MISSING
    data: Any = None  # None: the data the checkpoint's run trained on
    tracking: TrackingConfig = MISSING
    # slices to score, by position (negative from the end); null: the training run's report slices
    # when `data` holds them, else every slice of `data` the checkpoint never saw
    slices: Optional[List[int]] = None
    allow_seen: bool = False  # score slices the checkpoint trained or was selected on (keys eval_seen_*)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    log_images: int = 5  # prediction panels logged to MLflow


def register_configs() -> None:
    """Register the schemas so YAML files can extend them by name."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="predict_schema", node=PredictConfig)
    cs.store(name="evaluate_schema", node=EvaluateConfig)
    cs.store(group="data", name="isbi2012_schema", node=Isbi2012DataConfig)
    cs.store(group="data", name="folder_schema", node=FolderDataConfig)
    cs.store(group="data", name="synthetic_schema", node=SyntheticDataConfig)


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def validate(cfg: Any) -> None:
    """Raise ConfigError for the first out-of-range value; returns None when all are fine."""
    m, t, o = cfg.model, cfg.trainer, cfg.optimizer
    _check(m.depth >= 1, "model.depth", f"must be >= 1, got {m.depth}")
    _check(m.base_filters >= 1, "model.base_filters", f"must be >= 1, got {m.base_filters}")
    _check(0 <= m.dropout < 1, "model.dropout", f"must be in [0, 1), got {m.dropout}")
    _check(m.upsampling in UPSAMPLING, "model.upsampling", f"must be one of {UPSAMPLING}, got {m.upsampling!r}")
    _check(o.lr > 0, "optimizer.lr", f"must be > 0, got {o.lr}")
    _check(o.name in OPTIMIZERS, "optimizer.name", f"must be one of {OPTIMIZERS}, got {o.name!r}")
    _check(o.schedule in SCHEDULES, "optimizer.schedule", f"must be one of {SCHEDULES}, got {o.schedule!r}")
    _check(t.epochs >= 1, "trainer.epochs", f"must be >= 1, got {t.epochs}")
    _check(t.steps_per_epoch >= 1, "trainer.steps_per_epoch", f"must be >= 1, got {t.steps_per_epoch}")
    _check(t.batch_size >= 1, "trainer.batch_size", f"must be >= 1, got {t.batch_size}")
    _check(t.crop_size >= 1, "trainer.crop_size", f"must be >= 1, got {t.crop_size}")
    _check(t.checkpoint in CHECKPOINTS, "trainer.checkpoint", f"must be one of {CHECKPOINTS}, got {t.checkpoint!r}")
    _check(t.checkpoint == "last" or len(cfg.split.select) >= 1, "split.select",
           "is empty, so nothing can choose the best checkpoint; name selection slices or set trainer.checkpoint=last")
    _check(len(cfg.split.select) >= 1 or not (t.early_stopping_patience or o.schedule == "plateau"), "split.select",
           "is empty, but early stopping and the plateau schedule watch the selection slices; name some")
    _check(not str(cfg.objective).startswith("report_"), "objective",
           f"{cfg.objective} would choose on the report slices; use a selection score such as select_v_rand")
    _check(not t.monitor.startswith("report_"), "trainer.monitor",
           f"{t.monitor} would choose on the report slices; monitor a selection score such as select_v_rand")
    _check(t.precision in PRECISIONS, "trainer.precision", f"must be one of {PRECISIONS}, got {t.precision!r}")
    _check(t.topology_metrics or t.monitor not in ("select_v_rand", "select_v_info"), "trainer.monitor",
           f"{t.monitor} needs trainer.topology_metrics=true (or monitor select_dice / select_loss)")
    _check(t.strategy in STRATEGIES, "trainer.strategy", f"must be one of {STRATEGIES}, got {t.strategy!r}")
    _check(t.monitor_mode in ("min", "max"), "trainer.monitor_mode", f"must be min or max, got {t.monitor_mode!r}")
    _check(cfg.tracking.backend in ("mlflow", "none"), "tracking.backend",
           f"must be mlflow or none, got {cfg.tracking.backend!r}")
    _check(cfg.data.normalize in NORMALIZATIONS, "data.normalize",
           f"must be one of {NORMALIZATIONS}, got {cfg.data.normalize!r}")
    _check(cfg.data.channels in (None, 1, 3), "data.channels", f"must be null, 1 or 3, got {cfg.data.channels}")
    _check(cfg.data.foreground in (0, 1), "data.foreground", f"must be 0 or 1, got {cfg.data.foreground}")
    _check(cfg.data.resize is None or (len(cfg.data.resize) == 2 and min(cfg.data.resize) >= 1), "data.resize",
           f"must be null or [height, width] with both >= 1, got {cfg.data.resize}")
