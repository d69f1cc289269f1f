/*
 * mqgate_plugin.h -- the mqgate plugin ABI, version 1.
 *
 * This header is the whole contract between the mqgate broker and its plugins. A
 * plugin is a shared object (.so) written in C (or anything with a C ABI) that
 * decides who may connect and what they may publish or subscribe to, and may watch
 * clients come and go. The header is C99, self-contained (only <stddef.h> and
 * <stdint.h>), and names no type of the broker's TLS or event libraries: certificates
 * arrive as DER bytes.
 *
 * ## Lifecycle
 *
 * A plugin exports three functions (see "Exports" at the end):
 *
 *   mqgate_plugin_version()   required: agree on an ABI version with the broker;
 *   mqgate_plugin_init()      required: read options, register event callbacks,
 *                             return per-instance state;
 *   mqgate_plugin_shutdown()  optional: free that state.
 *
 * The broker loads every plugin named in its configuration before it listens. Each
 * `[plugins.<name>]` table is one *instance*; the same .so may be configured twice
 * under two names, and gets two init calls with two sets of options and keeps two
 * states (the .so is loaded once, so its global variables are shared: keep state in
 * the instance). If any step fails the broker does not start, and says which plugin,
 * which file and why.
 *
 * ## Decisions and how they combine
 *
 * Authentication (MQGATE_EVT_AUTHENTICATE, once per CONNECT): every auth plugin of the
 * client's listener is asked, in configuration order. ABSTAIN is ignored; any DENY
 * denies; at least one ALLOW is needed; if all abstain the client is denied. A denied
 * client gets CONNACK return code 5 (not authorised) and is disconnected; the log names
 * the plugin that denied and its reason. (A listener with no auth plugin at all lets
 * every client in; the broker warns about it at start-up.)
 *
 * Authorisation (MQGATE_EVT_AUTHORIZE, per PUBLISH, will, SUBSCRIBE filter and
 * retained delivery): any DENY denies; otherwise the action is allowed. A denied
 * SUBSCRIBE filter gets return code 0x80 in the SUBACK; a denied PUBLISH is not
 * forwarded (QoS 1/2 are still acknowledged: MQTT 3.1.1 has no negative ack).
 *
 * A callback that returns anything but MQGATE_DECISION_ALLOW, _DENY or _ABSTAIN is
 * treated as DENY and logged.
 *
 * ## Threading
 *
 * Every callback runs on the broker's single event-loop thread, one at a time. A
 * callback must not block: no network or disk I/O that can wait, no sleeping, no
 * heavy computation. Every host API function may be called only from inside a
 * callback or from init/shutdown, on that thread. A plugin that needs slow I/O (a
 * remote user database, say) must keep its answers in memory and refresh them from a
 * thread of its own; answering a decision later ("deferred" decisions, completed from
 * any thread) is planned for ABI version 2 and is not part of version 1.
 *
 * ## Memory
 *
 * Pointers the host passes (event fields, option strings, certificates) are valid
 * only during the call unless stated otherwise; copy what you keep. Strings a plugin
 * hands to the host (reasons, error messages, client ids) must be allocated with
 * api->mprintf or api->strdup; the host frees them.
 *
 * ## Growing without breaking
 *
 * Structs start with their size (`struct_size`) and end with reserved fields. New
 * members are only ever added at the end, before the reserved fields, and enum values
 * are never renumbered. The host zero-fills every event struct before a call, so a
 * plugin built against an older header simply does not see newer fields; a plugin
 * built against a newer header checks MQGATE_HAS_FIELD() before reading a field the
 * running broker might not have, and MQGATE_API_HAS() before calling a newer host
 * function.
 */
#ifndef MQGATE_PLUGIN_H
#define MQGATE_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------ */
/* Versions                                                                        */
/* ------------------------------------------------------------------------------ */

/* The ABI version this header describes. Bumped only for incompatible changes;
 * compatible additions (new events, new trailing fields, new host functions) keep
 * the number. Since: 1. */
#define MQGATE_PLUGIN_ABI_VERSION 1

/* ------------------------------------------------------------------------------ */
/* Return codes of plugin and host functions (0 or negative)                       */
/* ------------------------------------------------------------------------------ */

