// Session-ticket keys that outlive the process, so devices resume their TLS sessions
// after a broker restart instead of all doing full handshakes at once.
//
// One small file per TLS listener, next to the persistence store, mode 0600: the key
// tickets are issued with (current) and the one before it (previous, still accepted).
// The current key is replaced once it is older than the ticket lifetime: at start-up
// if it already is, and later when mbedTLS rotates (on a handshake thread, never on
// the event loop), each new key being saved before it is used.
#pragma once

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/ssl_ticket.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

namespace mqgate {

class TicketKeyFile {
 public:
  static constexpr size_t kNameBytes = 4;
  static constexpr size_t kKeyBytes = kNameBytes + 32;  // mbedTLS draws a key name, then the key

  // Reads the keys in `path` (making or rotating them as needed, and saving). A missing,
  // damaged or unwritable file is not fatal: tickets then work as without it, and the
  // problem is logged.
  static std::unique_ptr<TicketKeyFile> open(const std::string& path, uint32_t lifetime_s,
                                             mbedtls_entropy_context* entropy, std::string& error);
  ~TicketKeyFile();
  TicketKeyFile(const TicketKeyFile&) = delete;
  TicketKeyFile& operator=(const TicketKeyFile&) = delete;

  // Sets up `ticket` with the saved keys (current active, previous accepted) and leaves
  // this object as its generator, so a rotation's new key is saved.
  int setup(mbedtls_ssl_ticket_context& ticket, uint32_t lifetime_s);

 private:
  TicketKeyFile() = default;
  static int rng(void* self, unsigned char* out, size_t len);
  bool save(std::string& error);

  std::mutex mu_;
  std::string path_;
  int64_t created_ = 0;  // when `current_` was made (seconds since the epoch)
  unsigned char current_[kKeyBytes] = {};
  unsigned char previous_[kKeyBytes] = {};
  unsigned char replay_[2 * kKeyBytes] = {};  // what setup() hands mbedTLS
  size_t replay_left_ = 0;
  unsigned char fresh_[kKeyBytes] = {};  // a rotation's key, as mbedTLS draws it
  size_t fresh_len_ = 0;
  mbedtls_ctr_drbg_context drbg_;
};

}  // namespace mqgate
