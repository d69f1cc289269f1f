/*
 * deferred: an ABI 2 test plugin that answers later, from a thread of its own, after
 * `delay_ms`. Built with -fvisibility=hidden: it loads only because its exports carry
 * MQGATE_PLUGIN_EXPORT. Every event is logged at INFO as "deferred <tag>: ...".
 *
 * Options (all optional):
 *   tag = "d"                     name in the log lines
 *   delay_ms = 200                how long the thread waits before completing
 *   deny_users = ["name", ...]    AUTHENTICATE: DENY these usernames with CONNACK 4
 *   allow_at_once = false         AUTHENTICATE: true ALLOWs everyone at once (only
 *                                 PUBLISH/SUBSCRIBE decisions are deferred then)
 *   defer_topics = ["filter", ...] AUTHORIZE: defer PUBLISH/SUBSCRIBE matching these
 *                                 (others: ABSTAIN at once)
 *   deny_topics = ["filter", ...] ...and DENY, after the delay, those matching these
 *   disconnect_topic = "t"        a PUBLISH to t makes the plugin ask the host to
 *                                 disconnect the client ("revoked"), then ALLOW
 *   receive_deny = ["filter", ...] RECEIVE: DENY messages matching these (retained, and
 *                                 since ABI 2.3 live ones)
 *   delivery_check = "per_topic"  ABI 2.3: SUBSCRIBE answers ask for live RECEIVE
 *                                 questions ("none", "per_topic" or "every"); also
 *                                 when the SUBSCRIBE is deferred
 *   stop_checks_topic = "t"       ABI 2.3: a live RECEIVE for t answers
 *                                 MQGATE_CHECK_NONE (no more questions)
 *   same_answer = true            ABI 2.3: PUBLISH answers hold per topic (same_answer)
 *   return_ok_users = ["name", ...] AUTHENTICATE: return MQGATE_OK (an ABI 1 habit; not
 *                                 a verdict in ABI 2, so the host must deny and log)
 *   deny_reason_code = 0x8A       MQTT 5.0: the reason code of deny_users' denials,
 *   deny_reason_string = "text"   and their Reason String (through mqgate_completion)
 *   auth_method = "ECHO"          MQTT 5.0 enhanced authentication, every step deferred:
 *                                 the CONNECT's (or AUTH 0x19's) data "x" is answered
 *                                 with CONTINUE "challenge:x"; then the data "answer"
 *                                 ALLOWs with final data "welcome", anything else is
 *                                 DENIED with 0x8A "wrong answer"
 */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "../../plugins/common/mqgate_work_queue.h"
#include "mqgate_plugin.h"

MQGATE_PLUGIN_DECLARE_VERSION(2)

#define MAX_LIST 16
#define MAX_TEXT 128

typedef struct list {
  size_t count;
  char items[MAX_LIST][MAX_TEXT];
} list;

typedef struct job {
  mqgate_wq_job wq; /* first: the queue's (its not_before is the delay) */
  mqgate_deferred *token;
  int verdict;
  int connack_code;
  char reason[MAX_TEXT];
  char identity[MAX_TEXT];
  int reason_code;              /* MQTT 5.0 */
  char reason_string[MAX_TEXT];
  char auth_data[MAX_TEXT];
  int has_auth_data;
} job;

typedef struct deferred {
  const mqgate_host_api *api;
  mqgate_plugin *plugin;
  char tag[MAX_TEXT];
  long delay_ms;
  list deny_users, defer_topics, deny_topics, receive_deny, return_ok_users;
  char disconnect_topic[MAX_TEXT];
  char stop_checks_topic[MAX_TEXT];
  int delivery_check;
  int same_answer;
  int64_t deny_reason_code;
  char deny_reason_string[MAX_TEXT];
  char auth_method[MAX_TEXT];
  int allow_at_once;
  mqgate_work_queue queue; /* one thread; FIFO, and every job has the same delay */
} deferred;

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

