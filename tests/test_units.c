/* Unit tests for the pieces of the pipeline with discontinuities: resize
 * sizes, anchors, NMS, top-k ties, ROIAlign sampling and level choice, RLE,
 * and the im2col convolution against its definition; for matterport the
 * mold sizes, anchors, box coding, TF NMS, pyramid level, crop_and_resize
 * and the skimage resize.
 * Expected numbers are MODEL_SPEC's worked examples or hand-derived. */
#include <math.h>
#include <string.h>

#include "cpu/cpu_backend.h"
#include "geometry.h"
#include "safetensors.h"
#include "sidecar.h"

static MrcnnConfig config;

static void
test_resize_sizes (void)
{
  static const struct {
    int h, w, rh, rw, ph, pw;
  } cases[] = {
    { 480, 640, 800, 1066, 800, 1088 },
    { 427, 640, 799, 1199, 800, 1216 },
    { 375, 500, 799, 1066, 800, 1088 },
    { 1000, 3000, 444, 1332, 448, 1344 },
    { 1200, 1600, 800, 1066, 800, 1088 },
    { 900, 1000, 800, 888, 800, 896 },
    { 640, 480, 1066, 800, 1088, 800 },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    MrcnnGeometry g;
    g_assert_true (mrcnn_geometry_compute (&config, cases[i].w, cases[i].h,
            &g, NULL));
    g_assert_cmpint (g.height, ==, cases[i].rh);
    g_assert_cmpint (g.width, ==, cases[i].rw);
    g_assert_cmpint (g.padded_height, ==, cases[i].ph);
    g_assert_cmpint (g.padded_width, ==, cases[i].pw);
  }
  int max_h, max_w;
  size_t area = mrcnn_geometry_max_padded_area (&config, &max_h, &max_w);
  g_assert_cmpuint (area, ==, 800 * 1344);
  g_assert_cmpint (max_w, ==, 1344);
}

static void
test_resize_rejects_degenerate (void)
{
  MrcnnGeometry g;
  GError *error = NULL;
  g_assert_false (mrcnn_geometry_compute (&config, 20000, 1, &g, &error));
  g_assert_error (error, MRCNN_ERROR, MRCNN_ERROR_INVALID_ARGUMENT);
  g_assert_nonnull (strstr (error->message, "elongated"));
  g_clear_error (&error);
  g_assert_false (mrcnn_geometry_compute (&config, 0, 10, &g, &error));
  g_assert_error (error, MRCNN_ERROR, MRCNN_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);
}

/* Frames of sizes A B A A B C: the backbone takes the first frame not yet
 * run and the next of its size, up to max, in order; a limit (a failed
 * frame) leaves the frames from it out. */
static void
test_batch_groups (void)
{
  static const int sizes[6][2] = { { 800, 1216 }, { 1216, 800 },
    { 800, 1216 }, { 800, 1216 }, { 1216, 800 }, { 512, 512 } };
  MrcnnGeometry geometry[6] = { 0 };
  for (int i = 0; i < 6; i++) {
    geometry[i].padded_height = sizes[i][0];
    geometry[i].padded_width = sizes[i][1];
    geometry[i].width = 100 + i; /* not what groups them */
  }
  static const struct {
    int limit, max;
    const char *groups;
  } cases[] = {
    { 6, 2, "0 2|1 4|3|5|" },
    { 6, 3, "0 2 3|1 4|5|" },
    { 6, 1, "0|1|2|3|4|5|" },
    { 4, 8, "0 2 3|1|" },
    { 0, 8, "" },
  };
  for (gsize c = 0; c < G_N_ELEMENTS (cases); c++) {
    uint8_t taken[6] = { 0 };
    int group[8], k;
    GString *got = g_string_new (NULL);
    while ((k = mrcnn_geometry_next_group (geometry, taken, cases[c].limit,
                cases[c].max, group)) > 0) {
      g_assert_cmpint (k, <=, cases[c].max);
      for (int j = 0; j < k; j++)
        g_string_append_printf (got, j ? " %d" : "%d", group[j]);
      g_string_append_c (got, '|');
    }
    g_assert_cmpstr (got->str, ==, cases[c].groups);
    g_string_free (got, TRUE);
  }
}

static void
test_linear_taps (void)
{
  /* upscaling 2 -> 4: sources -0.25 (clamped), 0.25, 0.75, 1.25 (edge) */
  int i0[4], i1[4];
  float l[4];
  mrcnn_linear_taps (2, 4, i0, i1, l);
  g_assert_cmpint (i0[0], ==, 0);
  g_assert_cmpfloat (l[0], ==, 0.0f);
  g_assert_cmpfloat_with_epsilon (l[1], 0.25f, 1e-7);
  g_assert_cmpfloat_with_epsilon (l[2], 0.75f, 1e-7);
  g_assert_cmpint (i0[3], ==, 1);
  g_assert_cmpint (i1[3], ==, 1);
}

static void
test_base_anchors (void)
{
  /* MODEL_SPEC B.5: rounded half sizes, ratio h/w, wide anchor first */
  static const float expected[5][3][4] = {
    { { -23, -11, 23, 11 }, { -16, -16, 16, 16 }, { -11, -23, 11, 23 } },
    { { -45, -23, 45, 23 }, { -32, -32, 32, 32 }, { -23, -45, 23, 45 } },
    { { -91, -45, 91, 45 }, { -64, -64, 64, 64 }, { -45, -91, 45, 91 } },
    { { -181, -91, 181, 91 }, { -128, -128, 128, 128 },
      { -91, -181, 91, 181 } },
    { { -362, -181, 362, 181 }, { -256, -256, 256, 256 },
      { -181, -362, 181, 362 } },
  };
  for (int level = 0; level < 5; level++) {
    float base[3][4];
    mrcnn_base_anchors (&config, level, &base[0][0]);
    for (int a = 0; a < 3; a++)
      for (int k = 0; k < 4; k++)
        g_assert_cmpfloat (base[a][k], ==, expected[level][a][k]);
  }
}

