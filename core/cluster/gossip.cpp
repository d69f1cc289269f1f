#include "cluster/gossip.hpp"

#include <algorithm>
#include <cstdio>

#include "base/log.hpp"
#include "base/utf8.hpp"
#include "mqtt/topic.hpp"

namespace mqgate::cluster {

namespace {

enum Kind : uint8_t {
  kDelta = 'D',     // seq(8) add(1) filter(rest)
  kBeat = 'B',      // seq(8) count(8) hash(8) node(rest)
  kHello = 'H',     // as kBeat; the others answer with a BEAT now
  kAck = 'A',       // seq(8)
  kRequest = 'Q',   // (nothing): send me your SNAPSHOT
  kSnapshot = 'S',  // seq(8) part(4) parts(4) then filters, each len(2) bytes
  kBye = 'X',       // (nothing)
};

// Bounds on what other nodes may make this one hold (a NATS account shared with
// something hostile, or a bug): past them the node stops trusting its view and publishes
// everything, which is only a cost.
constexpr size_t kMaxNodes = 1024;
constexpr size_t kMaxRemoteBytes = 256u << 20;  // filters (+ overhead) of all other nodes
constexpr size_t kFilterOverhead = 64;          // per filter held: hash nodes, strings
constexpr size_t kMaxEarly = 65536;
constexpr size_t kSnapshotPartBytes = 256u << 10;
constexpr uint64_t kHelloAnswerMs = 100;  // at most one immediate BEAT per this

void put_u64(std::string& out, uint64_t v) {
  for (int i = 7; i >= 0; --i)
    out.push_back(static_cast<char>(v >> (8 * i)));
}
void put_u32(std::string& out, uint32_t v) {
  for (int i = 3; i >= 0; --i)
    out.push_back(static_cast<char>(v >> (8 * i)));
}
void put_u16(std::string& out, uint16_t v) {
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v));
}

struct Reader {
  std::string_view rest;
  bool ok = true;
  uint64_t uint(size_t bytes) {
    if (rest.size() < bytes) {
      ok = false;
      return 0;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < bytes; ++i)
      v = (v << 8) | static_cast<uint8_t>(rest[i]);
    rest.remove_prefix(bytes);
    return v;
  }
};

bool acceptable_filter(std::string_view f) {
  return !f.empty() && f.size() <= 65535 && is_valid_topic_filter(f) &&
         codec::is_valid_mqtt_utf8(f) && !f.starts_with("$share/");
}

std::string header(Kind kind, uint64_t instance) {
  std::string out;
  out.push_back(static_cast<char>(kind));
  put_u64(out, instance);
  return out;
}

}  // namespace

uint64_t filter_hash(std::string_view filter) {
  // FNV-1a, then a finaliser (splitmix64) so that XORs of many stay well spread.
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : filter)
    h = (h ^ c) * 1099511628211ull;
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h;
}

Gossip::Gossip(std::string ctl_prefix, std::string node, uint64_t instance, Timing timing)
    : ctl_(std::move(ctl_prefix)), node_(std::move(node)), instance_(instance), timing_(timing) {}

std::string Gossip::direct_subject(uint64_t instance) const {
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(instance));
  return ctl_ + "n." + hex;
}

uint64_t Gossip::local_add(std::string_view filter, uint64_t now_ms) {
  auto [it, added] = local_.try_emplace(std::string(filter), 0);
  if (!added) return wait_for(filter);
  local_hash_ ^= filter_hash(filter);
  if (!up_) return 0;  // local only; the others resynchronise from the next BEAT
  it->second = ++seq_;
  std::string m = header(kDelta, instance_);
  put_u64(m, seq_);
  m.push_back(1);
  m.append(filter);
  sends_.push_back({ctl_ + "all", std::move(m)});
  stats_.deltas_sent++;
  pending_.emplace_back(seq_, now_ms + timing_.ack_wait_ms);
  const uint64_t seq = seq_;
  advance(now_ms);
  return seq;
}

