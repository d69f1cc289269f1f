/*
 * certauth: certificate authentication, the seed's CertificateAuthPlugin (see
 * docs/certauth.md).
 *
 *   [plugins.certauth]
 *   uri_domain = "my.domain.name"             # required: the devices' SPIFFE domain
 *   client_id_from_cert = false               # optional: empty client id -> device id
 *   allowed_topics = ["devices/{device_id}/#"] # optional: absent = no topic rules
 *
 * AUTHENTICATE: the client's TLS certificate (the leaf of the chain TLS already
 * verified) must hold a subjectAltName URI spiffe://<uri_domain>/device/<id> whose <id>
 * equals the MQTT client id exactly; every URI of the certificate is looked at. No
 * certificate, no subjectAltName, no URI, no URI of that form or no matching id: DENY
 * with a reason. A claim certificate (a URI spiffe://<uri_domain>/claim/<batch> and no
 * device URI; docs/provisioning.md) gets ABSTAIN with a reason: only a provisioning
 * plugin on the listener can let it in. AUTHORIZE: for the clients this instance authenticated, and
 * only when allowed_topics is set, publishes (and wills and retained deliveries: ABI 2's RECEIVE)
 * must match a pattern and subscriptions must be covered by one. RELOAD: all options are re-read;
 * a bad set is refused and the old one kept.
 *
 * All state lives in the instance (two [plugins.*] tables using this .so are
 * independent); the device id of an authenticated client is kept with
 * api->client_set_data.
 */
#include <mbedtls/asn1.h>
#include <mbedtls/error.h>
#include <mbedtls/x509.h>
#include <mbedtls/x509_crt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/mqtt_topic.h"
#include "mqgate_plugin.h"

MQGATE_PLUGIN_DECLARE_VERSION(2)

/* ------------------------------------------------------------------------------ */
/* Bounded text for reasons and error messages                                     */
/* ------------------------------------------------------------------------------ */

#define TEXT_CAP 1024

typedef struct text {
  char buf[TEXT_CAP];
  size_t len;
} text;

static void text_init(text* t) {
  t->len = 0;
  t->buf[0] = '\0';
}

static void text_put(text* t, const char* s, size_t n) {
  size_t room = TEXT_CAP - 1 - t->len;
  if (n > room) n = room;
  memcpy(t->buf + t->len, s, n);
  t->len += n;
  t->buf[t->len] = '\0';
}

static void text_str(text* t, const char* s) {
  text_put(t, s, strlen(s));
}

static void text_size(text* t, size_t v) {
  char tmp[32];
  snprintf(tmp, sizeof tmp, "%lu", (unsigned long)v);
  text_str(t, tmp);
}

/* Appends untrusted bytes in double quotes: quotes and backslashes are escaped,
 * control and non-ASCII bytes written as \xNN, and more than `max` bytes cut ("...").
 * The result is printable ASCII, safe for a log line. */
static void text_quoted(text* t, const unsigned char* s, size_t n, size_t max) {
  size_t i;
  text_put(t, "\"", 1);
  for (i = 0; i < n && i < max; i++) {
    unsigned char c = s[i];
    if (c == '"' || c == '\\') {
      char e[2];
      e[0] = '\\';
      e[1] = (char)c;
      text_put(t, e, 2);
    } else if (c < 0x20 || c >= 0x7f) {
      char e[8];
      snprintf(e, sizeof e, "\\x%02x", (unsigned)c);
      text_put(t, e, 4);
    } else {
      char e = (char)c;
      text_put(t, &e, 1);
    }
  }
  text_put(t, "\"", 1);
  if (i < n) text_str(t, "...");
}

static void text_quoted_str(text* t, const char* s, size_t max) {
  text_quoted(t, (const unsigned char*)s, strlen(s), max);
}

/* How much of one untrusted item a reason shows, and how many items. */
#define SHOW_ID 64
#define SHOW_URI 100
#define SHOW_ITEMS 3

/* ------------------------------------------------------------------------------ */
/* Options                                                                          */
/* ------------------------------------------------------------------------------ */

#define PLACEHOLDER "{device_id}"
#define PLACEHOLDER_LEN 11
#define MAX_TOPIC_LEN 65535

/* An allowed_topics entry: a topic filter in which {device_id} may stand for (part of)
 * a literal level; checked by compile_pattern. */
typedef struct pattern {
  char* text; /* as configured */
  size_t len;
  int has_placeholder;
} pattern;

