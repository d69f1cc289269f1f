/*
 * mqgate_plugin.h -- the mqgate plugin ABI, version 2.5 (the broker also hosts version 1).
 *
 * This header is the whole contract between the mqgate broker and its plugins. A
 * plugin is a shared object (.so) written in C (or anything with a C ABI) that
 * decides who may connect and what they may publish or subscribe to, and may watch
 * clients come and go. The header is C99 and self-contained (only <stddef.h> and
 * <stdint.h>); apart from <stdint.h> it uses nothing C89 lacks, so C89 code can include
 * it too. It names no type of the broker's TLS or event libraries: certificates arrive
 * as DER bytes.
 *
 * ## Versions, and what "Since" means
 *
 * An ABI version is <major>.<minor>. The major (MQGATE_PLUGIN_ABI_VERSION) changes only
 * with an incompatible change; the broker and each plugin agree on one at load time
 * (mqgate_plugin_version), and a broker hosts several side by side. The minor counts
 * the compatible additions within a major. Every item of this header is tagged
 * "Since: ABI <major>.<minor>", the first ABI version whose hosts provide it; no other
 * kind of version appears in a tag. A plugin learns the minor of the running host with
 * MQGATE_ABI_MINOR(api), and tests single items with MQGATE_HAS_FIELD (event fields) and
 * MQGATE_API_HAS (host functions). The history, with the broker releases that
 * brought each version:
 *
 *   ABI 1.0  the events, the host functions up to topic_matches     (mqgate 0.1.0)
 *   ABI 1.1  mqgate_evt_authenticate.identity, api->client_identity (mqgate 0.1.0;
 *            older headers called it "since broker 0.2", a version never released)
 *   ABI 2.0  answers apart from error codes (enum mqgate_auth_decision), deferred
 *            decisions, MQGATE_ACTION_RECEIVE, connack_code, clean_session,
 *            deferrable, filter, the host functions from defer to opt_path,
 *            MQGATE_PLUGIN_EXPORT                                      (mqgate 0.1.0)
 *   ABI 2.1  MQTT 5.0: user properties, Authentication Method and Data, reason codes
 *            and Reason Strings, enhanced authentication (MQGATE_CONTINUE,
 *            register_auth_method, alloc); older headers said "since broker 0.3"
 *                                                                       (mqgate 0.3.0)
 *   ABI 2.2  api->abi_minor; this header's names: enum mqgate_auth_decision and
 *            mqgate_auth_verdict, MQGATE_ABI_MINOR, a truthful MQGATE_HAS_FIELD
 *            (header changes work with every host)                   (after 0.3.0)
 *   ABI 2.3  RECEIVE for live deliveries: mqgate_evt_authorize.delivery_check and
 *            live, enum mqgate_delivery_check (see "Checking deliveries");
 *            mqgate_evt_authorize.same_answer for PUBLISH
 *                                                                    (after 0.3.0)
 *   ABI 2.4  api->deferred_is_live: whether a deferred decision is still awaited
 *                                                                    (after 0.3.0)
 *   ABI 2.5  broker-owned topics: api->claim_topic, MQGATE_EVT_MESSAGE
 *            (mqgate_evt_message), api->send_to_client (mqgate_outgoing); plugin
 *            counters: api->register_counter, api->counter_add    (after 0.3.0)
 *
 * An ABI 1 plugin gets ABI 1.1 from every broker that hosts ABI 2. Nothing an ABI 1
 * or ABI 2 plugin binary reads or writes has changed value or place since it was
 * built; test/unit/plugin_abi_test.cpp pins the layout, and the integration tests load
 * plugins built against the ABI 1.1, 2.1 and 2.4 headers (test/plugins/abi1,
 * test/plugins/abi2_1, test/plugins/abi2_4) beside plugins built against this one.
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
 * ## What callbacks return: one kind of value per event
 *
 * Every event has the same callback type (mqgate_event_cb, returning an int), but
 * each event's return value means one thing:
 *
 *   AUTHENTICATE  ABI 2: a decision (enum mqgate_auth_decision: MQGATE_ALLOW,
 *                 MQGATE_DENY, MQGATE_ABSTAIN, MQGATE_DEFER), or, only inside an MQTT 5.0
 *                 enhanced authentication, the verdict MQGATE_CONTINUE (enum
 *                 mqgate_auth_verdict). ABI 1: an enum mqgate_decision.
 *   AUTHORIZE     ABI 2: a decision (enum mqgate_auth_decision). ABI 1: an enum
 *                 mqgate_decision.
 *   RELOAD        MQGATE_OK or an error code (enum mqgate_error).
 *   MESSAGE       ABI 2.5: MQGATE_ALLOW (the message is taken) or MQGATE_DENY (refused;
 *                 see "Broker-owned topics").
 *   CONNECTED, DISCONNECTED, TICK
 *                 MQGATE_OK (the host ignores the value).
 *
 * The three sets do not overlap: error codes are 0 or negative, ABI 1 decisions 0..2,
 * ABI 2 decisions 16..19, verdicts from 20. An ABI 2 callback that returns anything
 * else (MQGATE_OK or an error code by mistake, an ABI 1 decision, MQGATE_CONTINUE
 * outside an enhanced authentication, MQGATE_DEFER without a token) is treated as DENY
 * and logged; so is an ABI 1 callback that returns anything but 0, 1 or 2 (0 is ABI 1's
 * ABSTAIN, so a stray MQGATE_OK abstains there).
 *
 * ## Decisions and how they combine
 *
 * Authentication (MQGATE_EVT_AUTHENTICATE, once per CONNECT): every auth plugin of the
 * client's listener is asked, in configuration order, also after one has denied.
 * ABSTAIN is ignored; any DENY denies; at least one ALLOW is needed; if all abstain
 * the client is denied. A denied client is refused and disconnected, and the log
 * names the plugins that denied and their reasons. Its CONNACK carries what the first
 * denying plugin chose (ABI 2 only): for MQTT 3.1.1 the return code nearest its
 * `reason_code` if it set one, else 4 (bad user name or password) if it set
 * `connack_code` so, else 5 (not authorised); for MQTT 5.0 its `reason_code`, else 0x86
 * for `connack_code` 4, else 0x87 (see "MQTT 5.0"). A listener with no auth plugin at
 * all lets every client in; the broker warns about it at start-up.
 *
 * Authorisation (MQGATE_EVT_AUTHORIZE, per PUBLISH, will, SUBSCRIBE filter and
 * retained delivery): every authorize plugin is asked; any DENY denies; otherwise
 * (also when all abstain) the action is allowed. A denied SUBSCRIBE filter gets 0x80
 * in a 3.1.1 SUBACK (5.0: the plugin's `reason_code`, else 0x87); the packet's other
 * filters are still granted. A denied PUBLISH is not forwarded, and a QoS 1 or 2 one
 * is still acknowledged: for MQTT 3.1.1, whose PUBACK and PUBREC carry no code, as if
 * it had been accepted; for MQTT 5.0 with the plugin's `reason_code`, else 0x87 (not
 * authorised). A denied will is not published; a denied retained delivery is not
 * sent.
 *
 * ## Checking deliveries (ABI 2.3)
 *
 * A granted SUBSCRIBE is, by default, never asked about again: every message its
 * filter matches is delivered (retained messages sent because of the SUBSCRIBE are
 * still asked about one by one, with MQGATE_ACTION_RECEIVE). A plugin that decides per
 * topic (an ACL whose deny rule lies inside a granted wildcard filter, say) sets
 * `delivery_check` when it answers the SUBSCRIBE with ALLOW, ABSTAIN or DEFER:
 * then each message delivered through that subscription is first asked about with
 * MQGATE_ACTION_RECEIVE and `live` 1, and a DENY withholds it from this subscriber
 * only. MQGATE_CHECK_PER_TOPIC lets the broker remember an answer for the same
 * subscription and topic (until the next reload or change of the subscription);
 * MQGATE_CHECK_EVERY asks for every message. Answering a live RECEIVE, the plugin may
 * lower `delivery_check` (it comes in with the subscription's current value):
 * MQGATE_CHECK_NONE stops the questions for that subscription once every plugin
 * asking has said so. The strongest wish of the listener's plugins applies.
 *
 * After a reload (SIGHUP), every subscription is decided again: until its SUBSCRIBE
 * has been asked again (which the broker does in the background, for each connected
 * client, as MQGATE_ACTION_SUBSCRIBE with `deferrable` 0), each of its deliveries is
 * asked about as RECEIVE with `live` 1, of every plugin. Messages queued for a
 * session while its client is offline are asked about when the client is back,
 * before they are sent. A plugin that never sets `delivery_check` (every plugin
 * older than ABI 2.3) sees live RECEIVE questions only in those cases.
 *
 * When several plugins ALLOW and more than one assigns a client id or vouches for an
 * identity, the first one (in configuration order) that ALLOWs with one wins; later
 * ones are ignored.
 *
 * ## Deferred decisions (ABI 2)
 *
 * An ABI 2 plugin may answer AUTHENTICATE, and AUTHORIZE for MQGATE_ACTION_PUBLISH
 * (a client's PUBLISH, not a will: evt->deferrable says which) and
 * MQGATE_ACTION_SUBSCRIBE, later: inside the callback it calls api->defer() to get a
 * token, returns MQGATE_DEFER, and later calls api->complete(token, ...) exactly once,
 * from any thread. Meanwhile the client waits without blocking the broker: its next
 * packets are held, in order, until the decision is in (a deferred PUBLISH is
 * acknowledged when it is decided). The plugins after the deferring one in the chain
 * are asked once it has answered. A decision that does not arrive within the broker's
 * `auth_timeout` (seconds, a top-level configuration key, default 10) counts as DENY.
 * Completing a token whose decision has timed out or whose client went away is
 * harmless: the host ignores it. A token must be completed even then (the host frees
 * it only when both it and the plugin are done with it); calling complete twice on
 * one token is an error. Since ABI 2.4, api->deferred_is_live(token) tells a plugin
 * whose work queue is long that a decision is no longer awaited, so it can complete
 * the token at once instead of doing expensive work nobody will read.
 *
 * ## MQTT 5.0 (ABI 2.1)
 *
 * AUTHENTICATE reports protocol_level 5 for an MQTT 5.0 client and, in fields of ABI
 * 2.1 (test MQGATE_HAS_FIELD), the CONNECT's user properties (in order) and its
 * Authentication Method and Data. A plugin that denies may choose the MQTT 5 reason
 * code (`reason_code`: a CONNACK failure code, e.g. 0x86 bad user name or password,
 * 0x87 not authorised, 0x8A banned, 0x8C bad authentication method, 0x9F connection rate
 * exceeded; one that is not a CONNACK failure code is logged and sent as 0x87) and a
 * `reason_string` for the client. AUTHORIZE denials likewise: a PUBACK/PUBREC failure
 * code (0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99) or a SUBACK failure code (0x80, 0x83,
 * 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2); others become 0x87. MQTT 3.1.1 clients get
 * the nearest 3.1.1 code: CONNACK 1 for 0x84, 2 for 0x85, 3 for 0x88/0x89, 4 for
 * 0x86/0x8C, 5 otherwise; SUBACK 0x80. The reason string goes to 5.0 clients as the
 * Reason String property: on CONNACK always, on PUBACK/PUBREC/SUBACK only if the
 * client did not set Request Problem Information to 0 [MQTT-3.1.2-29]; strings that
 * are not valid UTF-8, longer than 256 bytes or that would exceed the client's
 * Maximum Packet Size are dropped. The first denying plugin's code and string are
 * sent. The `reason` fields stay what they were: for the broker's log only.
 *
 * ## Enhanced authentication (MQTT 5.0 section 4.12; ABI 2.1)
 *
 * A plugin offers an authentication method by calling api->register_auth_method()
 * during init (it must also register AUTHENTICATE). A 5.0 client whose CONNECT names
 * an Authentication Method is asked about only by the listener's AUTHENTICATE plugins
 * that registered that method, in configuration order, with the usual rules (any DENY
 * denies, at least one ALLOW is needed); the listener's other plugins are not asked.
 * If none registered it the client gets CONNACK 0x8C (bad authentication method).
 *
 * A plugin answers the first step (`auth_step` 0, `auth_data` from CONNECT) with
 * MQGATE_ALLOW or MQGATE_DENY, or with the verdict MQGATE_CONTINUE and `auth_data_out`
 * (allocated with api->alloc): the broker sends AUTH 0x18 with the method and that
 * data, and when the client answers with AUTH 0x18 it asks the same plugin again
 * (`auth_step` 1, 2, ...) with the client's data. Keep the exchange's state with
 * api->client_set_data. The final ALLOW may carry `auth_data_out` too (sent in the
 * CONNACK's Authentication Data); a DENY's `reason_code` (default 0x87) goes in the
 * CONNACK. The broker bounds the exchange: at most 16 CONTINUEs, 65535 bytes of data
 * per step, and the whole exchange within connect_timeout plus, for deferred steps,
 * auth_timeout each; a client that breaks the protocol (another packet, another
 * method) is closed. Deferral works in every step (api->complete takes the same out
 * fields through mqgate_completion, and MQGATE_CONTINUE).
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
 * ## Broker-owned topics (ABI 2.5)
 *
 * Topics starting with '$' belong to the broker: clients may not publish to them. A
 * plugin may take some for itself: api->claim_topic(plugin, "$provision/+/csr") during
 * init (or during its RELOAD callback, which then replaces the instance's claims). A
 * claim is a valid topic filter whose first level starts with '$' and is neither
 * "$SYS" nor "$share", and no topic may match both it and another instance's claim
 * (the host refuses it with MQGATE_ERR_INVALID and logs why). A plugin that claims
 * registers MQGATE_EVT_MESSAGE.
 *
 * A client's PUBLISH to a topic a plugin of its listener claimed is first asked about
 * like any other (AUTHORIZE, MQGATE_ACTION_PUBLISH; deferrable): a DENY refuses it as
 * usual. Once allowed it goes to the claiming plugin's MESSAGE callback, never to the
 * topic tree: no subscriber gets it, a retained flag is ignored (nothing is kept), and
 * no other plugin sees it. The callback gets the client, the topic, payload and QoS
 * and the MQTT 5.0 Response Topic, Correlation Data, Content Type and User Properties,
 * and `reply_to`, the address of this connection for api->send_to_client. It returns
 * MQGATE_ALLOW (taken: PUBACK/PUBREC Success) or MQGATE_DENY (refused: for 5.0 the
 * event's `reason_code`, a PUBACK/PUBREC failure code such as 0x87 not authorised or
 * 0x97 quota exceeded, default 0x80, and `reason_string`; 3.1.1 has no negative
 * acknowledgement, so, as for a message the store cannot take, the client is
 * disconnected without one). The callback must not block: slow work (a signature, a
 * lookup) goes to a thread of the plugin's, which answers with api->send_to_client.
 *
 * api->send_to_client sends one PUBLISH to the connection `reply_to` names and to no
 * other: not routed, not to other subscribers, never to a later connection that took
 * the same client id. It is thread-safe. The host delivers it through the client's
 * own subscriptions: one of them must match the topic (the client subscribes to its
 * reply topic before asking), the QoS is the lower of the message's and the
 * subscription's, and the client's flow control (Receive Maximum, Maximum Packet
 * Size, queue limits) applies as to any message. With no matching subscription, or
 * once the connection is gone, the message is dropped (logged at debug level,
 * counted in mqgate_plugin_replies_total{result="dropped"}).
 *
 * Counters: api->register_counter(plugin, "issued", help) during init returns an
 * index; api->counter_add(plugin, index, n) adds to it from any thread. They appear in
 * GET /metrics as mqgate_plugin_events_total{plugin="<instance>",counter="<name>"} and
 * in $SYS/broker/plugins/<instance>/<name>. At most 64 per instance: the set is fixed
 * at init, so the metrics' cardinality is bounded.
 *
 * ## How structs grow
 *
 * Every struct that can grow starts with `struct_size`: the event structs (set by the
 * host), mqgate_completion (set by the plugin) and mqgate_host_api (by the host). A
 * struct grows only at its end: a new field goes after the last member, and no
 * member ever moves or changes type. A field is there for a plugin if, and only if,
 * the struct's size covers it and the host filled it; MQGATE_HAS_FIELD() answers
 * exactly that, MQGATE_API_HAS() the same for host functions. The `reserved` arrays
 * are padding kept for the layout: the host zero-fills them, and they are never given
 * a meaning. (Before ABI 2.2 they were meant to become fields, and ABI 1.1 and 2.0 did
 * place fields in bytes ABI 1.0 had reserved: `identity`, `clean_session`,
 * `connack_code`, `filter`, `deferrable`. MQGATE_HAS_FIELD knows which of those a host
 * filled.) The host zero-fills every event struct before a call, so a plugin built
 * against an older header simply does not see newer fields. Enum values are never
 * renumbered or reused.
 *
 * ## Threading
 *
 * Every callback runs on the broker's single event-loop thread, one at a time. A
 * callback must not block: no network or disk I/O that can wait, no sleeping, no
 * heavy computation. Every host API function may be called only from inside a
 * callback or from init/shutdown, on that thread, except those documented as
 * thread-safe: api->complete, api->deferred_is_live, api->log, api->mprintf,
 * api->strdup, api->free, api->alloc, api->strerror, api->topic_matches,
 * api->filter_covers, api->send_to_client and api->counter_add. A plugin that
 * needs slow I/O (a remote user database, say) either keeps its answers in memory and
 * refreshes them from a thread of its own, or (ABI 2) defers its decisions and
 * completes them from that thread (see "Deferred decisions").
 *
 * ## Memory
 *
 * Pointers the host passes (event fields, option strings, certificates) are valid
 * only during the call unless stated otherwise; copy what you keep. Strings a plugin
 * hands to the host in event structs (reasons, error messages, client ids,
 * identities) must be allocated with api->mprintf or api->strdup, and data with
 * api->alloc; the host frees them. mqgate_completion's strings and data are copied by
 * the host instead: any memory will do.
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

/* The ABI major version this header describes (see "Versions"). Bumped only for
 * incompatible changes; version 2 changed what decision callbacks return. Pass your
 * plugin's major to MQGATE_PLUGIN_DECLARE_VERSION as a number, not this macro.
 * Since: ABI 1.0. */