uint64_t Gossip::wait_for(std::string_view filter) const {
  auto it = local_.find(std::string(filter));
  return it != local_.end() && it->second > settled_ ? it->second : 0;
}

void Gossip::local_remove(std::string_view filter, uint64_t now_ms) {
  auto it = local_.find(std::string(filter));
  if (it == local_.end()) return;
  local_.erase(it);
  local_hash_ ^= filter_hash(filter);
  if (!up_) return;
  std::string m = header(kDelta, instance_);
  put_u64(m, ++seq_);
  m.push_back(0);
  m.append(filter);
  sends_.push_back({ctl_ + "all", std::move(m)});
  stats_.deltas_sent++;
  advance(now_ms);
}

void Gossip::send_beat(bool hello) {
  std::string m = header(hello ? kHello : kBeat, instance_);
  put_u64(m, seq_);
  put_u64(m, local_.size());
  put_u64(m, local_hash_);
  m.append(node_);
  sends_.push_back({ctl_ + "all", std::move(m)});
}

void Gossip::send_snapshot(uint64_t to) {
  // Parts of at most kSnapshotPartBytes, numbered; the receiver takes them in order.
  std::vector<std::string> bodies(1);
  for (const auto& [f, seq] : local_) {
    if (bodies.back().size() + 2 + f.size() > kSnapshotPartBytes) bodies.emplace_back();
    put_u16(bodies.back(), static_cast<uint16_t>(f.size()));
    bodies.back().append(f);
  }
  const std::string subject = direct_subject(to);
  for (size_t i = 0; i < bodies.size(); ++i) {
    std::string m = header(kSnapshot, instance_);
    put_u64(m, seq_);
    put_u32(m, static_cast<uint32_t>(i));
    put_u32(m, static_cast<uint32_t>(bodies.size()));
    m.append(bodies[i]);
    sends_.push_back({subject, std::move(m)});
  }
  stats_.snapshots_sent++;
}

void Gossip::request_snapshot(uint64_t instance, Remote& r, uint64_t now_ms) {
  if (r.requested_ms != 0 && now_ms - r.requested_ms < timing_.resync_ms) return;
  r.requested_ms = now_ms;
  sends_.push_back({direct_subject(instance), header(kRequest, instance_)});
}

Gossip::Remote& Gossip::remote(uint64_t instance, uint64_t now_ms) {
  auto [it, added] = remotes_.try_emplace(instance);
  Remote& r = it->second;
  r.heard_ms = now_ms;
  if (added) {
    unsynced_++;
    request_snapshot(instance, r, now_ms);
  }
  return r;
}

void Gossip::wanting(std::string_view topic, std::vector<std::string_view>& nodes) const {
  nodes.clear();
  // Unsure: every node (never too little). Without NATS: the view as it was when NATS
  // was lost, if it was certain then (a message nobody wanted then is not held for a
  // cluster that cannot be asked).
  const bool all = up_ ? !certain() : !certain_when_lost_;
  if (!all && !remote_.matches(topic)) return;  // the common case: one walk
  for (const auto& [instance, r] : remotes_) {
    if (r.node.empty() || (!all && !r.set->matches(topic))) continue;
    // A restarted node may be known twice (its old instance not yet forgotten).
    if (std::find(nodes.begin(), nodes.end(), r.node) == nodes.end()) nodes.push_back(r.node);
  }
}

void Gossip::set_synced(Remote& r, bool synced) {
  if (r.synced == synced) return;
  r.synced = synced;
  if (synced)
    unsynced_--;
  else
    unsynced_++;
}

void Gossip::apply(Remote& r, bool add, std::string filter) {
  const uint64_t h = filter_hash(filter);
  if (add) {
    if (r.filters.contains(filter)) return;
    remote_.add(filter);
    r.set->add(filter);
    remote_bytes_ += filter.size() + kFilterOverhead;
    r.filters.insert(std::move(filter));
    r.hash ^= h;
  } else if (r.filters.erase(filter) != 0) {
    remote_.remove(filter);
    r.set->remove(filter);
    remote_bytes_ -= filter.size() + kFilterOverhead;
    r.hash ^= h;
  }
}

