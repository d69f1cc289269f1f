#include "http/endpoint.hpp"

#include <cstring>

#include "http/metrics_text.hpp"
#include "log.hpp"

namespace mqgate::http {

struct Endpoint::Exchange {
  Endpoint* endpoint;
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_write_t write;
  RequestParser parser;
  std::string response;
  int handles_open = 0;  // tcp and timer: freed when both are closed
  bool answered = false;
  bool closing = false;
  Exchange* prev = nullptr;
  Exchange* next = nullptr;
  char buffer[2048];
};

namespace {

// Same time whether or not a prefix matches: the token is a secret.
bool equal_secret(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

template <typename T>
Endpoint::Exchange* owner(T* handle) {
  return static_cast<Endpoint::Exchange*>(handle->data);
}

}  // namespace

Endpoint::Endpoint(uv_loop_t* loop, Options options, Callbacks callbacks)
    : loop_(loop), options_(std::move(options)), callbacks_(std::move(callbacks)) {}

Endpoint::~Endpoint() { stop(); }

bool Endpoint::start(std::string& error) {
  sockaddr_storage addr;
  int rc = options_.ipv6 ? uv_ip6_addr(options_.host.c_str(), options_.port, reinterpret_cast<sockaddr_in6*>(&addr))
                         : uv_ip4_addr(options_.host.c_str(), options_.port, reinterpret_cast<sockaddr_in*>(&addr));
  if (rc == 0) rc = uv_tcp_init(loop_, &handle_);
  if (rc != 0) {
    error = "http: " + options_.host + ": " + uv_strerror(rc);
    return false;
  }
  handle_.data = this;
  listening_ = true;
  rc = uv_tcp_bind(&handle_, reinterpret_cast<const sockaddr*>(&addr), options_.ipv6 ? UV_TCP_IPV6ONLY : 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(&handle_), 64, on_connection);
  if (rc != 0) {
    error = "http: cannot listen on " + options_.host + ":" + std::to_string(options_.port) + ": " +
            uv_strerror(rc);
    stop();
    return false;
  }
  sockaddr_storage bound;
  int len = sizeof bound;
  if (uv_tcp_getsockname(&handle_, reinterpret_cast<sockaddr*>(&bound), &len) == 0)
    bound_port_ = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                                    : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  LOG_INFO("http endpoint listening on %s port %u (/metrics, /healthz)", options_.host.c_str(), bound_port_);
  return true;
}

void Endpoint::stop() {
  if (listening_) {
    listening_ = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&handle_), nullptr);
  }
  while (exchanges_ != nullptr) finish(exchanges_, std::string());
}

void Endpoint::unlink(Exchange* x) {
  if (x->prev) x->prev->next = x->next;
  else if (exchanges_ == x) exchanges_ = x->next;
  if (x->next) x->next->prev = x->prev;
  x->prev = x->next = nullptr;
}

void Endpoint::on_connection(uv_stream_t* server, int status) {
  auto* self = static_cast<Endpoint*>(server->data);
  if (status != 0) {
    LOG_WARN("http: accept failed: %s", uv_strerror(status));
    return;
  }
  auto* x = new Exchange();
  x->endpoint = self;
  uv_tcp_init(self->loop_, &x->tcp);
  uv_timer_init(self->loop_, &x->timer);
  x->tcp.data = x->timer.data = x;
  x->handles_open = 2;
  x->next = self->exchanges_;
  if (self->exchanges_) self->exchanges_->prev = x;
  self->exchanges_ = x;
  self->open_++;
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&x->tcp)) != 0 ||
      self->open_ > self->options_.max_connections) {
    self->finish(x, std::string());  // over the limit: closed at once, no answer
    return;
  }
  uv_timer_start(
      &x->timer, [](uv_timer_t* t) { owner(t)->endpoint->finish(owner(t), response(408, "text/plain", "timeout\n")); },
      self->options_.request_timeout_ms, 0);
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(&x->tcp),
      [](uv_handle_t* h, size_t, uv_buf_t* buf) {
        Exchange* e = owner(h);
        *buf = uv_buf_init(e->buffer, sizeof e->buffer);
      },
      [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
        Exchange* e = owner(s);
        if (n < 0) {
          e->endpoint->finish(e, std::string());
          return;
        }
        size_t consumed = 0;
        switch (e->parser.feed(std::string_view(buf->base, static_cast<size_t>(n)), consumed)) {
          case ParseStatus::kIncomplete:
            return;
          case ParseStatus::kError:
            e->endpoint->finish(e, response(e->parser.error_status(), "text/plain; charset=utf-8",
                                            e->parser.error_reason() + "\n"));
            return;
          case ParseStatus::kComplete:
            e->endpoint->requests_++;
            e->endpoint->finish(e, e->endpoint->answer(e->parser.request()));
            return;
        }
      });
}

std::string Endpoint::answer(const Request& request) const {
  const bool head = request.method == "HEAD";
  if (request.method != "GET" && !head)
    return response(405, "text/plain; charset=utf-8", "only GET and HEAD\n", {"Allow: GET, HEAD"});
  std::string r;
  if (request.path == "/metrics") {
    if (!options_.bearer_token.empty()) {
      const std::string* auth = request.header("authorization");
      const std::string_view prefix = "Bearer ";
      if (auth == nullptr || auth->compare(0, prefix.size(), prefix) != 0 ||
          !equal_secret(std::string_view(*auth).substr(prefix.size()), options_.bearer_token))
        return response(401, "text/plain; charset=utf-8", "a bearer token is needed\n",
                        {"WWW-Authenticate: Bearer realm=\"mqgate\""});
    }
    r = response(200, MetricsText::kContentType, callbacks_.metrics ? callbacks_.metrics() : "",
                 {"Cache-Control: no-store"});
  } else if (request.path == "/healthz") {
    const bool ok = callbacks_.healthy && callbacks_.healthy();
    r = response(ok ? 200 : 503, "text/plain; charset=utf-8", ok ? "ok\n" : "not listening\n",
                 {"Cache-Control: no-store"});
  } else {
    return response(404, "text/plain; charset=utf-8", "only /metrics and /healthz\n");
  }
  if (head) r.resize(r.find("\r\n\r\n") + 4);  // the same head, no body
  return r;
}

void Endpoint::finish(Exchange* x, std::string resp) {
  if (x->closing) return;
  x->closing = true;
  unlink(x);
  open_--;
  uv_timer_stop(&x->timer);
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&x->tcp));
  auto on_closed = [](uv_handle_t* h) {
    Exchange* e = owner(h);
    if (--e->handles_open == 0) delete e;
  };
  uv_close(reinterpret_cast<uv_handle_t*>(&x->timer), on_closed);
  if (resp.empty()) {
    uv_close(reinterpret_cast<uv_handle_t*>(&x->tcp), on_closed);
    return;
  }
  // Answer, then close once written (or failed).
  x->response = std::move(resp);
  x->write.data = x;
  uv_buf_t buf = uv_buf_init(x->response.data(), static_cast<unsigned>(x->response.size()));
  const int rc = uv_write(&x->write, reinterpret_cast<uv_stream_t*>(&x->tcp), &buf, 1, [](uv_write_t* w, int) {
    Exchange* e = static_cast<Exchange*>(w->data);
    uv_close(reinterpret_cast<uv_handle_t*>(&e->tcp), [](uv_handle_t* h) {
      Exchange* e2 = owner(h);
      if (--e2->handles_open == 0) delete e2;
    });
  });
  if (rc != 0) uv_close(reinterpret_cast<uv_handle_t*>(&x->tcp), on_closed);
}

}  // namespace mqgate::http