static int matches_any(const deferred *self, const list *l, const char *topic) {
  size_t i;
  for (i = 0; i < l->count; i++)
    if (strcmp(l->items[i], topic) == 0 || self->api->topic_matches(l->items[i], topic) ||
        self->api->filter_covers(l->items[i], topic))
      return 1;
  return 0;
}

/* On the queue's thread, once a job's delay is over (at once when stopping). */
static void complete_job(void *context, mqgate_wq_job *wq, int stopping) {
  deferred *self = (deferred *)context;
  job *j = (job *)wq;
  mqgate_completion c;
  (void)stopping; /* what is queued at shutdown is completed as decided: the host ignores it */
  memset(&c, 0, sizeof c);
  c.struct_size = sizeof c;
  c.verdict = j->verdict;
  c.reason = j->reason[0] ? j->reason : NULL;
  c.identity = j->identity[0] ? j->identity : NULL;
  c.connack_code = j->connack_code;
  c.reason_code = j->reason_code;
  c.reason_string = j->reason_string[0] ? j->reason_string : NULL;
  if (j->has_auth_data) {
    c.auth_data = (const uint8_t *)j->auth_data;
    c.auth_data_len = strlen(j->auth_data);
  }
  self->api->log(self->plugin, MQGATE_LOG_INFO, "deferred %s: completing -> %d (rc %d)", self->tag,
                 j->verdict, self->api->complete(j->token, &c));
  free(j);
}

/* The MQTT 5.0 fields of the next job `later` queues (loop thread only). */
static int next_reason_code;
static const char *next_reason_string, *next_auth_data;

static int later(deferred *self, int verdict, const char *reason, const char *identity, int connack_code) {
  mqgate_deferred *token = self->api->defer(self->plugin);
  job *j;
  if (token == NULL) return MQGATE_DENY; /* cannot happen where we call it */
  j = (job *)calloc(1, sizeof *j);
  if (j == NULL) {
    mqgate_completion c;
    memset(&c, 0, sizeof c);
    c.struct_size = sizeof c;
    c.verdict = MQGATE_DENY;
    self->api->complete(token, &c);
    return MQGATE_DEFER;
  }
  j->token = token;
  j->verdict = verdict;
  j->connack_code = connack_code;
  if (reason) copy_text(j->reason, reason);
  if (identity) copy_text(j->identity, identity);
  j->reason_code = next_reason_code;
  if (next_reason_string) copy_text(j->reason_string, next_reason_string);
  if (next_auth_data) {
    copy_text(j->auth_data, next_auth_data);
    j->has_auth_data = 1;
  }
  next_reason_code = 0;
  next_reason_string = next_auth_data = NULL;
  mqgate_wq_delay(&j->wq, self->delay_ms);
  if (mqgate_wq_push(&self->queue, &j->wq) != 0) complete_job(self, &j->wq, 1); /* unbounded */
  return MQGATE_DEFER;
}