void Gossip::overflow(uint64_t instance, uint64_t now_ms) {
  if (!overflow_)
    LOG_WARN(
        "cluster: the other nodes' filters pass %zu MiB here; publishing every message to "
        "NATS for now (mqgate_cluster_interest_certain 0)",
        kMaxRemoteBytes >> 20);
  overflow_ = true;
  overflow_until_ = now_ms + timing_.forget_ms;
  forget(instance);
}

void Gossip::warm_up(uint64_t now_ms) {
  warming_ = true;
  warm_until_ = std::max(warm_until_, now_ms + timing_.warmup_ms);
}

void Gossip::forget(uint64_t instance) {
  auto it = remotes_.find(instance);
  if (it == remotes_.end()) return;
  Remote& r = it->second;
  for (const std::string& f : r.filters) {
    remote_.remove(f);
    remote_bytes_ -= f.size() + kFilterOverhead;
  }
  for (const auto& [seq, change] : r.early)
    remote_bytes_ -= change.second.size() + kFilterOverhead;
  for (const std::string& f : r.snap_filters)
    remote_bytes_ -= f.size() + kFilterOverhead;
  if (!r.synced) unsynced_--;
  remotes_.erase(it);
}

void Gossip::connected(uint64_t now_ms) {
  if (left_) return;  // a reconnection while stopping: stay gone
  up_ = true;
  warm_up(now_ms);
  hello_until_ = now_ms + timing_.hello_ms;
  last_tick_ = now_ms;
  last_beat_ = now_ms;
  send_beat(true);
  // What the others changed while this node was away is unknown: ask them all again.
  for (auto& [instance, r] : remotes_) {
    set_synced(r, false);
    r.heard_ms = now_ms;  // nothing could be heard while apart
    r.requested_ms = 0;
    request_snapshot(instance, r, now_ms);
  }
}

void Gossip::disconnected() {
  certain_when_lost_ = certain();
  up_ = false;
  pending_.clear();  // no cluster to wait for: the SUBACKs go
  settled_ = seq_;
}

void Gossip::leave() {
  if (up_) sends_.push_back({ctl_ + "all", header(kBye, instance_)});
  up_ = false;
  left_ = true;
}

void Gossip::on_message(std::string_view data, uint64_t now_ms) {
  Reader in{data};
  const auto kind = static_cast<Kind>(in.uint(1));
  const uint64_t from = in.uint(8);
  if (!in.ok || from == 0) {
    stats_.malformed++;
    return;
  }
  if (from == instance_) return;  // our own broadcast
  if (remotes_.size() >= kMaxNodes && !remotes_.contains(from)) {
    stats_.malformed++;
    overflow_ = true;  // too many nodes: publish everything for a while
    overflow_until_ = now_ms + timing_.forget_ms;
    return;
  }
  switch (kind) {
    case kDelta: {
      const uint64_t seq = in.uint(8);
      const uint64_t add = in.uint(1);
      if (!in.ok || add > 1 || !acceptable_filter(in.rest)) break;
      on_delta(from, seq, add == 1, in.rest, now_ms);
      return;
    }
    case kBeat:
    case kHello: {
      const uint64_t seq = in.uint(8), count = in.uint(8), hash = in.uint(8);
      if (!in.ok || in.rest.size() > 256) break;
      on_beat(from, seq, count, hash, kind == kHello, in.rest, now_ms);
      return;
    }
    case kAck: {
      const uint64_t seq = in.uint(8);
      if (!in.ok || seq > seq_) break;
      Remote& r = remote(from, now_ms);
      r.acked = std::max(r.acked, seq);
      advance(now_ms);
      return;
    }
    case kRequest: {
      // Only nodes that said who they are (HELLO, BEAT or DELTA first) get a snapshot.
      if (!up_ || !remotes_.contains(from)) return;
      // At most one SNAPSHOT per requester per resync period: a node asking in a loop
      // (a bug, or a peer that is not ours) cannot make this one send without end.
      uint64_t& last = snapshot_sent_ms_[from];
      if (last != 0 && now_ms - last < timing_.resync_ms / 2) return;
      last = now_ms;
      if (snapshot_sent_ms_.size() > kMaxNodes) snapshot_sent_ms_.clear();
      send_snapshot(from);
      return;
    }
    case kSnapshot: {
      const uint64_t seq = in.uint(8);
      const uint64_t part = in.uint(4), parts = in.uint(4);
      if (!in.ok || parts == 0 || part >= parts) break;
      on_snapshot(from, seq, static_cast<uint32_t>(part), static_cast<uint32_t>(parts), in.rest,
                  now_ms);
      return;
    }
    case kBye:
      forget(from);
      advance(now_ms);
      return;
  }
  stats_.malformed++;
}

