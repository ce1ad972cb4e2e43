/* Sidecar configuration files (mrcnn_model_load_with_config): either a JSON
 * object, or "KEY = VALUE" lines whose values are written as in Python
 * ([..], (..), numbers, quoted strings, True/False/None), '#' comments. */
#ifndef MRCNN_SIDECAR_H
#define MRCNN_SIDECAR_H

#include <glib.h>

/* A longer sidecar is refused (matterport's whole Config is 3 kB). */
#define MRCNN_MAX_SIDECAR_BYTES (1 << 20)

/* key -> JsonNode (owned by the table); NULL and error on failure. */
GHashTable *mrcnn_sidecar_load (const char *path, GError **error);
/* The same from the text of a sidecar; path names it in errors. */
GHashTable *mrcnn_sidecar_parse (const char *text, const char *path,
    GError **error);

/* JSON nested deeper than this is refused before json-glib, which parses
 * recursively, sees it (a deep enough text overflows the stack). */
#define MRCNN_MAX_JSON_DEPTH 64

/* TRUE when the JSON text (length < 0: NUL-terminated) nests arrays and
 * objects deeper than MRCNN_MAX_JSON_DEPTH. */
gboolean mrcnn_json_too_deep (const char *text, gssize length);

#endif