static void
test_level_anchor (void)
{
  /* 480x640 pads to 800x1088: the pool level is 13x17 with strides
   * 800 // 13 = 61 and 1088 // 17 = 64 (MODEL_SPEC C.2) */
  float base[3][4], anchor[4];
  mrcnn_base_anchors (&config, 4, &base[0][0]);
  int stride_y = 800 / 13, stride_x = 1088 / 17;
  g_assert_cmpint (stride_y, ==, 61);
  /* cell (y = 2, x = 5), ratio 2 (tall) */
  mrcnn_level_anchor (&base[0][0], 3, 17, stride_x, stride_y,
      (2 * 17 + 5) * 3 + 2, anchor);
  g_assert_cmpfloat (anchor[0], ==, 5 * 64 - 181);
  g_assert_cmpfloat (anchor[1], ==, 2 * 61 - 362);
  g_assert_cmpfloat (anchor[2], ==, 5 * 64 + 181);
  g_assert_cmpfloat (anchor[3], ==, 2 * 61 + 362);
}

static void
test_decode_box (void)
{
  /* zero deltas return the box; dw is clamped at log(1000/16) */
  static const float w1[4] = { 1, 1, 1, 1 };
  float box[4] = { 10, 20, 30, 60 }, zero[4] = { 0 }, out[4];
  mrcnn_decode_box (box, zero, w1, config.bbox_xform_clip, out);
  for (int k = 0; k < 4; k++)
    g_assert_cmpfloat_with_epsilon (out[k], box[k], 1e-5);
  float big[4] = { 0, 0, 100, 0 };
  mrcnn_decode_box (box, big, w1, config.bbox_xform_clip, out);
  g_assert_cmpfloat_with_epsilon (out[2] - out[0], 20.0f * 1000 / 16, 1e-2);
  /* box coder weights divide: dx 10 / wx 10 moves by one width */
  float shift[4] = { 10, 0, 0, 0 };
  mrcnn_decode_box (box, shift, config.box_coder_weights,
      config.bbox_xform_clip, out);
  g_assert_cmpfloat_with_epsilon (out[0], 30, 1e-5);
}

static void
test_nms (void)
{
  /* 0 and 1 overlap with IoU 0.6; 1 and 2 overlap with IoU 0.6 but 0 and
   * 2 do not: suppressing 1 must leave 2.  Box 3 has IoU exactly 0.5 with
   * 0 and survives a 0.5 threshold (suppression is strict). */
  static const float boxes[] = {
    0, 0, 10, 10,  /* 0 */
    2.5f, 0, 12.5f, 10, /* 1: inter 75 / union 125 = 0.6 with 0 */
    5, 0, 15, 10,  /* 2: IoU 1/3 with 0, 0.6 with 1 */
    0, 0, 10, 5,   /* 3: IoU 0.5 with 0 */
  };
  int order[4] = { 0, 1, 2, 3 }, keep[4];
  uint8_t removed[4];
  int n = mrcnn_nms (boxes, order, 4, 0.5f, removed, keep);
  g_assert_cmpint (n, ==, 3);
  g_assert_cmpint (keep[0], ==, 0);
  g_assert_cmpint (keep[1], ==, 2);
  g_assert_cmpint (keep[2], ==, 3);
  /* the visit order decides: starting from 1 removes 0 and 2 */
  int order2[4] = { 1, 0, 2, 3 };
  n = mrcnn_nms (boxes, order2, 4, 0.5f, removed, keep);
  g_assert_cmpint (n, ==, 2);
  g_assert_cmpint (keep[0], ==, 1);
  g_assert_cmpint (keep[1], ==, 3);
}

static void
test_argsort_ties (void)
{
  static const float scores[] = { 0.5f, 0.9f, 0.5f, 0.9f, 0.1f, 0.5f };
  int order[6], scratch[6];
  mrcnn_argsort_desc (scores, 6, order, scratch);
  static const int expected[6] = { 1, 3, 0, 2, 5, 4 };
  for (int i = 0; i < 6; i++)
    g_assert_cmpint (order[i], ==, expected[i]);

  /* a long run against a reference ordering (odd length, many ties) */
  enum { N = 1001 };
  float many[N];
  int sorted[N], tmp[N];
  for (int i = 0; i < N; i++)
    many[i] = (float) ((i * 7919) % 13);
  mrcnn_argsort_desc (many, N, sorted, tmp);
  for (int i = 1; i < N; i++) {
    float a = many[sorted[i - 1]], b = many[sorted[i]];
    g_assert_true (a > b || (a == b && sorted[i - 1] < sorted[i]));
  }
}

/* f(y, x) = 2y + 3x + 1: bilinear sampling reproduces it exactly inside
 * the map, so each pooled cell is f at the mean of its sample points. */
static void
test_roi_align (void)
{
  enum { H = 8, W = 8 };
  float f[2 * H * W];
  for (int c = 0; c < 2; c++)
    for (int y = 0; y < H; y++)
      for (int x = 0; x < W; x++)
        f[(c * H + y) * W + x] = (c + 1) * (2.0f * y + 3.0f * x + 1.0f);

  float out[2 * 2 * 2];
  float box[4] = { 0, 0, 8, 8 };
  cpu_roi_align (f, 2, H, W, 1.0f, box, 2, 2, out);
  /* cell (0,0) samples y, x in {1, 3}; cell (1,1) in {5, 7} */
  g_assert_cmpfloat_with_epsilon (out[0], 11.0f, 1e-5);
  g_assert_cmpfloat_with_epsilon (out[3], 31.0f, 1e-5);
  g_assert_cmpfloat_with_epsilon (out[4 + 3], 62.0f, 1e-5);

  /* scale maps image pixels to the map; a side below 1 is widened to 1 */
  float small[4] = { 4, 4, 4.4f, 4.4f };
  cpu_roi_align (f, 1, H, W, 0.5f, small, 1, 2, out);
  g_assert_cmpfloat_with_epsilon (out[0], 2 * 2.5f + 3 * 2.5f + 1, 1e-5);

  /* samples beyond the map by more than one pixel count as zero, those
   * within clamp to the edge */
  float edge[4] = { 6, 8.5f, 10, 10.5f };
  cpu_roi_align (f, 1, H, W, 1.0f, edge, 1, 2, out);
  /* y samples 9.0 (> H: zero) and 10.0 (zero): every sample is zero */
  g_assert_cmpfloat (out[0], ==, 0.0f);
  float clamp[4] = { 0, 7.2f, 1, 8.2f };
  cpu_roi_align (f, 1, H, W, 1.0f, clamp, 1, 2, out);
  /* y samples 7.45 and 7.95 clamp to row 7; x samples 0.25, 0.75 */
  g_assert_cmpfloat_with_epsilon (out[0], 2 * 7 + 3 * 0.5f + 1, 1e-5);
}