#define MQGATE_PLUGIN_ABI_VERSION 2

/* The ABI minor version this header describes: what MQGATE_ABI_MINOR(api) is on a
 * host that provides everything declared here. Since: ABI 2.2. */
#define MQGATE_PLUGIN_ABI_MINOR 5

/* Marks a symbol the broker must find in the plugin (mqgate_plugin_version,
 * mqgate_plugin_init, mqgate_plugin_shutdown): plugins built with
 * -fvisibility=hidden (a good idea) load only if their exports carry it. Write
 * `MQGATE_PLUGIN_EXPORT int mqgate_plugin_init(...)`. MQGATE_PLUGIN_DECLARE_VERSION
 * uses it. Since: ABI 2.0 (a macro: plugins of ABI 1 may use it too). */
#if defined(_WIN32)
#define MQGATE_PLUGIN_EXPORT __declspec(dllexport)
#elif defined(__GNUC__)
#define MQGATE_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define MQGATE_PLUGIN_EXPORT
#endif

/* ------------------------------------------------------------------------------ */
/* Error codes: what init, RELOAD and the host functions return (0 or negative)      */
/* ------------------------------------------------------------------------------ */

/* X(name, value, text). The host's api->strerror() returns the text. Since: ABI 1.0. */
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
  MQGATE_ERR_LAST_ = -8 /* not a code; keeps the list's trailing comma legal in C89 */
};

