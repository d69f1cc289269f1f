// A Client without a socket: input is cut with the transport's framer, output
// accumulates in a string the test reads back as packets; close() records the reason
// and tells the broker after the feed that asked for it, like a transport does.
#pragma once

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "../lib/packet_pump.hpp"
#include "broker/broker.hpp"
#include "client/client.hpp"
#include "config/config.hpp"
#include "mqtt/decoder.hpp"
#include "mqtt/encoder.hpp"
#include "mqtt/framer.hpp"

namespace mqgate::test {

// A server-to-client packet as a test wants to look at it.
struct OutPacket {
  codec::PacketType type;
  uint8_t flags = 0;
  std::string body;
  // PUBLISH fields (for PUBLISH only).
  std::string topic, payload;
  uint8_t qos = 0;
  bool retain = false, dup = false;
  uint16_t packet_id = 0;
};

inline std::vector<OutPacket> parse_out(std::string& bytes) {
  std::vector<OutPacket> out;
  std::string_view rest = bytes;
  while (!rest.empty()) {
    codec::HeaderResult h = codec::parse_fixed_header(rest);
    REQUIRE(h.status == codec::HeaderStatus::kComplete);
    REQUIRE(rest.size() >= h.header.packet_length());
    OutPacket p;
    p.type = h.header.type;
    p.flags = h.header.flags;
    p.body = std::string(rest.substr(h.header.header_length, h.header.remaining_length));
    if (p.type == codec::PacketType::kPublish) {
      codec::Packet d;
      REQUIRE(codec::decode_body(h.header, p.body, 4, d) == codec::DecodeError::kNone);
      auto& pub = std::get<codec::Publish>(d);
      p.topic = pub.topic;
      p.payload = pub.payload;
      p.qos = pub.qos;
      p.retain = pub.retain;
      p.dup = pub.dup;
      p.packet_id = pub.packet_id;
    } else if (p.body.size() >= 2 && p.type != codec::PacketType::kConnack) {
      p.packet_id = static_cast<uint16_t>((uint8_t(p.body[0]) << 8) | uint8_t(p.body[1]));
    }
    out.push_back(std::move(p));
    rest.remove_prefix(h.header.packet_length());
  }
  bytes.clear();
  return out;
}

class FakeClient final : public Client {
 public:
  FakeClient(Broker& broker, const ListenerConfig* listener, std::string peer = "127.0.0.1:5555")
      : Client(listener, std::move(peer)), broker_(broker) {
    broker_.on_open(*this, 0);
  }
  ~FakeClient() override {
    close("test over");
    report_closes();
    std::erase(pending(), this);
  }

  // Feeds encoded bytes (in any splits: an incomplete tail waits for the next feed) as
  // the transport would: closes asked for meanwhile are reported once it returns.
  void feed(std::string_view bytes, uint64_t now_ms = 0) {
    Call call;
    test::pump_packets(framer_, broker_, *this, bytes, now_ms);
  }

  // Around a test's own call into the broker (check_timeouts, a plugin's decision...),
  // as the server does around each: closes requested during it are reported after it
  // returns, never from inside it (the broker asserts that in debug builds).
  class Call {
   public:
    Call() { ++depth(); }
    ~Call() {
      if (--depth() == 0) report_closes();
    }
    Call(const Call&) = delete;
    Call& operator=(const Call&) = delete;
  };

  std::vector<OutPacket> take() { return parse_out(out_); }

  bool closed = false;  // close() was called
  std::string close_reason;
  // Client::resume_input() requests (this fake keeps feeding regardless of
  // input_held(): a test must not feed a client the broker holds).
  int resumes = 0;

 protected:
  void schedule_flush() override { flush_pending_ = false; }
  void on_resume_requested() override { ++resumes; }
  void on_close_requested() override {
    closed = true;
    close_reason = Client::close_reason();
    pending().push_back(this);
    // A test's own close(), outside any broker call: nothing to wait for.
    if (depth() == 0) report_closes();
  }

 private:
  // Like the server's: closes requested during a feed (this client's or, on a
  // takeover, another's) are reported to the broker after it.
  static std::vector<FakeClient*>& pending() {
    static std::vector<FakeClient*> list;
    return list;
  }
  static int& depth() {
    static int d = 0;
    return d;
  }
  static void report_closes() {
    while (!pending().empty()) {
      FakeClient* c = pending().front();
      pending().erase(pending().begin());
      c->framer_.clear();
      c->broker_.on_closed(*c, c->close_reason.c_str());
    }
  }

  Broker& broker_;
  codec::Framer framer_;
};

// Encoders for what a test client sends.
inline std::string connect_packet(std::string_view id, bool clean = true, uint16_t keepalive = 60,
                                  std::optional<codec::Will> will = std::nullopt,
                                  std::optional<std::string_view> username = std::nullopt,
                                  uint8_t level = 4) {
  codec::Connect c;
  c.protocol_name = level == 3 ? "MQIsdp" : "MQTT";
  c.protocol_level = level;
  c.clean_session = clean;
  c.keepalive = keepalive;
  c.client_id = id;
  c.will = will;
  c.username = username;
  std::string out;
  codec::encode_connect(out, c);
  return out;
}

inline std::string publish_packet(std::string_view topic, std::string_view payload, uint8_t qos = 0,
                                  bool retain = false, uint16_t id = 0, bool dup = false) {
  std::string out;
  codec::encode_publish(out, topic, payload, qos, retain, dup, id);
  return out;
}

inline std::string subscribe_packet(uint16_t id, std::vector<codec::SubscribeTopic> topics) {
  std::string out;
  codec::encode_subscribe(out, id, topics);
  return out;
}

inline std::string ack_packet(codec::PacketType type, uint16_t id) {
  std::string out;
  codec::encode_ack(out, type, id);
  return out;
}

}  // namespace mqgate::test
