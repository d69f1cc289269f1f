// libFuzzer target: Mosquitto password and ACL files (plugins/passwd, plugins/acl).
// The first byte picks the parser; the rest is the file. Neither may crash, leak or read
// out of bounds; an accepted password file must write back what it read; the ACL file's
// filters must satisfy covers => intersects, covers(a, a), symmetric intersects.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "aclfile.h"
#include "pwfile.h"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

void fuzz_pwfile(const char* data, size_t len) {
  char err[PW_ERR_LEN];
  pwfile* f = pwfile_parse("fuzz", data, len, err, sizeof err);
  if (f == nullptr) {
    check(std::strncmp(err, "fuzz", 4) == 0);
    return;
  }
  for (size_t i = 0; i < pwfile_count(f); i++) {
    const pw_hash* h = pwfile_hash(f, i);
    char text[256];
    pw_hash back;
    check(pw_hash_format(h, text, sizeof text) == 0);
    check(pw_hash_parse(text, std::strlen(text), &back, err, sizeof err) == 0);
    check(back.type == h->type && back.iterations == h->iterations &&
          back.salt_len == h->salt_len && !std::memcmp(back.salt, h->salt, h->salt_len) &&
          !std::memcmp(back.hash, h->hash, PW_HASH_BYTES));
    check(pwfile_find(f, pwfile_username(f, i)) == i);
  }
  pwfile_free(f);
}

void fuzz_acl(const char* data, size_t len) {
  char err[ACL_ERR_LEN];
  aclfile* acl = aclfile_parse("fuzz", data, len, err, sizeof err);
  // filters: the input's lines that are valid filters (at most 16)
  std::vector<std::string> filters;
  size_t pos = 0;
  while (pos < len && filters.size() < 16) {
    const char* nl = static_cast<const char*>(std::memchr(data + pos, '\n', len - pos));
    size_t n = nl ? static_cast<size_t>(nl - (data + pos)) : len - pos;
    std::string line(data + pos, n);
    pos += n + 1;
    if (line.size() < 256 && line.find('\0') == std::string::npos &&
        acl_filter_valid(line.c_str()))
      filters.push_back(line);
  }
  for (const auto& a : filters) {
    check(filter_covers(a.c_str(), a.c_str()) == 1);
    for (const auto& b : filters) {
      int c = filter_covers(a.c_str(), b.c_str());
      int i = filter_intersects(a.c_str(), b.c_str());
      check(i == filter_intersects(b.c_str(), a.c_str()));
      if (c) check(i);
    }
  }
  if (acl != nullptr) {
    for (const auto& f : filters) {
      for (const char* user : {static_cast<const char*>(nullptr), "u", "a/b", "+"})
        for (int access : {ACL_READ, ACL_WRITE, ACL_SUBSCRIBE})
          (void)acl_check(acl, user, "cid", "id", f.c_str(), access);
    }
    (void)acl_check(acl, "u", "c", nullptr, "a/b", ACL_READ);
    aclfile_free(acl);
  } else {
    check(std::strncmp(err, "fuzz", 4) == 0);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const char* text = reinterpret_cast<const char*>(data + 1);
  if (data[0] & 1)
    fuzz_acl(text, size - 1);
  else
    fuzz_pwfile(text, size - 1);
  return 0;
}