/* ------------------------------------------------------------------------------ */
/* Decisions and verdicts: what AUTHENTICATE and AUTHORIZE callbacks return          */
/* ------------------------------------------------------------------------------ */

/* ABI 2 decisions: what an AUTHORIZE callback returns, what an AUTHENTICATE callback
 * returns outside the MQGATE_CONTINUE of an enhanced authentication, and what
 * api->complete takes (mqgate_completion.verdict). No value is 0 or negative, so an
 * error code or MQGATE_OK returned by mistake is not read as a decision (it is treated
 * as DENY and logged), and none is an ABI 1 decision. Since: ABI 2.0 (these names
 * since ABI 2.2; MQGATE_VERDICT_* below before). */
enum mqgate_auth_decision {
  MQGATE_ABSTAIN = 16, /* no opinion: let the other plugins decide */
  MQGATE_ALLOW = 17,   /* this plugin allows it */
  MQGATE_DENY = 18,    /* this plugin refuses it (any deny denies) */
  MQGATE_DEFER = 19    /* answered later through api->complete; only after api->defer()
                          returned a token during this call */
};

/* Verdicts: steps of an MQTT 5.0 enhanced authentication that are not (yet) a
 * decision. An AUTHENTICATE callback returns one, or api->complete takes one, only for
 * an event with `auth_method`, from a plugin that registered that method; anywhere
 * else it counts as DENY. Since: ABI 2.1 (this name since ABI 2.2). */
enum mqgate_auth_verdict {
  MQGATE_CONTINUE = 20 /* send the client AUTH 0x18 with `auth_data_out` and ask this
                          plugin again with the client's answer (see "Enhanced
                          authentication") */
};

/* ABI 1 decisions: what an ABI 1 plugin's AUTHENTICATE and AUTHORIZE callbacks
 * return. A zero return (also MQGATE_OK) abstains. ABI 2 plugins return an enum
 * mqgate_auth_decision instead. Since: ABI 1.0. */
enum mqgate_decision {
  MQGATE_DECISION_ABSTAIN = 0, /* no opinion: let the other plugins decide */
  MQGATE_DECISION_ALLOW = 1,   /* this plugin allows it */
  MQGATE_DECISION_DENY = 2     /* this plugin refuses it (final: any deny denies) */
};

/* Deprecated: the ABI 2.0 and 2.1 headers' names for the decisions and the verdict
 * above (same values; kept so older source builds unchanged). Since: ABI 2.0. */
enum mqgate_verdict {
  MQGATE_VERDICT_ABSTAIN = MQGATE_ABSTAIN,
  MQGATE_VERDICT_ALLOW = MQGATE_ALLOW,
  MQGATE_VERDICT_DENY = MQGATE_DENY,
  MQGATE_VERDICT_DEFER = MQGATE_DEFER,
  MQGATE_VERDICT_CONTINUE = MQGATE_CONTINUE
};

