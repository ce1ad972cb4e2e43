"""Video files read back the way a user's player would: decoded by GStreamer."""
import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402


def decode(path):
    """Frame count and frame size (width, height) of a video file, decoded
    by decodebin; (0, None) when nothing decodes."""
    Gst.init(None)
    pipeline = Gst.parse_launch(
        f'filesrc location="{path}" ! decodebin ! videoconvert ! appsink name=sink sync=false')
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(Gst.State.PLAYING)
    frames, size = 0, None
    while True:
        sample = sink.emit("pull-sample")
        if sample is None:
            break
        frames += 1
        s = sample.get_caps().get_structure(0)
        size = (s.get_value("width"), s.get_value("height"))
    pipeline.set_state(Gst.State.NULL)
    return frames, size
