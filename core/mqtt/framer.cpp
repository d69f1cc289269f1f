#include "mqtt/framer.hpp"

#include <algorithm>

namespace mqgate::codec {

void Framer::clear() {
  std::string().swap(buf_);
  in_ = {};
  head_ = 0;
}

void Framer::keep_input() {
  if (in_.empty()) return;
  compact();
  buf_.append(in_);
  in_ = {};
}

void Framer::compact() {
  // Only before appending (or when all is consumed): held bytes are yielded packet by
  // packet from head_ on, without moving the rest each time.
  if (head_ == 0) return;
  if (head_ == buf_.size()) {
    // Nothing pending: an idle connection owns no input buffer.
    std::string().swap(buf_);
  } else {
    buf_.erase(0, head_);
  }
  head_ = 0;
}

Framer::Frame Framer::next(uint32_t max_packet_size) {
  Frame f;
  // The packet yielded last (if it was in buf_) is no longer looked at.
  if (head_ == buf_.size()) compact();
  if (held_) {
    keep_input();
    f.status = Status::kHeld;
    return f;
  }
  if (!buf_.empty()) {
    // A packet whose start arrived earlier (or was held): complete it from the input,
    // copying only its own bytes; what follows it stays borrowed.
    HeaderResult h = parse_fixed_header(std::string_view(buf_).substr(head_));
    if (h.status == HeaderStatus::kIncomplete && !in_.empty()) compact();
    while (h.status == HeaderStatus::kIncomplete && !in_.empty()) {
      buf_.push_back(in_[0]);  // the length field is at most 4 more bytes
      in_.remove_prefix(1);
      h = parse_fixed_header(buf_);
    }
    if (h.status == HeaderStatus::kIncomplete) {
      f.status = Status::kNeedMore;
      return f;
    }
    if (h.status == HeaderStatus::kError || h.header.packet_length() > max_packet_size) {
      f.status = h.status == HeaderStatus::kError ? Status::kError : Status::kOversized;
      f.header = h.header;
      f.error = h.error;
      clear();
      return f;
    }
    const size_t length = h.header.packet_length();
    if (buffered() < length) {
      compact();  // the packet is the last thing owned: append after it
      const size_t take = std::min(length - buf_.size(), in_.size());
      buf_.append(in_.substr(0, take));
      in_.remove_prefix(take);
      if (buf_.size() < length) {
        f.status = Status::kNeedMore;
        return f;
      }
    }
    f.status = Status::kPacket;
    f.header = h.header;
    f.packet = std::string_view(buf_).substr(head_, length);
    head_ += static_cast<uint32_t>(length);
    return f;
  }
  if (in_.empty()) {
    f.status = Status::kNeedMore;
    return f;
  }
  // Nothing owned: whole packets come straight from the input.
  HeaderResult h = parse_fixed_header(in_);
  if (h.status == HeaderStatus::kError ||
      (h.status == HeaderStatus::kComplete && h.header.packet_length() > max_packet_size)) {
    f.status = h.status == HeaderStatus::kError ? Status::kError : Status::kOversized;
    f.header = h.header;
    f.error = h.error;
    clear();
    return f;
  }
  if (h.status == HeaderStatus::kIncomplete || in_.size() < h.header.packet_length()) {
    // Grow with the bytes that actually arrive: a header alone must not make us
    // reserve the packet's announced size.
    keep_input();
    f.status = Status::kNeedMore;
    return f;
  }
  f.status = Status::kPacket;
  f.header = h.header;
  f.packet = in_.substr(0, h.header.packet_length());
  in_.remove_prefix(h.header.packet_length());
  return f;
}

}  // namespace mqgate::codec
