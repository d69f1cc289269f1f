#include <doctest/doctest.h>

#include <random>
#include <string>
#include <vector>

#include "transport/websocket.hpp"

using namespace mqgate;
using namespace mqgate::ws;

namespace {

// A client frame: masked with `mask`.
std::string client_frame(uint8_t first_byte, std::string_view payload, uint32_t mask = 0x37fa213d,
                         int force_len_bytes = 0) {
  std::string f;
  f.push_back(static_cast<char>(first_byte));
  const uint64_t n = payload.size();
  if ((n < 126 && force_len_bytes == 0) || force_len_bytes == 1) {
    f.push_back(static_cast<char>(0x80 | n));
  } else if ((n < 65536 && force_len_bytes == 0) || force_len_bytes == 2) {
    f.push_back(static_cast<char>(0x80 | 126));
    f.push_back(static_cast<char>(n >> 8));
    f.push_back(static_cast<char>(n));
  } else {
    f.push_back(static_cast<char>(0x80 | 127));
    for (int s = 56; s >= 0; s -= 8) f.push_back(static_cast<char>(n >> s));
  }
  const uint8_t m[4] = {static_cast<uint8_t>(mask >> 24), static_cast<uint8_t>(mask >> 16),
                        static_cast<uint8_t>(mask >> 8), static_cast<uint8_t>(mask)};
  for (uint8_t b : m) f.push_back(static_cast<char>(b));
  for (size_t i = 0; i < payload.size(); ++i) f.push_back(static_cast<char>(payload[i] ^ m[i & 3]));
  return f;
}

struct Collected {
  std::string data;
  std::vector<std::string> pings;
  std::vector<uint16_t> closes;
  bool ok = true;
  uint16_t error = 0;
};

Collected decode(const std::string& stream, size_t step, size_t max_payload = 1 << 20) {
  FrameDecoder d(max_payload);
  Collected c;
  for (size_t i = 0; i < stream.size() && c.ok; i += step) {
    c.ok = d.feed(std::string_view(stream).substr(i, step), [&](const Event& e) {
      switch (e.kind) {
        case Event::Kind::kData: c.data.append(e.data); break;
        case Event::Kind::kPing: c.pings.emplace_back(e.data); break;
        case Event::Kind::kPong: break;
        case Event::Kind::kClose: c.closes.push_back(e.code); break;
      }
    });
  }
  if (!c.ok) c.error = d.error_code();
  return c;
}

http::Request upgrade_request(std::vector<http::Header> extra = {}) {
  http::Request r;
  r.method = "GET";
  r.target = r.path = "/mqtt";
  r.headers = {{"host", "x"},
               {"upgrade", "websocket"},
               {"connection", "Upgrade"},
               {"sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="},
               {"sec-websocket-version", "13"},
               {"sec-websocket-protocol", "mqtt"}};
  for (auto& h : extra) {
    bool replaced = false;
    for (auto& have : r.headers)
      if (have.name == h.name) have.value = h.value, replaced = true;
    if (!replaced) r.headers.push_back(h);
  }
  return r;
}

}  // namespace

