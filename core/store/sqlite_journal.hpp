// The journal on SQLite (WAL mode), chosen by measurement (bench/RESULTS.md,
// "Persistence engine"): one fsync per commit, and a writer thread that commits
// everything that arrived while the previous fsync ran (group commit), so durability
// costs one fsync per few milliseconds, not one per message.
//
// One file per broker, locked: a second broker on the same file refuses to start. A
// file that is not a healthy mqgate database stops the broker with a message naming it
// and what to do; it is never wiped.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "store/journal.hpp"

struct sqlite3;
struct sqlite3_stmt;

namespace mqgate::store {

class SqliteJournal final : public Journal {
 public:
  struct Options {
    std::string path;
    Durability durability = Durability::kSync;
    uint32_t flush_interval_ms = 100;  // kBatched: how often the WAL is synced
    uint64_t max_bytes = 0;            // cap on the file (0: none); past it, as disk full
  };

  // Opens (creating if needed) and checks the database, and locks it. On failure returns
  // nullptr and sets `error` (naming the file and what to do).
  static std::unique_ptr<SqliteJournal> open(const Options& options, Poster post,
                                             std::string& error);
  ~SqliteJournal() override;

  // Reads the whole state (before start(): on the loop, before the broker listens).
  bool load(State& state, std::string& error);
  // Starts the writer thread; add()/barrier() may be called from then on.
  void start();

  void add(Mutation m) override;
  void barrier(std::function<void(bool ok)> done) override;
  void flush() override;
  std::optional<uint64_t> room() const override;

 private:
  struct Item {
    bool is_barrier = false;
    Mutation mutation;
  };
  // Loop-side barrier callbacks, in order; shared with posted completions so that a
  // completion arriving after shutdown finds no dangling journal.
  struct Barriers {
    std::deque<std::function<void(bool)>> waiting;
  };

  SqliteJournal() = default;
  bool exec(const char* sql, std::string& error);
  bool prepare_statements(std::string& error);
  bool has_column(const char* table, const char* column);
  // The MQTT 5 properties part of a message or retained mutation (kPropStatements).
  bool apply_props(size_t which, const Mutation& m);
  // An older schema (1: before MQTT 5 fields, 2: before sessions' certificates) to the
  // current one, in place.
  bool migrate(std::string& error);
  bool apply(const Mutation& m);
  void run();  // the writer thread
  static void skip_transient(const std::vector<Item>& batch, std::vector<bool>& skip);
  void measure_used();  // used_bytes_ from the file (writer thread, or before start())

  static constexpr uint64_t kPageSize = 4096;

  Options options_;
  Poster post_;
  sqlite3* db_ = nullptr;
  int lock_fd_ = -1;  // the database file, flock()ed: one broker per store file
  std::vector<sqlite3_stmt*> statements_;  // indexed by Mutation::Kind
  // room(): the cap (0: none), the bytes the file's pages hold (after the last commit)
  // and those added but not yet written, about (approx_bytes).
  uint64_t cap_bytes_ = 0;
  sqlite3_stmt* used_query_ = nullptr;  // measure_used()'s
  std::atomic<uint64_t> used_bytes_{0};
  std::atomic<uint64_t> unwritten_bytes_{0};

  std::mutex mutex_;
  std::condition_variable wake_, flushed_;
  std::vector<Item> pending_;  // added, not yet taken by the writer
  bool writing_ = false;       // the writer holds a batch
  bool stopping_ = false;
  std::thread writer_;

  std::shared_ptr<Barriers> barriers_ = std::make_shared<Barriers>();
};

}  // namespace mqgate::store
