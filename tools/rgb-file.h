/* Decoding an image file for the command-line tools. */
#ifndef MRCNN_TOOLS_RGB_FILE_H
#define MRCNN_TOOLS_RGB_FILE_H

#include <glib.h>

/* Tightly packed 8-bit RGB copy of a decoded image file (any format
 * gdk-pixbuf reads); free with g_free. */
guint8 *rgb_file_load (const char *path, int *width, int *height,
    GError **error);

#endif
