/* oneDNN primitives of the backbone, the FPN and the RPN head.  A plan
 * holds them for one padded input size and thread count (cpu_onednn_plan:
 * made at the first frame of that size, never per frame; the last
 * CPU_PLANS are kept, so streams of a few sizes sharing an engine do not
 * remake them): convolutions with bias, ReLU and the residual add fused as
 * post-ops, the stem's max pool, and the reorders of the FPN maps to NCHW.
 * Activations between them stay in the blocked layout of oneDNN's direct
 * convolutions on this CPU (nChw16c where it has AVX-512 kernels, else
 * nChw8c).  Weights are reordered into a primitive's layout once and shared
 * by every plan and lane that wants that layout (s->weights).  Every
 * primitive of a lane shares one scratchpad, sized for the largest.
 *
 * 3x3 stride-1 convolutions (most of the network's arithmetic) use
 * Winograd F(4x4, 3x3) where oneDNN has it (AVX-512): 2.3 times fewer
 * multiplications for weights four times the size; its rounding keeps the
 * FPN within 1e-5 relative L2 of torchvision's.  Elsewhere they are direct. */
#include "cpu_backend.h"

#include <oneapi/dnnl/dnnl_debug.h>
#include <omp.h>
#include <string.h>

#define TRY(call) G_STMT_START { \
    st = (call); \
    if (st != dnnl_success) \
      goto out; \
  } G_STMT_END

/* (the weights are the engine's, in s->weights) */
static void
prim_clear (CpuPrim *p)
{
  if (p->prim)
    dnnl_primitive_destroy (p->prim);
  dnnl_memory_t mems[] = { p->src, p->dst, p->bias, p->scratch };
  for (gsize i = 0; i < G_N_ELEMENTS (mems); i++)
    if (mems[i])
      dnnl_memory_destroy (mems[i]);
  memset (p, 0, sizeof *p);
}

/* Attributes whose scratchpad the caller passes: the plan's shared one. */
static dnnl_status_t
user_scratchpad_attr (dnnl_primitive_attr_t *attr)
{
  dnnl_status_t st = dnnl_primitive_attr_create (attr);
  if (st == dnnl_success)
    st = dnnl_primitive_attr_set_scratchpad_mode (*attr,
        dnnl_scratchpad_mode_user);
  return st;
}

/* Memory objects for pd's source, destination and scratchpad (their data
 * set at each run), then the primitive. */
static dnnl_status_t
prim_finish (CpuState *s, CpuPrim *p, const_dnnl_primitive_desc_t pd)
{
  dnnl_status_t st;
  const dnnl_memory_desc_t *scratch = dnnl_primitive_desc_query_md (pd,
      dnnl_query_scratchpad_md, 0);
  TRY (dnnl_memory_create (&p->src, dnnl_primitive_desc_query_md (pd,
              dnnl_query_src_md, 0), s->dnnl, DNNL_MEMORY_NONE));
  TRY (dnnl_memory_create (&p->dst, dnnl_primitive_desc_query_md (pd,
              dnnl_query_dst_md, 0), s->dnnl, DNNL_MEMORY_NONE));
  if (scratch && dnnl_memory_desc_get_size (scratch) > 0) {
    s->dnnl_scratch_size = MAX (s->dnnl_scratch_size,
        dnnl_memory_desc_get_size (scratch));
    TRY (dnnl_memory_create (&p->scratch, scratch, s->dnnl,
            DNNL_MEMORY_NONE));
  }
  TRY (dnnl_primitive_create (&p->prim, pd));
out:
  return st;
}

/* prim_finish where the steps before succeeded (st), then frees the
 * descriptor and attributes either way. */
static dnnl_status_t
finish_and_release (CpuState *s, CpuPrim *p, dnnl_status_t st,
    dnnl_primitive_desc_t pd, dnnl_primitive_attr_t attr)
{
  if (st == dnnl_success)
    st = prim_finish (s, p, pd);
  if (pd)
    dnnl_primitive_desc_destroy (pd);
  if (attr)
    dnnl_primitive_attr_destroy (attr);
  return st;
}

