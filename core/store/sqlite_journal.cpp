#include "store/sqlite_journal.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <unordered_map>

#include "base/log.hpp"

namespace mqgate::store {

namespace {

// 2: MQTT 5 fields: nullable columns for sessions and subscriptions, tables of their own
// for message and retained properties (a 3.1.1 message's rows do not grow by a byte),
// and the wills table.
// 3: a session's client certificate chain and its listener (the console, offline).
// Older files are migrated when opened.
constexpr int kSchemaVersion = 3;

const char* const kSchema = R"sql(
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions(client_id TEXT PRIMARY KEY, owner TEXT NOT NULL,
  expires_at INTEGER NOT NULL, last_packet_id INTEGER NOT NULL, protocol_level INTEGER,
  expiry_interval INTEGER, cert_listener TEXT, cert_chain BLOB) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subscriptions(client_id TEXT NOT NULL, filter TEXT NOT NULL,
  qos INTEGER NOT NULL, options INTEGER, subscription_id INTEGER,
  PRIMARY KEY(client_id, filter)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages(id INTEGER PRIMARY KEY, topic TEXT NOT NULL,
  payload BLOB NOT NULL, qos INTEGER NOT NULL, expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS message_props(id INTEGER PRIMARY KEY, props BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS outgoing(client_id TEXT NOT NULL, seq INTEGER NOT NULL,
  message_id INTEGER NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL,
  packet_id INTEGER NOT NULL, state INTEGER NOT NULL, PRIMARY KEY(client_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS incoming(client_id TEXT NOT NULL, packet_id INTEGER NOT NULL,
  PRIMARY KEY(client_id, packet_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS retained(topic TEXT PRIMARY KEY, payload BLOB NOT NULL,
  qos INTEGER NOT NULL, expires_at INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS retained_props(topic TEXT PRIMARY KEY, props BLOB NOT NULL)
  WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS wills(client_id TEXT PRIMARY KEY, topic TEXT NOT NULL,
  payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL,
  due_at INTEGER NOT NULL, props BLOB, expiry_interval INTEGER) WITHOUT ROWID;
)sql";

// Columns later schemas added to schema 1's tables, in order (all nullable: old rows read
// as 3.1.1 without a certificate). Schema 2: the first four; 3: the certificate.
const char* const kMigrationColumns[][3] = {
    {"sessions", "protocol_level", "INTEGER"}, {"sessions", "expiry_interval", "INTEGER"},
    {"subscriptions", "options", "INTEGER"},   {"subscriptions", "subscription_id", "INTEGER"},
    {"sessions", "cert_listener", "TEXT"},     {"sessions", "cert_chain", "BLOB"},
};

// One statement per Mutation::Kind, in enum order.
const char* const kStatements[] = {
    "INSERT OR REPLACE INTO sessions VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    "DELETE FROM sessions WHERE client_id = ?1",
    "INSERT OR REPLACE INTO subscriptions VALUES(?1, ?2, ?3, ?4, ?5)",
    "DELETE FROM subscriptions WHERE client_id = ?1 AND filter = ?2",
    "INSERT OR REPLACE INTO messages VALUES(?1, ?2, ?3, ?4, ?5)",
    "DELETE FROM messages WHERE id = ?1",
    "INSERT OR REPLACE INTO outgoing VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    "DELETE FROM outgoing WHERE client_id = ?1 AND seq = ?2",
    "INSERT OR REPLACE INTO incoming VALUES(?1, ?2)",
    "DELETE FROM incoming WHERE client_id = ?1 AND packet_id = ?2",
    "INSERT OR REPLACE INTO retained VALUES(?1, ?2, ?3, ?4)",
    "DELETE FROM retained WHERE topic = ?1",
    "INSERT OR REPLACE INTO wills VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    "DELETE FROM wills WHERE client_id = ?1",
};
constexpr size_t kStatementCount = sizeof kStatements / sizeof kStatements[0];
static_assert(kStatementCount == static_cast<size_t>(Mutation::Kind::kRemoveWill) + 1);

// A session's removal takes what it owns with it.
const char* const kRemoveSessionContents[] = {
    "DELETE FROM subscriptions WHERE client_id = ?1",
    "DELETE FROM outgoing WHERE client_id = ?1",
    "DELETE FROM incoming WHERE client_id = ?1",
    "DELETE FROM wills WHERE client_id = ?1",
};
constexpr size_t kRemoveSessionCount = std::size(kRemoveSessionContents);

// MQTT 5 properties of message bodies and retained messages, in tables of their own.
enum PropStatement : size_t {
  kPutMessageProps,
  kRemoveMessageProps,
  kPutRetainedProps,
  kRemoveRetainedProps
};
const char* const kPropStatements[] = {
    "INSERT OR REPLACE INTO message_props VALUES(?1, ?2)",
    "DELETE FROM message_props WHERE id = ?1",
    "INSERT OR REPLACE INTO retained_props VALUES(?1, ?2)",
    "DELETE FROM retained_props WHERE topic = ?1",
};

void bind_text(sqlite3_stmt* s, int i, const std::string& v) {
  sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
}
void bind_blob(sqlite3_stmt* s, int i, const std::string& v) {
  sqlite3_bind_blob(s, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
}
// MQTT 5 fields: bound only when set, so 3.1.1 rows keep trailing NULLs (not stored).
void bind_optional_blob(sqlite3_stmt* s, int i, const std::string& v) {
  if (!v.empty()) bind_blob(s, i, v);
}
void bind_optional_int(sqlite3_stmt* s, int i, std::optional<uint32_t> v) {
  if (v) sqlite3_bind_int64(s, i, *v);
}
std::optional<uint32_t> column_optional_u32(sqlite3_stmt* s, int i) {
  if (sqlite3_column_type(s, i) == SQLITE_NULL) return std::nullopt;
  return static_cast<uint32_t>(sqlite3_column_int64(s, i));
}
std::string column_text(sqlite3_stmt* s, int i) {
  const auto* p = static_cast<const char*>(sqlite3_column_blob(s, i));
  return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(s, i))) : std::string();
}

// The row a queue entry, message body or retained message mutation writes, for
// skip_transient() and compact_unwritten(); "" for other kinds.
std::string row_key(const Mutation& m) {
  using K = Mutation::Kind;
  switch (m.kind) {
    case K::kPutOutgoing:
    case K::kRemoveOutgoing:
      return "o" + std::to_string(m.outgoing.seq) + ' ' + m.outgoing.client_id;
    case K::kPutMessage:
    case K::kRemoveMessage:
      return "m" + std::to_string(m.message.id);
    case K::kPutIncoming:
    case K::kRemoveIncoming:
      return "i" + std::to_string(m.incoming.packet_id) + ' ' + m.incoming.client_id;
    case K::kPutRetained:
    case K::kRemoveRetained:
      return "r" + m.retained.topic;
    default:
      return {};
  }
}

bool is_put(Mutation::Kind k) {
  return k == Mutation::Kind::kPutOutgoing || k == Mutation::Kind::kPutMessage ||
         k == Mutation::Kind::kPutIncoming || k == Mutation::Kind::kPutRetained;
}

// A put that replaces its row whole: an earlier put of the same row need not be written.
bool replaces(Mutation::Kind k) {
  return k == Mutation::Kind::kPutRetained;
}

std::string what_to_do(const std::string& path) {
  return "; restore " + path +
         " from a backup, or move it (and its -wal file) away to "
         "start with an empty state";
}

// `<resolved path>.lock` names the broker holding the lock (its pid and the path it was
// given), for the message a second broker prints. The lock itself is on the database.
void write_holder(const std::string& note_path, const std::string& path) {
  const int fd = ::open(note_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return;  // only a courtesy
  const std::string text = std::to_string(::getpid()) + "\n" + path + "\n";
  ssize_t ignored = ::write(fd, text.data(), text.size());
  (void)ignored;
  ::close(fd);
}
std::string read_holder(const std::string& note_path) {
  const int fd = ::open(note_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {};
  char buf[4096];
  const ssize_t n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  if (n <= 0) return {};
  const std::string text(buf, static_cast<size_t>(n));
  const size_t nl = text.find('\n');
  if (nl == std::string::npos || text.size() < nl + 2 || text.back() != '\n') return {};
  const long pid = std::strtol(text.c_str(), nullptr, 10);
  if (pid <= 0 || ::kill(static_cast<pid_t>(pid), 0) != 0) return {};  // a stale note
  return text.substr(nl + 1, text.size() - nl - 2) + " by pid " + std::to_string(pid);
}

// One warning per existing store file that others may read (it holds payloads and
// client identities), and one for a database file of zero bytes (read as an empty state).
// `path` is the resolved one: SQLite puts -wal and -shm beside it.
void warn_if_not_private(const std::string& path, bool existed) {
  struct stat st;
  for (const char* suffix : {"", "-wal", "-shm"}) {
    const std::string file = path + suffix;
    if (::stat(file.c_str(), &st) != 0) continue;
    if ((st.st_mode & 077) != 0)
      LOG_WARN(
          "persistence: %s is accessible to group or others (mode %04o); it holds "
          "messages and client identities: chmod 600 it",
          file.c_str(), static_cast<unsigned>(st.st_mode & 07777));
  }
  struct stat wal;
  if (existed && ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0 &&
      !(::stat((path + "-wal").c_str(), &wal) == 0 && wal.st_size > 0))
    LOG_WARN("persistence: %s is empty (0 bytes): starting with an empty state", path.c_str());
}

}  // namespace

std::unique_ptr<SqliteJournal> SqliteJournal::open(const Options& options, Poster post,
                                                   std::string& error) {
  std::unique_ptr<SqliteJournal> j(new SqliteJournal);
  j->options_ = options;
  j->post_ = std::move(post);
  const std::string& path = options.path;
  // The store holds payloads and client identities: created private. SQLite gives the
  // -wal and -shm files it creates the database file's mode.
  struct stat st;
  const bool existed = ::stat(path.c_str(), &st) == 0;
  j->lock_fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (j->lock_fd_ < 0) {
    error = path + ": cannot open: " + std::strerror(errno);
    return nullptr;
  }
  // The broker's lock is on the database file itself, whatever path (symlink, hard link,
  // another spelling) reached it. flock() is separate from SQLite's own fcntl() locks;
  // this descriptor stays open until after SQLite closes (closing a descriptor of the
  // file would drop SQLite's locks).
  char* resolved = ::realpath(path.c_str(), nullptr);
  const std::string real = resolved ? resolved : path;
  std::free(resolved);
  const std::string note_path = real + ".lock";
  if (flock(j->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) {
      error = path + ": cannot lock: " + std::strerror(errno);
      return nullptr;
    }
    error = path + ": another mqgate process uses this persistence file";
    if (real != path) error += " (" + real + ")";
    const std::string holder = read_holder(note_path);
    if (!holder.empty()) error += ", opened there as " + holder;
    error += "; give each broker its own [persistence] path";
    return nullptr;
  }
  warn_if_not_private(real, existed);
  write_holder(note_path, path);
  if (sqlite3_open_v2(path.c_str(), &j->db_,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                      nullptr) != SQLITE_OK) {
    error = path + ": cannot open: " + (j->db_ ? sqlite3_errmsg(j->db_) : "out of memory");
    return nullptr;
  }
  sqlite3_extended_result_codes(j->db_, 1);
  std::string why;
  if (options.max_bytes != 0) {
    // A cap on the file: past it writes fail as on a full disk (and are retried).
    const uint64_t pages = std::max<uint64_t>(options.max_bytes / kPageSize, 16);
    j->exec(("PRAGMA page_size = " + std::to_string(kPageSize) +
             "; PRAGMA max_page_count = " + std::to_string(pages))
                .c_str(),
            why);
    j->cap_bytes_ = pages * kPageSize;
  }
  if (!j->exec("PRAGMA journal_mode = WAL", why) ||
      !j->exec(options.durability == Durability::kSync ? "PRAGMA synchronous = FULL"
                                                       : "PRAGMA synchronous = NORMAL",
               why)) {
    error = path + ": not a usable mqgate persistence file (" + why + ")" + what_to_do(path);
    return nullptr;
  }
  // A quick structural check: a damaged file stops the broker rather than losing data
  // silently later.
  sqlite3_stmt* check = nullptr;
  if (sqlite3_prepare_v2(j->db_, "PRAGMA quick_check", -1, &check, nullptr) != SQLITE_OK) {
    error = path + ": cannot be checked (" + sqlite3_errmsg(j->db_) + ")" + what_to_do(path);
    return nullptr;
  }
  std::string verdict =
      sqlite3_step(check) == SQLITE_ROW ? column_text(check, 0) : sqlite3_errmsg(j->db_);
  sqlite3_finalize(check);
  if (verdict != "ok") {
    error = path + ": the persistence file is damaged (" + verdict + ")" + what_to_do(path);
    return nullptr;
  }
  if (!j->exec(kSchema, why)) {
    error = path + ": cannot create the tables (" + why + ")" + what_to_do(path);
    return nullptr;
  }
  sqlite3_stmt* version = nullptr;
  sqlite3_prepare_v2(j->db_, "SELECT value FROM meta WHERE key = 'schema'", -1, &version, nullptr);
  const int found = sqlite3_step(version) == SQLITE_ROW ? sqlite3_column_int(version, 0) : 0;
  sqlite3_finalize(version);
  if (found == 0) {
    j->exec(("INSERT INTO meta VALUES('schema', " + std::to_string(kSchemaVersion) + ")").c_str(),
            why);
  } else if (found >= 1 && found < kSchemaVersion) {
    if (!j->migrate(why)) {
      error = path + ": cannot migrate from schema " + std::to_string(found) + " (" + why + ")" +
              what_to_do(path);
      return nullptr;
    }
    LOG_INFO("persistence: %s migrated from schema %d to %d (%s)", path.c_str(), found,
             kSchemaVersion,
             found == 1 ? "MQTT 5 fields, sessions' certificates" : "sessions' certificates");
  } else if (found != kSchemaVersion) {
    error = path + ": written by another version of mqgate (schema " + std::to_string(found) +
            ", this broker reads 1 to " + std::to_string(kSchemaVersion) + ")";
    return nullptr;
  }
  if (!j->prepare_statements(why)) {
    error = path + ": " + why + what_to_do(path);
    return nullptr;
  }
  if (j->cap_bytes_ != 0) j->measure_used();
  return j;
}

SqliteJournal::~SqliteJournal() {
  if (writer_.joinable()) {
    flush();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    writer_.join();
  }
  for (sqlite3_stmt* s : statements_)
    sqlite3_finalize(s);
  sqlite3_finalize(used_query_);
  if (db_) sqlite3_close(db_);
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the lock
}

bool SqliteJournal::exec(const char* sql, std::string& error) {
  char* msg = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &msg) == SQLITE_OK) return true;
  error = msg ? msg : sqlite3_errmsg(db_);
  sqlite3_free(msg);
  return false;
}

bool SqliteJournal::has_column(const char* table, const char* column) {
  sqlite3_stmt* s = nullptr;
  const std::string sql = std::string("PRAGMA table_info(") + table + ")";
  if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) != SQLITE_OK) return false;
  bool found = false;
  while (!found && sqlite3_step(s) == SQLITE_ROW)
    found = column_text(s, 1) == column;
  sqlite3_finalize(s);
  return found;
}

bool SqliteJournal::migrate(std::string& error) {
  // One transaction: a crash half-way leaves the old version, migrated again next time.
  // Columns already there (a later schema's) are left as they are.
  if (!exec("BEGIN IMMEDIATE", error)) return false;
  for (const auto& c : kMigrationColumns) {
    if (has_column(c[0], c[1])) continue;
    const std::string sql = std::string("ALTER TABLE ") + c[0] + " ADD COLUMN " + c[1] + " " + c[2];
    if (!exec(sql.c_str(), error)) {
      exec("ROLLBACK", error);
      return false;
    }
  }
  const std::string version =
      "UPDATE meta SET value = " + std::to_string(kSchemaVersion) + " WHERE key = 'schema'";
  if (!exec(version.c_str(), error) || !exec("COMMIT", error)) {
    std::string ignored;
    exec("ROLLBACK", ignored);
    return false;
  }
  return true;
}

bool SqliteJournal::prepare_statements(std::string& error) {
  auto prepare = [&](const char* sql) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db_, sql, -1, &s, nullptr) != SQLITE_OK) {
      error = std::string("cannot prepare a statement: ") + sqlite3_errmsg(db_);
      return false;
    }
    statements_.push_back(s);
    return true;
  };
  for (const char* sql : kStatements)
    if (!prepare(sql)) return false;
  for (const char* sql : kRemoveSessionContents)
    if (!prepare(sql)) return false;
  for (const char* sql : kPropStatements)
    if (!prepare(sql)) return false;
  return true;
}

bool SqliteJournal::load(State& state, std::string& error) {
  auto query = [&](const char* sql, auto&& row) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db_, sql, -1, &s, nullptr) != SQLITE_OK) {
      error = options_.path + ": " + sqlite3_errmsg(db_) + what_to_do(options_.path);
      return false;
    }
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW)
      row(s);
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) {
      error =
          options_.path + ": reading failed: " + sqlite3_errmsg(db_) + what_to_do(options_.path);
      return false;
    }
    return true;
  };
  auto u8 = [](sqlite3_stmt* s, int i) { return static_cast<uint8_t>(sqlite3_column_int(s, i)); };
  auto u16 = [](sqlite3_stmt* s, int i) { return static_cast<uint16_t>(sqlite3_column_int(s, i)); };
  return query(
             "SELECT client_id, owner, expires_at, last_packet_id, protocol_level, "
             "expiry_interval, cert_listener, cert_chain FROM sessions",
             [&](sqlite3_stmt* s) {
               SessionRecord r;
               r.client_id = column_text(s, 0);
               r.owner = column_text(s, 1);
               r.expires_at_ms = sqlite3_column_int64(s, 2);
               r.last_packet_id = u16(s, 3);
               if (sqlite3_column_type(s, 4) != SQLITE_NULL) r.protocol_level = u8(s, 4);
               r.expiry_interval = column_optional_u32(s, 5);
               r.cert_listener = column_text(s, 6);
               r.cert_chain = column_text(s, 7);
               state.sessions.push_back(std::move(r));
             }) &&
         query("SELECT client_id, filter, qos, options, subscription_id FROM subscriptions",
               [&](sqlite3_stmt* s) {
                 state.subscriptions.push_back({column_text(s, 0), column_text(s, 1), u8(s, 2),
                                                u8(s, 3),
                                                static_cast<uint32_t>(sqlite3_column_int64(s, 4))});
               }) &&
         query(
             "SELECT m.id, m.topic, m.payload, m.qos, m.expires_at, p.props FROM messages m "
             "LEFT JOIN message_props p ON p.id = m.id ORDER BY m.id",
             [&](sqlite3_stmt* s) {
               MessageRecord m{static_cast<uint64_t>(sqlite3_column_int64(s, 0)),
                               column_text(s, 1),
                               column_text(s, 2),
                               u8(s, 3),
                               sqlite3_column_int64(s, 4),
                               column_text(s, 5)};
               state.next_message_id = std::max(state.next_message_id, m.id + 1);
               state.messages.push_back(std::move(m));
             }) &&
         query(
             "SELECT client_id, seq, message_id, qos, retain, packet_id, state FROM outgoing "
             "ORDER BY client_id, seq",
             [&](sqlite3_stmt* s) {
               OutgoingRecord o;
               o.client_id = column_text(s, 0);
               o.seq = static_cast<uint64_t>(sqlite3_column_int64(s, 1));
               o.message_id = static_cast<uint64_t>(sqlite3_column_int64(s, 2));
               o.qos = u8(s, 3);
               o.retain = sqlite3_column_int(s, 4) != 0;
               o.packet_id = u16(s, 5);
               o.state = static_cast<OutgoingRecord::State>(sqlite3_column_int(s, 6));
               state.outgoing.push_back(std::move(o));
             }) &&
         query("SELECT client_id, packet_id FROM incoming",
               [&](sqlite3_stmt* s) {
                 state.incoming_qos2.push_back({column_text(s, 0), u16(s, 1)});
               }) &&
         query(
             "SELECT r.topic, r.payload, r.qos, r.expires_at, p.props FROM retained r "
             "LEFT JOIN retained_props p ON p.topic = r.topic",
             [&](sqlite3_stmt* s) {
               state.retained.push_back({column_text(s, 0), column_text(s, 1), u8(s, 2),
                                         sqlite3_column_int64(s, 3), column_text(s, 4)});
             }) &&
         query(
             "SELECT client_id, topic, payload, qos, retain, due_at, props, expiry_interval "
             "FROM wills",
             [&](sqlite3_stmt* s) {
               state.wills.push_back({column_text(s, 0), column_text(s, 1), column_text(s, 2),
                                      u8(s, 3), sqlite3_column_int(s, 4) != 0,
                                      sqlite3_column_int64(s, 5), column_text(s, 6),
                                      column_optional_u32(s, 7)});
             });
}

