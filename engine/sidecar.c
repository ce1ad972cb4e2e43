#include "sidecar.h"

#include "mrcnn.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <stdio.h>
#include <string.h>

gboolean
mrcnn_json_too_deep (const char *text, gssize length)
{
  const char *end = length < 0 ? text + strlen (text) : text + length;
  int depth = 0;
  gboolean in_string = FALSE;
  for (const char *p = text; p < end; p++) {
    if (in_string) {
      if (*p == '\\' && p + 1 < end)
        p++;
      else if (*p == '"')
        in_string = FALSE;
    } else if (*p == '"') {
      in_string = TRUE;
    } else if (*p == '[' || *p == '{') {
      if (++depth > MRCNN_MAX_JSON_DEPTH)
        return TRUE;
    } else if (*p == ']' || *p == '}') {
      depth--;
    }
  }
  return FALSE;
}

static GHashTable *
new_table (void)
{
  return g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
      (GDestroyNotify) json_node_unref);
}

/* Drops a trailing comma before a closing bracket: Python allows (1,). */
static void
close_list (GString *out)
{
  gsize n = out->len;
  while (n > 0 && g_ascii_isspace (out->str[n - 1]))
    n--;
  if (n > 0 && out->str[n - 1] == ',')
    g_string_truncate (out, n - 1);
  g_string_append_c (out, ']');
}

/* Rewrites a Python literal as JSON text: tuples become lists, quotes
 * become double quotes, True/False/None become true/false/null, and a '#'
 * outside a string starts a comment. */
static char *
python_to_json (const char *text)
{
  GString *out = g_string_new (NULL);
  for (const char *p = text; *p && *p != '#'; p++) {
    if (*p == '\'' || *p == '"') {
      char quote = *p++;
      g_string_append_c (out, '"');
      for (; *p && *p != quote; p++) {
        if (*p == '\\' && p[1] == quote) {
          p++;
          g_string_append (out, quote == '"' ? "\\\"" : "'");
        } else if (*p == '\\' && p[1]) {
          g_string_append_c (out, *p++);
          g_string_append_c (out, *p);
        } else if (*p == '"') {
          g_string_append (out, "\\\"");
        } else {
          g_string_append_c (out, *p);
        }
      }
      g_string_append_c (out, '"');
      if (!*p)
        break;
    } else if (*p == '(' || *p == '[') {
      g_string_append_c (out, '[');
    } else if (*p == ')' || *p == ']') {
      close_list (out);
    } else if (g_ascii_isalpha (*p) || *p == '_') {
      const char *start = p;
      while (g_ascii_isalnum (p[1]) || p[1] == '_')
        p++;
      char *word = g_strndup (start, p - start + 1);
      g_string_append (out, strcmp (word, "True") == 0 ? "true"
          : strcmp (word, "False") == 0 ? "false"
          : strcmp (word, "None") == 0 ? "null" : word);
      g_free (word);
    } else {
      g_string_append_c (out, *p);
    }
  }
  return g_string_free (out, FALSE);
}

static GHashTable *
load_json (const char *path, const char *text, GError **error)
{
  JsonParser *parser = json_parser_new ();
  GError *json_error = NULL;
  GHashTable *table = NULL;
  if (mrcnn_json_too_deep (text, -1)) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_INVALID_ARGUMENT,
        "%s: JSON nested deeper than %d levels", path, MRCNN_MAX_JSON_DEPTH);
  } else if (!json_parser_load_from_data (parser, text, -1, &json_error)) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_INVALID_ARGUMENT,
        "%s: not valid JSON: %s", path, json_error->message);
    g_error_free (json_error);
  } else if (!JSON_NODE_HOLDS_OBJECT (json_parser_get_root (parser))) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_INVALID_ARGUMENT,
        "%s: a JSON sidecar must be one object of KEY: VALUE members",
        path);
  } else {
    JsonObject *obj = json_node_get_object (json_parser_get_root (parser));
    GList *members = json_object_get_members (obj);
    table = new_table ();
    for (GList *l = members; l; l = l->next)
      g_hash_table_replace (table, g_strdup (l->data),
          json_node_copy (json_object_get_member (obj, l->data)));
    g_list_free (members);
  }
  g_object_unref (parser);
  return table;
}

static GHashTable *
load_lines (const char *path, const char *text, GError **error)
{
  GHashTable *table = new_table ();
  char **lines = g_strsplit (text, "\n", -1);
  gboolean ok = TRUE;
  for (int i = 0; ok && lines[i]; i++) {
    char *line = g_strstrip (lines[i]);
    if (!*line || *line == '#')
      continue;
    char *eq = strchr (line, '=');
    if (!eq) {
      g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_INVALID_ARGUMENT,
          "%s: line %d: expected KEY = VALUE, got \"%s\"", path, i + 1,
          line);
      ok = FALSE;
      break;
    }
    *eq = '\0';
    char *key = g_strstrip (line);
    char *json = python_to_json (g_strstrip (eq + 1));
    GError *json_error = NULL;
    JsonNode *node = *key && !mrcnn_json_too_deep (json, -1)
        ? json_from_string (json, &json_error) : NULL;
    if (!node) {
      g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_INVALID_ARGUMENT,
          "%s: line %d: %s%s%s", path, i + 1,
          *key ? "bad value for " : "missing key", key,
          *key ? " (numbers, quoted strings, lists nested at most 64 deep, "
          "True or False)" : "");
      g_clear_error (&json_error);
      ok = FALSE;
    } else {
      g_hash_table_replace (table, g_strdup (key), node);
    }
    g_free (json);
  }
  g_strfreev (lines);
  if (!ok)
    g_clear_pointer (&table, g_hash_table_unref);
  return table;
}

GHashTable *
mrcnn_sidecar_parse (const char *text, const char *path, GError **error)
{
  const char *first = text;
  while (g_ascii_isspace (*first))
    first++;
  return *first == '{' ? load_json (path, text, error)
      : load_lines (path, text, error);
}

GHashTable *
mrcnn_sidecar_load (const char *path, GError **error)
{
  /* read with a cap rather than g_file_get_contents: the path may name a
   * device or a pipe that never ends */
  FILE *f = g_fopen (path, "rb");
  if (!f) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_IO, "%s: cannot read: %s",
        path, g_strerror (errno));
    return NULL;
  }
  char *text = g_malloc (MRCNN_MAX_SIDECAR_BYTES + 1);
  size_t length = fread (text, 1, MRCNN_MAX_SIDECAR_BYTES + 1, f);
  gboolean failed = ferror (f);
  int saved_errno = errno;
  fclose (f);
  GHashTable *table = NULL;
  if (failed)
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_IO, "%s: cannot read: %s",
        path, g_strerror (saved_errno));
  else if (length > MRCNN_MAX_SIDECAR_BYTES)
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_INVALID_ARGUMENT,
        "%s: larger than %d bytes: not a sidecar configuration", path,
        MRCNN_MAX_SIDECAR_BYTES);
  else if (memchr (text, '\0', length))
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_INVALID_ARGUMENT,
        "%s: holds NUL bytes: not a text file", path);
  else {
    text[length] = '\0';
    table = mrcnn_sidecar_parse (text, path, error);
  }
  g_free (text);
  return table;
}
