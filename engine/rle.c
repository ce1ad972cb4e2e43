/* COCO compressed RLE, bit-compatible with pycocotools' rleToString and
 * rleFrString: column-major runs starting with zeros, each count stored as
 * the difference to the count two back in 5-bit groups offset by 48. */
#include "mrcnn.h"

typedef struct {
  GString *out;
  GArray *counts;
  uint8_t value; /* value of the current run */
  gint64 run;
} RleWriter;

static void
rle_push (RleWriter *w, uint8_t value, gint64 n)
{
  if (n <= 0)
    return;
  if (value != w->value) {
    g_array_append_val (w->counts, w->run);
    w->value = value;
    w->run = 0;
  }
  w->run += n;
}

static char *
rle_finish (RleWriter *w)
{
  g_array_append_val (w->counts, w->run);
  const gint64 *cnts = (const gint64 *) w->counts->data;
  for (guint i = 0; i < w->counts->len; i++) {
    gint64 x = cnts[i];
    if (i > 2)
      x -= cnts[i - 2];
    gboolean more = TRUE;
    while (more) {
      char c = (char) (x & 0x1f);
      x >>= 5; /* arithmetic shift, as in pycocotools */
      more = (c & 0x10) ? x != -1 : x != 0;
      if (more)
        c |= 0x20;
      g_string_append_c (w->out, (char) (c + 48));
    }
  }
  g_array_free (w->counts, TRUE);
  return g_string_free (w->out, FALSE);
}

static RleWriter
rle_writer (void)
{
  return (RleWriter) { g_string_new (NULL), g_array_new (FALSE, FALSE,
          sizeof (gint64)), 0, 0 };
}

char *
mrcnn_rle_encode_rect (const uint8_t *rect, int rect_x, int rect_y,
    int rect_width, int rect_height, uint8_t threshold, int image_width,
    int image_height)
{
  RleWriter w = rle_writer ();
  /* the part of the rectangle inside the image */
  int y0 = CLAMP (rect_y, 0, image_height);
  int y1 = CLAMP (rect_y + rect_height, y0, image_height);
  for (int x = 0; x < image_width; x++) {
    int rx = x - rect_x;
    if (rx < 0 || rx >= rect_width || y0 == y1) {
      rle_push (&w, 0, image_height);
      continue;
    }
    rle_push (&w, 0, y0);
    for (int y = y0; y < y1; y++)
      rle_push (&w, rect[(size_t) (y - rect_y) * rect_width + rx] >= threshold
          ? 1 : 0, 1);
    rle_push (&w, 0, image_height - y1);
  }
  return rle_finish (&w);
}

char *
mrcnn_rle_encode (const uint8_t *mask, int width, int height)
{
  return mrcnn_rle_encode_rect (mask, 0, 0, width, height, 1, width, height);
}

char *
mrcnn_rle_encode_detection (const MrcnnDetection *d, int width, int height)
{
  return mrcnn_rle_encode_rect (d->mask_binary, d->mask_x, d->mask_y,
      d->mask_width, d->mask_height, 1, width, height);
}

gboolean
mrcnn_rle_decode (const char *s, int width, int height, uint8_t *mask)
{
  if (width < 0 || height < 0)
    return FALSE;
  gint64 total = (gint64) width * height, pos = 0;
  GArray *counts = g_array_new (FALSE, FALSE, sizeof (gint64));
  gboolean ok = TRUE;
  const char *p = s;
  while (ok && *p) {
    /* a count is at most 13 groups of 5 bits, kept unsigned while built
     * so that no shift overflows */
    guint64 bits = 0;
    int k = 0;
    gboolean more = TRUE;
    while (more) {
      if (!*p || *p < 48 || *p > 48 + 63 || k > 12) {
        ok = FALSE;
        break;
      }
      int c = *p - 48;
      bits |= (guint64) (c & 0x1f) << (5 * k);
      more = (c & 0x20) != 0;
      p++;
      k++;
      if (!more && (c & 0x10) && 5 * k < 64)
        bits |= ~(guint64) 0 << (5 * k);
    }
    if (!ok)
      break;
    gint64 x = (gint64) bits;
    guint m = counts->len;
    if (m > 2) {
      /* both counts lie in [0, total]: a larger difference is malformed
       * (and would overflow the sum) */
      if (x < -total || x > total) {
        ok = FALSE;
        break;
      }
      x += g_array_index (counts, gint64, m - 2);
    }
    g_array_append_val (counts, x);
    if (x < 0 || x > total - pos) {
      ok = FALSE;
      break;
    }
    for (gint64 i = 0; i < x; i++, pos++) {
      gint64 col = pos / height, row = pos % height;
      mask[row * width + col] = (uint8_t) (m & 1);
    }
  }
  g_array_free (counts, TRUE);
  return ok && pos == total;
}