void SqliteJournal::start() {
  writer_ = std::thread([this] { run(); });
}

std::optional<uint64_t> SqliteJournal::room() const {
  if (cap_bytes_ == 0) return std::nullopt;
  // A reserve stays for the small changes that must not be refused: removals (a B-tree
  // may split a page to delete), session and subscription rows, packet ids.
  const uint64_t reserve = std::max<uint64_t>(2 * kPageSize, cap_bytes_ / 16);
  const uint64_t taken = used_bytes_.load(std::memory_order_relaxed) +
                         unwritten_bytes_.load(std::memory_order_relaxed) + reserve;
  return taken >= cap_bytes_ ? 0 : cap_bytes_ - taken;
}

void SqliteJournal::measure_used() {
  // Pages in use (the file's pages less its free list): what max_page_count counts. One
  // statement, prepared once: this runs after every commit of a capped store.
  if (used_query_ == nullptr &&
      sqlite3_prepare_v2(db_,
                         "SELECT p.page_count - f.freelist_count "
                         "FROM pragma_page_count() AS p, pragma_freelist_count() AS f",
                         -1, &used_query_, nullptr) != SQLITE_OK)
    return;  // the estimate stays as it was
  if (sqlite3_step(used_query_) == SQLITE_ROW) {
    const sqlite3_int64 used = sqlite3_column_int64(used_query_, 0);
    used_bytes_.store(used > 0 ? static_cast<uint64_t>(used) * kPageSize : 0,
                      std::memory_order_relaxed);
  }
  sqlite3_reset(used_query_);
}

