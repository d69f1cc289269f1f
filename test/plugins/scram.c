/*
 * scram: an ABI 2 test plugin doing MQTT 5.0 enhanced authentication with
 * SCRAM-SHA-256 (RFC 5802, RFC 7677; no channel binding), method "SCRAM-SHA-256".
 * A real challenge-response through the broker's AUTH exchange: client-first in the
 * CONNECT's Authentication Data, server-first in AUTH 0x18, client-final in the
 * client's AUTH 0x18, server-final (the server signature) in the CONNACK. The same
 * exchange re-authenticates a connected client (AUTH 0x19), as the same user only.
 *
 * Options:
 *   users = ["name:password", ...]    hashed at init (PBKDF2-HMAC-SHA256, a random
 *                                      salt per user, `iterations` rounds); for tests
 *   credentials = ["name:iterations:salt:StoredKey:ServerKey", ...]   precomputed, the
 *                                      last three in base64 (RFC 5802 section 3)
 *   iterations = 4096                  for `users` and for unknown users' fake salts
 *
 * Bad proofs, nonces that do not match, malformed messages and unknown users are all
 * denied the same way (CONNACK 0x86, Reason String "authentication failed"); an unknown
 * user still gets a server-first message, with a salt derived from a secret so it
 * stays the same, so the exchange does not tell whether a user exists. Logs name the
 * step that failed, never proofs or keys.
 *
 * Crypto: HMAC-SHA-256 and SHA-256 a few times per step on the loop (microseconds);
 * PBKDF2 only at init. Nonces from a CTR_DRBG seeded once in init.
 */
#define _POSIX_C_SOURCE 200809L /* strtok_r */
#include <mbedtls/base64.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/md.h>
#include <mbedtls/pkcs5.h>
#include <mbedtls/sha256.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mqgate_plugin.h"

MQGATE_PLUGIN_DECLARE_VERSION(2)

#define METHOD "SCRAM-SHA-256"
#define MAX_USERS 64
#define MAX_NAME 128
#define MAX_MSG 512
#define SALT_LEN 16
#define KEY_LEN 32

typedef struct user {
  char name[MAX_NAME];
  unsigned char salt[SALT_LEN];
  size_t salt_len;
  long iterations;
  unsigned char stored_key[KEY_LEN];
  unsigned char server_key[KEY_LEN];
} user;

typedef struct scram {
  const mqgate_host_api *api;
  mqgate_plugin *plugin;
  user users[MAX_USERS];
  size_t user_count;
  long iterations;
  unsigned char fake_secret[KEY_LEN]; /* unknown users' salts: HMAC(secret, name) */
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
} scram;

/* One client's exchange (api->client_set_data). */
typedef struct exchange {
  int awaiting_final;              /* server-first sent */
  int unknown_user;                /* a fake exchange: always fails */
  const user *u;
  char name[MAX_NAME];
  char gs2_header_b64[16];         /* what c= must carry */
  char client_first_bare[MAX_MSG];
  char server_first[MAX_MSG];
  char nonce[128];                 /* client nonce (at most 64) + server nonce (24) */
  char authenticated[MAX_NAME];    /* the user of the last success (re-authentication) */
} exchange;

static const mbedtls_md_info_t *sha256(void) { return mbedtls_md_info_from_type(MBEDTLS_MD_SHA256); }

static int hmac(const unsigned char *key, size_t key_len, const void *msg, size_t len,
                unsigned char out[KEY_LEN]) {
  return mbedtls_md_hmac(sha256(), key, key_len, (const unsigned char *)msg, len, out);
}

static int b64_encode(const unsigned char *in, size_t len, char *out, size_t cap) {
  size_t olen = 0;
  if (mbedtls_base64_encode((unsigned char *)out, cap, &olen, in, len) != 0) return -1;
  out[olen] = '\0';
  return 0;
}

static int b64_decode(const char *in, size_t in_len, unsigned char *out, size_t cap, size_t *olen) {
  return mbedtls_base64_decode(out, cap, olen, (const unsigned char *)in, in_len) == 0 ? 0 : -1;
}

