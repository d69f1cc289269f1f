// pubsub: P publishers -> S subscribers over T topics at QoS 0, 1 or 2.
//
// Publisher p publishes on topic p % T and subscriber s subscribes to topic s % T, so
// T = 1 fans every message out to every subscriber and T = P = S pairs them up. Every
// payload starts with (publisher, sequence number, send time), which is how the
// subscribers measure end-to-end latency and check that each publisher's messages all
// arrive, once (QoS 2) or at least once (QoS 1), in order.
//
// Flow control is end to end: a publisher keeps at most --window messages (times its
// fan-out in deliveries) between sending and delivery, so at saturation the broker
// runs as fast as it can without its queues growing without bound, and a QoS 0 run
// loses nothing unless the broker drops. With --rate the publishers send at that total
// rate instead (paced every millisecond), which is where latency means something.
//
// --open-loop is the overload case instead: publishers write as fast as TCP takes them
// (QoS 1/2 with at most --window unacknowledged), whatever the subscribers get;
// --sub-rate makes the subscribers slower than that, --stall-subscribers makes some stop
// reading. The verification then says what the broker lost.
#include <algorithm>
#include <cinttypes>
#include <cstring>
#include <map>

#include "harness.hpp"
#include "mqtt/encoder.hpp"
#include "mqtt5_client.hpp"

namespace mqgate::bench {
namespace {

constexpr uint32_t kMagic = 0x6d716762;  // "mqgb"
constexpr size_t kHeaderSize = 24;       // publisher u32, magic u32, seq u64, send time u64
constexpr size_t kBatch = 256;           // messages per publisher per loop iteration
constexpr size_t kMaxPending = 512 * 1024;
constexpr int kMaxPacketIds = 60000;

enum Phase : int { kSetup = 0, kPublishing = 1, kStopped = 2 };

// One per publisher, shared by the publisher's thread and its subscribers' threads.
struct PubShared {
  std::atomic<uint64_t> sent{0};
  std::atomic<uint64_t> delivered{0};
  std::atomic<uint64_t> completed{0};  // QoS 1/2 flows acknowledged to the publisher
  std::atomic<bool> waiting{false};
  Worker* worker = nullptr;
  uint64_t fanout = 0;
};

struct Shared {
  const Options* o = nullptr;
  std::atomic<int> phase{kSetup};
  std::atomic<uint64_t> start_ns{0};
  std::atomic<uint64_t> measure_from_ns{UINT64_MAX};
  std::vector<std::unique_ptr<PubShared>> pubs;
  std::vector<std::string> topics;
  std::string v5_props;  // -V 5: every PUBLISH's property block, encoded once
  std::vector<std::string> filters;  // per topic: itself, or $share/<--shared>/<topic>; then
                                     // --filter-suffix
};

struct PsStats {
  Counter published;
  Counter delivered;
  Counter connected;
  Counter subscribed;
  Counter stalls;
  Counter last_delivery_ns;
  Failures failures;
};

// What one subscriber saw of one publisher.
struct Track {
  uint64_t next = 0;  // one past the highest sequence number seen
  uint64_t received = 0;
  uint64_t unique = 0;
  uint64_t reordered = 0;
  uint64_t duplicates = 0;
  std::vector<uint64_t> seen;  // bitmap of sequence numbers

  void record(uint64_t seq) {
    received++;
    const size_t word = seq / 64;
    if (word >= seen.size()) seen.resize(std::max(word + 1, seen.size() * 2), 0);
    const uint64_t bit = uint64_t{1} << (seq % 64);
    if (seen[word] & bit) {
      duplicates++;
      return;
    }
    seen[word] |= bit;
    unique++;
    if (seq < next)
      reordered++;
    else
      next = seq + 1;
  }
};

class Base : public Conn {
 public:
  Base(Worker& w, Harness& h, Shared& shared, PsStats& stats)
      : Conn(w),
        harness_(h),
        shared_(shared),
        stats_(stats),
        v5_(shared.o->mqtt_version == codec::kProtocolLevel5) {}

 protected:
  void on_failed(Fail kind, const std::string& detail) override {
    stats_.failures.record(kind, detail);
  }
  bool check_connack(const codec::FixedHeader& h, std::string_view body) {
    const mqtt5::ConnackResult connack = mqtt5::read_connack(v5_ ? 5 : 4, h, body);
    if (!connack.well_formed) {
      fail(Fail::kProtocol, connack.error);
      return false;
    }
    if (connack.code != 0) {
      fail(Fail::kRefused, "CONNACK return code " + std::to_string(static_cast<int>(connack.code)));
      return false;
    }
    receive_maximum_ = connack.receive_maximum;
    return true;
  }
  // 5.0: an acknowledgement whose reason code is a failure (>= 0x80) fails the run.
  bool check_ack_reason(const codec::FixedHeader& h, std::string_view body) {
    const uint8_t reason = mqtt5::ack_reason(body);
    if (!v5_ || reason < 0x80) return true;
    fail(Fail::kRefused, std::string(codec::packet_type_name(h.type)) + " reason code " +
                             std::to_string(static_cast<int>(reason)));
    return false;
  }

