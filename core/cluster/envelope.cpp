#include "cluster/envelope.hpp"

#include "mqtt/properties.hpp"

namespace mqgate::cluster {

namespace {

constexpr uint8_t kRetainFlag = 4, kExpiryFlag = 8;

void put(std::string& out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i)
    out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

bool get(std::string_view& in, uint64_t& v, size_t bytes) {
  if (in.size() < bytes) return false;
  v = 0;
  for (size_t i = 0; i < bytes; ++i)
    v = v << 8 | static_cast<uint8_t>(in[i]);
  in.remove_prefix(bytes);
  return true;
}

bool get_bytes(std::string_view& in, std::string_view& out, size_t len_bytes) {
  uint64_t n = 0;
  if (!get(in, n, len_bytes) || in.size() < n) return false;
  out = in.substr(0, n);
  in.remove_prefix(n);
  return true;
}

// Only what mqtt5::forwarded_properties() sends may come back.
bool valid_props(std::string_view props) {
  if (props.empty()) return true;
  std::string block;
  codec::write_varint(block, static_cast<uint32_t>(props.size()));
  block.append(props);
  std::string_view in = block;
  codec::Properties p;
  if (codec::decode_properties(in, codec::PropertyContext::kPublish, p).error !=
          codec::PropertyError::kNone ||
      !in.empty())
    return false;
  return !p.message_expiry_interval && !p.topic_alias && p.subscription_identifiers.empty();
}

}  // namespace

void encode_envelope(std::string& out, const Envelope& e) {
  out.reserve(out.size() + 32 + e.node.size() + e.client_id.size() + e.props.size() +
              e.payload.size());
  out.push_back(static_cast<char>(kEnvelopeVersion));
  out.push_back(static_cast<char>((e.qos & 3) | (e.retain ? kRetainFlag : 0) |
                                  (e.expiry_s ? kExpiryFlag : 0)));
  put(out, e.instance, 8);
  put(out, e.sequence, 8);
  if (e.expiry_s) put(out, *e.expiry_s, 4);
  put(out, e.node.size(), 2);
  out.append(e.node);
  put(out, e.client_id.size(), 2);
  out.append(e.client_id);
  put(out, e.props.size(), 4);
  out.append(e.props);
  out.append(e.payload);
}

bool decode_envelope(std::string_view in, Envelope& e, const char*& why) {
  uint64_t version = 0, flags = 0, v = 0;
  if (!get(in, version, 1) || !get(in, flags, 1)) {
    why = "shorter than its header";
    return false;
  }
  if (version != kEnvelopeVersion) {
    why = "unknown envelope version";
    return false;
  }
  if ((flags & ~uint64_t{0xf}) != 0 || (flags & 3) == 3) {
    why = "bad flags";
    return false;
  }
  e.qos = static_cast<uint8_t>(flags & 3);
  e.retain = (flags & kRetainFlag) != 0;
  if (!get(in, e.instance, 8) || !get(in, e.sequence, 8)) {
    why = "shorter than its header";
    return false;
  }
  e.expiry_s.reset();
  if (flags & kExpiryFlag) {
    if (!get(in, v, 4)) {
      why = "shorter than its header";
      return false;
    }
    e.expiry_s = static_cast<uint32_t>(v);
  }
  if (!get_bytes(in, e.node, 2) || !get_bytes(in, e.client_id, 2) || !get_bytes(in, e.props, 4)) {
    why = "a length runs past the end";
    return false;
  }
  if (!valid_props(e.props)) {
    why = "malformed or unexpected MQTT 5 properties";
    return false;
  }
  e.payload = in;
  return true;
}

}  // namespace mqgate::cluster
