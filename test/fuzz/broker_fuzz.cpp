// libFuzzer target: arbitrary byte streams from three clients into the broker logic
// (sessions, router, retained store, wills, takeover). Must never crash or leak.
// The first byte of each chunk picks the client and what happens to it.
//
// MQTT 5.0 sessions: a new client whose first chunk starts with kScriptMarker is scripted
// instead (Script below): a 5.0 CONNECT with properties drawn from the chunk, then every
// chunk of it is read as operations that build well-formed 5.0 packets (PUBLISH with topic
// aliases and properties, SUBSCRIBE with options and identifiers, acks with reason codes,
// AUTH, DISCONNECT with properties) or pass raw bytes through, so the fuzzer reaches the
// broker's 5.0 paths without having to find the encodings first.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../lib/packet_pump.hpp"
#include "broker/broker.hpp"
#include "mqtt/decoder.hpp"
#include "mqtt/encoder.hpp"
#include "mqtt/framer.hpp"

using namespace mqgate;

namespace {

class FuzzClient;
// Closes requested during a step, reported to the broker after it, as the server does.
std::vector<FuzzClient*> pending_closes;

class FuzzClient final : public Client {
 public:
  FuzzClient(Broker& b, const ListenerConfig* l) : Client(l, "127.0.0.1:1"), broker_(b) {
    broker_.on_open(*this, 0);
  }
  ~FuzzClient() override {
    close("fuzz over");
    report();
    std::erase(pending_closes, this);
  }
  void report() {
    if (!close_requested() || reported_) return;
    reported_ = true;
    framer_.clear();
    broker_.on_closed(*this, close_reason());
  }
  void feed(std::string_view bytes, uint64_t now) {
    test::pump_packets(framer_, broker_, *this, bytes, now);
    out_.clear();  // the "network" drops what the broker sends
  }
  bool scripted = false;  // an MQTT 5.0 session driven by Script

 protected:
  void schedule_flush() override { flush_pending_ = false; }
  void on_close_requested() override { pending_closes.push_back(this); }
  void on_resume_requested() override {}

 private:
  Broker& broker_;
  codec::Framer framer_;
  bool reported_ = false;
};

// --- MQTT 5.0 scripts ------------------------------------------------------------------
constexpr uint8_t kScriptMarker = 0x05;  // a reserved packet type: raw, it only closes

// Reads the script's bytes; past the end everything is 0.
class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  bool done() const { return in_.empty(); }
  uint8_t u8() {
    if (in_.empty()) return 0;
    const auto v = static_cast<uint8_t>(in_[0]);
    in_.remove_prefix(1);
    return v;
  }
  uint16_t u16() {
    const uint8_t hi = u8();
    return static_cast<uint16_t>((hi << 8) | u8());
  }
  std::string_view bytes(size_t n) {
    n = std::min(n, in_.size());
    std::string_view out = in_.substr(0, n);
    in_.remove_prefix(n);
    return out;
  }

 private:
  std::string_view in_;
};

// A few topics and filters that overlap, so messages find subscribers.
constexpr std::string_view kTopics[] = {"a", "a/b", "a/b/c", "$SYS/x", "s/1", ""};
constexpr std::string_view kFilters[] = {"a/#",        "a/+",          "+/b/#", "#", "s/1",
                                          "$share/g/a", "$share/h/a/#", "a/b"};

// Properties for a PUBLISH, SUBSCRIBE, ack, AUTH or DISCONNECT: any of them, drawn from
// `r` (the codec validates them against the packet; some combinations are invalid on
// purpose).
codec::Properties fuzz_properties(Reader& r, std::string_view text) {
  codec::Properties p;
  const uint16_t bits = r.u16();
  if (bits & 0x0001) p.payload_format_indicator = r.u8() & 1;
  if (bits & 0x0002) p.message_expiry_interval = r.u8() % 4;
  if (bits & 0x0004) p.content_type = text;
  if (bits & 0x0008) p.response_topic = kTopics[r.u8() % std::size(kTopics)];
  if (bits & 0x0010) p.correlation_data = text;
  if (bits & 0x0020) p.subscription_identifiers.push_back(r.u8() + 1u);
  if (bits & 0x0040) p.topic_alias = r.u8() % 20;
  if (bits & 0x0080) p.user_properties.emplace_back(text, text);
  if (bits & 0x0100) p.reason_string = text;
  if (bits & 0x0200) p.authentication_method = text;
  if (bits & 0x0400) p.authentication_data = text;
  if (bits & 0x0800) p.session_expiry_interval = r.u8() % 3;
  return p;
}

// A 5.0 CONNECT with properties from `r`.
std::string script_connect(Reader& r) {
  codec::Connect c;
  c.protocol_name = "MQTT";
  c.protocol_level = codec::kProtocolLevel5;
  const uint8_t flags = r.u8();
  c.clean_session = flags & 1;
  c.keepalive = flags & 2 ? 1 : 0;
  static constexpr std::string_view kIds[] = {"c5a", "c5b", "c5c", ""};
  c.client_id = kIds[(flags >> 2) & 3];
  if (flags & 0x10) c.props.session_expiry_interval = r.u8() % 4;
  if (flags & 0x20) c.props.receive_maximum = static_cast<uint16_t>(r.u8() % 4);  // 0 invalid
  if (flags & 0x40) c.props.maximum_packet_size = r.u8() % 2 ? 40 + r.u8() : 0;
  if (flags & 0x80) c.props.topic_alias_maximum = r.u8() % 4;
  const uint8_t more = r.u8();
  if (more & 1) c.props.request_problem_information = more & 2 ? 1 : 0;
  if (more & 4) c.props.user_properties.emplace_back("k", "v");
  if (more & 8) c.props.authentication_method = "m";
  if (more & 16) {
    codec::Will w;
    w.topic = kTopics[r.u8() % std::size(kTopics)];
    w.payload = "will";
    w.qos = (more >> 5) % 3;
    w.retain = more & 0x80;
    w.props.will_delay_interval = r.u8() % 3;
    c.will = w;
  }
  std::string out;
  codec::encode_connect(out, c);
  return out;
}

