/*
 * scripted: a test plugin whose answers come from its options, so integration tests
 * can build any chain of decisions. Every event is logged at INFO as
 * "scripted <tag>: <event> ..." for the tests to read back.
 *
 * Options (all optional):
 *   tag = "a"                       name in the log lines
 *   authenticate = "allow" | "deny" | "abstain" | "invalid" | "none"   (default "none":
 *                                   do not register for AUTHENTICATE)
 *   allow_clients = ["id", ...]     ALLOW these client ids (before `authenticate`)
 *   deny_clients = ["id", ...]      DENY these client ids (before `authenticate`)
 *   authorize = "allow" | "deny" | "abstain" | "invalid" | "none"      (default "none")
 *   deny_topics = ["filter", ...]   DENY topics/filters matching these (before `authorize`)
 *   reason = "text"                 reason attached to denials
 *   assign_client_id = "id"         assigned when the client id was generated
 *   fail_init = true                init fails with a message
 */
#include <stdlib.h>
#include <string.h>

#include "mqgate_plugin.h"

MQGATE_PLUGIN_DECLARE_VERSION(1)

#define MAX_LIST 16
#define MAX_TEXT 128

typedef struct list {
  size_t count;
  char items[MAX_LIST][MAX_TEXT];
} list;

typedef struct scripted {
  const mqgate_host_api *api;
  mqgate_plugin *plugin;
  char tag[MAX_TEXT];
  int authenticate; /* a decision, or -1 for "none" */
  int authorize;
  list allow_clients, deny_clients, deny_topics;
  char reason[MAX_TEXT];
  char assign[MAX_TEXT];
} scripted;

static int parse_decision(const char *s, int *out) {
  if (strcmp(s, "allow") == 0) *out = MQGATE_DECISION_ALLOW;
  else if (strcmp(s, "deny") == 0) *out = MQGATE_DECISION_DENY;
  else if (strcmp(s, "abstain") == 0) *out = MQGATE_DECISION_ABSTAIN;
  else if (strcmp(s, "invalid") == 0) *out = 42;
  else if (strcmp(s, "none") == 0) *out = -1;
  else return 0;
  return 1;
}

static void copy_text(char *dst, const char *src) {
  strncpy(dst, src, MAX_TEXT - 1);
  dst[MAX_TEXT - 1] = '\0';
}

static int read_list(const mqgate_host_api *api, const mqgate_options *o, const char *key, list *l) {
  size_t n = 0, i;
  l->count = 0;
  if (api->opt_array_size(o, key, &n) != MQGATE_OK) return api->opt_type(o, key) == MQGATE_OPT_MISSING;
  for (i = 0; i < n && i < MAX_LIST; i++) {
    const char *s = NULL;
    api->opt_array_string(o, key, i, &s);
    copy_text(l->items[l->count++], s);
  }
  return 1;
}

static int in_list(const list *l, const char *s) {
  size_t i;
  for (i = 0; i < l->count; i++)
    if (strcmp(l->items[i], s) == 0) return 1;
  return 0;
}

static int read_options(scripted *self, const mqgate_options *o, char **errmsg) {
  const mqgate_host_api *api = self->api;
  const char *s = NULL;
  int flag = 0;
  if (api->opt_boolean(o, "fail_init", &flag) == MQGATE_OK && flag) {
    *errmsg = api->mprintf("%s: fail_init is set", api->opt_location(o, "fail_init"));
    return MQGATE_ERR_CONFIG;
  }
  copy_text(self->tag, api->opt_string(o, "tag", &s) == MQGATE_OK ? s : "");
  self->authenticate = self->authorize = -1;
  if (api->opt_string(o, "authenticate", &s) == MQGATE_OK && !parse_decision(s, &self->authenticate)) {
    *errmsg = api->mprintf("authenticate: unknown decision \"%s\"", s);
    return MQGATE_ERR_CONFIG;
  }
  if (api->opt_string(o, "authorize", &s) == MQGATE_OK && !parse_decision(s, &self->authorize)) {
    *errmsg = api->mprintf("authorize: unknown decision \"%s\"", s);
    return MQGATE_ERR_CONFIG;
  }
  if (!read_list(api, o, "allow_clients", &self->allow_clients) ||
      !read_list(api, o, "deny_clients", &self->deny_clients) ||
      !read_list(api, o, "deny_topics", &self->deny_topics)) {
    *errmsg = api->mprintf("lists must be arrays of strings");
    return MQGATE_ERR_CONFIG;
  }
  copy_text(self->reason, api->opt_string(o, "reason", &s) == MQGATE_OK ? s : "");
  copy_text(self->assign, api->opt_string(o, "assign_client_id", &s) == MQGATE_OK ? s : "");
  return MQGATE_OK;
}

