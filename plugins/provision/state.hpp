// The provision plugin's record of what it issued (docs/provisioning.md): one SQLite
// row per certificate. Used from the worker threads only (never the event loop);
// thread-safe.
#pragma once

#include <sqlite3.h>

#include <ctime>
#include <mutex>
#include <string>
#include <vector>

namespace mqgate::provision {

struct IssueRecord {
  std::string serial, device_id, claim, kind, peer;  // kind: "claim" or "renew"
  std::time_t issued_at = 0, not_after = 0;
};

class StateFile {
 public:
  // Opens (creating) the database; false with `error` set if it cannot.
  bool open(const std::string& path, std::string& error);
  ~StateFile();
  // False with `error` set if the row could not be written.
  bool record(const IssueRecord& r, std::string& error);
  // Single-use tokens (their SHA-256, hex): burnt ones, and burning one.
  bool burnt_tokens(std::vector<std::string>& out, std::string& error);
  bool burn(const std::string& token_hash, const std::string& device_id, std::string& error);

 private:
  std::mutex mu_;
  sqlite3* db_ = nullptr;
};

}  // namespace mqgate::provision