/* RFC 5802 section 3: StoredKey and ServerKey from a password. */
static int derive(const char *password, user *u) {
  unsigned char salted[KEY_LEN], client_key[KEY_LEN];
  mbedtls_md_context_t ctx;
  int rc;
  mbedtls_md_init(&ctx);
  rc = mbedtls_md_setup(&ctx, sha256(), 1);
  if (rc == 0)
    rc = mbedtls_pkcs5_pbkdf2_hmac(&ctx, (const unsigned char *)password, strlen(password), u->salt,
                                   u->salt_len, (unsigned int)u->iterations, KEY_LEN, salted);
  mbedtls_md_free(&ctx);
  if (rc == 0) rc = hmac(salted, KEY_LEN, "Client Key", 10, client_key);
  if (rc == 0) rc = mbedtls_sha256_ret(client_key, KEY_LEN, u->stored_key, 0);
  if (rc == 0) rc = hmac(salted, KEY_LEN, "Server Key", 10, u->server_key);
  memset(salted, 0, sizeof salted);
  memset(client_key, 0, sizeof client_key);
  return rc;
}

static int valid_name(const char *s, size_t n) {
  return n > 0 && n < MAX_NAME && memchr(s, ',', n) == NULL && memchr(s, '=', n) == NULL &&
         memchr(s, ':', n) == NULL;
}

static int add_user(scram *self, const mqgate_options *o, const char *key, const char *entry,
                    char **errmsg) {
  const mqgate_host_api *api = self->api;
  user *u;
  const char *colon = strchr(entry, ':');
  if (self->user_count == MAX_USERS) {
    *errmsg = api->mprintf("%s: more than %d users", api->opt_location(o, key), MAX_USERS);
    return MQGATE_ERR_CONFIG;
  }
  if (colon == NULL || !valid_name(entry, (size_t)(colon - entry))) {
    *errmsg = api->mprintf("%s: \"%s\" entries are \"name:...\" with a name without , = or :",
                           api->opt_location(o, key), key);
    return MQGATE_ERR_CONFIG;
  }
  u = &self->users[self->user_count];
  memset(u, 0, sizeof *u);
  memcpy(u->name, entry, (size_t)(colon - entry));
  if (strcmp(key, "users") == 0) {
    u->salt_len = SALT_LEN;
    u->iterations = self->iterations;
    if (mbedtls_ctr_drbg_random(&self->drbg, u->salt, SALT_LEN) != 0 || derive(colon + 1, u) != 0) {
      *errmsg = api->mprintf("%s: hashing the password of \"%s\" failed", api->opt_location(o, key),
                             u->name);
      return MQGATE_ERR_PLUGIN;
    }
  } else {
    /* name:iterations:salt:StoredKey:ServerKey */
    char buf[MAX_MSG];
    char *fields[4];
    char *save = NULL;
    size_t i, n = 0;
    size_t len = 0;
    if (strlen(colon + 1) >= sizeof buf) goto bad;
    strcpy(buf, colon + 1);
    for (i = 0; i < 4; i++) {
      fields[i] = strtok_r(i == 0 ? buf : NULL, ":", &save);
      if (fields[i] == NULL) goto bad;
    }
    if (strtok_r(NULL, ":", &save) != NULL) goto bad;
    u->iterations = strtol(fields[0], NULL, 10);
    if (u->iterations < 1 || u->iterations > 10000000) goto bad;
    if (b64_decode(fields[1], strlen(fields[1]), u->salt, SALT_LEN, &n) != 0 || n == 0) goto bad;
    u->salt_len = n;
    if (b64_decode(fields[2], strlen(fields[2]), u->stored_key, KEY_LEN, &len) != 0 || len != KEY_LEN)
      goto bad;
    if (b64_decode(fields[3], strlen(fields[3]), u->server_key, KEY_LEN, &len) != 0 || len != KEY_LEN)
      goto bad;
  }
  self->user_count++;
  return MQGATE_OK;
bad:
  *errmsg = api->mprintf(
      "%s: \"%s\" of \"%s\" is not \"name:iterations:salt:StoredKey:ServerKey\" (base64, a salt "
      "of 1-16 bytes, 32-byte keys)",
      api->opt_location(o, key), key, u->name);
  return MQGATE_ERR_CONFIG;
}