static dnnl_status_t
reorder_now (CpuState *s, dnnl_memory_t from, dnnl_memory_t to)
{
  dnnl_status_t st;
  const dnnl_memory_desc_t *from_md, *to_md;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_primitive_t prim = NULL;
  TRY (dnnl_memory_get_memory_desc (from, &from_md));
  TRY (dnnl_memory_get_memory_desc (to, &to_md));
  TRY (dnnl_reorder_primitive_desc_create (&pd, from_md, s->dnnl, to_md,
          s->dnnl, NULL));
  TRY (dnnl_primitive_create (&prim, pd));
  dnnl_exec_arg_t args[] = { { DNNL_ARG_FROM, from }, { DNNL_ARG_TO, to } };
  TRY (dnnl_primitive_execute (prim, s->stream, 2, args));
  TRY (dnnl_stream_wait (s->stream));
out:
  if (prim)
    dnnl_primitive_destroy (prim);
  if (pd)
    dnnl_primitive_desc_destroy (pd);
  return st;
}

static void
memory_destroy (gpointer memory)
{
  dnnl_memory_destroy (memory);
}

/* conv's weights in the layout `want`: the loader's OIHW array where that
 * is the layout, else a copy reordered once, kept for every plan and lane
 * (under the table's lock: another lane may be making a plan). */
static dnnl_status_t
layer_weights (CpuState *s, const MrcnnConv *conv,
    const dnnl_memory_desc_t *want, dnnl_memory_t *weights)
{
  dnnl_status_t st = dnnl_success;
  dnnl_memory_t user_weights = NULL;
  dnnl_memory_desc_t user_weight_md;
  int k = conv->kernel;
  dnnl_dims_t weight_dims = { conv->out_channels, conv->in_channels, k, k };
  g_mutex_lock (&s->weights->lock);
  GPtrArray *kept = g_hash_table_lookup (s->weights->by_conv, conv);
  if (!kept) {
    kept = g_ptr_array_new_with_free_func (memory_destroy);
    g_hash_table_insert (s->weights->by_conv, (gpointer) conv, kept);
  }
  for (guint i = 0; i < kept->len; i++) {
    const dnnl_memory_desc_t *md;
    TRY (dnnl_memory_get_memory_desc (kept->pdata[i], &md));
    if (dnnl_memory_desc_equal (md, want)) {
      *weights = kept->pdata[i];
      goto out;
    }
  }
  TRY (dnnl_memory_desc_init_by_tag (&user_weight_md, 4, weight_dims,
          dnnl_f32, dnnl_oihw));
  TRY (dnnl_memory_create (&user_weights, &user_weight_md, s->dnnl,
          conv->weight));
  if (dnnl_memory_desc_equal (want, &user_weight_md)) {
    *weights = g_steal_pointer (&user_weights);
  } else {
    TRY (dnnl_memory_create (weights, want, s->dnnl, DNNL_MEMORY_ALLOCATE));
    st = reorder_now (s, user_weights, *weights);
    if (st != dnnl_success) {
      dnnl_memory_destroy (*weights);
      goto out;
    }
  }
  g_ptr_array_add (kept, *weights);
out:
  g_mutex_unlock (&s->weights->lock);
  if (user_weights)
    dnnl_memory_destroy (user_weights);
  return st;
}

/* act(conv(src) + bias [+ dst]) of one h x w image, from src_tag to
 * dst_tag. */
