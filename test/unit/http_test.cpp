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
  for (int i = 0; i < 4; ++i)
    many.append("X").append(std::to_string(i)).append(": v\r\n");
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

// --- the endpoint, on a real loop, with a blocking client on another thread ------------
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <atomic>
#include <functional>
#include <thread>

#include "http/endpoint.hpp"
#include "http/metrics_text.hpp"

namespace {

// Sends `request`, reads until the server closes; "" if it closed without answering.
std::string exchange(uint16_t port, const std::string& request, int hold_ms = 0) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return "connect failed";
  }
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (!request.empty()) (void)!send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  if (hold_ms) std::this_thread::sleep_for(std::chrono::milliseconds(hold_ms));
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = recv(fd, buf, sizeof buf, 0)) > 0;) out.append(buf, static_cast<size_t>(n));
  close(fd);
  return out;
}

struct EndpointFixture {
  uv_loop_t loop;
  std::unique_ptr<Endpoint> endpoint;
  bool healthy = true;
  std::string metrics;  // non-empty: the exposition text instead of the usual one
  explicit EndpointFixture(Endpoint::Options o = {}) {
    uv_loop_init(&loop);
    endpoint = std::make_unique<Endpoint>(
        &loop, o,
        Endpoint::Callbacks{[this] {
                              if (!metrics.empty()) return metrics;
                              MetricsText m;
                              m.family("mqgate_clients_connected", MetricsText::Type::kGauge, "Connected clients.");
                              m.sample(uint64_t{3});
                              return m.text();
                            },
                            [this] { return healthy; }, nullptr, nullptr});
    std::string error;
    REQUIRE_MESSAGE(endpoint->start(error), error);
  }
  ~EndpointFixture() {
    endpoint->stop();  // the handles live in the endpoint: closed before it goes
    uv_run(&loop, UV_RUN_NOWAIT);
    endpoint.reset();
    uv_loop_close(&loop);
  }
  // Runs the client on a thread while the loop turns.
  std::string run(const std::function<std::string()>& client) {
    std::atomic<bool> done{false};
    std::string result;
    std::thread t([&] {
      result = client();
      done = true;
    });
    while (!done) uv_run(&loop, UV_RUN_NOWAIT), std::this_thread::sleep_for(std::chrono::milliseconds(1));
    t.join();
    return result;
  }
  std::string get(const std::string& request) {
    const uint16_t port = endpoint->bound_port();
    return run([&] { return exchange(port, request); });
  }
};

}  // namespace

