#include "error.hpp"

#include <mbedtls/error.h>

#include <cstdio>
#include <cstring>

namespace mqgate::pki {

std::string mbedtls_message(int ret) {
  char buf[256];
  mbedtls_strerror(ret, buf, sizeof buf);
  return buf;
}

void check_mbedtls(int ret, std::string_view what) {
  if (ret < 0) throw Error(std::string(what) + ": " + mbedtls_message(ret));
}

namespace {
std::string& name_storage() {
  static std::string name = "pki";
  return name;
}
}  // namespace

void set_program_name(std::string name) {
  name_storage() = std::move(name);
}

const std::string& program_name() {
  return name_storage();
}

void warn(const std::string& message) {
  std::fprintf(stderr, "%s: warning: %s\n", program_name().c_str(), message.c_str());
}

std::string errno_message(int err) {
  char buf[256];
  // GNU strerror_r returns the message, which may or may not live in buf.
  return strerror_r(err, buf, sizeof buf);
}

}  // namespace mqgate::pki
