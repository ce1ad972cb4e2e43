/* Outer contours of a binary mask as polygons, in COCO's convention: the
 * vertices are pixel corners, so the polygon [x0,y0, x1,y0, x1,y1, x0,y1]
 * covers the pixels x0 <= x < x1, y0 <= y < y1 (what pycocotools'
 * frPyObjects fills).
 *
 * Each 8-connected part of the mask is traced along the cracks between its
 * pixels and the background ("crack following"): the walk keeps the part on
 * its right and, at every corner, looks at the two pixels ahead of it:
 *
 *   ahead-left set            -> turn left  (a diagonal neighbour is part
 *                                            of the same 8-connected part)
 *   else ahead-right set      -> straight on
 *   else                      -> turn right
 *
 * It starts on the top edge of the part's first pixel in raster order,
 * whose upper neighbour is outside, so the walk is the outer boundary;
 * holes are not traced (a COCO polygon cannot hold them).  A vertex is
 * written where the direction changes. */
#include "mrcnn.h"

/* directions, clockwise on screen (y down): east, south, west, north */
static const int step_x[4] = { 1, 0, -1, 0 };
static const int step_y[4] = { 0, 1, 0, -1 };
/* pixels around a corner, relative to it: NE, SE, SW, NW; heading d, the
 * pixel ahead-left is corner_pixel[d] and ahead-right corner_pixel[d + 1] */
static const int corner_dx[4] = { 0, 0, -1, -1 };
static const int corner_dy[4] = { -1, 0, 0, -1 };

typedef struct {
  int *labels;         /* (w + 2) x (h + 2), a border of zeros around */
  int stride;
} Parts;

static inline int
label_at (const Parts *p, int x, int y)
{
  return p->labels[(y + 1) * p->stride + x + 1];
}

static void
append_vertex (GArray *xy, int x, int y)
{
  g_array_append_val (xy, x);
  g_array_append_val (xy, y);
}

/* The outer boundary of part `label`, from the top-left corner of its first
 * pixel (sx, sy) heading east; vertices offset by the origin. */
static GArray *
trace (const Parts *p, int label, int sx, int sy, int origin_x, int origin_y)
{
  GArray *xy = g_array_new (FALSE, FALSE, sizeof (int));
  append_vertex (xy, sx + origin_x, sy + origin_y);
  int x = sx, y = sy, d = 0;
  do {
    x += step_x[d];
    y += step_y[d];
    int l = d, r = (d + 1) & 3;
    gboolean left = label_at (p, x + corner_dx[l], y + corner_dy[l]) == label;
    gboolean right = label_at (p, x + corner_dx[r], y + corner_dy[r]) == label;
    int nd = left ? (d + 3) & 3 : right ? d : (d + 1) & 3;
    /* back at the start the walk turns east again: that vertex is first */
    if (nd != d && !(x == sx && y == sy))
      append_vertex (xy, x + origin_x, y + origin_y);
    d = nd;
  } while (!(x == sx && y == sy && d == 0));
  return xy;
}

GPtrArray *
mrcnn_mask_polygons (const uint8_t *rect, int rect_x, int rect_y,
    int rect_width, int rect_height, uint8_t threshold, int image_width,
    int image_height)
{
  GPtrArray *polygons = g_ptr_array_new_with_free_func ((GDestroyNotify)
      g_array_unref);
  /* the part of the rectangle inside the image */
  int x0 = CLAMP (rect_x, 0, image_width), y0 = CLAMP (rect_y, 0,
      image_height);
  int x1 = CLAMP (rect_x + rect_width, x0, image_width);
  int y1 = CLAMP (rect_y + rect_height, y0, image_height);
  int w = x1 - x0, h = y1 - y0;
  if (w == 0 || h == 0)
    return polygons;

  Parts p = { g_new0 (int, (gsize) (w + 2) * (h + 2)), w + 2 };
  /* -1: set, not yet labelled */
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      if (rect[(gsize) (y + y0 - rect_y) * rect_width + x + x0 - rect_x]
          >= threshold)
        p.labels[(y + 1) * p.stride + x + 1] = -1;

  GArray *stack = g_array_new (FALSE, FALSE, sizeof (int));
  int n_labels = 0;
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      int seed = (y + 1) * p.stride + x + 1;
      if (p.labels[seed] != -1)
        continue;
      /* flood the 8-connected part; the border of zeros stops it */
      int label = ++n_labels;
      p.labels[seed] = label;
      g_array_append_val (stack, seed);
      while (stack->len > 0) {
        int i = g_array_index (stack, int, stack->len - 1);
        g_array_set_size (stack, stack->len - 1);
        for (int dy = -1; dy <= 1; dy++)
          for (int dx = -1; dx <= 1; dx++) {
            int j = i + dy * p.stride + dx;
            if (p.labels[j] == -1) {
              p.labels[j] = label;
              g_array_append_val (stack, j);
            }
          }
      }
      g_ptr_array_add (polygons, trace (&p, label, x, y, x0, y0));
    }
  g_array_free (stack, TRUE);
  g_free (p.labels);
  return polygons;
}
