/* The command-line options that choose where and how an engine runs,
 * shared by mrcnn-detect and mrcnn-bench. */
#ifndef MRCNN_TOOLS_ENGINE_OPTIONS_H
#define MRCNN_TOOLS_ENGINE_OPTIONS_H

#include <mrcnn.h>

/* Parses the command line with the tool's own entries and --backend,
 * --device, --precision and --threads, then initialises options with them;
 * FALSE, with a message naming the option, for a bad one.  Frees context. */
gboolean engine_options_parse (GOptionContext *context,
    const GOptionEntry *entries, int *argc, char ***argv,
    MrcnnOptions *options, GError **error);

#endif
