/* mrcnn: Mask R-CNN inference engine.
 *
 * A model is loaded once from a weights file (host memory, read-only) and any
 * number of engines run it.  An engine owns one backend and its workspace,
 * sized at creation; mrcnn_engine_detect() does no allocation except to grow a
 * caller's mrcnn_result the first time a larger result is needed.
 */
#ifndef MRCNN_H
#define MRCNN_H

#include <glib.h>
#include <stdint.h>

G_BEGIN_DECLS

#define MRCNN_ERROR (mrcnn_error_quark ())
GQuark mrcnn_error_quark (void);

typedef enum {
  MRCNN_ERROR_IO,               /* file missing or unreadable */
  MRCNN_ERROR_FORMAT,           /* file is not a valid weights file */
  MRCNN_ERROR_MODEL,            /* tensors missing, misshapen or inconsistent */
  MRCNN_ERROR_UNSUPPORTED,      /* valid request this build cannot serve */
  MRCNN_ERROR_INVALID_ARGUMENT, /* bad option or image */
  MRCNN_ERROR_BACKEND,          /* backend failed (device absent, out of memory) */
} MrcnnError;

typedef enum {
  MRCNN_BACKEND_AUTO,
  MRCNN_BACKEND_CPU,
  MRCNN_BACKEND_CUDA,
} MrcnnBackendKind;

typedef enum {
  MRCNN_PRECISION_FP32,
  MRCNN_PRECISION_FP16,
} MrcnnPrecision;

typedef struct _MrcnnModel MrcnnModel;
typedef struct _MrcnnEngine MrcnnEngine;

/* Most MrcnnOptions.lanes an engine takes. */
#define MRCNN_MAX_LANES 64
/* Most MrcnnOptions.max_batch an engine takes. */
#define MRCNN_MAX_BATCH 64

/* Per-engine settings.  A negative threshold or count means "the model's
 * own value". */
typedef struct {
  MrcnnBackendKind backend;
  MrcnnPrecision precision;
  int device_id;
  float score_threshold;
  float nms_threshold;
  int max_detections;
  float mask_threshold;
  /* When set, intermediate tensors of each detection are written there as
   * .npy files (for comparing stages with a reference implementation). */
  const char *dump_dir;
  /* CUDA backend: the cudaStream_t every stage runs on, so that the
   * caller's own work orders with it; NULL: a stream of the engine's own. */
  void *cuda_stream;
  /* CPU threads a detection's computations use (an OpenMP pool of the
   * thread that calls the detection, oneDNN's and the engine's own loops);
   * 0: OpenMP's own count (OMP_NUM_THREADS, else one per core).  Ignored
   * by the CUDA backend. */
  int threads;
  /* CPU backend: how many frames run side by side (of a batch,
   * mrcnn_engine_detect_batch, or of calls from several threads at
   * once, each on the lanes free at its start), each lane with a
   * workspace of its own (the weights are shared) and threads / lanes of
   * the threads (at least one), always, also for a lone frame: how
   * oneDNN computes a layer can depend on the thread count, and a frame's
   * results depend only on the engine's settings, not on the frames
   * beside it.  Pays where one frame does not keep every core busy
   * (small models, many cores); each lane costs one more workspace.  0 or
   * 1: one frame after another.  Other backends have one lane (the CUDA
   * backend batches through max_batch instead). */
  int lanes;
  /* CUDA backend: the most frames of a batch (mrcnn_engine_detect_batch)
   * whose backbone, FPN and RPN head run together, one launch per layer for
   * frames of one network input size (the stages after them run frame by
   * frame); each costs one more backbone workspace of device memory.  0 or 1:
   * one frame at a time.  Ignored by the CPU backend (see lanes), and by
   * engines made with dump_dir or time_stages, whose frames run one by one. */
  int max_batch;
  /* Time each stage (mrcnn_engine_stage_times).  The engine then waits for
   * the device after every stage, so that the times do not overlap, and
   * runs a batch's frames on one lane: for profiling, not for production. */
  gboolean time_stages;
} MrcnnOptions;

/* The stages of a detection, in order. */
typedef enum {
  MRCNN_STAGE_PREPROCESS,
  MRCNN_STAGE_BACKBONE,
  MRCNN_STAGE_PROPOSALS,
  MRCNN_STAGE_DETECT,
  MRCNN_STAGE_MASKS,
  MRCNN_STAGE_PASTE,
  MRCNN_N_STAGES
} MrcnnStage;

const char *mrcnn_stage_name (MrcnnStage stage);

