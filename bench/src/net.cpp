#include "net.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <future>
#include <stdexcept>

#include "stats.hpp"

namespace mqgate::bench {

bool make_target(const std::string& host, int port, Target& out, std::string& error) {
  if (port <= 0 || port > 65535) {
    error = "--port must be 1..65535";
    return false;
  }
  out = Target{};
  if (host == "127.0.0.1" || host == "localhost") {
    uv_ip4_addr("127.0.0.1", port, reinterpret_cast<sockaddr_in*>(&out.addr));
    out.text = "127.0.0.1:" + std::to_string(port);
    return true;
  }
  if (host == "::1" || host == "[::1]") {
    uv_ip6_addr("::1", port, reinterpret_cast<sockaddr_in6*>(&out.addr));
    out.text = "[::1]:" + std::to_string(port);
    return true;
  }
  error = "--host must be 127.0.0.1 or ::1: mqgate-bench only loads this machine's loopback";
  return false;
}

const char* fail_name(Fail kind) {
  switch (kind) {
    case Fail::kConnect:
      return "connect";
    case Fail::kTls:
      return "tls";
    case Fail::kRefused:
      return "refused";
    case Fail::kClosed:
      return "closed";
    case Fail::kTimeout:
      return "timeout";
    case Fail::kProtocol:
      return "protocol";
  }
  return "?";
}

// ---- Worker ------------------------------------------------------------------------

Worker::Worker(int index, const Target& target, std::shared_ptr<const tls::Settings> tls)
    : index_(index),
      target_(target),
      tls_settings_(std::move(tls)),
      read_buffer_(new char[kReadBufferSize]) {}

Worker::~Worker() {
  if (thread_.joinable()) stop();
}

void Worker::start() {
  std::promise<void> ready;
  auto started = ready.get_future();
  thread_ = std::thread([this, &ready] {
    try {
      if (tls_settings_) tls_ = tls::make_context(*tls_settings_);
    } catch (const std::exception& e) {
      start_error_ = e.what();
      ready.set_value();
      return;
    }
    uv_loop_init(&loop_);
    uv_async_init(&loop_, &async_, on_async);
    async_.data = this;
    uv_check_init(&loop_, &check_);
    check_.data = this;
    uv_check_start(&check_, on_check);
    uv_timer_init(&loop_, &tick_);
    tick_.data = this;
    uv_timer_start(&tick_, on_tick, 100, 100);
    uv_idle_init(&loop_, &idle_);
    idle_.data = this;
    ready.set_value();
    thread_main();
  });
  started.wait();
  if (!start_error_.empty()) {
    thread_.join();
    throw std::runtime_error(start_error_);
  }
}

void Worker::thread_main() {
  uv_run(&loop_, UV_RUN_DEFAULT);
  // Stopped: close our own handles; connections were closed by their owners.
  for (auto* h : {reinterpret_cast<uv_handle_t*>(&async_), reinterpret_cast<uv_handle_t*>(&check_),
                  reinterpret_cast<uv_handle_t*>(&tick_), reinterpret_cast<uv_handle_t*>(&idle_)})
    uv_close(h, nullptr);
  uv_run(&loop_, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop_) != 0)
    std::fprintf(stderr, "mqgate-bench: worker %d: handles left open\n", index_);
  tls_.reset();
  cpu_seconds_ = thread_cpu_seconds();
}

void Worker::post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    posted_.push_back(std::move(fn));
  }
  uv_async_send(&async_);
}

void Worker::run_sync(std::function<void()> fn) {
  std::promise<void> done;
  post([&] {
    fn();
    done.set_value();
  });
  done.get_future().wait();
}

void Worker::wake() {
  if (!wake_requested_.exchange(true, std::memory_order_acq_rel)) uv_async_send(&async_);
}

void Worker::stop() {
  if (!thread_.joinable()) return;
  post([this] { uv_stop(&loop_); });
  thread_.join();
}

void Worker::set_busy(bool busy) {
  if (busy == busy_) return;
  busy_ = busy;
  if (busy)
    uv_idle_start(&idle_, on_idle);
  else
    uv_idle_stop(&idle_);
}

