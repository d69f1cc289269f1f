/*
 * devices_acl: an example mqgate plugin (see docs/writing-plugins.md).
 *
 * Lets each client publish only under <prefix>/<its client id>/ -- e.g. client
 * "sensor-7" may publish to "devices/sensor-7/temperature" but not to
 * "devices/sensor-8/temperature" nor "alerts". Subscriptions are left to other plugins
 * (ABSTAIN). Authentication too: configure e.g. the anonymous plugin beside it.
 *
 *   [plugins.devices_acl]
 *   path = "/path/to/devices_acl.so"
 *   prefix = "devices"          # optional, default "devices"
 *
 * Build against the installed header:
 *   cc -std=c99 -shared -fPIC $(pkg-config --cflags mqgate-plugin) devices_acl.c -o devices_acl.so
 */
#include <mqgate_plugin.h>
#include <stdlib.h>
#include <string.h>

/* Tells the broker which ABI this plugin was built for. */
MQGATE_PLUGIN_DECLARE_VERSION(MQGATE_PLUGIN_ABI_VERSION)

/* Per-instance state: two [plugins.*] tables using this .so get two of these. */
typedef struct devices_acl {
  const mqgate_host_api *api;
  mqgate_plugin *plugin;
  char prefix[128];
} devices_acl;

/* Reads and checks the options into `self`; on error sets *errmsg. */
static int read_options(devices_acl *self, const mqgate_options *options, char **errmsg) {
  const mqgate_host_api *api = self->api;
  const char *prefix = "devices";
  size_t i;
  for (i = 0; i < api->opt_count(options); i++) {
    const char *key = api->opt_key(options, i);
    if (strcmp(key, "prefix") != 0) {
      *errmsg = api->mprintf("%s: unknown option \"%s\" (expected: prefix)",
                             api->opt_location(options, key), key);
      return MQGATE_ERR_CONFIG;
    }
  }
  if (api->opt_type(options, "prefix") != MQGATE_OPT_MISSING &&
      (api->opt_string(options, "prefix", &prefix) != MQGATE_OK || prefix[0] == '\0' ||
       strlen(prefix) >= sizeof self->prefix || strpbrk(prefix, "+#") != NULL)) {
    *errmsg = api->mprintf("%s: prefix: expected a non-empty topic prefix without wildcards",
                           api->opt_location(options, "prefix"));
    return MQGATE_ERR_CONFIG;
  }
  strcpy(self->prefix, prefix);
  return MQGATE_OK;
}

/* True if `topic` is "<prefix>/<client_id>" or below it. */
static int under_own_branch(const devices_acl *self, const char *client_id, const char *topic) {
  size_t plen = strlen(self->prefix), clen = strlen(client_id);
  if (strncmp(topic, self->prefix, plen) != 0 || topic[plen] != '/') return 0;
  topic += plen + 1;
  if (strncmp(topic, client_id, clen) != 0) return 0;
  return topic[clen] == '\0' || topic[clen] == '/';
}

static int on_event(int event, void *event_data, void *instance) {
  devices_acl *self = (devices_acl *)instance;
  if (event == MQGATE_EVT_AUTHORIZE) {
    mqgate_evt_authorize *evt = (mqgate_evt_authorize *)event_data;
    const char *client_id = self->api->client_id(evt->client);
    if (evt->action != MQGATE_ACTION_PUBLISH) return MQGATE_DECISION_ABSTAIN;
    if (under_own_branch(self, client_id, evt->topic)) return MQGATE_DECISION_ALLOW;
    evt->reason = self->api->mprintf("may publish only under %s/%s/", self->prefix, client_id);
    return MQGATE_DECISION_DENY;
  }
  if (event == MQGATE_EVT_RELOAD) {
    mqgate_evt_reload *evt = (mqgate_evt_reload *)event_data;
    devices_acl fresh = *self;
    int rc = read_options(&fresh, evt->options, &evt->errmsg);
    if (rc == MQGATE_OK) *self = fresh; /* keep the old options on error */
    return rc;
  }
  return MQGATE_OK;
}

int mqgate_plugin_init(mqgate_plugin *plugin, const mqgate_host_api *api,
                       const mqgate_options *options, void **instance, char **errmsg) {
  devices_acl *self = (devices_acl *)calloc(1, sizeof *self);
  int rc;
  if (self == NULL) return MQGATE_ERR_NOMEM;
  self->api = api;
  self->plugin = plugin;
  rc = read_options(self, options, errmsg);
  if (rc != MQGATE_OK) {
    free(self);
    return rc;
  }
  api->register_event(plugin, MQGATE_EVT_AUTHORIZE, on_event);
  api->register_event(plugin, MQGATE_EVT_RELOAD, on_event);
  api->log(plugin, MQGATE_LOG_INFO, "clients may publish only under %s/<client id>/", self->prefix);
  *instance = self;
  return MQGATE_OK;
}

void mqgate_plugin_shutdown(void *instance) { free(instance); }
