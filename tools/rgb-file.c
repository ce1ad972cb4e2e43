#include "rgb-file.h"

#include <gdk-pixbuf/gdk-pixbuf.h>
#include <string.h>

guint8 *
rgb_file_load (const char *path, int *width, int *height, GError **error)
{
  GdkPixbuf *pixbuf = gdk_pixbuf_new_from_file (path, error);
  if (!pixbuf)
    return NULL;
  int w = gdk_pixbuf_get_width (pixbuf), h = gdk_pixbuf_get_height (pixbuf);
  int channels = gdk_pixbuf_get_n_channels (pixbuf);
  int stride = gdk_pixbuf_get_rowstride (pixbuf);
  const guint8 *src = gdk_pixbuf_read_pixels (pixbuf);
  guint8 *rgb = g_malloc ((size_t) w * h * 3);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      memcpy (rgb + ((size_t) y * w + x) * 3,
          src + (size_t) y * stride + (size_t) x * channels, 3);
  g_object_unref (pixbuf);
  *width = w;
  *height = h;
  return rgb;
}
