#include "base/deferred.hpp"

namespace mqgate {

namespace {
std::mutex g_current_mu;
DeferredQueue* g_current = nullptr;  // the running queue, if any
}  // namespace

DeferredQueue::DeferredQueue(uv_loop_t* loop) {
  uv_async_init(loop, &async_, on_async);
  async_.data = this;
  std::lock_guard<std::mutex> lock(g_current_mu);
  g_current = this;
}

DeferredQueue::~DeferredQueue() {
  stop();
}

void DeferredQueue::stop() {
  std::vector<std::function<void()>> dropped;
  {
    std::lock_guard<std::mutex> lock(g_current_mu);
    if (g_current == this) g_current = nullptr;
    std::lock_guard<std::mutex> qlock(mu_);
    stopped_ = true;
    dropped.swap(queue_);
  }
  // Destroyed outside the locks: a closure may own a reference it releases.
}

bool DeferredQueue::post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(g_current_mu);
    if (g_current != nullptr) {
      DeferredQueue& q = *g_current;
      std::lock_guard<std::mutex> qlock(q.mu_);
      if (!q.stopped_) {
        q.queue_.push_back(std::move(fn));
        // Under g_current_mu: stop() (before the handle closes) cannot run meanwhile.
        uv_async_send(&q.async_);
        return true;
      }
    }
  }
  fn = nullptr;  // outside the locks, as in stop()
  return false;
}

void DeferredQueue::on_async(uv_async_t* handle) {
  auto* self = static_cast<DeferredQueue*>(handle->data);
  std::vector<std::function<void()>> batch;
  {
    std::lock_guard<std::mutex> lock(self->mu_);
    if (self->stopped_) return;
    batch.swap(self->queue_);
  }
  for (auto& fn : batch)
    fn();
}

}  // namespace mqgate