  Harness& harness_;
  Shared& shared_;
  PsStats& stats_;
  const bool v5_;                     // MQTT 5.0 connection (-V 5)
  uint16_t receive_maximum_ = 65535;  // the broker's (5.0 CONNACK)
};

class Publisher final : public Base {
 public:
  Publisher(Worker& w, Harness& h, Shared& shared, PsStats& stats, uint32_t id)
      : Base(w, h, shared, stats),
        id_(id),
        ps_(*shared.pubs[id]),
        topic_(shared.topics[id % shared.topics.size()]),
        payload_(shared.o->payload, 'x'),
        ids_used_(65536, false) {
    std::memcpy(payload_.data(), &id_, 4);
    std::memcpy(payload_.data() + 4, &kMagic, 4);
  }

  bool ready() const { return ready_; }
  bool done() const { return done_; }
  // Whether pump() would send now (used to keep the loop spinning).
  bool can_progress() const { return ready_ && !done_ && !blocked_; }

  void pump() {
    blocked_ = false;
    if (!ready_ || done_ || !established()) {
      blocked_ = true;
      return;
    }
    const int phase = shared_.phase.load(std::memory_order_acquire);
    if (phase != kPublishing) {
      if (phase == kStopped) done_ = true;
      blocked_ = true;  // kSetup: the start is posted
      return;
    }
    const Options& o = *shared_.o;
    if (pending_output() > kMaxPending) {
      blocked_ = true;  // on_drained() resumes
      return;
    }
    uint64_t n = kBatch;
    if (o.count) n = std::min(n, o.count - seq_);
    if (o.rate > 0) {
      const double per_pub = o.rate / static_cast<double>(o.publishers);
      const uint64_t elapsed = now_ns() - shared_.start_ns.load(std::memory_order_relaxed);
      const auto due = static_cast<uint64_t>(static_cast<double>(elapsed) * per_pub / 1e9) + 1;
      n = std::min(n, due > seq_ ? due - seq_ : 0);
      if (n == 0) {
        blocked_ = true;  // the rate timer resumes
        return;
      }
    }
    uint64_t c = credit();
    if (c == 0) {
      // Announce that we wait, then look again, so a delivery in between is not missed.
      ps_.waiting.store(true);
      c = credit();
      if (c == 0) {
        blocked_ = true;
        return;
      }
      ps_.waiting.store(false);
    }
    n = std::min(n, c);
    std::string& out = this->out();
    const uint8_t qos = static_cast<uint8_t>(o.qos);
    for (uint64_t i = 0; i < n; i++) {
      const uint64_t t = now_ns();
      std::memcpy(payload_.data() + 8, &seq_, 8);
      std::memcpy(payload_.data() + 16, &t, 8);
      uint16_t pid = 0;
      if (qos > 0) pid = take_packet_id();
      if (v5_)
        mqtt5::encode_publish(out, topic_, payload_, shared_.v5_props, qos, pid);
      else
        codec::encode_publish(out, topic_, payload_, qos, false, false, pid);
      seq_++;
    }
    ps_.sent.store(seq_, std::memory_order_release);
    stats_.published.add(n);
    if (o.count && seq_ >= o.count) done_ = true;
  }

  // QoS 0 only: a message the broker dropped never arrives; after a second without
  // progress, stop waiting for what is missing so the run goes on (the loss is counted
  // at the end).
  void check_stall(uint64_t now) {
    const uint64_t d = ps_.delivered.load(std::memory_order_relaxed);
    if (d != last_delivered_) {
      last_delivered_ = d;
      last_progress_ns_ = now;
      return;
    }
    if (shared_.o->qos == 0 && ps_.fanout && ps_.waiting.load() &&
        now - last_progress_ns_ > 1'000'000'000) {
      forgiven_ = seq_ * ps_.fanout - std::min(seq_ * ps_.fanout, d);
      last_progress_ns_ = now;
      stats_.stalls.add();
      ps_.waiting.store(false);
      blocked_ = false;
    }
  }

 protected:
  void on_established() override {
    harness_.encode_connect(out(), harness_.client_id("p", id_), !harness_.options().persistent);
  }

  void on_packet(const codec::FixedHeader& h, std::string_view body) override {
    if (!ready_) {
      if (check_connack(h, body)) {
        ready_ = true;
        stats_.connected.add();
      }
      return;
    }
    const uint16_t id =
        body.size() >= 2 ? static_cast<uint16_t>((uint8_t(body[0]) << 8) | uint8_t(body[1])) : 0;
    switch (h.type) {
      case codec::PacketType::kPuback:
      case codec::PacketType::kPubcomp:
        if (!check_ack_reason(h, body)) return;
        if (!release_packet_id(id)) {
          fail(Fail::kProtocol,
               std::string(codec::packet_type_name(h.type)) + " for an unknown packet id");
          return;
        }
        ps_.completed.fetch_add(1, std::memory_order_relaxed);
        break;
      case codec::PacketType::kPubrec:
        if (!check_ack_reason(h, body)) return;
        if (v5_)
          mqtt5::encode_ack(out(), codec::PacketType::kPubrel, id);
        else
          codec::encode_ack(out(), codec::PacketType::kPubrel, id);
        break;
      default:
        fail(Fail::kProtocol, std::string("publisher got ") + codec::packet_type_name(h.type));
        return;
    }
  }