static void
test_roi_level (void)
{
  /* MODEL_SPEC C.2: 224 px -> level 4, 160 px -> level 3 (floor) */
  float b224[4] = { 0, 0, 224, 224 }, b160[4] = { 0, 0, 160, 160 };
  float tiny[4] = { 5, 5, 5, 5 }, huge[4] = { 0, 0, 2000, 2000 };
  g_assert_cmpint (mrcnn_roi_level (b224, 2, 5), ==, 2);
  g_assert_cmpint (mrcnn_roi_level (b160, 2, 5), ==, 1);
  g_assert_cmpint (mrcnn_roi_level (tiny, 2, 5), ==, 0);
  g_assert_cmpint (mrcnn_roi_level (huge, 2, 5), ==, 3);
}

/* Direct convolution, the definition, for checking the im2col path of the
 * heads' convolutions. */
static float
conv_at (const MrcnnConv *c, const float *in, int h, int w, int o, int oy,
    int ox)
{
  double acc = c->bias[o];
  for (int ci = 0; ci < c->in_channels; ci++)
    for (int ky = 0; ky < c->kernel; ky++)
      for (int kx = 0; kx < c->kernel; kx++) {
        int iy = oy * c->stride - c->pad + ky, ix = ox * c->stride - c->pad
            + kx;
        if (iy >= 0 && iy < h && ix >= 0 && ix < w)
          acc += (double) c->weight[((o * c->in_channels + ci) * c->kernel
                  + ky) * c->kernel + kx] * in[(ci * h + iy) * w + ix];
      }
  return (float) acc;
}

static void
test_conv2d (void)
{
  static const int shapes[][3] = { /* kernel, stride, pad */
    { 1, 1, 0 }, { 1, 2, 0 }, { 3, 1, 1 }, { 3, 2, 1 }, { 7, 2, 3 },
    { 3, 1, 0 }, { 3, 2, 2 },
  };
  static const int sizes[] = { 1, 2, 5, 9 };
  GRand *rand = g_rand_new_with_seed (3);
  float in[3 * 9 * 9], out[4 * 9 * 9], gemm[4 * 9 * 9], col[3 * 49 * 9 * 9];
  float weight[4 * 3 * 49], bias[4];
  for (gsize i = 0; i < G_N_ELEMENTS (in); i++)
    in[i] = (float) g_rand_double_range (rand, -1, 1);
  for (gsize i = 0; i < G_N_ELEMENTS (weight); i++)
    weight[i] = (float) g_rand_double_range (rand, -1, 1);
  for (int o = 0; o < 4; o++)
    bias[o] = (float) g_rand_double_range (rand, -1, 1);
  for (gsize k = 0; k < G_N_ELEMENTS (shapes); k++)
    for (gsize a = 0; a < G_N_ELEMENTS (sizes); a++)
      for (gsize b = 0; b < G_N_ELEMENTS (sizes); b++) {
        MrcnnConv c = { 3, 4, shapes[k][0], shapes[k][1], shapes[k][2],
          weight, bias };
        int h = sizes[a], w = sizes[b];
        int oh = conv_out_size (h, &c), ow = conv_out_size (w, &c);
        if (oh < 1 || ow < 1)
          continue;
        cpu_conv2d_many (&c, in, 1, h, w, out, gemm, col);
        for (int o = 0; o < 4; o++)
          for (int y = 0; y < oh; y++)
            for (int x = 0; x < ow; x++)
              g_assert_cmpfloat_with_epsilon (out[(o * oh + y) * ow + x],
                  MAX (conv_at (&c, in, h, w, o, y, x), 0.0f), 1e-4);
      }
  g_rand_free (rand);
}

static void
test_conv2d_many (void)
{
  /* n images through one GEMM equal n separate convolutions + ReLU */
  enum { N = 3, C = 2, O = 3, H = 4 };
  float in[N * C * H * H], weight[O * C * 9], bias[O];
  float many[N * O * H * H], one[O * H * H], gemm[N * O * H * H];
  float col[C * 9 * N * H * H];
  for (gsize i = 0; i < G_N_ELEMENTS (in); i++)
    in[i] = (float) ((i * 37) % 11) - 5;
  for (gsize i = 0; i < G_N_ELEMENTS (weight); i++)
    weight[i] = (float) ((i * 13) % 7) - 3;
  for (int o = 0; o < O; o++)
    bias[o] = (float) o - 1;
  MrcnnConv c = { C, O, 3, 1, 1, weight, bias };
  cpu_conv2d_many (&c, in, N, H, H, many, gemm, col);
  for (int n = 0; n < N; n++) {
    cpu_conv2d_many (&c, in + n * C * H * H, 1, H, H, one, gemm, col);
    g_assert_cmpmem (many + n * O * H * H, sizeof one, one, sizeof one);
  }
}