// One chunk of a scripted session: operations until the bytes run out.
std::string script_packets(Reader& r) {
  std::string out;
  while (!r.done()) {
    const uint8_t op = r.u8();
    const std::string_view text = r.bytes(op >> 5);         // up to 7 bytes of property text
    const uint16_t id = static_cast<uint16_t>(r.u8() % 4);  // 0 is invalid on purpose
    switch (op % 8) {
      case 0: {  // PUBLISH, possibly aliased (empty topic) and with any properties
        const uint8_t f = r.u8();
        const uint8_t qos = f % 3;
        codec::Properties p = fuzz_properties(r, text);
        codec::encode_publish(out, kTopics[(f >> 2) % std::size(kTopics)], text, qos, f & 0x80,
                              f & 0x40, qos ? id : 0, p);
        break;
      }
      case 1: {  // SUBSCRIBE with options
        const uint8_t f = r.u8();
        codec::SubscribeTopic t{kFilters[f % std::size(kFilters)], static_cast<uint8_t>(f >> 6)};
        const uint8_t o = r.u8();
        t.no_local = o & 1;
        t.retain_as_published = o & 2;
        t.retain_handling = (o >> 2) & 3;  // 3 is invalid
        codec::Properties p = fuzz_properties(r, text);
        codec::encode_subscribe_v5(out, id, std::span<const codec::SubscribeTopic>(&t, 1), &p);
        break;
      }
      case 2: {  // UNSUBSCRIBE
        const std::string_view f = kFilters[r.u8() % std::size(kFilters)];
        codec::encode_unsubscribe_v5(out, id, std::span<const std::string_view>(&f, 1));
        break;
      }
      case 3: {  // PUBACK, PUBREC, PUBREL, PUBCOMP with a reason code and properties
        static constexpr codec::PacketType kAcks[] = {
            codec::PacketType::kPuback, codec::PacketType::kPubrec, codec::PacketType::kPubrel,
            codec::PacketType::kPubcomp};
        const uint8_t f = r.u8();
        codec::Properties p = fuzz_properties(r, text);
        codec::encode_ack_v5(out, kAcks[f % 4], id, f & 0x80 ? 0x80 : (f >> 2) & 0x1f, &p);
        break;
      }
      case 4: {  // AUTH (the broker offers no enhanced authentication)
        codec::Properties p = fuzz_properties(r, text);
        codec::encode_auth(out, r.u8() % 2 ? 0x18 : 0x19, &p);
        break;
      }
      case 5: {  // DISCONNECT with a reason and properties (session expiry among them)
        const uint8_t reason = r.u8() % 2 ? 0x04 : 0x00;
        codec::Properties p = fuzz_properties(r, text);
        codec::encode_disconnect_v5(out, reason, &p);
        break;
      }
      case 6:
        codec::encode_pingreq(out);
        break;
      default:  // raw bytes, as they come
        out.append(r.bytes(r.u8() % 16));
        break;
    }
  }
  return out;
}

void report_closes() {
  while (!pending_closes.empty()) {
    FuzzClient* c = pending_closes.front();
    pending_closes.erase(pending_closes.begin());
    c->report();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  log::set_level(log::Level::kError);
  LimitsConfig limits;
  limits.max_packet_size = 4096;
  limits.max_inflight_messages = 3;
  limits.max_queued_messages = 5;
  ListenerConfig listener;
  AllowAllHooks hooks;
  Broker broker(limits, hooks);
  std::unique_ptr<FuzzClient> clients[3];
  uint64_t now = 0;
  size_t i = 0;
  while (i < size) {
    const uint8_t control = data[i++];
    const size_t len = std::min<size_t>(size - i, (control >> 3) + 1);
    const size_t which = control % 3;
    auto& c = clients[which];
    if ((control & 0x04) && c) {
      c.reset();  // the network drops this client
    }
    std::string_view chunk(reinterpret_cast<const char*>(data + i), len);
    std::string script;
    if (!c || c->close_requested()) {
      c = std::make_unique<FuzzClient>(broker, &listener);
      if (!chunk.empty() && static_cast<uint8_t>(chunk[0]) == kScriptMarker) {
        c->scripted = true;
        Reader r(chunk.substr(1));
        script = script_connect(r);
        script += script_packets(r);
        chunk = script;
      }
    } else if (c->scripted) {
      Reader r(chunk);
      script = script_packets(r);
      chunk = script;
    }
    now += 100;
    c->feed(chunk, now);
    report_closes();
    for (auto& other : clients) {
      if (other) broker.check_timeouts(*other, now);
      report_closes();
    }
    i += len;
  }
  return 0;
}
