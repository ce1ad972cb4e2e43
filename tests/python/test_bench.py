#!/usr/bin/python3
"""Checks mrcnn-bench as a user reads it, on a small model so it runs in
seconds:

  test_bench.py --bench PATH

- the output is one JSON line with the run's settings; latency percentiles
  are positive and ordered p50 <= p90 <= p99; frames per second agree with
  the batch and the latencies;
- --worst-case gives exactly 100 detections per frame;
- --stages gives the six stages, in order, with times >= 0 that add up to
  no more than a call;
- bad input (unknown shape, too small a size, both --model and --shape,
  --backend cuda without a GPU or without a CUDA build) gives exit status 1,
  no JSON and a message naming the cause.

The model is the narrow torchvision model (tests/python/models.py) at
min_size = max_size = 128, with random weights: at --worst-case it still
has more than 100 candidates (score threshold 0), and the cost of a call
does not depend on the weights.  Exits 77 (skipped) where torch,
torchvision or safetensors cannot be imported.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

try:
    import torch
    import torchvision  # noqa: F401
    import safetensors  # noqa: F401

    import harness
    import models
except ImportError as missing:
    print(f"skipped: {missing}")
    sys.exit(77)

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tools"))
import export_torchvision  # noqa: E402

STAGES = ["preprocess", "backbone", "proposals", "detect", "masks", "paste"]
SIZE = "128x128"
ITERATIONS = 10


def run(bench, args):
    return subprocess.run([bench] + args, capture_output=True, text=True, timeout=120)


def run_json(checks, bench, name, args):
    """The parsed JSON line of a run that must succeed, or None."""
    result = run(bench, args)
    lines = result.stdout.splitlines()
    ok = result.returncode == 0 and len(lines) == 1
    checks.check(f"{name}: exit 0 and one line", ok,
                 f"exit {result.returncode}, {len(lines)} lines, stderr {result.stderr.strip()!r}")
    if not ok:
        return None
    try:
        return json.loads(lines[0])
    except json.JSONDecodeError as error:
        checks.check(f"{name}: the line is JSON", False, f"{error}: {lines[0]!r}")
        return None


def check_timing(checks, name, found, batch):
    latency = found["latency_ms"]
    p50, p90, p99 = latency["p50"], latency["p90"], latency["p99"]
    checks.check(f"{name}: 0 < p50 <= p90 <= p99", 0 < p50 <= p90 <= p99, latency)
    # The timed stretch holds every call, and little else: fps is at least
    # batch / slowest call (p99 is the slowest of fewer than 100 calls) and
    # at most batch / mean call, the mean being at least (calls at or above
    # the median) / calls x p50.  The 5 % covers the rounding of the figures
    # and the loop's own time.
    at_or_above_median = ITERATIONS - (ITERATIONS + 1) // 2 + 1
    low = batch * 1000 / p99 / 1.05
    high = batch * 1000 / p50 * ITERATIONS / at_or_above_median * 1.05
    fps = found["frames_per_second"]
    checks.check(f"{name}: frames per second fits batch {batch} and the latencies",
                 low <= fps <= high, f"{low:.1f} <= {fps} <= {high:.1f}")


def check_error(checks, name, result, words):
    message = result.stderr.strip()
    checks.check(f"{name}: exit 1, no output, message names {words}",
                 result.returncode == 1 and not result.stdout
                 and all(word in message for word in words) and len(message.splitlines()) == 1,
                 f"exit {result.returncode}, stdout {result.stdout!r}, stderr {message!r}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", required=True, help="path of mrcnn-bench")
    args = parser.parse_args()
    bench = args.bench
    checks = harness.Checks()

    with tempfile.TemporaryDirectory() as scratch:
        model_path = str(pathlib.Path(scratch) / "narrow.safetensors")
        torch.manual_seed(0)
        export_torchvision.export(models.build_narrow(min_size=128, max_size=128).eval(), model_path)
        model = ["--model", model_path, "--size", SIZE]
        small = model + ["--backend", "cpu"]

        found = run_json(checks, bench, "batch 2", small + [
            "--batch", "2", "--iterations", str(ITERATIONS), "--warmup", "1"])
        if found:
            settings = {key: found.get(key) for key in
                        ("model", "backend", "precision", "width", "height", "batch",
                         "iterations", "worst_case")}
            checks.check("batch 2: the line echoes the run's settings", settings == {
                "model": model_path, "backend": "cpu", "precision": "fp32", "width": 128,
                "height": 128, "batch": 2, "iterations": ITERATIONS, "worst_case": False}, settings)
            check_timing(checks, "batch 2", found, 2)
            checks.check("batch 2: no device memory on the CPU", found["device_memory_mib"] == 0,
                         found["device_memory_mib"])
            checks.check("batch 2: at most 100 detections per frame",
                         0 <= found["detections_per_frame"] <= 100, found["detections_per_frame"])

        found = run_json(checks, bench, "worst case", small + [
            "--worst-case", "--iterations", "2", "--warmup", "0"])
        if found:
            checks.check("worst case: 100 detections per frame",
                         found["detections_per_frame"] == 100 and found["worst_case"] is True,
                         found["detections_per_frame"])

        found = run_json(checks, bench, "stages", small + [
            "--stages", "--iterations", str(ITERATIONS), "--warmup", "1"])
        if found:
            check_timing(checks, "stages", found, 1)
            stages = found.get("stages_ms", {})
            checks.check("stages: the six stages in order, each >= 0",
                         list(stages) == STAGES and min(stages.values()) >= 0
                         and stages["backbone"] > 0, stages)
            # each figure is a mean over calls of one frame's stage times
            checks.check("stages: their sum is within the slowest call",
                         sum(stages.values()) <= found["latency_ms"]["p99"] * 1.01 + 0.01,
                         f"{sum(stages.values()):.3f} ms against {found['latency_ms']['p99']} ms")

        check_error(checks, "unknown shape", run(bench, ["--shape", "resnet9"]),
                    ["resnet9", "torchvision-r50", "matterport-r101"])
        check_error(checks, "size 10x10", run(bench, model[:2] + ["--size", "10x10"]), ["--size"])
        check_error(checks, "--model and --shape",
                    run(bench, model[:2] + ["--shape", "torchvision-r50"]), ["--model", "--shape"])
        result = run(bench, model + ["--backend", "cuda", "--iterations", "1", "--warmup", "0"])
        if result.returncode == 0:
            found = json.loads(result.stdout)
            checks.check("--backend cuda on a GPU: runs on it", found["backend"] == "cuda", found)
        else:
            check_error(checks, "--backend cuda without a GPU or a CUDA build", result, ["CUDA"])
    checks.finish()


if __name__ == "__main__":
    main()
