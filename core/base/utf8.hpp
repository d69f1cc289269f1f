// UTF-8 validation for MQTT strings (MQTT 3.1.1 section 1.5.3).
#pragma once

#include <string_view>

namespace mqgate::codec {

// True if `s` is well-formed UTF-8 (no overlong forms, no surrogates U+D800..U+DFFF,
// nothing above U+10FFFF) and contains no U+0000 [MQTT-1.5.3-1, MQTT-1.5.3-2].
bool is_valid_mqtt_utf8(std::string_view s);

// True if `s` is well-formed UTF-8, U+0000 allowed: character data that is not an MQTT
// string (an MQTT 5 payload with Payload Format Indicator 1, a WebSocket close reason).
bool is_valid_utf8_payload(std::string_view s);

}  // namespace mqgate::codec
