/* A plugin that forgot mqgate_plugin_init. */
#include "mqgate_plugin.h"

MQGATE_PLUGIN_DECLARE_VERSION(1)
