// console_bench: what one GET /api/v1/clients costs on the event loop at 100,000
// sessions (docs/console.md, bench/RESULTS.md#console). It fills a broker's session store
// with offline persistent sessions (ids, subscriptions, queued counts vary), then times
// write_client_list for the queries the page makes: first page by client id, a search,
// sorts by other columns, the last page, the biggest page. Prints the median and the
// worst of --runs runs per query, in milliseconds.
//
//   console_bench [--sessions N] [--runs N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "broker/broker.hpp"
#include "console/clients.hpp"
#include "console/json.hpp"

using namespace mqgate;

int main(int argc, char** argv) {
  size_t sessions = 100000;
  int runs = 21;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--sessions") == 0) sessions = std::strtoul(argv[i + 1], nullptr, 10);
    if (std::strcmp(argv[i], "--runs") == 0) runs = std::atoi(argv[i + 1]);
  }
  LimitsConfig limits;
  limits.max_persistent_sessions = static_cast<uint32_t>(sessions + 1);
  AllowAllHooks hooks;
  Broker broker(limits, hooks);
  for (size_t i = 0; i < sessions; ++i) {
    char id[64];
    std::snprintf(id, sizeof id, "device-%07zu-%04zx", (i * 7919) % sessions, i & 0xFFFF);
    Session* s = broker.sessions().create(id, /*clean=*/false);
    s->set_owner(
        std::make_shared<const std::string>("certauth:spiffe://fleet/device/" + std::string(id)));
    for (size_t k = 0; k < i % 3; ++k)
      s->add_subscription("devices/" + std::string(id) + "/" + std::to_string(k), 1);
  }
  struct Case {
    const char* name;
    const char* query;
  };
  const Case cases[] = {
      {"first page, client_id", "limit=50"},
      {"first page, identity desc", "sort=identity&order=desc&limit=50"},
      {"first page, subscriptions desc", "sort=subscriptions&order=desc&limit=50"},
      {"search 'device-00123'", "search=device-00123&limit=50"},
      {"search, no match", "search=zzzz&limit=50"},
      {"page 1000 (offset 49950)", "offset=49950&limit=50"},
      {"last page (offset 99950)", "offset=99950&limit=50"},
      {"500 rows", "limit=500"},
  };
  std::printf("sessions: %zu, runs: %d\n", broker.sessions().size(), runs);
  std::printf("%-34s %10s %10s %10s\n", "query", "median ms", "max ms", "bytes");
  const console::Clock clock{0, 0};
  for (const Case& c : cases) {
    console::ListQuery q;
    std::string error;
    if (!console::parse_list_query(c.query, q, error)) {
      std::fprintf(stderr, "%s: %s\n", c.query, error.c_str());
      return 1;
    }
    std::vector<double> ms;
    size_t bytes = 0;
    for (int r = 0; r < runs; ++r) {
      const auto start = std::chrono::steady_clock::now();
      console::Json j;
      j.begin_object();
      console::write_client_list(broker, q, clock, j);
      j.end_object();
      bytes = j.text().size();
      ms.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
              .count());
    }
    std::sort(ms.begin(), ms.end());
    std::printf("%-34s %10.2f %10.2f %10zu\n", c.name, ms[ms.size() / 2], ms.back(), bytes);
  }
  return 0;
}
