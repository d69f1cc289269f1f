/*
 * mqgate_work_queue.h -- worker threads for plugins that answer off the event loop.
 *
 * A plugin that defers its decisions (ABI 2: api->defer, api->complete) needs the
 * same few pieces every time: a FIFO of jobs, threads that take them, a mutex and a
 * condition variable, a bound on what may wait, and a shutdown that answers what is
 * still queued before it joins the threads (every deferred token must be completed).
 * This header is those pieces, once. The passwd plugin, the documented example
 * docs/examples/slow_lookup.c and the test plugin test/plugins/deferred.c use it.
 *
 * Header-only C99 on POSIX threads; not part of the plugin ABI (the broker never sees
 * it). Installed beside mqgate_plugin.h, so `$(pkg-config --cflags mqgate-plugin)`
 * finds it as <mqgate_work_queue.h>; or copy it beside your plugin. Define
 * _POSIX_C_SOURCE as 200809L (or higher) before your first #include, and link with
 * -pthread.
 *
 * Usage. A job is the plugin's own struct with an mqgate_wq_job as its first member:
 *
 *   typedef struct request { mqgate_wq_job job; mqgate_deferred *token; ... } request;
 *   static void answer(void *context, mqgate_wq_job *job, int stopping) {
 *     request *r = (request *)job;   ... api->complete(r->token, ...); free(r);
 *   }
 *   mqgate_wq_start(&self->queue, 2, 1024, answer, self);    (in init)
 *   if (mqgate_wq_push(&self->queue, &r->job) != 0) ...       (in a callback)
 *   mqgate_wq_stop(&self->queue);                             (in shutdown)
 *
 * The callback runs on one of the queue's threads, outside the queue's lock, once per
 * job; it owns the job from then on. `stopping` is 1 for jobs still queued at
 * mqgate_wq_stop: answer them at once (a DENY, say), the broker is going away.
 */
#ifndef MQGATE_WORK_QUEUE_H
#define MQGATE_WORK_QUEUE_H

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <time.h>

/* The most threads one queue runs. */
#define MQGATE_WQ_MAX_THREADS 64

/* The head of a job: put it first in the plugin's job struct. */
typedef struct mqgate_wq_job {
  struct mqgate_wq_job *next; /* the queue's */
  struct timespec not_before; /* CLOCK_REALTIME: not run before (zero: at once); see
                                 mqgate_wq_delay */
} mqgate_wq_job;

/* Runs one job (see above). */
typedef void (*mqgate_wq_run_fn)(void *context, mqgate_wq_job *job, int stopping);

typedef struct mqgate_work_queue {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  mqgate_wq_job *head, *tail; /* FIFO; under mu */
  size_t queued;              /* jobs waiting for a thread; under mu */
  size_t max_queued;          /* 0: no bound */
  int stopping;               /* under mu */
  size_t nthreads;
  pthread_t threads[MQGATE_WQ_MAX_THREADS];
  mqgate_wq_run_fn run;
  void *context;
} mqgate_work_queue;

/* Sets a job's not_before to `delay_ms` milliseconds from now (a pretend-slow lookup, a
 * retry). Call before mqgate_wq_push. */
static inline void mqgate_wq_delay(mqgate_wq_job *job, long delay_ms) {
  long ns;
  clock_gettime(CLOCK_REALTIME, &job->not_before);
  ns = job->not_before.tv_nsec + (delay_ms % 1000) * 1000000L;
  job->not_before.tv_sec += delay_ms / 1000 + ns / 1000000000L;
  job->not_before.tv_nsec = ns % 1000000000L;
}

/* Internal: 1 if `job` may run now. */
static inline int mqgate_wq_due_(const mqgate_wq_job *job) {
  struct timespec now;
  if (job->not_before.tv_sec == 0 && job->not_before.tv_nsec == 0) return 1;
  clock_gettime(CLOCK_REALTIME, &now);
  return now.tv_sec > job->not_before.tv_sec ||
         (now.tv_sec == job->not_before.tv_sec && now.tv_nsec >= job->not_before.tv_nsec);
}

/* Internal: one thread. Takes the oldest job once it is due (at once when stopping),
 * runs it outside the lock; exits when stopping and nothing is queued. */
