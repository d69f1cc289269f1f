// Freezes the plugin ABI's binary layout (LP64) by field offsets: a change here breaks
// every plugin built against an earlier header, so it must be a deliberate ABI version
// bump. Sizes are not frozen (structs grow at the end, see the header's "How structs
// grow"); what ABI 1 plugins are given is (the *_SIZE_V1 constants). The frozen headers
// of ABI 1.1 and 2.1 (test/plugins/abi1, abi2_1) are compared with this one field by
// field by test_plugin_abi_compat.py.
#include <doctest/doctest.h>

#include <cstddef>
#include <initializer_list>

#include "mqgate_plugin.h"
#include "plugin/instance.hpp"

static_assert(sizeof(void*) == 8, "the layout below is for LP64 targets");

#define FIELD_AT(type, field, offset) static_assert(offsetof(type, field) == (offset), #type "." #field)

FIELD_AT(mqgate_cert, der, 0);
FIELD_AT(mqgate_cert, der_len, 8);
static_assert(sizeof(mqgate_cert) == 16);

FIELD_AT(mqgate_evt_authenticate, struct_size, 0);
FIELD_AT(mqgate_evt_authenticate, client, 8);
FIELD_AT(mqgate_evt_authenticate, client_id, 16);
FIELD_AT(mqgate_evt_authenticate, client_id_generated, 24);
FIELD_AT(mqgate_evt_authenticate, username, 32);
FIELD_AT(mqgate_evt_authenticate, password, 40);
FIELD_AT(mqgate_evt_authenticate, password_len, 48);
FIELD_AT(mqgate_evt_authenticate, protocol_level, 56);
FIELD_AT(mqgate_evt_authenticate, listener, 64);
FIELD_AT(mqgate_evt_authenticate, peer_address, 72);
FIELD_AT(mqgate_evt_authenticate, peer_chain, 80);
FIELD_AT(mqgate_evt_authenticate, peer_chain_len, 88);
FIELD_AT(mqgate_evt_authenticate, tls_version, 96);
FIELD_AT(mqgate_evt_authenticate, tls_cipher, 104);
FIELD_AT(mqgate_evt_authenticate, reason, 112);
FIELD_AT(mqgate_evt_authenticate, assign_client_id, 120);
FIELD_AT(mqgate_evt_authenticate, identity, 128);  // ABI 1's first reserved slot
// ABI 1 ends here: identity, then reserved[3] (the host zeroes 136..159 for ABI 1).
static_assert(MQGATE_EVT_AUTHENTICATE_SIZE_V1 == 160);
// ABI 2.
FIELD_AT(mqgate_evt_authenticate, clean_session, 136);
FIELD_AT(mqgate_evt_authenticate, connack_code, 140);
FIELD_AT(mqgate_evt_authenticate, reserved, 144);
static_assert(sizeof(((mqgate_evt_authenticate*)0)->reserved) == 4 * sizeof(void*));
// MQTT 5.0 (appended after the reserved slots: ABI 2 plugins built before see 176 bytes).
FIELD_AT(mqgate_evt_authenticate, user_properties, 176);
FIELD_AT(mqgate_evt_authenticate, user_properties_len, 184);
FIELD_AT(mqgate_evt_authenticate, auth_method, 192);
FIELD_AT(mqgate_evt_authenticate, auth_data, 200);
FIELD_AT(mqgate_evt_authenticate, auth_data_len, 208);
FIELD_AT(mqgate_evt_authenticate, auth_step, 216);
FIELD_AT(mqgate_evt_authenticate, reauthenticate, 220);
FIELD_AT(mqgate_evt_authenticate, reason_code, 224);
FIELD_AT(mqgate_evt_authenticate, reason_string, 232);
FIELD_AT(mqgate_evt_authenticate, auth_data_out, 240);
FIELD_AT(mqgate_evt_authenticate, auth_data_out_len, 248);
FIELD_AT(mqgate_evt_authenticate, reserved2, 256);
FIELD_AT(mqgate_evt_authenticate, session_expiry, 288);
FIELD_AT(mqgate_user_property, name, 0);
FIELD_AT(mqgate_user_property, value, 8);
static_assert(sizeof(mqgate_user_property) == 16);

