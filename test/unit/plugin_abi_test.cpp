// Freezes the plugin ABI's binary layout (LP64): a change here breaks every plugin
// built against an earlier header, so it must be a deliberate ABI version bump.
#include <doctest/doctest.h>

#include <cstddef>

#include "mqgate_plugin.h"

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
FIELD_AT(mqgate_evt_authenticate, identity, 128);
FIELD_AT(mqgate_evt_authenticate, reserved, 136);
static_assert(sizeof(mqgate_evt_authenticate) == 160);

FIELD_AT(mqgate_evt_authorize, client, 8);
FIELD_AT(mqgate_evt_authorize, action, 16);
FIELD_AT(mqgate_evt_authorize, topic, 24);
FIELD_AT(mqgate_evt_authorize, qos, 32);
FIELD_AT(mqgate_evt_authorize, retain, 36);
FIELD_AT(mqgate_evt_authorize, reason, 40);
FIELD_AT(mqgate_evt_authorize, reserved, 48);
static_assert(sizeof(mqgate_evt_authorize) == 80);

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
FIELD_AT(mqgate_host_api, client_identity, 208);
static_assert(sizeof(mqgate_host_api) == 216);

TEST_CASE("enum values never change") {
  CHECK(MQGATE_PLUGIN_ABI_VERSION == 1);
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

TEST_CASE("MQGATE_HAS_FIELD sees only what the struct size covers") {
  mqgate_evt_authorize evt{};
  evt.struct_size = offsetof(mqgate_evt_authorize, reason);  // an "older" host
  CHECK(MQGATE_HAS_FIELD(&evt, mqgate_evt_authorize, retain));
  CHECK_FALSE(MQGATE_HAS_FIELD(&evt, mqgate_evt_authorize, reason));
  evt.struct_size = sizeof evt;
  CHECK(MQGATE_HAS_FIELD(&evt, mqgate_evt_authorize, reason));
}