void Worker::remove_dirty(Conn* c) {
  auto it = std::find(dirty_.begin(), dirty_.end(), c);
  if (it != dirty_.end()) dirty_.erase(it);
  it = std::find(flushing_.begin(), flushing_.end(), c);
  if (it != flushing_.end()) *it = nullptr;
}

void Worker::on_async(uv_async_t* h) {
  auto* self = static_cast<Worker*>(h->data);
  std::vector<std::function<void()>> fns;
  {
    std::lock_guard<std::mutex> lock(self->mutex_);
    fns.swap(self->posted_);
  }
  for (auto& fn : fns)
    fn();
  if (self->wake_requested_.exchange(false, std::memory_order_acq_rel) && self->wake_hook)
    self->wake_hook();
}

void Worker::on_check(uv_check_t* h) {
  auto* self = static_cast<Worker*>(h->data);
  // Flushing can make more connections dirty (a close, a reopened connector): loop.
  while (!self->dirty_.empty()) {
    self->flushing_.swap(self->dirty_);
    for (size_t i = 0; i < self->flushing_.size(); i++) {
      if (Conn* c = self->flushing_[i]) c->flush_from_worker();
    }
    self->flushing_.clear();
  }
}

void Worker::on_tick(uv_timer_t* h) {
  auto* self = static_cast<Worker*>(h->data);
  if (self->tick_hook) self->tick_hook();
}

void Worker::on_idle(uv_idle_t* h) {
  auto* self = static_cast<Worker*>(h->data);
  if (self->busy_hook) self->busy_hook();
}

// ---- Conn --------------------------------------------------------------------------

Conn::Conn(Worker& worker) : worker_(worker) {}

Conn::~Conn() {
  if (dirty_) worker_.remove_dirty(this);
}

void Conn::open(const tls::SavedSession* resume) {
  if (state_ != State::kIdle) return;
  failed_ = false;
  close_after_write_ = false;
  expect_eof_ = false;
  out_.clear();
  wire_.clear();
  writing_.clear();
  writing_offset_ = 0;
  in_.clear();
  opened_at_ns_ = now_ns();
  tls_.reset();
  if (worker_.tls()) tls_ = worker_.tls()->new_session(resume);
  uv_tcp_init(worker_.loop(), &handle_);
  handle_.data = this;
  uv_tcp_nodelay(&handle_, 1);
  connect_req_.data = this;
  state_ = State::kConnecting;
  const int rc = uv_tcp_connect(&connect_req_, &handle_,
                                reinterpret_cast<const sockaddr*>(&target().addr), on_connect);
  if (rc != 0) fail(Fail::kConnect, uv_strerror(rc));
}

void Conn::on_connect(uv_connect_t* req, int status) {
  auto* self = static_cast<Conn*>(req->data);
  if (self->state_ != State::kConnecting) return;  // closed meanwhile (UV_ECANCELED)
  if (status != 0) {
    self->fail(Fail::kConnect, uv_strerror(status));
    return;
  }
  const int rc = uv_read_start(self->stream(), on_alloc, on_read);
  if (rc != 0) {
    self->fail(Fail::kConnect, uv_strerror(rc));
    return;
  }
  if (self->tls_) {
    self->state_ = State::kHandshake;
    self->continue_handshake();
    return;
  }
  self->transport_ready();
}

void Conn::transport_ready() {
  if (!target().ws_path.empty()) {
    ws_ = std::make_unique<ws::ServerFrames>();
    ws_in_.clear();
    state_ = State::kUpgrade;
    const std::string request = ws::upgrade_request(target().text, target().ws_path);
    if (tls_) {
      if (!tls_->write(request)) {
        fail(Fail::kTls, tls_->error());
        return;
      }
    } else {
      wire_.append(request);
    }
    mark_dirty();
    return;
  }
  state_ = State::kOpen;
  on_established();
  if (established() && !out_.empty()) out();  // make sure it is flushed
}

void Conn::upgrade_received(std::string_view data) {
  ws_in_.append(data);
  std::string error;
  const long head = ws::upgrade_response(ws_in_, error);
  if (head < 0) {
    fail(Fail::kRefused, error);
    return;
  }
  if (head == 0) return;
  std::string rest = ws_in_.substr(static_cast<size_t>(head));
  ws_in_.clear();
  state_ = State::kOpen;
  on_established();
  if (established() && !out_.empty()) out();
  if (!rest.empty() && established()) plaintext(rest);
}