static dnnl_status_t
make_conv (CpuState *s, CpuPrim *p, const MrcnnConv *conv, int h, int w,
    dnnl_format_tag_t src_tag, dnnl_format_tag_t dst_tag,
    gboolean sum, gboolean relu)
{
  dnnl_status_t st;
  dnnl_primitive_attr_t attr = NULL;
  dnnl_post_ops_t ops = NULL;
  dnnl_primitive_desc_t pd = NULL;
  int k = conv->kernel;
  dnnl_dims_t src_dims = { 1, conv->in_channels, h, w };
  dnnl_dims_t dst_dims = { 1, conv->out_channels, conv_out_size (h, conv),
    conv_out_size (w, conv) };
  dnnl_dims_t weight_dims = { conv->out_channels, conv->in_channels, k, k };
  dnnl_dims_t bias_dims = { conv->out_channels };
  /* symmetric padding: oneDNN's output size rounds down as torch's does */
  dnnl_dims_t strides = { conv->stride, conv->stride };
  dnnl_dims_t pad = { conv->pad, conv->pad };
  dnnl_memory_desc_t src_md, dst_md, weight_md, bias_md;
  dnnl_convolution_desc_t desc;
  gboolean winograd = k == 3 && conv->stride == 1;

  TRY (dnnl_memory_desc_init_by_tag (&src_md, 4, src_dims, dnnl_f32,
          src_tag));
  TRY (dnnl_memory_desc_init_by_tag (&dst_md, 4, dst_dims, dnnl_f32,
          dst_tag));
  TRY (dnnl_memory_desc_init_by_tag (&weight_md, 4, weight_dims, dnnl_f32,
          dnnl_format_tag_any));
  TRY (dnnl_memory_desc_init_by_tag (&bias_md, 1, bias_dims, dnnl_f32,
          dnnl_a));
  TRY (user_scratchpad_attr (&attr));
  TRY (dnnl_post_ops_create (&ops));
  if (sum)
    TRY (dnnl_post_ops_append_sum (ops, 1.0f));
  if (relu)
    TRY (dnnl_post_ops_append_eltwise (ops, 1.0f, dnnl_eltwise_relu, 0.0f,
            0.0f));
  TRY (dnnl_primitive_attr_set_post_ops (attr, ops));
  do {
    TRY (dnnl_convolution_forward_desc_init (&desc, dnnl_forward_inference,
            winograd ? dnnl_convolution_winograd : dnnl_convolution_direct,
            &src_md, &weight_md, &bias_md, &dst_md, strides, pad, pad));
    st = dnnl_primitive_desc_create (&pd, &desc, attr, s->dnnl, NULL);
  } while (st == dnnl_unimplemented && winograd && !(winograd = FALSE));
  if (st != dnnl_success)
    goto out;
  TRY (prim_finish (s, p, pd));

  TRY (dnnl_memory_create (&p->bias, &bias_md, s->dnnl, conv->bias));
  TRY (layer_weights (s, conv, dnnl_primitive_desc_query_md (pd,
              dnnl_query_weights_md, 0), &p->weights));
out:
  if (pd)
    dnnl_primitive_desc_destroy (pd);
  if (ops)
    dnnl_post_ops_destroy (ops);
  if (attr)
    dnnl_primitive_attr_destroy (attr);
  return st;
}

/* 3x3 stride-2 max pool of c channels, `pad` before; outside is -inf, as
 * in torch and TF. */
static dnnl_status_t
make_maxpool (CpuState *s, CpuPrim *p, int c, int h, int w, int pad)
{
  dnnl_status_t st;
  dnnl_primitive_desc_t pd = NULL;
  int oh = (h - 1) / 2 + 1, ow = (w - 1) / 2 + 1;
  dnnl_dims_t src_dims = { 1, c, h, w }, dst_dims = { 1, c, oh, ow };
  dnnl_dims_t strides = { 2, 2 }, kernel = { 3, 3 }, pad_l = { pad, pad };
  dnnl_dims_t pad_r = { 2 * (oh - 1) + 3 - h - pad,
    2 * (ow - 1) + 3 - w - pad };
  dnnl_memory_desc_t src_md, dst_md;
  dnnl_pooling_desc_t desc;
  dnnl_primitive_attr_t attr = NULL;
  TRY (dnnl_memory_desc_init_by_tag (&src_md, 4, src_dims, dnnl_f32,
          s->act_tag));
  TRY (dnnl_memory_desc_init_by_tag (&dst_md, 4, dst_dims, dnnl_f32,
          s->act_tag));
  TRY (dnnl_pooling_forward_desc_init (&desc, dnnl_forward_inference,
          dnnl_pooling_max, &src_md, &dst_md, strides, kernel, pad_l,
          pad_r));
  TRY (user_scratchpad_attr (&attr));
  st = dnnl_primitive_desc_create (&pd, &desc, attr, s->dnnl, NULL);
out:
  return finish_and_release (s, p, st, pd, attr);
}

