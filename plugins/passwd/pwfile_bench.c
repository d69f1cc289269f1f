/* pwfile_bench [iterations...]: the cost of one password verification with mbedTLS, for
 * $7$ (PBKDF2-HMAC-SHA512) at each iteration count (default: Mosquitto's 101 and the
 * cap) and for $6$. Prints microseconds per verification; asserts nothing. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "pwfile.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void bench(pw_type type, unsigned it) {
  pw_hash h;
  char err[PW_ERR_LEN];
  int i, n = 0, ok = 0;
  double t0, t;
  if (pw_hash_make(type, it, "correct horse", 13, &h, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    exit(1);
  }
  t0 = now();
  do { /* at least 0.5 s and 3 runs */
    for (i = 0; i < 3; i++, n++) ok += pw_hash_verify(&h, "correct horse", 13);
    t = now() - t0;
  } while (t < 0.5);
  if (ok != n) {
    fprintf(stderr, "verification failed\n");
    exit(1);
  }
  if (type == PW_SHA512)
    printf("$6$ sha512:                 %10.1f us per verification (%d runs)\n", t / n * 1e6, n);
  else
    printf("$7$ pbkdf2 %7u iterations: %10.1f us per verification (%d runs)\n", it,
           t / n * 1e6, n);
}

int main(int argc, char** argv) {
  int i;
  if (argc > 1) {
    for (i = 1; i < argc; i++) bench(PW_SHA512_PBKDF2, (unsigned)strtoul(argv[i], NULL, 10));
    return 0;
  }
  bench(PW_SHA512_PBKDF2, PW_DEFAULT_ITERATIONS);
  bench(PW_SHA512_PBKDF2, 1000);
  bench(PW_SHA512_PBKDF2, PW_MAX_ITERATIONS);
  bench(PW_SHA512, 0);
  return 0;
}