static void
test_rle_known (void)
{
  /* 3 wide, 2 high: columns read 00 10 11 -> runs 2,1,1,2; counts from the
   * fourth on are stored as differences to the one two back: "2111" */
  static const uint8_t mask[6] = { 0, 1, 1, 0, 0, 1 };
  char *s = mrcnn_rle_encode (mask, 3, 2);
  g_assert_cmpstr (s, ==, "2111");
  uint8_t back[6];
  g_assert_true (mrcnn_rle_decode (s, 3, 2, back));
  g_assert_cmpmem (back, 6, mask, 6);
  g_free (s);
  static const uint8_t zeros[4] = { 0 };
  s = mrcnn_rle_encode (zeros, 2, 2);
  g_assert_cmpstr (s, ==, "4");
  g_free (s);

  /* a 50x40 rectangle with a hole, as pycocotools' mask.encode writes it */
  uint8_t *rect = g_new0 (uint8_t, 50 * 40);
  for (int y = 3; y < 30; y++)
    for (int x = 7; x < 45; x++)
      rect[y * 50 + x] = !(y == 10 && x == 10);
  s = mrcnn_rle_encode (rect, 50, 40);
  g_assert_cmpstr (s, ==, "k8k0=0000\\OD<<8000000000000000000000000000000000000000000000000000000000000000000U6");
  g_free (s);
  g_free (rect);

  g_assert_false (mrcnn_rle_decode ("5", 2, 2, back));   /* too long */
  g_assert_false (mrcnn_rle_decode ("2", 2, 2, back));   /* too short */
  g_assert_false (mrcnn_rle_decode ("2 ", 2, 2, back));  /* bad char */
}

static void
test_rle_round_trip (void)
{
  GRand *rand = g_rand_new_with_seed (7);
  for (int t = 0; t < 50; t++) {
    int w = g_rand_int_range (rand, 1, 300), h = g_rand_int_range (rand, 1,
        200);
    uint8_t *mask = g_new0 (uint8_t, w * h), *back = g_new (uint8_t, w * h);
    /* blobs with long runs, and some pixel noise */
    int bx = g_rand_int_range (rand, 0, w), by = g_rand_int_range (rand, 0, h);
    int bw = g_rand_int_range (rand, 0, w - bx + 1),
        bh = g_rand_int_range (rand, 0, h - by + 1);
    for (int y = by; y < by + bh; y++)
      for (int x = bx; x < bx + bw; x++)
        mask[y * w + x] = g_rand_int_range (rand, 0, 20) > 0;
    char *s = mrcnn_rle_encode (mask, w, h);
    g_assert_true (mrcnn_rle_decode (s, w, h, back));
    g_assert_cmpmem (back, w * h, mask, w * h);

    /* a detection holding the blob's window encodes the same */
    uint8_t *window = g_new0 (uint8_t, MAX (bw * bh, 1));
    for (int y = 0; y < bh; y++)
      memcpy (window + y * bw, mask + (by + y) * w + bx, bw);
    MrcnnDetection det = { .mask_x = bx, .mask_y = by, .mask_width = bw,
      .mask_height = bh, .mask_binary = window };
    char *s2 = mrcnn_rle_encode_detection (&det, w, h);
    g_assert_cmpstr (s2, ==, s);
    g_free (s2);
    g_free (window);
    g_free (s);
    g_free (mask);
    g_free (back);
  }
  g_rand_free (rand);
}

/* A soft rectangle thresholded and placed in the image, partly outside it,
 * encodes as the full-image mask built by hand. */
static void
test_rle_rect (void)
{
  GRand *rand = g_rand_new_with_seed (11);
  for (int t = 0; t < 50; t++) {
    int w = g_rand_int_range (rand, 1, 120), h = g_rand_int_range (rand, 1,
        90);
    int rw = g_rand_int_range (rand, 0, 60), rh = g_rand_int_range (rand, 0,
        60);
    int rx = g_rand_int_range (rand, -30, w), ry = g_rand_int_range (rand,
        -30, h);
    uint8_t *rect = g_new (uint8_t, MAX (rw * rh, 1));
    for (int i = 0; i < rw * rh; i++)
      rect[i] = (uint8_t) g_rand_int_range (rand, 0, 256);
    uint8_t *full = g_new0 (uint8_t, w * h);
    for (int y = 0; y < rh; y++)
      for (int x = 0; x < rw; x++)
        if (rx + x >= 0 && rx + x < w && ry + y >= 0 && ry + y < h)
          full[(ry + y) * w + rx + x] = rect[y * rw + x] >= 128;
    char *expected = mrcnn_rle_encode (full, w, h);
    char *s = mrcnn_rle_encode_rect (rect, rx, ry, rw, rh, 128, w, h);
    g_assert_cmpstr (s, ==, expected);
    g_free (s);
    g_free (expected);
    g_free (full);
    g_free (rect);
  }
  g_rand_free (rand);
}

static void
assert_polygon (GPtrArray *polygons, guint i, const int *xy, guint n)
{
  GArray *p = g_ptr_array_index (polygons, i);
  g_assert_cmpmem (p->data, p->len * sizeof (int), xy, n * sizeof (int));
}

