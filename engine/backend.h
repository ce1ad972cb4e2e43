/* The seam between the pipeline (engine.c) and the hardware.  A backend owns
 * its workspace, allocated once in create(), and runs the stages of the
 * network in order; only the final results come back to the host. */
#ifndef MRCNN_BACKEND_H
#define MRCNN_BACKEND_H

#include "geometry.h"
#include "model.h"

G_BEGIN_DECLS

/* Highest max-detections an engine accepts (sizes the mask workspace). */
#define MRCNN_MAX_DETECTIONS 1000

typedef struct {
  float score;
  float nms;
  int max_detections;
  float mask;
  /* [num_classes], nonzero for the classes detections may have; NULL: all.
   * Applied before the cut to max_detections. */
  const uint8_t *keep_class;
} MrcnnThresholds;

/* A host copy or view of an intermediate tensor, for inspection. */
typedef struct {
  const float *data;
  int ndim;
  int shape[4];
} MrcnnHostTensor;

typedef struct {
  const char *name;
  gpointer (*create) (const MrcnnModel *model, const MrcnnOptions *options,
      GError **error);
  /* Another state of first's model, with a workspace of its own and
   * first's weights: a lane, running frames of a batch beside first and
   * the other lanes; destroyed before first.  NULL: the backend runs one
   * frame at a time. */
  gpointer (*create_lane) (gpointer first, GError **error);
  void (*destroy) (gpointer state);

  /* resize, normalise and pad the 8-bit RGB image into the network input */
  gboolean (*preprocess) (gpointer state, const MrcnnImage *image,
      const MrcnnGeometry *geometry, GError **error);
  /* ResNet and FPN: P2..P6 */
  gboolean (*backbone) (gpointer state, GError **error);
  /* RPN head, anchors, box decoding, per-level top-k and NMS */
  gboolean (*proposals) (gpointer state, GError **error);
  /* box ROIAlign, box head, per-class NMS: the final detections */
  gboolean (*detect) (gpointer state, const MrcnnThresholds *thresholds,
      GError **error);
  /* mask ROIAlign and mask head on the detections */
  gboolean (*masks) (gpointer state, GError **error);
  /* boxes to the original image, masks pasted at its resolution */
  gboolean (*paste) (gpointer state, const MrcnnThresholds *thresholds,
      MrcnnResult *result, GError **error);

  /* Several frames through the backbone at once (NULL: one at a time).
   * batch_slots: how many one batch holds (as created, from
   * MrcnnOptions.max_batch); preprocess_slot: preprocess into a slot;
   * backbone_batch: the backbone of slots 0..n-1, frames of one padded
   * size, one launch per layer (and any later layers the backend runs
   * with it, the CUDA backend's RPN head); select_slot: the frame the
   * stages after the backbone (proposals .. paste, inspect) run on next.
   * preprocess and backbone are slot 0's. */
  int (*batch_slots) (gpointer state);
  gboolean (*preprocess_slot) (gpointer state, int slot,
      const MrcnnImage *image, const MrcnnGeometry *geometry, GError **error);
  gboolean (*backbone_batch) (gpointer state, int n, GError **error);
  void (*select_slot) (gpointer state, int slot);

  /* Named intermediate tensors of the last image (see engine.c for the
   * names); FALSE when the backend does not have it. */
  gboolean (*inspect) (gpointer state, const char *name, MrcnnHostTensor *out);

  /* Waits for the work queued so far (NULL: stages return when done). */
  gboolean (*synchronize) (gpointer state, GError **error);
  /* CPU threads of the following detections, 0: OpenMP's own count,
   * shared between `lanes` states running side by side (each takes its
   * share, at least one) (NULL: the backend computes elsewhere). */
  void (*set_threads) (gpointer state, int threads, int lanes);
  /* Device memory held, in bytes (NULL: none). */
  size_t (*device_memory) (gpointer state);
} MrcnnBackend;

extern const MrcnnBackend mrcnn_backend_cpu;
#ifdef MRCNN_WITH_CUDA
extern const MrcnnBackend mrcnn_backend_cuda;
/* Whether GPU device_id exists and this build has kernels for it; if not,
 * an error saying why (no driver, no GPU, index out of range, compute
 * capability older than the build's oldest). */
gboolean mrcnn_cuda_device_usable (int device_id, GError **error);
#endif

/* mrcnn_engine_new on the given backend (mrcnn_engine_new picks it from
 * the options), options not NULL: for tests with a backend of their
 * own. */
MrcnnEngine *mrcnn_engine_new_with_backend (const MrcnnModel *model,
    const MrcnnOptions *options, const MrcnnBackend *backend,
    GError **error);

/* Makes room in a result for n detections whose masks hold mask_pixels
 * pixels in all; grows only, so steady-state frames do not allocate. */
void mrcnn_result_reserve (MrcnnResult *result, int n, size_t mask_pixels);

G_END_DECLS

#endif