TEST_CASE("the accept key of RFC 6455's example") {
  CHECK(accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

TEST_CASE("upgrade: accepted with mqtt, refused with the right status otherwise") {
  HandshakeSettings s;
  HandshakeResult ok = accept_upgrade(upgrade_request(), s);
  CHECK(ok.status == 101);
  CHECK(ok.protocol == "mqtt");
  CHECK(ok.response.find("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n") != std::string::npos);
  CHECK(ok.response.find("Sec-WebSocket-Protocol: mqtt\r\n") != std::string::npos);
  CHECK(accept_upgrade(upgrade_request({{"sec-websocket-protocol", "chat, mqttv3.1"}}), s).protocol == "mqttv3.1");
  CHECK(accept_upgrade(upgrade_request({{"sec-websocket-protocol", "mqttv3.1, mqtt"}}), s).protocol == "mqtt");
  CHECK(accept_upgrade(upgrade_request({{"sec-websocket-protocol", "chat"}}), s).status == 400);
  CHECK(accept_upgrade(upgrade_request({{"sec-websocket-version", "8"}}), s).status == 426);
  CHECK(accept_upgrade(upgrade_request({{"upgrade", "h2c"}}), s).status == 426);
  CHECK(accept_upgrade(upgrade_request({{"sec-websocket-key", "short"}}), s).status == 400);
  CHECK(accept_upgrade(upgrade_request({{"sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=!"}}), s).status == 400);
  http::Request other = upgrade_request();
  other.path = "/other";
  CHECK(accept_upgrade(other, s).status == 404);
  http::Request post = upgrade_request();
  post.method = "POST";
  CHECK(accept_upgrade(post, s).status == 405);
  s.origins = {"https://app.example"};
  CHECK(accept_upgrade(upgrade_request(), s).status == 403);
  CHECK(accept_upgrade(upgrade_request({{"origin", "https://evil.example"}}), s).status == 403);
  CHECK(accept_upgrade(upgrade_request({{"origin", "https://app.example"}}), s).status == 101);
}

TEST_CASE("frames: MQTT bytes through masked binary frames, any split, fragments and pings between") {
  std::string mqtt;
  for (int i = 0; i < 300; ++i) mqtt.push_back(static_cast<char>(i * 13));
  std::string stream = client_frame(0x02, mqtt.substr(0, 100));   // FIN=0 binary
  stream[0] = 0x02;                                                // not FIN
  stream += client_frame(0x89, "are you there");                 // ping between fragments
  stream += client_frame(0x00, mqtt.substr(100, 150));           // continuation, not FIN
  stream += client_frame(0x80, mqtt.substr(250));                // continuation, FIN
  stream += client_frame(0x82, "");                              // an empty binary message
  stream += client_frame(0x82, std::string(70000, 'z'));         // a 64-bit length
  stream += client_frame(0x88, std::string("\x03\xe8" "bye", 5));  // close 1000
  for (size_t step : {1, 2, 3, 7, 100, 1 << 20}) {
    Collected c = decode(stream, step);
    REQUIRE(c.ok);
    CHECK(c.data == mqtt + std::string(70000, 'z'));
    CHECK(c.pings == std::vector<std::string>{"are you there"});
    CHECK(c.closes == std::vector<uint16_t>{1000});
  }
}

TEST_CASE("frames: protocol errors close with the right code") {
  struct Case {
    std::string stream;
    uint16_t code;
  };
  std::string unmasked = "\x82\x03" "abc";
  std::vector<Case> cases = {
      {unmasked, kCloseProtocolError},
      {client_frame(0x81, "text"), kCloseUnsupportedData},
      {client_frame(0xC2, "rsv1"), kCloseProtocolError},
      {client_frame(0x83, "op3"), kCloseProtocolError},
      {client_frame(0x8B, "opB"), kCloseProtocolError},
      {client_frame(0x80, "cont"), kCloseProtocolError},                        // continuation first
      {std::string(1, '\x02') + client_frame(0x82, "a").substr(1) + client_frame(0x82, "b"), kCloseProtocolError},
      {client_frame(0x09, "frag ping"), kCloseProtocolError},                   // control without FIN
      {client_frame(0x89, std::string(126, 'p')), kCloseProtocolError},
      {client_frame(0x82, "short", 0x11223344, 2), kCloseProtocolError},        // non-minimal 16-bit
      {client_frame(0x82, std::string(200, 'x'), 0x11223344, 3), kCloseProtocolError},  // non-minimal 64-bit
      {client_frame(0x82, std::string(2000, 'x')), kCloseTooBig},
      {client_frame(0x88, "\x03"), kCloseProtocolError},                        // 1-byte close
      {client_frame(0x88, std::string("\x03\xed", 2)), kCloseProtocolError},     // 1005 may not be sent
      {client_frame(0x88, std::string("\x03\xe8\xff", 3)), kCloseInvalidPayload},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    Collected got = decode(c.stream, 1, 1024);
    CHECK_MESSAGE(!got.ok, "case ", i);
    CHECK(got.error == c.code);
  }
  // A close frame without a payload reports 1005 (no status), which is fine.
  Collected empty = decode(client_frame(0x88, ""), 1);
  CHECK(empty.ok);
  CHECK(empty.closes == std::vector<uint16_t>{1005});
}

TEST_CASE("server frames: shortest lengths, unmasked") {
  for (size_t n : {0, 125, 126, 65535, 65536}) {
    std::string out;
    encode_frame(out, Opcode::kBinary, std::string(n, 'a'));
    const size_t header = n < 126 ? 2 : n < 65536 ? 4 : 10;
    REQUIRE(out.size() == header + n);
    CHECK(static_cast<uint8_t>(out[0]) == 0x82);
    CHECK((static_cast<uint8_t>(out[1]) & 0x80) == 0);
  }
  std::string close;
  encode_close(close, kCloseTooBig, "too big");
  CHECK(close == std::string("\x88\x09\x03\xf1too big", 11));
}

TEST_CASE("frames: random splits of random streams never crash, and round-trip") {
  std::mt19937 rng(7);
  for (int round = 0; round < 200; ++round) {
    std::string stream, expect;
    const int frames = 1 + static_cast<int>(rng() % 6);
    for (int i = 0; i < frames; ++i) {
      std::string payload(rng() % 3000, '\0');
      for (char& ch : payload) ch = static_cast<char>(rng());
      expect += payload;
      stream += client_frame(0x82, payload, static_cast<uint32_t>(rng()));
    }
    Collected c = decode(stream, 1 + rng() % 64);
    REQUIRE(c.ok);
    CHECK(c.data == expect);
    // Garbage never crashes the decoder.
    std::string junk(rng() % 200, '\0');
    for (char& ch : junk) ch = static_cast<char>(rng());
    decode(junk, 1 + rng() % 16, 1024);
  }
}