/* Contours of small masks written out by hand. */
static void
test_polygons_known (void)
{
  /* one pixel at (1, 2) of a 2x2 rectangle placed at (10, 20) */
  static const uint8_t one[] = { 0, 0, 0, 255 };
  GPtrArray *ps = mrcnn_mask_polygons (one, 9, 19, 2, 2, 128, 100, 100);
  g_assert_cmpuint (ps->len, ==, 1);
  assert_polygon (ps, 0, (int[]) { 10, 20, 11, 20, 11, 21, 10, 21 }, 8);
  g_ptr_array_unref (ps);

  /* an L: the concave corner is a vertex */
  static const uint8_t ell[] = {
    1, 0,
    1, 1,
  };
  ps = mrcnn_mask_polygons (ell, 0, 0, 2, 2, 1, 2, 2);
  g_assert_cmpuint (ps->len, ==, 1);
  assert_polygon (ps, 0, (int[]) { 0, 0, 1, 0, 1, 1, 2, 1, 2, 2, 0, 2 }, 12);
  g_ptr_array_unref (ps);

  /* pixels touching at a corner are one part; apart, two */
  static const uint8_t diagonal[] = {
    1, 0, 0,
    0, 1, 0,
    0, 0, 1,
  };
  ps = mrcnn_mask_polygons (diagonal, 0, 0, 3, 3, 1, 3, 3);
  g_assert_cmpuint (ps->len, ==, 1);
  assert_polygon (ps, 0, (int[]) { 0, 0, 1, 0, 1, 1, 2, 1, 2, 2, 3, 2, 3, 3,
        2, 3, 2, 2, 1, 2, 1, 1, 0, 1 }, 24);
  g_ptr_array_unref (ps);
  static const uint8_t apart[] = {
    1, 0, 1,
  };
  ps = mrcnn_mask_polygons (apart, 0, 0, 3, 1, 1, 3, 1);
  g_assert_cmpuint (ps->len, ==, 2);
  assert_polygon (ps, 1, (int[]) { 2, 0, 3, 0, 3, 1, 2, 1 }, 8);
  g_ptr_array_unref (ps);

  /* a ring: the outer square only */
  static const uint8_t ring[] = {
    1, 1, 1,
    1, 0, 1,
    1, 1, 1,
  };
  ps = mrcnn_mask_polygons (ring, 0, 0, 3, 3, 1, 3, 3);
  g_assert_cmpuint (ps->len, ==, 1);
  assert_polygon (ps, 0, (int[]) { 0, 0, 3, 0, 3, 3, 0, 3 }, 8);
  g_ptr_array_unref (ps);

  /* clipped to the image; nothing left of an empty or outside mask */
  static const uint8_t full[] = { 1, 1, 1, 1 };
  ps = mrcnn_mask_polygons (full, -1, -1, 2, 2, 1, 5, 5);
  g_assert_cmpuint (ps->len, ==, 1);
  assert_polygon (ps, 0, (int[]) { 0, 0, 1, 0, 1, 1, 0, 1 }, 8);
  g_ptr_array_unref (ps);
  ps = mrcnn_mask_polygons (full, 5, 0, 2, 2, 1, 5, 5);
  g_assert_cmpuint (ps->len, ==, 0);
  g_ptr_array_unref (ps);
  ps = mrcnn_mask_polygons (one, 0, 0, 2, 2, 1, 5, 5);
  g_assert_cmpuint (ps->len, ==, 1);
  g_ptr_array_unref (ps);
  ps = mrcnn_mask_polygons (one, 0, 0, 2, 2, 0xff, 5, 5);
  g_assert_cmpuint (ps->len, ==, 1);
  g_ptr_array_unref (ps);
  static const uint8_t soft[] = { 127, 0, 0, 0 };
  ps = mrcnn_mask_polygons (soft, 0, 0, 2, 2, 128, 5, 5);
  g_assert_cmpuint (ps->len, ==, 0);
  g_ptr_array_unref (ps);
}

/* Even-odd test of the pixel centre (x + 0.5, y + 0.5): never on an edge,
 * since the vertices are integer corners. */
static gboolean
polygon_covers (const GArray *p, int x, int y)
{
  const int *v = (const int *) p->data;
  int n = p->len / 2;
  double px = x + 0.5, py = y + 0.5;
  gboolean inside = FALSE;
  for (int i = 0, j = n - 1; i < n; j = i++) {
    double xi = v[2 * i], yi = v[2 * i + 1], xj = v[2 * j], yj = v[2 * j + 1];
    if ((yi > py) != (yj > py) && px < xi + (py - yi) * (xj - xi) / (yj - yi))
      inside = !inside;
  }
  return inside;
}

/* Random blobs with noise: the union of the filled polygons is the mask
 * with its holes filled (background not 4-connected to the outside), and
 * the edges are axis-aligned unit steps apart. */
static void
test_polygons_fill_back (void)
{
  GRand *rand = g_rand_new_with_seed (5);
  for (int t = 0; t < 40; t++) {
    int w = g_rand_int_range (rand, 1, 40), h = g_rand_int_range (rand, 1,
        40);
    uint8_t *mask = g_new0 (uint8_t, w * h);
    int density = g_rand_int_range (rand, 20, 90);
    for (int i = 0; i < w * h; i++)
      mask[i] = g_rand_int_range (rand, 0, 100) < density ? 200 : 50;
    /* expected: everything but the background reachable from outside */
    uint8_t *outside = g_new0 (uint8_t, w * h);
    GArray *stack = g_array_new (FALSE, FALSE, sizeof (int));
    for (int i = 0; i < w * h; i++) {
      int x = i % w, y = i / w;
      if ((x == 0 || y == 0 || x == w - 1 || y == h - 1) && mask[i] < 128) {
        outside[i] = 1;
        g_array_append_val (stack, i);
      }
    }
    while (stack->len > 0) {
      int i = g_array_index (stack, int, stack->len - 1);
      g_array_set_size (stack, stack->len - 1);
      int x = i % w, y = i / w;
      const int nx[4] = { x - 1, x + 1, x, x }, ny[4] = { y, y, y - 1, y + 1 };
      for (int k = 0; k < 4; k++) {
        if (nx[k] < 0 || ny[k] < 0 || nx[k] >= w || ny[k] >= h)
          continue;
        int j = ny[k] * w + nx[k];
        if (!outside[j] && mask[j] < 128) {
          outside[j] = 1;
          g_array_append_val (stack, j);
        }
      }
    }
    int ox = g_rand_int_range (rand, 0, 50), oy = g_rand_int_range (rand, 0,
        50);
    GPtrArray *ps = mrcnn_mask_polygons (mask, ox, oy, w, h, 128, ox + w,
        oy + h);
    for (guint k = 0; k < ps->len; k++) {
      GArray *p = g_ptr_array_index (ps, k);
      const int *v = (const int *) p->data;
      int n = p->len / 2;
      g_assert_cmpint (n, >=, 4);
      for (int i = 0; i < n; i++) {
        int j = (i + 1) % n;
        g_assert_true ((v[2 * i] == v[2 * j]) != (v[2 * i + 1]
                == v[2 * j + 1]));
      }
    }
    for (int y = 0; y < h; y++)
      for (int x = 0; x < w; x++) {
        gboolean covered = FALSE;
        for (guint k = 0; k < ps->len && !covered; k++)
          covered = polygon_covers (g_ptr_array_index (ps, k), x + ox, y + oy);
        g_assert_cmpint (covered, ==, !outside[y * w + x]);
      }
    g_ptr_array_unref (ps);
    g_array_free (stack, TRUE);
    g_free (outside);
    g_free (mask);
  }
  g_rand_free (rand);
}

/* ---- matterport (MODEL_SPEC A.2, A.5 to A.8, C.2) ---------------------- */

