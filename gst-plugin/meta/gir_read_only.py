"""Marks the meta's geometry fields read-only in a GIR file.

    gir_read_only.py IN.gir OUT.gir

g-ir-scanner makes every public field of a C struct writable, and GObject
Introspection has no annotation against it; but a binding that writes
n_detections, a mask's size or place, a box or the frame size sends later
readers of the meta (maskrcnnoverlay, the scaling transform) out of bounds.
So those fields lose their writable flag (PyGObject then refuses the write
with an exception); the others (flags, frame numbers and times, class id,
score, track id) stay writable for applications that make or annotate
metas of their own."""
import re
import sys

READ_ONLY = {
    "MaskRcnnMeta": ("frame_width", "frame_height", "n_detections"),
    "MaskRcnnDetection": ("x", "y", "width", "height", "mask_x", "mask_y",
                          "mask_width", "mask_height"),
}


def main():
    source, target = sys.argv[1:3]
    with open(source, encoding="utf-8") as f:
        lines = f.read().split("\n")
    record = None
    changed = 0
    for i, line in enumerate(lines):
        opened = re.search(r'<record name="([^"]+)"', line)
        if opened:
            record = opened.group(1)
        elif "</record>" in line:
            record = None
        field = re.search(r'<field name="([^"]+)"[^>]* writable="1"', line)
        if field and field.group(1) in READ_ONLY.get(record, ()):
            lines[i] = line.replace(' writable="1"', "")
            changed += 1
    wanted = sum(len(fields) for fields in READ_ONLY.values())
    if changed != wanted:
        sys.exit(f"{source}: {changed} of the {wanted} fields to make read-only found")
    with open(target, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
