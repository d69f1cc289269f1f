/*
 * abi_layout: prints, one per line, the offset and size of every field and the value of
 * every constant a plugin binary may depend on, as the mqgate_plugin.h it is compiled
 * against sees them. Built four times (test/plugins/meson.build): against the frozen
 * ABI 1.1 header (LAYOUT_ABI 1), the frozen ABI 2.1 and 2.4 headers (21, 24) and the
 * current one (25). test_plugin_abi_compat.py checks that every line of the older outputs is also
 * a line of the current one: nothing a built plugin reads or writes has moved, changed
 * size or changed value.
 *
 * Keys name what a plugin of that ABI sees; "abi1_size.<struct>" is the struct_size the
 * host gives ABI 1 plugins (sizeof in the ABI 1 header).
 */
#include <stddef.h>
#include <stdio.h>

#include "mqgate_plugin.h"

#define FIELD(type, field)                                                          \
  printf("%s.%s offset %lu size %lu\n", #type, #field, (unsigned long)offsetof(type, field), \
         (unsigned long)sizeof(((type *)0)->field))
#define SIZE(type) printf("sizeof %s %lu\n", #type, (unsigned long)sizeof(type))
#define VALUE(name) printf("%s = %ld\n", #name, (long)(name))

int main(void) {
  /* --- ABI 1 (1.0 and 1.1): in every header ------------------------------------- */
  FIELD(mqgate_cert, der);
  FIELD(mqgate_cert, der_len);
  SIZE(mqgate_cert);

  FIELD(mqgate_evt_authenticate, struct_size);
  FIELD(mqgate_evt_authenticate, client);
  FIELD(mqgate_evt_authenticate, client_id);
  FIELD(mqgate_evt_authenticate, client_id_generated);
  FIELD(mqgate_evt_authenticate, username);
  FIELD(mqgate_evt_authenticate, password);
  FIELD(mqgate_evt_authenticate, password_len);
  FIELD(mqgate_evt_authenticate, protocol_level);
  FIELD(mqgate_evt_authenticate, listener);
  FIELD(mqgate_evt_authenticate, peer_address);
  FIELD(mqgate_evt_authenticate, peer_chain);
  FIELD(mqgate_evt_authenticate, peer_chain_len);
  FIELD(mqgate_evt_authenticate, tls_version);
  FIELD(mqgate_evt_authenticate, tls_cipher);
  FIELD(mqgate_evt_authenticate, reason);
  FIELD(mqgate_evt_authenticate, assign_client_id);
  FIELD(mqgate_evt_authenticate, identity);

  FIELD(mqgate_evt_authorize, struct_size);
  FIELD(mqgate_evt_authorize, client);
  FIELD(mqgate_evt_authorize, action);
  FIELD(mqgate_evt_authorize, topic);
  FIELD(mqgate_evt_authorize, qos);
  FIELD(mqgate_evt_authorize, retain);
  FIELD(mqgate_evt_authorize, reason);

#if LAYOUT_ABI == 1
  printf("abi1_size.mqgate_evt_authenticate %lu\n",
         (unsigned long)sizeof(mqgate_evt_authenticate));
  printf("abi1_size.mqgate_evt_authorize %lu\n", (unsigned long)sizeof(mqgate_evt_authorize));
  printf("abi1_size.mqgate_host_api %lu\n", (unsigned long)sizeof(mqgate_host_api));
#else
  printf("abi1_size.mqgate_evt_authenticate %lu\n",
         (unsigned long)MQGATE_EVT_AUTHENTICATE_SIZE_V1);
  printf("abi1_size.mqgate_evt_authorize %lu\n", (unsigned long)MQGATE_EVT_AUTHORIZE_SIZE_V1);
  printf("abi1_size.mqgate_host_api %lu\n", (unsigned long)offsetof(mqgate_host_api, defer));
#endif

  FIELD(mqgate_evt_connected, struct_size);
  FIELD(mqgate_evt_connected, client);
  FIELD(mqgate_evt_connected, session_present);
  FIELD(mqgate_evt_connected, reserved);
  SIZE(mqgate_evt_connected);
  FIELD(mqgate_evt_disconnected, struct_size);
  FIELD(mqgate_evt_disconnected, client);
  FIELD(mqgate_evt_disconnected, reason);
  FIELD(mqgate_evt_disconnected, reserved);
  SIZE(mqgate_evt_disconnected);
  FIELD(mqgate_evt_reload, struct_size);
  FIELD(mqgate_evt_reload, options);
  FIELD(mqgate_evt_reload, errmsg);
  FIELD(mqgate_evt_reload, reserved);
  SIZE(mqgate_evt_reload);
  FIELD(mqgate_evt_tick, struct_size);
  FIELD(mqgate_evt_tick, now_ms);
  FIELD(mqgate_evt_tick, reserved);
  SIZE(mqgate_evt_tick);

  FIELD(mqgate_host_api, struct_size);
  FIELD(mqgate_host_api, abi_version);
  FIELD(mqgate_host_api, broker_version);
  FIELD(mqgate_host_api, register_event);
  FIELD(mqgate_host_api, log);
  FIELD(mqgate_host_api, mprintf);
  FIELD(mqgate_host_api, strdup);
  FIELD(mqgate_host_api, free);
  FIELD(mqgate_host_api, strerror);
  FIELD(mqgate_host_api, opt_count);
  FIELD(mqgate_host_api, opt_key);
  FIELD(mqgate_host_api, opt_type);
  FIELD(mqgate_host_api, opt_string);
  FIELD(mqgate_host_api, opt_integer);
  FIELD(mqgate_host_api, opt_boolean);
  FIELD(mqgate_host_api, opt_array_size);
  FIELD(mqgate_host_api, opt_array_string);
  FIELD(mqgate_host_api, opt_location);
  FIELD(mqgate_host_api, client_id);
  FIELD(mqgate_host_api, client_username);
  FIELD(mqgate_host_api, client_listener);
  FIELD(mqgate_host_api, client_peer_address);
  FIELD(mqgate_host_api, client_peer_chain);
  FIELD(mqgate_host_api, client_set_data);
  FIELD(mqgate_host_api, client_get_data);
  FIELD(mqgate_host_api, topic_matches);
  FIELD(mqgate_host_api, client_identity);

  VALUE(MQGATE_OK);
  VALUE(MQGATE_ERR_INVALID);
  VALUE(MQGATE_ERR_NOT_FOUND);
  VALUE(MQGATE_ERR_TYPE);
  VALUE(MQGATE_ERR_NOMEM);
  VALUE(MQGATE_ERR_CONFIG);
  VALUE(MQGATE_ERR_UNSUPPORTED);
  VALUE(MQGATE_ERR_PLUGIN);
  VALUE(MQGATE_DECISION_ABSTAIN);
  VALUE(MQGATE_DECISION_ALLOW);
  VALUE(MQGATE_DECISION_DENY);
  VALUE(MQGATE_ACTION_PUBLISH);
  VALUE(MQGATE_ACTION_SUBSCRIBE);
  VALUE(MQGATE_LOG_ERROR);
  VALUE(MQGATE_LOG_WARNING);
  VALUE(MQGATE_LOG_INFO);
  VALUE(MQGATE_LOG_DEBUG);
  VALUE(MQGATE_OPT_MISSING);
  VALUE(MQGATE_OPT_STRING);
  VALUE(MQGATE_OPT_INTEGER);
  VALUE(MQGATE_OPT_BOOLEAN);
  VALUE(MQGATE_OPT_STRING_ARRAY);
  VALUE(MQGATE_OPT_OTHER);
  VALUE(MQGATE_EVT_AUTHENTICATE);
  VALUE(MQGATE_EVT_AUTHORIZE);
  VALUE(MQGATE_EVT_CONNECTED);
  VALUE(MQGATE_EVT_DISCONNECTED);
  VALUE(MQGATE_EVT_RELOAD);
  VALUE(MQGATE_EVT_TICK);

#if LAYOUT_ABI >= 21
  /* --- ABI 2.0 and 2.1 ------------------------------------------------------------ */
  VALUE(MQGATE_PLUGIN_ABI_VERSION);
  FIELD(mqgate_evt_authenticate, clean_session);
  FIELD(mqgate_evt_authenticate, connack_code);
  FIELD(mqgate_evt_authenticate, reserved);
  FIELD(mqgate_evt_authenticate, user_properties);
  FIELD(mqgate_evt_authenticate, user_properties_len);
  FIELD(mqgate_evt_authenticate, auth_method);
  FIELD(mqgate_evt_authenticate, auth_data);
  FIELD(mqgate_evt_authenticate, auth_data_len);
  FIELD(mqgate_evt_authenticate, auth_step);
  FIELD(mqgate_evt_authenticate, reauthenticate);
  FIELD(mqgate_evt_authenticate, reason_code);
  FIELD(mqgate_evt_authenticate, reason_string);
  FIELD(mqgate_evt_authenticate, auth_data_out);
  FIELD(mqgate_evt_authenticate, auth_data_out_len);
  FIELD(mqgate_evt_authenticate, reserved2);
  SIZE(mqgate_evt_authenticate);

  FIELD(mqgate_evt_authorize, filter);
  FIELD(mqgate_evt_authorize, deferrable);
  FIELD(mqgate_evt_authorize, reserved);
  FIELD(mqgate_evt_authorize, reason_code);
  FIELD(mqgate_evt_authorize, reason_string);
  FIELD(mqgate_evt_authorize, reserved2);
  SIZE(mqgate_evt_authorize);

  FIELD(mqgate_user_property, name);
  FIELD(mqgate_user_property, value);
  SIZE(mqgate_user_property);

  FIELD(mqgate_completion, struct_size);
  FIELD(mqgate_completion, verdict);
  FIELD(mqgate_completion, reason);
  FIELD(mqgate_completion, identity);
  FIELD(mqgate_completion, assign_client_id);
  FIELD(mqgate_completion, connack_code);
  FIELD(mqgate_completion, reserved);
  FIELD(mqgate_completion, reason_code);
  FIELD(mqgate_completion, reason_string);
  FIELD(mqgate_completion, auth_data);
  FIELD(mqgate_completion, auth_data_len);
  FIELD(mqgate_completion, reserved2);
  SIZE(mqgate_completion);

  FIELD(mqgate_host_api, defer);
  FIELD(mqgate_host_api, complete);
  FIELD(mqgate_host_api, disconnect);
  FIELD(mqgate_host_api, client_protocol_level);
  FIELD(mqgate_host_api, client_clean_session);
  FIELD(mqgate_host_api, client_tls_version);
  FIELD(mqgate_host_api, client_tls_cipher);
  FIELD(mqgate_host_api, filter_covers);
  FIELD(mqgate_host_api, opt_path);
  FIELD(mqgate_host_api, register_auth_method);
  FIELD(mqgate_host_api, alloc);

  VALUE(MQGATE_VERDICT_ABSTAIN);
  VALUE(MQGATE_VERDICT_ALLOW);
  VALUE(MQGATE_VERDICT_DENY);
  VALUE(MQGATE_VERDICT_DEFER);
  VALUE(MQGATE_VERDICT_CONTINUE);
  VALUE(MQGATE_ACTION_RECEIVE);
  VALUE(MQGATE_CONNACK_BAD_CREDENTIALS);
  VALUE(MQGATE_CONNACK_NOT_AUTHORIZED);
#endif

#if LAYOUT_ABI >= 22
  /* --- ABI 2.2: new, so compared with nothing older -------------------------------- */
  FIELD(mqgate_host_api, abi_minor);
  VALUE(MQGATE_PLUGIN_ABI_MINOR);
  VALUE(MQGATE_ABSTAIN);
  VALUE(MQGATE_ALLOW);
  VALUE(MQGATE_DENY);
  VALUE(MQGATE_DEFER);
  VALUE(MQGATE_CONTINUE);
#endif

#if LAYOUT_ABI >= 24
  /* --- ABI 2.4 ----------------------------------------------------------------------- */
  FIELD(mqgate_host_api, deferred_is_live);
#endif

#if LAYOUT_ABI >= 25
  /* --- ABI 2.5: broker-owned topics, plugin counters ------------------------------- */
  FIELD(mqgate_evt_authenticate, session_expiry);
  VALUE(MQGATE_EVT_MESSAGE);
  FIELD(mqgate_evt_message, struct_size);
  FIELD(mqgate_evt_message, client);
  FIELD(mqgate_evt_message, topic);
  FIELD(mqgate_evt_message, payload);
  FIELD(mqgate_evt_message, payload_len);
  FIELD(mqgate_evt_message, qos);
  FIELD(mqgate_evt_message, reply_to);
  FIELD(mqgate_evt_message, response_topic);
  FIELD(mqgate_evt_message, correlation_data);
  FIELD(mqgate_evt_message, correlation_data_len);
  FIELD(mqgate_evt_message, content_type);
  FIELD(mqgate_evt_message, user_properties);
  FIELD(mqgate_evt_message, user_properties_len);
  FIELD(mqgate_evt_message, reason);
  FIELD(mqgate_evt_message, reason_code);
  FIELD(mqgate_evt_message, reason_string);
  FIELD(mqgate_evt_message, reserved);
  FIELD(mqgate_outgoing, struct_size);
  FIELD(mqgate_outgoing, to);
  FIELD(mqgate_outgoing, topic);
  FIELD(mqgate_outgoing, payload);
  FIELD(mqgate_outgoing, payload_len);
  FIELD(mqgate_outgoing, qos);
  FIELD(mqgate_outgoing, correlation_data);
  FIELD(mqgate_outgoing, correlation_data_len);
  FIELD(mqgate_outgoing, content_type);
  FIELD(mqgate_outgoing, user_properties);
  FIELD(mqgate_outgoing, user_properties_len);
  FIELD(mqgate_outgoing, reserved);
  FIELD(mqgate_host_api, claim_topic);
  FIELD(mqgate_host_api, send_to_client);
  FIELD(mqgate_host_api, register_counter);
  FIELD(mqgate_host_api, counter_add);
#endif
  return 0;
}
