#include "console/clients.hpp"

#include <mbedtls/base64.h>
#include <mbedtls/x509_crt.h>

#include <algorithm>
#include <charconv>
#include <ctime>
#include <vector>

namespace mqgate::console {

namespace {

char lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

bool contains_nocase(std::string_view hay, std::string_view needle) {
  if (needle.empty()) return true;
  if (needle.size() > hay.size()) return false;
  for (size_t i = 0; i + needle.size() <= hay.size(); ++i) {
    size_t k = 0;
    while (k < needle.size() && lower(hay[i + k]) == needle[k])
      ++k;
    if (k == needle.size()) return true;
  }
  return false;
}

const char* protocol_name(uint8_t level) {
  switch (level) {
    case codec::kProtocolLevel31:
      return "3.1";
    case codec::kProtocolLevel311:
      return "3.1.1";
    case codec::kProtocolLevel5:
      return "5.0";
    default:
      return "";
  }
}

bool online(const Session& s) {
  return s.client() != nullptr && s.client()->state == Client::State::kConnected;
}

std::string hex_serial(const std::string& raw) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char b : raw) {
    if (!out.empty()) out += ':';
    out += kHex[b >> 4];
    out += kHex[b & 0xF];
  }
  return out;
}

std::string dn_text(const mbedtls_x509_name& name) {
  char buf[1024];
  const int n = mbedtls_x509_dn_gets(buf, sizeof buf, &name);
  return n < 0 ? std::string() : std::string(buf, static_cast<size_t>(n));
}

int64_t x509_seconds(const mbedtls_x509_time& t) {
  std::tm tm{};
  tm.tm_year = t.year - 1900;
  tm.tm_mon = t.mon - 1;
  tm.tm_mday = t.day;
  tm.tm_hour = t.hour;
  tm.tm_min = t.min;
  tm.tm_sec = t.sec;
  return static_cast<int64_t>(timegm(&tm));
}

std::string to_pem(std::string_view der) {
  size_t len = 0;
  mbedtls_base64_encode(nullptr, 0, &len, reinterpret_cast<const unsigned char*>(der.data()),
                        der.size());
  std::string b64(len, '\0');
  mbedtls_base64_encode(reinterpret_cast<unsigned char*>(b64.data()), b64.size(), &len,
                        reinterpret_cast<const unsigned char*>(der.data()), der.size());
  b64.resize(len);
  std::string out = "-----BEGIN CERTIFICATE-----\n";
  for (size_t i = 0; i < b64.size(); i += 64)
    out += b64.substr(i, 64) + "\n";
  return out + "-----END CERTIFICATE-----\n";
}

// One certificate's fields (DER from the verified chain); `pem` adds the PEM text.
void write_certificate(std::string_view der, bool pem, int64_t now_s, Json& out) {
  mbedtls_x509_crt crt;
  mbedtls_x509_crt_init(&crt);
  out.begin_object();
  if (mbedtls_x509_crt_parse_der_nocopy(&crt, reinterpret_cast<const unsigned char*>(der.data()),
                                        der.size()) == 0) {
    write_certificate_fields(crt, now_s, out);
  } else {
    out.field("error", "cannot parse");
  }
  if (pem) out.field("pem", to_pem(der));
  out.end_object();
  mbedtls_x509_crt_free(&crt);
}

int64_t not_after_of(const Session& s) {
  const Client* c = s.client();
  const TlsPeerInfo* tls = c ? c->tls() : nullptr;
  if (tls && !tls->chain_der.empty()) return tls->not_after;
  // Offline (or connected without one now): the one it last connected with.
  return !online(s) && s.certificate() ? s.certificate()->not_after : INT64_MAX;
}

void write_row(const Session& s, const Clock& clock, bool detail, Json& out) {
  const Client* c = s.client();
  const bool on = online(s);
  out.field("client_id", s.client_id())
      .field("identity", s.owner())
      .field("connected", on)
      .field("persistent", !s.clean())
      .field("protocol", protocol_name(on ? c->protocol_level : s.protocol_level()));
  if (on) {
    out.field("listener", c->listener() ? c->listener()->name : std::string())
        .field("peer", c->peer())
        .field("connected_since", iso_time(clock.wall(s.online_since_ms()) / 1000))
        .field("keep_alive", c->keepalive);
  } else {
    out.field("last_seen", iso_time(clock.wall(s.offline_since_ms()) / 1000));
  }
  out.field("subscriptions", uint64_t{s.subscription_count()})
      .field("queued", uint64_t{s.queued_count()})
      .field("inflight", uint64_t{s.inflight_count()});
  const TlsPeerInfo* tls = on ? c->tls() : nullptr;
  if (tls && !tls->chain_der.empty()) {
    out.key("certificate");
    write_certificate(tls->chain_der.front(), false, clock.wall_now_ms / 1000, out);
    if (detail) {
      out.key("chain").begin_array();
      for (const auto& der : tls->chain_der)
        write_certificate(der, true, clock.wall_now_ms / 1000, out);
      out.end_array();
      out.field("tls_version", tls->version).field("cipher", tls->cipher);
    }
  } else if (const auto& kept = on ? nullptr : s.certificate()) {
    // An offline session: the certificate its client last connected with, and where.
    const std::vector<std::string_view> chain = kept->certificates();
    if (chain.empty()) return;
    out.key("certificate");
    write_certificate(chain.front(), false, clock.wall_now_ms / 1000, out);
    out.field("certificate_listener", kept->listener);
    if (detail) {
      out.key("chain").begin_array();
      for (std::string_view der : chain)
        write_certificate(der, true, clock.wall_now_ms / 1000, out);
      out.end_array();
    }
  }
}

