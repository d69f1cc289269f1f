// Which filters the other nodes hold, so that a message no other node wants is never
// published to NATS (docs/cluster.md, "Interest between nodes"). Pure logic: the bridge
// carries its messages over NATS and calls tick(); tests drive several instances by hand.
//
// Each node tells the others about its filters on the control subjects:
//   <ctl>all          DELTA (a filter added or removed: numbered per node), BEAT (every
//                     second: the last number, how many filters and an order-free hash of
//                     them), HELLO (a BEAT that asks the others for theirs now), BYE.
//   <ctl>n.<instance> to one node: ACK (of a DELTA), SNAPSHOT-REQUEST, SNAPSHOT parts.
// A node that misses a DELTA sees it in the next BEAT (number or hash) and asks for a
// SNAPSHOT; until it has one it publishes every message (never too little: only the cost
// of too much). So it does for a moment after each (re)connection, to learn who is there.
//
// A new filter's SUBACK waits until every node known has acknowledged its DELTA (or a
// deadline passed): a message published anywhere after the SUBACK reaches the
// subscriber. settled() says up to which DELTA number that holds.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "cluster/filter_set.hpp"

namespace mqgate::cluster {

class Gossip {
 public:
  struct Timing {
    uint64_t beat_ms = 1000;      // BEAT period
    uint64_t warmup_ms = 1500;    // after a (re)connection: publish everything
    uint64_t hello_ms = 250;      // after a (re)connection: SUBACKs wait for HELLO answers
    uint64_t ack_wait_ms = 1000;  // longest a new filter's SUBACK waits for ACKs
    uint64_t forget_ms = 10000;   // a node silent this long is gone
    uint64_t resync_ms = 1000;    // a SNAPSHOT-REQUEST unanswered this long is sent again
  };
  // A control message to send on `subject`.
  struct Send {
    std::string subject;
    std::string data;
  };
  struct Stats {
    uint64_t deltas_sent = 0, deltas_received = 0, snapshots_sent = 0, snapshots_received = 0,
             resyncs = 0, ack_timeouts = 0, malformed = 0;
  };

  // `ctl_prefix`: "mqgate.<name>.ctl." ; `node`: this node's name; `instance`: this
  // process's random id (a restarted node is a new instance).
  Gossip(std::string ctl_prefix, std::string node, uint64_t instance, Timing timing);
  Gossip(std::string ctl_prefix, std::string node, uint64_t instance)
      : Gossip(std::move(ctl_prefix), std::move(node), instance, Timing{}) {}

  // The subjects to subscribe to (both, on every connection).
  std::string broadcast_subject() const { return ctl_ + "all"; }
  std::string own_subject() const { return direct_subject(instance_); }

  // This node's filter set changed (the first local subscription to `filter`, or its
  // last one gone). add returns the DELTA number a SUBACK waits for (0: none).
  uint64_t local_add(std::string_view filter, uint64_t now_ms);
  void local_remove(std::string_view filter, uint64_t now_ms);
  // For a filter already held here: the DELTA number its first SUBACK waits for, while
  // that DELTA is not settled (another subscriber to it must wait as long); else 0.
  uint64_t wait_for(std::string_view filter) const;

  // The NATS connection came up (or back) / went down.
  void connected(uint64_t now_ms);
  void disconnected();
  // A control message from NATS (any subject of ours; hostile bytes are counted and
  // ignored).
  void on_message(std::string_view data, uint64_t now_ms);
  // Every few hundred ms: BEATs, deadlines, silent nodes, repeated requests.
  void tick(uint64_t now_ms);
  // Leaving: a BYE (the others forget this node at once).
  void leave();

  // Whether a message on `topic` is to be published to NATS.
  bool wanted(std::string_view topic) const { return !certain() || remote_.matches(topic); }
  // The names of the nodes a message on `topic` is for (QoS 1/2 are stored once per
  // node): those with a matching filter, or, while this node is unsure, every node known
  // (without NATS: those whose filters matched when it was lost, if it was sure then).
  void wanting(std::string_view topic, std::vector<std::string_view>& nodes) const;
  // Every DELTA up to this number has been acknowledged by every node (or waited for
  // long enough).
  uint64_t settled() const { return settled_; }
  // Messages to send now (in order).
  std::vector<Send> take_sends() { return std::exchange(sends_, {}); }

