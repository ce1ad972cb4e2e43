/* The command-line options that choose where and how an engine runs,
 * shared by mrcnn-detect and mrcnn-bench. */
#ifndef MRCNN_TOOLS_ENGINE_OPTIONS_H
#define MRCNN_TOOLS_ENGINE_OPTIONS_H

#include <mrcnn.h>

/* --backend, --device, --precision, for g_option_context_add_main_entries */
extern const GOptionEntry engine_option_entries[];

/* Sets options' backend, device and precision from the parsed entries;
 * FALSE, with a message naming the option, for a value it does not know. */
gboolean engine_options_apply (MrcnnOptions *options, GError **error);

#endif
