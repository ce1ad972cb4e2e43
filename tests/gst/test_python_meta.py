"""GstMaskRcnnMeta from Python through the GstMaskRcnn typelib: every field
of the meta and of its detections, every accessor, the masks as NumPy arrays
and the full-frame mask helper, on the frames maskrcnn analyses, on a copy
and on a scaled copy of them, on the metas of two chained models, and on
metas made from Python.

    test_python_meta.py MODEL IMAGE

Each case runs in its own process (this file with --case NAME), so that an
abort or a crash in the bindings is a failed case rather than a dead test;
a case also fails on a CRITICAL or PyGObject's "Stack overflow protection"
in its stderr."""
import argparse
import subprocess
import sys

import numpy as np

TIMEOUT = 240
# what stderr must not hold (a case lists the criticals it provokes on purpose)
BAD_STDERR = ("CRITICAL", "Stack overflow protection")

META_FIELDS = ("frame_width", "frame_height", "repeated", "soft_masks", "inference_time",
               "n_detections", "frame_number", "result_frame_number", "result_pts",
               "result_age", "stream_id", "model_name")
DETECTION_FIELDS = ("class_id", "class_name", "score", "x", "y", "width", "height",
                    "mask_x", "mask_y", "mask_width", "mask_height", "track_id")
# arrays C reads directly; hidden from bindings (placeholders, not writable)
HIDDEN = {"MaskRcnnMeta": ("detections",), "MaskRcnnDetection": ("mask",)}
CLOCK_TIME_NONE = 2 ** 64 - 1

failures = []


def check(name, ok, figures=""):
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' if figures else ''}{figures}", flush=True)
    if not ok:
        failures.append(name)
    return ok


# ---------------------------------------------------------------- in a case

def load():
    import gi
    gi.require_version("Gst", "1.0")
    gi.require_version("GstMaskRcnn", "1.0")
    from gi.repository import Gst, GstMaskRcnn
    Gst.init(None)
    return Gst, GstMaskRcnn


def gi_fields(cls):
    """The names of all fields the typelib describes for cls."""
    return [f.get_name() for f in cls.__info__.get_fields()]


def read_all_fields(obj, cls_name, where):
    """getattr of every field the typelib has: the public ones must read,
    the hidden arrays may read as anything or raise, but nothing aborts."""
    values = {}
    for name in gi_fields(type(obj)):
        try:
            values[name] = getattr(obj, name)
        except Exception as e:  # noqa: BLE001 - only a public field must read
            if name in HIDDEN[cls_name] or name in ("capacity",):
                values[name] = e
            else:
                check(f"{where}: field {name} reads", False, repr(e))
    return values


def check_hidden(obj, cls_name, where, report):
    """Touching the arrays does not abort; writing them is refused."""
    for name in HIDDEN[cls_name]:
        try:
            value = getattr(obj, name)
            seen = f"reads as a placeholder ({type(value).__name__})"
        except Exception as e:  # noqa: BLE001 - hidden: any exception is fine
            seen = f"raises {type(e).__name__}"
        try:
            setattr(obj, name, None)
            refused = False
        except Exception:  # noqa: BLE001 - refusing is what we want
            refused = True
        if report:
            check(f"{where}: {cls_name}.{name} {seen}, write refused", refused)
        elif not refused:
            check(f"{where}: {cls_name}.{name} write refused", False)


def expected_full(rect, mx, my, width, height):
    """The mask rectangle pasted into a zero frame, clipped to it."""
    full = np.zeros((height, width), np.uint8)
    mh, mw = rect.shape
    x0, y0 = max(mx, 0), max(my, 0)
    x1, y1 = min(mx + mw, width), min(my + mh, height)
    if x0 < x1 and y0 < y1:
        full[y0:y1, x0:x1] = rect[y0 - my:y1 - my, x0 - mx:x1 - mx]
    return full