/* X(name, value, text). The host's api->strerror() returns the text. */
#define MQGATE_ERR_MAP(X)                                                    \
  X(MQGATE_OK, 0, "success")                                                 \
  X(MQGATE_ERR_INVALID, -1, "invalid argument")                              \
  X(MQGATE_ERR_NOT_FOUND, -2, "no such option or item")                      \
  X(MQGATE_ERR_TYPE, -3, "option has another type")                          \
  X(MQGATE_ERR_NOMEM, -4, "out of memory")                                   \
  X(MQGATE_ERR_CONFIG, -5, "invalid plugin configuration")                   \
  X(MQGATE_ERR_UNSUPPORTED, -6, "not supported by this broker")              \
  X(MQGATE_ERR_PLUGIN, -7, "plugin failure")

enum mqgate_error {
#define MQGATE_X_ENUM(name, value, text) name = value,
  MQGATE_ERR_MAP(MQGATE_X_ENUM)
#undef MQGATE_X_ENUM
  MQGATE_ERR_LAST_ = -8 /* not a code; keeps the list's trailing comma legal in C99 */
};

/* ------------------------------------------------------------------------------ */
/* Decisions (returned by AUTHENTICATE and AUTHORIZE callbacks)                     */
/* ------------------------------------------------------------------------------ */

/* Kept apart from the error codes above. A zero return ("nothing to say") abstains.
 * Since: 1. */
enum mqgate_decision {
  MQGATE_DECISION_ABSTAIN = 0, /* no opinion: let the other plugins decide */
  MQGATE_DECISION_ALLOW = 1,   /* this plugin allows it */
  MQGATE_DECISION_DENY = 2     /* this plugin refuses it (final: any deny denies) */
};

/* What an AUTHORIZE event asks about. Since: 1. */
enum mqgate_action {
  MQGATE_ACTION_PUBLISH = 1,  /* a PUBLISH, or a will about to be published */
  MQGATE_ACTION_SUBSCRIBE = 2 /* a SUBSCRIBE filter, or a retained message about to be
                                 delivered to a new subscriber (its topic name) */
};

/* Log levels for api->log. Since: 1. */
enum mqgate_log_level {
  MQGATE_LOG_ERROR = 0,
  MQGATE_LOG_WARNING = 1,
  MQGATE_LOG_INFO = 2,
  MQGATE_LOG_DEBUG = 3
};

/* Types of option values (api->opt_type). Since: 1. */
enum mqgate_option_type {
  MQGATE_OPT_MISSING = 0,      /* no such key */
  MQGATE_OPT_STRING = 1,       /* "text" */
  MQGATE_OPT_INTEGER = 2,      /* 42 (64-bit signed) */
  MQGATE_OPT_BOOLEAN = 3,      /* true / false */
  MQGATE_OPT_STRING_ARRAY = 4, /* ["a", "b"] (also the empty array []) */
  MQGATE_OPT_OTHER = 5         /* anything else (float, date, table, mixed array) */
};

/* Events a plugin can register a callback for. Numbers are never reused.
 * Since: 1. */
enum mqgate_event {
  MQGATE_EVT_AUTHENTICATE = 1, /* mqgate_evt_authenticate; returns a decision */
  MQGATE_EVT_AUTHORIZE = 2,    /* mqgate_evt_authorize; returns a decision */
  MQGATE_EVT_CONNECTED = 3,    /* mqgate_evt_connected; returns MQGATE_OK */
  MQGATE_EVT_DISCONNECTED = 4, /* mqgate_evt_disconnected; returns MQGATE_OK */
  MQGATE_EVT_RELOAD = 5,       /* mqgate_evt_reload; returns MQGATE_OK or an error */
  MQGATE_EVT_TICK = 6          /* mqgate_evt_tick, once a second; returns MQGATE_OK */
};

/* ------------------------------------------------------------------------------ */
/* Opaque handles                                                                  */
/* ------------------------------------------------------------------------------ */

/* One plugin instance, as the host knows it. Passed to init; give it back to
 * api->register_event, api->log and the per-client data functions. Valid until
 * shutdown returns. */
typedef struct mqgate_plugin mqgate_plugin;

/* One connected (or connecting) client. Valid during the event it comes with; a
 * plugin may keep it from CONNECTED until its DISCONNECTED event returns. */
typedef struct mqgate_client mqgate_client;

/* The instance's options: its TOML table minus the keys the host uses (`module`,
 * `path`). Read them with the api->opt_* functions. Valid during init and reload. */
typedef struct mqgate_options mqgate_options;

/* ------------------------------------------------------------------------------ */
/* Helpers                                                                         */
/* ------------------------------------------------------------------------------ */

/* True if `ptr` (a pointer to an event struct of type `type`) is large enough to have
 * `field`: use before reading a field added after the version you rely on. */