/* What an AUTHORIZE event asks about. Since: ABI 1.0. */
enum mqgate_action {
  MQGATE_ACTION_PUBLISH = 1,   /* a PUBLISH, or a will about to be published */
  MQGATE_ACTION_SUBSCRIBE = 2, /* a SUBSCRIBE filter. ABI 1 plugins also get this for a
                                  retained message about to be delivered to a new
                                  subscriber (its topic name, retain = 1) */
  MQGATE_ACTION_RECEIVE = 3    /* since ABI 2.0: a retained message about to be
                                  delivered to a client that subscribed (`topic` is the
                                  message's topic name, `filter` the subscription); ABI
                                  2 plugins only. Since ABI 2.3 also a live message
                                  (`live` 1; see "Checking deliveries") */
};

/* How a subscription's deliveries are checked (mqgate_evt_authorize.delivery_check;
 * see "Checking deliveries"). Since: ABI 2.3. */
enum mqgate_delivery_check {
  MQGATE_CHECK_NONE = 0,      /* deliver every message the filter matches, unasked */
  MQGATE_CHECK_PER_TOPIC = 1, /* ask RECEIVE before delivering; the answer may be
                                 remembered for this subscription and topic */
  MQGATE_CHECK_EVERY = 2      /* ask RECEIVE before each delivery, never remembered */
};

/* CONNACK return codes a plugin may choose for a denied client (api->complete's
 * `connack_code`, mqgate_evt_authenticate's `connack_code`). Since: ABI 2.0. */
enum mqgate_connack_code {
  MQGATE_CONNACK_BAD_CREDENTIALS = 4, /* bad user name or password */
  MQGATE_CONNACK_NOT_AUTHORIZED = 5   /* not authorised (the default) */
};

/* One MQTT 5.0 User Property (a name/value pair of UTF-8 strings, NUL-terminated, no
 * NUL inside). Since: ABI 2.1. */
typedef struct mqgate_user_property {
  const char *name;
  const char *value;
} mqgate_user_property;

/* Log levels for api->log. Since: ABI 1.0. */
enum mqgate_log_level {
  MQGATE_LOG_ERROR = 0,
  MQGATE_LOG_WARNING = 1,
  MQGATE_LOG_INFO = 2,
  MQGATE_LOG_DEBUG = 3
};

/* Types of option values (api->opt_type). Since: ABI 1.0. */
enum mqgate_option_type {
  MQGATE_OPT_MISSING = 0,      /* no such key */
  MQGATE_OPT_STRING = 1,       /* "text" */
  MQGATE_OPT_INTEGER = 2,      /* 42 (64-bit signed) */
  MQGATE_OPT_BOOLEAN = 3,      /* true / false */
  MQGATE_OPT_STRING_ARRAY = 4, /* ["a", "b"] (also the empty array []) */
  MQGATE_OPT_OTHER = 5         /* anything else (float, date, table, mixed array) */
};

/* Events a plugin can register a callback for, and what its callback returns (see
 * "What callbacks return"). Numbers are never reused. Since: ABI 1.0. */
enum mqgate_event {
  MQGATE_EVT_AUTHENTICATE = 1, /* mqgate_evt_authenticate; returns a decision (or, ABI 2
                                  enhanced authentication, the verdict MQGATE_CONTINUE) */
  MQGATE_EVT_AUTHORIZE = 2,    /* mqgate_evt_authorize; returns a decision */
  MQGATE_EVT_CONNECTED = 3,    /* mqgate_evt_connected; returns MQGATE_OK */
  MQGATE_EVT_DISCONNECTED = 4, /* mqgate_evt_disconnected; returns MQGATE_OK */
  MQGATE_EVT_RELOAD = 5,       /* mqgate_evt_reload; returns MQGATE_OK or an error */
  MQGATE_EVT_TICK = 6,         /* mqgate_evt_tick, once a second; returns MQGATE_OK */
  MQGATE_EVT_MESSAGE = 7       /* since ABI 2.5: mqgate_evt_message, a PUBLISH to a topic
                                  the instance claimed; returns MQGATE_ALLOW (taken) or
                                  MQGATE_DENY (refused) */
};

/* ------------------------------------------------------------------------------ */
/* Opaque handles                                                                  */
/* ------------------------------------------------------------------------------ */

/* One plugin instance, as the host knows it. Passed to init; give it back to
 * api->register_event, api->log and the per-client data functions. Valid until
 * shutdown returns. Since: ABI 1.0. */
typedef struct mqgate_plugin mqgate_plugin;

/* One connected (or connecting) client. Valid during the event it comes with; a
 * plugin may keep it from CONNECTED until its DISCONNECTED event returns.
 * Since: ABI 1.0. */
typedef struct mqgate_client mqgate_client;

/* The instance's options: its TOML table minus the keys the host uses (`module`,
 * `path`). Read them with the api->opt_* functions. Valid during init and reload.
 * Since: ABI 1.0. */
typedef struct mqgate_options mqgate_options;

/* A decision the plugin owes (ABI 2): from api->defer(), until api->complete().
 * Since: ABI 2.0. */
typedef struct mqgate_deferred mqgate_deferred;

/* One DER-encoded X.509 certificate. Since: ABI 1.0. */
typedef struct mqgate_cert {
  const uint8_t *der; /* the certificate's DER bytes */
  size_t der_len;     /* their length */
} mqgate_cert;

/* ------------------------------------------------------------------------------ */
/* Event structs                                                                   */
/* ------------------------------------------------------------------------------ */

/* MQGATE_EVT_AUTHENTICATE: a client sent CONNECT (or, ABI 2.1, an AUTH packet of an
 * enhanced authentication). Return a decision (see "What callbacks return").
 * Since: ABI 1.0. */
typedef struct mqgate_evt_authenticate {
  uint32_t struct_size;       /* how much of this struct the host filled (see
                                 MQGATE_HAS_FIELD) */
  mqgate_client *client;      /* the client (api->client_* work on it) */
  const char *client_id;      /* UTF-8, NUL-terminated, no NUL inside; if the client
                                 sent an empty id this is the one the broker generated */
  int client_id_generated;    /* 1 if the client sent an empty id */
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
  char *identity;             /* out, optional; since ABI 1.1, for ABI 1 and 2 plugins
                                 (a 1.0 host ignores it: check
                                 MQGATE_API_HAS(api, client_identity), which came with
                                 it). The stable identity this plugin vouches for, e.g.
                                 a username or a certificate's subject. A persistent
                                 session belongs to the identity that created it: a
                                 client with the same client id but another identity
                                 is refused (CONNACK 2, MQTT 5.0: 0x85), unless the
                                 broker's session_owner is "client_id". The host
                                 prefixes it with the instance name, so plugins cannot
                                 forge each other's identities. Used from the first
                                 plugin that ALLOWs and sets one; if none does, the
                                 host uses "<listener's auth plugins>:user:<username>"
                                 or "<listener's auth plugins>:anonymous". At most
                                 131072 bytes of UTF-8 (a longer one makes the answer
                                 a DENY); allocate with api->mprintf/strdup */
  /* --- Since: ABI 2.0; ABI 2 plugins only (an ABI 1 plugin's struct_size,
   * MQGATE_EVT_AUTHENTICATE_SIZE_V1, covers these bytes, but the host neither fills
   * nor reads them for it; MQGATE_HAS_FIELD says so) --- */
  int clean_session;          /* the CONNECT's clean-session flag (0 or 1; MQTT 5.0:
                                 Clean Start) */
  int connack_code;           /* out, optional: on DENY, the MQTT 3.1.1 CONNACK return
                                 code, an enum mqgate_connack_code; 0 (or any other
                                 value) means MQGATE_CONNACK_NOT_AUTHORIZED. The first
                                 denying plugin's choice is sent */
  void *reserved[4];          /* zero; padding kept for the layout, never used */
  /* --- Since: ABI 2.1; ABI 2 plugins only. MQTT 5.0: see "MQTT 5.0" and "Enhanced
   * authentication" above --- */
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
                                 AUTH 0x00). Allocate with api->alloc; the host frees.
                                 NULL with a length, or over 65535 bytes: DENY */
  size_t auth_data_out_len;   /* out: length of auth_data_out (at most 65535) */
  void *reserved2[4];         /* zero; padding kept for the layout, never used */
  /* --- Since: ABI 2.5 (MQGATE_HAS_FIELD(evt, mqgate_evt_authenticate, session_expiry)) */
  uint32_t session_expiry; /* how long the session outlives the connection, in
                              seconds: MQTT 5.0's Session Expiry Interval (0 when
                              absent; 0xFFFFFFFF: never expires); for 3.1.1, 0 with
                              a clean session, 0xFFFFFFFF without. A plugin that
                              must not let a client keep a session checks this, not
                              clean_session alone */
  /* New fields go here, and only here. */
} mqgate_evt_authenticate;