def check_meta(meta, where, frame_pts=None, report=True):
    """Every field and accessor of one meta and of all its detections.
    Returns a summary to compare metas with (detections, masks)."""
    from gi.repository import GstMaskRcnn
    values = read_all_fields(meta, "MaskRcnnMeta", where)
    missing = [f for f in META_FIELDS if f not in values]
    n = meta.get_n_detections()
    ints = all(isinstance(values.get(f), int) for f in META_FIELDS
               if f not in ("repeated", "soft_masks", "stream_id", "model_name"))
    source_ok = all(values.get(f) is None or (isinstance(values[f], str) and values[f])
                    for f in ("stream_id", "model_name"))
    getters_ok = (meta.get_stream_id() == values.get("stream_id")
                  and meta.get_model_name() == values.get("model_name"))
    if report:
        check(f"{where}: meta fields read", not missing and ints and source_ok
              and n == values.get("n_detections"),
              ", ".join(f"{f}={values.get(f)!r}" for f in META_FIELDS))
        check(f"{where}: get_stream_id/get_model_name equal the fields", getters_ok,
              f"{meta.get_stream_id()!r}, {meta.get_model_name()!r}")
    elif missing or not ints or not source_ok or not getters_ok:
        check(f"{where}: meta fields", False, f"missing {missing}")
    frame_ok = (not meta.repeated and meta.result_frame_number == meta.frame_number
                and meta.result_age == 0
                and (frame_pts is None or meta.result_pts == frame_pts))
    if report:
        check(f"{where}: frame fields of an analysed frame", frame_ok,
              f"frame {meta.frame_number}, result frame {meta.result_frame_number}, "
              f"result_pts {meta.result_pts} (buffer {frame_pts}), age {meta.result_age}")
    check_hidden(meta, "MaskRcnnMeta", where, report)

    w, h = meta.frame_width, meta.frame_height
    summary, bad = [], []
    for i in range(n):
        d = meta.get_detection(i)
        if d is None:
            bad.append(f"get_detection({i}) is None")
            continue
        dv = read_all_fields(d, "MaskRcnnDetection", f"{where} detection {i}")
        missing = [f for f in DETECTION_FIELDS if f not in dv]
        if missing:
            bad.append(f"{i}: fields {missing} missing")
            continue
        check_hidden(d, "MaskRcnnDetection", where, report and i == 0)
        box = d.get_box()
        rect = d.get_mask_rect()
        if (d.get_class_name() != dv["class_name"] or not dv["class_name"]
                or not 0 < dv["score"] <= 1 or dv["class_id"] <= 0
                or not np.allclose(box, (dv["x"], dv["y"], dv["width"], dv["height"]))
                or tuple(rect) != (dv["mask_x"], dv["mask_y"], dv["mask_width"],
                                   dv["mask_height"])):
            bad.append(f"{i}: accessors disagree with the fields: {dv}, {box}, {rect}")
        mx, my, mw, mh = rect
        data = d.get_mask()
        if data is None:
            data = b""
        if not isinstance(data, bytes) or len(data) != mw * mh:
            bad.append(f"{i}: get_mask gave {type(data).__name__} of {len(data)} bytes "
                       f"for {mw}x{mh}")
            continue
        mask = np.frombuffer(data, np.uint8).reshape(mh, mw)
        values_ok = (set(np.unique(mask).tolist()) <= {0, 255}) if not meta.soft_masks else True
        if not values_ok:
            bad.append(f"{i}: mask values {np.unique(mask)[:8]}")
        full_bytes = d.dup_full_mask(w, h)
        full = np.frombuffer(full_bytes or b"", np.uint8)
        if full.size != w * h:
            bad.append(f"{i}: dup_full_mask gave {full.size} bytes for {w}x{h}")
            continue
        full = full.reshape(h, w)
        if not np.array_equal(full, expected_full(mask, mx, my, w, h)):
            bad.append(f"{i}: full mask differs from the box mask pasted into the frame")
        summary.append((dv["class_id"], dv["class_name"], round(dv["score"], 6),
                        tuple(round(v, 3) for v in box), tuple(rect),
                        int(np.count_nonzero(mask)), int(np.count_nonzero(full))))
    past_end = meta.get_detection(n)
    if report:
        check(f"{where}: {n} detections: fields, accessors, masks (bytes -> np.frombuffer, "
              f"size, 0/255) and full-frame masks", not bad and past_end is None,
              "; ".join(bad[:3]) or f"get_detection({n}) is None, "
              f"{sum(s[5] for s in summary)} mask pixels on")
    elif bad:
        check(f"{where}: detections", False, "; ".join(bad[:3]))
    if report and n:
        d = meta.get_detection(0)
        empty = d.dup_full_mask(0, 0)
        check(f"{where}: dup_full_mask of an empty frame is empty", not empty, repr(empty))
    return summary, values.get("stream_id"), values.get("model_name")


