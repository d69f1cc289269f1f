#include "broker/persistence.hpp"

namespace mqgate {

using store::Mutation;
using Kind = store::Mutation::Kind;

namespace {
Mutation of(Kind kind) {
  Mutation m;
  m.kind = kind;
  return m;
}
}  // namespace

void Persistence::put_session(const Session& s, int64_t expires_at_ms) {
  Mutation m = of(Kind::kPutSession);
  m.session.client_id = s.client_id();
  m.session.owner = s.owner();
  m.session.expires_at_ms = expires_at_ms;
  if (s.protocol_level() == 5) {
    m.session.protocol_level = 5;
    m.session.expiry_interval = s.expiry_interval();
  }
  if (const auto& c = s.certificate()) {
    m.session.cert_listener = c->listener;
    m.session.cert_chain = c->chain;
  }
  add(std::move(m));
}

void Persistence::remove_session(const Session& s) {
  s.for_each_held_message([this](const Message& msg) { release_message(msg); });
  remove_session_record(s.client_id());
}

void Persistence::remove_session_record(const std::string& client_id) {
  Mutation m = of(Kind::kRemoveSession);
  m.session.client_id = client_id;
  add(std::move(m));
}

void Persistence::put_subscription(const Session& s, std::string_view filter, uint8_t qos,
                                   uint8_t options, uint32_t id) {
  Mutation m = of(Kind::kPutSubscription);
  m.subscription.client_id = s.client_id();
  m.subscription.filter.assign(filter);
  m.subscription.qos = qos;
  m.subscription.options = options;
  m.subscription.subscription_id = id;
  add(std::move(m));
}

void Persistence::remove_subscription(const Session& s, std::string_view filter) {
  Mutation m = of(Kind::kRemoveSubscription);
  m.subscription.client_id = s.client_id();
  m.subscription.filter.assign(filter);
  add(std::move(m));
}

void Persistence::put_retained(const Message& msg) {
  Mutation m = of(Kind::kPutRetained);
  m.retained.topic.assign(msg.topic());
  m.retained.payload.assign(msg.payload());
  m.retained.qos = msg.qos();
  if (msg.expires()) m.retained.expires_at_ms = wall_of(msg.expires_at_ms());
  m.retained.props.assign(msg.props());
  add(std::move(m));
}

void Persistence::remove_retained(std::string_view topic) {
  Mutation m = of(Kind::kRemoveRetained);
  m.retained.topic.assign(topic);
  add(std::move(m));
}

void Persistence::put_will(const Session& s, const Message& will, uint64_t due_at_ms,
                           std::optional<uint32_t> expiry) {
  Mutation m = of(Kind::kPutWill);
  m.will.client_id = s.client_id();
  m.will.topic.assign(will.topic());
  m.will.payload.assign(will.payload());
  m.will.qos = will.qos();
  m.will.retain = will.retain();
  m.will.due_at_ms = wall_of(due_at_ms);
  m.will.props.assign(will.props());
  m.will.expiry_interval = expiry;
  add(std::move(m));
}

void Persistence::remove_will_record(const std::string& client_id) {
  Mutation m = of(Kind::kRemoveWill);
  m.will.client_id = client_id;
  add(std::move(m));
}

void Persistence::remove_message_record(uint64_t id, bool had_props) {
  Mutation m = of(Kind::kRemoveMessage);
  m.message.id = id;
  if (had_props) m.message.props = "-";  // a marker: the properties row goes too
  add(std::move(m));
}

void Persistence::remove_outgoing_record(const std::string& client_id, uint64_t seq) {
  Mutation m = of(Kind::kRemoveOutgoing);
  m.outgoing.client_id = client_id;
  m.outgoing.seq = seq;
  add(std::move(m));
}

void Persistence::put_outgoing(const Session& s, uint32_t seq, const Message* msg, uint8_t qos,
                               bool retain, uint16_t packet_id, OutState state, bool new_entry) {
  if (msg != nullptr && new_entry) {
    // The body is written once, with the first entry that refers to it.
    if (msg->durable_id() == 0) {
      msg->set_durable_id(next_message_id_++);
      Mutation b = of(Kind::kPutMessage);
      b.creates = true;
      b.message.id = msg->durable_id();
      b.message.topic.assign(msg->topic());
      b.message.payload.assign(msg->payload());
      b.message.qos = msg->qos();
      if (msg->expires()) b.message.expires_at_ms = wall_of(msg->expires_at_ms());
      b.message.props.assign(msg->props());
      add(std::move(b));
    }
    msg->add_durable_ref();
  }
  Mutation m = of(Kind::kPutOutgoing);
  m.creates = new_entry;
  m.outgoing.client_id = s.client_id();
  m.outgoing.seq = seq;
  m.outgoing.message_id = msg ? msg->durable_id() : 0;
  m.outgoing.qos = qos;
  m.outgoing.retain = retain;
  m.outgoing.packet_id = packet_id;
  m.outgoing.state = static_cast<store::OutgoingRecord::State>(state);
  add(std::move(m));
}

void Persistence::remove_outgoing(const Session& s, uint32_t seq) {
  remove_outgoing_record(s.client_id(), seq);
}

void Persistence::release_message(const Message& msg) {
  if (msg.durable_id() == 0) return;
  if (msg.drop_durable_ref() != 0) return;
  remove_message_record(msg.durable_id(), !msg.props().empty());
  msg.set_durable_id(0);  // stored again if a later durable entry refers to it
}

void Persistence::put_incoming(const Session& s, uint16_t packet_id) {
  Mutation m = of(Kind::kPutIncoming);
  m.creates = true;
  m.incoming.client_id = s.client_id();
  m.incoming.packet_id = packet_id;
  add(std::move(m));
}

void Persistence::remove_incoming(const Session& s, uint16_t packet_id) {
  Mutation m = of(Kind::kRemoveIncoming);
  m.incoming.client_id = s.client_id();
  m.incoming.packet_id = packet_id;
  add(std::move(m));
}

}  // namespace mqgate