void mrcnn_options_init (MrcnnOptions *options);

/* Number of CUDA GPUs the CUDA backend can use: 0 when there is none or
 * this build has no CUDA backend. */
int mrcnn_cuda_device_count (void);

/* An 8-bit RGB image in host memory, rows `stride` bytes apart. */
typedef struct {
  const uint8_t *data;
  int width;
  int height;
  int stride;
} MrcnnImage;

/* One detection.  The mask covers the rectangle (mask_x, mask_y, mask_width,
 * mask_height) of the original image; every pixel outside it is zero. */
typedef struct {
  /* x1, y1, x2, y2 in original-image pixels; matterport models give its
   * integer box, x2 and y2 exclusive */
  float box[4];
  int label_id;
  const char *label; /* owned by the model */
  float score;
  int mask_x, mask_y, mask_width, mask_height;
  float *mask;          /* soft mask, 0..1, row-major, mask_width per row */
  uint8_t *mask_binary; /* mask >= mask threshold, same layout */
} MrcnnDetection;

typedef struct {
  int image_width, image_height;
  int n_detections; /* sorted by score, descending */
  MrcnnDetection *detections;
  /* private: storage reused from one image to the next */
  int capacity;
  size_t mask_capacity;
  float *mask_storage;
  uint8_t *binary_storage;
} MrcnnResult;

void mrcnn_result_init (MrcnnResult *result);
void mrcnn_result_clear (MrcnnResult *result);

/* Loads a torchvision Mask R-CNN state_dict (.safetensors) or matterport
 * Keras weights (HDF5, e.g. mask_rcnn_coco.h5), told apart by content. */
MrcnnModel *mrcnn_model_load (const char *path, GError **error);
/* The same with a sidecar configuration file (NULL: none): a JSON object
 * or KEY = VALUE lines.  Keys are matterport's Config attributes for HDF5
 * weights and the __metadata__ keys for safetensors, which they override. */
MrcnnModel *mrcnn_model_load_with_config (const char *path,
    const char *config_path, GError **error);
void mrcnn_model_free (MrcnnModel *model);
/* A model of a standard shape with random weights, for benchmarks:
 * "torchvision-r50" (maskrcnn_resnet50_fpn, 91 classes, 800/1333),
 * "torchvision-r50-v2" (maskrcnn_resnet50_fpn_v2, the same sizes) or
 * "matterport-r101" (mask_rcnn_coco.h5, 81 classes, 1024 square). */
MrcnnModel *mrcnn_model_new_random (const char *shape, guint32 seed,
    GError **error);

int mrcnn_model_num_classes (const MrcnnModel *model);
/* "torchvision" or "matterport": whose arithmetic the engine reproduces. */
const char *mrcnn_model_variant (const MrcnnModel *model);
const char *mrcnn_model_class_name (const MrcnnModel *model, int class_id);
/* The model's shape and constants as a JSON object (newly allocated). */
char *mrcnn_model_describe (const MrcnnModel *model);

/* The engine keeps a reference to the model: free the engine first.
 * Detections (mrcnn_engine_detect, mrcnn_engine_detect_batch) may run from
 * several threads at once: each call takes the lanes free at its start
 * (at least one: it waits for one), so with MrcnnOptions.lanes = N up to N
 * calls run side by side.  The thresholds and the class filter must not be
 * set while a detection runs (a batch's frames carry their own); dump_dir
 * and time_stages are for one caller at a time. */
MrcnnEngine *mrcnn_engine_new (const MrcnnModel *model,
    const MrcnnOptions *options, GError **error);
void mrcnn_engine_free (MrcnnEngine *engine);
const char *mrcnn_engine_backend_name (const MrcnnEngine *engine);
/* The lanes (MrcnnOptions.lanes where the backend has them, else 1): the
 * most frames that run side by side, of one call or of several. */
int mrcnn_engine_get_lanes (const MrcnnEngine *engine);

gboolean mrcnn_engine_set_thresholds (MrcnnEngine *engine, float score,
    float nms, int max_detections, float mask, GError **error);

/* MrcnnOptions.threads, for the frames that start after the call (frames
 * whose MrcnnFrameSettings.threads is set keep theirs); may be called
 * while detections run. */
void mrcnn_engine_set_threads (MrcnnEngine *engine, int threads);

/* Detections only of the classes where keep[class id] is TRUE (keep has
 * one entry per class of the model); NULL keeps every class.  The filter
 * comes before the cut to max_detections: the best N of the kept classes. */
