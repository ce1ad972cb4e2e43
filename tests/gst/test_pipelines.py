"""gst-launch-1.0 pipelines through maskrcnn and maskrcnnoverlay on the CPU
backend, written to files, then read back: every frame must be there.

usage: test_pipelines.py MODEL IMAGE OUTDIR
"""
import os
import subprocess
import sys

from video_files import decode

FRAMES = 30
TIMEOUT = 300


def launch(description):
    args = ["gst-launch-1.0", "-q"] + description.split()
    result = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT)
    return result.returncode, result.stdout + result.stderr


def main():
    model, image, outdir = sys.argv[1:4]
    os.makedirs(outdir, exist_ok=True)
    failures = 0
    for width, height in ((640, 480), (1920, 1080)):
        for fmt in ("NV12", "RGB"):
            out = os.path.join(outdir, f"annotated-{width}x{height}-{fmt}.avi")
            rc, log = launch(
                f"videotestsrc num-buffers={FRAMES} pattern=smpte ! "
                f"video/x-raw,format={fmt},width={width},height={height},framerate=30/1 ! "
                f"maskrcnn model={model} ! maskrcnnoverlay ! videoconvert ! jpegenc ! "
                f"avimux ! filesink location={out}")
            frames, size = decode(out) if rc == 0 else (0, None)
            ok = rc == 0 and frames == FRAMES and size == (width, height)
            print(f"{'ok  ' if ok else 'FAIL'} {width}x{height} {fmt}: exit {rc}, "
                  f"{frames} frames of {size} in {out}", flush=True)
            if not ok:
                print(log)
                failures += 1

    # the synthetic frame, where the model finds instances: the annotated
    # output differs from the input, the pixels of maskrcnn's own output not
    for overlay, expect_changed in (("! maskrcnnoverlay", True), ("", False)):
        out = os.path.join(outdir, f"shapes{'-annotated' if overlay else ''}.png")
        rc, log = launch(
            f"filesrc location={image} ! pngdec ! videoconvert ! "
            f"video/x-raw,format=I420 ! maskrcnn model={model} {overlay} ! "
            f"videoconvert ! video/x-raw,format=RGB ! pngenc ! filesink location={out}")
        ok = rc == 0 and os.path.getsize(out) > 0
        print(f"{'ok  ' if ok else 'FAIL'} shapes {'with' if overlay else 'without'} "
              f"overlay: exit {rc}", flush=True)
        if not ok:
            print(log)
            failures += 1
    from PIL import Image
    import numpy as np
    plain = np.asarray(Image.open(os.path.join(outdir, "shapes.png")), dtype=int)
    annotated = np.asarray(Image.open(os.path.join(outdir, "shapes-annotated.png")), dtype=int)
    changed = float(np.mean(np.any(plain != annotated, axis=2)))
    ok = 0.05 < changed < 0.95
    print(f"{'ok  ' if ok else 'FAIL'} overlay changed {100 * changed:.1f} % of the pixels")
    failures += not ok

    # two chained models (the test model, then matterport's narrow model): the
    # tracker, the overlay and the export take both models' results; each
    # detection in the export says its model, track ids are unique across the
    # two and stay the same over the frames
    import json
    out = os.path.join(outdir, "two-models.jsonl")
    h5, h5_config = os.environ["MRCNN_TEST_H5"], os.environ["MRCNN_TEST_H5_CONFIG"]
    rc, log = launch(
        f"filesrc location={image} ! pngdec ! imagefreeze num-buffers=3 ! videoconvert ! "
        f"maskrcnn model={model} mode=every-frame ! "
        f"maskrcnn model={h5} config={h5_config} mode=every-frame ! "
        f"maskrcnntracker confirm-frames=1 ! maskrcnnoverlay ! "
        f"maskrcnnexport location={out} ! fakesink")
    frames = [json.loads(line) for line in open(out)] if rc == 0 else []
    models = [sorted({d.get("model") for d in f["detections"]}) for f in frames]
    counts = [{m: sum(d.get("model") == m for d in f["detections"]) for m in ms}
              for f, ms in zip(frames, models)]
    ids = [[d.get("track_id", 0) for d in f["detections"]] for f in frames]
    ok = (rc == 0 and len(frames) == 3
          and all(m == sorted([os.path.basename(model), os.path.basename(h5)]) for m in models)
          and all(min(c.values()) >= 10 for c in counts)
          and all(min(i) > 0 and len(set(i)) == len(i) for i in ids)
          and ids[0] == ids[1] == ids[2])
    print(f"{'ok  ' if ok else 'FAIL'} two chained models: exit {rc}, detections per model "
          f"{counts[0] if counts else None}, track ids unique across both and kept over "
          f"{len(frames)} frames", flush=True)
    if not ok:
        print(log)
        failures += 1

    # a model that cannot be loaded: non-zero exit and the reason on the console
    rc, log = launch("videotestsrc num-buffers=1 ! maskrcnn model=/nonexistent.safetensors "
                     "! fakesink")
    ok = rc != 0 and "/nonexistent.safetensors: cannot open" in log
    print(f"{'ok  ' if ok else 'FAIL'} missing model: exit {rc}, "
          f"{[line for line in log.splitlines() if 'ERROR' in line][:1]}")
    failures += not ok
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
