/*
 * anonymous: the seed's anonymous-access plugin.
 *
 *   [plugins.anonymous]
 *   allow_anonymous = true    # required
 *
 * allow_anonymous = true   ALLOW every client.
 * allow_anonymous = false  ALLOW clients that sent a username, DENY the others.
 *                          The username is not checked: pair this with a plugin that
 *                          denies bad credentials (any DENY wins).
 *
 * On reload the new value takes effect for the next CONNECT.
 */
#include <stdlib.h>
#include <string.h>

#include "../common/plugin_options.h"
#include "mqgate_plugin.h"

MQGATE_PLUGIN_DECLARE_VERSION(2)

typedef struct anonymous_instance {
  const mqgate_host_api *api;
  mqgate_plugin *plugin;
  int allow_anonymous;
} anonymous_instance;

/* Reads the options; returns MQGATE_OK or an error with *errmsg set. */
static int read_options(const mqgate_host_api *api, const mqgate_options *options, int *allow,
                        char **errmsg) {
  static const char *const known[] = {"allow_anonymous", NULL};
  int rc = plugin_refuse_unknown_options(api, options, known, errmsg);
  if (rc != MQGATE_OK) return rc;
  rc = api->opt_boolean(options, "allow_anonymous", allow);
  if (rc == MQGATE_ERR_NOT_FOUND) {
    *errmsg = api->mprintf("%s: allow_anonymous: missing (true or false)",
                           api->opt_location(options, "allow_anonymous"));
    return MQGATE_ERR_CONFIG;
  }
  if (rc != MQGATE_OK) {
    *errmsg = api->mprintf("%s: allow_anonymous: expected true or false",
                           api->opt_location(options, "allow_anonymous"));
    return MQGATE_ERR_CONFIG;
  }
  return MQGATE_OK;
}

static int on_event(int event, void *event_data, void *instance) {
  anonymous_instance *self = (anonymous_instance *)instance;
  if (event == MQGATE_EVT_AUTHENTICATE) {
    mqgate_evt_authenticate *evt = (mqgate_evt_authenticate *)event_data;
    if (self->allow_anonymous) return MQGATE_ALLOW;
    if (evt->username != NULL) return MQGATE_ALLOW;
    evt->reason = self->api->strdup("no username and allow_anonymous is false");
    return MQGATE_DENY;
  }
  if (event == MQGATE_EVT_RELOAD) {
    mqgate_evt_reload *evt = (mqgate_evt_reload *)event_data;
    int allow = 0;
    int rc = read_options(self->api, evt->options, &allow, &evt->errmsg);
    if (rc != MQGATE_OK) return rc;
    self->allow_anonymous = allow;
    return MQGATE_OK;
  }
  return MQGATE_OK;
}

MQGATE_PLUGIN_EXPORT int mqgate_plugin_init(mqgate_plugin *plugin, const mqgate_host_api *api,
                       const mqgate_options *options, void **instance, char **errmsg) {
  anonymous_instance *self;
  int allow = 0;
  int rc = read_options(api, options, &allow, errmsg);
  if (rc != MQGATE_OK) return rc;
  self = (anonymous_instance *)calloc(1, sizeof *self);
  if (self == NULL) return MQGATE_ERR_NOMEM;
  self->api = api;
  self->plugin = plugin;
  self->allow_anonymous = allow;
  api->register_event(plugin, MQGATE_EVT_AUTHENTICATE, on_event);
  api->register_event(plugin, MQGATE_EVT_RELOAD, on_event);
  *instance = self;
  return MQGATE_OK;
}

MQGATE_PLUGIN_EXPORT void mqgate_plugin_shutdown(void *instance) { free(instance); }