typedef struct certauth_config {
  char* uri_domain; /* lower case */
  size_t uri_domain_len;
  int client_id_from_cert;
  int restrict_topics; /* allowed_topics was given (possibly empty) */
  pattern* patterns;
  size_t pattern_count;
} certauth_config;

typedef struct certauth {
  const mqgate_host_api* api;
  mqgate_plugin* plugin;
  certauth_config* cfg;
} certauth;

static void config_free(certauth_config* c) {
  size_t i;
  if (c == NULL) return;
  for (i = 0; i < c->pattern_count; i++)
    free(c->patterns[i].text);
  free(c->patterns);
  free(c->uri_domain);
  free(c);
}

static const char* type_name(int type) {
  switch (type) {
    case MQGATE_OPT_STRING:
      return "a string";
    case MQGATE_OPT_INTEGER:
      return "an integer";
    case MQGATE_OPT_BOOLEAN:
      return "a boolean";
    case MQGATE_OPT_STRING_ARRAY:
      return "an array of strings";
    default:
      return "another type";
  }
}

static int is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* NULL if `s` is a DNS name as the pki tools accept for --uri: dot-separated labels of
 * 1-63 letters, digits and '-' (not first or last in a label), at most 253 characters,
 * no trailing dot, the last label not all digits. Else what is wrong. */
static const char* dns_name_problem(const char* s) {
  size_t len = strlen(s), i, label = 0;
  int all_digits = 1;
  if (strstr(s, "://") != NULL) return "give the bare domain, not a URI";
  if (len > 253) return "longer than 253 characters";
  for (i = 0; i <= len; i++) {
    char c = s[i];
    if (c == '.' || c == '\0') {
      if (label == 0) return "empty label (leading, trailing or double dot)";
      if (label > 63) return "a label is longer than 63 characters";
      if (s[i - 1] == '-') return "a label ends with '-'";
      if (c == '\0' && all_digits) return "the last label is all digits";
      label = 0;
      all_digits = 1;
      continue;
    }
    if (c == '-') {
      if (label == 0) return "a label starts with '-'";
    } else if (!is_alnum(c)) {
      return "only letters, digits, '-' and '.' are allowed";
    }
    if (c < '0' || c > '9') all_digits = 0;
    label++;
  }
  return NULL;
}

/* Compiles one allowed_topics entry: checks it and keeps a copy. Returns 0, or -1 with
 * *why (static text). */
static int compile_pattern(const char* src, pattern* out, const char** why) {
  size_t len = strlen(src), n, j;
  mqtt_topic_levels it;
  const char* l;
  memset(out, 0, sizeof *out);
  if (len == 0) {
    *why = "empty";
    return -1;
  }
  if (len > MAX_TOPIC_LEN) {
    *why = "longer than 65535 bytes";
    return -1;
  }
  out->text = (char*)malloc(len + 1);
  if (out->text == NULL) {
    *why = "out of memory";
    return -1;
  }
  memcpy(out->text, src, len + 1);
  out->len = len;
  mqtt_topic_levels_init(&it, out->text, len);
  while (mqtt_topic_next_level(&it, &l, &n)) {
    if (n == 1 && l[0] == '#') {
      if (!it.done) {
        *why = "'#' must be the last level";
        return -1;
      }
    } else if (n == 1 && l[0] == '+') {
      continue;
    } else {
      for (j = 0; j < n; j++) {
        char c = l[j];
        if (c == '#' || c == '+') {
          *why = "a wildcard ('+' or '#') must be a whole level";
          return -1;
        }
        if (c == '}') {
          *why = "'}' outside a {device_id} placeholder";
          return -1;
        }
        if (c == '{') {
          if (n - j < PLACEHOLDER_LEN || memcmp(l + j, PLACEHOLDER, PLACEHOLDER_LEN) != 0) {
            *why = "unknown placeholder (the only one is {device_id})";
            return -1;
          }
          out->has_placeholder = 1;
          j += PLACEHOLDER_LEN - 1;
        }
      }
    }
  }
  return 0;
}

/* Reads and checks all options. Returns MQGATE_OK with *out, or an error with *errmsg
 * naming the key (and its place in the file). */