void mrcnn_engine_set_class_filter (MrcnnEngine *engine, const gboolean *keep);

gboolean mrcnn_engine_detect (MrcnnEngine *engine, const MrcnnImage *image,
    MrcnnResult *result, GError **error);

/* What one frame of a batch keeps: the frame's own thresholds and class
 * filter, as mrcnn_engine_set_thresholds and mrcnn_engine_set_class_filter
 * set them for the engine (a negative threshold or max_detections: the
 * model's own value; keep_class NULL: every class), and its CPU threads as
 * MrcnnOptions.threads (the lane running it takes its share of them;
 * negative: the engine's), so that its results depend on its own settings
 * alone. */
typedef struct {
  float score_threshold;
  float nms_threshold;
  int max_detections;
  float mask_threshold;
  const gboolean *keep_class; /* one per class of the model, or NULL */
  int threads;
} MrcnnFrameSettings;

/* Every field "the model's own" (threads: the engine's); keep_class NULL. */
void mrcnn_frame_settings_init (MrcnnFrameSettings *settings);

/* n images in, n results out (results[i] for images[i]), each frame with
 * settings[i] (settings NULL: the engine's for all).  Frames may differ in
 * size.  The CPU backend runs the frames on its lanes (MrcnnOptions.lanes),
 * each lane one frame after another (batching frames does not speed up its
 * matrix products, docs/PERFORMANCE.md), and a frame's results are the same,
 * bit for bit, as when it runs alone with the same settings.  The CUDA backend
 * runs the backbone, FPN and RPN head of up to MrcnnOptions.max_batch frames
 * of one network input size at once, then each frame's later stages; a
 * frame's results are then within floating-point rounding of its results
 * alone (cuDNN may sum in another order for another batch).  Returns how many
 * frames, from the first, have their results: n, or fewer with the error
 * (naming the frame) of the one after them (frames after that one may or may
 * not have theirs). */
int mrcnn_engine_detect_batch (MrcnnEngine *engine,
    const MrcnnImage *images, const MrcnnFrameSettings *settings, int n,
    MrcnnResult *results, GError **error);
/* With MrcnnOptions.time_stages: milliseconds each stage of the last
 * detection took.  FALSE when the engine was made without it. */
gboolean mrcnn_engine_stage_times (const MrcnnEngine *engine,
    double ms[MRCNN_N_STAGES]);
/* Device memory the engine holds, in bytes (0 for the CPU backend). */
size_t mrcnn_engine_device_memory (const MrcnnEngine *engine);

/* COCO compressed RLE (the string pycocotools writes) of a full-image binary
 * mask held as `mask` placed at (x, y) in an image of width x height.
 * Returns a newly allocated string. */
char *mrcnn_rle_encode_detection (const MrcnnDetection *detection,
    int image_width, int image_height);
/* Column-major run lengths of an image-sized binary mask (row-major input). */
char *mrcnn_rle_encode (const uint8_t *mask, int width, int height);
/* The one encoder the two above use: the mask of an image_width x
 * image_height image that is zero except in the rectangle (rect_x, rect_y,
 * rect_width, rect_height), where a pixel is set when its byte in `rect`
 * (row-major, rect_width per row) is >= threshold (1 for 0/1 masks, 128 to
 * binarise 0..255 probabilities).  Parts of the rectangle outside the image
 * are dropped.  No image-sized buffer is built. */
char *mrcnn_rle_encode_rect (const uint8_t *rect, int rect_x, int rect_y,
    int rect_width, int rect_height, uint8_t threshold, int image_width,
    int image_height);
/* Outer contours of the 8-connected parts of a mask given as for
 * mrcnn_rle_encode_rect, one polygon per part (in raster order of the
 * parts' first pixels): GArrays of int, x1, y1, x2, y2, ... in image
 * pixel-corner coordinates (COCO's polygon convention: the polygon
 * [0,0, 2,0, 2,1, 0,1] covers pixels (0,0) and (1,0)).  Holes are not
 * traced.  Free with g_ptr_array_unref. */
GPtrArray *mrcnn_mask_polygons (const uint8_t *rect, int rect_x, int rect_y,
    int rect_width, int rect_height, uint8_t threshold, int image_width,
    int image_height);
/* Decodes a COCO compressed RLE string into a row-major width x height mask.
 * Returns FALSE on malformed input. */
gboolean mrcnn_rle_decode (const char *counts, int width, int height,
    uint8_t *mask);

G_END_DECLS

#endif /* MRCNN_H */
