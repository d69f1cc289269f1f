// The transport stack (transport/stack.hpp) with fake layers, and the WebSocket layer on
// its own and on top of another layer.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "transport/stack.hpp"
#include "transport/websocket_layer.hpp"

using namespace mqgate;
using namespace mqgate::transport;

namespace {

// A layer that shifts every byte by one on the way down and back on the way up, after a
// handshake: it is not ready until it reads "HI", which it answers with "OK". It can
// pretend a worker owns it (busy) and can be told to fail on a byte.
class ShiftLayer final : public StreamLayer {
 public:
  explicit ShiftLayer(std::string name) : name_(std::move(name)) {}
  const char* name() const override { return name_.c_str(); }
  bool input(std::string_view bytes, Receiver& up, std::string& error) override {
    if (!open) {
      hello += bytes;
      if (hello.size() < 2) return true;
      if (hello.substr(0, 2) != "HI") {
        error = name_ + ": bad hello";
        return false;
      }
      open = true;
      wire_ += "OK";
      bytes = std::string_view(hello).substr(2);
      if (bytes.empty()) return true;
      kept_ = std::string(bytes);
      bytes = kept_;
    }
    std::string plain;
    for (char c : bytes) {
      if (c == fail_on) {
        error = name_ + ": poisoned byte";
        return false;
      }
      plain.push_back(static_cast<char>(c - 1));
    }
    ++inputs;
    if (!plain.empty()) up.on_bytes(plain);  // a receiver that stops is no error
    return true;
  }
  bool ready() const override { return open; }
  bool send(std::string& bytes, std::string&) override {
    for (char c : bytes)
      wire_.push_back(static_cast<char>(c + 1));
    bytes.clear();
    return true;
  }
  bool wire_available() const override { return !busy; }
  std::string& wire() override { return wire_; }
  void shutdown() override {
    if (open) wire_ += "BYE";
    open = false;
  }
  size_t buffered() const override { return hello.size(); }
  void abandon(std::function<void()> on_dead) override {
    *abandoned = std::move(on_dead);  // the "worker" finishes later
    delete this;
  }

  bool open = false;
  bool busy = false;
  char fail_on = 0;
  int inputs = 0;
  std::string hello;
  std::function<void()>* abandoned = nullptr;

 private:
  std::string name_;
  std::string wire_;
  std::string kept_;
};

struct Top final : Receiver {
  bool on_bytes(std::string_view bytes) override {
    got += bytes;
    return !stop;
  }
  std::string got;
  bool stop = false;
};

std::string shifted(std::string_view s, int by) {
  std::string out;
  for (char c : s)
    out.push_back(static_cast<char>(c + by));
  return out;
}

}  // namespace

TEST_CASE("stack: bytes go up through every layer and down through every layer, in order") {
  Stack stack;
  auto* low = new ShiftLayer("low");
  auto* high = new ShiftLayer("high");
  stack.push(std::unique_ptr<StreamLayer>(low));
  stack.push(std::unique_ptr<StreamLayer>(high));
  Top top;
  std::string error;

  // The low layer's handshake, in pieces; its answer waits in its wire.
  REQUIRE(stack.input("H", top, error));
  REQUIRE(stack.input("I", top, error));
  CHECK(low->ready());
  CHECK_FALSE(high->ready());
  std::string app = "early";  // from above, before the high layer is ready: it waits
  std::string* out = stack.output(app, error);
  REQUIRE(out != nullptr);
  CHECK(*out == "OK");
  CHECK(app == "early");
  out->clear();

  // The high layer's handshake arrives through the low one, then data behind it in the
  // same read.
  REQUIRE(stack.input(shifted("HIdata", 1), top, error));
  CHECK(high->ready());
  CHECK(top.got == shifted("data", -1));
  out = stack.output(app, error);
  REQUIRE(out != nullptr);
  // The high layer's "OK" first (its own bytes), then "early", each shifted by the
  // layers it went through.
  CHECK(*out == shifted("OK", 1) + shifted("early", 2));
  CHECK(app.empty());
  CHECK(stack.pending_output() == out->size());
}

TEST_CASE(
    "stack: a failing layer stops the input and names itself; a busy layer holds the output") {
  Stack stack;
  auto* low = new ShiftLayer("low");
  auto* high = new ShiftLayer("high");
  stack.push(std::unique_ptr<StreamLayer>(low));
  stack.push(std::unique_ptr<StreamLayer>(high));
  Top top;
  std::string error;
  REQUIRE(stack.input("HI" + shifted("HI", 1), top, error));
  high->fail_on = 'y';  // "x", as the high layer sees it
  CHECK_FALSE(stack.input(shifted("abxcd", 2), top, error));
  CHECK(error == "high: poisoned byte");
  CHECK(top.got.empty());

  low->busy = true;
  std::string app = "zz";
  CHECK(stack.output(app, error) == nullptr);
  CHECK(stack.busy());
  low->busy = false;
  CHECK(stack.output(app, error) != nullptr);
}