static int read_config(const mqgate_host_api* api, const mqgate_options* options,
                       certauth_config** out, char** errmsg) {
  certauth_config* c;
  const char *domain = NULL, *problem;
  size_t i, count;
  int rc, type;
  text t;

  *out = NULL;
  for (i = 0; i < api->opt_count(options); i++) {
    const char* key = api->opt_key(options, i);
    if (key == NULL) break;
    if (strcmp(key, "uri_domain") == 0 || strcmp(key, "client_id_from_cert") == 0 ||
        strcmp(key, "allowed_topics") == 0)
      continue;
    text_init(&t);
    text_quoted_str(&t, key, 64);
    *errmsg = api->mprintf(
        "%s: unknown option %s (certauth knows uri_domain, client_id_from_cert, "
        "allowed_topics)",
        api->opt_location(options, key), t.buf);
    return MQGATE_ERR_CONFIG;
  }

  rc = api->opt_string(options, "uri_domain", &domain);
  if (rc == MQGATE_ERR_NOT_FOUND) {
    *errmsg = api->mprintf(
        "%s: uri_domain: missing; set it to the domain of the devices' SPIFFE URIs "
        "(spiffe://<uri_domain>/device/<id>), e.g. uri_domain = \"my.domain.name\"",
        api->opt_location(options, "uri_domain"));
    return MQGATE_ERR_CONFIG;
  }
  if (rc != MQGATE_OK) {
    *errmsg = api->mprintf(
        "%s: uri_domain: expected a string (a DNS name such as "
        "\"my.domain.name\"), not %s",
        api->opt_location(options, "uri_domain"), type_name(api->opt_type(options, "uri_domain")));
    return MQGATE_ERR_CONFIG;
  }
  if (domain[0] == '\0') {
    *errmsg = api->mprintf(
        "%s: uri_domain: must not be empty; set it to the domain of the devices' SPIFFE "
        "URIs, e.g. uri_domain = \"my.domain.name\"",
        api->opt_location(options, "uri_domain"));
    return MQGATE_ERR_CONFIG;
  }
  problem = dns_name_problem(domain);
  if (problem != NULL) {
    text_init(&t);
    text_quoted_str(&t, domain, 128);
    *errmsg = api->mprintf(
        "%s: uri_domain: %s is not a valid DNS name (%s), e.g. "
        "\"my.domain.name\"",
        api->opt_location(options, "uri_domain"), t.buf, problem);
    return MQGATE_ERR_CONFIG;
  }

  c = (certauth_config*)calloc(1, sizeof *c);
  if (c == NULL) return MQGATE_ERR_NOMEM;
  c->uri_domain_len = strlen(domain);
  c->uri_domain = (char*)malloc(c->uri_domain_len + 1);
  if (c->uri_domain == NULL) {
    config_free(c);
    return MQGATE_ERR_NOMEM;
  }
  for (i = 0; i <= c->uri_domain_len; i++) {
    char ch = domain[i];
    c->uri_domain[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
  }

  rc = api->opt_boolean(options, "client_id_from_cert", &c->client_id_from_cert);
  if (rc == MQGATE_ERR_NOT_FOUND) {
    c->client_id_from_cert = 0;
  } else if (rc != MQGATE_OK) {
    *errmsg = api->mprintf("%s: client_id_from_cert: expected true or false, not %s",
                           api->opt_location(options, "client_id_from_cert"),
                           type_name(api->opt_type(options, "client_id_from_cert")));
    config_free(c);
    return MQGATE_ERR_CONFIG;
  }

  type = api->opt_type(options, "allowed_topics");
  if (type != MQGATE_OPT_MISSING) {
    if (type != MQGATE_OPT_STRING_ARRAY ||
        api->opt_array_size(options, "allowed_topics", &count) != MQGATE_OK) {
      *errmsg = api->mprintf(
          "%s: allowed_topics: expected an array of strings (topic filters, e.g. "
          "[\"devices/{device_id}/#\"]), not %s",
          api->opt_location(options, "allowed_topics"), type_name(type));
      config_free(c);
      return MQGATE_ERR_CONFIG;
    }
    c->restrict_topics = 1;
    if (count > 0) {
      c->patterns = (pattern*)calloc(count, sizeof(pattern));
      if (c->patterns == NULL) {
        config_free(c);
        return MQGATE_ERR_NOMEM;
      }
    }
    for (i = 0; i < count; i++) {
      const char *src = NULL, *why = NULL;
      if (api->opt_array_string(options, "allowed_topics", i, &src) != MQGATE_OK || src == NULL) {
        *errmsg = api->mprintf("%s: allowed_topics[%lu]: cannot be read",
                               api->opt_location(options, "allowed_topics"), (unsigned long)i);
        config_free(c);
        return MQGATE_ERR_CONFIG;
      }
      c->pattern_count = i + 1; /* so config_free frees a half-built entry */
      if (compile_pattern(src, &c->patterns[i], &why) != 0) {
        text_init(&t);
        text_quoted_str(&t, src, 128);
        *errmsg = api->mprintf(
            "%s: allowed_topics[%lu]: %s is not a valid topic filter "
            "pattern: %s",
            api->opt_location(options, "allowed_topics"), (unsigned long)i, t.buf, why);
        config_free(c);
        return MQGATE_ERR_CONFIG;
      }
    }
  }
  *out = c;
  return MQGATE_OK;
}

static void log_config(const certauth* self) {
  const certauth_config* c = self->cfg;
  if (!c->restrict_topics) {
    self->api->log(self->plugin, MQGATE_LOG_INFO,
                   "uri_domain=%s client_id_from_cert=%s; topics not restricted", c->uri_domain,
                   c->client_id_from_cert ? "true" : "false");
  } else {
    self->api->log(self->plugin, MQGATE_LOG_INFO,
                   "uri_domain=%s client_id_from_cert=%s; allowed_topics: %lu pattern(s)",
                   c->uri_domain, c->client_id_from_cert ? "true" : "false",
                   (unsigned long)c->pattern_count);
    if (c->pattern_count == 0)
      self->api->log(self->plugin, MQGATE_LOG_WARNING,
                     "allowed_topics is empty: the clients certauth authenticates may "
                     "neither publish nor subscribe");
  }
}

/* ------------------------------------------------------------------------------ */
/* The certificate: URIs in the leaf's subjectAltName                              */
/* ------------------------------------------------------------------------------ */

typedef struct span {
  const unsigned char* p;
  size_t len;
} span;

typedef struct scan {
  const certauth_config* cfg;
  const char* client_id; /* NULL when the client id was generated */
  size_t client_id_len;

  int san_found;              /* a subjectAltName extension is present */
  size_t uris;                /* URI names seen */
  span some_uris[SHOW_ITEMS]; /* the first URIs, for reasons */
  size_t matching;            /* URIs of the form spiffe://<domain>/device/<id> */
  span ids[SHOW_ITEMS];       /* distinct device ids, first ones */
  size_t id_count;            /* entries in ids */
  int more_ids;               /* more distinct ids than ids holds */
  int client_matches;         /* some device id equals the client id */
  size_t claims;              /* URIs of the form spiffe://<domain>/claim/<batch> */
  span batch;                 /* the first claim's batch */
} scan;

/* If `uri` is exactly spiffe://<domain><path><id> (path "/device/" or "/claim/"), sets
 * *id and returns 1. <id> is one or more bytes, none of them '/', '?', '#' (a further
 * segment, a query or a fragment) or NUL. The scheme and the domain are compared byte
 * for byte (both lower case). */
static int spiffe_id_of(const unsigned char* uri, size_t len, const certauth_config* cfg,
                        const char* path, span* id) {
  static const char scheme[] = "spiffe://";
  const size_t scheme_len = sizeof scheme - 1, path_len = strlen(path);
  size_t head = scheme_len + cfg->uri_domain_len + path_len, i;
  if (len <= head) return 0;
  if (memcmp(uri, scheme, scheme_len) != 0) return 0;
  if (memcmp(uri + scheme_len, cfg->uri_domain, cfg->uri_domain_len) != 0) return 0;
  if (memcmp(uri + scheme_len + cfg->uri_domain_len, path, path_len) != 0) return 0;
  for (i = head; i < len; i++) {
    unsigned char c = uri[i];
    if (c == '/' || c == '?' || c == '#' || c == '\0') return 0;
  }
  id->p = uri + head;
  id->len = len - head;
  return 1;
}

static int device_id_of(const unsigned char* uri, size_t len, const certauth_config* cfg,
                        span* id) {
  return spiffe_id_of(uri, len, cfg, "/device/", id);
}

/* A claim certificate's batch (docs/provisioning.md): [A-Za-z0-9._-]{1,64}. */
static int claim_batch_of(const unsigned char* uri, size_t len, const certauth_config* cfg,
                          span* batch) {
  size_t i;
  if (!spiffe_id_of(uri, len, cfg, "/claim/", batch) || batch->len > 64) return 0;
  for (i = 0; i < batch->len; i++) {
    unsigned char c = batch->p[i];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
          c == '_' || c == '-'))
      return 0;
  }
  return 1;
}

