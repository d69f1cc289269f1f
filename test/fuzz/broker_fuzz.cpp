// libFuzzer target: arbitrary byte streams from three clients into the broker logic
// (sessions, router, retained store, wills, takeover). Must never crash or leak.
// The first byte of each chunk picks the client and what happens to it.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "broker.hpp"
#include "codec/decoder.hpp"

using namespace mqgate;

namespace {

class FuzzClient final : public Client {
 public:
  FuzzClient(Broker& b, const ListenerConfig* l) : Client(l, "127.0.0.1:1"), broker_(b) {
    broker_.on_open(*this, 0);
  }
  ~FuzzClient() override { close("fuzz over"); }
  void close(const char* reason) override {
    if (closed) return;
    closed = true;
    broker_.on_closed(*this, reason);
  }
  void feed(std::string_view bytes, uint64_t now) {
    partial.append(bytes);
    std::string_view rest = partial;
    while (!closed) {
      codec::HeaderResult h = codec::parse_fixed_header(rest);
      if (h.status == codec::HeaderStatus::kError) {
        broker_.on_decode_error(*this, h.error, nullptr, nullptr);
        break;
      }
      if (h.status == codec::HeaderStatus::kIncomplete || rest.size() < h.header.packet_length()) break;
      if (h.header.packet_length() > broker_.limits().max_packet_size) {
        broker_.on_oversized_packet(*this, h.header);
        break;
      }
      codec::Packet p;
      auto err = codec::decode_body(h.header, rest.substr(h.header.header_length, h.header.remaining_length),
                                    protocol_level, p);
      if (err != codec::DecodeError::kNone) {
        broker_.on_decode_error(*this, err, &h.header, &p);
        break;
      }
      broker_.on_packet(*this, p, now);
      rest.remove_prefix(h.header.packet_length());
    }
    partial = std::string(rest);
    out_.clear();  // the "network" drops what the broker sends
  }
  bool closed = false;
  std::string partial;

 protected:
  void schedule_flush() override { flush_pending_ = false; }

 private:
  Broker& broker_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  log::set_level(log::Level::kError);
  LimitsConfig limits;
  limits.max_packet_size = 4096;
  limits.max_inflight_messages = 3;
  limits.max_queued_messages = 5;
  ListenerConfig listener;
  AllowAllHooks hooks;
  Broker broker(limits, hooks);
  std::unique_ptr<FuzzClient> clients[3];
  uint64_t now = 0;
  size_t i = 0;
  while (i < size) {
    const uint8_t control = data[i++];
    const size_t len = std::min<size_t>(size - i, (control >> 3) + 1);
    const size_t which = control % 3;
    auto& c = clients[which];
    if ((control & 0x04) && c) {
      c.reset();  // the network drops this client
    }
    if (!c || c->closed) c = std::make_unique<FuzzClient>(broker, &listener);
    now += 100;
    c->feed(std::string_view(reinterpret_cast<const char*>(data + i), len), now);
    for (auto& other : clients)
      if (other) broker.check_timeouts(*other, now);
    i += len;
  }
  return 0;
}