static const user *find_user(const scram *self, const char *name) {
  size_t i;
  for (i = 0; i < self->user_count; i++)
    if (strcmp(self->users[i].name, name) == 0) return &self->users[i];
  return NULL;
}

static int deny(scram *self, mqgate_evt_authenticate *e, const char *why) {
  const mqgate_host_api *api = self->api;
  exchange *x = api->client_get_data(e->client, self->plugin);
  if (x != NULL) x->awaiting_final = 0;
  e->reason = api->mprintf("SCRAM: %s", why);
  e->reason_code = 0x86; /* bad user name or password: the same for every failure */
  e->reason_string = api->strdup("authentication failed");
  return MQGATE_VERDICT_DENY;
}

static void free_exchange(void *p) {
  if (p != NULL) memset(p, 0, sizeof(exchange));
  free(p);
}

/* client-first-message: gs2-header client-first-message-bare, "n,,n=user,r=nonce". */
static int on_client_first(scram *self, mqgate_evt_authenticate *e, exchange *x) {
  const mqgate_host_api *api = self->api;
  char msg[MAX_MSG];
  const char *bare, *name, *nonce, *end;
  unsigned char rnd[18], salt[KEY_LEN];
  char snonce[32], salt_b64[64];
  size_t name_len;
  if (e->auth_data == NULL || e->auth_data_len == 0 || e->auth_data_len >= sizeof msg)
    return deny(self, e, "no or oversized client-first message");
  memcpy(msg, e->auth_data, e->auth_data_len);
  msg[e->auth_data_len] = '\0';
  if (strlen(msg) != e->auth_data_len) return deny(self, e, "NUL in client-first message");
  /* No channel binding ("p=" is refused), no authzid. */
  if (strncmp(msg, "n,,", 3) == 0) strcpy(x->gs2_header_b64, "biws");
  else if (strncmp(msg, "y,,", 3) == 0) strcpy(x->gs2_header_b64, "eSws");
  else return deny(self, e, "client-first message: unsupported GS2 header");
  bare = msg + 3;
  if (strncmp(bare, "n=", 2) != 0) return deny(self, e, "client-first message: no n=");
  name = bare + 2;
  end = strchr(name, ',');
  if (end == NULL || strncmp(end, ",r=", 3) != 0)
    return deny(self, e, "client-first message: no r= after n=");
  name_len = (size_t)(end - name);
  nonce = end + 3;
  if (!valid_name(name, name_len)) return deny(self, e, "client-first message: bad user name");
  if (*nonce == '\0' || strchr(nonce, ',') != NULL || strlen(nonce) > 64)
    return deny(self, e, "client-first message: bad nonce (or extensions)");
  memcpy(x->name, name, name_len);
  x->name[name_len] = '\0';
  strcpy(x->client_first_bare, bare);
  x->u = find_user(self, x->name);
  x->unknown_user = x->u == NULL;
  if (mbedtls_ctr_drbg_random(&self->drbg, rnd, sizeof rnd) != 0 ||
      b64_encode(rnd, sizeof rnd, snonce, sizeof snonce) != 0)
    return deny(self, e, "no random nonce");
  snprintf(x->nonce, sizeof x->nonce, "%s%s", nonce, snonce);
  if (x->u != NULL) {
    b64_encode(x->u->salt, x->u->salt_len, salt_b64, sizeof salt_b64);
    snprintf(x->server_first, sizeof x->server_first, "r=%s,s=%s,i=%ld", x->nonce, salt_b64,
             x->u->iterations);
  } else {
    /* A fake exchange that looks like a real one, the same salt every time. */
    hmac(self->fake_secret, KEY_LEN, x->name, strlen(x->name), salt);
    b64_encode(salt, SALT_LEN, salt_b64, sizeof salt_b64);
    snprintf(x->server_first, sizeof x->server_first, "r=%s,s=%s,i=%ld", x->nonce, salt_b64,
             self->iterations);
  }
  x->awaiting_final = 1;
  e->auth_data_out = api->alloc(strlen(x->server_first));
  if (e->auth_data_out == NULL) return deny(self, e, "out of memory");
  memcpy(e->auth_data_out, x->server_first, strlen(x->server_first));
  e->auth_data_out_len = strlen(x->server_first);
  return MQGATE_VERDICT_CONTINUE;
}