bool parse_number(std::string_view v, uint64_t max, uint64_t& out) {
  if (v.empty() || v.size() > 20) return false;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  return ec == std::errc() && p == v.data() + v.size() && out <= max;
}

}  // namespace

void write_certificate_fields(const mbedtls_x509_crt& crt, int64_t now_s, Json& out) {
  const int64_t not_after = x509_seconds(crt.valid_to);
  const int64_t left = not_after - now_s;
  out.field("subject", dn_text(crt.subject))
      .field("issuer", dn_text(crt.issuer))
      .field("serial",
             hex_serial(std::string(reinterpret_cast<const char*>(crt.serial.p), crt.serial.len)))
      .field("not_before", iso_time(x509_seconds(crt.valid_from)))
      .field("not_after", iso_time(not_after))
      .field("days_left", (left >= 0 ? left : left - 86399) / 86400);
}

std::string iso_time(int64_t seconds) {
  std::time_t t = static_cast<std::time_t>(seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

bool percent_decode(std::string_view in, bool query, std::string& out) {
  out.clear();
  auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '%') {
      if (i + 2 >= in.size()) return false;
      const int h = hex(in[i + 1]), l = hex(in[i + 2]);
      if (h < 0 || l < 0) return false;
      out += static_cast<char>(h * 16 + l);
      i += 2;
    } else if (query && in[i] == '+') {
      out += ' ';
    } else {
      out += in[i];
    }
  }
  return true;
}

bool parse_list_query(const std::string& query, ListQuery& q, std::string& error) {
  std::string_view rest = query;
  while (!rest.empty()) {
    const size_t amp = rest.find('&');
    const std::string_view pair = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
    if (pair.empty()) continue;
    const size_t eq = pair.find('=');
    std::string name, value;
    if (!percent_decode(pair.substr(0, eq), true, name) ||
        !percent_decode(eq == std::string_view::npos ? "" : pair.substr(eq + 1), true, value)) {
      error = "bad percent-encoding in the query";
      return false;
    }
    if (name == "search") {
      if (value.size() > 1024) {
        error = "search: at most 1024 bytes";
        return false;
      }
      q.search.clear();
      for (char c : value)
        q.search += lower(c);
    } else if (name == "state") {
      if (value == "all")
        q.state = ListQuery::State::kAll;
      else if (value == "connected")
        q.state = ListQuery::State::kConnected;
      else if (value == "offline")
        q.state = ListQuery::State::kOffline;
      else {
        error = "state: expected all, connected or offline";
        return false;
      }
    } else if (name == "sort") {
      using S = ListQuery::Sort;
      static const std::pair<const char*, S> kSorts[] = {{"client_id", S::kClientId},
                                                         {"identity", S::kIdentity},
                                                         {"since", S::kSince},
                                                         {"queued", S::kQueued},
                                                         {"subscriptions", S::kSubscriptions},
                                                         {"not_after", S::kNotAfter}};
      bool found = false;
      for (const auto& [n, s] : kSorts)
        if (value == n) q.sort = s, found = true;
      if (!found) {
        error = "sort: expected client_id, identity, since, queued, subscriptions or not_after";
        return false;
      }
    } else if (name == "order") {
      if (value != "asc" && value != "desc") {
        error = "order: expected asc or desc";
        return false;
      }
      q.descending = value == "desc";
    } else if (name == "limit") {
      if (!parse_number(value, ListQuery::kMaxLimit, q.limit) || q.limit == 0) {
        error = "limit: expected 1 to " + std::to_string(ListQuery::kMaxLimit);
        return false;
      }
    } else if (name == "offset") {
      if (!parse_number(value, ListQuery::kMaxOffset, q.offset)) {
        error = "offset: expected 0 to " + std::to_string(ListQuery::kMaxOffset);
        return false;
      }
    } else {
      error = "unknown parameter (expected search, state, sort, order, offset, limit)";
      return false;
    }
  }
  return true;
}

