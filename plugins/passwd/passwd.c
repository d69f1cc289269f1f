/*
 * passwd: usernames and passwords from a Mosquitto password file (docs/passwd.md).
 *
 *   [plugins.passwd]
 *   password_file = "passwd"   # required; relative to the configuration file
 *   threads = 2                # optional: verification threads, 1..64
 *   max_pending = 1024         # optional: verifications queued at most, 1..1000000
 *
 * AUTHENTICATE: a client without a username: ABSTAIN (the listener's other plugins
 * decide). With one: the decision is deferred (api->defer) and the PBKDF2/SHA-512
 * verification runs on the plugin's own threads, never on the event loop; then ALLOW
 * with identity = the username (the host makes it "<instance>:<username>"), or DENY
 * with CONNACK 4 (bad user name or password). An unknown user, a wrong password and a
 * missing password cost the same work and get the same answer (pwfile_check). When
 * max_pending verifications are already queued the client is DENYed at once with
 * CONNACK 5 and the reason "busy": the loop never waits for a thread.
 *
 * RELOAD (SIGHUP): the file is read again; a bad file is refused with "<file>:<line>:
 * <what>" and the old table kept. The table is reference-counted: a verification
 * running meanwhile finishes with the table it started with. `threads` and
 * `max_pending` take effect at the next start.
 *
 * Shutdown stops the threads after they have answered everything queued (DENY,
 * "shutting down", without hashing): every token is completed.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/mqgate_work_queue.h"
#include "../common/plugin_options.h"
#include "mqgate_plugin.h"
#include "pwfile.h"

MQGATE_PLUGIN_DECLARE_VERSION(2)

#define DEFAULT_THREADS 2
#define MAX_THREADS MQGATE_WQ_MAX_THREADS
#define DEFAULT_MAX_PENDING 1024
#define MAX_MAX_PENDING 1000000

/* A loaded password file, shared by the loop (reload) and the threads. */
typedef struct table {
  pwfile *file;
  unsigned refs; /* under passwd_instance.table_mu */
} table;

/* One verification for a thread. */
typedef struct request {
  mqgate_wq_job job;      /* first: the queue's */
  mqgate_deferred *token; /* completed exactly once */
  char *username;         /* copies: the event's strings die with the callback */
  char *password;         /* NULL if the client sent none */
  size_t password_len;
} request;

typedef struct passwd_options {
  char *path; /* resolved */
  int64_t threads;
  int64_t max_pending;
} passwd_options;

typedef struct passwd_instance {
  const mqgate_host_api *api;
  mqgate_plugin *plugin;
  char *path;
  pthread_mutex_t table_mu;
  table *users; /* the current table; under table_mu */
  mqgate_work_queue queue;
  size_t nthreads, max_pending;
} passwd_instance;

static const char *const kOptions[] = {"password_file", "threads", "max_pending", NULL};

/* ------------------------------------------------------------------------------ */
/* Options                                                                         */
/* ------------------------------------------------------------------------------ */

static int read_integer(const mqgate_host_api *api, const mqgate_options *options,
                        const char *key, int64_t def, int64_t max, int64_t *out,
                        char **errmsg) {
  int rc = api->opt_integer(options, key, out);
  if (rc == MQGATE_ERR_NOT_FOUND) {
    *out = def;
    return MQGATE_OK;
  }
  if (rc != MQGATE_OK || *out < 1 || *out > max) {
    *errmsg = api->mprintf("%s: %s: expected an integer from 1 to %lld",
                           api->opt_location(options, key), key, (long long)max);
    return MQGATE_ERR_CONFIG;
  }
  return MQGATE_OK;
}

/* The option's path, resolved by the broker against the configuration file's
 * directory (api->opt_path), as a copy the plugin owns; NULL if out of memory. */
static char *resolved_path(const mqgate_host_api *api, const mqgate_options *options,
                           const char *key) {
  const char *path = NULL;
  if (api->opt_path(options, key, &path) != MQGATE_OK) return NULL;
  return strdup(path);
}

