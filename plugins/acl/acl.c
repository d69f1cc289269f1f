/*
 * acl: topic access from a Mosquitto ACL file (docs/acl.md).
 *
 *   [plugins.acl]
 *   acl_file = "acl"   # required; relative to the configuration file
 *
 * AUTHORIZE, with the client's username (%u), client id (%c) and session identity (%i,
 * api->client_identity; NULL before CONNECTED, when rules with %i do not apply):
 *   PUBLISH (also wills)  write access on the topic;
 *   SUBSCRIBE             granted unless no topic the filter can match is readable
 *                         (acl_subscribe_reach); when only some are, or the library
 *                         cannot tell cheaply, each delivery is checked (ABI 2.3
 *                         delivery_check, per topic: the answer depends on the topic
 *                         and the client only);
 *   RECEIVE               read access on the message's topic (retained messages, and
 *                         live ones through subscriptions that are checked).
 * A rule that grants: ALLOW; otherwise (a deny rule, or no rule at all, as in
 * Mosquitto): DENY with a reason. All in memory, answered at once (no deferral).
 *
 * RELOAD (SIGHUP): the file is read again; a bad one is refused with "<file>:<line>:
 * <what>" and the old rules kept. Everything runs on the loop: no locking.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/plugin_options.h"
#include "aclfile.h"
#include "mqgate_plugin.h"

MQGATE_PLUGIN_DECLARE_VERSION(2)

typedef struct acl_instance {
  const mqgate_host_api *api;
  mqgate_plugin *plugin;
  char *path;
  aclfile *rules;
} acl_instance;

/* The option's path, resolved by the broker against the configuration file's
 * directory (api->opt_path), as a copy the plugin owns; NULL if out of memory. */
static char *resolved_path(const mqgate_host_api *api, const mqgate_options *options,
                           const char *key) {
  const char *path = NULL;
  if (api->opt_path(options, key, &path) != MQGATE_OK) return NULL;
  return strdup(path);
}

/* Reads the options and the file; MQGATE_OK with *path and *rules, or an error with
 * *errmsg. */
static int load(const mqgate_host_api *api, const mqgate_options *options, char **path,
                aclfile **rules, char **errmsg) {
  static const char *const known[] = {"acl_file", NULL};
  const char *file = NULL;
  char err[ACL_ERR_LEN];
  int rc = plugin_refuse_unknown_options(api, options, known, errmsg);
  if (rc != MQGATE_OK) return rc;
  rc = api->opt_string(options, "acl_file", &file);
  if (rc != MQGATE_OK || file[0] == '\0') {
    *errmsg = api->mprintf("%s: acl_file: %s (the path of a Mosquitto ACL file)",
                           api->opt_location(options, "acl_file"),
                           rc == MQGATE_ERR_NOT_FOUND ? "missing" : "expected a non-empty string");
    return MQGATE_ERR_CONFIG;
  }
  *path = resolved_path(api, options, "acl_file");
  if (*path == NULL) return MQGATE_ERR_NOMEM;
  *rules = aclfile_load(*path, err, sizeof err);
  if (*rules == NULL) {
    *errmsg = api->mprintf("acl_file: %s", err);
    free(*path);
    *path = NULL;
    return MQGATE_ERR_CONFIG;
  }
  return MQGATE_OK;
}

/* Mosquitto grants every SUBSCRIBE and checks read on each delivery. The same answers,
 * with two improvements: a filter of which no topic is readable is refused (the client
 * learns it from the SUBACK), and a filter the rules grant entirely is never checked
 * again (until a reload). */
static int on_subscribe(acl_instance* self, mqgate_evt_authorize* evt, const char* username,
                        const char* client_id, const char* identity) {
  const mqgate_host_api* api = self->api;
  const int reach = evt->topic == NULL ? ACL_REACH_NONE
                                       : acl_subscribe_reach(self->rules, username, client_id,
                                                             identity, evt->topic);
  if (reach == ACL_REACH_ALL) return MQGATE_ALLOW;
  if (reach == ACL_REACH_SOME) {
    /* A host without per-delivery checks (older than ABI 2.3) could not withhold the
     * topics that are not readable: refuse, as this plugin used to. */
    if (MQGATE_HAS_FIELD(evt, mqgate_evt_authorize, delivery_check)) {
      evt->delivery_check = MQGATE_CHECK_PER_TOPIC;
      return MQGATE_ALLOW;
    }
  }
  evt->reason = api->mprintf("acl: %s \"%s\" (username %s%s%s)",
                             reach == ACL_REACH_NONE ? "no readable topic in the filter"
                                                     : "not every topic readable in the filter",
                             evt->topic ? evt->topic : "", username ? "\"" : "",
                             username ? username : "none", username ? "\"" : "");
  return MQGATE_DENY;
}

