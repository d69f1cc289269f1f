// Bytes in arbitrary splits -> whole packets (fixed header + body). Pure: no I/O, no
// clock; every transport (the TCP/TLS connection, the unit tests' fake client, the
// fuzzer) cuts its input with this one class.
//
// Input is borrowed: feed() offers bytes (typically the loop-wide read buffer) and
// next() yields packets straight from them when they arrived whole. Only the bytes of
// a packet that has not fully arrived (and, while held, everything after it) are
// copied, and only as they arrive: a header announcing a large packet reserves
// nothing. When nothing is pending the framer owns no buffer at all, so an idle
// connection costs only sizeof(Framer).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "mqtt/decoder.hpp"

namespace mqgate::codec {

class Framer {
 public:
  enum class Status : uint8_t {
    kPacket,     // `packet` is one whole packet
    kNeedMore,   // everything offered is consumed or kept; feed() more
    kHeld,       // hold() is in effect; everything offered is kept, in order
    kError,      // malformed fixed header (`error`); the stream is unusable
    kOversized,  // `header` announces a packet over the limit; the stream is unusable
  };
  struct Frame {
    Status status = Status::kNeedMore;
    FixedHeader header;
    std::string_view packet;  // valid until the next call to feed() or next()
    DecodeError error = DecodeError::kNone;
  };

  // Offers bytes that arrived. They are borrowed until next() returns kNeedMore,
  // kHeld, kError or kOversized, so call next() until then before reusing them (bytes
  // of an earlier feed() not looked at yet are copied first, to keep the order).
  void feed(std::string_view data) {
    keep_input();
    in_ = data;
  }
  // The next whole packet, or why there is none. The size limit is checked as soon as
  // a packet's fixed header is known, before its body arrives; it is an argument
  // because the limit can change at a reload.
  Frame next(uint32_t max_packet_size);

  // Stops yielding packets (the consumer is congested); bytes offered meanwhile are
  // kept after the pending ones, in arrival order.
  void hold() { held_ = true; }
  void resume() { held_ = false; }
  bool held() const { return held_; }
  // Bytes of a packet that has not fully arrived are pending (and not held): the
  // packet_timeout clock runs while this is true.
  bool partial() const { return !held_ && head_ < buf_.size(); }
  // Bytes owned by the framer (the memory a connection holds for its input).
  size_t buffered() const { return buf_.size() - head_; }
  // Forgets everything (the stream is being closed) and frees the buffer.
  void clear();

 private:
  // Copies the rest of the borrowed input into the owned buffer.
  void keep_input();
  // Drops consumed bytes from the owned buffer; frees it when empty.
  void compact();

  std::string buf_;      // owned bytes not yet yielded, from head_ on
  std::string_view in_;  // borrowed bytes not yet looked at
  uint32_t head_ = 0;    // bytes of buf_ already yielded
  bool held_ = false;
};

}  // namespace mqgate::codec