#define MQGATE_HAS_FIELD(ptr, type, field) \
  ((ptr)->struct_size >= offsetof(type, field) + sizeof(((type *)0)->field))

/* True if the running host provides api->`fn` (non-NULL and inside its table). */
#define MQGATE_API_HAS(api, fn)                                                      \
  ((api)->struct_size >= offsetof(mqgate_host_api, fn) + sizeof((api)->fn) && \
   (api)->fn != NULL)

/* One DER-encoded X.509 certificate. */
typedef struct mqgate_cert {
  const uint8_t *der; /* the certificate's DER bytes */
  size_t der_len;     /* their length */
} mqgate_cert;

/* ------------------------------------------------------------------------------ */
/* Event structs                                                                   */
/* ------------------------------------------------------------------------------ */

/* MQGATE_EVT_AUTHENTICATE: a client sent CONNECT. Return a decision.
 * Since: 1. */
typedef struct mqgate_evt_authenticate {
  uint32_t struct_size;       /* sizeof this struct as the host built it */
  mqgate_client *client;      /* the client (api->client_* work on it) */
  const char *client_id;      /* UTF-8, NUL-terminated, no NUL inside; if the client
                                 sent an empty id this is the one the broker generated */
  int client_id_generated;    /* 1 if the client sent an empty id (clean session) */
  const char *username;       /* UTF-8, NUL-terminated; NULL if none was sent */
  const uint8_t *password;    /* raw bytes (may hold NULs); NULL if none was sent */
  size_t password_len;        /* length of password */
  int protocol_level;         /* 4 for MQTT 3.1.1, 3 for MQTT 3.1 */
  const char *listener;       /* the listener's name from the configuration */
  const char *peer_address;   /* "192.0.2.1:51000" or "[2001:db8::1]:51000" */
  const mqgate_cert *peer_chain; /* TLS only: the client's certificate chain as
                                    verified against the listener's cafile, leaf
                                    first; NULL when there is none */
  size_t peer_chain_len;      /* number of certificates in peer_chain (0 if none) */
  const char *tls_version;    /* e.g. "TLSv1.2"; NULL on a plain connection */
  const char *tls_cipher;     /* e.g. "TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256"; NULL
                                 on a plain connection */
  char *reason;               /* out, optional: why (logged by the host, which frees
                                 it); allocate with api->mprintf */
  char *assign_client_id;     /* out, optional: a client id for this client instead of
                                 the generated one. Honoured only when
                                 client_id_generated is 1 and the final decision is
                                 ALLOW; allocate with api->mprintf/strdup */
  char *identity;             /* out, optional (since broker 0.2; the first reserved
                                 slot of ABI 1, so older hosts ignore it): the stable
                                 identity this plugin vouches for, e.g. a username or a
                                 certificate's subject. A persistent session belongs
                                 to the identity that created it: a client with the
                                 same client id but another identity is refused
                                 (CONNACK 2). The host prefixes it with the instance
                                 name, so plugins cannot forge each other's
                                 identities. Used from the first plugin that ALLOWs and
                                 sets one; if none does, the host uses
                                 "<listener's auth plugins>:user:<username>" or
                                 "<listener's auth plugins>:anonymous". At most 131072
                                 bytes of UTF-8; allocate with api->mprintf/strdup */
  void *reserved[3];          /* zero; for future use */
} mqgate_evt_authenticate;

/* MQGATE_EVT_AUTHORIZE: a connected client wants to publish or subscribe. Return a
 * decision. Since: 1. */
typedef struct mqgate_evt_authorize {
  uint32_t struct_size;  /* sizeof this struct as the host built it */
  mqgate_client *client; /* who */
  int action;            /* an enum mqgate_action */
  const char *topic;     /* PUBLISH: the topic name; SUBSCRIBE: the filter (or, for a
                            retained delivery, the message's topic name); UTF-8,
                            NUL-terminated */
  int qos;               /* 0, 1 or 2: the message's QoS, or the requested QoS */
  int retain;            /* 1 if a retained publish or a retained delivery */
  char *reason;          /* out, optional: why (logged); allocate with api->mprintf */
  void *reserved[4];     /* zero; for future use */
} mqgate_evt_authorize;

/* MQGATE_EVT_CONNECTED: CONNACK 0 was sent. Since: 1. */
typedef struct mqgate_evt_connected {
  uint32_t struct_size;  /* sizeof this struct as the host built it */
  mqgate_client *client; /* the client, valid until its DISCONNECTED event returns */
  int session_present;   /* 1 if a stored session was resumed */
  void *reserved[4];     /* zero; for future use */
} mqgate_evt_connected;

