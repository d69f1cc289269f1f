// A connection's transport is a stack of byte-stream layers between the socket and the
// MQTT framer: TCP at the bottom (the Connection's socket), then optionally TLS, then
// optionally WebSocket. Each layer takes bytes from the layer below and hands what they
// carry up, and wraps bytes from above into bytes for the layer below. A layer knows
// nothing of the layers around it, of sockets or of MQTT: adding a transport is adding
// one layer.
//
// Data flows one way in each direction: input() hands bytes up and returns; send()
// queues bytes in the layer's wire(), which the stack moves down when the connection
// flushes. The only calls a layer makes on its own are asynchronous events (a TLS
// handshake step that finished on a worker thread), through LayerEvents, from the loop.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "base/peer_info.hpp"

namespace mqgate::transport {

// Takes the bytes a layer hands up (the next layer, or the connection's framer).
class Receiver {
 public:
  virtual ~Receiver() = default;
  // Bytes, in order, borrowed for the call. Returns false when the receiver wants no more
  // for now (it is closing): the layer stops handing bytes up.
  virtual bool on_bytes(std::string_view bytes) = 0;
};

class StreamLayer;

// What a layer reports on its own, later than the call that caused it (only TLS, whose
// handshake steps run on worker threads, has such events). Called on the loop thread.
class LayerEvents {
 public:
  virtual ~LayerEvents() = default;
  // The layer has bytes for the layer below (a handshake flight): flush. Returns false
  // when the connection is closing (the layer then starts nothing new).
  virtual bool on_layer_output(StreamLayer& layer) = 0;
  // The layer's handshake finished: bytes it kept may be handed up now (feed the stack
  // nothing: Stack::input({})). On failure `error` says why; the layer's wire() may
  // hold a last message for the peer (an alert), and the connection closes.
  virtual void on_layer_ready(StreamLayer& layer, const std::string& error) = 0;
};

class StreamLayer {
 public:
  virtual ~StreamLayer() = default;
  // For log lines: "TLS", "WebSocket".
  virtual const char* name() const = 0;

  // Bytes from below. What they carry goes to `up`, in order, until `up` returns
  // false. Returns false (with `error`) when the connection must close; wire() may then
  // hold a last message for the peer (an alert, a close frame, an HTTP error).
  virtual bool input(std::string_view bytes, Receiver& up, std::string& error) = 0;
  // Whether bytes from above may be sent now (after the layer's own handshake).
  virtual bool ready() const = 0;
  // Wraps `bytes` from above (which it then clears) into wire(). Only when ready().
  virtual bool send(std::string& bytes, std::string& error) = 0;
  // Whether wire() may be touched now (not while a worker thread owns the layer).
  virtual bool wire_available() const { return true; }
  // Bytes waiting for the layer below.
  virtual std::string& wire() = 0;
  // The connection closes: queue the layer's goodbye (close_notify, a close frame) in
  // wire() if its state allows one.
  virtual void shutdown() = 0;
  // Bytes kept for input not yet handed up (memory accounting).
  virtual size_t buffered() const = 0;
  // Gives back memory an idle connection does not need; `long_idle` for connections
  // that have been idle a while (costlier to undo).
  virtual void release_idle_buffers(bool long_idle) { (void)long_idle; }
  // The connection is closing: work queued for a worker thread and not started yet is
  // dropped unrun. Returns whether there was some.
  virtual bool drop_queued_work() { return false; }
  // What the peer proved during the layer's handshake (TLS), once; nullptr otherwise.
  virtual std::unique_ptr<TlsPeerInfo> take_peer_info() { return nullptr; }
  // The connection is gone while a worker owns this layer (wire_available() false): the
  // layer, released from its stack, deletes itself and then calls `on_dead` once the
  // worker is done (at once if the job had not started). Layers without workers never
  // get here.
  virtual void abandon(std::function<void()> on_dead) {
    delete this;
    on_dead();
  }
};

}  // namespace mqgate::transport