  void on_drained() override {
    if (blocked_) worker().wake();
  }

 private:
  uint64_t credit() const {
    const Options& o = *shared_.o;
    uint64_t c = UINT64_MAX;
    if (ps_.fanout && !o.open_loop) {
      const uint64_t cap = static_cast<uint64_t>(o.window) * ps_.fanout;
      const uint64_t accounted = ps_.delivered.load() + forgiven_;
      const uint64_t in_flight = seq_ * ps_.fanout > accounted ? seq_ * ps_.fanout - accounted : 0;
      c = in_flight >= cap ? 0 : (cap - in_flight) / ps_.fanout;
    }
    if (o.qos > 0) {
      // (A 5.0 broker's Receive Maximum bounds it too [MQTT-3.3.4-7].)
      const uint64_t max_ids =
          std::min<uint64_t>({static_cast<uint64_t>(o.window), kMaxPacketIds, receive_maximum_});
      c = std::min(c, ids_in_use_ >= max_ids ? 0 : max_ids - ids_in_use_);
    }
    return c;
  }

  uint16_t take_packet_id() {
    while (ids_used_[next_id_])
      next_id_ = next_id_ == 65535 ? 1 : next_id_ + 1;
    const uint16_t id = next_id_;
    ids_used_[id] = true;
    ids_in_use_++;
    next_id_ = next_id_ == 65535 ? 1 : next_id_ + 1;
    return id;
  }
  bool release_packet_id(uint16_t id) {
    if (id == 0 || !ids_used_[id]) return false;
    ids_used_[id] = false;
    ids_in_use_--;
    if (blocked_) worker().wake();
    return true;
  }

  uint32_t id_;
  PubShared& ps_;
  const std::string& topic_;
  std::string payload_;
  std::vector<bool> ids_used_;
  uint16_t next_id_ = 1;
  uint64_t ids_in_use_ = 0;
  uint64_t seq_ = 0;
  uint64_t forgiven_ = 0;
  uint64_t last_delivered_ = 0;
  uint64_t last_progress_ns_ = 0;
  bool ready_ = false;
  bool done_ = false;
  bool blocked_ = false;
};

class Subscriber final : public Base {
 public:
  Subscriber(Worker& w, Harness& h, Shared& shared, PsStats& stats, uint32_t id)
      : Base(w, h, shared, stats),
        id_(id),
        filter_(shared.filters[id % shared.filters.size()]),
        tracks_(shared.pubs.size()),
        pending_(shared.pubs.size(), 0),
        stall_(static_cast<int>(id) < shared.o->stall_subscribers),
        stalled_(stall_) {
    set_target(h.sub_target());  // --sub-port; null: the publishers' target
  }

  bool subscribed() const { return subscribed_; }
  const std::vector<Track>& tracks() const { return tracks_; }
  bool stalled() const { return stalled_; }
  bool closed_by_broker() const { return closed_by_broker_; }
  uint64_t received() const { return received_; }
  // --sub-rate: reading paused until its schedule catches up (the worker's timer asks).
  bool paused() const { return paused_; }
  void resume_if_due(uint64_t now) {
    if (!paused_ || received_ > due(now)) return;
    paused_ = false;
    set_reading(true);
  }
  // The end of a run: a stalled subscriber reads what reached it (and whether the broker
  // closed it).
  void unstall() {
    stall_ = false;
    paused_ = false;
    set_reading(true);
  }
  const Histogram& latency() const { return latency_; }
  uint64_t bad_payloads() const { return bad_payloads_; }

 protected:
  void on_established() override {
    harness_.encode_connect(out(), harness_.client_id("s", id_), !harness_.options().persistent);
  }

  void on_packet(const codec::FixedHeader& h, std::string_view body) override {
    switch (h.type) {
      case codec::PacketType::kPublish:
        on_publish(h, body);
        return;
      case codec::PacketType::kPubrel: {
        codec::Packet p;
        if (codec::decode_body(h, body, level(), p) != codec::DecodeError::kNone) {
          fail(Fail::kProtocol, "malformed PUBREL");
          return;
        }
        if (v5_)
          mqtt5::encode_ack(out(), codec::PacketType::kPubcomp, std::get<codec::Ack>(p).packet_id);
        else
          codec::encode_ack(out(), codec::PacketType::kPubcomp, std::get<codec::Ack>(p).packet_id);
        return;
      }
      case codec::PacketType::kConnack:
        if (check_connack(h, body)) {
          const auto qos = static_cast<uint8_t>(shared_.o->qos);
          if (v5_) {
            mqtt5::encode_subscribe(out(), 1, filter_, qos);
            return;
          }
          const codec::SubscribeTopic t{filter_, qos};
          codec::encode_subscribe(out(), 1, std::span<const codec::SubscribeTopic>(&t, 1));
        }
        return;
      case codec::PacketType::kSuback: {
        const int code = v5_ ? mqtt5::suback_reason(body).value_or(0x80)
                         : body.size() == 3 ? static_cast<uint8_t>(body[2])
                                            : int{codec::kSubackFailure};
        if (code >= 0x80) {  // the whole detail, so that one line tells the cause
          char hex[8];
          std::snprintf(hex, sizeof hex, "0x%02x", code);
          fail(Fail::kRefused, "SUBSCRIBE refused: SUBACK " + std::string(hex) + " for " + filter_);
          return;
        }
        subscribed_ = true;
        stats_.subscribed.add();
        if (stall_) set_reading(false);  // never again, until unstall()
        return;
      }
      default:
        fail(Fail::kProtocol, std::string("subscriber got ") + codec::packet_type_name(h.type));
    }
  }