static int on_event(int event, void *data, void *instance) {
  deferred *self = (deferred *)instance;
  const mqgate_host_api *api = self->api;
  switch (event) {
    case MQGATE_EVT_AUTHENTICATE: {
      mqgate_evt_authenticate *e = (mqgate_evt_authenticate *)data;
      size_t i;
      int deny = 0;
      for (i = 0; e->username && i < self->deny_users.count; i++)
        if (strcmp(self->deny_users.items[i], e->username) == 0) deny = 1;
      for (i = 0; e->username && i < self->return_ok_users.count; i++)
        if (strcmp(self->return_ok_users.items[i], e->username) == 0) return MQGATE_OK;
      if (self->auth_method[0] && MQGATE_HAS_FIELD(e, mqgate_evt_authenticate, auth_step) &&
          e->auth_method != NULL) {
        char text[MAX_TEXT];
        size_t n = e->auth_data_len < 64 ? e->auth_data_len : 64;
        api->log(self->plugin, MQGATE_LOG_INFO,
                 "deferred %s: exchange client_id=%s method=%s step=%d reauthenticate=%d -> defer",
                 self->tag, e->client_id, e->auth_method, e->auth_step, e->reauthenticate);
        memcpy(text, "challenge:", 10);
        if (e->auth_data) memcpy(text + 10, e->auth_data, n);
        text[10 + n] = '\0';
        if (e->auth_step == 0) {
          next_auth_data = text;
          return later(self, MQGATE_CONTINUE, NULL, NULL, 0);
        }
        if (e->auth_data_len == 6 && memcmp(e->auth_data, "answer", 6) == 0) {
          next_auth_data = "welcome";
          return later(self, MQGATE_ALLOW, NULL, NULL, 0);
        }
        next_reason_code = 0x8A;
        next_reason_string = "wrong answer";
        return later(self, MQGATE_DENY, "wrong answer", NULL, 0);
      }
      api->log(self->plugin, MQGATE_LOG_INFO,
               "deferred %s: authenticate client_id=%s username=%s clean_session=%d level=%d -> defer",
               self->tag, e->client_id, e->username ? e->username : "(none)", e->clean_session,
               api->client_protocol_level(e->client));
      if (self->allow_at_once) return MQGATE_ALLOW;
      if (deny) {
        next_reason_code = (int)self->deny_reason_code;
        next_reason_string = self->deny_reason_string[0] ? self->deny_reason_string : NULL;
        return later(self, MQGATE_DENY, "unknown user", NULL, MQGATE_CONNACK_BAD_CREDENTIALS);
      }
      return later(self, MQGATE_ALLOW, NULL, e->username ? e->username : NULL, 0);
    }
    case MQGATE_EVT_AUTHORIZE: {
      mqgate_evt_authorize *e = (mqgate_evt_authorize *)data;
      api->log(self->plugin, MQGATE_LOG_INFO,
               "deferred %s: authorize client_id=%s action=%d topic=%s filter=%s retain=%d "
               "deferrable=%d live=%d check=%d",
               self->tag, api->client_id(e->client), e->action, e->topic,
               e->filter ? e->filter : "(none)", e->retain, e->deferrable, e->live,
               e->delivery_check);
      if (e->action == MQGATE_ACTION_RECEIVE) {
        if (e->live && self->stop_checks_topic[0] && strcmp(e->topic, self->stop_checks_topic) == 0)
          e->delivery_check = MQGATE_CHECK_NONE;
        return matches_any(self, &self->receive_deny, e->topic) ? MQGATE_DENY
                                                                : MQGATE_ABSTAIN;
      }
      if (e->action == MQGATE_ACTION_SUBSCRIBE) e->delivery_check = self->delivery_check;
      if (e->action == MQGATE_ACTION_PUBLISH) e->same_answer = self->same_answer;
      if (self->disconnect_topic[0] && strcmp(e->topic, self->disconnect_topic) == 0) {
        api->disconnect(self->plugin, e->client, "revoked");
        return MQGATE_ALLOW;
      }
      if (!e->deferrable || !matches_any(self, &self->defer_topics, e->topic))
        return MQGATE_ABSTAIN;
      if (matches_any(self, &self->deny_topics, e->topic))
        return later(self, MQGATE_DENY, "topic denied later", NULL, 0);
      return later(self, MQGATE_ALLOW, NULL, NULL, 0);
    }
    case MQGATE_EVT_CONNECTED: {
      mqgate_evt_connected *e = (mqgate_evt_connected *)data;
      api->log(self->plugin, MQGATE_LOG_INFO,
               "deferred %s: connected client_id=%s identity=%s clean_session=%d tls=%s cipher=%s",
               self->tag, api->client_id(e->client), api->client_identity(e->client),
               api->client_clean_session(e->client),
               api->client_tls_version(e->client) ? api->client_tls_version(e->client) : "(none)",
               api->client_tls_cipher(e->client) ? api->client_tls_cipher(e->client) : "(none)");
      return MQGATE_OK;
    }
    case MQGATE_EVT_DISCONNECTED: {
      mqgate_evt_disconnected *e = (mqgate_evt_disconnected *)data;
      api->log(self->plugin, MQGATE_LOG_INFO, "deferred %s: disconnected client_id=%s reason=%s",
               self->tag, api->client_id(e->client), e->reason);
      return MQGATE_OK;
    }
  }
  return MQGATE_OK;
}