def run_pipeline(Gst, description, probes):
    """probes: {element name: (pad name, callback)}; runs to EOS."""
    pipeline = Gst.parse_launch(description)
    for element, (pad, callback) in probes.items():
        pipeline.get_by_name(element).get_static_pad(pad).add_probe(
            Gst.PadProbeType.BUFFER, callback)
    pipeline.set_state(Gst.State.PLAYING)
    msg = pipeline.get_bus().timed_pop_filtered(
        TIMEOUT * Gst.SECOND, Gst.MessageType.ERROR | Gst.MessageType.EOS)
    pipeline.set_state(Gst.State.NULL)
    error = msg.parse_error()[0].message if msg and msg.type == Gst.MessageType.ERROR else ""
    check("pipeline ran to EOS", msg is not None and msg.type == Gst.MessageType.EOS, error)


def source(image):
    return (f"filesrc location={image} ! pngdec ! imagefreeze num-buffers=2 ! videoconvert ! "
            f"maskrcnn name=detector mode=every-frame model={{model}}")


def guarded(callback):
    """A probe whose exception is a failure (PyGObject would only print it)."""
    def probe(pad, info):
        from gi.repository import Gst
        try:
            callback(info.get_buffer())
        except Exception as e:  # noqa: BLE001 - report anything as a failure
            import traceback
            traceback.print_exc()
            check("probe ran without an exception", False, repr(e))
        return Gst.PadProbeReturn.OK
    return probe


def case_fields(model, image):
    """The analysed frames: everything, frame by frame."""
    Gst, GstMaskRcnn = load()
    frames = []

    def on_buffer(buffer):
        meta = GstMaskRcnn.buffer_get_mask_rcnn_meta(buffer)
        where = f"frame {len(frames)}"
        if not check(f"{where}: has a meta", meta is not None):
            return
        summary, stream_id, model_name = check_meta(meta, where, buffer.pts)
        frames.append((meta.frame_number, summary, stream_id, model_name))

    run_pipeline(Gst, source(image).format(model=model) + " ! fakesink",
                 {"detector": ("src", guarded(on_buffer))})
    n = [len(f[1]) for f in frames]
    check("2 frames analysed, numbered 0 and 1, each with detections (the test model "
          "finds about 20)", len(frames) == 2 and [f[0] for f in frames] == [0, 1]
          and min(n, default=0) >= 10, f"detections per frame {n}")
    check("both frames: the same detections and the same source",
          len(frames) == 2 and frames[0][1:] == frames[1][1:],
          f"stream_id {frames[0][2]!r}, model_name {frames[0][3]!r}" if frames else "")