FIELD_AT(mqgate_evt_authorize, client, 8);
FIELD_AT(mqgate_evt_authorize, action, 16);
FIELD_AT(mqgate_evt_authorize, topic, 24);
FIELD_AT(mqgate_evt_authorize, qos, 32);
FIELD_AT(mqgate_evt_authorize, retain, 36);
FIELD_AT(mqgate_evt_authorize, reason, 40);
static_assert(MQGATE_EVT_AUTHORIZE_SIZE_V1 == 80);  // ABI 1: reason, then reserved[4]
// ABI 2.
FIELD_AT(mqgate_evt_authorize, filter, 48);
FIELD_AT(mqgate_evt_authorize, deferrable, 56);
FIELD_AT(mqgate_evt_authorize, reserved, 64);
// MQTT 5.0.
FIELD_AT(mqgate_evt_authorize, reason_code, 96);
FIELD_AT(mqgate_evt_authorize, reason_string, 104);
FIELD_AT(mqgate_evt_authorize, reserved2, 112);
FIELD_AT(mqgate_evt_authorize, delivery_check, 144);  // ABI 2.3
FIELD_AT(mqgate_evt_authorize, live, 148);
FIELD_AT(mqgate_evt_authorize, same_answer, 152);

FIELD_AT(mqgate_completion, struct_size, 0);
FIELD_AT(mqgate_completion, verdict, 4);
FIELD_AT(mqgate_completion, reason, 8);
FIELD_AT(mqgate_completion, identity, 16);
FIELD_AT(mqgate_completion, assign_client_id, 24);
FIELD_AT(mqgate_completion, connack_code, 32);
FIELD_AT(mqgate_completion, reserved, 40);
// MQTT 5.0.
FIELD_AT(mqgate_completion, reason_code, 72);
FIELD_AT(mqgate_completion, reason_string, 80);
FIELD_AT(mqgate_completion, auth_data, 88);
FIELD_AT(mqgate_completion, auth_data_len, 96);
FIELD_AT(mqgate_completion, reserved2, 104);

FIELD_AT(mqgate_evt_connected, client, 8);
FIELD_AT(mqgate_evt_connected, session_present, 16);
FIELD_AT(mqgate_evt_connected, reserved, 24);
FIELD_AT(mqgate_evt_disconnected, client, 8);
FIELD_AT(mqgate_evt_disconnected, reason, 16);
FIELD_AT(mqgate_evt_disconnected, reserved, 24);
FIELD_AT(mqgate_evt_reload, options, 8);
FIELD_AT(mqgate_evt_reload, errmsg, 16);
FIELD_AT(mqgate_evt_reload, reserved, 24);
FIELD_AT(mqgate_evt_tick, now_ms, 8);
FIELD_AT(mqgate_evt_tick, reserved, 16);

