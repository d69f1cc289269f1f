// The TLS handshake threads (see TlsWorkers in tls.hpp).
#include <cstring>

#include "base/log.hpp"
#include "transport/tls/tls.hpp"

namespace mqgate {

// --- TlsWorkers -------------------------------------------------------------------------

TlsWorkers::TlsWorkers(uv_loop_t* loop, size_t threads, size_t max_pending)
    : max_pending_(max_pending) {
  uv_async_init(loop, &async_, on_async);
  async_.data = this;
  for (size_t i = 0; i < threads; ++i) queues_.push_back(std::make_unique<Queue>());
  for (size_t i = 0; i < threads; ++i) threads_.emplace_back([this, i] { run(*queues_[i]); });
}

TlsWorkers::~TlsWorkers() { stop(); }

void TlsWorkers::stop() {
  if (stopped_) return;
  stopped_ = true;
  for (auto& q : queues_) {
    std::lock_guard<std::mutex> lock(q->mutex);
    q->stopping = true;
    q->ready.notify_all();
  }
  for (auto& t : threads_) t.join();
  threads_.clear();
  // Jobs never started fail; finished ones complete as usual.
  std::vector<TlsSession*> left;
  for (auto& q : queues_) {
    for (TlsSession* s : q->jobs) {
      s->job_result_ = MBEDTLS_ERR_SSL_INTERNAL_ERROR;
      left.push_back(s);
    }
    q->jobs.clear();
  }
  {
    std::lock_guard<std::mutex> lock(done_mutex_);
    left.insert(left.begin(), done_.begin(), done_.end());
    done_.clear();
  }
  for (TlsSession* s : left) s->finish_job();
  if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&async_)))
    uv_close(reinterpret_cast<uv_handle_t*>(&async_), nullptr);
}

void TlsWorkers::submit(TlsSession* session) {
  Queue& q = *queues_[session->worker_];
  std::lock_guard<std::mutex> lock(q.mutex);
  q.jobs.push_back(session);
  q.ready.notify_one();
}

bool TlsWorkers::cancel(TlsSession* session) {
  Queue& q = *queues_[session->worker_];
  std::lock_guard<std::mutex> lock(q.mutex);
  // At most tls_max_pending_handshakes entries, and rarely called: a linear search.
  auto it = std::find(q.jobs.begin(), q.jobs.end(), session);
  if (it == q.jobs.end()) return false;  // a worker runs it, or it is done
  q.jobs.erase(it);
  return true;
}

void TlsWorkers::refused(uint64_t now_ms) {
  ++refused_unreported_;
  report_refused(now_ms);
}

void TlsWorkers::report_refused(uint64_t now_ms) {
  // One line a second at most: a flood of connections must not become a flood of logs.
  if (refused_unreported_ == 0 || (refused_logged_ && now_ms - last_refused_log_ms_ < 1000)) return;
  LOG_INFO("TLS: refused %llu new connection%s since the last report: "
           "tls_max_pending_handshakes (%zu) handshakes were in progress",
           static_cast<unsigned long long>(refused_unreported_),
           refused_unreported_ == 1 ? "" : "s", max_pending_);
  refused_unreported_ = 0;
  refused_logged_ = true;
  last_refused_log_ms_ = now_ms;
}

void TlsWorkers::run(Queue& q) {
  for (;;) {
    TlsSession* session;
    {
      std::unique_lock<std::mutex> lock(q.mutex);
      q.ready.wait(lock, [&] { return q.stopping || !q.jobs.empty(); });
      if (q.stopping) return;
      session = q.jobs.front();
      q.jobs.pop_front();
    }
    session->run_job();
    {
      std::lock_guard<std::mutex> lock(done_mutex_);
      done_.push_back(session);
    }
    uv_async_send(&async_);
  }
}

void TlsWorkers::on_async(uv_async_t* async) {
  auto* self = static_cast<TlsWorkers*>(async->data);
  std::vector<TlsSession*> done;
  {
    std::lock_guard<std::mutex> lock(self->done_mutex_);
    done.swap(self->done_);
  }
  for (TlsSession* s : done) s->finish_job();
}

}  // namespace mqgate