  void on_failed(Fail kind, const std::string& detail) override {
    if (stalled_ && kind == Fail::kClosed) {  // its fate, not a failure of the run
      closed_by_broker_ = true;
      return;
    }
    Base::on_failed(kind, detail);
  }

  void on_read_done() override {
    const double rate = shared_.o->sub_rate;
    if (rate > 0 && !paused_ && shared_.phase.load(std::memory_order_relaxed) != kSetup &&
        received_ > due(now_ns())) {
      paused_ = true;  // ahead of its schedule: the worker's timer resumes it
      set_reading(false);
    }
    if (!any_pending_) return;
    any_pending_ = false;
    uint64_t total = 0;
    for (size_t p = 0; p < pending_.size(); p++) {
      if (!pending_[p]) continue;
      PubShared& ps = *shared_.pubs[p];
      ps.delivered.fetch_add(pending_[p]);
      total += pending_[p];
      pending_[p] = 0;
      // Wake a blocked publisher once half its window is free, so it refills in bulk.
      if (ps.waiting.load()) {
        const uint64_t owed = ps.sent.load() * ps.fanout;
        const uint64_t got = ps.delivered.load();
        const uint64_t half = static_cast<uint64_t>(shared_.o->window) * ps.fanout / 2;
        if ((owed <= got || owed - got <= half) && ps.waiting.exchange(false)) ps.worker->wake();
      }
    }
    stats_.delivered.add(total);
    stats_.last_delivery_ns.value.store(now_ns(), std::memory_order_relaxed);
  }

 private:
  void on_publish(const codec::FixedHeader& h, std::string_view body) {
    codec::Packet packet;
    const codec::DecodeError err = codec::decode_body(h, body, level(), packet);
    if (err != codec::DecodeError::kNone) {
      fail(Fail::kProtocol, std::string("malformed PUBLISH: ") + codec::describe(err));
      return;
    }
    const auto& p = std::get<codec::Publish>(packet);
    if (v5_) {
      if (p.qos == 1) mqtt5::encode_ack(out(), codec::PacketType::kPuback, p.packet_id);
      if (p.qos == 2) mqtt5::encode_ack(out(), codec::PacketType::kPubrec, p.packet_id);
    } else {
      if (p.qos == 1) codec::encode_ack(out(), codec::PacketType::kPuback, p.packet_id);
      if (p.qos == 2) codec::encode_ack(out(), codec::PacketType::kPubrec, p.packet_id);
    }
    uint32_t pub = 0, magic = 0;
    uint64_t seq = 0, sent = 0;
    if (p.payload.size() >= kHeaderSize) {
      std::memcpy(&pub, p.payload.data(), 4);
      std::memcpy(&magic, p.payload.data() + 4, 4);
      std::memcpy(&seq, p.payload.data() + 8, 8);
      std::memcpy(&sent, p.payload.data() + 16, 8);
    }
    if (magic != kMagic || pub >= tracks_.size()) {
      bad_payloads_++;
      return;
    }
    tracks_[pub].record(seq);
    received_++;
    if (stalled_) return;  // not counted in the others' deliveries
    pending_[pub]++;
    any_pending_ = true;
    const uint64_t now = now_ns();
    if (now >= shared_.measure_from_ns.load(std::memory_order_relaxed) && now >= sent)
      latency_.add(now - sent);
  }

  uint8_t level() const { return v5_ ? codec::kProtocolLevel5 : codec::kProtocolLevel311; }

  uint64_t due(uint64_t now) const {
    const uint64_t start = shared_.start_ns.load(std::memory_order_relaxed);
    const double elapsed = now > start ? static_cast<double>(now - start) / 1e9 : 0;
    return static_cast<uint64_t>(elapsed * shared_.o->sub_rate);
  }

  uint32_t id_;
  const std::string& filter_;
  std::vector<Track> tracks_;
  std::vector<uint64_t> pending_;
  uint64_t received_ = 0;
  bool stall_;    // not reading now
  bool stalled_;  // was made to stall (reported apart)
  bool closed_by_broker_ = false;
  bool paused_ = false;
  bool any_pending_ = false;
  bool subscribed_ = false;
  uint64_t bad_payloads_ = 0;
  Histogram latency_;
};

// The publishers of one worker, and the timer that paces them with --rate.
struct PsWorker {
  Worker* worker = nullptr;
  std::vector<Publisher*> pubs;
  std::vector<Subscriber*> subs;  // --sub-rate: resumed by sub_timer
  uv_timer_t sub_timer{};
  bool sub_timer_running = false;
  uv_timer_t rate_timer{};
  bool paced = false;
  bool timer_running = false;

