#!/usr/bin/python3
"""This engine against torch eager, ONNX Runtime and OpenVINO on the CPU:
the same weights, the same frame, the same thread count; prints a Markdown
table of the median times with each one's ratio to the engine's, and the
detections each gives against torch's.

  cpu_compare.py [--model r50|narrow] [--bench PATH] [--baseline PATH]
                 [--threads N] [--rounds N] [--iterations N] [--warmup N]
                 [--cases typical,worst] [--venv DIR] [--jsonl PATH]

The network: torchvision's maskrcnn_resnet50_fpn (--model narrow: the
narrow test network, for a quick run) with the calibrated random weights of
tests/python/models.py (seed 0), which find objects in the synthetic frame
(models.synthetic_image, 1216x800, seed 3), exported three ways: safetensors
for the engine (tools/export_torchvision.py), the state_dict for torch, and
ONNX (torch.onnx.export, opset 11) for ONNX Runtime and OpenVINO.  The
worst case sets the box score threshold to 0 and 100 detections a frame
(its own ONNX graph: thresholds are constants there), so that the heads and
the paste run at full load.

Each engine runs in its own process, in turn (interleaved rounds): per
round, a warm-up, then --iterations timed calls from a decoded 8-bit RGB
frame in memory to the results; the figure is the median over rounds of
each round's median.  The engine is mrcnn-bench --image; torch is Debian's
(python3-torch, torch.set_num_threads); ONNX Runtime (intra-op threads) and
OpenVINO (INFERENCE_NUM_THREADS, latency hint) come from PyPI, in a virtual
environment this script makes (--venv).  Their ONNX graph stops at the
28x28 mask probabilities: torchvision's mask paste exports as a Loop that
OpenVINO cannot convert, so both run without it (in their favour: the
engine's and torch's times include the paste at frame size).

--baseline PATH adds another build's mrcnn-bench (an earlier version, say)
as a fifth column, in the same rounds.

Exits 77 (skipped) where the virtual environment cannot be made (no
network), 1 where a run fails or the engine's detections are not torch's
(all of those scoring >= 0.5 matched: a comparison of different results
would mean nothing).
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent
ENGINES = ["engine", "torch", "onnxruntime", "openvino"]
TITLES = {"engine": "this engine", "baseline": "baseline engine", "torch": "torch {} eager",
          "onnxruntime": "ONNX Runtime {}", "openvino": "OpenVINO {}"}
CASES = ["typical", "worst"]
ARCH = {"r50": "maskrcnn_resnet50_fpn", "narrow": "narrow"}
FRAME = (800, 1216, 3)  # height, width, seed
MATCH_IOU = 0.9
COMPARED_SCORE = 0.5
VENV_PACKAGES = ["onnxruntime", "openvino", "pillow", "numpy"]


# ---- roles run in their own processes ---------------------------------------

def load_frame(work):
    """The frame as uint8 HWC RGB, decoded as every engine's runner does."""
    import numpy as np
    from PIL import Image
    return np.asarray(Image.open(work / "frame.png").convert("RGB"))


def timed(call, warmup, iterations):
    import time
    for _ in range(warmup):
        result = call()
    times = []
    for _ in range(iterations):
        started = time.perf_counter()
        result = call()
        times.append((time.perf_counter() - started) * 1000)
    return times, result


def role_prepare(args, work):
    """Calibrated model, frame and the three exported forms (system
    python: needs torch)."""
    sys.path[:0] = [str(REPO / "tests" / "python"), str(REPO / "tools")]
    import torch
    from PIL import Image
    import export_torchvision
    import models
    arch = ARCH[args.model]
    model = models.calibrated_model(arch).eval()
    height, width, seed = FRAME
    Image.fromarray(models.synthetic_image(height, width, seed)).save(work / "frame.png")
    export_torchvision.export(model, work / "model.safetensors")
    torch.save(model.state_dict(), work / "model.pt")
    frame = models.to_tensor(load_frame(work))
    model.transform.postprocess = lambda result, image_sizes, original_sizes: result
    for case in CASES:
        set_case(model, case)
        torch.onnx.export(model, ([frame],), str(work / f"{case}.onnx"), opset_version=11,
                          input_names=["image"], output_names=["boxes", "labels", "scores", "masks"])
    print(json.dumps({"arch": arch}))


def set_case(model, case):
    model.roi_heads.score_thresh = 0.0 if case == "worst" else 0.05
    model.roi_heads.detections_per_img = 100


def detections_json(boxes, scores, labels):
    return [[*map(float, box), float(score), int(label)] for box, score, label in zip(boxes, scores, labels)]