/* client-final-message: "c=biws,r=nonce,p=proof". */
static int on_client_final(scram *self, mqgate_evt_authenticate *e, exchange *x) {
  const mqgate_host_api *api = self->api;
  char msg[MAX_MSG], auth_message[3 * MAX_MSG + 4], expect[MAX_MSG + 8], final_msg[64];
  unsigned char proof[KEY_LEN], client_sig[KEY_LEN], client_key[KEY_LEN], stored[KEY_LEN];
  unsigned char server_sig[KEY_LEN];
  const char *p;
  size_t proof_len = 0, i, without_proof;
  unsigned char diff = 0;
  x->awaiting_final = 0;
  if (e->auth_data == NULL || e->auth_data_len == 0 || e->auth_data_len >= sizeof msg)
    return deny(self, e, "no or oversized client-final message");
  memcpy(msg, e->auth_data, e->auth_data_len);
  msg[e->auth_data_len] = '\0';
  if (strlen(msg) != e->auth_data_len) return deny(self, e, "NUL in client-final message");
  snprintf(expect, sizeof expect, "c=%s,r=%s,p=", x->gs2_header_b64, x->nonce);
  p = strstr(msg, ",p=");
  if (p == NULL) return deny(self, e, "client-final message: no proof");
  without_proof = (size_t)(p - msg);
  if (strncmp(msg, expect, strlen(expect) - 3) != 0 || without_proof != strlen(expect) - 3)
    return deny(self, e, "client-final message: channel binding or nonce does not match");
  if (b64_decode(p + 3, strlen(p + 3), proof, sizeof proof, &proof_len) != 0 || proof_len != KEY_LEN)
    return deny(self, e, "client-final message: malformed proof");
  if (x->unknown_user) return deny(self, e, "unknown user");
  snprintf(auth_message, sizeof auth_message, "%s,%s,%.*s", x->client_first_bare, x->server_first,
           (int)without_proof, msg);
  hmac(x->u->stored_key, KEY_LEN, auth_message, strlen(auth_message), client_sig);
  for (i = 0; i < KEY_LEN; i++) client_key[i] = proof[i] ^ client_sig[i];
  mbedtls_sha256_ret(client_key, KEY_LEN, stored, 0);
  for (i = 0; i < KEY_LEN; i++) diff |= (unsigned char)(stored[i] ^ x->u->stored_key[i]);
  if (diff != 0) return deny(self, e, "wrong proof");
  if (e->reauthenticate && strcmp(x->authenticated, x->name) != 0)
    return deny(self, e, "re-authentication as another user");
  hmac(x->u->server_key, KEY_LEN, auth_message, strlen(auth_message), server_sig);
  strcpy(final_msg, "v=");
  b64_encode(server_sig, KEY_LEN, final_msg + 2, sizeof final_msg - 2);
  e->auth_data_out = api->alloc(strlen(final_msg));
  if (e->auth_data_out == NULL) return deny(self, e, "out of memory");
  memcpy(e->auth_data_out, final_msg, strlen(final_msg));
  e->auth_data_out_len = strlen(final_msg);
  strcpy(x->authenticated, x->name);
  e->identity = api->mprintf("user:%s", x->name);
  api->log(self->plugin, MQGATE_LOG_INFO, "scram: %s user %s",
           e->reauthenticate ? "re-authenticated" : "authenticated", x->name);
  return MQGATE_VERDICT_ALLOW;
}

static int on_authenticate(int event, void *data, void *instance) {
  scram *self = instance;
  const mqgate_host_api *api = self->api;
  mqgate_evt_authenticate *e = data;
  exchange *x;
  (void)event;
  if (!MQGATE_HAS_FIELD(e, mqgate_evt_authenticate, auth_data_out_len) || e->auth_method == NULL ||
      strcmp(e->auth_method, METHOD) != 0)
    return MQGATE_VERDICT_ABSTAIN; /* not a SCRAM client */
  x = api->client_get_data(e->client, self->plugin);
  if (x == NULL) {
    x = calloc(1, sizeof *x);
    if (x == NULL || api->client_set_data(e->client, self->plugin, x, free_exchange) != MQGATE_OK) {
      free(x);
      return deny(self, e, "out of memory");
    }
  }
  if (e->auth_step == 0) return on_client_first(self, e, x);
  if (!x->awaiting_final) return deny(self, e, "AUTH out of turn");
  return on_client_final(self, e, x);
}