TEST_CASE("stack: a receiver that stops is no error") {
  Stack stack;
  auto* only = new ShiftLayer("only");
  stack.push(std::unique_ptr<StreamLayer>(only));
  Top top;
  top.stop = true;
  std::string error;
  CHECK(stack.input("HI" + shifted("abc", 1), top, error));
  CHECK(top.got == "abc");
  CHECK(error.empty());
}

TEST_CASE("stack: shutdown sends the queued bytes, then each layer's goodbye, top first") {
  Stack stack;
  auto* low = new ShiftLayer("low");
  auto* high = new ShiftLayer("high");
  stack.push(std::unique_ptr<StreamLayer>(low));
  stack.push(std::unique_ptr<StreamLayer>(high));
  Top top;
  std::string error;
  REQUIRE(stack.input("HI" + shifted("HI", 1), top, error));
  std::string app;
  stack.output(app, error)->clear();
  app = "last";
  std::string* out = stack.shutdown(app, error);
  REQUIRE(out != nullptr);
  CHECK(*out == shifted("last", 2) + shifted("BYE", 1) + "BYE");
}

TEST_CASE("stack: shutdown drops what a layer that is not ready can never send") {
  Stack stack;
  stack.push(std::make_unique<ShiftLayer>("low"));
  std::string app = "never", error;
  std::string* out = stack.shutdown(app, error);
  REQUIRE(out != nullptr);
  CHECK(out->empty());
  CHECK(app.empty());
}

TEST_CASE("stack: a layer a worker owns outlives the connection until the worker is done") {
  std::function<void()> finish;
  bool dead = false;
  {
    Stack stack;
    auto* low = new ShiftLayer("low");
    low->abandoned = &finish;
    low->busy = true;
    stack.push(std::unique_ptr<StreamLayer>(low));
    stack.abandon([&] { dead = true; });
  }
  CHECK_FALSE(dead);
  REQUIRE(finish);
  finish();
  CHECK(dead);

  bool at_once = false;
  Stack idle;
  idle.push(std::make_unique<ShiftLayer>("low"));
  idle.abandon([&] { at_once = true; });
  CHECK(at_once);
}

// --- the WebSocket layer ------------------------------------------------------------------

namespace {

std::string masked(uint8_t first_byte, std::string_view payload) {
  std::string f;
  f.push_back(static_cast<char>(first_byte));
  REQUIRE(payload.size() < 126);
  f.push_back(static_cast<char>(0x80 | payload.size()));
  const uint8_t m[4] = {0x12, 0x34, 0x56, 0x78};
  for (uint8_t b : m)
    f.push_back(static_cast<char>(b));
  for (size_t i = 0; i < payload.size(); ++i)
    f.push_back(static_cast<char>(payload[i] ^ m[i & 3]));
  return f;
}

const char kUpgrade[] =
    "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Protocol: mqtt\r\n\r\n";

}  // namespace

TEST_CASE("websocket layer: upgrade in pieces, then frames in the same read, ping, close") {
  ws::HandshakeSettings settings;
  WebSocketCounts counts;
  WebSocketLayer layer(settings, 1 << 20, counts);
  Top top;
  std::string error;
  const std::string request = kUpgrade;
  REQUIRE(layer.input(request.substr(0, 10), top, error));
  CHECK_FALSE(layer.ready());
  REQUIRE(layer.input(request.substr(10) + masked(0x82, "\x10\x02"), top, error));
  CHECK(layer.ready());
  CHECK(layer.protocol() == "mqtt");
  CHECK(layer.wire().rfind("HTTP/1.1 101 ", 0) == 0);
  CHECK(layer.wire().find("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n") !=
        std::string::npos);
  CHECK(top.got == "\x10\x02");
  CHECK(counts.upgraded == 1);
  layer.wire().clear();

  // A packet split over a fragmented message, with a ping in between.
  REQUIRE(layer.input(masked(0x02, "ab") + masked(0x89, "p") + masked(0x80, "cd"), top, error));
  CHECK(top.got ==
        "\x10\x02"
        "abcd");
  CHECK(layer.wire() == std::string("\x8a\x01p", 3));  // the pong
  layer.wire().clear();

  std::string out("\x20\x02\x00\x00", 4);
  REQUIRE(layer.send(out, error));
  CHECK(out.empty());
  CHECK(layer.wire() == std::string("\x82\x04\x20\x02\x00\x00", 6));
  layer.wire().clear();

  // The client closes: the status is echoed, the connection closes.
  CHECK_FALSE(layer.input(masked(0x88, "\x03\xe9"), top, error));  // 1001
  CHECK(error.find("closed by the client (status 1001)") != std::string::npos);
  CHECK(layer.wire() == std::string("\x88\x02\x03\xe9", 4));
  CHECK_FALSE(layer.ready());
  layer.shutdown();  // no second close frame
  CHECK(layer.wire().size() == 4);
}