  size_t nodes() const { return remotes_.size(); }
  size_t remote_filters() const { return remote_.size(); }
  bool certain() const { return up_ && !warming_ && unsynced_ == 0 && !overflow_; }
  const Stats& stats() const { return stats_; }

 private:
  struct Remote {
    std::string node;
    uint64_t seq = 0;    // last DELTA applied
    uint64_t acked = 0;  // our last DELTA it acknowledged
    bool synced = false;
    std::unordered_set<std::string> filters;
    std::unique_ptr<FilterSet> set = std::make_unique<FilterSet>();  // the same, to match
    uint64_t hash = 0;
    uint64_t heard_ms = 0;
    uint64_t requested_ms = 0;  // SNAPSHOT-REQUEST sent (0: none outstanding)
    // A snapshot being assembled, and the DELTAs that came meanwhile.
    uint64_t snap_seq = 0;
    uint32_t snap_parts = 0, snap_got = 0;
    std::vector<std::string> snap_filters;
    std::map<uint64_t, std::pair<bool, std::string>> early;  // seq -> (add, filter)
  };

  std::string direct_subject(uint64_t instance) const;
  void send_beat(bool hello);
  void send_snapshot(uint64_t to);
  void request_snapshot(uint64_t instance, Remote& r, uint64_t now_ms);
  Remote& remote(uint64_t instance, uint64_t now_ms);
  void apply(Remote& r, bool add, std::string filter);
  // What other nodes make this one hold passed kMaxRemoteBytes: drop that node's state
  // and publish everything for a while (only a cost).
  void overflow(uint64_t instance, uint64_t now_ms);
  void warm_up(uint64_t now_ms);
  void forget(uint64_t instance);
  void set_synced(Remote& r, bool synced);
  void on_delta(uint64_t from, uint64_t seq, bool add, std::string_view filter, uint64_t now_ms);
  void on_beat(uint64_t from, uint64_t seq, uint64_t count, uint64_t hash, bool hello,
               std::string_view node, uint64_t now_ms);
  void on_snapshot(uint64_t from, uint64_t seq, uint32_t part, uint32_t parts,
                   std::string_view body, uint64_t now_ms);
  void advance(uint64_t now_ms);

  const std::string ctl_;
  const std::string node_;
  const uint64_t instance_;
  const Timing timing_;
  bool up_ = false;
  bool left_ = false;  // leave() was called: stays down
  bool overflow_ = false;
  bool certain_when_lost_ = false;  // certain() when NATS was lost (wanting() uses the view)
  uint64_t overflow_until_ = 0;
  uint64_t last_tick_ = 0;
  uint64_t last_hello_answer_ = 0;
  size_t remote_bytes_ = 0;  // filters held for others, DELTAs waiting, snapshots assembling
  bool warming_ = true;
  uint64_t warm_until_ = 0;
  uint64_t hello_until_ = 0;
  uint64_t last_beat_ = 0;
  // This node's filters (each with the number of the DELTA that added it: 0 when added
  // while NATS was down), their hash, and the number of its last DELTA.
  std::unordered_map<std::string, uint64_t> local_;
  uint64_t local_hash_ = 0;
  uint64_t seq_ = 0;
  // DELTAs whose SUBACKs wait: number and deadline, in order.
  std::deque<std::pair<uint64_t, uint64_t>> pending_;
  uint64_t settled_ = 0;
  std::unordered_map<uint64_t, Remote> remotes_;
  std::unordered_map<uint64_t, uint64_t> snapshot_sent_ms_;  // by requester
  size_t unsynced_ = 0;
  FilterSet remote_;  // every synced-or-not remote's filters, merged
  std::vector<Send> sends_;
  Stats stats_;
};

// The order-free hash of a filter set: the XOR of each filter's.
uint64_t filter_hash(std::string_view filter);

}  // namespace mqgate::cluster
