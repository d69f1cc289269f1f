/*
 * passwd: usernames and passwords from a Mosquitto password file (docs/passwd.md).
 *
 *   [plugins.passwd]
 *   password_file = "passwd"   # required; relative to the configuration file
 *   threads = 2                # optional: verification threads, 1..64
 *   max_pending = 1024         # optional: logins pending at most, 1..1000000
 *   max_pending_per_listener = 512  # optional: of them, from one listener (max_pending/2)
 *   max_pending_per_address = 128   # optional: from one host, IPv6 by /64 (max_pending/8)
 *
 * AUTHENTICATE: a client without a username: ABSTAIN (the listener's other plugins
 * decide). With one: the decision is deferred (api->defer) and the PBKDF2/SHA-512
 * verification runs on the plugin's own threads, never on the event loop; then ALLOW
 * with identity = the username (the host makes it "<instance>:<username>"), or DENY
 * with CONNACK 4 (bad user name or password). An unknown user, a wrong password and a
 * missing password get the same answer. A login is pending from the CONNECT until it
 * is answered; beyond max_pending (or the per-listener or per-address bound) the client
 * is DENYed at once with CONNACK 5 and the reason "busy": the loop never waits.
 *
 * Timing. An unknown user costs a typical entry's verification (pwfile_dummy), not the
 * file's costliest: one expensive entry must not make every made-up name expensive.
 * So that the time of the answer does not tell whether a user exists, every answer is
 * released no earlier than the table's "answer floor" after its verification started:
 * the costliest entry's verification time, measured once per loaded file on the loader
 * thread. The waiting is by time on the release thread (a list sorted by release time
 * and a timed condition wait), not by burning CPU. A login whose client is gone (ABI
 * 2.4's api->deferred_is_live) is completed at once, unhashed and not waited for.
 *
 * RELOAD (SIGHUP): the options are checked on the loop; the file is parsed and its
 * floor measured on the loader thread, and the new table swapped in when done; a bad
 * file is refused with "<file>:<line>: <what>" logged and the old table kept. The
 * table is reference-counted: a verification running meanwhile finishes with the table
 * it started with. `threads` and `max_pending` take effect at the next start, the
 * per-listener and per-address bounds at once.
 *
 * Shutdown stops the threads after they have answered everything pending at once
 * (queued logins DENY, "shutting down", without hashing; verified ones without waiting
 * for the floor): every token is completed.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/mqgate_work_queue.h"
#include "../common/peer_host.h"
#include "../common/plugin_options.h"
#include "mqgate_plugin.h"
#include "pwfile.h"

MQGATE_PLUGIN_DECLARE_VERSION(2)

#define DEFAULT_THREADS 2
#define MAX_THREADS MQGATE_WQ_MAX_THREADS
#define DEFAULT_MAX_PENDING 1024
#define MAX_MAX_PENDING 1000000
/* The floor is the measured cost with this margin: a verification that runs a little
 * slower than when it was measured must still end before its answer is released. */
#define FLOOR_MARGIN_PERCENT 125
#define FLOOR_MARGIN_NS 1000000LL
/* How often the release thread looks for clients that went away while waiting. */
#define SWEEP_NS 100000000LL
/* Costs this far apart earn a warning at load: every login waits for the costliest. */
#define SPREAD_WARN_FACTOR 10
#define SPREAD_WARN_NS 20000000LL

/* A loaded password file, shared by the loop, the loader and the threads. */
typedef struct table {
  pwfile* file;
  unsigned refs;    /* under passwd_instance.table_mu */
  int64_t floor_ns; /* the answer floor; -1 until measured; under table_mu */
} table;

/* Pending logins of one listener or one host (peer_host.h); freed when none is left. */
typedef struct counter {
  struct counter* next;
  size_t n;
  char key[]; /* NUL-terminated */
} counter;

typedef struct counter_map {
  counter** buckets;
  size_t nbuckets; /* a power of two */
  uint64_t seed;   /* the addresses are the peers': keep their buckets unpredictable */
} counter_map;