static int read_options(const mqgate_host_api *api, const mqgate_options *options,
                        passwd_options *out, char **errmsg) {
  const char *file = NULL;
  int rc;
  memset(out, 0, sizeof *out);
  rc = plugin_refuse_unknown_options(api, options, kOptions, errmsg);
  if (rc != MQGATE_OK) return rc;
  rc = api->opt_string(options, "password_file", &file);
  if (rc != MQGATE_OK || file[0] == '\0') {
    *errmsg = api->mprintf("%s: password_file: %s (the path of a Mosquitto password file)",
                           api->opt_location(options, "password_file"),
                           rc == MQGATE_ERR_NOT_FOUND ? "missing" : "expected a non-empty string");
    return MQGATE_ERR_CONFIG;
  }
  rc = read_integer(api, options, "threads", DEFAULT_THREADS, MAX_THREADS, &out->threads, errmsg);
  if (rc != MQGATE_OK) return rc;
  rc = read_integer(api, options, "max_pending", DEFAULT_MAX_PENDING, MAX_MAX_PENDING,
                    &out->max_pending, errmsg);
  if (rc != MQGATE_OK) return rc;
  out->path = resolved_path(api, options, "password_file");
  return out->path ? MQGATE_OK : MQGATE_ERR_NOMEM;
}

/* Loads path into a new table (refs 1); NULL with *errmsg set. */
static table *load_table(const mqgate_host_api *api, const char *path, char **errmsg) {
  char err[PW_ERR_LEN];
  table *t;
  pwfile *f = pwfile_load(path, err, sizeof err);
  if (f == NULL) {
    *errmsg = api->mprintf("password_file: %s", err);
    return NULL;
  }
  t = (table *)calloc(1, sizeof *t);
  if (t == NULL) {
    pwfile_free(f);
    *errmsg = api->strdup("out of memory");
    return NULL;
  }
  t->file = f;
  t->refs = 1;
  return t;
}

/* Drops a reference; call with table_mu held. Returns the table to free outside the lock
 * (or NULL). */
static table *table_unref_locked(table *t) {
  if (t == NULL || --t->refs > 0) return NULL;
  return t;
}

static void table_free(table *t) {
  if (t == NULL) return;
  pwfile_free(t->file);
  free(t);
}

/* ------------------------------------------------------------------------------ */
/* The verification threads                                                        */
/* ------------------------------------------------------------------------------ */

static void wipe(char *p, size_t n) {
  volatile char *v = (volatile char *)p;
  while (n--) *v++ = 0;
}

static void request_free(request *r) {
  free(r->username);
  if (r->password) {
    wipe(r->password, r->password_len);
    free(r->password);
  }
  free(r);
}

/* Runs on a queue thread (mqgate_work_queue.h), once per request. */
static void answer(void *context, mqgate_wq_job *job, int stopping) {
  passwd_instance *self = (passwd_instance *)context;
  request *r = (request *)job;
  mqgate_completion c;
  int ok = 0;
  memset(&c, 0, sizeof c);
  c.struct_size = sizeof c;
  if (!stopping) {
    table *t, *done;
    pthread_mutex_lock(&self->table_mu);
    t = self->users;
    t->refs++;
    pthread_mutex_unlock(&self->table_mu);
    /* Slow: PBKDF2 (or the dummy work for an unknown user), without the lock. */
    ok = pwfile_check(t->file, r->username, r->password, r->password_len);
    pthread_mutex_lock(&self->table_mu);
    done = table_unref_locked(t);
    pthread_mutex_unlock(&self->table_mu);
    table_free(done);
  }
  if (ok) {
    c.verdict = MQGATE_ALLOW;
    c.identity = r->username; /* the host copies it and prefixes the instance name */
  } else {
    c.verdict = MQGATE_DENY;
    c.reason = stopping ? "shutting down" : "bad username or password";
    c.connack_code = MQGATE_CONNACK_BAD_CREDENTIALS;
  }
  self->api->complete(r->token, &c);
  request_free(r);
}

/* ------------------------------------------------------------------------------ */
/* Events (on the loop)                                                            */
/* ------------------------------------------------------------------------------ */

static int on_authenticate(passwd_instance *self, mqgate_evt_authenticate *evt) {
  const mqgate_host_api *api = self->api;
  request *r;
  if (evt->username == NULL) return MQGATE_ABSTAIN;
  if (mqgate_wq_full(&self->queue)) {
    evt->reason = api->mprintf("busy: %lu password verifications already queued "
                               "(max_pending)", (unsigned long)self->max_pending);
    return MQGATE_DENY; /* CONNACK 5: not a verdict on the credentials */
  }
  r = (request *)calloc(1, sizeof *r);
  if (r == NULL) goto nomem;
  r->username = strdup(evt->username);
  if (r->username == NULL) goto nomem;
  if (evt->password != NULL) {
    r->password = (char *)malloc(evt->password_len ? evt->password_len : 1);
    if (r->password == NULL) goto nomem;
    if (evt->password_len) memcpy(r->password, evt->password, evt->password_len);
    r->password_len = evt->password_len;
  }
  r->token = api->defer(self->plugin);
  if (r->token == NULL) {
    request_free(r);
    evt->reason = api->strdup("the broker refused to defer the decision");
    return MQGATE_DENY;
  }
  /* Only the loop queues, so the queue that was not full just above is not now; were
   * it stopping, the request is answered here (DENY): every token is completed. */
  if (mqgate_wq_push(&self->queue, &r->job) != 0) answer(self, &r->job, 1);
  return MQGATE_DEFER;
nomem:
  if (r) request_free(r);
  evt->reason = api->strdup("out of memory");
  return MQGATE_DENY;
}