static void
test_mp_geometry (void)
{
  MrcnnConfig c;
  mrcnn_config_init_matterport (&c);
  static const struct {
    int h, w, rh, rw, top, left;
    double scale;
  } cases[] = {
    { 480, 640, 768, 1024, 128, 0, 1.6 },   /* C.2: window (128,0,896,1024) */
    { 900, 1000, 900, 1000, 62, 12, 1.0 },  /* no resize (62,12,962,1012) */
    { 1200, 1600, 768, 1024, 128, 0, 0.64 },
    { 640, 480, 1024, 768, 0, 128, 1.6 },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    MrcnnGeometry g;
    g_assert_true (mrcnn_geometry_compute (&c, cases[i].w, cases[i].h, &g,
            NULL));
    g_assert_cmpint (g.height, ==, cases[i].rh);
    g_assert_cmpint (g.width, ==, cases[i].rw);
    g_assert_cmpint (g.padded_height, ==, 1024);
    g_assert_cmpint (g.padded_width, ==, 1024);
    g_assert_cmpint (g.pad_top, ==, cases[i].top);
    g_assert_cmpint (g.pad_left, ==, cases[i].left);
    g_assert_cmpfloat_with_epsilon (g.scale, cases[i].scale, 1e-12);
  }

  /* pad64: scale up to IMAGE_MIN_DIM only, then centre on multiples of 64;
   * none: untouched, sides must divide by 32 */
  MrcnnGeometry g;
  c.resize_mode = MRCNN_RESIZE_PAD64;
  c.min_size = 192;
  g_assert_true (mrcnn_geometry_compute (&c, 300, 200, &g, NULL));
  g_assert_cmpint (g.height, ==, 200);
  g_assert_cmpint (g.padded_height, ==, 256);
  g_assert_cmpint (g.padded_width, ==, 320);
  g_assert_cmpint (g.pad_top, ==, 28);
  g_assert_cmpint (g.pad_left, ==, 10);
  c.resize_mode = MRCNN_RESIZE_NONE;
  g_assert_true (mrcnn_geometry_compute (&c, 320, 256, &g, NULL));
  g_assert_cmpint (g.pad_top + g.pad_left, ==, 0);
  GError *error = NULL;
  g_assert_false (mrcnn_geometry_compute (&c, 300, 256, &g, &error));
  g_assert_error (error, MRCNN_ERROR, MRCNN_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);
  /* larger than the IMAGE_MAX_DIM workspace */
  g_assert_false (mrcnn_geometry_compute (&c, 2048, 256, &g, &error));
  g_assert_nonnull (strstr (error->message, "IMAGE_MAX_DIM"));
  g_clear_error (&error);
  /* a side of 1 pixel after resizing: unmold_detections would divide by a
   * window of height 0 */
  c.resize_mode = MRCNN_RESIZE_SQUARE;
  c.min_size = 64;
  c.max_size = 64;
  g_assert_false (mrcnn_geometry_compute (&c, 64, 1, &g, &error));
  g_assert_nonnull (strstr (error->message, "2 pixels"));
  g_clear_error (&error);
  g_assert_true (mrcnn_geometry_compute (&c, 64, 2, &g, NULL));
}

static void
test_mp_anchors (void)
{
  MrcnnConfig c;
  mrcnn_config_init_matterport (&c);
  size_t n = mrcnn_matterport_anchor_count (&c, 1024, 1024);
  g_assert_cmpuint (n, ==, 261888);
  float *a = g_new (float, 4 * n);
  mrcnn_matterport_anchors (&c, 1024, 1024, a);
  float lo = a[0], hi = a[0];
  for (size_t i = 0; i < 4 * n; i++) {
    lo = MIN (lo, a[i]);
    hi = MAX (hi, a[i]);
  }
  g_assert_cmpfloat_with_epsilon (lo, -0.353899f, 1e-6);
  g_assert_cmpfloat_with_epsilon (hi, 1.291338f, 1e-6);
  /* P2 at (0, 0): ratio 0.5 is tall, 22.627 x 11.314 half sides; y2 and
   * x2 are shifted by -1 before dividing by 1023 */
  static const double px[3][4] = {
    { -22.627417, -11.313708, 22.627417, 11.313708 },
    { -16, -16, 16, 16 },
    { -11.313708, -22.627417, 11.313708, 22.627417 },
  };
  for (int r = 0; r < 3; r++)
    for (int k = 0; k < 4; k++)
      g_assert_cmpfloat_with_epsilon (a[4 * r + k],
          (px[r][k] - (k >= 2)) / 1023.0, 1e-6);
  /* the next cell is one stride (4 px) to the right */
  g_assert_cmpfloat_with_epsilon (a[12 + 5], (4 - 16) / 1023.0, 1e-6);
  g_free (a);
}

static void
test_mp_decode_clip (void)
{
  static const float std_dev[4] = { 0.1f, 0.1f, 0.2f, 0.2f };
  float box[4] = { 0, 0, 0.5f, 0.25f }, out[4];
  float deltas[4] = { 1, -1, (float) (log (2.0) / 0.2), 0 };
  mrcnn_decode_box_matterport (box, deltas, std_dev, out);
  /* cy 0.25 + 0.05, cx 0.125 - 0.025, h doubled, y2 = y1 + h */
  g_assert_cmpfloat_with_epsilon (out[0], -0.2f, 1e-6);
  g_assert_cmpfloat_with_epsilon (out[1], -0.025f, 1e-6);
  g_assert_cmpfloat_with_epsilon (out[2], 0.8f, 1e-6);
  g_assert_cmpfloat_with_epsilon (out[3], 0.225f, 1e-6);
  static const float window[4] = { 0.125f, 0, 0.875f, 1 };
  mrcnn_clip_box_window (out, window);
  g_assert_cmpfloat (out[0], ==, 0.125f);
  g_assert_cmpfloat (out[1], ==, 0.0f);
  g_assert_cmpfloat_with_epsilon (out[2], 0.8f, 1e-6);
}

