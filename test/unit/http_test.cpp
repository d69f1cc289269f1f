#include <doctest/doctest.h>

#include <string>

#include "http/request.hpp"

using namespace mqgate::http;

namespace {

struct Outcome {
  ParseStatus status;
  RequestParser parser;
  size_t consumed_total = 0;
};

// Feeds `text` split into pieces of `step` bytes (0: all at once).
Outcome parse(const std::string& text, size_t step = 0, Limits limits = {}) {
  Outcome o{ParseStatus::kIncomplete, RequestParser(limits)};
  std::string_view rest = text;
  do {
    const size_t n = step == 0 ? rest.size() : std::min(step, rest.size());
    size_t consumed = 0;
    o.status = o.parser.feed(rest.substr(0, n), consumed);
    o.consumed_total += consumed;
    rest.remove_prefix(n);
  } while (!rest.empty() && o.status == ParseStatus::kIncomplete);
  return o;
}

const char* kUpgrade =
    "GET /mqtt?x=1 HTTP/1.1\r\n"
    "Host: broker.example:8080\r\n"
    "Upgrade: websocket\r\n"
    "Connection: keep-alive, Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Protocol: mqtt\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "\r\n";

}  // namespace

TEST_CASE("a WebSocket upgrade head parses the same in any split") {
  const std::string text = std::string(kUpgrade) + "\x82\x85" "extra";  // a frame follows
  for (size_t step : {0, 1, 2, 3, 7, 64}) {
    Outcome o = parse(text, step);
    REQUIRE(o.status == ParseStatus::kComplete);
    CHECK(o.consumed_total == std::string(kUpgrade).size());
    const Request& r = o.parser.request();
    CHECK(r.method == "GET");
    CHECK(r.target == "/mqtt?x=1");
    CHECK(r.path == "/mqtt");
    CHECK(r.query == "x=1");
    REQUIRE(r.header("host") != nullptr);
    CHECK(*r.header("host") == "broker.example:8080");
    CHECK(r.header_has_token("connection", "upgrade"));
    CHECK(r.header_has_token("upgrade", "WebSocket"));
    CHECK_FALSE(r.header_has_token("connection", "close"));
    CHECK(*r.header("sec-websocket-key") == "dGhlIHNhbXBsZSBub25jZQ==");
  }
}

TEST_CASE("malformed heads get the right status, never a guess") {
  struct Case {
    const char* text;
    int status;
  } cases[] = {
      {"GET /metrics HTTP/1.1\nHost: x\r\n\r\n", 400},             // bare LF
      {"GET /metrics HTTP/1.1\r\nHost: x\n\r\n", 400},
      {"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", 400},              // empty line first
      {"GET  /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 400},          // two spaces
      {"GET /metrics HTTP/1.1 \r\nHost: x\r\n\r\n", 400},
      {"G(T /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 400},           // not a token
      {"GET metrics HTTP/1.1\r\nHost: x\r\n\r\n", 400},            // not origin-form
      {"GET http://x/metrics HTTP/1.1\r\nHost: x\r\n\r\n", 400},
      {"GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n", 400},
      {"GET /a\x01 HTTP/1.1\r\nHost: x\r\n\r\n", 400},
      {"GET / HTTP/1.0\r\nHost: x\r\n\r\n", 505},
      {"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505},
      {"GET / HTTX/1.1\r\nHost: x\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\n\r\n", 400},                             // no Host
      {"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400},                 // space before colon
      {"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400},       // obs-fold
      {"GET / HTTP/1.1\r\nHost: x\r\nX: a\x7f\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n", 413},
      {"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n", 400},
  };
  for (const Case& c : cases) {
    const std::string text = c.text;
    for (size_t step : {0, 1}) {
      Outcome o = parse(text, step);
      CHECK_MESSAGE(o.status == ParseStatus::kError, c.text);
      CHECK_MESSAGE(o.parser.error_status() == c.status, c.text, " -> ", o.parser.error_reason());
      CHECK_FALSE(o.parser.error_reason().empty());
    }
  }
  Outcome nul = parse(std::string("GET / HTTP/1.1\r\nHost: x\r\nX: a") + '\0' + "z\r\n\r\n");
  CHECK(nul.parser.error_status() == 400);
  Outcome ok = parse("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
  CHECK(ok.status == ParseStatus::kComplete);
}

TEST_CASE("limits: a head too long or with too many headers is refused as it arrives") {
  Limits limits;
  limits.max_head_bytes = 256;
  limits.max_headers = 4;
  Outcome long_target = parse("GET /" + std::string(1000, 'a') + " HTTP/1.1\r\n", 1, limits);
  CHECK(long_target.status == ParseStatus::kError);
  CHECK(long_target.parser.error_status() == 414);
  Outcome long_head = parse("GET / HTTP/1.1\r\nHost: x\r\nX: " + std::string(1000, 'a'), 0, limits);
  CHECK(long_head.parser.error_status() == 431);
  std::string many = "GET / HTTP/1.1\r\nHost: x\r\n";
  for (int i = 0; i < 4; ++i) many += "X" + std::to_string(i) + ": v\r\n";
  Outcome too_many = parse(many + "\r\n", 0, limits);
  CHECK(too_many.parser.error_status() == 431);
  // A head that never ends stays incomplete only up to the limit.
  Outcome endless = parse("GET / HTTP/1.1\r\nHost: x\r\n", 0, limits);
  CHECK(endless.status == ParseStatus::kIncomplete);
}

TEST_CASE("responses: status line, length, close") {
  const std::string r = response(404, "text/plain; charset=utf-8", "no\n", {"Cache-Control: no-store"});
  CHECK(r ==
        "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\n"
        "Connection: close\r\nCache-Control: no-store\r\n\r\nno\n");
  CHECK(response(101, "", "", {"Upgrade: websocket"}).find("Content-Length: 0") != std::string::npos);
}
