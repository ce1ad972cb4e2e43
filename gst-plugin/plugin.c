/* The maskrcnn plugin: the maskrcnn, maskrcnntracker, maskrcnnoverlay and
 * maskrcnnexport elements. */
#include "gstmaskrcnn.h"
#include "gstmaskrcnnexport.h"
#include "gstmaskrcnnoverlay.h"
#include "gstmaskrcnntracker.h"

static gboolean
plugin_init (GstPlugin *plugin)
{
  gboolean ok = FALSE;
  ok |= GST_ELEMENT_REGISTER (maskrcnn, plugin);
  ok |= GST_ELEMENT_REGISTER (maskrcnntracker, plugin);
  ok |= GST_ELEMENT_REGISTER (maskrcnnoverlay, plugin);
  ok |= GST_ELEMENT_REGISTER (maskrcnnexport, plugin);
  return ok;
}

GST_PLUGIN_DEFINE (GST_VERSION_MAJOR, GST_VERSION_MINOR, maskrcnn,
    "Mask R-CNN instance segmentation", plugin_init, PACKAGE_VERSION,
    "MIT", "gst-maskrcnn", "https://github.com/gst-maskrcnn/gst-maskrcnn")
