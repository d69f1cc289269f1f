// The layers of one connection, bottom (next to the socket) first; see stream_layer.hpp.
// Plain TCP connections have no stack at all (an idle connection's memory is a budget).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "transport/stream_layer.hpp"

namespace mqgate::transport {

class Stack {
 public:
  // Adds a layer on top of the ones already there.
  void push(std::unique_ptr<StreamLayer> layer) { layers_.push_back(std::move(layer)); }
  bool empty() const { return layers_.empty(); }
  StreamLayer& top() { return *layers_.back(); }

  // Bytes from the socket, through every layer, to `top`. Returns false (with `error`,
  // naming the layer) when the connection must close.
  bool input(std::string_view bytes, Receiver& top, std::string& error);

  // Moves `app` (bytes from above the stack; cleared when taken) down through the
  // layers that are ready, and returns the bytes for the socket (the bottom layer's
  // wire), or nullptr while a worker owns a layer. A layer not ready yet keeps what
  // comes from above; its own bytes still go down.
  std::string* output(std::string& app, std::string& error);
  // The connection closes: what `app` holds goes down where it can, then each layer's
  // goodbye, top first (a WebSocket close frame goes through TLS, then close_notify).
  std::string* shutdown(std::string& app, std::string& error);

  // The connection is closing: drops work queued for workers and not started (see
  // StreamLayer::drop_queued_work). Returns whether there was some.
  bool drop_queued_work();
  // Bytes waiting in the layers' wires (those that may be looked at now).
  size_t pending_output() const;
  size_t buffered_input() const;
  // Whether a worker thread owns a layer now.
  bool busy() const;
  void release_idle_buffers(bool long_idle);

  // The connection's socket closed: calls `on_dead` now, or, if a worker owns a layer,
  // once that layer is done with it (the layer is then no longer in the stack, which
  // may only be destroyed, in `on_dead` at the latest).
  void abandon(std::function<void()> on_dead);

 private:
  std::vector<std::unique_ptr<StreamLayer>> layers_;
};

}  // namespace mqgate::transport