static int span_eq(span a, span b) {
  return a.len == b.len && memcmp(a.p, b.p, a.len) == 0;
}

static void scan_uri(scan* s, const unsigned char* p, size_t len) {
  span id;
  size_t i;
  if (s->uris < SHOW_ITEMS) {
    s->some_uris[s->uris].p = p;
    s->some_uris[s->uris].len = len;
  }
  s->uris++;
  if (claim_batch_of(p, len, s->cfg, &id)) {
    if (s->claims++ == 0) s->batch = id;
    return;
  }
  if (!device_id_of(p, len, s->cfg, &id)) return;
  s->matching++;
  if (s->client_id != NULL && id.len == s->client_id_len && memcmp(id.p, s->client_id, id.len) == 0)
    s->client_matches = 1;
  for (i = 0; i < s->id_count; i++)
    if (span_eq(s->ids[i], id)) return;
  if (s->id_count < SHOW_ITEMS)
    s->ids[s->id_count++] = id;
  else
    s->more_ids = 1;
}

/* GeneralNames ::= SEQUENCE OF GeneralName; a URI is [6] IMPLICIT IA5String. */
static int scan_general_names(scan* s, unsigned char* p, const unsigned char* end) {
  size_t len;
  if (mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0)
    return -1;
  end = p + len;
  while (p < end) {
    unsigned char tag = *p++;
    if (mbedtls_asn1_get_len(&p, end, &len) != 0) return -1;
    if (tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_X509_SAN_UNIFORM_RESOURCE_IDENTIFIER))
      scan_uri(s, p, len);
    p += len;
  }
  return 0;
}