static void
test_mp_tf_nms (void)
{
  /* 0 and 1 overlap with IoU exactly 0.5 (2 / 4); 2 is 0 written with
   * its corners swapped; 3 and 4 are empty boxes at the same place */
  static const float boxes[5][4] = {
    { 0, 0, 2, 2 }, { 0, 0, 2, 1 }, { 2, 2, 0, 0 }, { 1, 1, 1, 1 },
    { 1, 1, 1, 1 },
  };
  g_assert_cmpfloat (mrcnn_tf_iou (boxes[0], boxes[1]), ==, 0.5f);
  g_assert_cmpfloat (mrcnn_tf_iou (boxes[0], boxes[2]), ==, 1.0f);
  g_assert_cmpfloat (mrcnn_tf_iou (boxes[3], boxes[4]), ==, 0.0f);
  int order[5] = { 0, 1, 2, 3, 4 }, keep[5];
  uint8_t removed[5];
  /* strict >: an IoU equal to the threshold survives */
  int n = mrcnn_tf_nms (&boxes[0][0], order, 5, 0.5f, 100, removed, keep);
  g_assert_cmpint (n, ==, 4);
  g_assert_cmpint (keep[0], ==, 0);
  g_assert_cmpint (keep[1], ==, 1);
  g_assert_cmpint (keep[2], ==, 3);
  g_assert_cmpint (keep[3], ==, 4);
  n = mrcnn_tf_nms (&boxes[0][0], order, 5, 0.49f, 100, removed, keep);
  g_assert_cmpint (n, ==, 3);
  /* max_output_size */
  n = mrcnn_tf_nms (&boxes[0][0], order, 5, 0.5f, 2, removed, keep);
  g_assert_cmpint (n, ==, 2);
}

static void
test_mp_roi_level (void)
{
  /* C.2 on a 1024 x 1024 input: a 224 px box (223 / 1023 normalised)
   * rounds to level 4, and so does a 160 px one (log2 0.71 = -0.49) */
  float b224[4] = { 0, 0, 223 / 1023.0f, 223 / 1023.0f };
  float b160[4] = { 0.5f, 0.5f, 0.5f + 159 / 1023.0f, 0.5f + 159 / 1023.0f };
  float b112[4] = { 0, 0, 111 / 1023.0f, 111 / 1023.0f };
  float zero[4] = { 0, 0, 0, 0 }, whole[4] = { 0, 0, 1, 1 };
  g_assert_cmpint (mrcnn_matterport_roi_level (b224, 1024, 1024), ==, 4);
  g_assert_cmpint (mrcnn_matterport_roi_level (b160, 1024, 1024), ==, 4);
  g_assert_cmpint (mrcnn_matterport_roi_level (b112, 1024, 1024), ==, 3);
  g_assert_cmpint (mrcnn_matterport_roi_level (zero, 1024, 1024), ==, 2);
  g_assert_cmpint (mrcnn_matterport_roi_level (whole, 1024, 1024), ==, 5);
}

static void
test_mp_crop_and_resize (void)
{
  /* f(y, x) = 10 y + x on a 3 x 3 map, two channels (the second 2 f) */
  float f[2 * 9], out[2 * 9];
  for (int c = 0; c < 2; c++)
    for (int i = 0; i < 9; i++)
      f[c * 9 + i] = (c + 1) * (10.0f * (i / 3) + i % 3);
  /* corner-aligned: the whole map at crop 3 samples every pixel */
  float all[4] = { 0, 0, 1, 1 };
  cpu_crop_and_resize (f, 2, 3, 3, all, 3, out);
  for (int i = 0; i < 18; i++)
    g_assert_cmpfloat (out[i], ==, f[i]);
  /* rows 0.5 and 1.5, columns 0 and 1: bilinear between pixels */
  float part[4] = { 0.25f, 0, 0.75f, 0.5f };
  cpu_crop_and_resize (f, 2, 3, 3, part, 2, out);
  g_assert_cmpfloat_with_epsilon (out[0], 5.0f, 1e-6);
  g_assert_cmpfloat_with_epsilon (out[1], 6.0f, 1e-6);
  g_assert_cmpfloat_with_epsilon (out[2], 15.0f, 1e-6);
  g_assert_cmpfloat_with_epsilon (out[4 + 3], 32.0f, 1e-5);
  /* rows -1, 0, 1 and columns -2, 0, 2: samples outside the map (row -1,
   * column -2) read 0, the map's edge is inside */
  float outside[4] = { -0.5f, -1, 0.5f, 1 };
  cpu_crop_and_resize (f, 1, 3, 3, outside, 3, out);
  for (int j = 0; j < 3; j++)
    g_assert_cmpfloat (out[j], ==, 0.0f);
  g_assert_cmpfloat (out[6], ==, 0.0f);
  g_assert_cmpfloat_with_epsilon (out[7], 10.0f, 1e-6);
  g_assert_cmpfloat_with_epsilon (out[8], 12.0f, 1e-6);
}

/* skimage resize of a 2 x 2 image to 4 x 4, by hand: taps 2 -> 4 are
 * (-1: .25, .75), (0: .75, .25), (0: .25, .75), (1: .75, .25) with index
 * -1 and 2 reading 0; results clip to [10, 40] and truncate to uint8. */