static int on_event(int event, void *data, void *instance) {
  scripted *self = (scripted *)instance;
  const mqgate_host_api *api = self->api;
  switch (event) {
    case MQGATE_EVT_AUTHENTICATE: {
      mqgate_evt_authenticate *e = (mqgate_evt_authenticate *)data;
      int d = self->authenticate < 0 ? MQGATE_DECISION_ABSTAIN : self->authenticate;
      if (in_list(&self->allow_clients, e->client_id)) d = MQGATE_DECISION_ALLOW;
      if (in_list(&self->deny_clients, e->client_id)) d = MQGATE_DECISION_DENY;
      api->log(self->plugin, MQGATE_LOG_INFO,
               "scripted %s: authenticate client_id=%s generated=%d username=%s password_len=%zu "
               "level=%d listener=%s peer=%s chain=%zu -> %d",
               self->tag, e->client_id, e->client_id_generated, e->username ? e->username : "(none)",
               e->password_len, e->protocol_level, e->listener, e->peer_address, e->peer_chain_len, d);
      if (d == MQGATE_DECISION_DENY && self->reason[0]) e->reason = api->strdup(self->reason);
      if (d == MQGATE_DECISION_ALLOW && self->assign[0] && e->client_id_generated)
        e->assign_client_id = api->strdup(self->assign);
      return d;
    }
    case MQGATE_EVT_AUTHORIZE: {
      mqgate_evt_authorize *e = (mqgate_evt_authorize *)data;
      int d = self->authorize < 0 ? MQGATE_DECISION_ABSTAIN : self->authorize;
      size_t i;
      for (i = 0; i < self->deny_topics.count; i++)
        if (strcmp(self->deny_topics.items[i], e->topic) == 0 ||
            api->topic_matches(self->deny_topics.items[i], e->topic))
          d = MQGATE_DECISION_DENY;
      api->log(self->plugin, MQGATE_LOG_INFO,
               "scripted %s: authorize client_id=%s action=%d topic=%s qos=%d retain=%d -> %d", self->tag,
               api->client_id(e->client), e->action, e->topic, e->qos, e->retain, d);
      if (d == MQGATE_DECISION_DENY && self->reason[0]) e->reason = api->mprintf("%s", self->reason);
      return d;
    }
    case MQGATE_EVT_CONNECTED: {
      mqgate_evt_connected *e = (mqgate_evt_connected *)data;
      api->log(self->plugin, MQGATE_LOG_INFO, "scripted %s: connected client_id=%s username=%s listener=%s "
               "peer=%s session_present=%d", self->tag, api->client_id(e->client),
               api->client_username(e->client) ? api->client_username(e->client) : "(none)",
               api->client_listener(e->client), api->client_peer_address(e->client), e->session_present);
      return MQGATE_OK;
    }
    case MQGATE_EVT_DISCONNECTED: {
      mqgate_evt_disconnected *e = (mqgate_evt_disconnected *)data;
      api->log(self->plugin, MQGATE_LOG_INFO, "scripted %s: disconnected client_id=%s reason=%s", self->tag,
               api->client_id(e->client), e->reason);
      return MQGATE_OK;
    }
    case MQGATE_EVT_RELOAD: {
      mqgate_evt_reload *e = (mqgate_evt_reload *)data;
      scripted fresh = *self;
      int rc = read_options(&fresh, e->options, &e->errmsg);
      if (rc != MQGATE_OK) return rc;
      *self = fresh;
      api->log(self->plugin, MQGATE_LOG_INFO, "scripted %s: reloaded", self->tag);
      return MQGATE_OK;
    }
    case MQGATE_EVT_TICK:
      api->log(self->plugin, MQGATE_LOG_DEBUG, "scripted %s: tick", self->tag);
      return MQGATE_OK;
  }
  return MQGATE_OK;
}

int mqgate_plugin_init(mqgate_plugin *plugin, const mqgate_host_api *api, const mqgate_options *options,
                       void **instance, char **errmsg) {
  scripted *self = (scripted *)calloc(1, sizeof *self);
  int rc;
  if (self == NULL) return MQGATE_ERR_NOMEM;
  self->api = api;
  self->plugin = plugin;
  rc = read_options(self, options, errmsg);
  if (rc != MQGATE_OK) {
    free(self);
    return rc;
  }
  if (self->authenticate >= 0 || self->allow_clients.count || self->deny_clients.count)
    api->register_event(plugin, MQGATE_EVT_AUTHENTICATE, on_event);
  if (self->authorize >= 0 || self->deny_topics.count) api->register_event(plugin, MQGATE_EVT_AUTHORIZE, on_event);
  api->register_event(plugin, MQGATE_EVT_CONNECTED, on_event);
  api->register_event(plugin, MQGATE_EVT_DISCONNECTED, on_event);
  api->register_event(plugin, MQGATE_EVT_RELOAD, on_event);
  api->register_event(plugin, MQGATE_EVT_TICK, on_event);
  *instance = self;
  return MQGATE_OK;
}

void mqgate_plugin_shutdown(void *instance) {
  scripted *self = (scripted *)instance;
  self->api->log(self->plugin, MQGATE_LOG_INFO, "scripted %s: shutdown", self->tag);
  free(self);
}