static inline void *mqgate_wq_thread_(void *arg) {
  mqgate_work_queue *q = (mqgate_work_queue *)arg;
  pthread_mutex_lock(&q->mu);
  for (;;) {
    mqgate_wq_job *job = q->head;
    int stopping = q->stopping;
    if (job == NULL) {
      if (stopping) break;
      pthread_cond_wait(&q->cv, &q->mu);
      continue;
    }
    if (!stopping && !mqgate_wq_due_(job)) {
      pthread_cond_timedwait(&q->cv, &q->mu, &job->not_before);
      continue;
    }
    q->head = job->next;
    if (q->head == NULL) q->tail = NULL;
    q->queued--;
    pthread_mutex_unlock(&q->mu);
    job->next = NULL;
    q->run(q->context, job, stopping);
    pthread_mutex_lock(&q->mu);
  }
  pthread_mutex_unlock(&q->mu);
  return NULL;
}

/* Internal: stops and joins the threads started so far, frees the lock. */
static inline void mqgate_wq_join_(mqgate_work_queue *q) {
  size_t i;
  pthread_mutex_lock(&q->mu);
  q->stopping = 1;
  pthread_cond_broadcast(&q->cv);
  pthread_mutex_unlock(&q->mu);
  for (i = 0; i < q->nthreads; i++) pthread_join(q->threads[i], NULL);
  q->nthreads = 0;
  pthread_mutex_destroy(&q->mu);
  pthread_cond_destroy(&q->cv);
}

/* Starts `nthreads` threads (1 to MQGATE_WQ_MAX_THREADS) that run jobs through
 * `run(context, job, stopping)`; at most `max_queued` jobs wait (0: no bound). Returns 0,
 * or an errno value (EINVAL for a bad thread count; pthread_create's error), in which
 * case nothing runs and there is nothing to stop. */
static inline int mqgate_wq_start(mqgate_work_queue *q, size_t nthreads, size_t max_queued,
                                  mqgate_wq_run_fn run, void *context) {
  size_t i;
  if (nthreads < 1 || nthreads > MQGATE_WQ_MAX_THREADS || run == NULL) return EINVAL;
  q->head = q->tail = NULL;
  q->queued = 0;
  q->max_queued = max_queued;
  q->stopping = 0;
  q->nthreads = 0;
  q->run = run;
  q->context = context;
  pthread_mutex_init(&q->mu, NULL);
  pthread_cond_init(&q->cv, NULL);
  for (i = 0; i < nthreads; i++) {
    int err = pthread_create(&q->threads[i], NULL, mqgate_wq_thread_, q);
    if (err != 0) {
      mqgate_wq_join_(q);
      return err;
    }
    q->nthreads++;
  }
  return 0;
}

/* 1 if max_queued jobs wait already. A plugin tests it before api->defer, to refuse
 * at once (busy) rather than take a token it cannot queue. */
static inline int mqgate_wq_full(mqgate_work_queue *q) {
  int full;
  pthread_mutex_lock(&q->mu);
  full = q->max_queued != 0 && q->queued >= q->max_queued;
  pthread_mutex_unlock(&q->mu);
  return full;
}

/* Queues `job` for a thread. Returns 0, or -1 when the queue is full or stopping: the
 * job was not queued and is still the caller's. */
static inline int mqgate_wq_push(mqgate_work_queue *q, mqgate_wq_job *job) {
  pthread_mutex_lock(&q->mu);
  if (q->stopping || (q->max_queued != 0 && q->queued >= q->max_queued)) {
    pthread_mutex_unlock(&q->mu);
    return -1;
  }
  job->next = NULL;
  if (q->tail) q->tail->next = job;
  else q->head = job;
  q->tail = job;
  q->queued++;
  /* Every thread re-checks: one may be waiting for an earlier job's not_before. */
  pthread_cond_broadcast(&q->cv);
  pthread_mutex_unlock(&q->mu);
  return 0;
}

/* Stops the queue: its threads run every job still queued with stopping = 1 (without
 * waiting for not_before), then exit; joins them and frees the lock. No job runs after
 * it returns. Call once, after a successful mqgate_wq_start (in mqgate_plugin_shutdown). */
static inline void mqgate_wq_stop(mqgate_work_queue *q) {
  mqgate_wq_join_(q);
}

#endif /* MQGATE_WORK_QUEUE_H */