static int on_authorize(acl_instance *self, mqgate_evt_authorize *evt) {
  const mqgate_host_api *api = self->api;
  const char *username = api->client_username(evt->client);
  const char *client_id = api->client_id(evt->client);
  const char *identity =
      MQGATE_API_HAS(api, client_identity) ? api->client_identity(evt->client) : NULL;
  int access;
  const char *what;
  switch (evt->action) {
    case MQGATE_ACTION_PUBLISH:
      access = ACL_WRITE;
      what = "write";
      /* The answer depends on the client and the topic only (until a reload). */
      if (MQGATE_HAS_FIELD(evt, mqgate_evt_authorize, same_answer)) evt->same_answer = 1;
      break;
    case MQGATE_ACTION_SUBSCRIBE:
      return on_subscribe(self, evt, username, client_id ? client_id : "", identity);
    case MQGATE_ACTION_RECEIVE:
      access = ACL_READ;
      what = "read";
      break;
    default:
      evt->reason = api->mprintf("unknown action %d", evt->action);
      return MQGATE_DENY;
  }
  if (evt->topic != NULL &&
      acl_check(self->rules, username, client_id ? client_id : "", identity, evt->topic,
                access))
    return MQGATE_ALLOW;
  evt->reason = api->mprintf("acl: no %s for \"%s\" (username %s%s%s)", what,
                             evt->topic ? evt->topic : "", username ? "\"" : "",
                             username ? username : "none", username ? "\"" : "");
  return MQGATE_DENY;
}

static int on_event(int event, void *event_data, void *instance) {
  acl_instance *self = (acl_instance *)instance;
  if (event == MQGATE_EVT_AUTHORIZE)
    return on_authorize(self, (mqgate_evt_authorize *)event_data);
  if (event == MQGATE_EVT_RELOAD) {
    mqgate_evt_reload *evt = (mqgate_evt_reload *)event_data;
    char *path = NULL;
    aclfile *rules = NULL;
    int rc = load(self->api, evt->options, &path, &rules, &evt->errmsg);
    if (rc != MQGATE_OK) return rc; /* the old rules stay */
    aclfile_free(self->rules);
    free(self->path);
    self->rules = rules;
    self->path = path;
    self->api->log(self->plugin, MQGATE_LOG_INFO, "reloaded %s", path);
    return MQGATE_OK;
  }
  return MQGATE_OK;
}

MQGATE_PLUGIN_EXPORT int mqgate_plugin_init(mqgate_plugin *plugin, const mqgate_host_api *api,
                                            const mqgate_options *options, void **instance,
                                            char **errmsg) {
  acl_instance *self;
  char *path = NULL;
  aclfile *rules = NULL;
  int rc = load(api, options, &path, &rules, errmsg);
  if (rc != MQGATE_OK) return rc;
  self = (acl_instance *)calloc(1, sizeof *self);
  if (self == NULL) {
    aclfile_free(rules);
    free(path);
    return MQGATE_ERR_NOMEM;
  }
  self->api = api;
  self->plugin = plugin;
  self->path = path;
  self->rules = rules;
  if (api->register_event(plugin, MQGATE_EVT_AUTHORIZE, on_event) != MQGATE_OK ||
      api->register_event(plugin, MQGATE_EVT_RELOAD, on_event) != MQGATE_OK) {
    aclfile_free(rules);
    free(path);
    free(self);
    *errmsg = api->strdup("cannot register the plugin's events");
    return MQGATE_ERR_PLUGIN;
  }
  api->log(plugin, MQGATE_LOG_INFO, "rules from %s", path);
  *instance = self;
  return MQGATE_OK;
}

MQGATE_PLUGIN_EXPORT void mqgate_plugin_shutdown(void *instance) {
  acl_instance *self = (acl_instance *)instance;
  aclfile_free(self->rules);
  free(self->path);
  free(self);
}