def case_copy_and_scale(model, image):
    """Copies (Gst.Buffer.copy) and a scaled copy (videoscale) carry the same
    detections and the same stream_id and model_name."""
    Gst, GstMaskRcnn = load()
    seen = {"analysed": [], "copy": [], "scaled": []}

    def on_analysed(buffer):
        meta = GstMaskRcnn.buffer_get_mask_rcnn_meta(buffer)
        seen["analysed"].append(check_meta(meta, "analysed", report=False))
        copy = buffer.copy()
        meta = GstMaskRcnn.buffer_get_mask_rcnn_meta(copy)
        if check("copy has a meta", meta is not None):
            seen["copy"].append(check_meta(meta, "copy", report=False))

    def on_scaled(buffer):
        meta = GstMaskRcnn.buffer_get_mask_rcnn_meta(buffer)
        if check("scaled frame has a meta", meta is not None):
            seen["scaled"].append((meta.frame_width, meta.frame_height,
                                   check_meta(meta, "scaled", report=False)))

    run_pipeline(Gst, source(image).format(model=model)
                 + " ! videoscale ! video/x-raw,width=320,height=240 ! fakesink name=sink",
                 {"detector": ("src", guarded(on_analysed)),
                  "sink": ("sink", guarded(on_scaled))})
    analysed, copies, scaled = seen["analysed"], seen["copy"], seen["scaled"]
    check("copied meta: same detections, masks, stream_id and model_name",
          len(copies) == 2 and copies == analysed and len(analysed[0][0]) >= 10,
          f"{[len(c[0]) for c in copies]} detections")
    check("scaled meta: 320x240, same number of detections, same stream_id and "
          "model_name, fields and full masks consistent",
          len(scaled) == 2 and all(s[:2] == (320, 240) for s in scaled)
          and all(len(s[2][0]) == len(a[0]) and s[2][1:] == a[1:]
                  for s, a in zip(scaled, analysed)),
          f"{[(s[0], s[1], len(s[2][0])) for s in scaled]}, "
          f"source {scaled[0][2][1:] if scaled else None}")


def case_made_in_python(model, image):
    """A meta made from Python: set_source, add_detection (bytes, None), the
    accessors and the full mask of a rectangle that sticks out of the frame."""
    Gst, GstMaskRcnn = load()
    w, h = 64, 48
    buffer = Gst.Buffer.new_allocate(None, w * h * 3, None)
    meta = GstMaskRcnn.buffer_add_mask_rcnn_meta(buffer, w, h)
    check("buffer_add_mask_rcnn_meta", meta is not None and meta.get_n_detections() == 0
          and meta.stream_id is None and meta.model_name is None
          and meta.get_stream_id() is None and meta.get_model_name() is None,
          f"{meta.frame_width}x{meta.frame_height}, source {meta.stream_id!r}, "
          f"{meta.model_name!r}")
    meta.set_source("stream-a", "model-a.safetensors")
    first = (meta.stream_id, meta.model_name, meta.get_stream_id(), meta.get_model_name())
    meta.set_source(meta.stream_id, None)  # its own string: copied before freed
    second = (meta.stream_id, meta.model_name)
    check("set_source sets, replaces and clears (None)",
          first == ("stream-a", "model-a.safetensors") * 2
          and second == ("stream-a", None), f"{first}, {second}")
    meta.set_source("stream-b", "model-b")

    rng = np.random.default_rng(0)
    inside = (rng.random((10, 12)) > 0.5).astype(np.uint8) * 255
    # sticks out of the frame at the right and the bottom (and at the top)
    outside = (rng.random((20, 30)) > 0.5).astype(np.uint8) * 255
    d0 = meta.add_detection(1, "inside", 0.9, 5.0, 6.0, 12.0, 10.0, 5, 6, 12, 10,
                            inside.tobytes())
    d1 = meta.add_detection(2, "outside", 0.8, 50.0, -5.0, 30.0, 20.0, 50, -5, 30, 20,
                            outside.tobytes())
    d2 = meta.add_detection(3, "zeroed", 0.7, 0.0, 0.0, 3.0, 2.0, 0, 0, 3, 2, None)
    d3 = meta.add_detection(4, "empty", 0.6, 0.0, 0.0, 0.0, 0.0, 0, 0, 0, 0, None)
    check("add_detection with bytes and with None",
          None not in (d0, d1, d2, d3) and meta.get_n_detections() == 4
          and d2.get_mask() == bytes(6) and not d3.get_mask(),
          f"{meta.get_n_detections()} detections, zeroed mask {d2.get_mask()!r}, "
          f"empty mask {d3.get_mask()!r}")
    for d, rect in ((d0, inside), (d1, outside), (d2, np.zeros((2, 3), np.uint8)),
                    (d3, np.zeros((0, 0), np.uint8))):
        mx, my, mw, mh = d.get_mask_rect()
        got = np.frombuffer(d.get_mask() or b"", np.uint8).reshape(mh, mw)
        full = np.frombuffer(d.dup_full_mask(w, h) or b"", np.uint8)
        ok = (np.array_equal(got, rect) and full.size == w * h
              and np.array_equal(full.reshape(h, w), expected_full(rect, mx, my, w, h)))
        check(f"{d.get_class_name()}: mask and full mask (clipped to the frame)", ok,
              f"rect {mx},{my} {mw}x{mh}, {int(np.count_nonzero(full))} of "
              f"{int(np.count_nonzero(rect))} pixels inside the frame")
    summary = check_meta(meta, "made in Python", report=False)
    copy = GstMaskRcnn.buffer_get_mask_rcnn_meta(buffer.copy())
    check("a copy of it: same detections and source",
          copy is not None and check_meta(copy, "copy", report=False) == summary,
          f"{summary[1:]}")


