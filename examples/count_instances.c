/* The engine API in a few lines: load a model, run it on a raw RGB frame,
 * read the detections.  Usage: count-instances MODEL.safetensors W H FILE.rgb
 * where FILE.rgb holds W*H packed 8-bit RGB pixels (e.g. from
 * `ffmpeg -i in.jpg -f rawvideo -pix_fmt rgb24 out.rgb`). */
#include <mrcnn.h>
#include <stdio.h>
#include <stdlib.h>

int
main (int argc, char **argv)
{
  if (argc != 5) {
    fprintf (stderr, "usage: %s MODEL W H FILE.rgb\n", argv[0]);
    return 2;
  }
  int width = atoi (argv[2]), height = atoi (argv[3]);
  GError *error = NULL;
  char *pixels = NULL;
  gsize size = 0;
  if (!g_file_get_contents (argv[4], &pixels, &size, &error)) {
    fprintf (stderr, "%s\n", error->message);
    return 1;
  }
  if (width < 1 || height < 1 || size != (gsize) width * height * 3) {
    fprintf (stderr, "%s: expected %d x %d x 3 bytes, found %zu\n", argv[4],
        width, height, size);
    return 1;
  }

  MrcnnModel *model = mrcnn_model_load (argv[1], &error);
  MrcnnEngine *engine = model ? mrcnn_engine_new (model, NULL, &error) : NULL;
  if (!engine) {
    fprintf (stderr, "%s\n", error->message);
    return 1;
  }

  MrcnnImage image = { (const uint8_t *) pixels, width, height, 3 * width };
  MrcnnResult result;
  mrcnn_result_init (&result);
  if (!mrcnn_engine_detect (engine, &image, &result, &error)) {
    fprintf (stderr, "%s\n", error->message);
    return 1;
  }
  for (int i = 0; i < result.n_detections; i++) {
    const MrcnnDetection *d = &result.detections[i];
    size_t area = 0;
    for (int p = 0; p < d->mask_width * d->mask_height; p++)
      area += d->mask_binary[p];
    printf ("%-16s %.3f  box %.1f,%.1f,%.1f,%.1f  mask %zu px\n", d->label,
        d->score, d->box[0], d->box[1], d->box[2], d->box[3], area);
  }

  mrcnn_result_clear (&result);
  mrcnn_engine_free (engine);
  mrcnn_model_free (model);
  g_free (pixels);
  return 0;
}
