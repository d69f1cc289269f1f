// What a transport does with the bytes a test client "receives": cut them into packets
// with the codec's framer and hand each to the broker, as Connection does (without its
// input holding and timers, which these clients do not need). Shared by the unit tests'
// fake client and the broker fuzzer.
#pragma once

#include <cstdint>
#include <string_view>

#include "broker/broker.hpp"
#include "client/client.hpp"
#include "mqtt/decoder.hpp"
#include "mqtt/framer.hpp"

namespace mqgate::test {

// Feeds `bytes` (any split; an incomplete tail waits in `framer`) and dispatches every
// whole packet until one closes the client or the bytes run out.
inline void pump_packets(codec::Framer& framer, Broker& broker, Client& client,
                         std::string_view bytes, uint64_t now_ms) {
  framer.feed(bytes);
  while (!client.close_requested()) {
    const codec::Framer::Frame f = framer.next(broker.limits().max_packet_size);
    if (f.status == codec::Framer::Status::kError) {
      broker.on_decode_error(client, f.error, nullptr, nullptr);
      return;
    }
    if (f.status == codec::Framer::Status::kOversized) {
      broker.on_oversized_packet(client, f.header);
      return;
    }
    if (f.status != codec::Framer::Status::kPacket) return;
    codec::Packet p;
    const codec::DecodeError err = codec::decode_body(
        f.header, f.packet.substr(f.header.header_length), client.protocol_level, p);
    if (err != codec::DecodeError::kNone) {
      broker.on_decode_error(client, err, &f.header, &p);
      return;
    }
    broker.on_packet(client, p, now_ms);
  }
}

}  // namespace mqgate::test
