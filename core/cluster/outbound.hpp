// What the broker hands the cluster (data flows down): each locally-originated message
// once, and the filters its local subscriptions hold. The broker only holds this
// interface (null without [cluster]: one pointer test on the hot path); the bridge
// implements it, unit tests fake it. No call here calls back into the broker.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace mqgate::cluster {

struct OutboundMessage {
  std::string_view topic;
  std::string_view payload;
  uint8_t qos = 0;
  bool retain = false;
  std::string_view props;            // MQTT 5 forwarded properties (property bytes)
  std::optional<uint32_t> expiry_s;  // Message Expiry Interval left, seconds
  std::string_view client_id;        // the publisher's (No Local on the other nodes)
};

// A message from another node, decoded and checked, for the broker's one entry point
// (Broker::on_cluster_message): delivered to local subscribers only.
struct InboundMessage {
  std::string_view topic;
  std::string_view payload;
  uint8_t qos = 0;
  bool retain = false;
  std::string_view props;
  std::optional<uint32_t> expiry_s;
  std::string_view client_id;
  std::string_view node;  // where it was published
};

class Outbound {
 public:
  virtual ~Outbound() = default;
  // Returns a ticket (0: none) when the message's acknowledgement must wait for the
  // cluster to store it (QoS 1/2 that other nodes want): Broker::on_cluster_stored
  // reports it, once, stored or not.
  virtual uint64_t publish(const OutboundMessage& msg) = 0;
  // Past the bound of messages waiting to be stored: the publisher is held.
  virtual bool backlogged() const = 0;
  // A local subscription to `filter` (valid, not a $share one) was added / removed.
  // add_interest returns a number the SUBACK waits for (0: none): until settled() reaches
  // it, other nodes may not know the filter yet, and a message published there could
  // miss the subscriber. The broker learns of progress through Broker::on_cluster_settled.
  virtual uint64_t add_interest(std::string_view filter) = 0;
  virtual void remove_interest(std::string_view filter) = 0;
  virtual uint64_t settled() const = 0;
};

}  // namespace mqgate::cluster
