#!/usr/bin/python3
"""Times the engine (mrcnn-bench) against torchvision's Mask R-CNN run
eagerly by torch (bench/torchvision_bench.py) and prints a Markdown report.

  compare.py [--bench PATH] [--device cuda|cpu] [--backend auto|cpu|cuda]
             [--shapes LIST] [--precisions LIST] [--batches LIST] [--cases LIST]
             [--size WxH] [--iterations N] [--warmup N] [--jsonl PATH]

For every shape x precision x batch x case: one torch run and one engine
run, each in its own process (so each peak of device memory is its own).
torchvision-r50: the engine runs the weights torch times, exported by
torchvision_bench.py --export.  matterport-r101: the engine runs its own
random --shape matterport-r101 and torch its eager equivalent (see
torchvision_bench.py); both have the same arithmetic cost.  Then one
mrcnn-bench --stages run per shape at batch 1 (fp16 where it is among the
precisions) gives the engine's time per stage.  See docs/PERFORMANCE.md.
Exits 1 when any run failed (the table shows which, the causes follow it).
"""

import argparse
import datetime
import json
import math
import os
import pathlib
import platform
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent
TORCH_BENCH = REPO / "bench" / "torchvision_bench.py"
SHAPES = ["torchvision-r50", "matterport-r101"]
STAGES = ["preprocess", "backbone", "proposals", "detect", "masks", "paste"]


def choices(allowed, convert=str):
    """argparse type for a comma-separated subset of allowed."""
    def parse(text):
        values = [convert(item) for item in text.split(",") if item]
        unknown = [v for v in values if v not in allowed]
        if unknown or not values:
            raise argparse.ArgumentTypeError(
                f"give a comma-separated list of {', '.join(map(str, allowed))}")
        return values
    return parse


def positive_batches(text):
    values = [int(item) for item in text.split(",") if item]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("give a comma-separated list of batch sizes >= 1")
    return values


def run_json(command):
    """Runs a benchmark; its JSON line, or the reason it gave none."""
    result = subprocess.run(command, capture_output=True, text=True)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        reason = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        return None, reason
    return json.loads(lines[-1]), None


def environment(device):
    """Lines naming the date, the machine and the software versions."""
    import torch
    import torchvision
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"- Date: {now}"]
    if device == "cuda" and torch.cuda.is_available():
        try:
            driver = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True).stdout.strip().splitlines()[0]
        except (OSError, IndexError):
            driver = "unknown (no nvidia-smi)"
        lines += [f"- GPU: {torch.cuda.get_device_name(0)}, driver {driver}",
                  f"- CUDA {torch.version.cuda} (torch's), cuDNN {torch.backends.cudnn.version()}"]
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines += [f"- CPU: {cpu}, {os.cpu_count()} logical CPUs visible, "
              f"torch CPU threads: {torch.get_num_threads()}",
              f"- torch {torch.__version__}, torchvision {torchvision.__version__}, "
              f"Python {platform.python_version()}"]
    return lines


def field(result, key):
    """A figure of a benchmark's JSON line ("p50": its median latency), or
    None for a failed run."""
    if result is None:
        return None
    return result["latency_ms"]["p50"] if key == "p50" else result[key]


