// bench/store/engine_bench: how fast SQLite (WAL) and LMDB make QoS 1 messages durable
// with group commit, and how fast they load a big store at start-up. It decided which
// engine mqgate's persistence uses (see bench/RESULTS.md, "Persistence engine").
//
//   engine_bench DIR [messages] [subscribers-per-message]
//
// Workload per message, as the broker would write it: the message (topic ~24 B, payload
// 64 B) and one queue entry per subscriber; then, as acknowledgements come, the queue
// entries and the message are deleted. A commit (one fsync) covers a batch of messages
// (group commit); batch sizes 1, 16, 128, 1024 are measured. Then the store is refilled
// with `messages` messages left queued and re-opened, and the time to read it all back is
// measured.
#include <lmdb.h>
#include <sqlite3.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

void die(const char* what, const char* detail) {
  std::fprintf(stderr, "engine_bench: %s: %s\n", what, detail);
  std::exit(1);
}

std::string key64(uint64_t v) {  // big-endian, so keys sort numerically
  std::string k(8, '\0');
  for (int i = 7; i >= 0; --i, v >>= 8) k[static_cast<size_t>(i)] = static_cast<char>(v & 0xff);
  return k;
}

const std::string kPayload(64, 'p');

// Built with append: GCC 12's -Wrestrict misfires on `"literal" + std::string` at -O2.
std::string session_name(int subscriber) {
  std::string k = "s";
  k += std::to_string(subscriber);
  return k;
}

std::string topic_of(uint64_t id) {
  std::string t = "devices/d";
  t += std::to_string(id % 1000);
  t += "/cmd";
  return t;
}

// "s<subscriber>" NUL <message key>: a session's queue entries sort together.
std::string queue_key(int subscriber, const std::string& message_key) {
  std::string k = session_name(subscriber);
  k.push_back('\0');
  k += message_key;
  return k;
}

// --- SQLite, WAL, synchronous = FULL (every commit is fsynced) ----------------------
struct Sqlite {
  sqlite3* db = nullptr;
  sqlite3_stmt *ins_msg = nullptr, *ins_q = nullptr, *del_msg = nullptr, *del_q = nullptr;

  explicit Sqlite(const std::string& path) {
    if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) die("sqlite open", sqlite3_errmsg(db));
    exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
         "CREATE TABLE IF NOT EXISTS msg(id INTEGER PRIMARY KEY, topic TEXT, payload BLOB, qos INT);"
         "CREATE TABLE IF NOT EXISTS q(session TEXT, seq INTEGER, msg INTEGER, qos INT,"
         " PRIMARY KEY(session, seq)) WITHOUT ROWID;");
    prep("INSERT INTO msg VALUES(?,?,?,1)", &ins_msg);
    prep("INSERT INTO q VALUES(?,?,?,1)", &ins_q);
    prep("DELETE FROM msg WHERE id=?", &del_msg);
    prep("DELETE FROM q WHERE session=? AND seq=?", &del_q);
  }
  ~Sqlite() {
    for (auto* s : {ins_msg, ins_q, del_msg, del_q}) sqlite3_finalize(s);
    sqlite3_close(db);
  }
  void exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) die("sqlite", err);
  }
  void prep(const char* sql, sqlite3_stmt** s) {
    if (sqlite3_prepare_v2(db, sql, -1, s, nullptr) != SQLITE_OK) die("sqlite prepare", sqlite3_errmsg(db));
  }
  void step(sqlite3_stmt* s) {
    if (sqlite3_step(s) != SQLITE_DONE) die("sqlite step", sqlite3_errmsg(db));
    sqlite3_reset(s);
  }
  void begin() { exec("BEGIN"); }
  void commit() { exec("COMMIT"); }
  void put(uint64_t id, int subs) {
    const std::string topic = topic_of(id);
    sqlite3_bind_int64(ins_msg, 1, static_cast<sqlite3_int64>(id));
    sqlite3_bind_text(ins_msg, 2, topic.data(), static_cast<int>(topic.size()), SQLITE_TRANSIENT);
    sqlite3_bind_blob(ins_msg, 3, kPayload.data(), static_cast<int>(kPayload.size()), SQLITE_STATIC);
    step(ins_msg);
    for (int s = 0; s < subs; ++s) {
      const std::string session = session_name(s);
      sqlite3_bind_text(ins_q, 1, session.data(), static_cast<int>(session.size()), SQLITE_TRANSIENT);
      sqlite3_bind_int64(ins_q, 2, static_cast<sqlite3_int64>(id));
      sqlite3_bind_int64(ins_q, 3, static_cast<sqlite3_int64>(id));
      step(ins_q);
    }
  }
  void remove(uint64_t id, int subs) {
    for (int s = 0; s < subs; ++s) {
      const std::string session = session_name(s);
      sqlite3_bind_text(del_q, 1, session.data(), static_cast<int>(session.size()), SQLITE_TRANSIENT);
      sqlite3_bind_int64(del_q, 2, static_cast<sqlite3_int64>(id));
      step(del_q);
    }
    sqlite3_bind_int64(del_msg, 1, static_cast<sqlite3_int64>(id));
    step(del_msg);
  }
  size_t load() {
    size_t n = 0;
    sqlite3_stmt* s;
    prep("SELECT id, topic, payload FROM msg ORDER BY id", &s);
    while (sqlite3_step(s) == SQLITE_ROW) n += static_cast<size_t>(sqlite3_column_bytes(s, 2)) > 0;
    sqlite3_finalize(s);
    prep("SELECT session, seq, msg FROM q ORDER BY session, seq", &s);
    while (sqlite3_step(s) == SQLITE_ROW) ++n;
    sqlite3_finalize(s);
    return n;
  }
};