void SqliteJournal::add(Mutation m) {
  if (cap_bytes_ != 0) unwritten_bytes_.fetch_add(approx_bytes(m), std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    pending_.push_back({false, std::move(m)});
  }
  // Sync: changes nobody waits for (a subscription, a session record) are written with
  // the next commit too, not a flush interval later. A busy writer is not woken: what
  // arrives meanwhile joins its next batch.
  if (options_.durability == Durability::kSync) wake_.notify_one();
}

void SqliteJournal::barrier(std::function<void(bool ok)> done) {
  barriers_->waiting.push_back(std::move(done));
  {
    std::lock_guard<std::mutex> lock(mutex_);
    Item b;
    b.is_barrier = true;
    pending_.push_back(std::move(b));
  }
  wake_.notify_one();
}

void SqliteJournal::flush() {
  std::unique_lock<std::mutex> lock(mutex_);
  wake_.notify_one();
  flushed_.wait(lock, [&] { return (pending_.empty() && !writing_) || !writer_.joinable(); });
}

bool SqliteJournal::apply(const Mutation& m) {
  using K = Mutation::Kind;
  sqlite3_stmt* s = statements_[static_cast<size_t>(m.kind)];
  switch (m.kind) {
    case K::kPutSession:
      bind_text(s, 1, m.session.client_id);
      bind_text(s, 2, m.session.owner);
      sqlite3_bind_int64(s, 3, m.session.expires_at_ms);
      sqlite3_bind_int(s, 4, m.session.last_packet_id);
      if (m.session.protocol_level == 5) {
        sqlite3_bind_int(s, 5, m.session.protocol_level);
        bind_optional_int(s, 6, m.session.expiry_interval);
      }
      if (!m.session.cert_chain.empty()) {
        bind_text(s, 7, m.session.cert_listener);
        bind_blob(s, 8, m.session.cert_chain);
      }
      break;
    case K::kRemoveSession:
      for (size_t i = 0; i < std::size(kRemoveSessionContents); ++i) {
        sqlite3_stmt* c = statements_[kStatementCount + i];
        bind_text(c, 1, m.session.client_id);
        const int rc = sqlite3_step(c);
        sqlite3_reset(c);
        if (rc != SQLITE_DONE) return false;
      }
      bind_text(s, 1, m.session.client_id);
      break;
    case K::kPutSubscription:
      bind_text(s, 1, m.subscription.client_id);
      bind_text(s, 2, m.subscription.filter);
      sqlite3_bind_int(s, 3, m.subscription.qos);
      if (m.subscription.options != 0 || m.subscription.subscription_id != 0) {
        sqlite3_bind_int(s, 4, m.subscription.options);
        sqlite3_bind_int64(s, 5, m.subscription.subscription_id);
      }
      break;
    case K::kRemoveSubscription:
      bind_text(s, 1, m.subscription.client_id);
      bind_text(s, 2, m.subscription.filter);
      break;
    case K::kPutMessage:
      sqlite3_bind_int64(s, 1, static_cast<sqlite3_int64>(m.message.id));
      bind_text(s, 2, m.message.topic);
      bind_blob(s, 3, m.message.payload);
      sqlite3_bind_int(s, 4, m.message.qos);
      sqlite3_bind_int64(s, 5, m.message.expires_at_ms);
      if (!m.message.props.empty() && !apply_props(kPutMessageProps, m)) return false;
      break;
    case K::kRemoveMessage:
      sqlite3_bind_int64(s, 1, static_cast<sqlite3_int64>(m.message.id));
      if (!m.message.props.empty() && !apply_props(kRemoveMessageProps, m)) return false;
      break;
    case K::kPutOutgoing:
      bind_text(s, 1, m.outgoing.client_id);
      sqlite3_bind_int64(s, 2, static_cast<sqlite3_int64>(m.outgoing.seq));
      sqlite3_bind_int64(s, 3, static_cast<sqlite3_int64>(m.outgoing.message_id));
      sqlite3_bind_int(s, 4, m.outgoing.qos);
      sqlite3_bind_int(s, 5, m.outgoing.retain ? 1 : 0);
      sqlite3_bind_int(s, 6, m.outgoing.packet_id);
      sqlite3_bind_int(s, 7, static_cast<int>(m.outgoing.state));
      break;
    case K::kRemoveOutgoing:
      bind_text(s, 1, m.outgoing.client_id);
      sqlite3_bind_int64(s, 2, static_cast<sqlite3_int64>(m.outgoing.seq));
      break;
    case K::kPutIncoming:
    case K::kRemoveIncoming:
      bind_text(s, 1, m.incoming.client_id);
      sqlite3_bind_int(s, 2, m.incoming.packet_id);
      break;
    case K::kPutRetained:
      bind_text(s, 1, m.retained.topic);
      bind_blob(s, 2, m.retained.payload);
      sqlite3_bind_int(s, 3, m.retained.qos);
      sqlite3_bind_int64(s, 4, m.retained.expires_at_ms);
      // Replaces the topic's previous message, which may have had properties.
      if (!apply_props(m.retained.props.empty() ? kRemoveRetainedProps : kPutRetainedProps, m))
        return false;
      break;
    case K::kRemoveRetained:
      bind_text(s, 1, m.retained.topic);
      if (!apply_props(kRemoveRetainedProps, m)) return false;
      break;
    case K::kPutWill:
      bind_text(s, 1, m.will.client_id);
      bind_text(s, 2, m.will.topic);
      bind_blob(s, 3, m.will.payload);
      sqlite3_bind_int(s, 4, m.will.qos);
      sqlite3_bind_int(s, 5, m.will.retain ? 1 : 0);
      sqlite3_bind_int64(s, 6, m.will.due_at_ms);
      bind_optional_blob(s, 7, m.will.props);
      bind_optional_int(s, 8, m.will.expiry_interval);
      break;
    case K::kRemoveWill:
      bind_text(s, 1, m.will.client_id);
      break;
  }
  const int rc = sqlite3_step(s);
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  return rc == SQLITE_DONE;
}