/* c x h x w from the blocked layout to NCHW. */
static dnnl_status_t
make_to_nchw (CpuState *s, CpuPrim *p, int c, int h, int w)
{
  dnnl_status_t st;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_primitive_attr_t attr = NULL;
  dnnl_dims_t dims = { 1, c, h, w };
  dnnl_memory_desc_t src_md, dst_md;
  TRY (dnnl_memory_desc_init_by_tag (&src_md, 4, dims, dnnl_f32,
          s->act_tag));
  TRY (dnnl_memory_desc_init_by_tag (&dst_md, 4, dims, dnnl_f32,
          dnnl_nchw));
  TRY (user_scratchpad_attr (&attr));
  st = dnnl_reorder_primitive_desc_create (&pd, &src_md, s->dnnl, &dst_md,
      s->dnnl, attr);
out:
  return finish_and_release (s, p, st, pd, attr);
}

/* nChw16c where a direct 3x3 convolution on it runs AVX-512 code, else
 * nChw8c (AVX2). */
static dnnl_status_t
choose_layout (CpuState *s)
{
  dnnl_status_t st;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_dims_t dims = { 1, 256, 64, 64 };
  dnnl_dims_t weight_dims = { 256, 256, 3, 3 };
  dnnl_dims_t strides = { 1, 1 }, pad = { 1, 1 };
  dnnl_memory_desc_t blocked, weight_md;
  dnnl_convolution_desc_t desc;
  const char *impl = NULL;
  s->act_tag = dnnl_nChw8c;
  s->block = 8;
  TRY (dnnl_memory_desc_init_by_tag (&blocked, 4, dims, dnnl_f32,
          dnnl_nChw16c));
  TRY (dnnl_memory_desc_init_by_tag (&weight_md, 4, weight_dims, dnnl_f32,
          dnnl_format_tag_any));
  TRY (dnnl_convolution_forward_desc_init (&desc, dnnl_forward_inference,
          dnnl_convolution_direct, &blocked, &weight_md, NULL, &blocked,
          strides, pad, pad));
  TRY (dnnl_primitive_desc_create (&pd, &desc, NULL, s->dnnl, NULL));
  TRY (dnnl_primitive_desc_query (pd, dnnl_query_impl_info_str, 0, &impl));
  if (impl && strstr (impl, "avx512")) {
    s->act_tag = dnnl_nChw16c;
    s->block = 16;
  }
out:
  if (pd)
    dnnl_primitive_desc_destroy (pd);
  return st;
}

static void
clear_plan (const MrcnnModel *m, CpuPlan *plan)
{
  prim_clear (&plan->stem);
  prim_clear (&plan->pool);
  for (int L = 0; L < 4; L++) {
    for (int i = 0; plan->blocks[L] && i < 4 * m->n_blocks[L]; i++)
      prim_clear (&plan->blocks[L][i]);
    g_clear_pointer (&plan->blocks[L], g_free);
  }
  for (int l = 0; l < MRCNN_FPN_LEVELS; l++) {
    if (l < 4) {
      prim_clear (&plan->fpn_inner[l]);
      prim_clear (&plan->fpn_layer[l]);
    }
    prim_clear (&plan->fpn_nchw[l]);
    for (int j = 0; j < MRCNN_MAX_RPN_CONVS + 2; j++)
      prim_clear (&plan->rpn[l][j]);
  }
  memset (plan, 0, sizeof *plan);
}

static void
weights_free (CpuWeights *w)
{
  g_hash_table_unref (w->by_conv);
  g_mutex_clear (&w->lock);
  g_free (w);
}

gboolean
cpu_onednn_init (CpuState *s, const CpuState *first, GError **error)
{
  dnnl_status_t st;
  if (first) {
    s->borrowed = TRUE;
    s->dnnl = first->dnnl;
    s->weights = first->weights;
    s->act_tag = first->act_tag;
    s->block = first->block;
  } else {
    s->weights = g_new0 (CpuWeights, 1);
    g_mutex_init (&s->weights->lock);
    s->weights->by_conv = g_hash_table_new_full (NULL, NULL, NULL,
        (GDestroyNotify) g_ptr_array_unref);
    TRY (dnnl_engine_create (&s->dnnl, dnnl_cpu, 0));
    TRY (choose_layout (s));
  }
  TRY (dnnl_stream_create (&s->stream, s->dnnl, dnnl_stream_default_flags));
out:
  if (st != dnnl_success)
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_BACKEND,
        "oneDNN has no CPU engine: %s", dnnl_status2str (st));
  return st == dnnl_success;
}