MQGATE_PLUGIN_EXPORT int mqgate_plugin_init(mqgate_plugin *plugin, const mqgate_host_api *api,
                                            const mqgate_options *options, void **instance,
                                            char **errmsg) {
  static const char *const keys[] = {"users", "credentials"};
  scram *self;
  size_t k, i, n;
  int64_t iterations = 4096;
  int rc;
  if (!MQGATE_API_HAS(api, register_auth_method)) {
    *errmsg = api->mprintf("this broker has no MQTT 5.0 enhanced authentication");
    return MQGATE_ERR_UNSUPPORTED;
  }
  for (i = 0; i < api->opt_count(options); i++) {
    const char *key = api->opt_key(options, i);
    if (strcmp(key, "users") != 0 && strcmp(key, "credentials") != 0 &&
        strcmp(key, "iterations") != 0) {
      *errmsg = api->mprintf("%s: unknown option \"%s\" (users, credentials, iterations)",
                             api->opt_location(options, key), key);
      return MQGATE_ERR_CONFIG;
    }
  }
  if (api->opt_type(options, "iterations") != MQGATE_OPT_MISSING &&
      (api->opt_integer(options, "iterations", &iterations) != MQGATE_OK || iterations < 1 ||
       iterations > 10000000)) {
    *errmsg = api->mprintf("%s: iterations must be an integer from 1 to 10000000",
                           api->opt_location(options, "iterations"));
    return MQGATE_ERR_CONFIG;
  }
  self = calloc(1, sizeof *self);
  if (self == NULL) return MQGATE_ERR_NOMEM;
  self->api = api;
  self->plugin = plugin;
  self->iterations = (long)iterations;
  mbedtls_entropy_init(&self->entropy);
  mbedtls_ctr_drbg_init(&self->drbg);
  rc = mbedtls_ctr_drbg_seed(&self->drbg, mbedtls_entropy_func, &self->entropy,
                             (const unsigned char *)"mqgate-scram", 12);
  if (rc == 0) rc = mbedtls_ctr_drbg_random(&self->drbg, self->fake_secret, KEY_LEN);
  if (rc != 0) {
    *errmsg = api->mprintf("seeding the random generator failed (-0x%04x)", (unsigned)-rc);
    rc = MQGATE_ERR_PLUGIN;
    goto fail;
  }
  for (k = 0; k < 2; k++) {
    if (api->opt_type(options, keys[k]) == MQGATE_OPT_MISSING) continue;
    if (api->opt_array_size(options, keys[k], &n) != MQGATE_OK) {
      *errmsg = api->mprintf("%s: %s must be an array of strings", api->opt_location(options, keys[k]),
                             keys[k]);
      rc = MQGATE_ERR_CONFIG;
      goto fail;
    }
    for (i = 0; i < n; i++) {
      const char *entry = NULL;
      api->opt_array_string(options, keys[k], i, &entry);
      rc = add_user(self, options, keys[k], entry, errmsg);
      if (rc != MQGATE_OK) goto fail;
    }
  }
  rc = api->register_event(plugin, MQGATE_EVT_AUTHENTICATE, on_authenticate);
  if (rc == MQGATE_OK) rc = api->register_auth_method(plugin, METHOD);
  if (rc != MQGATE_OK) goto fail;
  *instance = self;
  return MQGATE_OK;
fail:
  mbedtls_ctr_drbg_free(&self->drbg);
  mbedtls_entropy_free(&self->entropy);
  memset(self, 0, sizeof *self);
  free(self);
  return rc;
}

MQGATE_PLUGIN_EXPORT void mqgate_plugin_shutdown(void *instance) {
  scram *self = instance;
  mbedtls_ctr_drbg_free(&self->drbg);
  mbedtls_entropy_free(&self->entropy);
  memset(self, 0, sizeof *self);
  free(self);
}