TEST_CASE("websocket layer: refused upgrades answer with HTTP and close") {
  ws::HandshakeSettings settings;
  settings.path = "/mqtt";
  struct Case {
    std::string request;
    int status;
  };
  const std::vector<Case> cases = {
      {"GET /other HTTP/1.1\r\nHost: x\r\n\r\n", 404},
      {"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n", 426},
      {"GARBAGE\r\n\r\n", 400},
      {std::string("GET /mqtt HTTP/1.1\r\nHost: x\r\nX: ") + std::string(9000, 'a'), 431},
  };
  for (const Case& c : cases) {
    CAPTURE(c.request.substr(0, 40));
    WebSocketCounts counts;
    WebSocketLayer layer(settings, 1 << 20, counts);
    Top top;
    std::string error;
    CHECK_FALSE(layer.input(c.request, top, error));
    CHECK(error.find("WebSocket upgrade refused (" + std::to_string(c.status) + ")") == 0);
    CHECK(layer.wire().rfind("HTTP/1.1 " + std::to_string(c.status) + " ", 0) == 0);
    CHECK(layer.wire().find("Connection: close\r\n") != std::string::npos);
    CHECK(top.got.empty());
    CHECK(counts.refused == 1);
    layer.shutdown();  // nothing more is said after an HTTP error
    CHECK(layer.wire().find("\x88") == std::string::npos);
  }
}

TEST_CASE("websocket layer: bad frames close with the right status") {
  ws::HandshakeSettings settings;
  struct Case {
    std::string frame;
    uint16_t code;
  };
  std::string unmasked =
      "\x82\x02"
      "ab";
  const std::vector<Case> cases = {
      {masked(0x81, "text"), 1003},
      {unmasked, 1002},
      {masked(0x80, "cont"), 1002},
      {masked(0x92, "rsv"), 1002},
  };
  for (const Case& c : cases) {
    WebSocketCounts counts;
    WebSocketLayer layer(settings, 1 << 20, counts);
    Top top;
    std::string error;
    REQUIRE(layer.input(kUpgrade, top, error));
    layer.wire().clear();
    CHECK_FALSE(layer.input(c.frame, top, error));
    CHECK(error.find("WebSocket protocol error (" + std::to_string(c.code) + ")") == 0);
    CHECK(counts.protocol_errors == 1);
    REQUIRE(layer.wire().size() >= 4);
    CHECK(static_cast<uint8_t>(layer.wire()[0]) == 0x88);
    CHECK(((static_cast<uint8_t>(layer.wire()[2]) << 8) | static_cast<uint8_t>(layer.wire()[3])) ==
          c.code);
  }
}

TEST_CASE("websocket layer on top of another layer: the upgrade and frames go through it") {
  ws::HandshakeSettings settings;
  Stack stack;
  stack.push(std::make_unique<ShiftLayer>("low"));
  WebSocketCounts counts;
  stack.push(std::make_unique<WebSocketLayer>(settings, 1 << 20, counts));
  Top top;
  std::string error;
  REQUIRE(stack.input("HI" + shifted(std::string(kUpgrade) + masked(0x82, "mqtt"), 1), top, error));
  CHECK(top.got == "mqtt");
  std::string app = "ack";
  std::string* out = stack.output(app, error);
  REQUIRE(out != nullptr);
  const std::string plain = shifted(out->substr(2), -1);  // after the low layer's "OK"
  CHECK(plain.rfind("HTTP/1.1 101 ", 0) == 0);
  CHECK(plain.substr(plain.size() - 5) == std::string("\x82\x03"
                                                      "ack",
                                                      5));
  out->clear();
  out = stack.shutdown(app, error);
  CHECK(shifted(*out, -1) == std::string("\x88\x02\x03\xe8", 4) + shifted("BYE", -1));
}

TEST_CASE("websocket layer: a receiver that stops is not handed the frames after") {
  ws::HandshakeSettings settings;
  WebSocketCounts counts;
  WebSocketLayer layer(settings, 1 << 20, counts);
  Top top;
  top.stop = true;  // closing after the first bytes it gets
  std::string error;
  CHECK(layer.input(
      std::string(kUpgrade) + masked(0x82, "ab") + masked(0x89, "p") + masked(0x82, "cd"), top,
      error));
  CHECK(error.empty());
  CHECK(top.got == "ab");
  // Control frames are still answered: the peer's ping gets its pong.
  CHECK(layer.wire().find(std::string("\x8a\x01p", 3)) != std::string::npos);
}
