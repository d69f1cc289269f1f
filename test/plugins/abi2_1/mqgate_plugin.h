/*
 * mqgate_plugin.h -- the mqgate plugin ABI, version 2 (the broker also hosts version 1).
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
 * client gets CONNACK return code 5 (not authorised), or 4 (bad user name or password)
 * when the first denying ABI 2 plugin sets `connack_code` so, and is disconnected; the
 * log names the plugin that denied and its reason. (A listener with no auth plugin at all lets
 * every client in; the broker warns about it at start-up.)
 *
 * Authorisation (MQGATE_EVT_AUTHORIZE, per PUBLISH, will, SUBSCRIBE filter and
 * retained delivery): any DENY denies; otherwise the action is allowed. A denied
 * SUBSCRIBE filter gets return code 0x80 in the SUBACK; a denied PUBLISH is not
 * forwarded (QoS 1/2 are still acknowledged: MQTT 3.1.1 has no negative ack).
 *
 * When several plugins ALLOW and more than one assigns a client id or vouches for an
 * identity, the first one (in configuration order) that ALLOWs with one wins; later
 * ones are ignored.
 *
 * ABI 1 callbacks return an enum mqgate_decision (0 is ABSTAIN, so a stray MQGATE_OK
 * abstains). ABI 2 callbacks return an enum mqgate_verdict instead, whose values are
 * neither 0 nor an error code: a callback that returns MQGATE_OK or an error by
 * mistake is caught. Anything that is not a valid answer for the plugin's ABI
 * version is treated as DENY and logged.
 *
 * ## Deferred decisions (ABI 2)
 *
 * An ABI 2 plugin may answer AUTHENTICATE, and AUTHORIZE for MQGATE_ACTION_PUBLISH
 * (a client's PUBLISH, not a will: evt->deferrable says which) and
 * MQGATE_ACTION_SUBSCRIBE, later: inside the callback it calls api->defer() to get a
 * token, returns MQGATE_VERDICT_DEFER, and later calls api->complete(token, ...)
 * exactly once, from any thread. Meanwhile the client waits without blocking the
 * broker: its next packets are held, in order, until the decision is in (a deferred
 * PUBLISH is acknowledged when it is decided). The plugins after the deferring one
 * in the chain are asked once it has answered. A decision that does not arrive
 * within the broker's `auth_timeout` (seconds, a top-level configuration key,
 * default 10) counts as DENY. Completing a token whose decision has timed out or
 * whose client went away is harmless: the host ignores it. A token must be completed
 * even then (the host frees it only when both it and the plugin are done with it);
 * calling complete twice on one token is an error.
 *
 * ## MQTT 5.0 (since broker 0.3, ABI 2)
 *
 * AUTHENTICATE reports protocol_level 5 for an MQTT 5.0 client and, in fields appended
 * after its first `reserved` array (test MQGATE_HAS_FIELD), the CONNECT's user
 * properties (in order) and its Authentication Method and Data. A plugin that denies
 * may choose the MQTT 5 reason code (`reason_code`: a legal CONNACK failure code such
 * as 0x86 bad user name or password, 0x87 not authorised, 0x8A banned, 0x8C bad
 * authentication method, 0x9F connection rate exceeded; anything else is logged and
 * sent as 0x87) and a `reason_string` for the client. AUTHORIZE denials likewise: a
 * PUBACK/PUBREC code (0x80, 0x83, 0x87, 0x90, 0x97, 0x99) or a SUBACK code (0x80,
 * 0x83, 0x87, 0x8F, 0x97, 0x9E, 0xA1, 0xA2); others become 0x87. MQTT 3.1.1 clients
 * get the nearest 3.1.1 code: CONNACK 1 for 0x84, 2 for 0x85, 3 for 0x88/0x89, 4 for
 * 0x86/0x8C, 5 otherwise; SUBACK 0x80. The reason string goes to 5.0 clients as the
 * Reason String property: on CONNACK always, on PUBACK/PUBREC/SUBACK only if the
 * client did not set Request Problem Information to 0 [MQTT-3.1.2-29]; strings that
 * are not valid UTF-8, longer than 256 bytes or that would exceed the client's
 * Maximum Packet Size are dropped. The first denying plugin's code and string are
 * sent. The `reason` fields stay what they were: for the broker's log only.
 *
 * ## Enhanced authentication (MQTT 5.0 section 4.12; since broker 0.3, ABI 2)
 *
 * A plugin offers an authentication method by calling api->register_auth_method()
 * during init (it must also register AUTHENTICATE). A 5.0 client whose CONNECT names
 * an Authentication Method is asked about only by the listener's AUTHENTICATE plugins
 * that registered that method, in configuration order, with the usual rules (any DENY
 * denies, at least one ALLOW is needed); the listener's other plugins are not asked.
 * If none registered it the client gets CONNACK 0x8C (bad authentication method).
 *
 * A plugin answers the first step (`auth_step` 0, `auth_data` from CONNECT) with
 * ALLOW or DENY, or with MQGATE_VERDICT_CONTINUE and `auth_data_out` (allocated with
 * api->alloc): the broker sends AUTH 0x18 with the method and that data, and when the
 * client answers with AUTH 0x18 it asks the same plugin again (`auth_step` 1, 2, ...)
 * with the client's data. Keep the exchange's state with api->client_set_data. The
 * final ALLOW may carry `auth_data_out` too (sent in the CONNACK's Authentication
 * Data); a DENY's `reason_code` (default 0x87) goes in the CONNACK. The broker bounds
 * the exchange: at most 16 CONTINUEs, 65535 bytes of data per step, and the whole
 * exchange within connect_timeout plus, for deferred steps, auth_timeout each; a
 * client that breaks the protocol (another packet, another method) is closed.
 * Deferral works in every step (api->complete takes the same out fields through
 * mqgate_completion, and MQGATE_VERDICT_CONTINUE).
 *
 * Re-authentication [4.12.1]: a connected client that used enhanced authentication
 * may send AUTH 0x19 with the same method: the same plugins get AUTHENTICATE again with
 * `reauthenticate` 1 (and `auth_step` 0, 1, ...) while the session goes on. ALLOW:
 * the broker sends AUTH 0x00 (with `auth_data_out`, if any); DENY: DISCONNECT with the
 * reason code (default 0x87). Identities and client ids set then are ignored: a session
 * keeps the identity it was created by. AUTH from a client that did not use enhanced
 * authentication, with another method, or out of turn is a Protocol Error (0x82).
 * The broker never logs Authentication Data.
 *
 * ## Reserved fields and growth
 *
 * Every event struct starts with `struct_size` and ends with `reserved` pointer
 * slots. A reserved slot may become a pointer-sized *out* field (something a plugin
 * may set) without an ABI bump: the host zero-fills them and a host that does not
 * know the field ignores it (ABI 1's `identity` took the authenticate event's first
 * slot that way). New *in* fields, or anything that is not one pointer, are appended
 * after the last field and before a reserved tail, which changes the struct's size:
 * plugins test MQGATE_HAS_FIELD() before reading them. Offsets of existing fields
 * never change; the unit test test/unit/plugin_abi_test.cpp pins them for ABI 1 and 2.
 *
 * ## Threading
 *
 * Every callback runs on the broker's single event-loop thread, one at a time. A
 * callback must not block: no network or disk I/O that can wait, no sleeping, no
 * heavy computation. Every host API function may be called only from inside a
 * callback or from init/shutdown, on that thread, except those documented as
 * thread-safe: api->complete, api->log, api->mprintf, api->strdup, api->free,
 * api->strerror and api->filter_covers / topic_matches. A plugin that needs slow I/O
 * (a remote user database, say) either keeps its answers in memory and refreshes
 * them from a thread of its own, or (ABI 2) defers its decisions and completes them
 * from that thread (see "Deferred decisions").
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
 * the number. Version 2 changed what decision callbacks return (enum mqgate_verdict).
 * Since: 1. */
