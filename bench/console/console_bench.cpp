// console_bench: what one GET /api/v1/clients costs at 100,000 sessions (docs/console.md,
// bench/RESULTS.md, "Console"). It fills a broker's session store with offline
// persistent sessions (ids, identities, subscriptions vary), then runs the queries the
// page makes (first page by client id, a search, sorts by other columns, deep pages, the
// biggest page) as the console does: the walk in slices of Console::kListSliceBudget on
// the loop, the sort (on the thread pool there), the page written on the loop. Prints,
// per query over --runs runs, the median of the longest slice (what one loop iteration
// costs), of the whole walk, of the sort and of the page, in milliseconds.
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
#include "console/console.hpp"
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
  std::printf("sessions: %zu, runs: %d, slice: %zu sessions\n", broker.sessions().size(), runs,
              console::Console::kListSliceBudget);
  std::printf("%-34s %12s %10s %10s %10s %9s\n", "query (median ms)", "longest slice", "walk",
              "sort", "page", "bytes");
  const console::Clock clock{0, 0};
  using Clock = std::chrono::steady_clock;
  auto ms_since = [](Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
  };
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  for (const Case& c : cases) {
    console::ListQuery q;
    std::string error;
    if (!console::parse_list_query(c.query, q, error)) {
      std::fprintf(stderr, "%s: %s\n", c.query, error.c_str());
      return 1;
    }
    std::vector<double> slice, walk, sort, page;
    size_t bytes = 0;
    for (int r = 0; r < runs; ++r) {
      console::ListWalk w;
      w.q = q;
      w.layout = broker.sessions().layout();
      double longest = 0, total = 0;
      bool done = false;
      while (!done) {
        const auto t = Clock::now();
        done = console::walk_clients(broker.sessions(), w, console::Console::kListSliceBudget);
        const double d = ms_since(t);
        longest = std::max(longest, d);
        total += d;
      }
      slice.push_back(longest);
      walk.push_back(total);
      auto t = Clock::now();
      console::sort_page(w);
      sort.push_back(ms_since(t));
      t = Clock::now();
      console::Json j;
      j.begin_object();
      console::write_page(broker, w, clock, j);
      j.end_object();
      page.push_back(ms_since(t));
      bytes = j.text().size();
    }
    std::printf("%-34s %12.2f %10.2f %10.2f %10.2f %9zu\n", c.name, median(slice), median(walk),
                median(sort), median(page), bytes);
  }
  return 0;
}