/* Walks the leaf's extensions (crt->v3_ext: Extensions ::= SEQUENCE OF Extension) and
 * scans every subjectAltName. mbedTLS 2.28 lists only some name types in
 * crt->subject_alt_names, so the extension is read here. Returns 0, or -1 if the DER
 * is malformed (mbedTLS accepted it, so this is defensive). */
static int scan_certificate(scan* s, const mbedtls_x509_crt* crt) {
  static const unsigned char oid_san[] = {0x55, 0x1d, 0x11}; /* 2.5.29.17 */
  unsigned char* p = crt->v3_ext.p;
  const unsigned char* end;
  size_t len;
  if (p == NULL || crt->v3_ext.len == 0) return 0; /* no extensions at all */
  end = p + crt->v3_ext.len;
  if (mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0)
    return -1;
  end = p + len;
  while (p < end) {
    unsigned char* ext_end;
    const unsigned char* oid;
    size_t oid_len;
    int critical = 0;
    if (mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0)
      return -1;
    ext_end = p + len;
    if (mbedtls_asn1_get_tag(&p, ext_end, &oid_len, MBEDTLS_ASN1_OID) != 0) return -1;
    oid = p;
    p += oid_len;
    if (p < ext_end && *p == MBEDTLS_ASN1_BOOLEAN &&
        mbedtls_asn1_get_bool(&p, ext_end, &critical) != 0)
      return -1;
    if (mbedtls_asn1_get_tag(&p, ext_end, &len, MBEDTLS_ASN1_OCTET_STRING) != 0) return -1;
    if (oid_len == sizeof oid_san && memcmp(oid, oid_san, sizeof oid_san) == 0) {
      s->san_found = 1;
      if (scan_general_names(s, p, p + len) != 0) return -1;
    }
    p = ext_end;
  }
  return 0;
}

/* ------------------------------------------------------------------------------ */
/* AUTHENTICATE                                                                    */
/* ------------------------------------------------------------------------------ */

/* "expected URI "spiffe://<domain>/device/<client id>"" into t. */
static void text_expected(text* t, const scan* s) {
  text_str(t, "expected URI ");
  if (s->client_id == NULL) {
    text_str(t, "spiffe://");
    text_str(t, s->cfg->uri_domain);
    text_str(t, "/device/<id>");
    return;
  }
  {
    text u;
    size_t prefix;
    text_init(&u);
    text_str(&u, "spiffe://");
    text_str(&u, s->cfg->uri_domain);
    text_str(&u, "/device/");
    prefix = u.len;
    text_put(&u, s->client_id, s->client_id_len);
    text_quoted(t, (const unsigned char*)u.buf, u.len, prefix + SHOW_ID);
  }
}

static void text_list(text* t, const span* items, size_t shown, size_t total, size_t max) {
  size_t i;
  for (i = 0; i < shown; i++) {
    if (i > 0) text_str(t, ", ");
    text_quoted(t, items[i].p, items[i].len, max);
  }
  if (total > shown) {
    text_str(t, " (+");
    text_size(t, total - shown);
    text_str(t, " more)");
  }
}

/* The certificate's distinct device ids (the first few). */
static void text_ids(text* t, const scan* s) {
  text_list(t, s->ids, s->id_count, s->id_count, SHOW_ID);
  if (s->more_ids) text_str(t, " and more");
}