#define MQGATE_PLUGIN_ABI_VERSION 2

/* Marks a symbol the broker must find in the plugin (mqgate_plugin_version,
 * mqgate_plugin_init, mqgate_plugin_shutdown): plugins built with
 * -fvisibility=hidden (a good idea) load only if their exports carry it. Write
 * `MQGATE_PLUGIN_EXPORT int mqgate_plugin_init(...)`. MQGATE_PLUGIN_DECLARE_VERSION
 * uses it. Since: 2 (harmless for ABI 1 plugins too). */
#if defined(_WIN32)
#define MQGATE_PLUGIN_EXPORT __declspec(dllexport)
#elif defined(__GNUC__)
#define MQGATE_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define MQGATE_PLUGIN_EXPORT
#endif

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

/* What ABI 1 decision callbacks return. A zero return (also MQGATE_OK) abstains.
 * Since: 1; ABI 2 plugins return an enum mqgate_verdict instead. */
enum mqgate_decision {
  MQGATE_DECISION_ABSTAIN = 0, /* no opinion: let the other plugins decide */
  MQGATE_DECISION_ALLOW = 1,   /* this plugin allows it */
  MQGATE_DECISION_DENY = 2     /* this plugin refuses it (final: any deny denies) */
};

/* What ABI 2 decision callbacks (AUTHENTICATE, AUTHORIZE) return, and what
 * api->complete takes. No value is 0 or negative, so an error code or MQGATE_OK
 * returned by mistake is not read as a decision (it is treated as DENY and logged).
 * Since: 2. */
