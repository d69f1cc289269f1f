/*
 * v5probe: an ABI 2 test plugin for the MQTT 5.0 additions of the plugin ABI. It logs
 * what AUTHENTICATE shows of a client at INFO ("v5probe: authenticate client_id=...
 * level=... api_level=... user_properties=[k=v;...]") and denies with the MQTT 5 reason
 * codes and Reason Strings its options name.
 *
 * Options (all optional):
 *   deny_users = ["name", ...]    AUTHENTICATE: DENY these usernames (others: ALLOW)
 *   connack_reason = 0x8A         ...with this CONNACK reason code (0: the default)
 *   deny_topics = ["filter", ...] AUTHORIZE: DENY PUBLISH/SUBSCRIBE matching these
 *                                 (others: ABSTAIN)
 *   ack_reason = 0x97             ...with this PUBACK/PUBREC/SUBACK reason code
 *   reason_string = "text"        the Reason String of every denial
 */
#include <stdio.h>
#include <string.h>

#include "mqgate_plugin.h"

MQGATE_PLUGIN_DECLARE_VERSION(2)

#define MAX_LIST 16
#define MAX_TEXT 128

typedef struct v5probe {
  const mqgate_host_api *api;
  mqgate_plugin *plugin;
  char deny_users[MAX_LIST][MAX_TEXT], deny_topics[MAX_LIST][MAX_TEXT];
  size_t user_count, topic_count;
  int64_t connack_reason, ack_reason;
  char reason_string[MAX_TEXT];
} v5probe;

static size_t read_list(const mqgate_host_api *api, const mqgate_options *o, const char *key,
                        char out[MAX_LIST][MAX_TEXT]) {
  size_t n = 0, i;
  if (api->opt_array_size(o, key, &n) != MQGATE_OK) return 0;
  for (i = 0; i < n && i < MAX_LIST; i++) {
    const char *s = "";
    api->opt_array_string(o, key, i, &s);
    snprintf(out[i], MAX_TEXT, "%s", s);
  }
  return i;
}

static int on_authenticate(int event, void *data, void *instance) {
  v5probe *self = instance;
  const mqgate_host_api *api = self->api;
  mqgate_evt_authenticate *e = data;
  char props[1024] = "";
  size_t i, used = 0;
  (void)event;
  if (MQGATE_HAS_FIELD(e, mqgate_evt_authenticate, user_properties_len)) {
    for (i = 0; i < e->user_properties_len && used < sizeof props - 1; i++)
      used += (size_t)snprintf(props + used, sizeof props - used, "%s%s=%s", i ? ";" : "",
                               e->user_properties[i].name, e->user_properties[i].value);
  }
  api->log(self->plugin, MQGATE_LOG_INFO,
           "v5probe: authenticate client_id=%s level=%d api_level=%d user_properties=[%s]",
           e->client_id, e->protocol_level, api->client_protocol_level(e->client), props);
  for (i = 0; i < self->user_count; i++) {
    if (e->username != NULL && strcmp(e->username, self->deny_users[i]) == 0) {
      e->reason = api->mprintf("user %s is on deny_users", e->username);
      e->reason_code = (int)self->connack_reason;
      if (self->reason_string[0]) e->reason_string = api->strdup(self->reason_string);
      return MQGATE_VERDICT_DENY;
    }
  }
  return MQGATE_VERDICT_ALLOW;
}

static int on_authorize(int event, void *data, void *instance) {
  v5probe *self = instance;
  const mqgate_host_api *api = self->api;
  mqgate_evt_authorize *e = data;
  size_t i;
  (void)event;
  if (e->action != MQGATE_ACTION_PUBLISH && e->action != MQGATE_ACTION_SUBSCRIBE)
    return MQGATE_VERDICT_ABSTAIN;
  for (i = 0; i < self->topic_count; i++) {
    if (api->filter_covers(self->deny_topics[i], e->topic)) {
      e->reason = api->mprintf("%s is on deny_topics", e->topic);
      e->reason_code = (int)self->ack_reason;
      if (self->reason_string[0]) e->reason_string = api->strdup(self->reason_string);
      return MQGATE_VERDICT_DENY;
    }
  }
  return MQGATE_VERDICT_ABSTAIN;
}

MQGATE_PLUGIN_EXPORT int mqgate_plugin_init(mqgate_plugin *plugin, const mqgate_host_api *api,
                                            const mqgate_options *options, void **instance,
                                            char **errmsg) {
  static v5probe instances[4];
  static size_t used = 0;
  v5probe *self;
  const char *s = NULL;
  if (used == 4) {
    *errmsg = api->mprintf("at most 4 instances");
    return MQGATE_ERR_CONFIG;
  }
  self = &instances[used++];
  memset(self, 0, sizeof *self);
  self->api = api;
  self->plugin = plugin;
  self->user_count = read_list(api, options, "deny_users", self->deny_users);
  self->topic_count = read_list(api, options, "deny_topics", self->deny_topics);
  api->opt_integer(options, "connack_reason", &self->connack_reason);
  api->opt_integer(options, "ack_reason", &self->ack_reason);
  if (api->opt_string(options, "reason_string", &s) == MQGATE_OK)
    snprintf(self->reason_string, sizeof self->reason_string, "%s", s);
  api->register_event(plugin, MQGATE_EVT_AUTHENTICATE, on_authenticate);
  api->register_event(plugin, MQGATE_EVT_AUTHORIZE, on_authorize);
  *instance = self;
  return MQGATE_OK;
}
