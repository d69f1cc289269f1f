// Errors of the PKI tools: every failure becomes one exception with one line of text.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace mqgate::pki {

// Exit codes of the tools (documented in docs/pki-tools.md).
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;  // a file, the CA, or the crypto library failed
inline constexpr int kExitUsage = 2;    // a missing or invalid option

// A failure the tool reports as `<tool>: error: <what>` before exiting with exit_code().
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what, int exit_code = kExitFailure)
      : std::runtime_error(what), exit_code_(exit_code) {}
  int exit_code() const { return exit_code_; }

 private:
  int exit_code_;
};

// A bad command line: exits with kExitUsage.
class UsageError : public Error {
 public:
  explicit UsageError(const std::string& what) : Error(what, kExitUsage) {}
};

// mbedTLS's text for an error code, e.g. "PK - The pubkey tag or value is invalid".
std::string mbedtls_message(int ret);

// Throws Error("<what>: <mbedTLS message>") if ret is negative.
void check_mbedtls(int ret, std::string_view what);

// The tool's name, as messages start with it ("server_creds: error: ...").
void set_program_name(std::string name);
const std::string& program_name();

// Prints "<tool>: warning: <message>" to stderr.
void warn(const std::string& message);

// strerror(errno) as a string (thread-safe).
std::string errno_message(int err);

}  // namespace mqgate::pki
