// One connection's TLS (see TlsSession in tls.hpp).
#include <mbedtls/error.h>
#include <mbedtls/ssl_ciphersuites.h>
#include <mbedtls/x509.h>

#include <algorithm>
#include <cstring>
#include <ctime>

#include "base/log.hpp"
#include "transport/tls/cert_policy.hpp"
#include "transport/tls/compat.hpp"
#include "transport/tls/tls.hpp"

namespace mqgate {

namespace {
std::string raw(const mbedtls_x509_buf& b) {
  return std::string(reinterpret_cast<const char*>(b.p), b.len);
}
// The certificate's notAfter for cert_standing. mbedTLS parses only real dates; were
// this one not, the certificate would count as expired rather than unchecked (0).
int64_t not_after(const mbedtls_x509_crt& crt) {
  return x509_time_to_epoch(crt.valid_to).value_or(INT64_MIN);
}
}  // namespace

// --- TlsSession ---------------------------------------------------------------------------

TlsSession::TlsSession(const std::shared_ptr<const TlsGeneration>* current, size_t worker,
                       TlsWorkers& workers, transport::LayerEvents& events, char* scratch,
                       size_t scratch_size)
    : generation_(*current),
      current_(current),
      worker_(worker),
      workers_(workers),
      events_(events),
      scratch_(scratch),
      scratch_size_(scratch_size) {
  workers_.handshake_started();
  mbedtls_ssl_init(&ssl_);
  if (mbedtls_ssl_setup(&ssl_, generation_->config(worker_)) != 0) set_state(State::kFailed);
  mbedtls_ssl_set_bio(&ssl_, this, bio_send, bio_recv, nullptr);
  mbedtls_ssl_set_verify(&ssl_, verify, this);
}

const char* TlsHandshakeCounts::failure_name(Failure f) {
  switch (f) {
    case kProtocol:
      return "protocol";
    case kCertificate:
      return "certificate";
    case kExpired:
      return "certificate_expired";
    case kRevoked:
      return "certificate_revoked";
    case kFlood:
      return "flood";
    case kAborted:
      return "aborted";
    case kFailureCount:
      break;
  }
  return "?";
}

void TlsSession::count_success() {
  if (counted_) return;
  counted_ = true;
  TlsHandshakeCounts& c = generation_->counts();
  (resumed_ ? c.resumed : c.full)++;
}

void TlsSession::count_failure(TlsHandshakeCounts::Failure why) {
  if (counted_) return;
  counted_ = true;
  generation_->counts().failed[why]++;
}

TlsSession::~TlsSession() {
  if (state_ == State::kHandshake) {
    count_failure(TlsHandshakeCounts::kAborted);  // unless flooded (counted then)
    workers_.handshake_ended();
  }
  mbedtls_ssl_free(&ssl_);
}

void TlsSession::set_state(State state) {
  if (state_ == State::kHandshake && state != State::kHandshake) workers_.handshake_ended();
  state_ = state;
}

int TlsSession::bio_send(void* ctx, const unsigned char* buf, size_t len) {
  static_cast<TlsSession*>(ctx)->cipher_out_.append(reinterpret_cast<const char*>(buf), len);
  return static_cast<int>(len);
}

int TlsSession::bio_recv(void* ctx, unsigned char* buf, size_t len) {
  auto* self = static_cast<TlsSession*>(ctx);
  const size_t available = self->cipher_in_.size() - self->in_pos_;
  if (available == 0) return MBEDTLS_ERR_SSL_WANT_READ;
  const size_t n = std::min(len, available);
  std::memcpy(buf, self->cipher_in_.data() + self->in_pos_, n);
  self->in_pos_ += n;
  if (self->in_pos_ == self->cipher_in_.size()) {
    self->cipher_in_.clear();
    self->in_pos_ = 0;
  }
  return static_cast<int>(n);
}

int TlsSession::verify(void* ctx, mbedtls_x509_crt* crt, int depth, uint32_t* flags) {
  auto* self = static_cast<TlsSession*>(ctx);
  // A stale CRL still refuses what it lists, but must not lock every client out: the
  // broker logs it loudly instead (see TlsGeneration::load and the tick check).
  *flags &= ~static_cast<uint32_t>(MBEDTLS_X509_BADCRL_EXPIRED | MBEDTLS_X509_BADCRL_FUTURE);
  if (depth >= 0 && depth < 16) {
    if (self->verified_chain_.size() <= static_cast<size_t>(depth))
      self->verified_chain_.resize(static_cast<size_t>(depth) + 1);
    self->verified_chain_[static_cast<size_t>(depth)] = raw(crt->raw);
  }
  if (*flags != 0) {
    char info[256];
    mbedtls_x509_crt_verify_info(info, sizeof info, "", *flags);
    for (char* p = info; *p; ++p)
      if (*p == '\n') *p = ';';
    self->cert_failure_ = (*flags & MBEDTLS_X509_BADCERT_REVOKED) ? TlsHandshakeCounts::kRevoked
                          : (*flags & (MBEDTLS_X509_BADCERT_EXPIRED | MBEDTLS_X509_BADCERT_FUTURE))
                              ? TlsHandshakeCounts::kExpired
                              : TlsHandshakeCounts::kCertificate;
    self->verify_error_ = "certificate at depth " + std::to_string(depth) + " (" + x509_subject(*crt) +
                          ") rejected: " + info;
    // Not MBEDTLS_ERR_X509_CERT_VERIFY_FAILED: with client_cert = "optional" mbedTLS would
    // ignore that. A certificate that is presented must be valid.
    return MBEDTLS_ERR_X509_FATAL_ERROR;
  }
  return 0;
}

void TlsSession::start_job() {
  job_in_flight_ = true;
  workers_.submit(this);
}

bool TlsSession::drop_queued_work() {
  if (!job_in_flight_ || !workers_.cancel(this)) return false;
  job_in_flight_ = false;
  std::string().swap(pending_in_);
  return true;
}

void TlsSession::run_job() {
  job_result_ = mbedtls_ssl_handshake(&ssl_);
}

void TlsSession::finish_job() {
  job_in_flight_ = false;
  if (on_dead_) {
    auto on_dead = std::move(on_dead_);
    delete this;
    on_dead();
    return;
  }
  if (job_result_ == 0) {
    unsigned char alert = 0;
    const std::string refused = check_completed(alert);
    if (!refused.empty()) {
      count_failure(alert == MBEDTLS_SSL_ALERT_MSG_CERT_EXPIRED ? TlsHandshakeCounts::kExpired
                    : alert == MBEDTLS_SSL_ALERT_MSG_CERT_REVOKED
                        ? TlsHandshakeCounts::kRevoked
                        : TlsHandshakeCounts::kCertificate);
      set_state(State::kFailed);
      // The client has finished its side: tell it why before the connection closes.
      mbedtls_ssl_send_alert_message(&ssl_, MBEDTLS_SSL_ALERT_LEVEL_FATAL, alert);
      events_.on_layer_ready(*this, refused);
      return;
    }
    count_success();
    set_state(State::kEstablished);
    // Bytes that arrived during the job are application data now.
    cipher_in_.append(pending_in_);
    std::string().swap(pending_in_);
    events_.on_layer_ready(*this, "");
    return;
  }
  if (job_result_ == MBEDTLS_ERR_SSL_WANT_READ) {
    if (tls_compat::handshake_resuming(ssl_)) resumed_ = true;
    if (!events_.on_layer_output(*this)) return;  // flushed; the connection may be closing
    if (!pending_in_.empty()) {
      cipher_in_.append(pending_in_);
      pending_in_.clear();
      start_job();
    }
    return;
  }
  count_failure(verify_error_.empty() ? TlsHandshakeCounts::kProtocol
                                      : static_cast<TlsHandshakeCounts::Failure>(cert_failure_));
  set_state(State::kFailed);
  std::string why = tls_error_text(job_result_);
  if (!verify_error_.empty()) why = verify_error_;
  events_.on_layer_ready(*this, "TLS handshake failed: " + why);
}

std::string TlsSession::check_completed(unsigned char& alert) const {
  const mbedtls_x509_crt* peer = mbedtls_ssl_get_peer_cert(&ssl_);
  if (peer == nullptr) return "";
  // With client_cert = "optional" (mbedTLS's VERIFY_OPTIONAL) mbedTLS checks keyUsage,
  // extendedKeyUsage and nsCertType after our verify callback, and only records a
  // certificate not meant for client authentication in the verify result. "Optional"
  // means a client may send no certificate, not a wrong one: refuse it as "required"
  // would. Resumed sessions carry the result of their full handshake.
  if (generation_->settings().client_cert != TlsConfig::ClientCert::kNone) {
    if (const uint32_t flags = mbedtls_ssl_get_verify_result(&ssl_); flags != 0) {
      char info[256];
      mbedtls_x509_crt_verify_info(info, sizeof info, "", flags);
      for (char* p = info; *p; ++p)
        if (*p == '\n') *p = ';';
      alert = MBEDTLS_SSL_ALERT_MSG_UNSUPPORTED_CERT;
      return "TLS handshake failed: client certificate (" + x509_subject(*peer) +
             ") rejected: " + info;
    }
  }
  const bool resumed = verified_chain_.empty();  // resumption skips the verify callback
  // The CRL in force now, which a SIGHUP may have replaced during the handshake (the
  // handshake verified against the generation it started with). Resumed sessions skip
  // verification altogether, dates included.
  const TlsGeneration& current = *current_ ? **current_ : *generation_;
  switch (cert_standing(&current, raw(peer->issuer_raw), raw(peer->serial), not_after(*peer),
                        static_cast<int64_t>(time(nullptr)))) {
    case CertStanding::kValid:
      return "";
    case CertStanding::kExpired:
      alert = MBEDTLS_SSL_ALERT_MSG_CERT_EXPIRED;
      return resumed ? "resumed session's client certificate has expired"
                     : "TLS handshake failed: client certificate (" + x509_subject(*peer) +
                           ") has expired";
    case CertStanding::kRevoked:
      alert = MBEDTLS_SSL_ALERT_MSG_CERT_REVOKED;
      if (resumed) return "resumed session's client certificate is revoked";
      return "TLS handshake failed: client certificate (" + x509_subject(*peer) +
             ") is revoked by " +
             (&current != generation_.get() ? "the CRL reloaded during the handshake" : "the CRL");
  }
  return "";
}

bool TlsSession::input(std::string_view ciphertext, transport::Receiver& up, std::string& error) {
  if (state_ == State::kFailed) {
    error = "TLS session failed";
    return false;
  }
  if (state_ == State::kHandshake) {
    handshake_bytes_ += static_cast<uint32_t>(ciphertext.size());  // reads are <= 64 KiB
    if (handshake_bytes_ > kMaxHandshakeBytes) {
      error = "TLS handshake flooded: the client sent " + std::to_string(handshake_bytes_) +
              " bytes before its handshake completed, more than the " +
              std::to_string(kMaxHandshakeBytes >> 10) + " KiB a handshake needs";
      count_failure(TlsHandshakeCounts::kFlood);
      std::string().swap(pending_in_);
      return false;
    }
    if (job_in_flight_) {
      pending_in_.append(ciphertext);
    } else {
      cipher_in_.append(ciphertext);
      start_job();
    }
    return true;
  }
  cipher_in_.append(ciphertext);
  trimmed_ = false;
  for (;;) {
    const int n =
        mbedtls_ssl_read(&ssl_, reinterpret_cast<unsigned char*>(scratch_), scratch_size_);
    if (n > 0) {
      if (!up.on_bytes(std::string_view(scratch_, static_cast<size_t>(n)))) return true;
      continue;
    }
    if (n == MBEDTLS_ERR_SSL_WANT_READ) break;
    if (n == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || n == 0) {
      error = "TLS close_notify from the client";
      return false;
    }
    error = "TLS record error: " + tls_error_text(n);
    return false;
  }
  if (cipher_in_.empty() && cipher_in_.capacity() > 4096) std::string().swap(cipher_in_);
  return true;
}

bool TlsSession::send(std::string& plain, std::string& error) {
  trimmed_ = false;
  size_t done = 0;
  while (done < plain.size()) {
    const int n = mbedtls_ssl_write(
        &ssl_, reinterpret_cast<const unsigned char*>(plain.data() + done), plain.size() - done);
    if (n < 0) {
      error = "TLS write error: " + tls_error_text(n);
      plain.clear();
      return false;
    }
    done += static_cast<size_t>(n);
  }
  plain.clear();
  return true;
}

void TlsSession::shutdown() {
  if (state_ == State::kEstablished && !job_in_flight_) mbedtls_ssl_close_notify(&ssl_);
}

void TlsSession::release_idle_buffers(bool long_idle) {
  if (job_in_flight_) return;  // a worker owns the buffers
  if (cipher_out_.empty()) std::string().swap(cipher_out_);
  if (cipher_in_.empty()) std::string().swap(cipher_in_);
  if (pending_in_.empty()) std::string().swap(pending_in_);
  // mbedTLS 2.28 keeps two fixed ~16.7 KiB record buffers per connection (Debian's
  // build has no MBEDTLS_SSL_VARIABLE_BUFFER_LENGTH). Between records their content is
  // dead: with nothing buffered in either direction, their pages go back to the kernel.
  if (!long_idle || state_ != State::kEstablished || trimmed_) return;
  if (!tls_compat::records_idle(ssl_)) return;
  tls_compat::release_record_pages(ssl_);
  trimmed_ = true;
}

std::unique_ptr<TlsPeerInfo> TlsSession::take_peer_info() {
  auto info = std::make_unique<TlsPeerInfo>();
  info->version = mbedtls_ssl_get_version(&ssl_);
  info->cipher = mbedtls_ssl_get_ciphersuite(&ssl_);
  if (!verified_chain_.empty()) {
    info->chain_der = std::move(verified_chain_);
    verified_chain_.clear();
  } else if (const mbedtls_x509_crt* peer = mbedtls_ssl_get_peer_cert(&ssl_)) {
    info->chain_der.push_back(raw(peer->raw));  // a resumed session keeps only the leaf
  }
  for (const auto& der : info->chain_der)
    info->chain.push_back({reinterpret_cast<const uint8_t*>(der.data()), der.size()});
  if (const mbedtls_x509_crt* peer = mbedtls_ssl_get_peer_cert(&ssl_)) {
    info->issuer_raw = raw(peer->issuer_raw);
    info->serial_raw = raw(peer->serial);
    info->not_after = not_after(*peer);
  }
  return info;
}

void TlsSession::abandon(std::function<void()> on_dead) {
  if (job_in_flight_ && workers_.cancel(this)) {  // never started: nothing to wait for
    delete this;
    on_dead();
    return;
  }
  on_dead_ = std::move(on_dead);
}

}  // namespace mqgate