static int on_reload(passwd_instance *self, mqgate_evt_reload *evt) {
  const mqgate_host_api *api = self->api;
  passwd_options o;
  table *t, *old;
  int rc = read_options(api, evt->options, &o, &evt->errmsg);
  if (rc != MQGATE_OK) return rc;
  t = load_table(api, o.path, &evt->errmsg);
  if (t == NULL) {
    free(o.path);
    return MQGATE_ERR_CONFIG; /* the old table stays */
  }
  if ((size_t)o.threads != self->nthreads || (size_t)o.max_pending != self->max_pending)
    api->log(self->plugin, MQGATE_LOG_WARNING,
             "threads and max_pending take effect at the next start");
  pthread_mutex_lock(&self->table_mu);
  old = table_unref_locked(self->users);
  self->users = t;
  pthread_mutex_unlock(&self->table_mu);
  table_free(old);
  free(self->path);
  self->path = o.path;
  api->log(self->plugin, MQGATE_LOG_INFO, "reloaded %s: %lu users", self->path,
           (unsigned long)pwfile_count(t->file));
  return MQGATE_OK;
}

static int on_event(int event, void *event_data, void *instance) {
  passwd_instance *self = (passwd_instance *)instance;
  if (event == MQGATE_EVT_AUTHENTICATE)
    return on_authenticate(self, (mqgate_evt_authenticate *)event_data);
  if (event == MQGATE_EVT_RELOAD) return on_reload(self, (mqgate_evt_reload *)event_data);
  return MQGATE_OK;
}

static void instance_free(passwd_instance *self) {
  pthread_mutex_destroy(&self->table_mu);
  table_free(self->users);
  free(self->path);
  free(self);
}

MQGATE_PLUGIN_EXPORT int mqgate_plugin_init(mqgate_plugin *plugin, const mqgate_host_api *api,
                                            const mqgate_options *options, void **instance,
                                            char **errmsg) {
  passwd_instance *self;
  passwd_options o;
  table *t;
  int err;
  int rc = read_options(api, options, &o, errmsg);
  if (rc != MQGATE_OK) return rc;
  t = load_table(api, o.path, errmsg);
  if (t == NULL) {
    free(o.path);
    return MQGATE_ERR_CONFIG;
  }
  self = (passwd_instance *)calloc(1, sizeof *self);
  if (self == NULL) {
    table_free(t);
    free(o.path);
    return MQGATE_ERR_NOMEM;
  }
  self->api = api;
  self->plugin = plugin;
  self->path = o.path;
  self->users = t;
  self->max_pending = (size_t)o.max_pending;
  self->nthreads = (size_t)o.threads;
  pthread_mutex_init(&self->table_mu, NULL);
  err = mqgate_wq_start(&self->queue, self->nthreads, self->max_pending, answer, self);
  if (err != 0) {
    *errmsg = api->mprintf("cannot start a verification thread: %s", strerror(err));
    instance_free(self);
    return MQGATE_ERR_PLUGIN;
  }
  if (api->register_event(plugin, MQGATE_EVT_AUTHENTICATE, on_event) != MQGATE_OK ||
      api->register_event(plugin, MQGATE_EVT_RELOAD, on_event) != MQGATE_OK) {
    mqgate_wq_stop(&self->queue);
    instance_free(self);
    *errmsg = api->strdup("cannot register the plugin's events");
    return MQGATE_ERR_PLUGIN;
  }
  api->log(plugin, MQGATE_LOG_INFO, "%lu users from %s; %lu verification threads",
           (unsigned long)pwfile_count(t->file), self->path, (unsigned long)self->nthreads);
  *instance = self;
  return MQGATE_OK;
}

MQGATE_PLUGIN_EXPORT void mqgate_plugin_shutdown(void *instance) {
  passwd_instance *self = (passwd_instance *)instance;
  mqgate_wq_stop(&self->queue); /* the threads answer what is queued first */
  instance_free(self);
}
