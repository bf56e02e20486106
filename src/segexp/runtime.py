"""Process-level settings for a training job: seeds, determinism, precision, signals."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import Iterator


BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Returns True when the CPU computes bfloat16 natively (elsewhere it is emulated and slower)."""
    try:
        flags = cpuinfo.read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in BF16_FLAGS)


def resolve_precision(precision: str) -> str:
    """Returns the Keras dtype policy name; `auto` means bf16 only on a GPU or a bf16-capable CPU."""
    if precision != "auto":
        return precision
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    return "mixed_bfloat16" if cpu_has_bf16() else "float32"


def device_description(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """Returns e.g. "GPU x2" or "CPU AMD EPYC (2 cores)": where this run computes."""
    import os

    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return f"GPU x{len(gpus)}"
    try:
        model = next(line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        model = "unknown"
    return f"CPU {model} ({os.cpu_count()} cores)"


def configure(seed: int, deterministic: bool, precision: str) -> str:
    """Seeds Python, numpy and TF, sets the dtype policy; returns the policy name in force."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    policy = resolve_precision(precision)
    keras.mixed_precision.set_global_policy(policy)
    return policy


def distribution_strategy(name: str):
    """Returns the tf.distribute strategy: `default` (one device), `mirrored` (all local GPUs, or the
    logical CPUs), `multi_worker_mirrored` (workers from $TF_CONFIG)."""
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or \
                  [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.MultiWorkerMirroredStrategy()  # schema.Strategy allows no other value


def is_chief(strategy: str, tf_config: str | None = None) -> bool:
    """True unless this process is a non-chief worker of `multi_worker_mirrored`: the task named "chief" in
    $TF_CONFIG, else worker 0, is the one that tracks the run (read without importing TensorFlow)."""
    import json
    import os

    if strategy != "multi_worker_mirrored":
        return True
    config = json.loads((tf_config if tf_config is not None else os.environ.get("TF_CONFIG", "")) or "{}")
    task = config.get("task", {})
    if "chief" in config.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("type", "worker") == "worker" and int(task.get("index", 0)) == 0


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt, so a kill is handled like Ctrl-C."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread (e.g. a threaded launcher): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
