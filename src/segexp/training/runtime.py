"""Process-level settings for a training job: seeds, determinism, precision, signals."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import Iterator

BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_facts(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, set[str]]:
    """Returns (model name, flags) of the first CPU listed in cpuinfo; ("unknown", empty) where it is unreadable."""
    model, flags = "unknown", set()
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return model, flags
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown":
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Returns True when the CPU advertises native bfloat16 (elsewhere it is emulated and slower). Only
    benchmarks use it, to skip bf16 arms; a flag does not say bf16 is faster (trainer.precision=auto
    measures that: speed_probe)."""
    return bool(cpu_facts(cpuinfo)[1] & set(BF16_FLAGS))


def device_description(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """Returns e.g. "GPU x2" or "CPU AMD EPYC (2 cores)": where this run computes."""
    import os

    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return f"GPU x{len(gpus)}"
    return f"CPU {cpu_facts(cpuinfo)[0]} ({os.cpu_count()} cores)"


def configure(seed: int, deterministic: bool, precision: str) -> str:
    """Seeds Python, numpy and TF, sets the dtype policy `precision` (a Keras policy name, `auto` already
    resolved by speed_probe); returns the policy name in force."""
    import keras

    keras.utils.set_random_seed(seed)
    set_op_determinism(deterministic)
    keras.mixed_precision.set_global_policy(precision)
    return keras.mixed_precision.global_policy().name


def set_op_determinism(enabled: bool) -> None:
    """Turns TensorFlow's deterministic ops on or off for this process, so a run never inherits the setting of an
    earlier one (the next job of an in-process sweep, a test). The public API only turns them on; the switch off
    is tensorflow.python.framework.config's (TF >= 2.9), used where it exists."""
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    if enabled:
        tf.config.experimental.enable_op_determinism()
    elif getattr(tf_config, "is_op_determinism_enabled", lambda: False)():
        tf_config.disable_op_determinism()


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


def prepare_multi_worker_fit(model) -> None:
    """Keras 3 cannot start fit() under MultiWorkerMirroredStrategy (keras-team/keras#20585): before the
    first step it reduces a distributed input batch to build the model's state, which the collective ops
    refuse ("Attempt to convert a value (PerReplica ...)"). The state is built before fit from the stream's
    element spec (build.build_training_state, as for every strategy), so that reduction is skipped."""
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    # and each step "mean"-reduces its scalar logs along axis 0 across workers, which fails: each worker keeps
    # its own value instead, so the chief logs the training metrics of its own share of the batches (the
    # weights still follow the gradients all-reduced over every worker; selection scores are whole-slice)
    from keras.src.backend.tensorflow import trainer

    reduce = trainer.reduce_per_replica
    if not getattr(reduce, "segexp_patched", False):
        def first_of_synchronized(values, strategy, reduction):
            return reduce(values, strategy, "first" if reduction in ("auto", "mean") else reduction)

        first_of_synchronized.segexp_patched = True
        trainer.reduce_per_replica = first_of_synchronized


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
def float32_afterwards() -> Iterator[None]:
    """Puts Keras' global dtype policy back to float32 and TensorFlow's ops back to their default (not forced
    deterministic) when the block ends: later models in this process (the next job of an in-process sweep, a
    test) must not inherit one run's bf16 or determinism."""
    try:
        yield
    finally:
        import keras

        keras.mixed_precision.set_global_policy("float32")
        set_op_determinism(False)


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
