/* Whether batching frames speeds up the CPU backend's matrix products: the
 * heads' GEMMs of torchvision's ResNet-50-FPN (the same dnnl_sgemm calls,
 * shapes and layouts as engine/cpu) run with the rows of 1, 2, 4 and 8
 * frames in one call; prints GFLOP/s and milliseconds per frame.  Equal
 * figures at every batch mean that running a batch's frames one after
 * another costs nothing.
 *
 *   mrcnn-gemm-batch [--iterations N] [--threads N]
 */
#include <glib.h>
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#include <stdio.h>

typedef struct {
  const char *name;
  gboolean conv; /* weights [out][in x 3 x 3] times im2col columns */
  int rows;      /* per frame: ROIs, or ROI positions for the mask head */
  int out, k;    /* output features, inner dimension */
} Gemm;

/* 1000 proposals per frame into the box head; 100 detections' 14x14
 * positions through a mask head conv (im2col: 256 channels x 3x3) */
static const Gemm gemms[] = {
  { "box head fc6 (1000 x 12544 -> 1024)", FALSE, 1000, 1024, 12544 },
  { "box head fc7 (1000 x 1024 -> 1024)", FALSE, 1000, 1024, 1024 },
  { "predictors (1000 x 1024 -> 455)", FALSE, 1000, 455, 1024 },
  { "mask head conv (19600 x 2304 -> 256)", TRUE, 19600, 256, 2304 },
};

static float *
filled (size_t n)
{
  float *p = g_new (float, n);
  for (size_t i = 0; i < n; i++)
    p[i] = (float) ((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
  return p;
}

int
main (int argc, char **argv)
{
  int iterations = 5, threads = 0;
  GOptionEntry entries[] = {
    { "iterations", 'i', 0, G_OPTION_ARG_INT, &iterations,
      "Timed calls per shape and batch (default 5)", "N" },
    { "threads", 't', 0, G_OPTION_ARG_INT, &threads,
      "OpenMP threads (default: OpenMP's count)", "N" },
    { NULL },
  };
  GOptionContext *context = g_option_context_new (NULL);
  g_option_context_add_main_entries (context, entries, NULL);
  GError *error = NULL;
  if (!g_option_context_parse (context, &argc, &argv, &error)
      || iterations < 1 || threads < 0) {
    g_printerr ("%s\n", error ? error->message
        : "--iterations must be at least 1, --threads at least 0");
    return 2;
  }
  g_option_context_free (context);
  if (threads > 0)
    omp_set_num_threads (threads);

  printf ("threads: %d\n\n| GEMM | frames | GFLOP/s | ms per frame |\n"
      "|---|---:|---:|---:|\n", omp_get_max_threads ());
  static const int batches[] = { 1, 2, 4, 8 };
  for (guint g = 0; g < G_N_ELEMENTS (gemms); g++) {
    const Gemm *s = &gemms[g];
    int max_rows = s->rows * batches[G_N_ELEMENTS (batches) - 1];
    float *a = filled ((size_t) max_rows * s->k);
    float *b = filled ((size_t) s->k * s->out);
    float *c = g_new (float, (size_t) max_rows * s->out);
    for (guint i = 0; i < G_N_ELEMENTS (batches); i++) {
      int m = s->rows * batches[i];
      double best = G_MAXDOUBLE;
      for (int it = -1; it < iterations; it++) {
        gint64 t0 = g_get_monotonic_time ();
        /* the engine's calls: cpu_linear and cpu_conv2d_many (cpu_ops.c) */
        if (s->conv)
          dnnl_sgemm ('N', 'N', s->out, m, s->k, 1.0f, b, s->k, a, m, 0.0f,
              c, m);
        else
          dnnl_sgemm ('N', 'T', m, s->out, s->k, 1.0f, a, s->k, b, s->k,
              0.0f, c, s->out);
        double ms = (g_get_monotonic_time () - t0) / 1000.0;
        if (it >= 0 && ms < best)
          best = ms;
      }
      double gflops = 2.0 * m * s->out * s->k / (best * 1e6);
      printf ("| %s | %d | %.0f | %.1f |\n", s->name, batches[i], gflops,
          best / batches[i]);
    }
    g_free (a);
    g_free (b);
    g_free (c);
  }
  return 0;
}
