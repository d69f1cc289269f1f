#include "console/auth.hpp"

#include <mbedtls/asn1.h>
#include <mbedtls/base64.h>
#include <mbedtls/oid.h>
#include <mbedtls/sha256.h>
#include <mbedtls/x509_crt.h>
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

namespace {

std::string hex32(const unsigned char (&bytes)[32]) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : bytes) {
    out += kHex[b >> 4];
    out += kHex[b & 0xF];
  }
  return out;
}

}  // namespace

std::string random_token() {
  unsigned char bytes[32];
  size_t got = 0;
  while (got < sizeof bytes) {
    const ssize_t n = getrandom(bytes + got, sizeof bytes - got, 0);
    if (n > 0) got += static_cast<size_t>(n);
  }
  return hex32(bytes);
}

bool certificate_identities(const std::string& der, std::vector<std::string>& ids,
                            std::string& subject) {
  mbedtls_x509_crt crt;
  mbedtls_x509_crt_init(&crt);
  const bool ok = mbedtls_x509_crt_parse_der(
                      &crt, reinterpret_cast<const unsigned char*>(der.data()), der.size()) == 0;
  if (ok) {
    char dn[512];
    subject = mbedtls_x509_dn_gets(dn, sizeof dn, &crt.subject) >= 0 ? dn : "?";
    for (const mbedtls_x509_name* n = &crt.subject; n != nullptr; n = n->next)
      if (n->oid.p != nullptr && MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &n->oid) == 0)
        ids.push_back("cn:" + std::string(reinterpret_cast<const char*>(n->val.p), n->val.len));
    for (const mbedtls_x509_sequence* san = &crt.subject_alt_names; san != nullptr;
         san = san->next) {
      const int tag = san->buf.tag;
      if (san->buf.p == nullptr) continue;
      const std::string value(reinterpret_cast<const char*>(san->buf.p), san->buf.len);
      if (tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_X509_SAN_DNS_NAME))
        ids.push_back("dns:" + value);
      else if (tag ==
               (MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_X509_SAN_UNIFORM_RESOURCE_IDENTIFIER))
        ids.push_back("uri:" + value);
    }
  }
  mbedtls_x509_crt_free(&crt);
  return ok;
}

std::optional<Role> CertRoles::role_of(const std::vector<std::string>& ids,
                                       std::string& matched) const {
  for (const auto* list : {&admins, &readers})
    for (const std::string& id : ids)
      if (list->count(id)) {
        matched = id;
        return list == &admins ? Role::kAdmin : Role::kReadOnly;
      }
  return std::nullopt;
}

std::string certificate_fingerprint(const std::string& der) {
  unsigned char hash[32];
  mbedtls_sha256_ret(reinterpret_cast<const unsigned char*>(der.data()), der.size(), hash, 0);
  return hex32(hash);
}

const LoginSessions::Login& LoginSessions::create(std::string user, bool by_certificate, Role role,
                                                  uint64_t now_ms, std::string& id,
                                                  std::string fingerprint) {
  auto oldest_own = sessions_.end();
  size_t own = 0;
  for (auto it = sessions_.begin(); it != sessions_.end(); ++it)
    if (it->second.user == user && it->second.by_certificate == by_certificate) {
      ++own;
      if (oldest_own == sessions_.end() || it->second.used_ms < oldest_own->second.used_ms)
        oldest_own = it;
    }
  if (own >= kMaxPerIdentity) sessions_.erase(oldest_own);
  if (sessions_.size() >= kMaxSessions) {
    auto oldest = std::min_element(sessions_.begin(), sessions_.end(), [](auto& a, auto& b) {
      return a.second.used_ms < b.second.used_ms;
    });
    sessions_.erase(oldest);
  }
  id = random_token();
  Login& l = sessions_[id];
  l.user = std::move(user);
  l.by_certificate = by_certificate;
  l.fingerprint = std::move(fingerprint);
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
