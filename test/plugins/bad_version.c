/* A plugin built for an ABI version the broker does not host. */
#include "mqgate_plugin.h"

MQGATE_PLUGIN_DECLARE_VERSION(99)

int mqgate_plugin_init(mqgate_plugin *plugin, const mqgate_host_api *api, const mqgate_options *options,
                       void **instance, char **errmsg) {
  (void)plugin;
  (void)api;
  (void)options;
  (void)instance;
  (void)errmsg;
  return MQGATE_OK;
}