enum mqgate_verdict {
  MQGATE_VERDICT_ABSTAIN = 16, /* no opinion: let the other plugins decide */
  MQGATE_VERDICT_ALLOW = 17,   /* this plugin allows it */
  MQGATE_VERDICT_DENY = 18,    /* this plugin refuses it (any deny denies) */
  MQGATE_VERDICT_DEFER = 19,   /* answered later through api->complete; only after
                                  api->defer() returned a token during this call */
  MQGATE_VERDICT_CONTINUE = 20 /* since broker 0.3: MQTT 5.0 enhanced authentication
                                  only (an AUTHENTICATE event with `auth_method`, from a
                                  plugin that registered that method): send the client
                                  AUTH 0x18 with `auth_data_out` and ask this plugin
                                  again with the client's answer (see "Enhanced
                                  authentication") */
};

/* What an AUTHORIZE event asks about. Since: 1. */
enum mqgate_action {
  MQGATE_ACTION_PUBLISH = 1,   /* a PUBLISH, or a will about to be published */
  MQGATE_ACTION_SUBSCRIBE = 2, /* a SUBSCRIBE filter. ABI 1 plugins also get this for a
                                  retained message about to be delivered to a new
                                  subscriber (its topic name, retain = 1) */
  MQGATE_ACTION_RECEIVE = 3    /* since 2: a retained message about to be delivered to a
                                  client that subscribed (`topic` is the message's topic
                                  name, `filter` the subscription); ABI 2 plugins only */
};

/* CONNACK return codes a plugin may choose for a denied client (api->complete's
 * `connack_code`, mqgate_evt_authenticate's `connack_code`). Since: 2. */
enum mqgate_connack_code {
  MQGATE_CONNACK_BAD_CREDENTIALS = 4, /* bad user name or password */
  MQGATE_CONNACK_NOT_AUTHORIZED = 5   /* not authorised (the default) */
};

/* One MQTT 5.0 User Property (a name/value pair of UTF-8 strings, NUL-terminated, no
 * NUL inside). Since: broker 0.3. */
typedef struct mqgate_user_property {
  const char *name;
  const char *value;
} mqgate_user_property;

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

/* A decision the plugin owes (ABI 2): from api->defer(), until api->complete().
 * Since: 2. */