bool SqliteJournal::apply_props(size_t which, const Mutation& m) {
  sqlite3_stmt* s = statements_[kStatementCount + kRemoveSessionCount + which];
  switch (which) {
    case kPutMessageProps:
      sqlite3_bind_int64(s, 1, static_cast<sqlite3_int64>(m.message.id));
      bind_blob(s, 2, m.message.props);
      break;
    case kRemoveMessageProps:
      sqlite3_bind_int64(s, 1, static_cast<sqlite3_int64>(m.message.id));
      break;
    case kPutRetainedProps:
      bind_text(s, 1, m.retained.topic);
      bind_blob(s, 2, m.retained.props);
      break;
    default:
      bind_text(s, 1, m.retained.topic);
      break;
  }
  const int rc = sqlite3_step(s);
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  return rc == SQLITE_DONE;
}

uint64_t approx_bytes(const Mutation& m) {
  using K = Mutation::Kind;
  switch (m.kind) {
    case K::kPutSession:
      return kRowBytes + m.session.client_id.size() + m.session.owner.size() +
             m.session.cert_listener.size() + m.session.cert_chain.size();
    case K::kPutSubscription:
      return kRowBytes + m.subscription.client_id.size() + m.subscription.filter.size();
    case K::kPutMessage:
      return message_bytes(m.message.topic, m.message.payload, m.message.props);
    case K::kPutOutgoing:
      return queue_entry_bytes(m.outgoing.client_id);
    case K::kPutIncoming:
      return queue_entry_bytes(m.incoming.client_id);
    case K::kPutRetained:
      return message_bytes(m.retained.topic, m.retained.payload, m.retained.props);
    case K::kPutWill:
      return message_bytes(m.will.topic, m.will.payload, m.will.props) + m.will.client_id.size();
    default:
      return 0;  // a removal frees more than it takes
  }
}

