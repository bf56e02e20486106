"""Every benchmark runs in quick mode and writes its JSON and markdown with the expected keys.

Quick numbers are noise (tiny sizes, one repeat on a shared machine): the tests check that
each measurement is there and positive, not its value. The benchmarks run once per session,
in this process (one TensorFlow import); startup only waits on subprocesses, so it runs in a
thread meanwhile.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from bench import (bigimage, compute, epoch_profile, inference, outage, precision, render, run_all, scaling,
                   seed_replica, stages, startup, suite, throughput)

REPO = Path(__file__).resolve().parents[1]

IN_PROCESS = {"throughput": throughput, "compute": compute, "inference": inference, "scaling": scaling,
              "epoch_profile": epoch_profile, "stages": stages}
# the benchmarks that mostly wait on their child processes: each runs in a thread beside the in-process ones
WAITING = (startup, precision, outage, bigimage)
COMMON_KEYS = {"benchmark", "title", "method", "mode", "command", "process_argv", "started_utc", "machine",
               "versions", "settings", "tables", "notes", "wall_seconds", "peak_rss_mb"}


pytestmark = pytest.mark.xdist_group("test_bench_smoke")  # one worker builds the module fixture once


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    """Returns (results dir, {name: parsed JSON}) after running every benchmark with --quick."""
    out = tmp_path_factory.mktemp("bench_results")
    errors: list[BaseException] = []

    def run_quick(module):
        try:
            module.main(["--quick", "--out", str(out)])
        except BaseException as err:  # re-raised in the main thread below
            errors.append(err)

    # each of these waits on child processes, so they overlap each other and the in-process ones
    threads = [threading.Thread(target=run_quick, args=(module,)) for module in WAITING]
    for thread in threads:
        thread.start()
    try:
        for module in IN_PROCESS.values():
            module.main(["--quick", "--out", str(out)])
    finally:
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
    names = [*IN_PROCESS, *(module.NAME for module in WAITING)]
    return out, {name: json.loads((out / f"{name}.json").read_text()) for name in names}


def positive(value) -> bool:
    return isinstance(value, (int, float)) and np.isfinite(value) and value > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", [*IN_PROCESS, "startup", "precision", "outage", "bigimage"])
def test_result_records_machine_versions_command_and_tables(quick_results, name):
    out, results = quick_results
    result = results[name]
    assert COMMON_KEYS <= set(result)
    assert result["benchmark"] == name and result["mode"] == "quick"
    # the file names no folder of this machine: --out as seen from where the benchmark ran ($TMPDIR/...)
    assert result["command"].endswith(f"-m bench.{name} --quick --out {render.relative_path(str(out), os.getcwd())}")
    assert result["cwd"] == "." and str(out) not in (out / f"{name}.json").read_text()
    assert set(result["machine"]["cpu_flags"]) == {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}
    assert positive(result["machine"]["cores"]) and result["machine"]["cpu_model"]
    assert set(result["versions"]) == {"tensorflow", "keras", "albumentations", "numpy"}
    assert result["tables"] and all(table["rows"] for table in result["tables"])
    markdown = (out / f"{name}.md").read_text()
    assert result["title"] in markdown and "|---|" in markdown


@pytest.mark.slow
def test_throughput_has_every_arm_pipeline_and_ratio(quick_results):
    (case,) = quick_results[1]["throughput"]["cases"].values()
    assert set(case["fit"]) == set(throughput.ARMS)
    assert set(case["pipeline"]) == set(throughput.PIPELINES)
    assert {"b/a", "c/a", "b/d"} <= set(case["ratios"])
    assert all(positive(r["median"]) and positive(r["best"]) for r in [*case["fit"].values(), *case["pipeline"].values()])
    assert all(positive(r["median"]) and positive(r["min"]) for r in case["ratios"].values())


@pytest.mark.slow
def test_compute_reports_matmul_flops_and_achieved_fraction(quick_results):
    result = quick_results[1]["compute"]
    assert positive(result["matmul"]["matmul fp32"]["gflops"]["median"])
    assert result["variants"]
    for variant in result["variants"].values():
        assert positive(variant["train_flops"]) and variant["train_flops"] == 3 * variant["forward_flops"]
        assert positive(variant["achieved_gflops"]["median"]) and positive(variant["achieved_over_matmul"]["median"])
    if not any(result["machine"]["cpu_flags"][f] for f in ("avx512_bf16", "amx_bf16")):
        assert any("bf16" in note for note in result["notes"])


@pytest.mark.slow
def test_inference_reports_rates_and_memory_per_arm(quick_results):
    (case,) = quick_results[1]["inference"]["cases"].values()
    assert set(case["arms"]) == {"naive", "tiled", "tiled_tta"}
    for arm in case["arms"].values():
        assert positive(arm["slices_per_s"]["median"]) and positive(arm["ms_per_slice"]["median"])
        assert positive(arm["peak_rss_mb"]["max"])


@pytest.mark.slow
def test_stages_time_every_segmentation_stage_against_the_watershed(quick_results):
    result = quick_results[1]["stages"]
    assert set(result["seconds_per_slice"]) == set(stages.METHODS)
    assert all(positive(s["median"]) for s in result["seconds_per_slice"].values())
    assert result["ratios"]["watershed/watershed"]["median"] == 1.0


@pytest.mark.slow
def test_bigimage_streams_both_sizes_to_zarr_in_their_own_processes(quick_results):
    result = quick_results[1]["bigimage"]
    sizes = {int(size): run for size, run in result["sizes"].items()}
    assert set(sizes) == set(bigimage.QUICK.sizes)
    for size, run in sizes.items():
        assert run["output_shape"] == [size, size]  # the whole map, written by the command to Zarr
        assert positive(run["peak_rss_mb"]) and positive(run["wall_s_per_mpx"]) and positive(run["stream_s_per_mpx"])
        assert run["stream_s"] < run["wall_s"] and run["last_progress"].startswith("predict: 100%")
    large, small = sizes[max(sizes)], sizes[min(sizes)]
    assert result["rss_ratio_large_over_small"] == large["peak_rss_mb"] / small["peak_rss_mb"]


@pytest.mark.slow
def test_scaling_reports_step_times_exponent_and_plot(quick_results):
    out, results = quick_results
    result = results["scaling"]
    assert len(result["configurations"]) >= 2
    assert all(positive(c["seconds_per_step"]["median"]) and positive(c["peak_rss_mb"]["median"])
               for c in result["configurations"].values())
    assert result["exponents"]["time vs pixels"] is not None
    assert (out / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_startup_times_every_command(quick_results):
    commands = quick_results[1]["startup"]["commands"]
    assert {label for label, _ in startup.SEGEXP_COMMANDS} <= set(commands)
    assert all(positive(c["seconds"]["median"]) for c in commands.values())


def test_outage_times_epochs_of_every_arm_and_the_outage_run_leaves_an_upload(quick_results):
    result = quick_results[1]["outage"]
    assert all(positive(s) for arm in ("none", "server", "outage") for run in result["runs"][arm] for s in run["epoch_s"])
    assert all(len(run["epoch_s"]) == 2 for arm in result["runs"].values() for run in arm)  # epochs 2 and 3
    assert [run["left_for_upload"] for run in result["runs"]["outage"]] == [True]
    assert not any(run["left_for_upload"] for run in result["runs"]["server"])
    assert positive(result["ratios"]["server"]["median"]) and positive(result["ratios"]["outage"]["median"])


@pytest.mark.slow
def test_profile_takes_an_epoch_apart(quick_results):
    result = quick_results[1]["epoch_profile"]
    assert all(positive(s) for s in result["epoch_seconds"].values())
    assert 0 < result["model_share_of_step"] < 5
    assert result["topology_hot"] and abs(sum(h["share"] for h in result["topology_hot"])) <= 1.0 + 1e-9


@pytest.mark.slow
def test_precision_compares_bf16_with_float32_or_says_why_not(quick_results):
    result = quick_results[1]["precision"]
    if not any(result["machine"]["cpu_flags"][f] for f in ("avx512_bf16", "amx_bf16")):
        assert "arms" not in result and any("emulate" in note for note in result["notes"])
        return
    assert set(result["arms"]) == set(precision.QUICK.arms) and set(precision.QUICK.arms) <= set(precision.ARMS)
    assert result["arms"]["mixed_bfloat16"]["precision"] == "mixed_bfloat16"
    assert result["arms"]["float32"]["precision"] == "float32"
    assert all(positive(arm["images_per_s"]) and 0 <= arm["scores"]["report_dice"] <= 1 for arm in result["arms"].values())
    assert positive(result["speedup_bf16"]) and set(result["delta_bf16"]) == set(result["arms"]["float32"]["scores"])
    differences = result["tables"][1]["rows"]  # a row per arm against float32
    assert [row[0] for row in differences] == [f"{arm} - float32" for arm in precision.QUICK.arms[1:]]


@pytest.mark.slow
def test_run_all_renders_benchmarks_md_from_the_results(quick_results, tmp_path):
    out, results = quick_results
    target = tmp_path / "BENCHMARKS.md"
    assert run_all.main(["--render-only", "--out", str(out), "--benchmarks-md", str(target)]) == []
    text = target.read_text()
    assert all(result["title"] in text for result in results.values())
    assert results["startup"]["machine"]["cpu_model"] in text
    # every section names its own machine and commit: results may come from different runs
    assert text.count("- CPU: ") == len(results) and text.count(f"at commit {results['startup']['code']}") >= 1
    assert "## Test suite" not in text  # bench.suite has not run in this directory
    suite.main(["--quick", "--out", str(out)])
    run_all.main(["--render-only", "--out", str(out), "--benchmarks-md", str(target)])
    text = target.read_text()
    assert text.index("## Test suite") > text.index(f"## {results['scaling']['title']}")
    assert " passed in " in json.loads((out / "suite.json").read_text())["summary"]


def test_seed_replica_batches_keep_image_and_mask_aligned(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):  # binary images that are their own masks: any misalignment shows up
        block = np.zeros((64, 64), np.uint8)
        top, left = rng.integers(0, 32, 2)
        block[top:top + 24, left:left + 20] = 255
        Image.fromarray(block).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    batches = seed_replica.seed_batches(paths, paths, size=32, batch_size=2, seed=0)
    for _ in range(3):
        x, y = next(batches)
        assert x.shape == y.shape == (2, 32, 32, 1) and x.dtype == y.dtype == np.float32
        assert 0.0 <= x.min() and x.max() <= 1.0 and set(np.unique(y)) <= {0.0, 1.0}
        np.testing.assert_array_equal(y, (x > 0.5).astype(np.float32))


def test_seed_replica_identity_transform_keeps_the_image():
    image = np.random.default_rng(1).random((32, 48, 1)).astype(np.float32)
    identity = seed_replica.RandomTransform(0.0, 0.0, 0.0, 0.0, 1.0, 1.0, flip=False)
    np.testing.assert_allclose(seed_replica.apply_transform(image, identity), image, atol=1e-5)
    flipped = seed_replica.RandomTransform(0.0, 0.0, 0.0, 0.0, 1.0, 1.0, flip=True)
    np.testing.assert_allclose(seed_replica.apply_transform(image, flipped), image[:, ::-1], atol=1e-5)


def test_every_full_mode_compute_variant_composes_and_validates():
    """The full mode's variants are only built on a full run: their overrides are checked here, in seconds."""
    from bench import training
    from segexp.checks import check_train

    for variant in compute.FULL.variants:
        check_train(training.compose(*variant.overrides, f"trainer.crop_size={compute.FULL.crop_size}", "tracking=none"))