typedef struct mqgate_deferred mqgate_deferred;

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
  int protocol_level;         /* 4 for MQTT 3.1.1, 3 for MQTT 3.1, 5 for MQTT 5.0 */
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
                                 slot of ABI 1, so older hosts ignore it). Also ABI 1
                                 plugins may set it. The stable
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
  /* --- since ABI 2 (ABI 1 plugins get a struct_size of
   * MQGATE_EVT_AUTHENTICATE_SIZE_V1; these overlay ABI 1's reserved slots, zero) --- */
  int clean_session;          /* the CONNECT's clean-session flag (0 or 1) */
  int connack_code;           /* out, optional: on DENY, the CONNACK return code, an
                                 enum mqgate_connack_code; 0 (or any other value)
                                 means MQGATE_CONNACK_NOT_AUTHORIZED. The first
                                 denying plugin's choice is sent */
  void *reserved[4];          /* zero; for future out fields (see "Reserved fields") */
  /* --- since broker 0.3 (ABI 2 only; test MQGATE_HAS_FIELD before use). MQTT 5.0:
   * see "MQTT 5.0" and "Enhanced authentication" above --- */
  const mqgate_user_property *user_properties; /* the CONNECT's User Properties, in
                                 order; NULL when there are none (and for 3.1.1) */
  size_t user_properties_len; /* number of entries in user_properties */
  const char *auth_method;    /* the CONNECT's Authentication Method (UTF-8); NULL
                                 when the client uses none */
  const uint8_t *auth_data;   /* this step's Authentication Data from the client (raw
                                 bytes; the CONNECT's, then each AUTH's); NULL if none */
  size_t auth_data_len;       /* length of auth_data */
  int auth_step;              /* 0 for the CONNECT (or the AUTH 0x19 starting a
                                 re-authentication), then 1, 2, ... for each AUTH 0x18
                                 answering this plugin's CONTINUE */
  int reauthenticate;         /* 1 during a re-authentication of a connected client */
  int reason_code;            /* out, optional: on DENY, the MQTT 5 CONNACK (or, when
                                 re-authenticating, DISCONNECT) reason code; 0 means
                                 0x87, or 0x86 when connack_code is 4 */
  char *reason_string;        /* out, optional: on DENY, a Reason String for a 5.0
                                 client (UTF-8, at most 256 bytes; never secrets);
                                 allocate with api->mprintf/strdup */
  uint8_t *auth_data_out;     /* out, optional: with CONTINUE, the Authentication Data
                                 for the AUTH 0x18; with ALLOW, for the CONNACK (or
                                 AUTH 0x00). Allocate with api->alloc; the host frees */
  size_t auth_data_out_len;   /* out: length of auth_data_out (at most 65535) */
  void *reserved2[4];         /* zero; for future use */
} mqgate_evt_authenticate;

/* sizeof(mqgate_evt_authenticate) in ABI 1 (the struct up to `identity`, then three
 * reserved pointers). Since: 2. */
#define MQGATE_EVT_AUTHENTICATE_SIZE_V1 \
  (offsetof(mqgate_evt_authenticate, identity) + 4 * sizeof(void *))

/* MQGATE_EVT_AUTHORIZE: a connected client wants to publish or subscribe, or (ABI 2,
 * MQGATE_ACTION_RECEIVE) is about to be sent a retained message. Return a decision
 * (ABI 1) or a verdict (ABI 2). Since: 1. */
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
  /* --- since ABI 2 (ABI 1 plugins get MQGATE_EVT_AUTHORIZE_SIZE_V1) --- */
  const char *filter;    /* MQGATE_ACTION_RECEIVE: the subscription's filter that
                            matched `topic`; NULL for the other actions */
  int deferrable;        /* 1 if this call may return MQGATE_VERDICT_DEFER (a client's
                            PUBLISH or SUBSCRIBE; not a will, not a RECEIVE) */
  void *reserved[4];     /* zero; for future out fields (see "Reserved fields") */
  /* --- since broker 0.3 (ABI 2 only; test MQGATE_HAS_FIELD before use) --- */
  int reason_code;       /* out, optional: on DENY of a PUBLISH or SUBSCRIBE, the MQTT 5
                            PUBACK/PUBREC or SUBACK reason code (see "MQTT 5.0"); 0
                            means 0x87 (not authorised) */
  char *reason_string;   /* out, optional: on DENY, a Reason String for a 5.0 client
                            (api->mprintf/strdup; sent as "MQTT 5.0" says) */
  void *reserved2[4];    /* zero; for future use */
} mqgate_evt_authorize;

/* sizeof(mqgate_evt_authorize) in ABI 1. Since: 2. */
#define MQGATE_EVT_AUTHORIZE_SIZE_V1 (offsetof(mqgate_evt_authorize, filter) + 4 * sizeof(void *))

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
 * decision (ABI 1) or a verdict (ABI 2) for AUTHENTICATE and AUTHORIZE, MQGATE_OK / an
 * error code for the others. */
