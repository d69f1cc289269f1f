// An application message: topic, payload, QoS and retain flag, and for MQTT 5 its
// Message Expiry and forwarded properties; immutable once made.
//
// One allocation holds the header, the topic, the payload, the expiry and the property
// bytes (3.1.1 messages carry neither of the last two). Messages are reference counted
// (single-threaded: everything that holds one runs on the event loop) so a message
// routed to many sessions, queued, in flight and retained exists once.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <optional>
#include <string_view>
#include <utility>

namespace mqgate {

class Message;

// Intrusive reference-counting pointer to a Message.
class MessagePtr {
 public:
  MessagePtr() = default;
  MessagePtr(const MessagePtr& o) : p_(o.p_) { retain(); }
  MessagePtr(MessagePtr&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  MessagePtr& operator=(MessagePtr o) noexcept {
    std::swap(p_, o.p_);
    return *this;
  }
  ~MessagePtr() { release(); }

  Message* get() const { return p_; }
  Message* operator->() const { return p_; }
  Message& operator*() const { return *p_; }
  explicit operator bool() const { return p_ != nullptr; }

 private:
  friend class Message;
  explicit MessagePtr(Message* p) : p_(p) {}
  inline void retain();
  inline void release();
  Message* p_ = nullptr;
};

class Message {
 public:
  // `props`: MQTT 5 properties forwarded to 5.0 subscribers (encoded property bytes,
  // mqtt5::forwarded_properties), kept in the same allocation; empty for 3.1.1.
  // `expires_at_ms`: MQTT 5 Message Expiry, as loop time (kept in 8 bytes before the
  // property bytes, only when set).
  static MessagePtr create(std::string_view topic, std::string_view payload, uint8_t qos,
                           bool retain, std::string_view props = {},
                           std::optional<uint64_t> expires_at_ms = std::nullopt) {
    const size_t expiry_size = expires_at_ms ? sizeof(uint64_t) : 0;
    void* mem =
        std::malloc(sizeof(Message) + topic.size() + payload.size() + expiry_size + props.size());
    if (mem == nullptr) throw std::bad_alloc();
    auto* m = new (mem)
        Message(static_cast<uint32_t>(topic.size()), static_cast<uint32_t>(payload.size()),
                static_cast<uint32_t>(expiry_size + props.size()), qos,
                static_cast<uint8_t>((retain ? kRetain : 0) | (expires_at_ms ? kExpires : 0)));
    char* p = m->data_;
    std::memcpy(p, topic.data(), topic.size());
    p += topic.size();
    if (!payload.empty()) std::memcpy(p, payload.data(), payload.size());
    p += payload.size();
    if (expires_at_ms) std::memcpy(p, &*expires_at_ms, sizeof(uint64_t));
    p += expiry_size;
    if (!props.empty()) std::memcpy(p, props.data(), props.size());
    return MessagePtr(m);
  }

  std::string_view topic() const { return {data_, topic_size_}; }
  std::string_view payload() const { return {data_ + topic_size_, payload_size_}; }
  std::string_view props() const {
    const size_t skip = expires() ? sizeof(uint64_t) : 0;
    return {data_ + topic_size_ + payload_size_ + skip, props_size_ - skip};
  }
  uint8_t qos() const { return qos_; }
  bool retain() const { return bits_ & kRetain; }
  // MQTT 5 Message Expiry: whether it has one, and when (loop time, ms).
  bool expires() const { return bits_ & kExpires; }
  uint64_t expires_at_ms() const {
    uint64_t t = 0;
    if (expires()) std::memcpy(&t, data_ + topic_size_ + payload_size_, sizeof t);
    return t;
  }

  // Persistence bookkeeping (persistence.cpp), not part of the message: its id in the
  // store (0: not stored) and how many durable queue entries refer to it, so the body
  // is written once and removed with its last entry.
  uint64_t durable_id() const { return durable_id_; }
  void set_durable_id(uint64_t id) const { durable_id_ = id; }
  uint32_t durable_refs() const { return durable_refs_; }
  uint32_t add_durable_ref() const { return ++durable_refs_; }
  uint32_t drop_durable_ref() const { return --durable_refs_; }

  Message(const Message&) = delete;
  Message& operator=(const Message&) = delete;

 private:
  friend class MessagePtr;
  static constexpr uint8_t kRetain = 1;
  static constexpr uint8_t kExpires = 2;
  Message(uint32_t topic_size, uint32_t payload_size, uint32_t props_size, uint8_t qos,
          uint8_t bits)
      : topic_size_(topic_size),
        payload_size_(payload_size),
        props_size_(props_size),
        qos_(qos),
        bits_(bits) {}

  uint32_t refs_ = 1;
  mutable uint32_t durable_refs_ = 0;
  mutable uint64_t durable_id_ = 0;
  uint32_t topic_size_;
  uint32_t payload_size_;
  uint32_t props_size_;  // in the header's padding: 3.1.1 messages do not grow
  uint8_t qos_;
  uint8_t bits_;  // kRetain | kExpires
  char data_[];   // topic, payload, then (5.0) the expiry time if kExpires, property bytes
};

static_assert(sizeof(Message) <= 32, "a message header stays within 32 bytes");

inline void MessagePtr::retain() {
  if (p_) ++p_->refs_;
}

inline void MessagePtr::release() {
  if (p_ && --p_->refs_ == 0) {
    p_->~Message();
    std::free(p_);
  }
  p_ = nullptr;
}

}  // namespace mqgate