static void
test_mp_zoom_resize (void)
{
  static const struct {
    int i0;
    double w0, w1;
  } taps[4] = { { -1, .25, .75 }, { 0, .75, .25 }, { 0, .25, .75 },
    { 1, .75, .25 } };
  for (int d = 0; d < 4; d++) {
    int i0;
    double w0, w1;
    mrcnn_zoom_tap (2, 4, d, &i0, &w0, &w1);
    g_assert_cmpint (i0, ==, taps[d].i0);
    g_assert_cmpfloat (w0, ==, taps[d].w0);
    g_assert_cmpfloat (w1, ==, taps[d].w1);
  }

  uint8_t rgb[2 * 2 * 3];
  static const uint8_t values[4] = { 10, 20, 30, 40 };
  for (int p = 0; p < 4; p++)
    for (int c = 0; c < 3; c++)
      rgb[3 * p + c] = values[p];
  float input[3 * 4 * 6];
  int i0[8], i1[8];
  float lambda[8];
  double w0[8], w1[8];
  CpuState s = {
    .geometry = { .orig_width = 2, .orig_height = 2, .width = 4,
      .height = 4, .padded_width = 6, .padded_height = 4, .pad_left = 1 },
    .input = input, .taps_i0 = i0, .taps_i1 = i1, .taps_lambda = lambda,
    .taps_w0 = w0, .taps_w1 = w1,
  };
  for (int c = 0; c < 3; c++)
    for (int v = 0; v < 256; v++)
      s.lut[c][v] = (float) (v - 0.5);
  MrcnnImage image = { rgb, 2, 2, 6 };
  cpu_preprocess_matterport (&s, &image);
  /* (0,0): .75 .75 10 = 5.625 clipped up to 10; (1,1): 17.5 -> 17;
   * (2,2): 32.5 -> 32; (3,3): .75 .75 40 = 22.5 (zero beyond) -> 22 */
  const float *plane = input + 2 * 4 * 6;
  g_assert_cmpfloat (plane[0], ==, -0.5f);
  g_assert_cmpfloat (plane[1], ==, 9.5f);
  g_assert_cmpfloat (plane[1 * 6 + 2], ==, 16.5f);
  g_assert_cmpfloat (plane[2 * 6 + 3], ==, 31.5f);
  g_assert_cmpfloat (plane[3 * 6 + 4], ==, 21.5f);
  g_assert_cmpfloat (plane[3 * 6 + 5], ==, -0.5f);
}

/* Hostile inputs the fuzzers found or that were fixed with them. */

/* 1 000 000 nested brackets overflowed json-glib's recursion (the stack):
 * in a sidecar, its KEY = VALUE form, a safetensors header, a metadata
 * value.  Each is now refused with an error. */
static void
test_deep_json (void)
{
  const int depth = 1000000;
  GString *text = g_string_new ("{\"a\": ");
  for (int i = 0; i < depth; i++)
    g_string_append_c (text, '[');
  for (int i = 0; i < depth; i++)
    g_string_append_c (text, ']');
  g_string_append_c (text, '}');

  GError *error = NULL;
  g_assert_null (mrcnn_sidecar_parse (text->str, "deep.json", &error));
  g_assert_nonnull (strstr (error->message, "nested deeper"));
  g_clear_error (&error);

  char *line = g_strconcat ("MEAN_PIXEL = ", text->str + 6, NULL);
  line[strlen (line) - 1] = '\0';
  g_assert_null (mrcnn_sidecar_parse (line, "deep.cfg", &error));
  g_assert_nonnull (error);
  g_clear_error (&error);
  g_free (line);

  guint64 length = text->len;
  GByteArray *file = g_byte_array_new ();
  for (int i = 0; i < 8; i++) {
    guint8 byte = (guint8) (length >> (8 * i));
    g_byte_array_append (file, &byte, 1);
  }
  g_byte_array_append (file, (const guint8 *) text->str, text->len);
  GBytes *bytes = g_byte_array_free_to_bytes (file);
  g_assert_null (mrcnn_safetensors_open_bytes (bytes, "deep.safetensors",
          &error));
  g_assert_nonnull (strstr (error->message, "nested deeper"));
  g_clear_error (&error);
  g_bytes_unref (bytes);
  /* shallow nesting is left to json-glib */
  g_assert_false (mrcnn_json_too_deep ("[[[\"[[[[\"]]]", -1));
  g_assert_true (mrcnn_json_too_deep (text->str, -1));
  g_string_free (text, TRUE);
}

/* A count of 13 groups shifted past 64 bits, and a difference to the count
 * two back overflowed the sum (UBSan reports); both are malformed. */
static void
test_rle_hostile (void)
{
  guint8 mask[12];
  g_assert_false (mrcnn_rle_decode ("ooooooooooooO", 4, 3, mask));
  g_assert_false (mrcnn_rle_decode ("000ooooooooooo?", 4, 3, mask));
  g_assert_false (mrcnn_rle_decode ("0", -4, 3, mask));
  g_assert_true (mrcnn_rle_decode ("<", 4, 3, mask));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  mrcnn_config_init_torchvision (&config);
  g_test_add_func ("/geometry/resize-sizes", test_resize_sizes);
  g_test_add_func ("/geometry/resize-degenerate", test_resize_rejects_degenerate);
  g_test_add_func ("/geometry/linear-taps", test_linear_taps);
  g_test_add_func ("/geometry/batch-groups", test_batch_groups);
  g_test_add_func ("/anchors/base", test_base_anchors);
  g_test_add_func ("/anchors/pool-level-stride", test_level_anchor);
  g_test_add_func ("/boxes/decode", test_decode_box);
  g_test_add_func ("/nms/greedy-strict", test_nms);
  g_test_add_func ("/topk/ties", test_argsort_ties);
  g_test_add_func ("/roi-align/sampling", test_roi_align);
  g_test_add_func ("/roi-align/level", test_roi_level);
  g_test_add_func ("/conv/im2col-vs-direct", test_conv2d);
  g_test_add_func ("/conv/many-vs-one", test_conv2d_many);
  g_test_add_func ("/rle/known", test_rle_known);
  g_test_add_func ("/rle/round-trip", test_rle_round_trip);
  g_test_add_func ("/rle/rect", test_rle_rect);
  g_test_add_func ("/polygons/known", test_polygons_known);
  g_test_add_func ("/polygons/fill-back", test_polygons_fill_back);
  g_test_add_func ("/rle/hostile", test_rle_hostile);
  g_test_add_func ("/hostile/deep-json", test_deep_json);
  g_test_add_func ("/matterport/geometry", test_mp_geometry);
  g_test_add_func ("/matterport/anchors", test_mp_anchors);
  g_test_add_func ("/matterport/decode-clip", test_mp_decode_clip);
  g_test_add_func ("/matterport/tf-nms", test_mp_tf_nms);
  g_test_add_func ("/matterport/roi-level", test_mp_roi_level);
  g_test_add_func ("/matterport/crop-and-resize", test_mp_crop_and_resize);
  g_test_add_func ("/matterport/zoom-resize", test_mp_zoom_resize);
  return g_test_run ();
}