// The host API table: members in this order, appended only.
FIELD_AT(mqgate_host_api, struct_size, 0);
FIELD_AT(mqgate_host_api, abi_version, 8);
FIELD_AT(mqgate_host_api, broker_version, 16);
FIELD_AT(mqgate_host_api, register_event, 24);
FIELD_AT(mqgate_host_api, log, 32);
FIELD_AT(mqgate_host_api, mprintf, 40);
FIELD_AT(mqgate_host_api, strdup, 48);
FIELD_AT(mqgate_host_api, free, 56);
FIELD_AT(mqgate_host_api, strerror, 64);
FIELD_AT(mqgate_host_api, opt_count, 72);
FIELD_AT(mqgate_host_api, opt_key, 80);
FIELD_AT(mqgate_host_api, opt_type, 88);
FIELD_AT(mqgate_host_api, opt_string, 96);
FIELD_AT(mqgate_host_api, opt_integer, 104);
FIELD_AT(mqgate_host_api, opt_boolean, 112);
FIELD_AT(mqgate_host_api, opt_array_size, 120);
FIELD_AT(mqgate_host_api, opt_array_string, 128);
FIELD_AT(mqgate_host_api, opt_location, 136);
FIELD_AT(mqgate_host_api, client_id, 144);
FIELD_AT(mqgate_host_api, client_username, 152);
FIELD_AT(mqgate_host_api, client_listener, 160);
FIELD_AT(mqgate_host_api, client_peer_address, 168);
FIELD_AT(mqgate_host_api, client_peer_chain, 176);
FIELD_AT(mqgate_host_api, client_set_data, 184);
FIELD_AT(mqgate_host_api, client_get_data, 192);
FIELD_AT(mqgate_host_api, topic_matches, 200);
FIELD_AT(mqgate_host_api, client_identity, 208);  // the last member ABI 1 plugins get
// ABI 2.
FIELD_AT(mqgate_host_api, defer, 216);
FIELD_AT(mqgate_host_api, complete, 224);
FIELD_AT(mqgate_host_api, disconnect, 232);
FIELD_AT(mqgate_host_api, client_protocol_level, 240);
FIELD_AT(mqgate_host_api, client_clean_session, 248);
FIELD_AT(mqgate_host_api, client_tls_version, 256);
FIELD_AT(mqgate_host_api, client_tls_cipher, 264);
FIELD_AT(mqgate_host_api, filter_covers, 272);
FIELD_AT(mqgate_host_api, opt_path, 280);
// MQTT 5.0 enhanced authentication (ABI 2.1).
FIELD_AT(mqgate_host_api, register_auth_method, 288);
FIELD_AT(mqgate_host_api, alloc, 296);
// ABI 2.2.
FIELD_AT(mqgate_host_api, abi_minor, 304);
// ABI 2.4.
FIELD_AT(mqgate_host_api, deferred_is_live, 312);
// ABI 2.5: broker-owned topics and plugin counters.
FIELD_AT(mqgate_host_api, claim_topic, 320);
FIELD_AT(mqgate_host_api, send_to_client, 328);
FIELD_AT(mqgate_host_api, register_counter, 336);
FIELD_AT(mqgate_host_api, counter_add, 344);

// ABI 2.5: MQGATE_EVT_MESSAGE and api->send_to_client's message.
FIELD_AT(mqgate_evt_message, struct_size, 0);
FIELD_AT(mqgate_evt_message, client, 8);
FIELD_AT(mqgate_evt_message, topic, 16);
FIELD_AT(mqgate_evt_message, payload, 24);
FIELD_AT(mqgate_evt_message, payload_len, 32);
FIELD_AT(mqgate_evt_message, qos, 40);
FIELD_AT(mqgate_evt_message, reply_to, 48);
FIELD_AT(mqgate_evt_message, response_topic, 56);
FIELD_AT(mqgate_evt_message, correlation_data, 64);
FIELD_AT(mqgate_evt_message, correlation_data_len, 72);
FIELD_AT(mqgate_evt_message, content_type, 80);
FIELD_AT(mqgate_evt_message, user_properties, 88);
FIELD_AT(mqgate_evt_message, user_properties_len, 96);
FIELD_AT(mqgate_evt_message, reason, 104);
FIELD_AT(mqgate_evt_message, reason_code, 112);
FIELD_AT(mqgate_evt_message, reason_string, 120);
FIELD_AT(mqgate_evt_message, reserved, 128);
FIELD_AT(mqgate_outgoing, struct_size, 0);
FIELD_AT(mqgate_outgoing, to, 8);
FIELD_AT(mqgate_outgoing, topic, 16);
FIELD_AT(mqgate_outgoing, payload, 24);
FIELD_AT(mqgate_outgoing, payload_len, 32);
FIELD_AT(mqgate_outgoing, qos, 40);
FIELD_AT(mqgate_outgoing, correlation_data, 48);
FIELD_AT(mqgate_outgoing, correlation_data_len, 56);
FIELD_AT(mqgate_outgoing, content_type, 64);
FIELD_AT(mqgate_outgoing, user_properties, 72);
FIELD_AT(mqgate_outgoing, user_properties_len, 80);
FIELD_AT(mqgate_outgoing, reserved, 88);