typedef int (*mqgate_event_cb)(int event, void *event_data, void *instance);

/* What api->complete takes: the deferred decision. Strings are copied by the host
 * before complete returns (they need not come from api->mprintf). Since: 2. */
typedef struct mqgate_completion {
  uint32_t struct_size;         /* sizeof(mqgate_completion) */
  int verdict;                  /* MQGATE_VERDICT_ALLOW, _DENY or _ABSTAIN (or
                                   _CONTINUE inside an enhanced authentication) */
  const char *reason;           /* optional: why (logged); NULL for none */
  const char *identity;         /* AUTHENTICATE only, optional: as the event's
                                   `identity` */
  const char *assign_client_id; /* AUTHENTICATE only, optional: as the event's
                                   `assign_client_id` */
  int connack_code;             /* AUTHENTICATE DENY only, optional: as the event's
                                   `connack_code` */
  void *reserved[4];            /* zero */
  /* --- since broker 0.3: set struct_size to sizeof(mqgate_completion) to use them;
   * the host reads only what struct_size covers --- */
  int reason_code;              /* DENY, optional: as the events' `reason_code` */
  const char *reason_string;    /* DENY, optional: as the events' `reason_string` */
  const uint8_t *auth_data;     /* AUTHENTICATE CONTINUE/ALLOW, optional: as the
                                   event's `auth_data_out` (copied; any memory) */
  size_t auth_data_len;         /* length of auth_data */
  void *reserved2[4];           /* zero */
} mqgate_completion;

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
   * with the plugin instance's name. printf-style. Never log secrets. Thread-safe. */
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
   * NULL) is called with `data` when the slot is set again, and when the client goes
   * away: right after its DISCONNECTED event returns for a client that was connected,
   * when the connection is gone for one that never was (refused, or closed during
   * authentication) -- in every case before this instance's shutdown.
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

  /* --- since ABI 2: every broker that agrees ABI 2 with a plugin has all of these;
   * ABI 1 plugins built against this header check MQGATE_API_HAS first --- */

  /* Inside an AUTHENTICATE callback, or an AUTHORIZE callback whose event has
   * `deferrable` 1: returns a token for answering later, after which the callback
   * returns MQGATE_VERDICT_DEFER. NULL when called anywhere else (the callback must
   * then decide now). One token per call; calling it twice in a call returns NULL. */
  mqgate_deferred *(*defer)(mqgate_plugin *plugin);
  /* Answers a deferred decision. Thread-safe: call from any thread, exactly once per
   * token, also when the client has gone meanwhile or the decision timed out (the host
   * then ignores it). The token is invalid when this returns. Returns MQGATE_OK,
   * MQGATE_ERR_INVALID (NULL arguments, a verdict other than ALLOW/DENY/ABSTAIN, a
   * token completed before; the decision counts as DENY), or MQGATE_ERR_UNSUPPORTED
   * (the broker is shutting down). */
  int (*complete)(mqgate_deferred *token, const mqgate_completion *completion);
  /* Asks the broker to close a connected client (a revoked credential, say): the close
   * happens soon after, on the loop, not inside this call, so it is safe from any
   * callback (including the client's own events); the client's DISCONNECTED event
   * follows with `reason`. Returns MQGATE_OK, or MQGATE_ERR_INVALID. */
  int (*disconnect)(mqgate_plugin *plugin, mqgate_client *client, const char *reason);
  /* The client's protocol level (5 for MQTT 5.0, 4 for 3.1.1, 3 for 3.1; 0 before
   * CONNECT) and clean-session flag (0 or 1; for 5.0, Clean Start). */
  int (*client_protocol_level)(const mqgate_client *client);
  int (*client_clean_session)(const mqgate_client *client);
  /* The TLS version ("TLSv1.3") and cipher suite of the client's connection; NULL on
   * a plain connection. Valid like the client handle. */
  const char *(*client_tls_version)(const mqgate_client *client);
  const char *(*client_tls_cipher)(const mqgate_client *client);
  /* 1 if every topic name `filter` can match is also matched by `pattern` (both MQTT
   * topic filters), else 0 (also when either is not a valid filter). Level by level:
   * '#' in `pattern` covers the rest (including the parent level: "a/#" covers "a"),
   * '+' covers any one level (a literal or a '+' in `filter`, not a '#'), a literal
   * covers only itself. A '#' in `filter` needs a '#' in `pattern` at or before that
   * level. Topics starting with '$': a pattern starting with a wildcard does not cover
   * a filter starting with '$' (and a filter starting with a wildcard matches no '$'
   * topic), as in topic_matches. Use it to decide a SUBSCRIBE against an ACL pattern:
   * `filter_covers(acl, requested_filter)`. Thread-safe. */
  int (*filter_covers)(const char *pattern, const char *filter);
  /* A string option holding a file path, resolved the way the broker resolves its own
   * paths: relative to the directory of the configuration file (an absolute path is
   * kept). Returns MQGATE_OK and sets *out, MQGATE_ERR_NOT_FOUND, or MQGATE_ERR_TYPE.
   * Valid like opt_string's strings; call it during init and reload. */
  int (*opt_path)(const mqgate_options *options, const char *key, const char **out);

  /* --- since broker 0.3 (ABI 2; check with MQGATE_API_HAS) ----------------------- */
  /* Offers the MQTT 5.0 enhanced authentication method `method` (e.g.
   * "SCRAM-SHA-256", compared byte for byte) on the listeners this instance serves
   * (see "Enhanced authentication"). Call from init only, after registering
   * AUTHENTICATE; several methods may be registered. Returns MQGATE_OK,
   * MQGATE_ERR_INVALID (NULL or empty method, outside init) or MQGATE_ERR_NOMEM. */
  int (*register_auth_method)(mqgate_plugin *plugin, const char *method);
  /* Allocates `size` bytes the host will free (for auth_data_out). NULL if out of
   * memory. Thread-safe. */
  void *(*alloc)(size_t size);
} mqgate_host_api;