def case_refused(model, image):
    """What a binding can get wrong is refused with a critical, not a crash:
    a mask whose size is not mask_width x mask_height (once read past its
    end), a mask too large to allocate (once an abort), a meta on a buffer
    that is not writable (once a NULL dereference)."""
    Gst, GstMaskRcnn = load()
    buffer = Gst.Buffer.new_allocate(None, 16, None)
    meta = GstMaskRcnn.buffer_add_mask_rcnn_meta(buffer, 4, 4)
    short = meta.add_detection(1, "short", 0.5, 0.0, 0.0, 4.0, 4.0, 0, 0, 100, 100, b"ab")
    check("add_detection with a mask shorter than mask_width x mask_height: refused",
          short is None and meta.get_n_detections() == 0)
    huge = meta.add_detection(1, "huge", 0.5, 0.0, 0.0, 4.0, 4.0, 0, 0, 2 ** 31, 2 ** 31,
                              None)
    check("add_detection of a mask too large to allocate: refused", huge is None
          and meta.get_n_detections() == 0)
    ok = meta.add_detection(1, "ok", 0.5, 0.0, 0.0, 4.0, 4.0, 0, 0, 2, 2, bytes(4))
    full = ok.dup_full_mask(2 ** 32 - 1, 2 ** 32 - 1) if ok else b"x"
    check("dup_full_mask of a frame too large to allocate: empty", not full)
    # a sample holds a second reference: the buffer is no longer writable
    readonly = Gst.Buffer.new_allocate(None, 16, None)
    sample = Gst.Sample.new(readonly, None, None, None)
    if not check("a buffer held by a sample is not writable",
                 sample is not None and not readonly.mini_object.is_writable(),
                 f"refcount {readonly.mini_object.refcount}"):
        return
    added = GstMaskRcnn.buffer_add_mask_rcnn_meta(readonly, 4, 4)
    check("buffer_add_mask_rcnn_meta on a buffer that is not writable: None", added is None)


def case_tracked(model, image):
    """After maskrcnntracker: every detection's track_id (field and getter),
    distinct within a frame, the same on both frames of the same image."""
    Gst, GstMaskRcnn = load()
    frames = []

    def on_buffer(buffer):
        meta = GstMaskRcnn.buffer_get_mask_rcnn_meta(buffer)
        if not check(f"tracked frame {len(frames)}: has a meta", meta is not None):
            return
        dets = [meta.get_detection(i) for i in range(meta.get_n_detections())]
        frames.append([(d.track_id, d.get_track_id(), d.class_id) for d in dets])

    run_pipeline(Gst, source(image).format(model=model)
                 + " ! maskrcnntracker name=tracker confirm-frames=1 ! fakesink",
                 {"tracker": ("src", guarded(on_buffer))})
    ids = [[t for t, _, _ in f] for f in frames]
    check("track ids: field = get_track_id(), all > 0 and distinct in a frame, the same on "
          "both frames", len(frames) == 2 and all(t == g for f in frames for t, g, _ in f)
          and all(min(i, default=0) > 0 and len(set(i)) == len(i) for i in ids)
          and ids[0] == ids[1] and len(ids[0]) >= 10,
          f"{[len(i) for i in ids]} detections, ids {ids[0][:8] if ids else []}...")