// Where MQGATE_HAS_FIELD's ABI 1 part of the two structs ABI 2.0 wrote into ends: right
// after `identity` and after `reason`, the last fields ABI 1 had.
static_assert(MQGATE_ABI1_FILLED_mqgate_evt_authenticate == 136);
static_assert(MQGATE_ABI1_SIZE_mqgate_evt_authenticate == 160);
static_assert(MQGATE_ABI1_FILLED_mqgate_evt_authorize == 48);
static_assert(MQGATE_ABI1_SIZE_mqgate_evt_authorize == 80);

TEST_CASE("enum values never change") {
  CHECK(MQGATE_PLUGIN_ABI_VERSION == 2);
  CHECK(MQGATE_PLUGIN_ABI_MINOR == 5);
  CHECK(MQGATE_EVT_MESSAGE == 7);
  CHECK(MQGATE_CHECK_NONE == 0);
  CHECK(MQGATE_CHECK_PER_TOPIC == 1);
  CHECK(MQGATE_CHECK_EVERY == 2);
  CHECK(MQGATE_ABSTAIN == 16);
  CHECK(MQGATE_ALLOW == 17);
  CHECK(MQGATE_DENY == 18);
  CHECK(MQGATE_DEFER == 19);
  CHECK(MQGATE_CONTINUE == 20);
  // The deprecated names of ABI 2.0 and 2.1 are the same values.
  CHECK(MQGATE_VERDICT_ABSTAIN == 16);
  CHECK(MQGATE_VERDICT_ALLOW == 17);
  CHECK(MQGATE_VERDICT_DENY == 18);
  CHECK(MQGATE_VERDICT_DEFER == 19);
  CHECK(MQGATE_VERDICT_CONTINUE == 20);
  CHECK(MQGATE_ACTION_RECEIVE == 3);
  CHECK(MQGATE_CONNACK_BAD_CREDENTIALS == 4);
  CHECK(MQGATE_CONNACK_NOT_AUTHORIZED == 5);
  CHECK(MQGATE_DECISION_ABSTAIN == 0);
  CHECK(MQGATE_DECISION_ALLOW == 1);
  CHECK(MQGATE_DECISION_DENY == 2);
  CHECK(MQGATE_ACTION_PUBLISH == 1);
  CHECK(MQGATE_ACTION_SUBSCRIBE == 2);
  CHECK(MQGATE_EVT_AUTHENTICATE == 1);
  CHECK(MQGATE_EVT_AUTHORIZE == 2);
  CHECK(MQGATE_EVT_CONNECTED == 3);
  CHECK(MQGATE_EVT_DISCONNECTED == 4);
  CHECK(MQGATE_EVT_RELOAD == 5);
  CHECK(MQGATE_EVT_TICK == 6);
  CHECK(MQGATE_OK == 0);
  CHECK(MQGATE_ERR_PLUGIN == -7);
  CHECK(MQGATE_OPT_STRING_ARRAY == 4);
  CHECK(MQGATE_LOG_DEBUG == 3);
}

static int dummy_register_auth_method(mqgate_plugin*, const char*) {
  return MQGATE_OK;
}