/* One login, from the CONNECT until its token is completed. */
typedef struct request {
  mqgate_wq_job job;      /* first: the queue's */
  mqgate_deferred* token; /* completed exactly once */
  char* username;         /* copies: the event's strings die with the callback */
  char* password;         /* NULL if the client sent none */
  size_t password_len;
  counter *listener, *address; /* what it counts in (under count_mu) */
  int ok;                      /* the verdict, once verified */
  int64_t release_ns;          /* CLOCK_MONOTONIC: not answered before */
  struct request* next;        /* the release list */
} request;

typedef struct passwd_options {
  char* path; /* resolved */
  int64_t threads;
  int64_t max_pending;
  int64_t per_listener;
  int64_t per_address;
} passwd_options;

typedef struct passwd_instance {
  const mqgate_host_api* api;
  mqgate_plugin* plugin;
  pthread_mutex_t table_mu;
  pthread_cond_t measured_cv; /* a table's floor was measured, or closing */
  table* users;               /* the current table; under table_mu */
  int closing;                /* under table_mu */
  mqgate_work_queue queue;
  size_t nthreads, max_pending;

  /* Pending logins, bounded in total, per listener and per address. */
  pthread_mutex_t count_mu;
  size_t pending;                   /* under count_mu */
  size_t per_listener, per_address; /* the bounds; loop only */
  counter_map listeners, addresses; /* under count_mu */

  /* Verified logins waiting for their release time, earliest first. */
  pthread_mutex_t rel_mu;
  pthread_cond_t rel_cv;        /* CLOCK_MONOTONIC */
  request *rel_head, *rel_tail; /* under rel_mu */
  int rel_stopping;             /* under rel_mu */
  pthread_t releaser;

  /* Measures the first table, then parses and measures reloaded files. */
  pthread_mutex_t load_mu;
  pthread_cond_t load_cv;
  char* first_path;  /* the first table's file, for the loader's messages */
  char* load_path;   /* a reload to do; under load_mu */
  int load_stopping; /* under load_mu */
  pthread_t loader;
} passwd_instance;

static const char* const kOptions[] = {
    "password_file",           "threads", "max_pending", "max_pending_per_listener",
    "max_pending_per_address", NULL};

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static struct timespec to_timespec(int64_t ns) {
  struct timespec ts;
  ts.tv_sec = (time_t)(ns / 1000000000LL);
  ts.tv_nsec = (long)(ns % 1000000000LL);
  return ts;
}

/* ------------------------------------------------------------------------------ */
/* Options                                                                         */
/* ------------------------------------------------------------------------------ */

