#include "transport/tls/ticket_keys.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include "base/log.hpp"
#include "transport/tls/compat.hpp"

#include <mbedtls/version.h>

// The draw sizes rng() tells apart are mbedTLS 2.28's (ssl_ticket.c): review on upgrade.
#if MBEDTLS_VERSION_NUMBER < 0x021C0000 || MBEDTLS_VERSION_NUMBER >= 0x021D0000
#error "tls_ticket_keys.cpp relies on how mbedTLS 2.28 draws ticket keys: review it"
#endif

namespace mqgate {

namespace {
constexpr char kMagic[8] = {'M', 'Q', 'G', 'T', 'K', 'E', 'Y', '1'};
constexpr size_t kFileBytes = sizeof kMagic + 8 + 2 * TicketKeyFile::kKeyBytes;
}  // namespace

std::unique_ptr<TicketKeyFile> TicketKeyFile::open(const std::string& path, uint32_t lifetime_s,
                                                   mbedtls_entropy_context* entropy,
                                                   std::string& error) {
  std::unique_ptr<TicketKeyFile> k(new TicketKeyFile);
  k->path_ = path;
  mbedtls_ctr_drbg_init(&k->drbg_);
  const char* personal = "mqgate ticket keys";
  if (mbedtls_ctr_drbg_seed(&k->drbg_, mbedtls_entropy_func, entropy,
                            reinterpret_cast<const unsigned char*>(personal),
                            strlen(personal)) != 0) {
    error = "cannot seed the random generator for session-ticket keys";
    return nullptr;
  }
  const int64_t now = static_cast<int64_t>(time(nullptr));
  bool loaded = false, rewrite = false;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd >= 0) {
    unsigned char buf[kFileBytes + 1];
    struct stat st;
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (fstat(fd, &st) == 0 && (st.st_mode & 077) != 0) {
      LOG_WARN(
          "%s: session-ticket keys were readable by others (mode %03o); replaced by new keys "
          "with mode 0600",
          path.c_str(), static_cast<unsigned>(st.st_mode & 0777));
    } else if (n == static_cast<ssize_t>(kFileBytes) && memcmp(buf, kMagic, sizeof kMagic) == 0) {
      memcpy(&k->created_, buf + sizeof kMagic, 8);
      memcpy(k->current_, buf + sizeof kMagic + 8, kKeyBytes);
      memcpy(k->previous_, buf + sizeof kMagic + 8 + kKeyBytes, kKeyBytes);
      loaded = true;
    } else {
      LOG_WARN(
          "%s: not a session-ticket key file (%zd bytes); replaced by new keys: clients "
          "resuming with older tickets do a full handshake once",
          path.c_str(), n);
    }
    ::close(fd);
  } else if (errno != ENOENT) {
    LOG_WARN("%s: cannot read session-ticket keys: %s; new keys are made", path.c_str(),
             strerror(errno));
  }
  auto fresh_key = [&](unsigned char* out) {
    return mbedtls_ctr_drbg_random(&k->drbg_, out, kKeyBytes) == 0;
  };
  if (!loaded) {
    if (!fresh_key(k->current_) || !fresh_key(k->previous_)) {
      error = "cannot make session-ticket keys";
      return nullptr;
    }
    k->created_ = now;
    rewrite = true;
  } else if (now - k->created_ >= lifetime_s || k->created_ > now + 60) {
    // Old enough to rotate (or from the future: a clock set back).
    memcpy(k->previous_, k->current_, kKeyBytes);
    if (!fresh_key(k->current_)) {
      error = "cannot make session-ticket keys";
      return nullptr;
    }
    k->created_ = now;
    rewrite = true;
  }
  if (rewrite) {
    std::string why;
    if (!k->save(why))
      LOG_ERROR("%s: %s; TLS sessions will not resume after a restart", path.c_str(), why.c_str());
  }
  return k;
}

TicketKeyFile::~TicketKeyFile() {
  mbedtls_ctr_drbg_free(&drbg_);
}

bool TicketKeyFile::save(std::string& error) {
  unsigned char buf[kFileBytes];
  memcpy(buf, kMagic, sizeof kMagic);
  memcpy(buf + sizeof kMagic, &created_, 8);
  memcpy(buf + sizeof kMagic + 8, current_, kKeyBytes);
  memcpy(buf + sizeof kMagic + 8 + kKeyBytes, previous_, kKeyBytes);
  // Written aside and renamed over: a crash leaves the old keys or the new, never half.
  const std::string tmp = path_ + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    error = "cannot write session-ticket keys to " + tmp + ": " + strerror(errno);
    return false;
  }
  const bool ok = fchmod(fd, 0600) == 0 &&
                  ::write(fd, buf, sizeof buf) == static_cast<ssize_t>(sizeof buf) &&
                  fsync(fd) == 0;
  const int saved_errno = errno;
  ::close(fd);
  mbedtls_platform_zeroize(buf, sizeof buf);
  if (!ok || rename(tmp.c_str(), path_.c_str()) != 0) {
    error =
        "cannot write session-ticket keys to " + path_ + ": " + strerror(ok ? errno : saved_errno);
    unlink(tmp.c_str());
    return false;
  }
  return true;
}

int TicketKeyFile::setup(mbedtls_ssl_ticket_context& ticket, uint32_t lifetime_s) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    // mbedTLS makes key 0 (the active one), then key 1, each as name then key bytes.
    memcpy(replay_, current_, kKeyBytes);
    memcpy(replay_ + kKeyBytes, previous_, kKeyBytes);
    replay_left_ = sizeof replay_;
  }
  const int rc =
      mbedtls_ssl_ticket_setup(&ticket, rng, this, MBEDTLS_CIPHER_AES_256_GCM, lifetime_s);
  if (rc == 0) tls_compat::set_ticket_key_time(ticket, 0, static_cast<uint32_t>(created_));
  std::lock_guard<std::mutex> lock(mu_);
  mbedtls_platform_zeroize(replay_, sizeof replay_);
  replay_left_ = 0;
  return rc;
}

int TicketKeyFile::rng(void* self, unsigned char* out, size_t len) {
  auto* k = static_cast<TicketKeyFile*>(self);
  std::lock_guard<std::mutex> lock(k->mu_);
  if (k->replay_left_ > 0) {
    if (len > k->replay_left_) return MBEDTLS_ERR_CTR_DRBG_ENTROPY_SOURCE_FAILED;
    memcpy(out, k->replay_ + sizeof k->replay_ - k->replay_left_, len);
    k->replay_left_ -= len;
    return 0;
  }
  const int rc = mbedtls_ctr_drbg_random(&k->drbg_, out, len);
  if (rc != 0) return rc;
  // mbedTLS 2.28 also draws each ticket's 12-byte IV here. A rotation draws a 4-byte key
  // name, then the 32-byte key: only that pair is a new key, saved as the current one.
  if (len == kNameBytes) {
    memcpy(k->fresh_, out, len);
    k->fresh_len_ = len;
    return 0;
  }
  if (len != kKeyBytes - kNameBytes || k->fresh_len_ != kNameBytes) {
    k->fresh_len_ = 0;
    return 0;
  }
  memcpy(k->previous_, k->current_, kKeyBytes);
  memcpy(k->current_, k->fresh_, kNameBytes);
  memcpy(k->current_ + kNameBytes, out, len);
  k->fresh_len_ = 0;
  k->created_ = static_cast<int64_t>(time(nullptr));
  std::string why;
  if (!k->save(why))
    LOG_ERROR("%s", why.c_str());
  else
    LOG_INFO("%s: session-ticket key rotated", k->path_.c_str());
  return 0;
}

}  // namespace mqgate