void
cpu_onednn_destroy (CpuState *s)
{
  for (int i = 0; i < CPU_PLANS; i++)
    clear_plan (s->model, &s->plans[i]);
  g_free (s->dnnl_scratch);
  if (s->stream)
    dnnl_stream_destroy (s->stream);
  if (s->borrowed)
    return;
  g_clear_pointer (&s->weights, weights_free);
  if (s->dnnl)
    dnnl_engine_destroy (s->dnnl);
}

/* Makes the primitives of plan for s->geometry's padded size. */
static gboolean
make_plan (CpuState *s, CpuPlan *plan, GError **error)
{
  const MrcnnModel *m = s->model;
  const MrcnnGeometry *g = &s->geometry;
  dnnl_status_t st;
  dnnl_format_tag_t act = s->act_tag;
  const char *what = "stem";
  int h = g->padded_height, w = g->padded_width;
  for (int L = 0; L < 4; L++)
    plan->blocks[L] = g_new0 (CpuPrim, 4 * (size_t) m->n_blocks[L]);
  TRY (make_conv (s, &plan->stem, &m->stem, h, w, dnnl_nchw, act, FALSE,
          TRUE));
  h = conv_out_size (h, &m->stem);
  w = conv_out_size (w, &m->stem);
  int ph = (h - 1) / 2 + 1, pw = (w - 1) / 2 + 1;
  /* TF SAME pads max(2 (out - 1) + 3 - n, 0) / 2 before: 0 here, as
   * matterport inputs are multiples of 32 and the stem output is even */
  int pad = m->config.variant == MRCNN_VARIANT_MATTERPORT
      ? MAX (2 * (ph - 1) + 3 - h, 0) / 2 : 1;
  what = "max pool";
  TRY (make_maxpool (s, &plan->pool, m->stem.out_channels, h, w, pad));
  h = plan->pool_h = ph;
  w = plan->pool_w = pw;

  what = "ResNet";
  for (int L = 0; L < 4; L++) {
    for (int i = 0; i < m->n_blocks[L]; i++) {
      const MrcnnBottleneck *b = &m->blocks[L][i];
      CpuPrim *p = plan->blocks[L] + 4 * i;
      TRY (make_conv (s, &p[0], &b->conv1, h, w, act, act, FALSE, TRUE));
      int h1 = conv_out_size (h, &b->conv1), w1 = conv_out_size (w,
          &b->conv1);
      TRY (make_conv (s, &p[1], &b->conv2, h1, w1, act, act, FALSE,
              TRUE));
      int h2 = conv_out_size (h1, &b->conv2), w2 = conv_out_size (w1,
          &b->conv2);
      TRY (make_conv (s, &p[2], &b->conv3, h2, w2, act, act, TRUE, TRUE));
      if (b->has_downsample)
        TRY (make_conv (s, &p[3], &b->downsample, h, w, act, act, FALSE,
                FALSE));
      h = h2;
      w = w2;
    }
    plan->stage_h[L] = h;
    plan->stage_w[L] = w;
  }

  what = "FPN";
  for (int L = 0; L < 4; L++) {
    h = plan->stage_h[L];
    w = plan->stage_w[L];
    /* the top-down path's upsampled map is in dst before the lateral conv */
    TRY (make_conv (s, &plan->fpn_inner[L], &m->fpn_inner[L], h, w, act,
            act, L < 3, FALSE));
    TRY (make_conv (s, &plan->fpn_layer[L], &m->fpn_layer[L], h, w, act,
            act, FALSE, FALSE));
    plan->fpn_h[L] = h;
    plan->fpn_w[L] = w;
  }
  plan->fpn_h[4] = (plan->fpn_h[3] + 1) / 2;
  plan->fpn_w[4] = (plan->fpn_w[3] + 1) / 2;

  what = "RPN head";
  for (int l = 0; l < MRCNN_FPN_LEVELS; l++) {
    h = plan->fpn_h[l];
    w = plan->fpn_w[l];
    TRY (make_to_nchw (s, &plan->fpn_nchw[l], m->fpn_channels, h, w));
    CpuPrim *p = plan->rpn[l];
    for (int j = 0; j < m->n_rpn_convs; j++)
      TRY (make_conv (s, &p[j], &m->rpn_convs[j], h, w, act, act, FALSE,
              TRUE));
    TRY (make_conv (s, &p[m->n_rpn_convs], &m->rpn_cls, h, w, act, act,
            FALSE, FALSE));
    TRY (make_conv (s, &p[m->n_rpn_convs + 1], &m->rpn_bbox, h, w, act,
            act, FALSE, FALSE));
  }

  what = "scratchpad";
  if (s->dnnl_scratch_size > s->dnnl_scratch_allocated) {
    g_free (s->dnnl_scratch);
    s->dnnl_scratch = g_try_malloc (s->dnnl_scratch_size);
    s->dnnl_scratch_allocated = s->dnnl_scratch ? s->dnnl_scratch_size : 0;
    if (!s->dnnl_scratch)
      st = dnnl_out_of_memory;
  }
out:
  if (st != dnnl_success) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_BACKEND,
        "oneDNN cannot run the %s on %dx%d inputs: %s", what,
        g->padded_width, g->padded_height, dnnl_status2str (st));
    clear_plan (m, plan);
    return FALSE;
  }
  plan->height = g->padded_height;
  plan->width = g->padded_width;
  plan->threads = s->threads;
  return TRUE;
}