static int read_integer(const mqgate_host_api* api, const mqgate_options* options, const char* key,
                        int64_t def, int64_t max, int64_t* out, char** errmsg) {
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
static char* resolved_path(const mqgate_host_api* api, const mqgate_options* options,
                           const char* key) {
  const char* path = NULL;
  if (api->opt_path(options, key, &path) != MQGATE_OK) return NULL;
  return strdup(path);
}

static int read_options(const mqgate_host_api* api, const mqgate_options* options,
                        passwd_options* out, char** errmsg) {
  const char* file = NULL;
  int64_t half, eighth;
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
  /* By default no listener takes more than half the queue, no address an eighth. */
  half = (out->max_pending + 1) / 2;
  eighth = out->max_pending / 8 > 0 ? out->max_pending / 8 : 1;
  rc = read_integer(api, options, "max_pending_per_listener", half, MAX_MAX_PENDING,
                    &out->per_listener, errmsg);
  if (rc != MQGATE_OK) return rc;
  rc = read_integer(api, options, "max_pending_per_address", eighth, MAX_MAX_PENDING,
                    &out->per_address, errmsg);
  if (rc != MQGATE_OK) return rc;
  out->path = resolved_path(api, options, "password_file");
  return out->path ? MQGATE_OK : MQGATE_ERR_NOMEM;
}

/* ------------------------------------------------------------------------------ */
/* Tables                                                                          */
/* ------------------------------------------------------------------------------ */

/* Parses path into a new table (refs 1, not measured); NULL with err set. */
static table* load_table(const char* path, char* err, size_t errlen) {
  table* t;
  pwfile* f = pwfile_load(path, err, errlen);
  if (f == NULL) return NULL;
  t = (table*)calloc(1, sizeof *t);
  if (t == NULL) {
    pwfile_free(f);
    snprintf(err, errlen, "%s: out of memory", path);
    return NULL;
  }
  t->file = f;
  t->refs = 1;
  t->floor_ns = -1;
  return t;
}

/* Drops a reference; call with table_mu held. Returns the table to free outside the lock
 * (or NULL). */
static table* table_unref_locked(table* t) {
  if (t == NULL || --t->refs > 0) return NULL;
  return t;
}

static void table_free(table* t) {
  if (t == NULL) return;
  pwfile_free(t->file);
  free(t);
}

static void table_unref(passwd_instance* self, table* t) {
  table* done;
  pthread_mutex_lock(&self->table_mu);
  done = table_unref_locked(t);
  pthread_mutex_unlock(&self->table_mu);
  table_free(done);
}

static const char* hash_name(const pw_hash* h, char* buf, size_t len) {
  if (h->type == PW_SHA512) return "$6$";
  snprintf(buf, len, "$7$ with %u iterations", h->iterations);
  return buf;
}

/* The answer floor of f: its costliest entry's verification, timed here (a plugin
 * thread: a 1,000,000-iteration entry takes a second), with a margin. Warns when the
 * costliest entry costs far more than the typical one, since every login waits for it. */
static int64_t measure_floor(passwd_instance* self, const pwfile* f, const char* path) {
  static const char probe[] = "\x01mqgate-floor\x01";
  size_t i = pwfile_costliest(f);
  const pw_hash* costliest = i == (size_t)-1 ? pwfile_dummy(f) : pwfile_hash(f, i);
  const pw_hash* typical = pwfile_dummy(f);
  int64_t t0 = now_ns(), took, floor_ns;
  (void)pw_hash_verify(costliest, probe, sizeof probe - 1);
  took = now_ns() - t0;
  floor_ns = took * FLOOR_MARGIN_PERCENT / 100 + FLOOR_MARGIN_NS;
  if (i != (size_t)-1 && floor_ns > SPREAD_WARN_NS &&
      (typical->type == PW_SHA512 ? 1UL : (unsigned long)typical->iterations) * SPREAD_WARN_FACTOR <
          (costliest->type == PW_SHA512 ? 1UL : (unsigned long)costliest->iterations)) {
    char a[48], b[48];
    self->api->log(self->plugin, MQGATE_LOG_WARNING,
                   "%s:%lu: this entry (%s) costs %.0f ms to verify, far more than a typical "
                   "one (%s): every login is answered no earlier than %.0f ms, so that the "
                   "time does not tell which users exist; set that password again with the "
                   "common cost (mqgate_passwd -I) to make logins fast",
                   path, (unsigned long)pwfile_line(f, i), hash_name(costliest, a, sizeof a),
                   (double)took / 1e6, hash_name(typical, b, sizeof b), (double)floor_ns / 1e6);
  }
  return floor_ns;
}

/* ------------------------------------------------------------------------------ */
/* Pending logins per listener and per address (under count_mu)                     */
/* ------------------------------------------------------------------------------ */

static size_t counter_slot(const counter_map* m, const char* key) {
  uint64_t h = 1469598103934665603ULL ^ m->seed; /* FNV-1a, seeded */
  for (; *key; key++)
    h = (h ^ (unsigned char)*key) * 1099511628211ULL;
  h ^= h >> 29;
  return (size_t)(h & (m->nbuckets - 1));
}

static int counter_map_init(counter_map* m, size_t want, uint64_t seed) {
  size_t n = 16;
  while (n < want && n < 65536)
    n *= 2;
  m->buckets = (counter**)calloc(n, sizeof *m->buckets);
  m->nbuckets = n;
  m->seed = seed;
  return m->buckets ? 0 : -1;
}

static void counter_map_free(counter_map* m) {
  size_t i;
  if (m->buckets == NULL) return;
  for (i = 0; i < m->nbuckets; i++) {
    counter* c = m->buckets[i];
    while (c) {
      counter* next = c->next;
      free(c);
      c = next;
    }
  }
  free(m->buckets);
  m->buckets = NULL;
}

/* key's counter, created at 0 if absent; NULL if out of memory. */
static counter* counter_get(counter_map* m, const char* key) {
  size_t slot = counter_slot(m, key), len = strlen(key);
  counter* c;
  for (c = m->buckets[slot]; c; c = c->next)
    if (strcmp(c->key, key) == 0) return c;
  c = (counter*)malloc(sizeof *c + len + 1);
  if (c == NULL) return NULL;
  memcpy(c->key, key, len + 1);
  c->n = 0;
  c->next = m->buckets[slot];
  m->buckets[slot] = c;
  return c;
}

/* Frees c if nothing counts in it. */
static void counter_drop_if_unused(counter_map* m, counter* c) {
  counter** p;
  if (c == NULL || c->n > 0) return;
  for (p = &m->buckets[counter_slot(m, c->key)]; *p; p = &(*p)->next) {
    if (*p == c) {
      *p = c->next;
      free(c);
      return;
    }
  }
}

/* ------------------------------------------------------------------------------ */
/* Answering                                                                       */
/* ------------------------------------------------------------------------------ */

static void wipe(char* p, size_t n) {
  volatile char* v = (volatile char*)p;
  while (n--)
    *v++ = 0;
}

static void request_free(request* r) {
  free(r->username);
  if (r->password) {
    wipe(r->password, r->password_len);
    free(r->password);
  }
  free(r);
}

static int token_live(passwd_instance* self, const request* r) {
  return !MQGATE_API_HAS(self->api, deferred_is_live) || self->api->deferred_is_live(r->token);
}

/* Completes r's token (ALLOW if r->ok, else DENY for `why`), stops counting it, frees
 * it. Any thread. */
static void finish(passwd_instance* self, request* r, const char* why) {
  mqgate_completion c;
  memset(&c, 0, sizeof c);
  c.struct_size = sizeof c;
  if (r->ok && why == NULL) {
    c.verdict = MQGATE_ALLOW;
    c.identity = r->username; /* the host copies it and prefixes the instance name */
  } else {
    c.verdict = MQGATE_DENY;
    c.reason = why ? why : "bad username or password";
    c.connack_code = MQGATE_CONNACK_BAD_CREDENTIALS;
  }
  self->api->complete(r->token, &c);
  pthread_mutex_lock(&self->count_mu);
  self->pending--;
  if (r->listener) {
    r->listener->n--;
    counter_drop_if_unused(&self->listeners, r->listener);
  }
  if (r->address) {
    r->address->n--;
    counter_drop_if_unused(&self->addresses, r->address);
  }
  pthread_mutex_unlock(&self->count_mu);
  request_free(r);
}

/* Queues a verified login on the release list, sorted by release time. Threads finish
 * in nearly that order, so the search from the tail is short. */
static void release_later(passwd_instance* self, request* r) {
  request** p;
  pthread_mutex_lock(&self->rel_mu);
  if (self->rel_stopping) {
    pthread_mutex_unlock(&self->rel_mu);
    finish(self, r, NULL);
    return;
  }
  r->next = NULL;
  if (self->rel_tail == NULL || self->rel_tail->release_ns <= r->release_ns) {
    if (self->rel_tail)
      self->rel_tail->next = r;
    else
      self->rel_head = r;
    self->rel_tail = r;
  } else {
    for (p = &self->rel_head; (*p)->release_ns <= r->release_ns; p = &(*p)->next) {
    }
    r->next = *p;
    *p = r;
  }
  if (self->rel_head == r) pthread_cond_signal(&self->rel_cv);
  pthread_mutex_unlock(&self->rel_mu);
}

/* The release thread: answers each login at its release time; answers at once those
 * whose client went away (looked for every SWEEP_NS), and everything when stopping. */
static void* releaser_main(void* arg) {
  passwd_instance* self = (passwd_instance*)arg;
  int64_t next_sweep = now_ns() + SWEEP_NS;
  pthread_mutex_lock(&self->rel_mu);
  for (;;) {
    request *due = NULL, *gone = NULL, **p;
    int64_t now = now_ns(), wake;
    if (self->rel_head == NULL) {
      if (self->rel_stopping) break;
      pthread_cond_wait(&self->rel_cv, &self->rel_mu);
      continue;
    }
    if (now >= next_sweep) {
      for (p = &self->rel_head; *p;) {
        request* r = *p;
        if (token_live(self, r)) {
          p = &r->next;
          continue;
        }
        *p = r->next;
        r->next = gone;
        gone = r;
      }
      self->rel_tail = NULL;
      for (p = &self->rel_head; *p; p = &(*p)->next)
        self->rel_tail = *p;
      next_sweep = now + SWEEP_NS;
    }
    while (self->rel_head && (self->rel_stopping || self->rel_head->release_ns <= now)) {
      request* r = self->rel_head;
      self->rel_head = r->next;
      if (self->rel_head == NULL) self->rel_tail = NULL;
      r->next = due;
      due = r;
    }
    if (due || gone) {
      pthread_mutex_unlock(&self->rel_mu);
      while (gone) {
        request* r = gone;
        gone = r->next;
        finish(self, r, "client gone");
      }
      while (due) {
        request* r = due;
        due = r->next;
        finish(self, r, NULL);
      }
      pthread_mutex_lock(&self->rel_mu);
      continue;
    }
    wake = self->rel_head->release_ns < next_sweep ? self->rel_head->release_ns : next_sweep;
    {
      struct timespec ts = to_timespec(wake);
      pthread_cond_timedwait(&self->rel_cv, &self->rel_mu, &ts);
    }
  }
  pthread_mutex_unlock(&self->rel_mu);
  return NULL;
}

/* Runs on a queue thread (mqgate_work_queue.h), once per request. */
static void answer(void* context, mqgate_wq_job* job, int stopping) {
  passwd_instance* self = (passwd_instance*)context;
  request* r = (request*)job;
  table* t;
  int64_t start;
  if (stopping) {
    finish(self, r, "shutting down");
    return;
  }
  /* Nobody waits for this answer: no hash, no floor. */
  if (!token_live(self, r)) {
    finish(self, r, "client gone");
    return;
  }
  pthread_mutex_lock(&self->table_mu);
  /* Only the first table can be unmeasured (a reload swaps in measured ones). */
  while (self->users->floor_ns < 0 && !self->closing)
    pthread_cond_wait(&self->measured_cv, &self->table_mu);
  if (self->closing) {
    pthread_mutex_unlock(&self->table_mu);
    finish(self, r, "shutting down");
    return;
  }
  t = self->users;
  t->refs++;
  pthread_mutex_unlock(&self->table_mu);
  start = now_ns();
  /* Slow: PBKDF2 (or the dummy work for an unknown user), without the lock. */
  r->ok = pwfile_check(t->file, r->username, r->password, r->password_len);
  r->release_ns = start + t->floor_ns;
  table_unref(self, t);
  if (r->password) { /* not needed any more */
    wipe(r->password, r->password_len);
    free(r->password);
    r->password = NULL;
  }
  if (now_ns() >= r->release_ns)
    finish(self, r, NULL);
  else
    release_later(self, r);
}

/* ------------------------------------------------------------------------------ */
/* The loader thread                                                               */
/* ------------------------------------------------------------------------------ */

static void* loader_main(void* arg) {
  passwd_instance* self = (passwd_instance*)arg;
  table* first;
  char* first_path;
  int64_t floor_ns;
  /* The first table, parsed by init: logins wait for its floor (answer()). */
  first_path = self->first_path; /* only this thread reads it after init */
  self->first_path = NULL;
  pthread_mutex_lock(&self->table_mu);
  first = self->users;
  first->refs++;
  pthread_mutex_unlock(&self->table_mu);
  floor_ns = measure_floor(self, first->file, first_path);
  self->api->log(self->plugin, MQGATE_LOG_INFO, "%s: answers no earlier than %.1f ms", first_path,
                 (double)floor_ns / 1e6);
  free(first_path);
  pthread_mutex_lock(&self->table_mu);
  first->floor_ns = floor_ns;
  pthread_cond_broadcast(&self->measured_cv);
  pthread_mutex_unlock(&self->table_mu);
  table_unref(self, first);

  pthread_mutex_lock(&self->load_mu);
  for (;;) {
    char err[PW_ERR_LEN];
    char* path;
    table *t, *old;
    if (self->load_stopping) break;
    if (self->load_path == NULL) {
      pthread_cond_wait(&self->load_cv, &self->load_mu);
      continue;
    }
    path = self->load_path; /* the newest SIGHUP's: older ones were replaced */
    self->load_path = NULL;
    pthread_mutex_unlock(&self->load_mu);
    t = load_table(path, err, sizeof err);
    if (t == NULL) {
      self->api->log(self->plugin, MQGATE_LOG_ERROR,
                     "reload: password_file: %s; keeping the previous users", err);
    } else {
      t->floor_ns = measure_floor(self, t->file, path);
      pthread_mutex_lock(&self->table_mu);
      old = table_unref_locked(self->users);
      self->users = t;
      pthread_mutex_unlock(&self->table_mu);
      table_free(old);
      self->api->log(self->plugin, MQGATE_LOG_INFO,
                     "reloaded %s: %lu users; answers no earlier than %.1f ms", path,
                     (unsigned long)pwfile_count(t->file), (double)t->floor_ns / 1e6);
    }
    free(path);
    pthread_mutex_lock(&self->load_mu);
  }
  pthread_mutex_unlock(&self->load_mu);
  return NULL;
}

/* ------------------------------------------------------------------------------ */
/* Events (on the loop)                                                            */
/* ------------------------------------------------------------------------------ */

/* Counts a new login in, or says why not ("busy: ..."; NULL if counted). */
static char* count_in(passwd_instance* self, mqgate_evt_authenticate* evt, request* r) {
  const mqgate_host_api* api = self->api;
  char addr[PEER_HOST_KEY_LEN];
  const char* listener = evt->listener ? evt->listener : "?";
  counter *l, *a;
  char* why = NULL;
  peer_host_key(evt->peer_address, addr, sizeof addr);
  pthread_mutex_lock(&self->count_mu);
  if (self->pending >= self->max_pending) {
    why = api->mprintf("busy: %lu password verifications already queued (max_pending)",
                       (unsigned long)self->pending);
    goto out;
  }
  l = counter_get(&self->listeners, listener);
  a = counter_get(&self->addresses, addr);
  if (l == NULL || a == NULL) {
    counter_drop_if_unused(&self->listeners, l);
    counter_drop_if_unused(&self->addresses, a);
    why = api->strdup("out of memory");
    goto out;
  }
  if (l->n >= self->per_listener) {
    why = api->mprintf(
        "busy: %lu password verifications already queued from listener \"%s\" "
        "(max_pending_per_listener)",
        (unsigned long)l->n, listener);
  } else if (a->n >= self->per_address) {
    why = api->mprintf(
        "busy: %lu password verifications already queued from %s "
        "(max_pending_per_address)",
        (unsigned long)a->n, addr);
  }
  if (why) {
    counter_drop_if_unused(&self->listeners, l);
    counter_drop_if_unused(&self->addresses, a);
    goto out;
  }
  self->pending++;
  l->n++;
  a->n++;
  r->listener = l;
  r->address = a;
out:
  pthread_mutex_unlock(&self->count_mu);
  return why;
}

static int on_authenticate(passwd_instance* self, mqgate_evt_authenticate* evt) {
  const mqgate_host_api* api = self->api;
  request* r;
  char* busy;
  if (evt->username == NULL) return MQGATE_ABSTAIN;
  r = (request*)calloc(1, sizeof *r);
  if (r == NULL) goto nomem;
  r->username = strdup(evt->username);
  if (r->username == NULL) goto nomem;
  if (evt->password != NULL) {
    r->password = (char*)malloc(evt->password_len ? evt->password_len : 1);
    if (r->password == NULL) goto nomem;
    if (evt->password_len) memcpy(r->password, evt->password, evt->password_len);
    r->password_len = evt->password_len;
  }
  busy = count_in(self, evt, r);
  if (busy != NULL) {
    request_free(r);
    evt->reason = busy;
    return MQGATE_DENY; /* CONNACK 5: not a verdict on the credentials */
  }
  r->token = api->defer(self->plugin);
  if (r->token == NULL) {
    /* Uncount it; finish() completes only tokens, so do it by hand. */
    pthread_mutex_lock(&self->count_mu);
    self->pending--;
    r->listener->n--;
    r->address->n--;
    counter_drop_if_unused(&self->listeners, r->listener);
    counter_drop_if_unused(&self->addresses, r->address);
    pthread_mutex_unlock(&self->count_mu);
    request_free(r);
    evt->reason = api->strdup("the broker refused to defer the decision");
    return MQGATE_DENY;
  }
  /* pending <= max_pending bounds the queue too, so only stopping refuses the push;
   * the request is then answered here (DENY): every token is completed. */
  if (mqgate_wq_push(&self->queue, &r->job) != 0) answer(self, &r->job, 1);
  return MQGATE_DEFER;
nomem:
  if (r) request_free(r);
  evt->reason = api->strdup("out of memory");
  return MQGATE_DENY;
}

static int on_reload(passwd_instance* self, mqgate_evt_reload* evt) {
  const mqgate_host_api* api = self->api;
  passwd_options o;
  int rc = read_options(api, evt->options, &o, &evt->errmsg);
  if (rc != MQGATE_OK) return rc;
  if ((size_t)o.threads != self->nthreads || (size_t)o.max_pending != self->max_pending)
    api->log(self->plugin, MQGATE_LOG_WARNING,
             "threads and max_pending take effect at the next start");
  /* Read on the loop only: they apply to the next logins. */
  self->per_listener = (size_t)o.per_listener;
  self->per_address = (size_t)o.per_address;
  /* The file is parsed on the loader thread (a 64 MiB file takes most of a second),
   * which swaps it in, or logs why not and keeps the old users. */
  pthread_mutex_lock(&self->load_mu);
  free(self->load_path);
  self->load_path = o.path;
  pthread_cond_signal(&self->load_cv);
  pthread_mutex_unlock(&self->load_mu);
  return MQGATE_OK;
}

static int on_event(int event, void* event_data, void* instance) {
  passwd_instance* self = (passwd_instance*)instance;
  if (event == MQGATE_EVT_AUTHENTICATE)
    return on_authenticate(self, (mqgate_evt_authenticate*)event_data);
  if (event == MQGATE_EVT_RELOAD) return on_reload(self, (mqgate_evt_reload*)event_data);
  return MQGATE_OK;
}

/* ------------------------------------------------------------------------------ */
/* Init and shutdown                                                               */
/* ------------------------------------------------------------------------------ */

enum { STARTED_QUEUE = 1, STARTED_RELEASER = 2, STARTED_LOADER = 4 };

/* Stops what `started` says runs, in the order that answers every pending login:
 * the loader (so no new table), the verification threads (queued logins answered
 * "shutting down"), then the release thread (which answers what waits at once). */
static void stop_threads(passwd_instance* self, int started) {
  pthread_mutex_lock(&self->table_mu);
  self->closing = 1;
  pthread_cond_broadcast(&self->measured_cv);
  pthread_mutex_unlock(&self->table_mu);
  if (started & STARTED_LOADER) {
    pthread_mutex_lock(&self->load_mu);
    self->load_stopping = 1;
    pthread_cond_signal(&self->load_cv);
    pthread_mutex_unlock(&self->load_mu);
    pthread_join(self->loader, NULL);
  }
  if (started & STARTED_QUEUE) mqgate_wq_stop(&self->queue);
  if (started & STARTED_RELEASER) {
    pthread_mutex_lock(&self->rel_mu);
    self->rel_stopping = 1;
    pthread_cond_signal(&self->rel_cv);
    pthread_mutex_unlock(&self->rel_mu);
    pthread_join(self->releaser, NULL);
  }
}

static void instance_free(passwd_instance* self) {
  pthread_mutex_destroy(&self->table_mu);
  pthread_cond_destroy(&self->measured_cv);
  pthread_mutex_destroy(&self->count_mu);
  pthread_mutex_destroy(&self->rel_mu);
  pthread_cond_destroy(&self->rel_cv);
  pthread_mutex_destroy(&self->load_mu);
  pthread_cond_destroy(&self->load_cv);
  counter_map_free(&self->listeners);
  counter_map_free(&self->addresses);
  table_free(self->users);
  free(self->load_path);
  free(self->first_path);
  free(self);
}

static int init_sync(passwd_instance* self) {
  pthread_condattr_t attr;
  int err = pthread_condattr_init(&attr);
  if (err != 0) return err;
  /* Release times are CLOCK_MONOTONIC: a wall-clock step must not release early. */
  err = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  if (err == 0) err = pthread_cond_init(&self->rel_cv, &attr);
  pthread_condattr_destroy(&attr);
  if (err != 0) return err;
  pthread_mutex_init(&self->table_mu, NULL);
  pthread_cond_init(&self->measured_cv, NULL);
  pthread_mutex_init(&self->count_mu, NULL);
  pthread_mutex_init(&self->rel_mu, NULL);
  pthread_mutex_init(&self->load_mu, NULL);
  pthread_cond_init(&self->load_cv, NULL);
  return 0;
}

MQGATE_PLUGIN_EXPORT int mqgate_plugin_init(mqgate_plugin* plugin, const mqgate_host_api* api,
                                            const mqgate_options* options, void** instance,
                                            char** errmsg) {
  passwd_instance* self;
  passwd_options o;
  char err[PW_ERR_LEN];
  table* t;
  int started = 0, e;
  int rc = read_options(api, options, &o, errmsg);
  if (rc != MQGATE_OK) return rc;
  /* At start-up the file is parsed here: a bad one must stop the broker. */
  t = load_table(o.path, err, sizeof err);
  if (t == NULL) {
    *errmsg = api->mprintf("password_file: %s", err);
    free(o.path);
    return MQGATE_ERR_CONFIG;
  }
  self = (passwd_instance*)calloc(1, sizeof *self);
  if (self == NULL) {
    table_free(t);
    free(o.path);
    return MQGATE_ERR_NOMEM;
  }
  e = init_sync(self);
  if (e != 0) {
    *errmsg = api->mprintf("cannot set up the plugin's locks: %s", strerror(e));
    table_free(t);
    free(o.path);
    free(self);
    return MQGATE_ERR_PLUGIN;
  }
  self->api = api;
  self->plugin = plugin;
  self->users = t;
  self->first_path = o.path;
  self->max_pending = (size_t)o.max_pending;
  self->per_listener = (size_t)o.per_listener;
  self->per_address = (size_t)o.per_address;
  self->nthreads = (size_t)o.threads;
  if (counter_map_init(&self->listeners, 16, (uint64_t)now_ns() ^ (uintptr_t)self) != 0 ||
      counter_map_init(&self->addresses, self->max_pending,
                       (uint64_t)now_ns() * 0x9e3779b97f4a7c15ULL ^ (uintptr_t)&o) != 0) {
    instance_free(self);
    return MQGATE_ERR_NOMEM;
  }
  api->log(plugin, MQGATE_LOG_INFO, "%lu users from %s; %lu verification threads",
           (unsigned long)pwfile_count(t->file), o.path, (unsigned long)self->nthreads);
  e = mqgate_wq_start(&self->queue, self->nthreads, self->max_pending, answer, self);
  if (e == 0) {
    started |= STARTED_QUEUE;
    e = pthread_create(&self->releaser, NULL, releaser_main, self);
  }
  if (e == 0) {
    started |= STARTED_RELEASER;
    e = pthread_create(&self->loader, NULL, loader_main, self);
  }
  if (e != 0) {
    *errmsg = api->mprintf("cannot start a thread: %s", strerror(e));
    stop_threads(self, started);
    instance_free(self);
    return MQGATE_ERR_PLUGIN;
  }
  started |= STARTED_LOADER;
  if (api->register_event(plugin, MQGATE_EVT_AUTHENTICATE, on_event) != MQGATE_OK ||
      api->register_event(plugin, MQGATE_EVT_RELOAD, on_event) != MQGATE_OK) {
    stop_threads(self, started);
    instance_free(self);
    *errmsg = api->strdup("cannot register the plugin's events");
    return MQGATE_ERR_PLUGIN;
  }
  *instance = self;
  return MQGATE_OK;
}

MQGATE_PLUGIN_EXPORT void mqgate_plugin_shutdown(void* instance) {
  passwd_instance* self = (passwd_instance*)instance;
  stop_threads(self, STARTED_QUEUE | STARTED_RELEASER | STARTED_LOADER);
  instance_free(self);
}