def case_chained(model, image):
    """Two chained maskrcnn elements (the test model, then matterport's narrow
    model): buffer_get_mask_rcnn_metas gives both metas in their order,
    buffer_get_mask_rcnn_meta_for_model picks each by its model_name, and
    each model's detections are those it gives alone."""
    import os
    Gst, GstMaskRcnn = load()
    h5, h5_config = os.environ["MRCNN_TEST_H5"], os.environ["MRCNN_TEST_H5_CONFIG"]
    names = [os.path.basename(model), os.path.basename(h5)]
    second = f"maskrcnn name=second mode=every-frame model={h5} config={h5_config}"
    first_alone, second_alone, chained = [], [], []

    def alone(frames):
        def on_buffer(buffer):
            meta = GstMaskRcnn.buffer_get_mask_rcnn_meta(buffer)
            frames.append(check_meta(meta, "alone", report=False)[0] if meta else None)
        return on_buffer

    def on_chained(buffer):
        metas = GstMaskRcnn.buffer_get_mask_rcnn_metas(buffer)
        picked = [GstMaskRcnn.buffer_get_mask_rcnn_meta_for_model(buffer, n) for n in names]
        where = f"chained frame {len(chained)}"
        chained.append((
            [m.get_model_name() for m in metas],
            [check_meta(m, where, report=False)[0] for m in metas],
            [p is not None and p.get_model_name() == n for p, n in zip(picked, names)],
            GstMaskRcnn.buffer_get_mask_rcnn_meta_for_model(buffer, "other.safetensors"),
            GstMaskRcnn.buffer_get_mask_rcnn_meta(buffer).get_model_name()))

    run_pipeline(Gst, source(image).format(model=model) + " ! fakesink",
                 {"detector": ("src", guarded(alone(first_alone)))})
    run_pipeline(Gst, source(image).format(model=model).replace(
        f"maskrcnn name=detector mode=every-frame model={model}", second) + " ! fakesink",
                 {"second": ("src", guarded(alone(second_alone)))})
    run_pipeline(Gst, source(image).format(model=model) + f" ! {second} ! fakesink",
                 {"second": ("src", guarded(on_chained))})
    check("buffer_get_mask_rcnn_metas: both models' metas on each of the 2 frames, "
          "in the elements' order", len(chained) == 2
          and all(c[0] == names for c in chained), f"{[c[0] for c in chained]}")
    check("buffer_get_mask_rcnn_meta_for_model: each model's meta by its name, None for "
          "another name; buffer_get_mask_rcnn_meta: the first model's",
          len(chained) == 2 and all(all(c[2]) and c[3] is None and c[4] == names[0]
                                    for c in chained))
    n = [[len(s) for s in c[1]] for c in chained]
    check("each model's detections in the chain: those it gives alone, in the same order "
          "(the test model finds about 20, matterport's about 70)",
          len(chained) == 2 and len(first_alone) == len(second_alone) == 2
          and all(c[1] == [a, b] for c, a, b in zip(chained, first_alone, second_alone))
          and all(min(k) >= 10 for k in n), f"detections per model {n}")


def write_attempts(obj, fields, where):
    """Writes a wrong value into each field: every write must be refused with
    an exception and leave the value as it was.  Returns the failures."""
    bad = []
    for name in fields:
        before = getattr(obj, name)
        wrong = {bool: not before, int: 2 ** 31 - 1, float: 1e9, str: "x"}.get(
            type(before), "x")
        try:
            setattr(obj, name, wrong)
            bad.append(f"{where}.{name} written")
        except Exception:  # noqa: BLE001 - refusing is what we want
            pass
        if getattr(obj, name) != before:
            bad.append(f"{where}.{name} changed to {getattr(obj, name)!r}")
    return bad


# what a binding cannot write: the geometry (a wrong n_detections, mask size
# or box sends later readers out of bounds); the rest stays writable
READ_ONLY_META = ("frame_width", "frame_height", "n_detections")
READ_ONLY_DETECTION = ("x", "y", "width", "height", "mask_x", "mask_y", "mask_width",
                       "mask_height")