def cell(value, fmt=None):
    """A table entry: fmt, or by default at least three significant digits
    and no exponent (CPU runs take seconds, GPU runs milliseconds)."""
    if value is None:
        return "failed"
    if fmt is None:
        fmt = f".{max(0, 2 - math.floor(math.log10(abs(value))))}f" if value else ".0f"
    return format(value, fmt)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", default=str(REPO / "build" / "tools" / "mrcnn-bench"),
                        metavar="PATH", help="mrcnn-bench (default: build/tools/mrcnn-bench)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="where torch runs (default cuda)")
    parser.add_argument("--backend", choices=["auto", "cpu", "cuda"],
                        help="the engine's backend (default: that of --device)")
    parser.add_argument("--shapes", type=choices(SHAPES), default=SHAPES, metavar="LIST",
                        help="comma-separated (default: torchvision-r50,matterport-r101)")
    parser.add_argument("--precisions", type=choices(["fp32", "fp16"]), default=["fp32", "fp16"],
                        metavar="LIST", help="comma-separated (default: fp32,fp16)")
    parser.add_argument("--batches", type=positive_batches, default=[1, 8], metavar="LIST",
                        help="comma-separated frames per call (default: 1,8)")
    parser.add_argument("--cases", type=choices(["typical", "worst"]), default=["typical", "worst"],
                        metavar="LIST", help="comma-separated: typical (the models' thresholds), "
                        "worst (--worst-case) (default: both)")
    parser.add_argument("--size", metavar="WxH",
                        help="frame size (default: each shape's own, 1216x800 and 1024x1024)")
    parser.add_argument("--iterations", type=int, default=20, metavar="N",
                        help="timed calls per run (default 20)")
    parser.add_argument("--warmup", type=int, default=3, metavar="N",
                        help="untimed calls first (default 3)")
    parser.add_argument("--jsonl", metavar="PATH",
                        help="also append every run's JSON line to PATH (for bench/results/)")
    args = parser.parse_args()
    backend = args.backend or args.device
    if not os.access(args.bench, os.X_OK):
        sys.exit(f"compare.py: {args.bench}: no mrcnn-bench there; build it first "
                 "(ninja -C build) or give --bench PATH")

    print("# Mask R-CNN: engine against torchvision eager\n")
    print("\n".join(environment(args.device)))
    frame = args.size or "each shape's default"
    print(f"- Engine backend: {backend}; torch device: {args.device}; frame: {frame}; "
          f"{args.iterations} timed calls after {args.warmup} warm-up calls\n")

    common = ["--iterations", str(args.iterations), "--warmup", str(args.warmup)]
    if args.size:
        common += ["--size", args.size]
    failures = []
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        exported = pathlib.Path(scratch) / "torchvision-r50.safetensors"
        engine_model = {"torchvision-r50": ["--model", str(exported)],
                        "matterport-r101": ["--shape", "matterport-r101"]}

        def measure(what, command):
            found, reason = run_json(command)
            if reason:
                failures.append(f"{what}: {reason}")
            elif args.jsonl:
                with open(args.jsonl, "a", encoding="utf-8") as out:
                    out.write(json.dumps(found) + "\n")
            return found

        for shape in args.shapes:
            for precision in args.precisions:
                for batch in args.batches:
                    for case in args.cases:
                        what = f"{shape} {precision} batch {batch} {case}"
                        options = common + ["--precision", precision, "--batch", str(batch)]
                        if case == "worst":
                            options.append("--worst-case")
                        torch_command = [sys.executable, str(TORCH_BENCH), "--shape", shape,
                                         "--device", args.device] + options
                        # the first torch run of R50 also writes the weights the engine runs
                        if shape == "torchvision-r50" and not exported.exists():
                            torch_command += ["--export", str(exported)]
                        torch_result = measure(f"torch {what}", torch_command)
                        engine_result = measure(f"engine {what}", [
                            args.bench, "--backend", backend] + engine_model[shape] + options)
                        rows.append((shape, precision, batch, case, engine_result, torch_result))
                        print(f"measured {what}", file=sys.stderr, flush=True)

        print("| shape | precision | batch | case | engine p50 ms | engine fps | torch p50 ms "
              "| torch fps | speed-up | engine MiB | torch MiB | detections engine / torch |")
        print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for shape, precision, batch, case, engine, torch_ in rows:
            e50, t50 = field(engine, "p50"), field(torch_, "p50")
            speedup = t50 / e50 if e50 and t50 else None
            print(f"| {shape} | {precision} | {batch} | {case} | {cell(e50)} "
                  f"| {cell(field(engine, 'frames_per_second'))} | {cell(t50)} "
                  f"| {cell(field(torch_, 'frames_per_second'))} "
                  f"| {cell(speedup, '.2f')}{'x' if speedup else ''} "
                  f"| {cell(field(engine, 'device_memory_mib'), '.0f')} "
                  f"| {cell(field(torch_, 'device_memory_mib'), '.0f')} "
                  f"| {cell(field(engine, 'detections_per_frame'), '.1f')} / "
                  f"{cell(field(torch_, 'detections_per_frame'), '.1f')} |")

        precision = "fp16" if "fp16" in args.precisions else args.precisions[0]
        print(f"\nEngine time per stage, ms ({precision}, batch 1, typical case; the device "
              "is drained between stages):\n")
        print("| shape | " + " | ".join(STAGES) + " | sum | p50 |")
        print("|---|" + "---:|" * (len(STAGES) + 2))
        for shape in args.shapes:
            if shape == "torchvision-r50" and not exported.exists():
                continue  # its export failed, reported above
            staged = measure(f"engine {shape} {precision} stages", [
                args.bench, "--backend", backend, "--precision", precision, "--stages"]
                + engine_model[shape] + common)
            if staged:
                stages = [staged["stages_ms"][name] for name in STAGES]
                print(f"| {shape} | " + " | ".join(cell(ms) for ms in stages)
                      + f" | {cell(sum(stages))} | {cell(staged['latency_ms']['p50'])} |")

    if failures:
        print("\nFailed runs:\n")
        print("\n".join(f"- {failure}" for failure in failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
