#include "state.hpp"

namespace mqgate::provision {

bool StateFile::open(const std::string& path, std::string& error) {
  if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
      SQLITE_OK) {
    error = "'" + path + "': " + (db_ ? sqlite3_errmsg(db_) : "cannot open");
    return false;
  }
  sqlite3_busy_timeout(db_, 2000);
  char* msg = nullptr;
  if (sqlite3_exec(db_,
                   "CREATE TABLE IF NOT EXISTS issued (serial TEXT PRIMARY KEY, device_id TEXT "
                   "NOT NULL, issued_at INTEGER NOT NULL, not_after INTEGER NOT NULL, claim TEXT "
                   "NOT NULL, kind TEXT NOT NULL, peer TEXT NOT NULL); CREATE TABLE IF NOT "
                   "EXISTS burnt (token_sha256 TEXT PRIMARY KEY, device_id TEXT NOT NULL, "
                   "burnt_at INTEGER NOT NULL)",
                   nullptr, nullptr, &msg) != SQLITE_OK) {
    error = "'" + path + "': " + (msg ? msg : "cannot create the table");
    sqlite3_free(msg);
    return false;
  }
  return true;
}

StateFile::~StateFile() {
  if (db_) sqlite3_close(db_);
}

bool StateFile::record(const IssueRecord& r, std::string& error) {
  std::lock_guard<std::mutex> lock(mu_);
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db_, "INSERT INTO issued VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)", -1, &st,
                         nullptr) != SQLITE_OK) {
    error = sqlite3_errmsg(db_);
    return false;
  }
  sqlite3_bind_text(st, 1, r.serial.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 2, r.device_id.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(st, 3, r.issued_at);
  sqlite3_bind_int64(st, 4, r.not_after);
  sqlite3_bind_text(st, 5, r.claim.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 6, r.kind.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 7, r.peer.c_str(), -1, SQLITE_TRANSIENT);
  const bool ok = sqlite3_step(st) == SQLITE_DONE;
  if (!ok) error = sqlite3_errmsg(db_);
  sqlite3_finalize(st);
  return ok;
}

bool StateFile::burnt_tokens(std::vector<std::string>& out, std::string& error) {
  std::lock_guard<std::mutex> lock(mu_);
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db_, "SELECT token_sha256 FROM burnt", -1, &st, nullptr) != SQLITE_OK) {
    error = sqlite3_errmsg(db_);
    return false;
  }
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW)
    out.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)));
  if (rc != SQLITE_DONE) error = sqlite3_errmsg(db_);
  sqlite3_finalize(st);
  return rc == SQLITE_DONE;
}

bool StateFile::burn(const std::string& hash, const std::string& device_id, std::string& error) {
  std::lock_guard<std::mutex> lock(mu_);
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db_, "INSERT INTO burnt VALUES (?1, ?2, strftime('%s','now'))", -1, &st,
                         nullptr) != SQLITE_OK) {
    error = sqlite3_errmsg(db_);
    return false;
  }
  sqlite3_bind_text(st, 1, hash.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 2, device_id.c_str(), -1, SQLITE_TRANSIENT);
  const bool ok = sqlite3_step(st) == SQLITE_DONE;
  if (!ok) error = sqlite3_errmsg(db_);
  sqlite3_finalize(st);
  return ok;
}

}  // namespace mqgate::provision