TEST_CASE("an ABI 2 plugin built before MQTT 5.0 fields does not see them") {
  mqgate_evt_authenticate evt{};
  evt.struct_size = offsetof(mqgate_evt_authenticate, user_properties);  // the older size
  CHECK(MQGATE_HAS_FIELD(&evt, mqgate_evt_authenticate, connack_code));
  CHECK_FALSE(MQGATE_HAS_FIELD(&evt, mqgate_evt_authenticate, user_properties));
  CHECK_FALSE(MQGATE_HAS_FIELD(&evt, mqgate_evt_authenticate, auth_data_out_len));
  evt.struct_size = sizeof evt;
  CHECK(MQGATE_HAS_FIELD(&evt, mqgate_evt_authenticate, auth_data_out_len));
  mqgate_host_api api{};
  api.struct_size = offsetof(mqgate_host_api, register_auth_method);
  api.register_auth_method = dummy_register_auth_method;
  CHECK_FALSE(MQGATE_API_HAS(&api, register_auth_method));
  api.struct_size = sizeof api;
  CHECK(MQGATE_API_HAS(&api, register_auth_method));
}

TEST_CASE("MQGATE_HAS_FIELD sees only what the struct size covers") {
  mqgate_evt_authorize evt{};
  evt.struct_size = offsetof(mqgate_evt_authorize, reason);  // an "older" host
  CHECK(MQGATE_HAS_FIELD(&evt, mqgate_evt_authorize, retain));
  CHECK_FALSE(MQGATE_HAS_FIELD(&evt, mqgate_evt_authorize, reason));
  evt.struct_size = sizeof evt;
  CHECK(MQGATE_HAS_FIELD(&evt, mqgate_evt_authorize, reason));
}

TEST_CASE("decisions, verdicts and error codes do not overlap") {
  // Error codes are 0 or negative, ABI 1 decisions 0..2, ABI 2 decisions 16..19, verdicts
  // from 20: whatever a callback returns has one meaning.
  for (int v : {MQGATE_ABSTAIN, MQGATE_ALLOW, MQGATE_DENY, MQGATE_DEFER}) {
    CHECK(v > MQGATE_DECISION_DENY);
    CHECK(v != MQGATE_OK);
    CHECK(v < MQGATE_CONTINUE);
  }
  for (int e = MQGATE_ERR_LAST_ + 1; e <= MQGATE_OK; ++e)
    CHECK(e < MQGATE_DECISION_ALLOW);
}

TEST_CASE("an ABI 1 plugin's struct has none of the ABI 2 fields") {
  // The host gives ABI 1 plugins the ABI 1 sizes. They cover the bytes ABI 2.0 placed
  // clean_session, connack_code, filter and deferrable in (ABI 1's reserved slots), but
  // the host neither fills nor reads those for ABI 1: MQGATE_HAS_FIELD must say no.
  mqgate_evt_authenticate a{};
  a.struct_size = MQGATE_EVT_AUTHENTICATE_SIZE_V1;
  CHECK(MQGATE_HAS_FIELD(&a, mqgate_evt_authenticate, assign_client_id));
  CHECK(MQGATE_HAS_FIELD(&a, mqgate_evt_authenticate, identity));  // ABI 1.1, ABI 1 too
  CHECK_FALSE(MQGATE_HAS_FIELD(&a, mqgate_evt_authenticate, clean_session));
  CHECK_FALSE(MQGATE_HAS_FIELD(&a, mqgate_evt_authenticate, connack_code));
  CHECK_FALSE(MQGATE_HAS_FIELD(&a, mqgate_evt_authenticate, user_properties));
  CHECK_FALSE(MQGATE_HAS_FIELD(&a, mqgate_evt_authenticate, auth_data_out_len));
  // An ABI 2 plugin's: all of them (an ABI 2.0 host's size ends before the 2.1 fields).
  a.struct_size = offsetof(mqgate_evt_authenticate, user_properties);
  CHECK(MQGATE_HAS_FIELD(&a, mqgate_evt_authenticate, clean_session));
  CHECK(MQGATE_HAS_FIELD(&a, mqgate_evt_authenticate, connack_code));
  CHECK_FALSE(MQGATE_HAS_FIELD(&a, mqgate_evt_authenticate, user_properties));
  a.struct_size = sizeof a;
  CHECK(MQGATE_HAS_FIELD(&a, mqgate_evt_authenticate, connack_code));
  CHECK(MQGATE_HAS_FIELD(&a, mqgate_evt_authenticate, auth_data_out_len));

  mqgate_evt_authorize z{};
  z.struct_size = MQGATE_EVT_AUTHORIZE_SIZE_V1;
  CHECK(MQGATE_HAS_FIELD(&z, mqgate_evt_authorize, reason));
  CHECK_FALSE(MQGATE_HAS_FIELD(&z, mqgate_evt_authorize, filter));
  CHECK_FALSE(MQGATE_HAS_FIELD(&z, mqgate_evt_authorize, deferrable));
  CHECK_FALSE(MQGATE_HAS_FIELD(&z, mqgate_evt_authorize, reason_code));
  z.struct_size = offsetof(mqgate_evt_authorize, reason_code);  // an ABI 2.0 host
  CHECK(MQGATE_HAS_FIELD(&z, mqgate_evt_authorize, filter));
  CHECK(MQGATE_HAS_FIELD(&z, mqgate_evt_authorize, deferrable));
  CHECK_FALSE(MQGATE_HAS_FIELD(&z, mqgate_evt_authorize, reason_code));
  z.struct_size = sizeof z;
  CHECK(MQGATE_HAS_FIELD(&z, mqgate_evt_authorize, deferrable));
  CHECK(MQGATE_HAS_FIELD(&z, mqgate_evt_authorize, reason_string));
}