void Conn::plaintext(std::string_view data) {
  if (state_ == State::kUpgrade) {
    upgrade_received(data);
    return;
  }
  if (!ws_) {
    process(data);
    return;
  }
  ws_in_.clear();
  std::string error;
  const bool ok = ws_->feed(data, ws_in_, error);
  if (!ws_in_.empty()) process(ws_in_);
  if (!ok) fail(Fail::kClosed, error);
}

void Conn::continue_handshake() {
  const tls::Status st = tls_->handshake();
  if (st == tls::Status::kError) {
    flush();  // let the alert out; the broker logs the reason
    fail(Fail::kTls, tls_->error());
    return;
  }
  mark_dirty();
  if (st == tls::Status::kDone) transport_ready();
}

void Conn::set_reading(bool on) {
  if (state_ != State::kOpen) return;
  if (on)
    uv_read_start(stream(), on_alloc, on_read);
  else
    uv_read_stop(stream());
}

void Conn::on_alloc(uv_handle_t* handle, size_t, uv_buf_t* buf) {
  auto* self = static_cast<Conn*>(handle->data);
  buf->base = self->worker_.read_buffer();
  buf->len = Worker::kReadBufferSize;
}

void Conn::on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  auto* self = static_cast<Conn*>(stream->data);
  if (nread > 0) {
    self->received(std::string_view(buf->base, static_cast<size_t>(nread)));
    self->on_read_done();
  } else if (nread == UV_EOF) {
    self->fail(Fail::kClosed, "closed by the broker");
  } else if (nread < 0) {
    self->fail(Fail::kClosed, uv_strerror(static_cast<int>(nread)));
  }
}

void Conn::received(std::string_view data) {
  if (!tls_) {
    plaintext(data);
    return;
  }
  tls_->feed(data);
  if (state_ == State::kHandshake) {
    continue_handshake();
    if (state_ != State::kOpen) return;
  }
  if (state_ != State::kOpen && state_ != State::kUpgrade) return;
  plain_.clear();
  const tls::Status st = tls_->read(plain_);
  if (!plain_.empty()) plaintext(plain_);
  if (st == tls::Status::kError)
    fail(Fail::kTls, tls_->error());
  else if (st == tls::Status::kClosed)
    fail(Fail::kClosed, "TLS close_notify from the broker");
}

void Conn::process(std::string_view data) {
  if (in_.empty()) {
    const size_t used = parse(data);
    if (state_ == State::kOpen && used < data.size()) in_.assign(data.substr(used));
    return;
  }
  in_.append(data);
  const size_t used = parse(in_);
  in_.erase(0, used);
}

size_t Conn::parse(std::string_view data) {
  size_t offset = 0;
  while (state_ == State::kOpen && offset < data.size()) {
    const codec::HeaderResult h = codec::parse_fixed_header(data.substr(offset));
    if (h.status == codec::HeaderStatus::kIncomplete) break;
    if (h.status == codec::HeaderStatus::kError) {
      fail(Fail::kProtocol, codec::describe(h.error));
      break;
    }
    const size_t length = h.header.packet_length();
    if (data.size() - offset < length) break;
    on_packet(h.header, data.substr(offset + h.header.header_length, h.header.remaining_length));
    offset += length;
  }
  return offset;
}

void Conn::flush() {
  if (state_ == State::kIdle || (state_ == State::kClosing && !close_after_write_)) {
    out_.clear();
    return;
  }
  if (state_ == State::kConnecting) return;  // on_connect flushes
  if (!out_.empty() && (state_ == State::kOpen || state_ == State::kClosing)) {
    if (ws_) {
      ws_frame_.clear();
      ws::append_frame(ws_frame_, out_);
      out_.swap(ws_frame_);
    }
    if (tls_) {
      if (!tls_->write(out_)) {
        out_.clear();
        fail(Fail::kTls, tls_->error());
        return;
      }
    } else if (wire_.empty()) {
      wire_.swap(out_);
    } else {
      wire_.append(out_);
    }
    out_.clear();
  }
  if (tls_) tls_->take_output(wire_);
  if (write_in_flight_) return;
  if (wire_.empty()) {
    if (close_after_write_) begin_close();
    return;
  }
  start_write();
}

