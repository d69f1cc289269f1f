// Work posted to the event loop from any thread: plugins complete deferred decisions
// from threads of their own (mqgate_host_api.complete), and the loop applies them.
// One queue and one uv_async_t, created by the server once its loop runs; at most one
// per process (post() finds it).
#pragma once

#include <uv.h>

#include <functional>
#include <mutex>
#include <vector>

namespace mqgate {

class DeferredQueue {
 public:
  explicit DeferredQueue(uv_loop_t* loop);
  ~DeferredQueue();
  DeferredQueue(const DeferredQueue&) = delete;
  DeferredQueue& operator=(const DeferredQueue&) = delete;

  // From any thread: runs `fn` on the loop soon, in posting order. Returns false (and
  // destroys `fn` unrun) when there is no running queue (before start, after stop).
  static bool post(std::function<void()> fn);
  // No more posts; work still queued is dropped unrun. Called before the loop's
  // handles are closed.
  void stop();

 private:
  static void on_async(uv_async_t* handle);
  uv_async_t async_;
  std::mutex mu_;
  std::vector<std::function<void()>> queue_;
  bool stopped_ = false;
};

}  // namespace mqgate
