"""Marks the fields of the meta's records read-only in a GIR file.

    gir_read_only.py IN.gir OUT.gir

g-ir-scanner makes every public field of a C struct writable, and GObject
Introspection has no annotation against it; but a binding that writes
n_detections or a mask's size sends every later reader of the meta out of
bounds.  So the fields of GstMaskRcnnMeta and GstMaskRcnnDetection lose
their writable flag (PyGObject then refuses the write with an exception),
except track_id, which an application's own tracker may set."""
import re
import sys

RECORDS = ("MaskRcnnMeta", "MaskRcnnDetection")
WRITABLE = ("track_id",)


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
        if record in RECORDS and field and field.group(1) not in WRITABLE:
            lines[i] = line.replace(' writable="1"', "")
            changed += 1
    if changed == 0:
        sys.exit(f"{source}: no writable field of {', '.join(RECORDS)} found")
    with open(target, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