def case_read_only(model, image):
    """The meta's geometry is read-only for bindings: a probe's writes of it
    are refused with an exception and change nothing, and maskrcnnoverlay
    downstream draws every frame; the other fields (flags, numbers, score,
    class id, track id) can be written."""
    Gst, GstMaskRcnn = load()
    results = []

    def on_buffer(buffer):
        meta = GstMaskRcnn.buffer_get_mask_rcnn_meta(buffer)
        if not check("frame has a meta", meta is not None and meta.get_n_detections() > 0):
            return
        bad = write_attempts(meta, READ_ONLY_META, "meta")
        d = meta.get_detection(0)
        bad += write_attempts(d, READ_ONLY_DETECTION, "detection")
        meta.soft_masks = meta.soft_masks
        meta.frame_number = meta.frame_number + 1000
        d.track_id = 77
        d.score = 0.5
        results.append((bad, d.get_track_id(), meta.get_n_detections(),
                        len(d.get_mask() or b""), d.mask_width * d.mask_height,
                        meta.frame_number, d.score))

    run_pipeline(Gst, source(image).format(model=model)
                 + " ! maskrcnnoverlay ! fakesink",
                 {"detector": ("src", guarded(on_buffer))})
    bad = [b for r in results for b in r[0]]
    check("writes to the geometry refused, values unchanged; the overlay downstream "
          "drew both frames", len(results) == 2 and not bad
          and all(r[3] == r[4] for r in results),
          "; ".join(bad[:4]) or f"{results[0][2] if results else 0} detections, "
          f"masks {results[0][3] if results else 0} bytes")
    check("frame_number, score and track_id writable",
          len(results) == 2 and all(r[1] == 77 and r[5] >= 1000 and r[6] == 0.5
                                    for r in results),
          f"{[(r[1], r[5], r[6]) for r in results]}")


CASES = {
    "fields": (case_fields, ()),
    "read-only": (case_read_only, ()),
    "tracked": (case_tracked, ()),
    "chained": (case_chained, ()),
    "copy-and-scale": (case_copy_and_scale, ()),
    "made-in-python": (case_made_in_python, ()),
    "refused": (case_refused, ("assertion 'mask == NULL || mask_size == size' failed",
                               "assertion 'gst_buffer_is_writable (buffer)' failed")),
}


# ---------------------------------------------------------------- driver

def run_case(name, model, image):
    expected = CASES[name][1]
    try:
        result = subprocess.run([sys.executable, __file__, "--case", name, model, image],
                                capture_output=True, text=True, timeout=TIMEOUT)
        rc, out, err = result.returncode, result.stdout, result.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = "timeout", e.stdout or "", e.stderr or ""
        out, err = (s.decode() if isinstance(s, bytes) else s for s in (out, err))
    print(out, end="", flush=True)
    # the criticals a case provokes on purpose are fine; any other is not
    bad_lines = [line for line in err.splitlines()
                 if any(b in line for b in BAD_STDERR)
                 and not any(e in line for e in expected)]
    if bad_lines or rc != 0:
        print(err, end="")
    n_ok = sum(line.startswith("ok  ") for line in out.splitlines())
    n_fail = sum(line.startswith("FAIL") for line in out.splitlines())
    check(f"case {name}: exit 0, no CRITICAL, no 'Stack overflow protection'",
          rc == 0 and not bad_lines and n_fail == 0 and n_ok > 0,
          f"exit {rc}, {n_ok} ok, {n_fail} failed, "
          f"{len(bad_lines)} bad stderr lines{': ' + bad_lines[0] if bad_lines else ''}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", choices=CASES)
    parser.add_argument("model")
    parser.add_argument("image")
    args = parser.parse_args()
    if args.case:
        CASES[args.case][0](args.model, args.image)
        sys.exit(1 if failures else 0)
    for name in CASES:
        run_case(name, args.model, args.image)
    if failures:
        print(f"{len(failures)} check(s) failed")
        sys.exit(1)


if __name__ == "__main__":
    main()