namespace {

uint64_t prefix_of(const std::string& s) {
  uint64_t p = 0;
  for (size_t i = 0; i < 8; ++i)
    p = (p << 8) | (i < s.size() ? static_cast<unsigned char>(s[i]) : 0u);
  return p;
}

// Whether the list shows `s` at all (state and search aside).
bool listed(const Session& s) {
  if (s.removed()) return false;
  if (s.client() == nullptr) return !s.clean();  // clean and offline: on its way out
  return online(s);                              // not while connecting or closing
}

bool matches(const Session& s, const ListQuery& q) {
  const bool on = s.client() != nullptr;
  if (q.state == ListQuery::State::kConnected && !on) return false;
  if (q.state == ListQuery::State::kOffline && on) return false;
  return contains_nocase(s.client_id(), q.search) || contains_nocase(s.owner(), q.search);
}

}  // namespace

bool walk_clients(SessionStore& store, ListWalk& w, size_t budget) {
  using S = ListQuery::Sort;
  if (w.layout != store.layout()) {  // the store was rehashed: start again
    w.layout = store.layout();
    w.cursor = 0;
    w.rows.clear();
  }
  return store.walk(w.cursor, budget, [&](Session& s) {
    if (!listed(s) || !matches(s, w.q)) return;
    ListRow r{0, 0, s.client_id(), {}};
    switch (w.q.sort) {
      case S::kClientId:
        r.prefix = prefix_of(s.client_id());
        break;
      case S::kIdentity:
        r.prefix = prefix_of(s.owner());
        r.owner = s.owner();
        break;
      case S::kSince:
        r.key = static_cast<int64_t>(s.client() ? s.online_since_ms() : s.offline_since_ms());
        break;
      case S::kQueued:
        r.key = static_cast<int64_t>(s.queued_count());
        break;
      case S::kSubscriptions:
        r.key = static_cast<int64_t>(s.subscription_count());
        break;
      case S::kNotAfter:
        r.key = not_after_of(s);
        break;
    }
    w.rows.push_back(std::move(r));
  });
}

void sort_page(ListWalk& w) {
  const ListQuery& q = w.q;
  auto less = [&](const ListRow& a, const ListRow& b) {
    int c = a.prefix < b.prefix ? -1 : a.prefix > b.prefix ? 1 : 0;
    if (c == 0) c = a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
    if (c == 0) c = a.owner.compare(b.owner);  // (empty unless sorting by identity)
    if (c == 0) c = a.id.compare(b.id);        // ties by client id: pages are stable
    return q.descending ? c > 0 : c < 0;
  };
  // Only the page is ordered: nth_element puts the rows before it in front (O(n)), a
  // partial sort orders the page (O(n log limit)), whatever the offset.
  auto& rows = w.rows;
  if (q.offset >= rows.size()) return;
  const uint64_t end = std::min<uint64_t>(rows.size(), q.offset + q.limit);
  const auto first = rows.begin() + static_cast<ptrdiff_t>(q.offset);
  if (q.offset > 0) std::nth_element(rows.begin(), first, rows.end(), less);
  std::partial_sort(first, rows.begin() + static_cast<ptrdiff_t>(end), rows.end(), less);
}

void write_page(Broker& broker, const ListWalk& w, const Clock& clock, Json& out) {
  const ListQuery& q = w.q;
  out.field("total", uint64_t{w.rows.size()})
      .field("offset", q.offset)
      .field("limit", q.limit)
      .key("clients")
      .begin_array();
  const uint64_t end = std::min<uint64_t>(w.rows.size(), q.offset + q.limit);
  for (uint64_t i = q.offset; i < end; ++i) {
    const Session* s = broker.sessions().find(w.rows[i].id);
    if (s == nullptr || !listed(*s)) continue;  // gone since the walk
    out.begin_object();
    write_row(*s, clock, false, out);
    out.end_object();
  }
  out.end_array();
}

void write_client_list(Broker& broker, const ListQuery& q, const Clock& clock, Json& out) {
  ListWalk w;
  w.q = q;
  while (!walk_clients(broker.sessions(), w, SIZE_MAX)) {
  }
  sort_page(w);
  write_page(broker, w, clock, out);
}

bool write_client_detail(Broker& broker, std::string_view id, const Clock& clock, Json& out) {
  Session* s = broker.sessions().find(id);
  if (s == nullptr || s->removed() || (s->client() == nullptr && s->clean())) return false;
  write_row(*s, clock, true, out);
  out.key("subscription_list").begin_array();
  s->for_each_subscription([&](const std::string& filter, uint8_t qos) {
    out.begin_object().field("filter", filter).field("qos", qos).end_object();
  });
  out.end_array();
  if (s->client() == nullptr && s->expires_at_ms() != 0)
    out.field("expires_at", iso_time(clock.wall(s->expires_at_ms()) / 1000));
  return true;
}

}  // namespace mqgate::console