TEST_CASE("endpoint: /metrics and /healthz, nothing else, strict requests") {
  EndpointFixture f;
  std::string r = f.get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(r.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
  CHECK(r.find("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n") != std::string::npos);
  CHECK(r.find("\r\n\r\n# HELP mqgate_clients_connected Connected clients.\n# TYPE mqgate_clients_connected gauge\nmqgate_clients_connected 3\n") != std::string::npos);
  r = f.get("HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(r.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
  CHECK(r.substr(r.size() - 4) == "\r\n\r\n");
  CHECK(f.get("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").rfind("HTTP/1.1 200 OK", 0) == 0);
  f.healthy = false;
  CHECK(f.get("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").rfind("HTTP/1.1 503", 0) == 0);
  CHECK(f.get("GET / HTTP/1.1\r\nHost: x\r\n\r\n").rfind("HTTP/1.1 404", 0) == 0);
  CHECK(f.get("GET /metrics/../etc HTTP/1.1\r\nHost: x\r\n\r\n").rfind("HTTP/1.1 404", 0) == 0);
  r = f.get("POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
  CHECK(r.rfind("HTTP/1.1 405", 0) == 0);
  CHECK(r.find("Allow: GET, HEAD\r\n") != std::string::npos);
  CHECK(f.get("GET /metrics HTTP/1.0\r\n\r\n").rfind("HTTP/1.1 505", 0) == 0);
  CHECK(f.get("GET /metrics HTTP/1.1\nHost: x\n\n").rfind("HTTP/1.1 400", 0) == 0);
  CHECK(f.get("GET /" + std::string(10000, 'a') + " HTTP/1.1\r\n").rfind("HTTP/1.1 414", 0) == 0);
  CHECK(f.endpoint->requests() == 7);  // whole requests; the 3 malformed ones are not counted
}

TEST_CASE("endpoint: the bearer token guards /metrics (not /healthz)") {
  Endpoint::Options o;
  o.bearer_token = "s3cret";
  EndpointFixture f(o);
  std::string r = f.get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(r.rfind("HTTP/1.1 401", 0) == 0);
  CHECK(r.find("WWW-Authenticate: Bearer") != std::string::npos);
  CHECK(r.find("mqgate_clients_connected") == std::string::npos);
  CHECK(f.get("GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cre\r\n\r\n").rfind("HTTP/1.1 401", 0) == 0);
  CHECK(f.get("GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret!\r\n\r\n").rfind("HTTP/1.1 401", 0) == 0);
  CHECK(f.get("GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic s3cret\r\n\r\n").rfind("HTTP/1.1 401", 0) == 0);
  CHECK(f.get("GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n\r\n").rfind("HTTP/1.1 200", 0) == 0);
  CHECK(f.get("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").rfind("HTTP/1.1 200", 0) == 0);
}

TEST_CASE("endpoint: a slow request times out; a new connection evicts the oldest idle one") {
  Endpoint::Options o;
  o.request_timeout_ms = 200;
  o.max_connections = 2;
  EndpointFixture f(o);
  const uint16_t port = f.endpoint->bound_port();
  CHECK(f.run([&] { return exchange(port, "GET /metrics HTTP/1.1\r\n"); }).rfind("HTTP/1.1 408", 0) == 0);
  // Two slow clients hold both places; a third evicts the older (closed without an
  // answer) and is answered; the other still times out.
  std::string a, b;
  std::string third = f.run([&] {
    std::thread t1([&] { a = exchange(port, "GET", 0); });
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    std::thread t2([&] { b = exchange(port, "GET", 0); });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::string c = exchange(port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    t1.join();
    t2.join();
    return c;
  });
  CHECK(third.rfind("HTTP/1.1 200", 0) == 0);
  CHECK(a.empty());
  CHECK(b.rfind("HTTP/1.1 408", 0) == 0);
  CHECK(f.endpoint->evicted() == 1);
  CHECK(f.endpoint->refused() == 0);
}

TEST_CASE("endpoint: with every place being answered, a new connection is closed at once") {
  Endpoint::Options o;
  o.max_connections = 2;
  EndpointFixture f(o);
  f.metrics = std::string(32 << 20, '#');  // more than the socket buffers: the writes wait
  const uint16_t port = f.endpoint->bound_port();
  std::string a, b;
  std::string third = f.run([&] {
    const std::string req = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    std::thread t1([&] { a = exchange(port, req, 400); });  // reads only after 400 ms
    std::thread t2([&] { b = exchange(port, req, 400); });
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    std::string c = exchange(port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    t1.join();
    t2.join();
    return c;
  });
  CHECK(third.empty());
  CHECK(a.rfind("HTTP/1.1 200", 0) == 0);
  CHECK(b.rfind("HTTP/1.1 200", 0) == 0);
  CHECK(a.size() > (32u << 20));
  CHECK(f.endpoint->refused() == 1);
  CHECK(f.endpoint->evicted() == 0);
}

TEST_CASE("endpoint: one address holds at most half the places") {
  Endpoint::Options o;
  o.request_timeout_ms = 300;
  o.max_connections = 4;  // 2 per address
  EndpointFixture f(o);
  const uint16_t port = f.endpoint->bound_port();
  std::string a, b;
  std::string third = f.run([&] {
    std::thread t1([&] { a = exchange(port, "GET", 0); });
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    std::thread t2([&] { b = exchange(port, "GET", 0); });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    // Two of four places taken, both from 127.0.0.1: a third from there evicts the older.
    std::string c = exchange(port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    t1.join();
    t2.join();
    return c;
  });
  CHECK(third.rfind("HTTP/1.1 200", 0) == 0);
  CHECK(a.empty());
  CHECK(b.rfind("HTTP/1.1 408", 0) == 0);
  CHECK(f.endpoint->evicted() == 1);
}

TEST_CASE("metrics text: names, labels and help escaped as the format says") {
  MetricsText m;
  m.family("mqgate_messages_dropped", MetricsText::Type::kCounter, "Dropped \\ messages\nby reason.");
  m.sample(uint64_t{5}, {{"reason", "queue \"full\"\n"}, {"listener", "a\\b"}});
  m.family("mqgate_loop_lag_seconds", MetricsText::Type::kGauge, "Loop lag.");
  m.sample(0.25);
  CHECK(m.text() ==
        "# HELP mqgate_messages_dropped_total Dropped \\\\ messages\\nby reason.\n"
        "# TYPE mqgate_messages_dropped_total counter\n"
        "mqgate_messages_dropped_total{reason=\"queue \\\"full\\\"\\n\",listener=\"a\\\\b\"} 5\n"
        "# HELP mqgate_loop_lag_seconds Loop lag.\n"
        "# TYPE mqgate_loop_lag_seconds gauge\n"
        "mqgate_loop_lag_seconds 0.25\n");
  CHECK(MetricsText::valid_name("a_b:c"));
  CHECK_FALSE(MetricsText::valid_name("1abc"));
  CHECK_FALSE(MetricsText::valid_name("a-b"));
  CHECK(MetricsText::valid_label_name("listener"));
  CHECK_FALSE(MetricsText::valid_label_name("__name__"));
  CHECK_FALSE(MetricsText::valid_label_name("a:b"));
}

TEST_CASE("endpoint: answers reach clients that half-close or send more than the head") {
  Endpoint::Options o;
  o.bearer_token = "s3cret";
  EndpointFixture f(o);
  const uint16_t port = f.endpoint->bound_port();
  // The scheme is case-insensitive (RFC 9110 11.1), the token is not.
  CHECK(f.get("GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: bEaReR s3cret\r\n\r\n")
            .rfind("HTTP/1.1 200", 0) == 0);
  CHECK(f.get("GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer S3CRET\r\n\r\n")
            .rfind("HTTP/1.1 401", 0) == 0);
  // Half-closed after the request: the answer is still written.
  std::string r = f.run([&] {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return std::string();
    const std::string req = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    (void)!send(fd, req.data(), req.size(), MSG_NOSIGNAL);
    shutdown(fd, SHUT_WR);
    timeval tv{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string out;
    char buf[4096];
    for (ssize_t n; (n = recv(fd, buf, sizeof buf, 0)) > 0;)
      out.append(buf, static_cast<size_t>(n));
    close(fd);
    return out;
  });
  CHECK(r.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
  CHECK(r.substr(r.size() - 3) == "ok\n");
  // An oversized head: the rest is read and discarded, so the 431 arrives (no reset).
  r = f.get("GET /metrics HTTP/1.1\r\nHost: x\r\nX: " + std::string(20000, 'x') + "\r\n\r\n");
  CHECK(r.rfind("HTTP/1.1 431", 0) == 0);
  CHECK(f.endpoint->responses().at(200) == 2);
  CHECK(f.endpoint->responses().at(401) == 1);
  CHECK(f.endpoint->responses().at(431) == 1);
}

namespace {

// A stand-in for HTTPS's TLS channel: ready at once; what it is sent comes out as is;
// input decrypts to nothing and puts `echo_bytes` bytes in wire() (as alerts would).
class SilentChannel : public Channel {
 public:
  SilentChannel(std::atomic<int>& abandoned, size_t echo_bytes)
      : abandoned_(abandoned), echo_bytes_(echo_bytes) {}
  bool input(std::string_view, std::string&) override {
    wire_.append(echo_bytes_, 'a');
    return true;
  }
  bool ready() const override { return true; }
  bool available() const override { return true; }
  bool send(std::string& plain, std::string&) override {
    wire_ += plain;
    plain.clear();
    return true;
  }
  std::string& wire() override { return wire_; }
  void shutdown() override {}
  const mqgate::TlsPeerInfo* peer() const override { return &info_; }
  void abandon() override {
    abandoned_++;
    delete this;
  }

 private:
  std::atomic<int>& abandoned_;
  size_t echo_bytes_;
  std::string wire_;
  mqgate::TlsPeerInfo info_;
};

Endpoint::Options silent_tls(std::atomic<int>& abandoned, size_t echo_bytes) {
  Endpoint::Options o;
  o.request_timeout_ms = 2000;
  o.channel = [&abandoned, echo_bytes](Channel::Events&) {
    return std::make_unique<SilentChannel>(abandoned, echo_bytes);
  };
  return o;
}

}  // namespace

TEST_CASE("endpoint, HTTPS: encrypted bytes that carry no request are capped") {
  std::atomic<int> abandoned{0};
  EndpointFixture f(silent_tls(abandoned, 0));
  // 200 KiB of records that decrypt to nothing: closed without an answer (not a 408 at
  // the request timeout).
  CHECK(f.get(std::string(200 * 1024, 'x')).empty());
  CHECK(abandoned == 1);
}

TEST_CASE("endpoint, HTTPS: a client that does not read what it is sent is closed") {
  std::atomic<int> abandoned{0};
  EndpointFixture f(silent_tls(abandoned, 4 * 1024 * 1024));
  const uint16_t port = f.endpoint->bound_port();
  const int seen = std::stoi(f.run([&] {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return std::string("-1");
    // Small writes, each answered with 4 MiB the client never reads.
    for (int i = 0; i < 16 && abandoned == 0; ++i) {
      (void)!send(fd, "x", 1, MSG_NOSIGNAL);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const int n = abandoned;  // before the request timeout (2 s)
    close(fd);
    return std::to_string(n);
  }));
  CHECK(seen == 1);
}