void Conn::start_write() {
  uv_buf_t b = uv_buf_init(wire_.data(), static_cast<unsigned>(wire_.size()));
  const int n = uv_try_write(stream(), &b, 1);
  if (n >= 0 && static_cast<size_t>(n) == wire_.size()) {
    wire_.clear();
    if (close_after_write_)
      begin_close();
    else
      on_drained();
    return;
  }
  if (n < 0 && n != UV_EAGAIN) {
    fail(Fail::kClosed, std::string("write: ") + uv_strerror(n));
    return;
  }
  writing_.swap(wire_);
  wire_.clear();
  writing_offset_ = n > 0 ? static_cast<size_t>(n) : 0;
  b = uv_buf_init(writing_.data() + writing_offset_,
                  static_cast<unsigned>(writing_.size() - writing_offset_));
  write_req_.data = this;
  const int rc = uv_write(&write_req_, stream(), &b, 1, on_write);
  if (rc != 0) {
    fail(Fail::kClosed, std::string("write: ") + uv_strerror(rc));
    return;
  }
  write_in_flight_ = true;
}

void Conn::on_write(uv_write_t* req, int status) {
  auto* self = static_cast<Conn*>(req->data);
  self->write_in_flight_ = false;
  self->writing_.clear();
  self->writing_offset_ = 0;
  if (status != 0) {
    if (status != UV_ECANCELED)
      self->fail(Fail::kClosed, std::string("write: ") + uv_strerror(status));
    return;
  }
  if (self->state_ == State::kIdle) return;
  if (!self->wire_.empty()) {
    self->start_write();
  } else if (self->close_after_write_) {
    self->begin_close();
  } else {
    self->on_drained();
  }
}

bool Conn::seal_output() {
  if (!tls_) return true;
  if (ws_ && !out_.empty()) {
    ws_frame_.clear();
    ws::append_frame(ws_frame_, out_);
    out_.swap(ws_frame_);
  }
  // The MQTT bytes first, then the alert after them.
  if (!out_.empty() && !tls_->write(out_)) {
    close();
    return false;
  }
  out_.clear();
  tls_->close_notify();
  return true;
}

void Conn::close_gracefully() {
  if (state_ == State::kIdle || state_ == State::kClosing) return;
  if (state_ != State::kOpen) {
    close();
    return;
  }
  if (!seal_output()) return;
  state_ = State::kClosing;
  close_after_write_ = true;
  flush();
}

void Conn::close_after_peer() {
  if (state_ != State::kOpen) {
    close();
    return;
  }
  if (!seal_output()) return;
  expect_eof_ = true;
  mark_dirty();
}

void Conn::close() {
  if (state_ == State::kIdle) return;
  close_after_write_ = false;
  begin_close();
}

void Conn::fail(Fail kind, const std::string& detail) {
  if (state_ == State::kIdle) return;
  if (expect_eof_) {  // the broker closing after DISCONNECT, as expected
    close();
    return;
  }
  if (state_ == State::kClosing && !close_after_write_) return;
  if (!failed_ && !(state_ == State::kClosing && close_after_write_)) {
    failed_ = true;
    on_failed(kind, detail);
  }
  close();
}

void Conn::begin_close() {
  if (uv_is_closing(reinterpret_cast<uv_handle_t*>(&handle_))) return;
  state_ = State::kClosing;
  close_after_write_ = false;
  if (dirty_) {
    worker_.remove_dirty(this);
    dirty_ = false;
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&handle_), on_close);
}

void Conn::on_close(uv_handle_t* handle) {
  auto* self = static_cast<Conn*>(handle->data);
  self->state_ = State::kIdle;
  self->write_in_flight_ = false;
  self->tls_.reset();
  self->ws_.reset();
  self->out_.clear();
  self->wire_.clear();
  self->writing_.clear();
  self->in_.clear();
  self->on_closed();
}

}  // namespace mqgate::bench