  void pump_all() {
    bool busy = false;
    for (auto* p : pubs) {
      p->pump();
      busy = busy || p->can_progress();
    }
    if (!paced) worker->set_busy(busy);
  }
};

}  // namespace

// --shared: each publisher's messages are owed once to its topic's group, so what the
// members saw is merged (a message two members got is a duplicate).
void shared_verdict(const Options& o, const Shared& shared,
                    const std::vector<std::unique_ptr<Subscriber>>& subs, uint64_t& expected,
                    uint64_t& unique, uint64_t& dups) {
  expected = unique = dups = 0;
  for (size_t p = 0; p < shared.pubs.size(); p++) {
    std::vector<uint64_t> seen;
    bool any = false;
    for (size_t s = 0; s < subs.size(); s++) {
      if (static_cast<int>(s) % o.topics != static_cast<int>(p) % o.topics) continue;
      any = true;
      const Track& t = subs[s]->tracks()[p];
      if (seen.size() < t.seen.size()) seen.resize(t.seen.size(), 0);
      for (size_t w = 0; w < t.seen.size(); w++) {
        dups += static_cast<uint64_t>(__builtin_popcountll(seen[w] & t.seen[w]));
        seen[w] |= t.seen[w];
      }
      dups += t.duplicates;
    }
    if (!any) continue;
    expected += shared.pubs[p]->sent.load();
    for (uint64_t w : seen)
      unique += static_cast<uint64_t>(__builtin_popcountll(w));
  }
}

int run_pubsub(const Options& o) {
  Harness h(o);
  Shared shared;
  shared.o = &o;
  if (o.mqtt_version == codec::kProtocolLevel5) shared.v5_props = mqtt5::publish_properties(o);
  const std::string base = "bench/" + o.client_prefix + "/t";
  for (int t = 0; t < o.topics; t++)
    shared.topics.push_back(base + std::to_string(t));
  for (const std::string& t : shared.topics)
    shared.filters.push_back((o.shared.empty() ? t : "$share/" + o.shared + "/" + t) +
                             o.filter_suffix);
  const size_t nw = h.workers().size();
  for (int p = 0; p < o.publishers; p++) {
    auto ps = std::make_unique<PubShared>();
    for (int s = 0; s < o.subscribers; s++)
      if (s % o.topics == p % o.topics && s >= o.stall_subscribers) ps->fanout++;
    if (!o.shared.empty()) ps->fanout = std::min<uint64_t>(ps->fanout, 1);  // one group
    ps->worker = &h.worker(static_cast<size_t>(o.subscribers + p) % nw);
    shared.pubs.push_back(std::move(ps));
  }
  std::vector<std::unique_ptr<PsStats>> stats;
  std::vector<std::unique_ptr<PsWorker>> psw;
  for (size_t i = 0; i < nw; i++) {
    stats.push_back(std::make_unique<PsStats>());
    psw.push_back(std::make_unique<PsWorker>());
    psw.back()->worker = &h.worker(i);
    psw.back()->paced = o.rate > 0;
  }
  std::vector<std::unique_ptr<Subscriber>> subs;
  std::vector<std::unique_ptr<Publisher>> pubs;
  std::vector<Conn*> everyone;  // subscribers, then publishers
  for (int s = 0; s < o.subscribers; s++) {
    const size_t wi = static_cast<size_t>(s) % nw;
    subs.push_back(std::make_unique<Subscriber>(h.worker(wi), h, shared, *stats[wi],
                                                static_cast<uint32_t>(s)));
    everyone.push_back(subs.back().get());
    if (o.sub_rate > 0) psw[wi]->subs.push_back(subs.back().get());
  }
  for (int p = 0; p < o.publishers; p++) {
    const size_t wi = static_cast<size_t>(o.subscribers + p) % nw;
    pubs.push_back(
        std::make_unique<Publisher>(h.worker(wi), h, shared, *stats[wi], static_cast<uint32_t>(p)));
    everyone.push_back(pubs.back().get());
    psw[wi]->pubs.push_back(pubs.back().get());
  }
  for (size_t wi = 0; wi < nw; wi++) {
    PsWorker* pw = psw[wi].get();
    h.worker(wi).busy_hook = [pw] { pw->pump_all(); };
    h.worker(wi).wake_hook = [pw] { pw->pump_all(); };
    h.worker(wi).tick_hook = [pw] {
      const uint64_t now = now_ns();
      for (auto* p : pw->pubs)
        p->check_stall(now);
      pw->pump_all();
    };
  }
  if (!h.start()) return kExitSetup;

  auto failures = [&] {
    return sum_over(stats, [](const PsStats& s) { return s.failures.total(); });
  };
  auto close_all = [&] {
    for (size_t wi = 0; wi < nw; wi++)
      h.worker(wi).post([pw = psw[wi].get()] {
        if (pw->timer_running) uv_close(reinterpret_cast<uv_handle_t*>(&pw->rate_timer), nullptr);
        pw->timer_running = false;
        if (pw->sub_timer_running)
          uv_close(reinterpret_cast<uv_handle_t*>(&pw->sub_timer), nullptr);
        pw->sub_timer_running = false;
        pw->subs.clear();
        pw->worker->set_busy(false);
        pw->pubs.clear();
      });
    for (Conn* c : everyone)
      c->worker().post([c] {
        if (c->established()) codec::encode_disconnect(c->out());
        c->close_gracefully();
      });
    auto all_closed = [&] {
      bool closed = true;
      for (size_t wi = 0; wi < nw; wi++)
        h.worker(wi).run_sync([&] {
          for (Conn* c : everyone)
            if (&c->worker() == &h.worker(wi) && !c->closed()) closed = false;
        });
      return closed;
    };
    if (!h.wait(10, all_closed, nullptr)) {
      for (Conn* c : everyone)
        c->worker().run_sync([c] { c->close(); });
      h.wait(5, all_closed, nullptr);
    }
    h.stop();
  };

  if (!o.quiet)
    std::fprintf(
        stderr,
        "pubsub: %d -> %d over %d topic%s, QoS %d, %zu-byte payloads, %s, %s, on %zu threads\n",
        o.publishers, o.subscribers, o.topics, o.topics == 1 ? "" : "s", o.qos, o.payload,
        o.count ? (std::to_string(o.count) + " messages per publisher").c_str()
                : (std::to_string(o.duration) + " s").c_str(),
        o.rate > 0 ? ("at " + std::to_string(static_cast<uint64_t>(o.rate)) + " msg/s").c_str()
                   : "as fast as possible",
        nw);

  // Subscribers first, then publishers.
  for (auto& c : subs)
    c->worker().post([c = c.get()] { c->open(); });
  const double setup_limit = 30 + o.subscribers * 0.05;
  const bool subs_ok = h.wait(
      setup_limit,
      [&] {
        return sum_over(stats, [](const PsStats& s) { return s.subscribed.get(); }) ==
                   subs.size() ||
               failures() > 0;
      },
      nullptr);
  if (subs_ok && o.settle > 0)  // --settle: let the subscriptions' interest spread
    h.wait(
        o.settle, [&] { return failures() > 0; }, nullptr);
  for (auto& c : pubs)
    c->worker().post([c = c.get()] { c->open(); });
  const bool pubs_ok =
      subs_ok && h.wait(
                     setup_limit,
                     [&] {
                       return sum_over(stats, [](const PsStats& s) { return s.connected.get(); }) ==
                                  pubs.size() ||
                              failures() > 0;
                     },
                     nullptr);
  if (!pubs_ok || failures() > 0) {
    std::fprintf(stderr,
                 "mqgate-bench: setup failed: %" PRIu64 " of %zu subscribed, %" PRIu64
                 " of %zu publishers connected\n",
                 sum_over(stats, [](const PsStats& s) { return s.subscribed.get(); }), subs.size(),
                 sum_over(stats, [](const PsStats& s) { return s.connected.get(); }), pubs.size());
    close_all();  // the workers stop: their failure details can be read
    FailureReport failed;
    for (auto& s : stats)
      failed.add(s->failures);
    failed.print_details(stderr);
    return kExitFailures;
  }

  // Go.
  const uint64_t start = now_ns();
  shared.start_ns = start;
  shared.measure_from_ns = start + static_cast<uint64_t>(o.warmup * 1e9);
  shared.phase = kPublishing;
  h.mark_begin();
  for (size_t wi = 0; wi < nw; wi++) {
    PsWorker* pw = psw[wi].get();
    h.worker(wi).post([pw] {
      if (!pw->subs.empty()) {
        uv_timer_init(pw->worker->loop(), &pw->sub_timer);
        pw->sub_timer.data = pw;
        uv_timer_start(
            &pw->sub_timer,
            [](uv_timer_t* t) {
              auto* w = static_cast<PsWorker*>(t->data);
              const uint64_t now = now_ns();
              for (auto* s : w->subs)
                s->resume_if_due(now);
            },
            1, 1);
        pw->sub_timer_running = true;
      }
      if (pw->paced && !pw->pubs.empty()) {
        uv_timer_init(pw->worker->loop(), &pw->rate_timer);
        pw->rate_timer.data = pw;
        uv_timer_start(
            &pw->rate_timer,
            [](uv_timer_t* t) {
              auto* w = static_cast<PsWorker*>(t->data);
              w->pump_all();
              // Timers run before the poll, which may block until the next tick: send
              // now, or every message would wait up to a millisecond in the generator.
              for (auto* p : w->pubs)
                p->flush();
            },
            1, 1);
        pw->timer_running = true;
      }
      pw->pump_all();
    });
  }
  auto delivered = [&] {
    return sum_over(stats, [](const PsStats& s) { return s.delivered.get(); });
  };
  auto published = [&] {
    return sum_over(stats, [](const PsStats& s) { return s.published.get(); });
  };
  uint64_t last_pub = 0, last_del = 0;
  auto progress = [&](double, double dt) {
    const uint64_t p = published(), d = delivered();
    uint64_t expected = 0;
    for (auto& ps : shared.pubs)
      expected += ps->sent.load() * ps->fanout;
    char b[256];
    std::snprintf(b, sizeof b,
                  "[%5.1fs] pub %8.0f msg/s  deliveries %8.0f msg/s  in flight %6" PRIu64 "  %s",
                  static_cast<double>(now_ns() - start) / 1e9,
                  static_cast<double>(p - last_pub) / dt, static_cast<double>(d - last_del) / dt,
                  expected > d ? expected - d : 0, h.cpu_progress().c_str());
    last_pub = p;
    last_del = d;
    return std::string(b);
  };
  auto all_sent = [&] {
    for (auto& ps : shared.pubs)
      if (ps->sent.load() < o.count) return false;
    return true;
  };
  auto all_done = [&] {
    for (auto& ps : shared.pubs) {
      const uint64_t sent = ps->sent.load();
      if (ps->delivered.load() < sent * ps->fanout) return false;
      if (o.qos > 0 && ps->completed.load() < sent) return false;
    }
    return true;
  };

  uint64_t measured_deliveries = 0, measured_published = 0;
  double measured_seconds = 0;
  bool drained = true;
  if (o.count) {
    const double limit = o.max_time > 0 ? o.max_time : 3600;
    // Open loop: a broker that dropped never delivers everything; once all is sent the
    // drain below decides (it stops when deliveries stop coming).
    h.wait(
        limit, [&] { return (all_sent() && (all_done() || o.open_loop)) || failures() > 0; },
        progress);
  } else {
    double begin_s = 0;
    uint64_t d0 = 0, p0 = 0;
    if (o.warmup > 0) {
      h.wait(
          o.warmup, [&] { return failures() > 0; }, progress);
      d0 = delivered();
      p0 = published();
      h.mark_begin();
      begin_s = o.warmup;
    }
    h.wait(
        o.duration - begin_s, [&] { return failures() > 0; }, progress);
    measured_deliveries = delivered() - d0;
    measured_published = published() - p0;
    h.mark_end();
    measured_seconds = h.window_seconds();
  }
  shared.phase = kStopped;
  // A publisher's pump() that read the phase just before may still be adding a batch:
  // once every worker has run this no-op, `sent` is final, so the drain below does not
  // stop before that batch arrives (and count it missing).
  for (size_t wi = 0; wi < nw; wi++)
    h.worker(wi).run_sync([] {});
  // Drain: wait for what is still on its way, as long as it keeps coming.
  {
    uint64_t last = delivered();
    double quiet_since = 0;
    const double quiet_limit = o.qos == 0 ? std::min(o.drain_timeout, 2.0) : o.drain_timeout;
    drained = h.wait(
        o.open_loop ? std::max(30.0, 3 * o.drain_timeout) : 3600,
        [&] {
          if (all_done() || failures() > 0) return true;
          const uint64_t d = delivered();
          const double now = static_cast<double>(now_ns()) / 1e9;
          if (d != last || quiet_since == 0) {
            last = d;
            quiet_since = now;
          }
          return now - quiet_since > quiet_limit;
        },
        nullptr);
    drained = drained && all_done();
  }
  if (o.count) {
    h.mark_end();
    uint64_t latest = 0;
    for (auto& s : stats)
      latest = std::max(latest, s->last_delivery_ns.get());
    measured_deliveries = delivered();
    measured_published = published();
    measured_seconds =
        latest > start ? static_cast<double>(latest - start) / 1e9 : h.window_seconds();
  }
  // Stalled subscribers read what reached them, and notice a close by the broker.
  std::vector<Subscriber*> stalled;
  for (auto& s : subs)
    if (s->stalled()) stalled.push_back(s.get());
  if (!stalled.empty()) {
    for (auto* s : stalled)
      s->worker().post([s] { s->unstall(); });
    uint64_t last = 0;
    int quiet = 0;
    h.wait(
        30,
        [&] {
          uint64_t n = 0;
          bool all_closed = true;
          for (auto* s : stalled) {
            s->worker().run_sync([&] {
              n += s->received();
              all_closed = all_closed && (s->closed_by_broker() || s->closed());
            });
          }
          quiet = n == last ? quiet + 1 : 0;
          last = n;
          return all_closed || quiet > 100;  // a second without a byte
        },
        nullptr);
  }
  close_all();

  // Verify.
  uint64_t expected = 0, unique = 0, received = 0, dups = 0, reordered = 0, bad = 0;
  Histogram latency;
  uint64_t stalled_expected = 0, stalled_received = 0, stalled_closed = 0;
  for (size_t s = 0; s < subs.size(); s++) {
    if (subs[s]->stalled()) {
      for (size_t p = 0; p < pubs.size(); p++)
        if (static_cast<int>(s) % o.topics == static_cast<int>(p) % o.topics)
          stalled_expected += shared.pubs[p]->sent.load();
      stalled_received += subs[s]->received();
      stalled_closed += subs[s]->closed_by_broker() ? 1 : 0;
      continue;
    }
    latency.merge(subs[s]->latency());
    bad += subs[s]->bad_payloads();
    for (size_t p = 0; p < pubs.size(); p++) {
      const Track& t = subs[s]->tracks()[p];
      if (static_cast<int>(s) % o.topics == static_cast<int>(p) % o.topics)
        expected += shared.pubs[p]->sent.load();
      unique += t.unique;
      received += t.received;
      dups += t.duplicates;
      reordered += t.reordered;
    }
  }
  uint64_t stalls = 0;
  FailureReport failures_seen;
  for (auto& s : stats) {
    failures_seen.add(s->failures);
    stalls += s->stalls.get();
  }
  if (!o.shared.empty()) shared_verdict(o, shared, subs, expected, unique, dups);
  const uint64_t missing = expected > unique ? expected - unique : 0;
  uint64_t sent_total = 0, acknowledged = 0;
  for (auto& ps : shared.pubs) {
    sent_total += ps->sent.load();
    acknowledged += ps->completed.load();
  }
  const double rate =
      measured_seconds > 0 ? static_cast<double>(measured_deliveries) / measured_seconds : 0;
  const double pub_rate =
      measured_seconds > 0 ? static_cast<double>(measured_published) / measured_seconds : 0;
  const double mbps = rate * static_cast<double>(o.payload) / 1e6;
  const bool verified = missing == 0 && reordered == 0 && bad == 0 && (o.qos != 2 || dups == 0);
  const bool failed = failures_seen.total > 0 || reordered > 0 || bad > 0 ||
                      (o.qos > 0 && missing > 0) || (o.qos == 2 && dups > 0);

  if (o.json) {
    Json j;
    j.begin();
    j.field("mode", "pubsub");
    j.field("target", o.host + ":" + std::to_string(o.port));
    if (o.sub_port) j.field("sub_target", o.host + ":" + std::to_string(o.sub_port));
    j.field("tls", o.tls);
    j.field("publishers", o.publishers);
    j.field("subscribers", o.subscribers);
    j.field("topics", o.topics);
    j.field("filter", shared.filters.front());
    j.field("qos", o.qos);
    j.field("mqtt_version", static_cast<int>(o.mqtt_version));
    j.field("payload", static_cast<uint64_t>(o.payload));
    j.field("rate_target", o.rate);
    j.field("window", o.window);
    j.field("duration_s", measured_seconds);
    j.field("published", sent_total);
    if (o.qos > 0) j.field("acknowledged", acknowledged);  // PUBACK / PUBCOMP received
    j.field("publish_rate", pub_rate);
    j.field("deliveries", received);
    j.field("delivery_rate", rate);
    j.field("mb_per_s", mbps);
    j.begin("verify");
    j.field("expected", expected);
    j.field("unique", unique);
    j.field("missing", missing);
    j.field("duplicates", dups);
    j.field("out_of_order", reordered);
    j.field("bad_payloads", bad);
    j.field("drained", drained);
    j.field("qos0_window_stalls", stalls);
    j.field("ok", verified);
    j.end();
    j.begin("stalled");
    j.field("subscribers", static_cast<uint64_t>(stalled.size()));
    j.field("expected", stalled_expected);
    j.field("received", stalled_received);
    j.field("closed_by_broker", stalled_closed);
    j.end();
    j.field("open_loop", o.open_loop);
    j.field("sub_rate", o.sub_rate);
    failures_seen.json(j);
    j.latency("latency_us", latency);
    h.json_resources(j, measured_deliveries);
    j.end();
    std::printf("%s\n", j.str().c_str());
  } else {
    std::printf("pubsub summary (%s, %d -> %d, %d topic%s, QoS %d, %zu B%s)\n",
                (o.host + ":" + std::to_string(o.port)).c_str(), o.publishers, o.subscribers,
                o.topics, o.topics == 1 ? "" : "s", o.qos, o.payload,
                o.mqtt_version == codec::kProtocolLevel5 ? ", MQTT 5" : "");
    std::printf(
        "  delivered   %.0f msg/s, %.1f MB/s over %.2f s (published %.0f msg/s%s)\n", rate, mbps,
        measured_seconds, pub_rate,
        o.rate > 0 ? (", target " + std::to_string(static_cast<uint64_t>(o.rate))).c_str() : "");
    std::printf("  latency     p50 %s  p90 %s  p99 %s  max %s (publish to delivery%s)\n",
                format_ns(latency.percentile(0.5)).c_str(),
                format_ns(latency.percentile(0.9)).c_str(),
                format_ns(latency.percentile(0.99)).c_str(), format_ns(latency.max()).c_str(),
                o.rate > 0 ? "" : "; at saturation, mostly queueing in the window");
    std::printf("  verified    %" PRIu64 " published, %" PRIu64 " deliveries expected, %" PRIu64
                " missing%s, %" PRIu64 " duplicates, %" PRIu64 " out of order%s\n",
                sent_total, expected, missing, o.qos == 0 && missing ? " (QoS 0 loss)" : "", dups,
                reordered, verified ? ": OK" : ": NOT OK");
    if (!stalled.empty())
      std::printf("  stalled     %zu subscriber%s: %" PRIu64 " of %" PRIu64
                  " messages received, %" PRIu64 " closed by the broker\n",
                  stalled.size(), stalled.size() == 1 ? "" : "s", stalled_received,
                  stalled_expected, stalled_closed);
    failures_seen.print(stdout);
    h.print_resources(stdout, measured_deliveries, "delivery");
  }
  failures_seen.print_details(stderr);
  subs.clear();
  pubs.clear();
  return failed ? kExitFailures : kExitOk;
}

}  // namespace mqgate::bench
