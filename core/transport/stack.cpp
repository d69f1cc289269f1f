#include "transport/stack.hpp"

namespace mqgate::transport {

namespace {

// Hands bytes from layer `index` - 1 to layer `index`, or to the top receiver.
class Link final : public Receiver {
 public:
  Link(std::vector<std::unique_ptr<StreamLayer>>& layers, size_t index, Receiver& top,
       std::string& error, bool& failed)
      : layers_(layers), index_(index), top_(top), error_(error), failed_(failed) {}
  bool on_bytes(std::string_view bytes) override {
    if (index_ == layers_.size()) return top_.on_bytes(bytes);
    Link up(layers_, index_ + 1, top_, error_, failed_);
    if (!layers_[index_]->input(bytes, up, error_)) failed_ = true;
    return !failed_;
  }

 private:
  std::vector<std::unique_ptr<StreamLayer>>& layers_;
  size_t index_;
  Receiver& top_;
  std::string& error_;
  bool& failed_;  // shared by the whole chain: a failure up the stack stops every layer
};

}  // namespace

bool Stack::input(std::string_view bytes, Receiver& top, std::string& error) {
  bool failed = false;
  Link bottom(layers_, 0, top, error, failed);
  bottom.on_bytes(bytes);
  return !failed;
}

std::string* Stack::output(std::string& app, std::string& error) {
  std::string* from = &app;
  for (size_t i = layers_.size(); i-- > 0;) {
    StreamLayer& layer = *layers_[i];
    if (!layer.wire_available()) return nullptr;
    if (!from->empty() && layer.ready()) {
      if (!layer.send(*from, error)) return nullptr;
    }
    from = &layer.wire();
  }
  return from;
}

std::string* Stack::shutdown(std::string& app, std::string& error) {
  std::string* from = &app;
  for (size_t i = layers_.size(); i-- > 0;) {
    StreamLayer& layer = *layers_[i];
    if (!layer.wire_available()) return nullptr;
    // Bytes a layer cannot take now never will: they are dropped, the goodbyes still go.
    if (!from->empty() && !(layer.ready() && layer.send(*from, error))) from->clear();
    layer.shutdown();
    from = &layer.wire();
  }
  return from;
}

bool Stack::drop_queued_work() {
  bool dropped = false;
  for (auto& layer : layers_)
    dropped = layer->drop_queued_work() || dropped;
  return dropped;
}

size_t Stack::pending_output() const {
  size_t n = 0;
  for (const auto& layer : layers_)
    if (layer->wire_available()) n += layer->wire().size();
  return n;
}

size_t Stack::buffered_input() const {
  size_t n = 0;
  for (const auto& layer : layers_)
    n += layer->buffered();
  return n;
}

bool Stack::busy() const {
  for (const auto& layer : layers_)
    if (!layer->wire_available()) return true;
  return false;
}

void Stack::release_idle_buffers(bool long_idle) {
  for (auto& layer : layers_)
    layer->release_idle_buffers(long_idle);
}

void Stack::abandon(std::function<void()> on_dead) {
  for (auto& layer : layers_) {
    if (layer->wire_available()) continue;
    layer.release()->abandon(std::move(on_dead));  // it deletes itself
    return;
  }
  on_dead();
}

}  // namespace mqgate::transport