/* ------------------------------------------------------------------------------ */
/* Exports: what a plugin defines                                                  */
/* ------------------------------------------------------------------------------ */

/* Required. The broker offers the ABI versions it can host (`supported`, newest
 * first); return the one you were built for, or -1 if none is. Use
 * MQGATE_PLUGIN_DECLARE_VERSION() instead of writing it by hand. */
MQGATE_PLUGIN_EXPORT int mqgate_plugin_version(int supported_count, const int *supported);

/* Required. Create an instance: read `options` through `api`, register callbacks with
 * api->register_event(plugin, ...), and store your state in *instance (it is passed
 * to every callback and to shutdown). Return MQGATE_OK, or an error code and
 * optionally *errmsg (allocated with api->mprintf), e.g. naming an option key and
 * what it should be; the broker then unregisters your callbacks, calls no shutdown
 * for this instance, and stops with your message. `api` stays valid until shutdown
 * returns: keep the pointer. */
MQGATE_PLUGIN_EXPORT int mqgate_plugin_init(mqgate_plugin *plugin,
                                            const mqgate_host_api *api,
                                            const mqgate_options *options, void **instance,
                                            char **errmsg);

/* Defined by MQGATE_PLUGIN_DECLARE_VERSION(): the ABI version the plugin was built
 * for, so the broker can name it when it has to refuse the plugin. */
MQGATE_PLUGIN_EXPORT extern const int mqgate_plugin_abi_version;

/* Optional. Free the instance's state; called once per successful init, when the
 * broker stops. No callback runs after it. A plugin with threads that complete
 * deferred decisions stops and joins them here. */
MQGATE_PLUGIN_EXPORT void mqgate_plugin_shutdown(void *instance);

/* Defines mqgate_plugin_version() for a plugin built for ABI version `v`, and a data
 * symbol the broker reads to explain a mismatch. Use once, at file scope. Both are
 * exported (their declarations above carry MQGATE_PLUGIN_EXPORT), also under
 * -fvisibility=hidden. Pass the version your code is written for as a number, e.g.
 * MQGATE_PLUGIN_DECLARE_VERSION(2): MQGATE_PLUGIN_ABI_VERSION changes when you rebuild
 * against a newer header, and an ABI 1 plugin rebuilt as ABI 2 would return ABI 1
 * decisions where ABI 2 expects verdicts. */
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
