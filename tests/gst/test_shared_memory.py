"""engine-id with a ResNet-50-sized model: four streams sharing one engine
hold about the memory of one (within 10 %, plus each stream's own frame
buffers: 8 MiB allowed per stream); their own engines would each add the
model and its workspace (~575 MiB each on the CPU backend).  Figures from
bench/streams.py.

usage: test_shared_memory.py STREAMS_PY EXPORT_TORCHVISION_PY SCRATCH
"""
import json
import os
import subprocess
import sys

streams_py, export_py, scratch = sys.argv[1:4]
os.makedirs(scratch, exist_ok=True)
model = os.path.join(scratch, "r50-320.safetensors")
if not os.path.exists(model):
    subprocess.run([sys.executable, export_py, "--arch", "maskrcnn_resnet50_fpn",
                    "--random-seed", "0", "--min-size", "320", "--max-size", "512", model],
                   check=True)
rows = {}
for n in (1, 4):
    out = os.path.join(scratch, f"streams-{n}.jsonl")
    subprocess.run([sys.executable, streams_py, "--model", model, "--streams", str(n),
                    "--seconds", "8", "--props", "engine-id=shared", "--jsonl", out],
                   check=True)
    with open(out) as f:
        rows[n] = json.loads(f.readline())
one, four = rows[1]["rss_mib"], rows[4]["rss_mib"]
bar = 1.1 * one + 3 * 8
ok = four <= bar and rows[4]["fps_per_stream_min"] > 0
print(f"{'ok  ' if ok else 'FAIL'} 4 streams on one engine-id: {four:.0f} MiB resident, "
      f"1 stream {one:.0f} MiB (bar {bar:.0f} MiB); every stream ran "
      f"({rows[4]['fps_per_stream_min']:.2f}-{rows[4]['fps_per_stream_max']:.2f} frames/s)")
sys.exit(0 if ok else 1)