/* sizeof(mqgate_evt_authenticate) in ABI 1 (the struct up to `identity`, then three
 * reserved pointers): the struct_size the host gives ABI 1 plugins.
 * Since: ABI 2.0. */
#define MQGATE_EVT_AUTHENTICATE_SIZE_V1 \
  (offsetof(mqgate_evt_authenticate, identity) + 4 * sizeof(void *))

/* MQGATE_EVT_AUTHORIZE: a connected client wants to publish or subscribe, or (ABI 2,
 * MQGATE_ACTION_RECEIVE) is about to be sent a retained message. Return a decision.
 * Since: ABI 1.0. */
typedef struct mqgate_evt_authorize {
  uint32_t struct_size;  /* how much of this struct the host filled (see
                            MQGATE_HAS_FIELD) */
  mqgate_client *client; /* who */
  int action;            /* an enum mqgate_action */
  const char *topic;     /* PUBLISH: the topic name; SUBSCRIBE: the filter (ABI 1, for a
                            retained delivery: the message's topic name); RECEIVE: the
                            message's topic name. UTF-8, NUL-terminated */
  int qos;               /* 0, 1 or 2: the message's QoS, or the requested QoS */
  int retain;            /* 1 if a retained publish or a retained delivery */
  char *reason;          /* out, optional: why (logged); allocate with api->mprintf */
  /* --- Since: ABI 2.0; ABI 2 plugins only (an ABI 1 plugin's struct_size,
   * MQGATE_EVT_AUTHORIZE_SIZE_V1, covers these bytes, but the host does not fill them
   * for it; MQGATE_HAS_FIELD says so) --- */
  const char *filter;    /* MQGATE_ACTION_RECEIVE: the subscription's filter that
                            matched `topic`; NULL for the other actions */
  int deferrable;        /* 1 if this call may return MQGATE_DEFER (a client's PUBLISH
                            or SUBSCRIBE; not a will, not a RECEIVE) */
  void *reserved[4];     /* zero; padding kept for the layout, never used */
  /* --- Since: ABI 2.1; ABI 2 plugins only --- */
  int reason_code;       /* out, optional: on DENY of a PUBLISH or SUBSCRIBE, the MQTT 5
                            PUBACK/PUBREC or SUBACK reason code (see "MQTT 5.0"); 0
                            means 0x87 (not authorised) */
  char *reason_string;   /* out, optional: on DENY, a Reason String for a 5.0 client
                            (api->mprintf/strdup; sent as "MQTT 5.0" says) */
  void *reserved2[4];    /* zero; padding kept for the layout, never used */
  /* --- Since: ABI 2.3; ABI 2 plugins only (see "Checking deliveries") --- */
  int delivery_check;    /* SUBSCRIBE: out, an enum mqgate_delivery_check; 0 (NONE)
                            unless set. RECEIVE with `live` 1: in, the subscription's
                            current value (PER_TOPIC or EVERY; NONE while it is asked
                            only because of a reload or an offline queue); out, the
                            value from now on. Read unless the answer is DENY */
  int live;              /* RECEIVE: 1 for a message delivered through an existing
                            subscription (or queued for it while the client was
                            offline), 0 for a retained message sent because of a new
                            subscription */
  int same_answer;       /* PUBLISH: out, optional: 1 says an ALLOW holds for this
                            client's later PUBLISHes to the same topic, QoS and retain
                            flag until the next reload, so the broker may skip the
                            question for them (it remembers one topic per client, and
                            only when every plugin asked said so); 0: ask each time */
  /* New fields go here, and only here. */
} mqgate_evt_authorize;

/* sizeof(mqgate_evt_authorize) in ABI 1: the struct_size the host gives ABI 1
 * plugins. Since: ABI 2.0. */
#define MQGATE_EVT_AUTHORIZE_SIZE_V1 (offsetof(mqgate_evt_authorize, filter) + 4 * sizeof(void *))

/* MQGATE_EVT_CONNECTED: the client was accepted (CONNACK 0, or MQTT 5.0 reason code
 * 0x00, was sent). Since: ABI 1.0. */
typedef struct mqgate_evt_connected {
  uint32_t struct_size;  /* how much of this struct the host filled */
  mqgate_client *client; /* the client, valid until its DISCONNECTED event returns */
  int session_present;   /* 1 if a stored session was resumed */
  void *reserved[4];     /* zero; padding kept for the layout, never used */
} mqgate_evt_connected;

/* MQGATE_EVT_DISCONNECTED: a connected client went away (for any reason). The
 * client handle becomes invalid when the callback returns. Since: ABI 1.0. */
typedef struct mqgate_evt_disconnected {
  uint32_t struct_size;  /* how much of this struct the host filled */
  mqgate_client *client; /* the client */
  const char *reason;    /* e.g. "client sent DISCONNECT", "keep-alive timeout" */
  void *reserved[4];     /* zero; padding kept for the layout, never used */
} mqgate_evt_disconnected;

/* MQGATE_EVT_RELOAD: the broker got SIGHUP and re-read its configuration. `options`
 * is this instance's new table. Return MQGATE_OK, or an error code (and set *errmsg)
 * to keep running on the old options; the host logs it. Since: ABI 1.0. */
typedef struct mqgate_evt_reload {
  uint32_t struct_size;          /* how much of this struct the host filled */
  const mqgate_options *options; /* the new options */
  char *errmsg;                  /* out, optional: why the reload failed (mprintf) */
  void *reserved[4];             /* zero; padding kept for the layout, never used */
} mqgate_evt_reload;

/* MQGATE_EVT_TICK: once a second. Since: ABI 1.0. */
typedef struct mqgate_evt_tick {
  uint32_t struct_size; /* how much of this struct the host filled */
  uint64_t now_ms;      /* monotonic milliseconds (not wall-clock time) */
  void *reserved[4];    /* zero; padding kept for the layout, never used */
} mqgate_evt_tick;

/* MQGATE_EVT_MESSAGE: a client published to a topic this instance claimed, and the
 * AUTHORIZE plugins allowed it (see "Broker-owned topics"). Return MQGATE_ALLOW
 * (taken) or MQGATE_DENY (refused). Pointers are valid during the call only.
 * Since: ABI 2.5. */