def role_torch(args, work):
    sys.path[:0] = [str(REPO / "tests" / "python")]
    import torch
    import models
    torch.set_num_threads(args.threads)
    model = models.BUILDERS[ARCH[args.model]]()
    model.load_state_dict(torch.load(work / "model.pt"))
    model.eval()
    set_case(model, args.case)
    frame = load_frame(work)

    def call():
        with torch.inference_mode():
            return model([models.to_tensor(frame)])[0]
    times, out = timed(call, args.warmup, args.iterations)
    print(json.dumps({"version": torch.__version__.split("+")[0], "times_ms": times,
                      "detections": detections_json(out["boxes"].numpy(), out["scores"].numpy(),
                                                    out["labels"].numpy())}))


def role_onnx(args, work):
    """ONNX Runtime or OpenVINO (the virtual environment's python)."""
    import numpy as np
    frame = load_frame(work)
    graph = str(work / f"{args.case}.onnx")

    def tensor():
        return np.ascontiguousarray(frame.transpose(2, 0, 1), dtype=np.float32) / np.float32(255)
    if args.role == "onnxruntime":
        import onnxruntime
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        version = onnxruntime.__version__

        def call():
            return session.run(None, {"image": tensor()})
    else:
        import openvino
        core = openvino.Core()
        compiled = core.compile_model(graph, "CPU", {"INFERENCE_NUM_THREADS": args.threads,
                                                     "PERFORMANCE_HINT": "LATENCY",
                                                     "INFERENCE_PRECISION_HINT": "f32"})
        request = compiled.create_infer_request()
        version = openvino.__version__.split("-")[0]

        def call():
            result = request.infer({0: tensor()})
            return [result[output] for output in compiled.outputs]
    times, (boxes, labels, scores, _masks) = timed(call, args.warmup, args.iterations)
    print(json.dumps({"version": version, "times_ms": times,
                      "detections": detections_json(boxes, scores, labels)}))


# ---- the comparison ---------------------------------------------------------

