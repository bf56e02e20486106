"""`trainer.precision=auto` and `trainer.jit_compile=auto`: decided by timing, not by CPU flags.

bf16 and XLA help on some CPUs and halve the speed on others that advertise the same flags (BENCHMARKS
B2/B2b), so `auto` times a few real training steps of the configured model at the configured crop
and batch in each candidate setting and keeps the fastest. The answer is cached per machine
(CPU model and flags, GPUs, TensorFlow version) and per model/crop/batch in a JSON file, so the
probe (tens of seconds) is paid once, not per run.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

WARMUP_STEPS = 3  # tracing (and XLA compilation) happens here
TIMED_STEPS = 6
MARGIN = 1.10  # a switch must beat float32 without XLA by 10%: bf16 costs precision, XLA compile time


@dataclass(frozen=True)
class SpeedChoice:
    """What auto chose, and why: `source` is "fixed" (no auto in the config), "probe", "cache" or a reason
    the probe did not run; `images_per_s` holds each candidate's measured speed (None where it failed)."""

    precision: str
    jit_compile: bool
    source: str
    images_per_s: dict[str, float | None] = field(default_factory=dict)

    def tags(self) -> dict[str, str]:
        speeds = ", ".join(f"{name} {'failed' if v is None else f'{v:.2f}'}" for name, v in self.images_per_s.items())
        return {"precision": self.precision, "jit_compile": str(self.jit_compile).lower(),
                "speed_choice": self.source + (f" (images/s: {speeds})" if speeds else "")}


def candidate_name(precision: str, jit: bool) -> str:
    return precision + ("+xla" if jit else "")


def candidates(precision: str, jit_compile: bool | str, gpu: bool) -> list[tuple[str, bool]]:
    """Returns the (precision, jit) settings to time; float32 without XLA, the baseline, comes first
    whenever the config leaves it open."""
    precisions = (["float32", "mixed_bfloat16", *(["mixed_float16"] if gpu else [])]
                  if precision == "auto" else [precision])
    jits = [False, True] if jit_compile == "auto" else [bool(jit_compile)]
    return [(p, j) for p in precisions for j in jits]


def machine_fingerprint() -> dict[str, str]:
    """Returns what makes one machine's speeds differ from another's, read without TensorFlow."""
    from segexp.training.runtime import cpu_facts

    model, flags = cpu_facts()
    return {"cpu": model if model != "unknown" else platform.processor() or model,
            "cpu_flags": hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:16],
            "cores": str(os.cpu_count())}


def cache_key(fingerprint: dict[str, str], workload: dict) -> str:
    text = json.dumps({"machine": fingerprint, "workload": workload}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def read_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # missing or damaged: probe again and rewrite it
        return {}


def write_cache(path: Path, key: str, entry: dict) -> None:
    """Adds one entry, atomically (two jobs of a parallel sweep may probe at once: the last writer wins)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = read_cache(path)
    entries[key] = entry
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(entries, indent=1, sort_keys=True))
    tmp.replace(path)


def choose(speeds: dict[str, float | None], settings: Sequence[tuple[str, bool]]) -> tuple[str, bool]:
    """Returns the fastest setting; one that differs from the first (the baseline) only if it is MARGIN
    times as fast. A setting that failed to run is never chosen."""
    baseline = settings[0]
    best = max((s for s in settings if speeds.get(candidate_name(*s))), key=lambda s: speeds[candidate_name(*s)],
               default=baseline)
    base_speed = speeds.get(candidate_name(*baseline))
    if best != baseline and base_speed and speeds[candidate_name(*best)] < MARGIN * base_speed:
        return baseline
    return best


def time_setting(build: Callable[[bool], object], batch: tuple, precision: str, jit: bool) -> float | None:
    """Returns training images/s of the model `build(jit)` makes under `precision`, or None if it fails
    (e.g. a dtype with no kernel here)."""
    import keras

    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy(precision)
    try:
        model = build(jit)
        for _ in range(WARMUP_STEPS):
            model.train_on_batch(*batch)
        start = time.perf_counter()
        for _ in range(TIMED_STEPS):
            model.train_on_batch(*batch)
        return TIMED_STEPS * len(batch[0]) / (time.perf_counter() - start)
    except Exception:  # noqa: BLE001 - any failure just rules the setting out
        return None
    finally:
        keras.backend.clear_session()
        keras.mixed_precision.set_global_policy("float32")


def resolve(precision: str, jit_compile: bool | str, build: Callable[[bool], object], batch: tuple,
            workload: dict, cache: Path | None, multi_worker: bool = False,
            log: Callable[[str], None] = print) -> SpeedChoice:
    """Returns the precision and XLA setting to train with. `build(jit)` returns the compiled model,
    `batch` is one (inputs, targets) training batch, `workload` names what is timed (for the cache key)."""
    if precision != "auto" and jit_compile != "auto":
        return SpeedChoice(precision, bool(jit_compile), "fixed")
    if multi_worker:  # workers probing apart could pick different settings: stay on the safe one
        return SpeedChoice("float32" if precision == "auto" else precision,
                           False if jit_compile == "auto" else bool(jit_compile), "not probed: multi-worker")
    import tensorflow as tf

    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    settings = candidates(precision, jit_compile, bool(gpus))
    fingerprint = {**machine_fingerprint(), "gpus": ",".join(gpus), "tensorflow": tf.__version__}
    key = cache_key(fingerprint, {**workload, "settings": settings})
    cached = read_cache(cache).get(key) if cache else None
    if cached:
        return SpeedChoice(cached["precision"], cached["jit_compile"], f"cache {cache}", cached["images_per_s"])
    where = f"cached in {cache}" if cache else "not cached"
    log(f"timing {', '.join(candidate_name(*s) for s in settings)} for precision/jit_compile=auto ({where})")
    speeds = {candidate_name(*s): time_setting(build, batch, *s) for s in settings}
    chosen = choose(speeds, settings)
    result = SpeedChoice(chosen[0], chosen[1], "probe", speeds)
    if cache:
        write_cache(cache, key, {**asdict(result), "machine": fingerprint, "workload": workload,
                                 "probed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return result