gboolean
cpu_onednn_plan (CpuState *s, GError **error)
{
  const MrcnnGeometry *g = &s->geometry;
  CpuPlan *plan = NULL, *oldest = &s->plans[0];
  for (int i = 0; i < CPU_PLANS && !plan; i++) {
    CpuPlan *p = &s->plans[i];
    if (p->height == g->padded_height && p->width == g->padded_width
        && p->threads == s->threads)
      plan = p;
    else if (p->last_used < oldest->last_used)
      oldest = p;
  }
  if (!plan) {
    plan = oldest;
    clear_plan (s->model, plan);
    /* oneDNN splits a primitive's work for the thread count it was made
     * with */
    omp_set_num_threads (s->threads);
    if (!make_plan (s, plan, error)) {
      s->plan = NULL;
      return FALSE;
    }
  }
  plan->last_used = ++s->plan_clock;
  s->plan = plan;
  return TRUE;
}

void
cpu_prim_run (CpuState *s, CpuPrim *p, const float *src, float *dst)
{
  dnnl_exec_arg_t args[5];
  int n = 0;
  dnnl_memory_set_data_handle (p->src, (void *) src);
  dnnl_memory_set_data_handle (p->dst, dst);
  args[n++] = (dnnl_exec_arg_t) { DNNL_ARG_SRC, p->src };
  args[n++] = (dnnl_exec_arg_t) { DNNL_ARG_DST, p->dst };
  if (p->weights)
    args[n++] = (dnnl_exec_arg_t) { DNNL_ARG_WEIGHTS, p->weights };
  if (p->bias)
    args[n++] = (dnnl_exec_arg_t) { DNNL_ARG_BIAS, p->bias };
  if (p->scratch) {
    dnnl_memory_set_data_handle (p->scratch, s->dnnl_scratch);
    args[n++] = (dnnl_exec_arg_t) { DNNL_ARG_SCRATCHPAD, p->scratch };
  }
  dnnl_status_t st = dnnl_primitive_execute (p->prim, s->stream, n, args);
  if (st == dnnl_success)
    st = dnnl_stream_wait (s->stream);
  if (st != dnnl_success && s->run_status == dnnl_success)
    s->run_status = st;
}

gboolean
cpu_onednn_check (CpuState *s, const char *stage, GError **error)
{
  if (s->run_status == dnnl_success)
    return TRUE;
  g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_BACKEND,
      "oneDNN failed in the %s: %s", stage, dnnl_status2str (s->run_status));
  s->run_status = dnnl_success;
  return FALSE;
}