def make_venv(venv):
    """The virtual environment with ONNX Runtime and OpenVINO; its python,
    or None when it cannot be made."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import onnxruntime, openvino, PIL, numpy"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    steps = [["/usr/bin/python3", "-m", "venv", str(venv)],
             [str(python), "-m", "pip", "install", "--quiet", *VENV_PACKAGES]]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"cannot make the virtual environment ({' '.join(step[:4])}): "
                  f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}")
            return None
    return python


def run_json(command, what):
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{what}: exit status {done.returncode}: {' / '.join(tail)}")
    return json.loads(lines[-1])


def engine_run(args, work, case, bench):
    worst = ["--worst-case"] if case == "worst" else []
    out = run_json([bench, "--model", work / "model.safetensors", "--image", work / "frame.png",
                    "--backend", "cpu", "--threads", args.threads, "--iterations", args.iterations,
                    "--warmup", args.warmup, *worst], "mrcnn-bench")
    return out["latency_ms"]["p50"]


def engine_detections(args, work, case):
    detect = pathlib.Path(args.bench).with_name("mrcnn-detect")
    worst = ["--score-threshold", "0", "--max-detections", "100"] if case == "worst" else []
    out = run_json([detect, "--model", work / "model.safetensors", "--backend", "cpu", *worst,
                    work / "frame.png"], "mrcnn-detect")
    return [[*d["box"], d["score"], d["label_id"]] for d in out["detections"]]


def role_command(args, work, role, case, python):
    return [python, __file__, "--role", role, "--work", work, "--model", args.model, "--case", case,
            "--threads", args.threads, "--iterations", args.iterations, "--warmup", args.warmup]


def matched(reference, other):
    """(matched, compared): torch's detections scoring >= COMPARED_SCORE
    matched by label and box IoU >= MATCH_IOU, greedily by score."""
    import numpy as np
    ref = [d for d in reference if d[4] >= COMPARED_SCORE]
    cand = [d for d in other if d[4] >= COMPARED_SCORE]
    taken, count = set(), 0
    for r in ref:
        best, best_iou = None, MATCH_IOU
        for j, c in enumerate(cand):
            if j in taken or c[5] != r[5]:
                continue
            x1, y1 = max(r[0], c[0]), max(r[1], c[1])
            x2, y2 = min(r[2], c[2]), min(r[3], c[3])
            inter = max(x2 - x1, 0) * max(y2 - y1, 0)
            union = (r[2] - r[0]) * (r[3] - r[1]) + (c[2] - c[0]) * (c[3] - c[1]) - inter
            iou = inter / union if union > 0 else 0.0
            if iou >= best_iou:
                best, best_iou = j, iou
        if best is not None:
            taken.add(best)
            count += 1
    return count, max(len(ref), len(cand))


def ratio(engine_ms, ms):
    if ms >= engine_ms:
        return f"{ms / engine_ms:.2f}x slower"
    return f"{engine_ms / ms:.2f}x faster"


def compare(args):
    engines = ENGINES + (["baseline"] if args.baseline else [])
    venv_python = make_venv(pathlib.Path(args.venv))
    if venv_python is None:
        sys.exit(77)
    with tempfile.TemporaryDirectory(prefix="cpu-compare-") as scratch:
        work = pathlib.Path(scratch)
        run_json(["/usr/bin/python3", __file__, "--role", "prepare", "--work", work, "--model", args.model],
                 "prepare")
        pythons = {"torch": "/usr/bin/python3", "onnxruntime": venv_python, "openvino": venv_python}
        times = {(e, c): [] for e in engines for c in args.cases}
        versions, detections, failures = {}, {}, []
        for _ in range(args.rounds):
            for case in args.cases:
                for name in engines:
                    try:
                        if name in ("engine", "baseline"):
                            bench = args.bench if name == "engine" else args.baseline
                            times[name, case].append(engine_run(args, work, case, bench))
                            continue
                        out = run_json(role_command(args, work, name, case, pythons[name]), name)
                        times[name, case].append(statistics.median(out["times_ms"]))
                        versions[name] = out["version"]
                        detections[name, case] = out["detections"]
                    except RuntimeError as error:
                        failures.append(str(error))
        for case in args.cases:
            try:
                detections["engine", case] = engine_detections(args, work, case)
            except RuntimeError as error:
                failures.append(str(error))
    report(args, engines, times, versions, detections)
    for case in args.cases:
        if ("engine", case) in detections and ("torch", case) in detections:
            found, compared = matched(detections["torch", case], detections["engine", case])
            if found != compared:
                failures.append(f"{case}: the engine's detections are not torch's "
                                f"({found} of {compared} matched)")
    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0


def cpu_name():
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def report(args, engines, times, versions, detections):
    titles = [TITLES[e].format(versions.get(e, "?")) for e in engines]
    print(f"{cpu_name()}, {os.cpu_count()} cores; "
          f"{args.threads} threads each; {ARCH[args.model]}, calibrated random weights; "
          f"frame {FRAME[1]}x{FRAME[0]}; median of {args.rounds} interleaved rounds of "
          f"{args.iterations} calls\n")
    print("| case | " + " | ".join(titles) + " |")
    print("|---|" + "---|" * len(engines))
    rows = []
    for case in args.cases:
        medians = {e: statistics.median(times[e, case]) if times[e, case] else None for e in engines}
        count = len([d for d in detections.get(("torch", case), []) if d[4] >= COMPARED_SCORE])
        cells = []
        for e in engines:
            ms = medians[e]
            if ms is None:
                cells.append("failed")
            elif e == "engine" or medians["engine"] is None:
                cells.append(f"{ms:,.0f} ms")
            else:
                cells.append(f"{ms:,.0f} ms ({ratio(medians['engine'], ms)})")
        label = "typical" if case == "typical" else "worst case (100 detections)"
        print(f"| {label}, {count} detections >= {COMPARED_SCORE} | " + " | ".join(cells) + " |")
        agreement = {}
        for e in ENGINES:
            if e != "torch" and (e, case) in detections and ("torch", case) in detections:
                agreement[e] = matched(detections["torch", case], detections[e, case])
        rows.append({"case": case, "median_ms": medians, "rounds_ms": {e: times[e, case] for e in engines},
                     "versions": versions, "detections_matched_to_torch": agreement})
    print(f"\nDetections scoring >= {COMPARED_SCORE} matched to torch's (same label, box IoU >= {MATCH_IOU}):")
    for row in rows:
        print(f"- {row['case']}: " + ", ".join(
            f"{e} {m}/{n}" for e, (m, n) in row["detections_matched_to_torch"].items()))
    if args.jsonl:
        with open(args.jsonl, "a") as out:
            for row in rows:
                out.write(json.dumps(row) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(ARCH), default="r50")
    parser.add_argument("--bench", default=str(REPO / "build" / "tools" / "mrcnn-bench"),
                        help="the mrcnn-bench executable (mrcnn-detect beside it)")
    parser.add_argument("--baseline", help="another build's mrcnn-bench, timed beside it")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--cases", type=lambda text: [c for c in text.split(",") if c], default=CASES)
    parser.add_argument("--venv", default=str(pathlib.Path(os.environ.get(
        "XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "gst-maskrcnn" / "cpu-compare-venv"))
    parser.add_argument("--jsonl", help="also append one JSON line per case here")
    parser.add_argument("--role", choices=["prepare", *ENGINES[1:]], help=argparse.SUPPRESS)
    parser.add_argument("--work", type=pathlib.Path, help=argparse.SUPPRESS)
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if any(c not in CASES for c in args.cases):
        parser.error(f"--cases: a comma-separated list of {', '.join(CASES)}")
    if args.role == "prepare":
        role_prepare(args, args.work)
    elif args.role == "torch":
        role_torch(args, args.work)
    elif args.role:
        role_onnx(args, args.work)
    else:
        sys.exit(compare(args))


if __name__ == "__main__":
    main()
