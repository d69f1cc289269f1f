// The device list and a device's details, as JSON: what GET /api/v1/clients and
// GET /api/v1/clients/<id> answer. On the loop, bounded: a list request walks the
// sessions once (filter), then keeps only the page it needs (a partial sort), so a
// request costs O(n log page) whatever the offset... up to the page's end.
#pragma once

#include <mbedtls/x509_crt.h>

#include <cstdint>
#include <string>
#include <vector>

#include "broker/broker.hpp"
#include "console/json.hpp"

namespace mqgate::console {

struct ListQuery {
  std::string search;  // substring of the client id or the identity (ASCII case-insensitive)
  enum class State : uint8_t { kAll, kConnected, kOffline } state = State::kAll;
  enum class Sort : uint8_t { kClientId, kIdentity, kSince, kQueued, kSubscriptions, kNotAfter };
  Sort sort = Sort::kClientId;
  bool descending = false;
  uint64_t offset = 0;
  uint64_t limit = 50;
  static constexpr uint64_t kMaxLimit = 500;
  static constexpr uint64_t kMaxOffset = 10'000'000;
};

// Parses the query string (search, state, sort, order, offset, limit); false with
// `error` on a bad or unknown parameter.
bool parse_list_query(const std::string& query, ListQuery& q, std::string& error);

// Loop time to wall-clock milliseconds.
struct Clock {
  uint64_t loop_now_ms;
  int64_t wall_now_ms;
  int64_t wall(uint64_t loop_ms) const {
    return wall_now_ms - static_cast<int64_t>(loop_now_ms - loop_ms);
  }
};

// One GET /api/v1/clients, in three parts so that the loop never walks 100,000 sessions
// in one go: walk_clients() on the loop, a slice at a time, copying each matching row's
// sort key and client id; sort_page() on the thread pool (the rows are copies); then
// write_page() on the loop, finding the page's sessions again by id.
struct ListRow {
  uint64_t prefix;    // the first 8 bytes of the sorted string, big-endian
  int64_t key;        // the sorted number
  std::string id;     // the client id
  std::string owner;  // the identity (identity sort only)
};
struct ListWalk {
  ListQuery q;
  std::vector<ListRow> rows;
  size_t cursor = 0;
  size_t layout = 0;  // SessionStore::layout() when the walk (re)started
};
// One slice of about `budget` sessions; true once the walk is over.
bool walk_clients(SessionStore& store, ListWalk& w, size_t budget);
// Orders rows [offset, offset + limit) as the query asks (the others stay unordered).
void sort_page(ListWalk& w);
// The answer's fields; sessions gone since the walk are left out of the page.
void write_page(Broker& broker, const ListWalk& w, const Clock& clock, Json& out);
// All three at once.
void write_client_list(Broker& broker, const ListQuery& q, const Clock& clock, Json& out);
// The session `id`'s details (subscriptions, session, certificate chain with PEM);
// false if there is none.
bool write_client_detail(Broker& broker, std::string_view id, const Clock& clock, Json& out);

// Percent-decoding of a path segment or query value ('+' is a space in a query value
// only); false on a bad escape.
bool percent_decode(std::string_view in, bool query, std::string& out);

// A certificate's subject, issuer, serial, notBefore and notAfter (fields of an open
// object), and days_left (negative once expired).
void write_certificate_fields(const mbedtls_x509_crt& crt, int64_t now_s, Json& out);

// "2026-12-07T14:24:33Z".
std::string iso_time(int64_t seconds);

}  // namespace mqgate::console