TEST_CASE("MQGATE_ABI_MINOR: the host's field, or what an older host's table size tells") {
  mqgate_host_api api{};
  api.abi_version = 2;
  api.abi_minor = 2;
  api.struct_size = sizeof api;
  CHECK(MQGATE_ABI_MINOR(&api) == 2);
  api.struct_size = offsetof(mqgate_host_api, abi_minor);  // mqgate 0.3.0: ABI 2.1
  CHECK(MQGATE_ABI_MINOR(&api) == 1);
  api.struct_size = offsetof(mqgate_host_api, register_auth_method);  // ABI 2.0
  CHECK(MQGATE_ABI_MINOR(&api) == 0);
  api.abi_version = 1;
  api.struct_size = offsetof(mqgate_host_api, defer);  // what ABI 1 plugins get: 1.1
  CHECK(MQGATE_ABI_MINOR(&api) == 1);
  api.struct_size = offsetof(mqgate_host_api, client_identity);  // ABI 1.0
  CHECK(MQGATE_ABI_MINOR(&api) == 0);
}

TEST_CASE("MQGATE_API_HAS(deferred_is_live): only hosts of ABI 2.4 and later") {
  mqgate_host_api api = *mqgate::detail::host_api(2);
  CHECK(MQGATE_API_HAS(&api, deferred_is_live));
  CHECK(MQGATE_ABI_MINOR(&api) == 5);
  CHECK(api.deferred_is_live(nullptr) == 0);
  api.struct_size = offsetof(mqgate_host_api, deferred_is_live);  // an ABI 2.3 host
  CHECK_FALSE(MQGATE_API_HAS(&api, deferred_is_live));
  CHECK_FALSE(MQGATE_API_HAS(mqgate::detail::host_api(1), deferred_is_live));
}

TEST_CASE("MQGATE_API_HAS(claim_topic, send_to_client, counters): only hosts of ABI 2.5") {
  mqgate_host_api api = *mqgate::detail::host_api(2);
  CHECK(MQGATE_API_HAS(&api, claim_topic));
  CHECK(MQGATE_API_HAS(&api, send_to_client));
  CHECK(MQGATE_API_HAS(&api, register_counter));
  CHECK(MQGATE_API_HAS(&api, counter_add));
  api.struct_size = offsetof(mqgate_host_api, claim_topic);  // an ABI 2.4 host
  CHECK_FALSE(MQGATE_API_HAS(&api, claim_topic));
  CHECK_FALSE(MQGATE_API_HAS(mqgate::detail::host_api(1), send_to_client));
}
