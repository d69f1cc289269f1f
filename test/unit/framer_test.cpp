#include "mqtt/framer.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "mqtt/encoder.hpp"

using namespace mqgate;
using codec::Framer;

namespace {

std::string publish(std::string_view topic, std::string_view payload) {
  std::string out;
  codec::encode_publish(out, topic, payload, 0, false, false, 0);
  return out;
}

// Runs next() until it needs more, collecting packets; returns the last status.
Framer::Status drain(Framer& f, std::vector<std::string>& packets, uint32_t limit = 1 << 20) {
  for (;;) {
    Framer::Frame fr = f.next(limit);
    if (fr.status != Framer::Status::kPacket) return fr.status;
    CHECK(fr.packet.size() == fr.header.packet_length());
    packets.emplace_back(fr.packet);
  }
}

// Three packets of different sizes, one with a 2-byte remaining length.
std::vector<std::string> sample_packets() {
  return {publish("a/b", "x"), publish("t", std::string(300, 'p')), std::string("\xc0\x00", 2)};
}

std::string concat(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& p : v) s += p;
  return s;
}

}  // namespace

TEST_CASE("framer: every split point of a multi-packet stream yields the same packets") {
  const auto expected = sample_packets();
  const std::string stream = concat(expected);
  for (size_t cut1 = 0; cut1 <= stream.size(); ++cut1) {
    for (size_t cut2 = cut1; cut2 <= stream.size(); cut2 += 7) {
      Framer f;
      std::vector<std::string> got;
      // Each piece lives in a buffer that is overwritten afterwards, as the read
      // buffer is: the framer must have copied whatever it still needs.
      std::string buf;
      for (auto [from, to] : {std::pair{size_t{0}, cut1}, {cut1, cut2}, {cut2, stream.size()}}) {
        buf.assign(stream, from, to - from);
        f.feed(buf);
        CHECK(drain(f, got) == Framer::Status::kNeedMore);
        buf.assign(buf.size(), '\xff');
      }
      REQUIRE(got == expected);
      CHECK(f.buffered() == 0);
      CHECK(!f.partial());
    }
  }
}

TEST_CASE("framer: a one-byte trickle") {
  const auto expected = sample_packets();
  const std::string stream = concat(expected);
  Framer f;
  std::vector<std::string> got;
  for (size_t i = 0; i < stream.size(); ++i) {
    char byte = stream[i];
    f.feed(std::string_view(&byte, 1));
    CHECK(drain(f, got) == Framer::Status::kNeedMore);
    byte = '\xff';
    // Between packets nothing is pending; inside one, the packet_timeout clock runs.
    CHECK(f.partial() == (f.buffered() != 0));
  }
  CHECK(got == expected);
  CHECK(f.buffered() == 0);
}

TEST_CASE("framer: whole packets come straight from the input, only a tail is copied") {
  const auto packets = sample_packets();
  std::string stream = concat(packets) + packets[1].substr(0, 10);
  Framer f;
  f.feed(stream);
  Framer::Frame fr = f.next(1 << 20);
  REQUIRE(fr.status == Framer::Status::kPacket);
  CHECK(fr.packet.data() == stream.data());  // not copied
  std::vector<std::string> got;
  CHECK(drain(f, got) == Framer::Status::kNeedMore);
  CHECK(got.size() == 2);
  CHECK(f.buffered() == 10);
  CHECK(f.partial());
}

TEST_CASE("framer: the size limit applies as soon as the header is known") {
  Framer f;
  // PUBLISH announcing 2 MiB: only the 4 header bytes have arrived.
  const std::string header("\x30\x80\x80\x80\x01", 5);
  const std::string_view h = header;  // feed() borrows: no temporaries
  f.feed(h.substr(0, 3));
  std::vector<std::string> got;
  CHECK(drain(f, got, 1000) == Framer::Status::kNeedMore);
  CHECK(f.buffered() == 3);  // the bytes that arrived, nothing reserved
  f.feed(h.substr(3));
  Framer::Frame fr = f.next(1000);
  CHECK(fr.status == Framer::Status::kOversized);
  CHECK(fr.header.remaining_length == 2 * 1024 * 1024);
  CHECK(f.buffered() == 0);

  Framer g;
  g.feed(header);
  CHECK(g.next(1000).status == Framer::Status::kOversized);
}

TEST_CASE("framer: a large packet's buffer grows only with the bytes that arrive") {
  Framer f;
  const std::string big = publish("t", std::string(100000, 'x'));
  const std::string_view b = big;
  f.feed(b.substr(0, 5));
  std::vector<std::string> got;
  CHECK(drain(f, got) == Framer::Status::kNeedMore);
  CHECK(f.buffered() == 5);
  f.feed(b.substr(5));
  CHECK(drain(f, got) == Framer::Status::kNeedMore);
  REQUIRE(got.size() == 1);
  CHECK(got[0] == big);
}

TEST_CASE("framer: a malformed remaining length is an error, split or not") {
  const std::string bad("\x30\xff\xff\xff\xff\x01", 6);  // five length bytes
  for (size_t cut = 0; cut <= bad.size(); ++cut) {
    Framer f;
    std::vector<std::string> got;
    f.feed(std::string_view(bad).substr(0, cut));
    Framer::Status s = drain(f, got);
    if (s == Framer::Status::kNeedMore) {
      f.feed(std::string_view(bad).substr(cut));
      s = drain(f, got);
    }
    CHECK(s == Framer::Status::kError);
    CHECK(f.buffered() == 0);
  }
  Framer f;
  const std::string reserved("\x00\x00", 2);  // reserved packet type 0
  f.feed(reserved);
  Framer::Frame fr = f.next(1 << 20);
  CHECK(fr.status == Framer::Status::kError);
  CHECK(fr.error == codec::DecodeError::kReservedPacketType);
}

TEST_CASE("framer: hold keeps everything in order until resume") {
  const auto expected = sample_packets();
  const std::string stream = concat(expected) + concat(expected);
  for (size_t cut = 0; cut <= stream.size(); ++cut) {
    Framer f;
    std::vector<std::string> got;
    std::string buf = stream.substr(0, cut);
    f.feed(buf);
    // One packet, then the consumer is congested.
    Framer::Frame fr = f.next(1 << 20);
    if (fr.status == Framer::Status::kPacket) got.emplace_back(fr.packet);
    f.hold();
    CHECK(!f.partial());  // waiting on us is not the client's delay
    CHECK(drain(f, got) == Framer::Status::kHeld);
    buf.assign(buf.size(), '\xff');
    std::string rest = stream.substr(cut);
    f.feed(rest);
    CHECK(drain(f, got) == Framer::Status::kHeld);
    rest.assign(rest.size(), '\xff');
    CHECK(got.size() <= 1);
    f.resume();
    CHECK(drain(f, got) == Framer::Status::kNeedMore);
    std::vector<std::string> all = expected;
    all.insert(all.end(), expected.begin(), expected.end());
    REQUIRE(got == all);
    CHECK(f.buffered() == 0);
  }
}

TEST_CASE("framer: an idle framer owns no buffer") {
  Framer f;
  const std::string packet = publish("a", "b");
  const std::string_view p = packet;
  f.feed(p.substr(0, 2));
  std::vector<std::string> got;
  drain(f, got);
  f.feed(p.substr(2));
  drain(f, got);
  CHECK(got.size() == 1);
  CHECK(f.buffered() == 0);
  CHECK(sizeof(Framer) <= 64);
}