static int deny(const certauth* self, mqgate_evt_authenticate* evt, const text* t) {
  evt->reason = self->api->strdup(t->buf);
  return MQGATE_DECISION_DENY;
}

/* Keeps the device id with the client for AUTHORIZE. */
static int remember_device(const certauth* self, mqgate_client* client, span id) {
  char* copy = (char*)malloc(id.len + 1);
  if (copy == NULL) return -1;
  memcpy(copy, id.p, id.len);
  copy[id.len] = '\0';
  /* libc's free: the host calls it when the client goes away, always before this
   * instance's shutdown (see client_set_data in mqgate_plugin.h). */
  if (self->api->client_set_data(client, self->plugin, copy, free) != MQGATE_OK) {
    free(copy);
    return -1;
  }
  return 0;
}

static int decide(const certauth* self, mqgate_evt_authenticate* evt, const scan* s) {
  text t;
  span client;
  text_init(&t);
  if (!s->san_found) {
    text_str(&t, "client certificate has no subjectAltName; ");
    text_expected(&t, s);
    return deny(self, evt, &t);
  }
  if (s->uris == 0) {
    text_str(&t, "client certificate has no URI in its subjectAltName; ");
    text_expected(&t, s);
    return deny(self, evt, &t);
  }
  if (s->matching == 0 && s->claims > 0) {
    /* A claim certificate (issue 24): it may only ask for its device certificate, and
     * only a provisioning plugin can let it in. Not ours to allow, nor to refuse. */
    text_str(&t, "claim certificate of batch ");
    text_quoted(&t, s->batch.p, s->batch.len, SHOW_ID);
    text_str(&t, ": not a device certificate; left to a provisioning plugin");
    evt->reason = self->api->strdup(t.buf);
    return MQGATE_DECISION_ABSTAIN;
  }
  if (s->matching == 0) {
    text_expected(&t, s);
    text_str(&t, ", the certificate's URIs are ");
    text_list(&t, s->some_uris, s->uris < SHOW_ITEMS ? s->uris : SHOW_ITEMS, s->uris, SHOW_URI);
    text_str(&t, " (none of the form spiffe://");
    text_str(&t, s->cfg->uri_domain);
    text_str(&t, "/device/<id>)");
    return deny(self, evt, &t);
  }
  if (s->client_id != NULL) {
    if (!s->client_matches) {
      text_str(&t, "client id ");
      text_quoted(&t, (const unsigned char*)s->client_id, s->client_id_len, SHOW_ID);
      text_str(&t, " is not the certificate's device id: ");
      text_expected(&t, s);
      text_str(&t, s->id_count > 1 ? ", the certificate names device ids "
                                   : ", the certificate names device id ");
      text_ids(&t, s);
      return deny(self, evt, &t);
    }
    client.p = (const unsigned char*)s->client_id;
    client.len = s->client_id_len;
    if (remember_device(self, evt->client, client) != 0) {
      text_str(&t, "out of memory");
      return deny(self, evt, &t);
    }
    return MQGATE_DECISION_ALLOW;
  }
  /* The client sent an empty client id; the broker generated one. */
  if (!s->cfg->client_id_from_cert) {
    text_str(&t, "empty client id: connect with the certificate's device id as client id (");
    text_ids(&t, s);
    text_str(&t, "), or enable client_id_from_cert");
    return deny(self, evt, &t);
  }
  if (s->id_count > 1) {
    text_str(&t, "empty client id and the certificate names several device ids (");
    text_ids(&t, s);
    text_str(&t, "): ambiguous, connect with one of them as client id");
    return deny(self, evt, &t);
  }
  if (!MQGATE_HAS_FIELD(evt, mqgate_evt_authenticate, assign_client_id)) {
    text_str(&t, "empty client id and this broker cannot assign client ids");
    return deny(self, evt, &t);
  }
  if (remember_device(self, evt->client, s->ids[0]) != 0) {
    text_str(&t, "out of memory");
    return deny(self, evt, &t);
  }
  evt->assign_client_id =
      (char*)self->api->mprintf("%.*s", (int)s->ids[0].len, (const char*)s->ids[0].p);
  if (evt->assign_client_id == NULL) {
    text_str(&t, "out of memory");
    return deny(self, evt, &t);
  }
  return MQGATE_DECISION_ALLOW;
}

/* Names the identity the session will belong to: the SPIFFE id and the issuer's name.
 * The issuer is part of it so that another CA trusted by the same listener cannot mint
 * a certificate for the same device id and take its session over; a device whose
 * certificate is renewed by the same CA keeps its identity. */