/* MQGATE_EVT_DISCONNECTED: a connected client went away (for any reason). The
 * client handle becomes invalid when the callback returns. Since: 1. */
typedef struct mqgate_evt_disconnected {
  uint32_t struct_size;  /* sizeof this struct as the host built it */
  mqgate_client *client; /* the client */
  const char *reason;    /* e.g. "client sent DISCONNECT", "keep-alive timeout" */
  void *reserved[4];     /* zero; for future use */
} mqgate_evt_disconnected;

/* MQGATE_EVT_RELOAD: the broker got SIGHUP and re-read its configuration. `options`
 * is this instance's new table. Return MQGATE_OK, or an error (and set *errmsg) to
 * keep running on the old options; the host logs it. Since: 1. */
typedef struct mqgate_evt_reload {
  uint32_t struct_size;          /* sizeof this struct as the host built it */
  const mqgate_options *options; /* the new options */
  char *errmsg;                  /* out, optional: why the reload failed (mprintf) */
  void *reserved[4];             /* zero; for future use */
} mqgate_evt_reload;

/* MQGATE_EVT_TICK: once a second. Since: 1. */
typedef struct mqgate_evt_tick {
  uint32_t struct_size; /* sizeof this struct as the host built it */
  uint64_t now_ms;      /* monotonic milliseconds (not wall-clock time) */
  void *reserved[4];    /* zero; for future use */
} mqgate_evt_tick;

/* The callback for every event. `event` is an enum mqgate_event, `event_data` points
 * to that event's struct, `instance` is what init stored in *instance. Returns a
 * decision (AUTHENTICATE, AUTHORIZE) or MQGATE_OK / an error code (others). */
typedef int (*mqgate_event_cb)(int event, void *event_data, void *instance);

/* ------------------------------------------------------------------------------ */
/* Host API: services the broker offers, passed to init                            */
/* ------------------------------------------------------------------------------ */

/* Members are only ever appended. Check MQGATE_API_HAS() before calling a member
 * newer than the ABI version you target. Since: 1 (all members below). */
typedef struct mqgate_host_api {
  size_t struct_size; /* sizeof this struct in the running broker */
  int abi_version;    /* the ABI version agreed for this plugin */
  const char *broker_version; /* e.g. "0.1.0" */

  /* Registers `cb` for `event` (an enum mqgate_event). Call from init only. One
   * callback per event per instance; registering again replaces it.
   * Returns MQGATE_OK, MQGATE_ERR_UNSUPPORTED for an event this broker does not
   * have, MQGATE_ERR_INVALID for a NULL callback or when called outside init. */
  int (*register_event)(mqgate_plugin *plugin, int event, mqgate_event_cb cb);

  /* Writes one line to the broker's log at `level` (enum mqgate_log_level), tagged
   * with the plugin instance's name. printf-style. Never log secrets. */
  void (*log)(mqgate_plugin *plugin, int level, const char *format, ...)
#if defined(__GNUC__)
      __attribute__((format(printf, 3, 4)))
#endif
      ;

  /* Allocates a formatted string the host will free (for reason/errmsg/client-id
   * fields). Returns NULL if out of memory. */
  char *(*mprintf)(const char *format, ...)
#if defined(__GNUC__)
      __attribute__((format(printf, 1, 2)))
#endif
      ;
  /* Same for a plain copy of `s` (NULL gives NULL). */
  char *(*strdup)(const char *s);
  /* Frees a string from mprintf/strdup that the plugin did not hand over. */
  void (*free)(void *p);
  /* The text of an MQGATE_* code. */
  const char *(*strerror)(int code);

  /* --- options (valid during init and reload) --------------------------------- */
  /* Number of keys; and the key at `index` (0-based, in file order), NULL past the
   * end. Use them to refuse keys you do not know. */
  size_t (*opt_count)(const mqgate_options *options);
  const char *(*opt_key)(const mqgate_options *options, size_t index);
  /* The type of `key`'s value (enum mqgate_option_type). */
  int (*opt_type)(const mqgate_options *options, const char *key);
  /* Value getters. Return MQGATE_OK and set *out, MQGATE_ERR_NOT_FOUND if the key is
   * absent, MQGATE_ERR_TYPE if it holds another type. Strings stay valid until init
   * or the reload callback returns. */
  int (*opt_string)(const mqgate_options *options, const char *key, const char **out);
  int (*opt_integer)(const mqgate_options *options, const char *key, int64_t *out);
  int (*opt_boolean)(const mqgate_options *options, const char *key, int *out);
  /* A string array: its length, then each item. */
  int (*opt_array_size)(const mqgate_options *options, const char *key, size_t *out);
  int (*opt_array_string)(const mqgate_options *options, const char *key, size_t index,
                          const char **out);
  /* Where `key` is in the configuration file ("/etc/mqgate.toml:12:1"), for error
   * messages; the instance's table if the key is absent. Valid like strings above. */
  const char *(*opt_location)(const mqgate_options *options, const char *key);

  /* --- clients (valid while the client handle is) ------------------------------ */
  const char *(*client_id)(const mqgate_client *client);
  const char *(*client_username)(const mqgate_client *client); /* NULL if none */
  const char *(*client_listener)(const mqgate_client *client);
  const char *(*client_peer_address)(const mqgate_client *client);
  /* The verified certificate chain, leaf first, as in the AUTHENTICATE event; sets
   * *count to 0 (and returns NULL) for a client without one. */
  const mqgate_cert *(*client_peer_chain)(const mqgate_client *client, size_t *count);
  /* Attaches plugin data to a client, one slot per plugin instance. `free_fn` (may be
   * NULL) is called with `data` when the client goes away (after its DISCONNECTED
   * event, and always before this instance's shutdown) or when the slot is set again.
   * Returns MQGATE_OK, or MQGATE_ERR_NOMEM / MQGATE_ERR_INVALID, in which case `data`
   * stays the plugin's to free. */
  int (*client_set_data)(mqgate_client *client, mqgate_plugin *plugin, void *data,
                         void (*free_fn)(void *data));
  /* The data attached by this instance, or NULL. */
  void *(*client_get_data)(const mqgate_client *client, mqgate_plugin *plugin);

  /* --- MQTT helpers --------------------------------------------------------------- */
  /* 1 if topic filter `filter` matches topic name `topic` by MQTT 3.1.1 rules (a
   * leading wildcard does not match a topic starting with '$'), else 0. */
  int (*topic_matches)(const char *filter, const char *topic);

  /* --- since broker 0.2 (check with MQGATE_API_HAS) ------------------------------- */
  /* The identity that owns the client's session (see mqgate_evt_authenticate's
   * `identity`, with the host's instance prefix), e.g. "certauth:x509:...". Valid
   * from the CONNECTED event until DISCONNECTED returns; NULL before. */
  const char *(*client_identity)(const mqgate_client *client);
} mqgate_host_api;