typedef struct mqgate_evt_message {
  uint32_t struct_size;         /* how much of this struct the host filled */
  mqgate_client *client;        /* the publisher */
  const char *topic;            /* the topic name (UTF-8, NUL-terminated) */
  const uint8_t *payload;       /* the payload bytes (may hold NULs); never NULL */
  size_t payload_len;           /* length of payload */
  int qos;                      /* 0, 1 or 2 */
  uint64_t reply_to;            /* this connection's address for api->send_to_client:
                                   never 0, never the same for two connections; a copy
                                   stays valid (and harmless) after the client is gone */
  const char *response_topic;   /* MQTT 5.0 Response Topic; NULL if none (and 3.1.1) */
  const uint8_t *correlation_data; /* MQTT 5.0 Correlation Data; NULL if none */
  size_t correlation_data_len;  /* length of correlation_data */
  const char *content_type;     /* MQTT 5.0 Content Type; NULL if none */
  const mqgate_user_property *user_properties; /* the PUBLISH's User Properties, in
                                   order; NULL when there are none */
  size_t user_properties_len;   /* number of entries in user_properties */
  char *reason;                 /* out, optional: why it was refused (logged);
                                   api->mprintf */
  int reason_code;              /* out, optional: on DENY, the 5.0 PUBACK/PUBREC
                                   failure code (0x80, 0x83, 0x87, 0x90, 0x91, 0x97,
                                   0x99); 0 means 0x80 (unspecified error) */
  char *reason_string;          /* out, optional: on DENY, a Reason String for a 5.0
                                   client (api->mprintf/strdup) */
  void *reserved[4];            /* zero; padding kept for the layout, never used */
  /* New fields go here, and only here. */
} mqgate_evt_message;

/* What api->send_to_client sends: one PUBLISH to one connection. Everything is copied
 * before the call returns. Set struct_size to sizeof(mqgate_outgoing).
 * Since: ABI 2.5. */
typedef struct mqgate_outgoing {
  uint32_t struct_size;         /* sizeof(mqgate_outgoing) as the plugin was built */
  uint64_t to;                  /* the connection: an event's `reply_to` */
  const char *topic;            /* a valid topic name (no wildcards), UTF-8 */
  const uint8_t *payload;       /* the payload; NULL only with payload_len 0 */
  size_t payload_len;           /* length of payload (with the topic and properties,
                                   at most the client's Maximum Packet Size) */
  int qos;                      /* 0, 1 or 2 (lowered to the subscription's QoS) */
  const uint8_t *correlation_data; /* optional, 5.0 clients only: Correlation Data */
  size_t correlation_data_len;  /* length of correlation_data (at most 65535) */
  const char *content_type;     /* optional, 5.0 clients only: Content Type */
  const mqgate_user_property *user_properties; /* optional, 5.0 clients only */
  size_t user_properties_len;   /* number of entries in user_properties */
  void *reserved[4];            /* zero; padding kept for the layout, never used */
  /* New fields go here, and only here. */
} mqgate_outgoing;

/* The callback for every event. `event` is an enum mqgate_event, `event_data` points
 * to that event's struct, `instance` is what init stored in *instance. What it
 * returns depends on the event: see "What callbacks return". Since: ABI 1.0. */
typedef int (*mqgate_event_cb)(int event, void *event_data, void *instance);

/* What api->complete takes: the deferred decision. Strings and data are copied by the
 * host before complete returns (they need not come from api->mprintf or api->alloc).
 * Set struct_size to sizeof(mqgate_completion): the host reads only what it covers.
 * Since: ABI 2.0. */
typedef struct mqgate_completion {
  uint32_t struct_size;         /* sizeof(mqgate_completion) as the plugin was built;
                                   at least offsetof(mqgate_completion, reserved) */
  int verdict;                  /* a decision: MQGATE_ALLOW, MQGATE_DENY or
                                   MQGATE_ABSTAIN (not MQGATE_DEFER); or, inside an
                                   enhanced authentication, the verdict
                                   MQGATE_CONTINUE */
  const char *reason;           /* optional: why (logged); NULL for none */
  const char *identity;         /* AUTHENTICATE only, optional: as the event's
                                   `identity` */
  const char *assign_client_id; /* AUTHENTICATE only, optional: as the event's
                                   `assign_client_id` */
  int connack_code;             /* AUTHENTICATE DENY only, optional: as the event's
                                   `connack_code` */
  void *reserved[4];            /* zero; padding kept for the layout, never used */
  /* --- Since: ABI 2.1 --- */
  int reason_code;              /* DENY, optional: as the events' `reason_code` */
  const char *reason_string;    /* DENY, optional: as the events' `reason_string` */
  const uint8_t *auth_data;     /* AUTHENTICATE CONTINUE/ALLOW, optional: as the
                                   event's `auth_data_out` (at most 65535 bytes) */
  size_t auth_data_len;         /* length of auth_data */
  void *reserved2[4];           /* zero; padding kept for the layout, never used */
  /* New fields go here, and only here. */
} mqgate_completion;

/* ------------------------------------------------------------------------------ */
/* Host API: services the broker offers, passed to init                            */
/* ------------------------------------------------------------------------------ */

/* Members are only ever appended. Check MQGATE_API_HAS() before calling a member
 * newer than the ABI version you target. An ABI 1 plugin gets the table of ABI 1.1:
 * its struct_size ends after client_identity. Since: ABI 1.0 (the members up to
 * topic_matches; the others say). */