static int vouch(const certauth* self, mqgate_evt_authenticate* evt, const mbedtls_x509_crt* crt) {
  const char* device = (const char*)self->api->client_get_data(evt->client, self->plugin);
  char issuer[768];
  text t;
  text_init(&t);
  if (!MQGATE_HAS_FIELD(evt, mqgate_evt_authenticate, identity)) return MQGATE_DECISION_ALLOW;
  if (device == NULL || mbedtls_x509_dn_gets(issuer, sizeof issuer, &crt->issuer) < 0) {
    text_str(&t, "client certificate's issuer name is too long to name an identity");
    return deny(self, evt, &t);
  }
  evt->identity = self->api->mprintf("spiffe://%s/device/%s issuer=%s", self->cfg->uri_domain,
                                     device, issuer);
  if (evt->identity == NULL) {
    text_str(&t, "out of memory");
    return deny(self, evt, &t);
  }
  return MQGATE_DECISION_ALLOW;
}

static int on_authenticate(const certauth* self, mqgate_evt_authenticate* evt) {
  const mqgate_cert* leaf;
  mbedtls_x509_crt crt;
  scan s;
  text t;
  int ret, decision;

  text_init(&t);
  if (evt->peer_chain == NULL || evt->peer_chain_len == 0) {
    text_str(&t, evt->tls_version == NULL
                     ? "no client certificate: plain connection (certauth needs TLS with "
                       "a client certificate)"
                     : "no client certificate: the TLS client sent none");
    return deny(self, evt, &t);
  }
  leaf = &evt->peer_chain[0];
  if (leaf->der == NULL || leaf->der_len == 0) {
    text_str(&t, "client certificate is empty");
    return deny(self, evt, &t);
  }
  mbedtls_x509_crt_init(&crt);
  ret = mbedtls_x509_crt_parse_der(&crt, leaf->der, leaf->der_len);
  if (ret != 0) {
    char err[160];
    mbedtls_strerror(ret, err, sizeof err);
    mbedtls_x509_crt_free(&crt);
    text_str(&t, "client certificate cannot be parsed (");
    text_str(&t, err);
    text_str(&t, ")");
    return deny(self, evt, &t);
  }
  memset(&s, 0, sizeof s);
  s.cfg = self->cfg;
  if (!evt->client_id_generated && evt->client_id != NULL) {
    s.client_id = evt->client_id;
    s.client_id_len = strlen(evt->client_id);
  }
  if (scan_certificate(&s, &crt) != 0) {
    mbedtls_x509_crt_free(&crt);
    text_str(&t, "client certificate's extensions cannot be parsed");
    return deny(self, evt, &t);
  }
  decision = decide(self, evt, &s); /* uses spans into crt: free it afterwards */
  if (decision == MQGATE_DECISION_ALLOW) decision = vouch(self, evt, &crt);
  mbedtls_x509_crt_free(&crt);
  return decision;
}

/* ------------------------------------------------------------------------------ */
/* AUTHORIZE                                                                       */
/* ------------------------------------------------------------------------------ */

