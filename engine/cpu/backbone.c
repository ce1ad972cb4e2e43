/* ResNet and the FPN through oneDNN, on blocked activations.  The stride
 * sits in whichever conv the model gives it (the 3x3 in torchvision, the
 * first 1x1 in matterport); the stem's max pool is symmetric in torchvision
 * and TF "SAME" in matterport (see onednn.c). */
#include "cpu_backend.h"

#include <string.h>

/* x = relu(conv3(relu(conv2(relu(conv1(x))))) + shortcut(x)) into out,
 * which may be x: the shortcut goes to out first and conv3 adds to it. */
static void
bottleneck (CpuState *s, const MrcnnBottleneck *b, CpuPrim *p,
    const float *x, int h, int w, float *out, float *t1, float *t2)
{
  cpu_prim_run (s, &p[0], x, t1);
  cpu_prim_run (s, &p[1], t1, t2);
  if (b->has_downsample)
    cpu_prim_run (s, &p[3], x, out);
  else if (out != x)
    memcpy (out, x, sizeof (float) * blocked_size (b->conv3.out_channels,
            (size_t) h * w, s->block));
  cpu_prim_run (s, &p[2], t2, out);
}

static void
resnet (CpuState *s)
{
  const MrcnnModel *m = s->model;
  float **t = s->scratch;
  cpu_prim_run (s, &s->plan->stem, s->input, t[0]);
  cpu_prim_run (s, &s->plan->pool, t[0], t[1]);

  /* a stage's blocks all write its output, the first from the previous
   * stage's (or the pool's), the others in place */
  const float *x = t[1];
  int h = s->plan->pool_h, w = s->plan->pool_w;
  for (int L = 0; L < 4; L++) {
    for (int i = 0; i < m->n_blocks[L]; i++) {
      bottleneck (s, &m->blocks[L][i], s->plan->blocks[L] + 4 * i, x, h, w,
          s->stage_out[L], t[2], t[3]);
      x = s->stage_out[L];
      h = s->plan->stage_h[L];
      w = s->plan->stage_w[L];
    }
  }
}

static void
fpn (CpuState *s)
{
  const MrcnnModel *m = s->model;
  float *last = s->scratch[0], *next = s->scratch[1];
  cpu_prim_run (s, &s->plan->fpn_inner[3], s->stage_out[3], last);
  cpu_prim_run (s, &s->plan->fpn_layer[3], last, s->fpn_blocked[3]);
  for (int i = 2; i >= 0; i--) {
    /* lateral conv + bias added to the upsampled coarser map */
    const CpuPlan *p = s->plan;
    cpu_upsample_nearest (next, m->fpn_channels, p->fpn_h[i], p->fpn_w[i],
        last, p->fpn_h[i + 1], p->fpn_w[i + 1], s->block);
    cpu_prim_run (s, &s->plan->fpn_inner[i], s->stage_out[i], next);
    cpu_prim_run (s, &s->plan->fpn_layer[i], next, s->fpn_blocked[i]);
    float *tmp = last;
    last = next;
    next = tmp;
  }

  /* 'pool': max_pool2d(P5, kernel 1, stride 2) keeps every other pixel */
  int h5 = s->plan->fpn_h[3], w5 = s->plan->fpn_w[3];
  int h6 = s->plan->fpn_h[4], w6 = s->plan->fpn_w[4], B = s->block;
  int blocks = (m->fpn_channels + B - 1) / B;
  for (int cb = 0; cb < blocks; cb++)
    for (int y = 0; y < h6; y++)
      for (int x = 0; x < w6; x++)
        memcpy (s->fpn_blocked[4] + (((size_t) cb * h6 + y) * w6 + x) * B,
            s->fpn_blocked[3] + (((size_t) cb * h5 + 2 * y) * w5 + 2 * x) * B,
            sizeof (float) * B);

  for (int l = 0; l < MRCNN_FPN_LEVELS; l++)
    cpu_prim_run (s, &s->plan->fpn_nchw[l], s->fpn_blocked[l], s->fpn[l]);
}

gboolean
cpu_backbone (CpuState *s, GError **error)
{
  if (!cpu_onednn_plan (s, error))
    return FALSE;
  resnet (s);
  fpn (s);
  return cpu_onednn_check (s, "backbone", error);
}