void compact_unwritten(std::vector<Mutation>& changes) {
  struct Row {
    std::vector<size_t> puts;  // since the last removal
    bool created = false;      // its first change here created it: nothing is on disk
  };
  std::unordered_map<std::string, Row> rows;
  std::vector<bool> drop(changes.size(), false);
  for (size_t n = 0; n < changes.size(); ++n) {
    std::string key = row_key(changes[n]);
    if (key.empty()) continue;
    auto [it, fresh] = rows.try_emplace(std::move(key));
    Row& row = it->second;
    if (is_put(changes[n].kind)) {
      if (fresh) row.created = changes[n].creates;
      if (replaces(changes[n].kind)) {
        for (size_t p : row.puts)
          drop[p] = true;  // replaced before it was ever written
        row.puts.clear();
      }
      row.puts.push_back(n);
      continue;
    }
    for (size_t p : row.puts)
      drop[p] = true;                 // removed before it was ever written
    if (row.created) drop[n] = true;  // and nothing older is on disk to remove
    rows.erase(it);
  }
  size_t kept = 0;
  for (size_t n = 0; n < changes.size(); ++n) {
    if (drop[n]) continue;
    if (kept != n) changes[kept] = std::move(changes[n]);  // never onto itself
    ++kept;
  }
  changes.resize(kept);
}

