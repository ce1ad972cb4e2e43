/* libFuzzer target: COCO RLE.  The first two bytes give a mask's width and
 * height (their low 6 bits: 0-63, keeping runs fast), the rest a counts string.  Decoding any string must not
 * crash; a string that decodes re-encodes to a string decoding to the
 * same mask, and that encoding is a fixed point (canonical).  The same
 * bytes read as a bit mask must survive encode -> decode unchanged. */
#include "mrcnn.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (size < 2)
    return 0;
  int width = data[0] & 63, height = data[1] & 63;
  size_t pixels = (size_t) width * height;
  data += 2;
  size -= 2;
  uint8_t *mask = g_malloc (pixels + 1), *again = g_malloc (pixels + 1);

  char *counts = g_strndup ((const char *) data, size);
  if (mrcnn_rle_decode (counts, width, height, mask)) {
    char *encoded = mrcnn_rle_encode (mask, width, height);
    if (!mrcnn_rle_decode (encoded, width, height, again)
        || memcmp (mask, again, pixels) != 0)
      abort ();
    char *twice = mrcnn_rle_encode (again, width, height);
    if (strcmp (encoded, twice) != 0)
      abort ();
    g_free (twice);
    g_free (encoded);
  }
  g_free (counts);

  /* bit i of the input (cycled) is pixel i */
  for (size_t i = 0; i < pixels; i++)
    mask[i] = size ? (data[(i / 8) % size] >> (i % 8)) & 1 : 0;
  char *encoded = mrcnn_rle_encode (mask, width, height);
  memset (again, 7, pixels);
  if (!mrcnn_rle_decode (encoded, width, height, again)
      || memcmp (mask, again, pixels) != 0)
    abort ();
  g_free (encoded);
  g_free (mask);
  g_free (again);
  return 0;
}