MQGATE_PLUGIN_EXPORT int mqgate_plugin_init(mqgate_plugin *plugin, const mqgate_host_api *api,
                                            const mqgate_options *o, void **instance,
                                            char **errmsg) {
  deferred *self;
  const char *s = NULL;
  int64_t delay = 200;
  if (api->abi_version < 2) {
    *errmsg = api->mprintf("needs ABI 2");
    return MQGATE_ERR_UNSUPPORTED;
  }
  self = (deferred *)calloc(1, sizeof *self);
  if (self == NULL) return MQGATE_ERR_NOMEM;
  self->api = api;
  self->plugin = plugin;
  copy_text(self->tag, api->opt_string(o, "tag", &s) == MQGATE_OK ? s : "");
  api->opt_integer(o, "delay_ms", &delay);
  self->delay_ms = (long)delay;
  copy_text(self->disconnect_topic, api->opt_string(o, "disconnect_topic", &s) == MQGATE_OK ? s : "");
  api->opt_integer(o, "deny_reason_code", &self->deny_reason_code);
  copy_text(self->deny_reason_string,
            api->opt_string(o, "deny_reason_string", &s) == MQGATE_OK ? s : "");
  copy_text(self->auth_method, api->opt_string(o, "auth_method", &s) == MQGATE_OK ? s : "");
  copy_text(self->stop_checks_topic,
            api->opt_string(o, "stop_checks_topic", &s) == MQGATE_OK ? s : "");
  if (api->opt_string(o, "delivery_check", &s) == MQGATE_OK)
    self->delivery_check = strcmp(s, "every") == 0       ? MQGATE_CHECK_EVERY
                           : strcmp(s, "per_topic") == 0 ? MQGATE_CHECK_PER_TOPIC
                                                         : MQGATE_CHECK_NONE;
  api->opt_boolean(o, "allow_at_once", &self->allow_at_once);
  api->opt_boolean(o, "same_answer", &self->same_answer);
  if (!read_list(api, o, "deny_users", &self->deny_users) ||
      !read_list(api, o, "defer_topics", &self->defer_topics) ||
      !read_list(api, o, "deny_topics", &self->deny_topics) ||
      !read_list(api, o, "receive_deny", &self->receive_deny) ||
      !read_list(api, o, "return_ok_users", &self->return_ok_users)) {
    *errmsg = api->mprintf("lists must be arrays of strings");
    free(self);
    return MQGATE_ERR_CONFIG;
  }
  if (mqgate_wq_start(&self->queue, 1, 0, complete_job, self) != 0) {
    free(self);
    return MQGATE_ERR_PLUGIN;
  }
  api->register_event(plugin, MQGATE_EVT_AUTHENTICATE, on_event);
  api->register_event(plugin, MQGATE_EVT_AUTHORIZE, on_event);
  api->register_event(plugin, MQGATE_EVT_CONNECTED, on_event);
  api->register_event(plugin, MQGATE_EVT_DISCONNECTED, on_event);
  if (self->auth_method[0]) api->register_auth_method(plugin, self->auth_method);
  *instance = self;
  return MQGATE_OK;
}

/* Completes what is still queued (the host ignores it by now) and joins the thread. */
MQGATE_PLUGIN_EXPORT void mqgate_plugin_shutdown(void *instance) {
  deferred *self = (deferred *)instance;
  mqgate_wq_stop(&self->queue);
  self->api->log(self->plugin, MQGATE_LOG_INFO, "deferred %s: shutdown", self->tag);
  free(self);
}