void SqliteJournal::skip_transient(const std::vector<Item>& batch, std::vector<bool>& skip) {
  // A message delivered and acknowledged within one group commit (the common case for
  // online subscribers) is put and removed in the same transaction: its puts need not
  // be written. The removal stays (the row may predate the batch).
  skip.assign(batch.size(), false);
  std::unordered_map<std::string, std::vector<size_t>> puts;
  for (size_t n = 0; n < batch.size(); ++n) {
    if (batch[n].is_barrier) continue;
    std::string key = row_key(batch[n].mutation);
    if (key.empty()) continue;
    if (is_put(batch[n].mutation.kind)) {
      std::vector<size_t>& row = puts[std::move(key)];
      if (replaces(batch[n].mutation.kind)) {
        for (size_t p : row)
          skip[p] = true;
        row.clear();
      }
      row.push_back(n);
      continue;
    }
    auto it = puts.find(key);
    if (it == puts.end()) continue;
    for (size_t p : it->second)
      skip[p] = true;
    puts.erase(it);
  }
}

void SqliteJournal::run() {
  std::vector<bool> skip;
  std::vector<Item> batch, retry;
  bool gave_up = false;
  uint64_t failures = 0, withheld = 0;  // consecutive failed commits, acks they withheld
  auto last_sync = std::chrono::steady_clock::now();
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      writing_ = false;
      flushed_.notify_all();
      // After a failure, wait a second (or for shutdown) before trying again.
      const auto wait = retry.empty() ? std::chrono::milliseconds(options_.flush_interval_ms)
                                      : std::chrono::milliseconds(1000);
      wake_.wait_for(lock, wait, [&] { return (!pending_.empty() && retry.empty()) || stopping_; });
      if (stopping_ && pending_.empty() && (retry.empty() || gave_up)) return;
      if (stopping_) gave_up = true;  // one last try for what failed, then stop
      batch.swap(retry);              // what failed last time goes first, in order
      for (Item& i : pending_)
        batch.push_back(std::move(i));
      pending_.clear();
      writing_ = !batch.empty();
    }
    if (options_.durability == Durability::kBatched &&
        std::chrono::steady_clock::now() - last_sync >=
            std::chrono::milliseconds(options_.flush_interval_ms)) {
      sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
      last_sync = std::chrono::steady_clock::now();
    }
    if (batch.empty()) continue;
    uint64_t batch_bytes = 0;
    if (cap_bytes_ != 0)
      for (const Item& i : batch)
        if (!i.is_barrier) batch_bytes += approx_bytes(i.mutation);
    skip_transient(batch, skip);
    size_t barriers = 0;
    bool ok = sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK;
    for (size_t n = 0; n < batch.size(); ++n) {
      if (batch[n].is_barrier)
        ++barriers;
      else if (ok && !skip[n])
        ok = apply(batch[n].mutation);
    }
    std::string why;
    if (ok) ok = sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK;
    if (!ok) {
      why = sqlite3_errmsg(db_);
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      withheld += barriers;
      // The first failure, then once a minute while it lasts (retries are every second).
      if (failures++ % 60 == 0)
        LOG_ERROR("persistence: cannot write %s (%s); %" PRIu64
                  " acknowledgement%s withheld so far, "
                  "retrying every second",
                  options_.path.c_str(), why.c_str(), withheld, withheld == 1 ? "" : "s");
      // Keep the changes (not the barriers, which fail now) to retry, in order, compacted:
      // while the disk stays full, what waits must not grow with the traffic.
      std::vector<Mutation> unwritten;
      for (Item& i : batch)
        if (!i.is_barrier) unwritten.push_back(std::move(i.mutation));
      compact_unwritten(unwritten);
      for (Mutation& m : unwritten)
        retry.push_back({false, std::move(m)});
    }
    if (cap_bytes_ != 0) {
      // What waits in `retry` is counted again when it is taken (its bytes were counted
      // once by add(): settle the batch, then count the retry).
      uint64_t retry_bytes = 0;
      for (const Item& i : retry)
        retry_bytes += approx_bytes(i.mutation);
      unwritten_bytes_.fetch_sub(batch_bytes, std::memory_order_relaxed);
      unwritten_bytes_.fetch_add(retry_bytes, std::memory_order_relaxed);
      if (ok) measure_used();
    }
    if (ok && failures > 0) {
      LOG_WARN("persistence: writing to %s again after %" PRIu64 " failed attempt%s",
               options_.path.c_str(), failures, failures == 1 ? "" : "s");
      failures = withheld = 0;
    }
    batch.clear();
    if (barriers == 0) continue;
    post_([b = barriers_, barriers, ok] {
      for (size_t n = 0; n < barriers && !b->waiting.empty(); ++n) {
        auto done = std::move(b->waiting.front());
        b->waiting.pop_front();
        done(ok);
      }
    });
  }
}

}  // namespace mqgate::store