static int on_authorize(const certauth* self, mqgate_evt_authorize* evt) {
  const certauth_config* c = self->cfg;
  const char *id, *what;
  size_t id_len, topic_len, i;
  mqtt_topic_placeholder device;
  int as_filter;
  text t;

  if (!c->restrict_topics) return MQGATE_DECISION_ABSTAIN;
  id = (const char*)self->api->client_get_data(evt->client, self->plugin);
  if (id == NULL) return MQGATE_DECISION_ABSTAIN; /* not a client certauth let in */
  id_len = strlen(id);
  text_init(&t);
  if (evt->topic == NULL || evt->topic[0] == '\0') {
    text_str(&t, "no topic");
    evt->reason = self->api->strdup(t.buf);
    return MQGATE_DECISION_DENY;
  }
  if (evt->action == MQGATE_ACTION_PUBLISH) {
    as_filter = 0;
    what = "may not publish to this topic: it matches no pattern of allowed_topics";
  } else if (evt->action == MQGATE_ACTION_RECEIVE) {
    as_filter = 0;
    what =
        "may not receive retained messages of this topic: it matches no pattern of allowed_topics";
  } else if (evt->action == MQGATE_ACTION_SUBSCRIBE) {
    as_filter = 1;
    what = "may not subscribe to this filter: it is not within a pattern of allowed_topics";
  } else {
    text_str(&t, "unknown action ");
    text_size(&t, (size_t)(unsigned)evt->action);
    evt->reason = self->api->strdup(t.buf);
    return MQGATE_DECISION_DENY;
  }
  /* The topic rules are plugins/common/mqtt_topic.h's, the broker's own; certauth adds
   * only {device_id}, which stands for the id there, literally: a '+' or '#' in the id
   * is just a character, never a wildcard. */
  device.name = PLACEHOLDER;
  device.name_len = PLACEHOLDER_LEN;
  device.value = id;
  device.value_len = id_len;
  topic_len = strlen(evt->topic);
  for (i = 0; i < c->pattern_count; i++) {
    const pattern* pt = &c->patterns[i];
    const mqtt_topic_placeholder* ph = pt->has_placeholder ? &device : NULL;
    if (as_filter ? mqtt_topic_covers_with(pt->text, pt->len, evt->topic, topic_len, ph)
                  : mqtt_topic_matches_with(pt->text, pt->len, evt->topic, topic_len, ph))
      return MQGATE_DECISION_ALLOW;
  }
  text_str(&t, "device ");
  text_quoted(&t, (const unsigned char*)id, id_len, SHOW_ID);
  text_str(&t, " ");
  text_str(&t, what);
  if (c->pattern_count == 0) {
    text_str(&t, " (it is empty)");
  } else {
    text_str(&t, " ");
    for (i = 0; i < c->pattern_count && i < SHOW_ITEMS; i++) {
      if (i > 0) text_str(&t, ", ");
      text_quoted_str(&t, c->patterns[i].text, SHOW_URI);
    }
    if (c->pattern_count > SHOW_ITEMS) {
      text_str(&t, " (+");
      text_size(&t, c->pattern_count - SHOW_ITEMS);
      text_str(&t, " more)");
    }
  }
  evt->reason = self->api->strdup(t.buf);
  return MQGATE_DECISION_DENY;
}

/* ------------------------------------------------------------------------------ */
/* Events, init, shutdown                                                          */
/* ------------------------------------------------------------------------------ */

/* The decisions above, as ABI 2 verdicts. */
static int verdict(int decision) {
  switch (decision) {
    case MQGATE_DECISION_ALLOW:
      return MQGATE_VERDICT_ALLOW;
    case MQGATE_DECISION_ABSTAIN:
      return MQGATE_VERDICT_ABSTAIN;
    default:
      return MQGATE_VERDICT_DENY;
  }
}

static int on_event(int event, void* event_data, void* instance) {
  certauth* self = (certauth*)instance;
  if (event == MQGATE_EVT_AUTHENTICATE)
    return verdict(on_authenticate(self, (mqgate_evt_authenticate*)event_data));
  if (event == MQGATE_EVT_AUTHORIZE)
    return verdict(on_authorize(self, (mqgate_evt_authorize*)event_data));
  if (event == MQGATE_EVT_RELOAD) {
    mqgate_evt_reload* evt = (mqgate_evt_reload*)event_data;
    certauth_config* next = NULL;
    int rc = read_config(self->api, evt->options, &next, &evt->errmsg);
    if (rc != MQGATE_OK) return rc; /* keep the old options */
    config_free(self->cfg);
    self->cfg = next;
    log_config(self);
    return MQGATE_OK;
  }
  return MQGATE_OK;
}

MQGATE_PLUGIN_EXPORT int mqgate_plugin_init(mqgate_plugin* plugin, const mqgate_host_api* api,
                       const mqgate_options* options, void** instance, char** errmsg) {
  certauth* self;
  certauth_config* cfg = NULL;
  int rc = read_config(api, options, &cfg, errmsg);
  if (rc != MQGATE_OK) return rc;
  self = (certauth*)calloc(1, sizeof *self);
  if (self == NULL) {
    config_free(cfg);
    return MQGATE_ERR_NOMEM;
  }
  self->api = api;
  self->plugin = plugin;
  self->cfg = cfg;
  if (api->register_event(plugin, MQGATE_EVT_AUTHENTICATE, on_event) != MQGATE_OK ||
      api->register_event(plugin, MQGATE_EVT_AUTHORIZE, on_event) != MQGATE_OK ||
      api->register_event(plugin, MQGATE_EVT_RELOAD, on_event) != MQGATE_OK) {
    *errmsg = api->mprintf("cannot register the plugin's event callbacks");
    config_free(cfg);
    free(self);
    return MQGATE_ERR_PLUGIN;
  }
  log_config(self);
  *instance = self;
  return MQGATE_OK;
}

MQGATE_PLUGIN_EXPORT void mqgate_plugin_shutdown(void* instance) {
  certauth* self = (certauth*)instance;
  if (self == NULL) return;
  config_free(self->cfg);
  free(self);
}