void Gossip::on_delta(uint64_t from, uint64_t seq, bool add, std::string_view filter,
                      uint64_t now_ms) {
  stats_.deltas_received++;
  Remote& r = remote(from, now_ms);
  // Acknowledged once it is known here: applied, or (not synchronised yet) this node
  // publishes everything until it is.
  std::string ack = header(kAck, instance_);
  put_u64(ack, seq);
  sends_.push_back({direct_subject(from), std::move(ack)});
  if (r.synced && seq <= r.seq) return;  // a copy
  if (r.synced && seq == r.seq + 1) {
    apply(r, add, std::string(filter));
    r.seq = seq;
    if (remote_bytes_ > kMaxRemoteBytes) overflow(from, now_ms);
    return;
  }
  if (r.synced) {
    stats_.resyncs++;
    set_synced(r, false);
    request_snapshot(from, r, now_ms);
  }
  if (r.early.size() >= kMaxEarly) {  // the snapshot will say it all
    for (const auto& [s, change] : r.early)
      remote_bytes_ -= change.second.size() + kFilterOverhead;
    r.early.clear();
  }
  auto [it, fresh] = r.early.try_emplace(seq, add, std::string(filter));
  if (fresh) remote_bytes_ += filter.size() + kFilterOverhead;
  if (remote_bytes_ > kMaxRemoteBytes) overflow(from, now_ms);
}

void Gossip::on_beat(uint64_t from, uint64_t seq, uint64_t count, uint64_t hash, bool hello,
                     std::string_view node, uint64_t now_ms) {
  Remote& r = remote(from, now_ms);
  if (r.node != node) r.node = std::string(node);
  // So the newcomer knows this node at once (one answer per kHelloAnswerMs: a storm of
  // HELLOs does not make a storm of BEATs).
  if (hello && up_ && now_ms - last_hello_answer_ >= kHelloAnswerMs) {
    last_hello_answer_ = now_ms;
    send_beat(false);
  }
  if (!r.synced) return;
  if (seq != r.seq || count != r.filters.size() || hash != r.hash) {
    stats_.resyncs++;
    set_synced(r, false);
    request_snapshot(from, r, now_ms);
  }
}

