// Who may use the console: the [http] bearer token (admin, for scripts), and users of a
// Mosquitto password file (plugins/passwd/pwfile) who log in from a browser and get a
// session cookie and a CSRF token. Admins (http.console_admins) may act; the others read.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

struct pwfile;

namespace mqgate::console {

enum class Role : uint8_t { kReadOnly, kAdmin };
const char* role_name(Role role);

// The password file, shared with the threads that verify passwords (never changed
// once loaded: a reload makes a new one).
struct Users {
  std::shared_ptr<const pwfile> file;  // null: no users, the token only
  std::set<std::string, std::less<>> admins;
  Role role_of(std::string_view user) const {
    return admins.count(user) ? Role::kAdmin : Role::kReadOnly;
  }
};
// Loads the password file (at start-up and on SIGHUP, before the loop serves). False with
// `error` ("<file>:<line>: <what>") if it cannot be read or parsed.
bool load_users(const std::string& path, Users& users, std::string& error);
// Off the loop: whether `password` is `user`'s (an unknown user costs a dummy check).
bool verify_password(const pwfile& file, const std::string& user, const std::string& password);

// Logins with a client certificate (verified by [http]'s TLS against its cafile): its
// identities are typed, so that a device's CN cannot pass for an operator's URI:
// "cn:<subject CN>", then "dns:<subjectAltName DNS name>" and "uri:<subjectAltName URI>"
// for each, in that order. `subject` gets the subject DN (for the log). False if the DER
// does not parse.
bool certificate_identities(const std::string& der, std::vector<std::string>& ids,
                            std::string& subject);
// Which identities log in with a certificate, as what (http.console_cert_admins/readers).
struct CertRoles {
  std::set<std::string, std::less<>> admins, readers;
  bool empty() const { return admins.empty() && readers.empty(); }
  // The role of the first identity listed (admins first) and which one it was; nullopt
  // if none is.
  std::optional<Role> role_of(const std::vector<std::string>& ids, std::string& matched) const;
};

// "user:password" from "Basic <base64>"; false if the header is not that.
bool parse_basic(const std::string& header, std::string& user, std::string& password);

// SHA-256 of a certificate's DER, in hex: what a certificate login is tied to.
std::string certificate_fingerprint(const std::string& der);

// Browser logins: a random session id (the cookie) and CSRF token per login. Bounded:
// at most kMaxSessions (the oldest goes), at most kMaxPerIdentity of one user or
// certificate identity (its oldest goes: one stolen password cannot push everyone else
// out), each idle at most kIdleMs, at most kLifetimeMs.
class LoginSessions {
 public:
  static constexpr size_t kMaxSessions = 256;
  static constexpr size_t kMaxPerIdentity = 16;
  static constexpr uint64_t kIdleMs = 30 * 60 * 1000;
  static constexpr uint64_t kLifetimeMs = 12 * 3600 * 1000;
  struct Login {
    std::string user;  // a password file's user, or a certificate's identity
    bool by_certificate = false;
    std::string fingerprint;  // a certificate login's certificate_fingerprint()
    Role role = Role::kReadOnly;
    std::string csrf;
    uint64_t created_ms = 0;
    uint64_t used_ms = 0;
  };
  // A new session; `id` gets the cookie value.
  const Login& create(std::string user, bool by_certificate, Role role, uint64_t now_ms,
                      std::string& id, std::string fingerprint = {});
  // The live session of cookie value `id` (its idle time restarts), or null.
  const Login* find(std::string_view id, uint64_t now_ms);
  void remove(std::string_view id) { sessions_.erase(std::string(id)); }
  size_t size() const { return sessions_.size(); }

 private:
  std::map<std::string, Login, std::less<>> sessions_;
};

// 32 random bytes in hex (getrandom).
std::string random_token();

}  // namespace mqgate::console