// --- LMDB, default durability (every commit is fsynced) -------------------------------
struct Lmdb {
  MDB_env* env = nullptr;
  MDB_dbi msg = 0, q = 0;
  MDB_txn* txn = nullptr;

  explicit Lmdb(const std::string& dir) {
    std::filesystem::create_directories(dir);
    check(mdb_env_create(&env), "env_create");
    check(mdb_env_set_mapsize(env, size_t{8} << 30), "set_mapsize");
    check(mdb_env_set_maxdbs(env, 4), "set_maxdbs");
    check(mdb_env_open(env, dir.c_str(), 0, 0600), "env_open");
    begin();
    check(mdb_dbi_open(txn, "msg", MDB_CREATE, &msg), "dbi msg");
    check(mdb_dbi_open(txn, "q", MDB_CREATE, &q), "dbi q");
    commit();
  }
  ~Lmdb() { mdb_env_close(env); }
  static void check(int rc, const char* what) {
    if (rc != 0) die(what, mdb_strerror(rc));
  }
  void begin() { check(mdb_txn_begin(env, nullptr, 0, &txn), "txn_begin"); }
  void commit() { check(mdb_txn_commit(txn), "txn_commit"); }
  void put(uint64_t id, int subs) {
    const std::string k = key64(id);
    std::string v = topic_of(id);
    v.push_back('\0');
    v += kPayload;
    MDB_val key{k.size(), const_cast<char*>(k.data())}, val{v.size(), v.data()};
    check(mdb_put(txn, msg, &key, &val, 0), "put msg");
    for (int s = 0; s < subs; ++s) {
      const std::string qk = queue_key(s, k);
      MDB_val key2{qk.size(), const_cast<char*>(qk.data())}, val2{k.size(), const_cast<char*>(k.data())};
      check(mdb_put(txn, q, &key2, &val2, 0), "put q");
    }
  }
  void remove(uint64_t id, int subs) {
    const std::string k = key64(id);
    for (int s = 0; s < subs; ++s) {
      const std::string qk = queue_key(s, k);
      MDB_val key2{qk.size(), const_cast<char*>(qk.data())};
      check(mdb_del(txn, q, &key2, nullptr), "del q");
    }
    MDB_val key{k.size(), const_cast<char*>(k.data())};
    check(mdb_del(txn, msg, &key, nullptr), "del msg");
  }
  size_t load() {
    size_t n = 0;
    MDB_txn* rtxn;
    check(mdb_txn_begin(env, nullptr, MDB_RDONLY, &rtxn), "rtxn");
    for (MDB_dbi dbi : {msg, q}) {
      MDB_cursor* c;
      check(mdb_cursor_open(rtxn, dbi, &c), "cursor");
      MDB_val k, v;
      for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) ++n;
      mdb_cursor_close(c);
    }
    mdb_txn_abort(rtxn);
    return n;
  }
};

template <typename Store>
void run(const char* name, const std::string& path, size_t messages, int subs) {
  std::filesystem::remove_all(path);
  std::filesystem::remove(path + "-wal");
  std::filesystem::remove(path + "-shm");
  {
    Store st(path);
    uint64_t id = 0;
    for (size_t batch : {1, 16, 128, 1024}) {
      const size_t total = std::min<size_t>(batch * 200, 100000);
      const auto t = Clock::now();
      for (size_t done = 0; done < total; done += batch) {
        st.begin();
        for (size_t i = 0; i < batch; ++i) st.put(id + i, subs);
        st.commit();
        // the acknowledgements of the previous batch, in the next commit (as they come)
        st.begin();
        for (size_t i = 0; i < batch; ++i) st.remove(id + i, subs);
        st.commit();
        id += batch;
      }
      const double s = seconds_since(t);
      std::printf("%-7s batch %5zu: %9.0f msg/s durable (store + ack), %7.1f fsynced commits/s\n", name,
                  batch, static_cast<double>(total) / s, 2.0 * static_cast<double>(total / batch) / s);
    }
    const auto t = Clock::now();
    for (size_t done = 0; done < messages; done += 1024) {
      st.begin();
      for (size_t i = 0; i < 1024 && done + i < messages; ++i) st.put(id + done + i, subs);
      st.commit();
    }
    std::printf("%-7s fill %zu queued messages x %d subscriber(s): %.2f s\n", name, messages, subs,
                seconds_since(t));
  }
  std::error_code ec;
  uintmax_t bytes = 0;
  if (std::filesystem::is_directory(path)) {
    for (auto& e : std::filesystem::directory_iterator(path)) bytes += e.file_size();
  } else {
    bytes = std::filesystem::file_size(path, ec) + std::filesystem::file_size(path + "-wal", ec);
  }
  const auto t = Clock::now();
  Store st(path);
  const size_t rows = st.load();
  std::printf("%-7s load %zu records: %.2f s; %.1f MiB on disk (%.0f B per queued message)\n", name,
              rows, seconds_since(t), static_cast<double>(bytes) / 1048576.0,
              static_cast<double>(bytes) / static_cast<double>(messages));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: engine_bench DIR [messages] [subscribers-per-message]\n");
    return 2;
  }
  const std::string dir = argv[1];
  const size_t messages = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1000000;
  const int subs = argc > 3 ? std::atoi(argv[3]) : 1;
  std::filesystem::create_directories(dir);
  run<Sqlite>("sqlite", dir + "/bench.sqlite", messages, subs);
  run<Lmdb>("lmdb", dir + "/bench.lmdb", messages, subs);
  return 0;
}
