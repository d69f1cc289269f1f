/*
 * slow_lookup: an ABI 2 example plugin with deferred decisions (docs/writing-plugins.md).
 *
 * A client's username is looked up in a file, one username per line, on the plugin's
 * own thread: think of the file as a slow user database. The AUTHENTICATE callback
 * only queues the question and returns MQGATE_DEFER; the thread answers with
 * api->complete(). The thread and its queue come from <mqgate_work_queue.h>, which is
 * installed beside <mqgate_plugin.h>. A username in the file is ALLOWed with the identity "user:<name>";
 * one that is not is DENYed with CONNACK 4 (bad user name or password). A client
 * without a username is left to the other plugins (ABSTAIN, at once).
 *
 *   [plugins.slow_lookup]
 *   path = "/path/to/slow_lookup.so"
 *   users_file = "/etc/mqgate/users.txt"   # required
 *   delay_ms = 0                           # optional: pretend the lookup is slow
 *
 * Build (out of tree, against the installed header):
 *   cc -std=c99 -fPIC -shared -fvisibility=hidden -pthread \
 *      $(pkg-config --cflags mqgate-plugin) slow_lookup.c -o slow_lookup.so
 */
#define _POSIX_C_SOURCE 200809L
#include <mqgate_plugin.h>
#include <mqgate_work_queue.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

MQGATE_PLUGIN_DECLARE_VERSION(2)

/* One question for the thread. */
typedef struct request {
  mqgate_wq_job job;      /* first: the queue's part */
  mqgate_deferred *token; /* from api->defer(); completed exactly once */
  char *username;         /* our copy: the event's strings die with the callback */
} request;

typedef struct slow_lookup {
  const mqgate_host_api *api;
  mqgate_plugin *plugin;
  char *users_file;
  long delay_ms;
  mqgate_work_queue queue; /* one thread; questions wait in order */
} slow_lookup;

/* The slow part, on the plugin's thread: 1 if `name` is a line of the file. */
static int user_known(const slow_lookup *self, const char *name) {
  char line[512];
  int found = 0;
  FILE *f;
  if (self->delay_ms > 0) {
    struct timespec ts;
    ts.tv_sec = self->delay_ms / 1000;
    ts.tv_nsec = (self->delay_ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
  }
  f = fopen(self->users_file, "r");
  if (f == NULL) return 0;
  while (!found && fgets(line, sizeof line, f) != NULL) {
    line[strcspn(line, "\r\n")] = '\0';
    found = strcmp(line, name) == 0;
  }
  fclose(f);
  return found;
}

/* On the queue's thread, outside its lock (the lookup is slow), once per question;
 * `stopping` when the broker shuts down with the question still queued. */
static void answer(void *context, mqgate_wq_job *job, int stopping) {
  slow_lookup *self = (slow_lookup *)context;
  request *r = (request *)job;
  mqgate_completion c;
  char identity[600];
  memset(&c, 0, sizeof c);
  c.struct_size = sizeof c;
  if (!stopping && user_known(self, r->username)) {
    c.verdict = MQGATE_ALLOW;
    snprintf(identity, sizeof identity, "user:%s", r->username);
    c.identity = identity; /* the host copies completion strings */
  } else {
    c.verdict = MQGATE_DENY;
    c.reason = stopping ? "shutting down" : "unknown user";
    c.connack_code = MQGATE_CONNACK_BAD_CREDENTIALS;
  }
  /* Thread-safe; also fine when the client has gone or the decision timed out. */
  self->api->complete(r->token, &c);
  free(r->username);
  free(r);
}

static int on_authenticate(slow_lookup *self, mqgate_evt_authenticate *evt) {
  request *r;
  if (evt->username == NULL) return MQGATE_ABSTAIN;
  r = (request *)calloc(1, sizeof *r);
  if (r == NULL) return MQGATE_DENY;
  r->username = (char *)malloc(strlen(evt->username) + 1);
  if (r->username == NULL) {
    free(r);
    return MQGATE_DENY;
  }
  strcpy(r->username, evt->username);
  r->token = self->api->defer(self->plugin); /* only inside this callback */
  if (r->token == NULL) {
    free(r->username);
    free(r);
    return MQGATE_DENY;
  }
  /* The queue has no bound, so only a stopping queue refuses; answer then, at once:
   * every token must be completed. */
  if (mqgate_wq_push(&self->queue, &r->job) != 0) answer(self, &r->job, 1);
  return MQGATE_DEFER; /* the client waits; the broker does not */
}

static int on_event(int event, void *event_data, void *instance) {
  if (event == MQGATE_EVT_AUTHENTICATE)
    return on_authenticate((slow_lookup *)instance, (mqgate_evt_authenticate *)event_data);
  return MQGATE_OK;
}

MQGATE_PLUGIN_EXPORT int mqgate_plugin_init(mqgate_plugin *plugin, const mqgate_host_api *api,
                                            const mqgate_options *options, void **instance,
                                            char **errmsg) {
  slow_lookup *self;
  const char *file = NULL;
  int64_t delay = 0;
  if (api->opt_string(options, "users_file", &file) != MQGATE_OK || file[0] == '\0') {
    *errmsg = api->mprintf("%s: users_file: expected the path of a file of usernames",
                           api->opt_location(options, "users_file"));
    return MQGATE_ERR_CONFIG;
  }
  api->opt_integer(options, "delay_ms", &delay);
  self = (slow_lookup *)calloc(1, sizeof *self);
  if (self == NULL) return MQGATE_ERR_NOMEM;
  self->api = api;
  self->plugin = plugin;
  self->delay_ms = (long)delay;
  self->users_file = (char *)malloc(strlen(file) + 1);
  if (self->users_file == NULL) {
    free(self);
    return MQGATE_ERR_NOMEM;
  }
  strcpy(self->users_file, file); /* option strings live only during init */
  if (mqgate_wq_start(&self->queue, 1, 0, answer, self) != 0) {
    free(self->users_file);
    free(self);
    return MQGATE_ERR_PLUGIN;
  }
  api->register_event(plugin, MQGATE_EVT_AUTHENTICATE, on_event);
  api->log(plugin, MQGATE_LOG_INFO, "usernames are looked up in %s, off the event loop", file);
  *instance = self;
  return MQGATE_OK;
}

/* Answers what is still queued (DENY: the broker ignores it by now) and joins the
 * thread: no complete() may run after shutdown returns. */
MQGATE_PLUGIN_EXPORT void mqgate_plugin_shutdown(void *instance) {
  slow_lookup *self = (slow_lookup *)instance;
  mqgate_wq_stop(&self->queue);
  free(self->users_file);
  free(self);
}