/* ------------------------------------------------------------------------------ */
/* Exports: what a plugin defines                                                  */
/* ------------------------------------------------------------------------------ */

/* Required. The broker offers the ABI versions it can host (`supported`, newest
 * first); return the one you were built for, or -1 if none is. Use
 * MQGATE_PLUGIN_DECLARE_VERSION() instead of writing it by hand. */
int mqgate_plugin_version(int supported_count, const int *supported);

/* Required. Create an instance: read `options` through `api`, register callbacks with
 * api->register_event(plugin, ...), and store your state in *instance (it is passed
 * to every callback and to shutdown). Return MQGATE_OK, or an error code and
 * optionally *errmsg (allocated with api->mprintf), e.g. naming an option key and
 * what it should be; the broker then unregisters your callbacks, calls no shutdown
 * for this instance, and stops with your message. `api` stays valid until shutdown
 * returns: keep the pointer. */
int mqgate_plugin_init(mqgate_plugin *plugin, const mqgate_host_api *api,
                       const mqgate_options *options, void **instance, char **errmsg);

/* Defined by MQGATE_PLUGIN_DECLARE_VERSION(): the ABI version the plugin was built
 * for, so the broker can name it when it has to refuse the plugin. */
extern const int mqgate_plugin_abi_version;

/* Optional. Free the instance's state; called once per successful init, when the
 * broker stops. No callback runs after it. */
void mqgate_plugin_shutdown(void *instance);

/* Defines mqgate_plugin_version() for a plugin built for ABI version `v`, and a data
 * symbol the broker reads to explain a mismatch. Use once, at file scope. */
#define MQGATE_PLUGIN_DECLARE_VERSION(v)                                      \
  const int mqgate_plugin_abi_version = (v);                                  \
  int mqgate_plugin_version(int supported_count, const int *supported) {      \
    int i;                                                                    \
    for (i = 0; i < supported_count; i++) {                                   \
      if (supported[i] == (v)) return (v);                                    \
    }                                                                         \
    return -1;                                                                \
  }

#ifdef __cplusplus
}
#endif

#endif /* MQGATE_PLUGIN_H */
