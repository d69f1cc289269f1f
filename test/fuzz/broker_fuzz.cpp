// libFuzzer target: arbitrary byte streams from three clients into the broker logic
// (sessions, router, retained store, wills, takeover). Must never crash or leak.
// The first byte of each chunk picks the client and what happens to it.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../lib/packet_pump.hpp"
#include "broker.hpp"
#include "codec/decoder.hpp"
#include "codec/framer.hpp"

using namespace mqgate;

namespace {

class FuzzClient;
// Closes requested during a step, reported to the broker after it, as the server does.
std::vector<FuzzClient*> pending_closes;

class FuzzClient final : public Client {
 public:
  FuzzClient(Broker& b, const ListenerConfig* l) : Client(l, "127.0.0.1:1"), broker_(b) {
    broker_.on_open(*this, 0);
  }
  ~FuzzClient() override {
    close("fuzz over");
    report();
    std::erase(pending_closes, this);
  }
  void report() {
    if (!close_requested() || reported_) return;
    reported_ = true;
    framer_.clear();
    broker_.on_closed(*this, close_reason());
  }
  void feed(std::string_view bytes, uint64_t now) {
    test::pump_packets(framer_, broker_, *this, bytes, now);
    out_.clear();  // the "network" drops what the broker sends
  }

 protected:
  void schedule_flush() override { flush_pending_ = false; }
  void on_close_requested() override { pending_closes.push_back(this); }

 private:
  Broker& broker_;
  codec::Framer framer_;
  bool reported_ = false;
};

void report_closes() {
  while (!pending_closes.empty()) {
    FuzzClient* c = pending_closes.front();
    pending_closes.erase(pending_closes.begin());
    c->report();
  }
}

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
    if (!c || c->close_requested()) c = std::make_unique<FuzzClient>(broker, &listener);
    now += 100;
    c->feed(std::string_view(reinterpret_cast<const char*>(data + i), len), now);
    report_closes();
    for (auto& other : clients) {
      if (other) broker.check_timeouts(*other, now);
      report_closes();
    }
    i += len;
  }
  return 0;
}