typedef struct mqgate_host_api {
  size_t struct_size; /* how much of this table the host filled for this plugin */
  int abi_version;    /* the ABI major version agreed for this plugin */
  const char *broker_version; /* e.g. "0.3.0" */

  /* Registers `cb` for `event` (an enum mqgate_event). Call from init only. One
   * callback per event per instance; registering again replaces it.
   * Returns MQGATE_OK, MQGATE_ERR_UNSUPPORTED for an event this broker does not
   * have, MQGATE_ERR_INVALID for a NULL callback or when called outside init. */
  int (*register_event)(mqgate_plugin *plugin, int event, mqgate_event_cb cb);

  /* Writes one line to the broker's log at `level` (enum mqgate_log_level), tagged
   * with the plugin instance's name (control characters in the text are escaped, so
   * one call stays one line; long text is cut). printf-style. Never log secrets.
   * Thread-safe. */
  void (*log)(mqgate_plugin *plugin, int level, const char *format, ...)
#if defined(__GNUC__)
      __attribute__((format(printf, 3, 4)))
#endif
      ;

  /* Allocates a formatted string the host will free (for reason/errmsg/client-id
   * fields). Returns NULL if out of memory (or for a NULL format). Thread-safe. */
  char *(*mprintf)(const char *format, ...)
#if defined(__GNUC__)
      __attribute__((format(printf, 1, 2)))
#endif
      ;
  /* Same for a plain copy of `s` (NULL gives NULL). Thread-safe. */
  char *(*strdup)(const char *s);
  /* Frees a string from mprintf/strdup (or, ABI 2.1, memory from alloc) that the
   * plugin did not hand over. Thread-safe. */
  void (*free)(void *p);
  /* The text of an MQGATE_* error code. Thread-safe. */
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
  /* A string array: its length, then each item (MQGATE_ERR_NOT_FOUND past its end). */
  int (*opt_array_size)(const mqgate_options *options, const char *key, size_t *out);
  int (*opt_array_string)(const mqgate_options *options, const char *key, size_t index,
                          const char **out);
  /* Where `key` is in the configuration file ("/etc/mqgate.toml:12:1"), for error
   * messages; the instance's table ("/etc/mqgate.toml:10") if the key is absent.
   * Valid like strings above. */
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
   * Returns MQGATE_OK, or MQGATE_ERR_INVALID (a NULL client or plugin), in which case
   * `data` stays the plugin's to free. */
  int (*client_set_data)(mqgate_client *client, mqgate_plugin *plugin, void *data,
                         void (*free_fn)(void *data));
  /* The data attached by this instance, or NULL. */
  void *(*client_get_data)(const mqgate_client *client, mqgate_plugin *plugin);

  /* --- MQTT helpers --------------------------------------------------------------- */
  /* 1 if topic filter `filter` matches topic name `topic` by MQTT rules (a leading
   * wildcard does not match a topic starting with '$'), else 0 (also when either is
   * not valid). Thread-safe. */
  int (*topic_matches)(const char *filter, const char *topic);

  /* --- Since: ABI 1.1 (check with MQGATE_API_HAS) --------------------------------- */
  /* The identity that owns the client's session (see mqgate_evt_authenticate's
   * `identity`, with the host's instance prefix), e.g. "certauth:x509:...". Valid
   * from the CONNECTED event until DISCONNECTED returns; NULL before. */
  const char *(*client_identity)(const mqgate_client *client);

  /* --- Since: ABI 2.0: every host that agrees ABI 2 with a plugin has all of these;
   * ABI 1 plugins never get them (MQGATE_API_HAS says so) --- */

  /* Inside an AUTHENTICATE callback, or an AUTHORIZE callback whose event has
   * `deferrable` 1: returns a token for answering later, after which the callback
   * returns MQGATE_DEFER. NULL when called anywhere else (the callback must then
   * decide now). One token per call; calling it twice in a call returns NULL. A token
   * taken by a callback that then does not return MQGATE_DEFER must still be
   * completed; the host ignores that completion. */
  mqgate_deferred *(*defer)(mqgate_plugin *plugin);
  /* Answers a deferred decision. Thread-safe: call from any thread, exactly once per
   * token, also when the client has gone meanwhile or the decision timed out (the host
   * then ignores it). The token is invalid when this returns: completing it again is
   * an error. Returns MQGATE_OK; MQGATE_ERR_INVALID for a NULL token, or for a NULL or
   * too small `completion`, a `verdict` that is not ALLOW, DENY, ABSTAIN or CONTINUE,
   * or over 65535 bytes of auth_data (the decision then counts as DENY);
   * MQGATE_ERR_UNSUPPORTED when the broker is shutting down. */
  int (*complete)(mqgate_deferred *token, const mqgate_completion *completion);
  /* Asks the broker to close a connected client (a revoked credential, say): the close
   * happens soon after, on the loop, not inside this call, so it is safe from any
   * callback (including the client's own events); the client's DISCONNECTED event
   * follows with `reason`. Returns MQGATE_OK, MQGATE_ERR_INVALID (NULL arguments), or
   * MQGATE_ERR_UNSUPPORTED (the broker is shutting down). */
  int (*disconnect)(mqgate_plugin *plugin, mqgate_client *client, const char *reason);
  /* The client's protocol level (5 for MQTT 5.0, 4 for 3.1.1, 3 for 3.1; 0 before
   * CONNECT) and clean-session flag (0 or 1; for 5.0, Clean Start). */
  int (*client_protocol_level)(const mqgate_client *client);
  int (*client_clean_session)(const mqgate_client *client);
  /* The TLS version ("TLSv1.3") and cipher suite of the client's connection; NULL on
   * a plain connection. Valid like the client handle. */
  const char *(*client_tls_version)(const mqgate_client *client);
  const char *(*client_tls_cipher)(const mqgate_client *client);
  /* 1 if every valid topic name `filter` can match is also matched by `pattern` (both
   * MQTT topic filters, matched as topic_matches does: '#' also matches its parent
   * level, a leading wildcard matches no topic starting with '$'), else 0 (also when
   * either is not a valid filter). The answer is exact, not level by level: "+/#"
   * covers "#", and "+/+/#" covers "/#" (the empty topic, which "/#" would match as
   * the parent of "/", is not a valid topic name). Use it to decide a SUBSCRIBE
   * against an ACL pattern: `filter_covers(acl, requested_filter)`. Thread-safe. */
  int (*filter_covers)(const char *pattern, const char *filter);
  /* A string option holding a file path, resolved the way the broker resolves its own
   * paths: relative to the directory of the configuration file (an absolute path is
   * kept). Returns MQGATE_OK and sets *out, MQGATE_ERR_NOT_FOUND, or MQGATE_ERR_TYPE.
   * Valid like opt_string's strings; call it during init and reload. */
  int (*opt_path)(const mqgate_options *options, const char *key, const char **out);

  /* --- Since: ABI 2.1 (check with MQGATE_API_HAS) --------------------------------- */
  /* Offers the MQTT 5.0 enhanced authentication method `method` (e.g.
   * "SCRAM-SHA-256", compared byte for byte) on the listeners this instance serves
   * (see "Enhanced authentication"). Call from init only, after registering
   * AUTHENTICATE; several methods may be registered. Returns MQGATE_OK or
   * MQGATE_ERR_INVALID (NULL, empty or over 65535 bytes, outside init). */
  int (*register_auth_method)(mqgate_plugin *plugin, const char *method);
  /* Allocates `size` bytes the host will free (for auth_data_out). NULL if out of
   * memory. Thread-safe. */
  void *(*alloc)(size_t size);

  /* --- Since: ABI 2.2 (read it with MQGATE_ABI_MINOR) ----------------------------- */
  /* The ABI minor version this host implements for the plugin (see "Versions"). */
  int abi_minor;

  /* --- Since: ABI 2.4 (check with MQGATE_API_HAS) --------------------------------- */
  /* 1 while the host still awaits the decision `token` owes; 0 once it will ignore the
   * completion: the client went away, the decision timed out (auth_timeout), the
   * callback that took the token did not return MQGATE_DEFER, or the broker is
   * shutting down. Once 0 it stays 0. Lets a plugin skip expensive work (a password
   * hash, a remote lookup) for a client nobody waits for; the token must still be
   * completed (any verdict will do). Call it only before completing the token (and
   * with a token, not NULL: NULL gives 0). Thread-safe; cheap (an atomic load). */
  int (*deferred_is_live)(const mqgate_deferred *token);

  /* --- Since: ABI 2.5 (check with MQGATE_API_HAS; see "Broker-owned topics") ------- */
  /* Claims the topic filter `filter` (first level starting with '$', not $SYS or
   * $share) for this instance: PUBLISHes matching it come to its MESSAGE callback.
   * Call from init or from the RELOAD callback (a reload that claims anything and
   * returns MQGATE_OK replaces the old claims). Returns MQGATE_OK, or MQGATE_ERR_INVALID
   * (not a valid filter, not under '$', $SYS or $share, overlapping another
   * instance's claim, more than 64 claims, outside init and reload); the host logs
   * why. */
  int (*claim_topic)(mqgate_plugin *plugin, const char *filter);
  /* Sends `msg` to the one connection msg->to names (see mqgate_outgoing and
   * "Broker-owned topics"). Thread-safe. Returns MQGATE_OK when the message was handed
   * to the loop (it may still be dropped there: client gone, no matching
   * subscription, over its limits), MQGATE_ERR_INVALID (NULL or too small `msg`,
   * an invalid topic, QoS, or over 65535 bytes of a property), or
   * MQGATE_ERR_UNSUPPORTED (the broker is shutting down). */
  int (*send_to_client)(mqgate_plugin *plugin, const mqgate_outgoing *msg);
  /* Registers a counter named `name` ([a-z0-9_], 1 to 48 characters, unique in the
   * instance) with a one-line `help` text (may be NULL). Call from init only. Returns
   * its index (0, 1, ...), or MQGATE_ERR_INVALID (bad name, a duplicate, more than
   * 64, outside init). */
  int (*register_counter)(mqgate_plugin *plugin, const char *name, const char *help);
  /* Adds `n` to the counter `index` returned by register_counter. Thread-safe (an
   * atomic add); an index that is not this instance's is ignored. */
  void (*counter_add)(mqgate_plugin *plugin, int index, uint64_t n);
} mqgate_host_api;