void Gossip::on_snapshot(uint64_t from, uint64_t seq, uint32_t part, uint32_t parts,
                         std::string_view body, uint64_t now_ms) {
  Remote& r = remote(from, now_ms);
  if (r.synced && seq < r.seq) return;  // older than what is known: never roll back
  if (part == 0) {
    for (const std::string& f : r.snap_filters)
      remote_bytes_ -= f.size() + kFilterOverhead;
    r.snap_seq = seq;
    r.snap_parts = parts;
    r.snap_got = 0;
    r.snap_filters.clear();
  } else if (seq != r.snap_seq || parts != r.snap_parts || part != r.snap_got) {
    return;  // a part of another snapshot, or one lost: the next request starts again
  }
  Reader in{body};
  while (!in.rest.empty()) {
    const size_t len = in.uint(2);
    if (!in.ok || len > in.rest.size()) {
      stats_.malformed++;
      r.snap_parts = 0;
      return;
    }
    const std::string_view f = in.rest.substr(0, len);
    in.rest.remove_prefix(len);
    if (!acceptable_filter(f)) {
      stats_.malformed++;
      r.snap_parts = 0;
      return;
    }
    r.snap_filters.emplace_back(f);
    remote_bytes_ += f.size() + kFilterOverhead;
    if (remote_bytes_ > kMaxRemoteBytes) {
      overflow(from, now_ms);
      return;
    }
  }
  if (++r.snap_got < r.snap_parts) return;
  // Complete: it replaces what was known of that node, then the DELTAs that came after.
  stats_.snapshots_received++;
  for (const std::string& f : r.filters)
    remote_.remove(f);
  r.filters.clear();
  r.set->clear();
  r.hash = 0;
  for (std::string& f : r.snap_filters) {
    remote_bytes_ -= f.size() + kFilterOverhead;
    apply(r, true, std::move(f));
  }
  r.snap_filters = {};
  r.snap_parts = 0;
  r.seq = r.snap_seq;
  for (auto it = r.early.begin(); it != r.early.end();) {
    if (it->first <= r.seq) {
      remote_bytes_ -= it->second.second.size() + kFilterOverhead;
      it = r.early.erase(it);
    } else if (it->first == r.seq + 1) {
      remote_bytes_ -= it->second.second.size() + kFilterOverhead;
      apply(r, it->second.first, std::move(it->second.second));
      r.seq = it->first;
      it = r.early.erase(it);
    } else {
      break;  // a gap: ask again
    }
  }
  r.requested_ms = 0;
  if (!r.early.empty()) {
    request_snapshot(from, r, now_ms);
    return;
  }
  set_synced(r, true);
}

void Gossip::tick(uint64_t now_ms) {
  if (!up_) return;
  // The loop itself stalled (nothing could be heard meanwhile, and what was sent may
  // still wait in the queue): nobody is forgotten for it, and this node is unsure for a
  // moment.
  if (now_ms - last_tick_ > 2 * timing_.beat_ms) {
    for (auto& [instance, r] : remotes_)
      r.heard_ms = now_ms;
    warm_up(now_ms);
  }
  last_tick_ = now_ms;
  if (warming_ && now_ms >= warm_until_) warming_ = false;
  if (overflow_ && now_ms >= overflow_until_) overflow_ = false;
  if (now_ms - last_beat_ >= timing_.beat_ms) {
    last_beat_ = now_ms;
    send_beat(false);
  }
  std::vector<uint64_t> silent;
  for (auto& [instance, r] : remotes_) {
    if (now_ms - r.heard_ms > timing_.forget_ms)
      silent.push_back(instance);
    else if (!r.synced)
      request_snapshot(instance, r, now_ms);
  }
  for (uint64_t instance : silent) {
    LOG_INFO("cluster: node \"%s\" silent for %llu s: forgetting its subscriptions",
             remotes_[instance].node.c_str(),
             static_cast<unsigned long long>(timing_.forget_ms / 1000));
    forget(instance);
  }
  // If that was a mistake (this side's fault), the node's next BEAT brings it back
  // before gating resumes.
  if (!silent.empty()) warm_up(now_ms);
  advance(now_ms);
}

void Gossip::advance(uint64_t now_ms) {
  while (!pending_.empty()) {
    const auto [seq, deadline] = pending_.front();
    // The nodes there are answer a HELLO within a few ms; after that, those known.
    bool all = now_ms >= hello_until_;
    // A node missing its last two BEATs is not waited for (it may be dead: forgotten
    // later); its filters still attract messages meanwhile.
    for (const auto& [instance, r] : remotes_)
      if (r.acked < seq && now_ms - r.heard_ms <= 2 * timing_.beat_ms + timing_.beat_ms / 2)
        all = false;
    if (!all && now_ms < deadline) break;
    if (!all) {
      stats_.ack_timeouts++;
      send_beat(false);  // a node that lost the DELTA learns of it now, not in up to 1 s
    }
    pending_.pop_front();
  }
  settled_ = pending_.empty() ? seq_ : pending_.front().first - 1;
}

}  // namespace mqgate::cluster
