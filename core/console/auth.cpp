#include "console/auth.hpp"

#include <mbedtls/base64.h>
#include <sys/random.h>

#include <algorithm>
#include <cstring>

extern "C" {
#include "passwd/pwfile.h"
}

namespace mqgate::console {

const char* role_name(Role role) {
  return role == Role::kAdmin ? "admin" : "read-only";
}

bool load_users(const std::string& path, Users& users, std::string& error) {
  char err[PW_ERR_LEN] = "";
  pwfile* f = pwfile_load(path.c_str(), err, sizeof err);
  if (f == nullptr) {
    error = err;
    return false;
  }
  users.file = std::shared_ptr<const pwfile>(
      f, [](const pwfile* p) { pwfile_free(const_cast<pwfile*>(p)); });
  return true;
}

bool verify_password(const pwfile& file, const std::string& user, const std::string& password) {
  return pwfile_check(&file, user.c_str(), password.data(), password.size()) == 1;
}

bool parse_basic(const std::string& header, std::string& user, std::string& password) {
  static constexpr std::string_view kScheme = "basic ";
  if (header.size() <= kScheme.size() || header.size() > 4096) return false;
  for (size_t i = 0; i < kScheme.size(); ++i)
    if (static_cast<char>(std::tolower(static_cast<unsigned char>(header[i]))) != kScheme[i])
      return false;
  const std::string_view b64 = std::string_view(header).substr(kScheme.size());
  std::string decoded(b64.size(), '\0');
  size_t len = 0;
  if (mbedtls_base64_decode(reinterpret_cast<unsigned char*>(decoded.data()), decoded.size(), &len,
                            reinterpret_cast<const unsigned char*>(b64.data()), b64.size()) != 0)
    return false;
  decoded.resize(len);
  const size_t colon = decoded.find(':');
  if (colon == std::string::npos || colon == 0) return false;
  user = decoded.substr(0, colon);
  password = decoded.substr(colon + 1);
  // Users are names in a password file: no NUL (pwfile_check takes a C string).
  return user.find('\0') == std::string::npos;
}

std::string random_token() {
  unsigned char bytes[32];
  size_t got = 0;
  while (got < sizeof bytes) {
    const ssize_t n = getrandom(bytes + got, sizeof bytes - got, 0);
    if (n > 0) got += static_cast<size_t>(n);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : bytes) {
    out += kHex[b >> 4];
    out += kHex[b & 0xF];
  }
  return out;
}

const LoginSessions::Login& LoginSessions::create(std::string user, Role role, uint64_t now_ms,
                                                  std::string& id) {
  if (sessions_.size() >= kMaxSessions) {
    auto oldest = std::min_element(sessions_.begin(), sessions_.end(), [](auto& a, auto& b) {
      return a.second.used_ms < b.second.used_ms;
    });
    sessions_.erase(oldest);
  }
  id = random_token();
  Login& l = sessions_[id];
  l.user = std::move(user);
  l.role = role;
  l.csrf = random_token();
  l.created_ms = l.used_ms = now_ms;
  return l;
}

const LoginSessions::Login* LoginSessions::find(std::string_view id, uint64_t now_ms) {
  // A map lookup compares the cookie with stored ids; the ids are 256 random bits, so
  // what a comparison's timing could leak is of no use for guessing one.
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return nullptr;
  Login& l = it->second;
  if (now_ms - l.used_ms > kIdleMs || now_ms - l.created_ms > kLifetimeMs) {
    sessions_.erase(it);
    return nullptr;
  }
  l.used_ms = now_ms;
  return &l;
}

}  // namespace mqgate::console