/* ------------------------------------------------------------------------------ */
/* Helpers                                                                         */
/* ------------------------------------------------------------------------------ */

/* True if the host filled `field` of the event (or completion) struct `ptr` points
 * to, of type `type` (the typedef name, e.g. mqgate_evt_authenticate): its struct_size
 * covers the field and, for a field ABI 2.0 placed in bytes ABI 1 had reserved, the
 * struct is larger than its ABI 1 size (the host gives ABI 1 plugins the ABI 1 size,
 * which covers those bytes although it does not fill them). Test it before using a
 * field of a newer ABI version than the one your plugin needs. Since: ABI 1.0 (it
 * knows about ABI 1 sizes since ABI 2.2: it used to say yes to clean_session,
 * connack_code, filter and deferrable for ABI 1 plugins). */
#define MQGATE_HAS_FIELD(ptr, type, field)                                            \
  ((size_t)(ptr)->struct_size >= offsetof(type, field) + sizeof(((type *)0)->field) && \
   (offsetof(type, field) < MQGATE_ABI1_FILLED_##type ||                               \
    (size_t)(ptr)->struct_size > MQGATE_ABI1_SIZE_##type))

/* For MQGATE_HAS_FIELD, per struct: where the fields an ABI 1 host fills end, and the
 * struct's size in ABI 1. Structs that ABI 2.0 did not touch end their ABI 1 part at
 * their full size. Since: ABI 2.2. */
#define MQGATE_ABI1_FILLED_mqgate_evt_authenticate \
  (offsetof(mqgate_evt_authenticate, identity) + sizeof(char *))
#define MQGATE_ABI1_SIZE_mqgate_evt_authenticate MQGATE_EVT_AUTHENTICATE_SIZE_V1
#define MQGATE_ABI1_FILLED_mqgate_evt_authorize offsetof(mqgate_evt_authorize, filter)
#define MQGATE_ABI1_SIZE_mqgate_evt_authorize MQGATE_EVT_AUTHORIZE_SIZE_V1
#define MQGATE_ABI1_FILLED_mqgate_evt_connected sizeof(mqgate_evt_connected)
#define MQGATE_ABI1_SIZE_mqgate_evt_connected sizeof(mqgate_evt_connected)
#define MQGATE_ABI1_FILLED_mqgate_evt_disconnected sizeof(mqgate_evt_disconnected)
#define MQGATE_ABI1_SIZE_mqgate_evt_disconnected sizeof(mqgate_evt_disconnected)
#define MQGATE_ABI1_FILLED_mqgate_evt_reload sizeof(mqgate_evt_reload)
#define MQGATE_ABI1_SIZE_mqgate_evt_reload sizeof(mqgate_evt_reload)
#define MQGATE_ABI1_FILLED_mqgate_evt_tick sizeof(mqgate_evt_tick)
#define MQGATE_ABI1_SIZE_mqgate_evt_tick sizeof(mqgate_evt_tick)
#define MQGATE_ABI1_FILLED_mqgate_evt_message sizeof(mqgate_evt_message)
#define MQGATE_ABI1_SIZE_mqgate_evt_message sizeof(mqgate_evt_message)
#define MQGATE_ABI1_FILLED_mqgate_completion sizeof(mqgate_completion)
#define MQGATE_ABI1_SIZE_mqgate_completion sizeof(mqgate_completion)

/* True if the running host's table has the member `member`. Since: ABI 2.2. */
#define MQGATE_API_COVERS(api, member) \
  ((api)->struct_size >= offsetof(mqgate_host_api, member) + sizeof((api)->member))

/* True if the running host provides api->`fn` (inside its table and non-NULL).
 * Since: ABI 1.0. */
#define MQGATE_API_HAS(api, fn) (MQGATE_API_COVERS(api, fn) && (api)->fn != NULL)

/* The ABI minor version of the running host for this plugin (see "Versions"): its
 * api->abi_minor, or, from a host older than ABI 2.2 that has no such member, what its
 * table's size tells (2.1 if it has api->alloc, else 2.0; for ABI 1, 1.1 if it has
 * api->client_identity, else 1.0). Since: ABI 2.2 (a macro: works with every host). */
#define MQGATE_ABI_MINOR(api)                                            \
  (MQGATE_API_COVERS(api, abi_minor) ? (api)->abi_minor                  \
   : (api)->abi_version >= 2         ? (MQGATE_API_COVERS(api, alloc) ? 1 : 0) \
                                     : (MQGATE_API_COVERS(api, client_identity) ? 1 : 0))

/* ------------------------------------------------------------------------------ */
/* Exports: what a plugin defines                                                  */
/* ------------------------------------------------------------------------------ */

/* Required. The broker offers the ABI major versions it can host (`supported`, newest
 * first); return the one you were built for, or -1 if none is. Use
 * MQGATE_PLUGIN_DECLARE_VERSION() instead of writing it by hand. Since: ABI 1.0. */
MQGATE_PLUGIN_EXPORT int mqgate_plugin_version(int supported_count, const int *supported);

/* Required. Create an instance: read `options` through `api`, register callbacks with
 * api->register_event(plugin, ...), and store your state in *instance (it is passed
 * to every callback and to shutdown). Return MQGATE_OK, or an error code and
 * optionally *errmsg (allocated with api->mprintf), e.g. naming an option key and
 * what it should be; the broker then unregisters your callbacks, calls no shutdown
 * for this instance, and stops with your message. `api` stays valid until shutdown
 * returns: keep the pointer. Since: ABI 1.0. */
MQGATE_PLUGIN_EXPORT int mqgate_plugin_init(mqgate_plugin *plugin,
                                            const mqgate_host_api *api,
                                            const mqgate_options *options, void **instance,
                                            char **errmsg);

/* Defined by MQGATE_PLUGIN_DECLARE_VERSION(): the ABI major version the plugin was
 * built for, so the broker can name it when it has to refuse the plugin.
 * Since: ABI 1.0. */
MQGATE_PLUGIN_EXPORT extern const int mqgate_plugin_abi_version;

/* Optional. Free the instance's state; called once per successful init, when the
 * broker stops. No callback runs after it. A plugin with threads that complete
 * deferred decisions stops and joins them here. Since: ABI 1.0. */
MQGATE_PLUGIN_EXPORT void mqgate_plugin_shutdown(void *instance);

/* Defines mqgate_plugin_version() for a plugin built for ABI major version `v`, and a
 * data symbol the broker reads to explain a mismatch. Use once, at file scope, without
 * a semicolon after it. Both are exported (their declarations above carry
 * MQGATE_PLUGIN_EXPORT), also under -fvisibility=hidden. Pass the version your code is
 * written for as a number, e.g. MQGATE_PLUGIN_DECLARE_VERSION(2):
 * MQGATE_PLUGIN_ABI_VERSION changes when you rebuild against a newer header, and an
 * ABI 1 plugin rebuilt as ABI 2 would return ABI 1 decisions where ABI 2 expects
 * others. Since: ABI 1.0. */
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
