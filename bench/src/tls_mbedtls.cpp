// The mbedTLS client: custom BIO callbacks over the session's in/out buffers.
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include <cstring>
#include <stdexcept>

#include "tls.hpp"

namespace mqgate::bench::tls {
namespace {

std::string mbed_error(int code) {
  char b[160];
  mbedtls_strerror(code, b, sizeof b);
  return b;
}

class MbedSaved final : public SavedSession {
 public:
  MbedSaved() { mbedtls_ssl_session_init(&session); }
  ~MbedSaved() override { mbedtls_ssl_session_free(&session); }
  mbedtls_ssl_session session;
};

class MbedSession final : public Session {
 public:
  MbedSession(const mbedtls_ssl_config& conf, const std::string& servername,
              const SavedSession* resume) {
    mbedtls_ssl_init(&ssl_);
    int rc = mbedtls_ssl_setup(&ssl_, &conf);
    if (rc == 0 && !servername.empty()) rc = mbedtls_ssl_set_hostname(&ssl_, servername.c_str());
    if (rc == 0 && resume)
      rc = mbedtls_ssl_set_session(&ssl_, &static_cast<const MbedSaved*>(resume)->session);
    if (rc != 0) last_error_ = rc;
    mbedtls_ssl_set_bio(&ssl_, this, on_send, on_recv, nullptr);
  }
  ~MbedSession() override { mbedtls_ssl_free(&ssl_); }

  void feed(std::string_view data) override {
    if (in_offset_ == in_.size()) {
      in_.clear();
      in_offset_ = 0;
    }
    in_.append(data);
  }

  Status handshake() override {
    if (last_error_ != 0) return Status::kError;
    while (ssl_.state != MBEDTLS_SSL_HANDSHAKE_OVER) {
      const int rc = mbedtls_ssl_handshake_step(&ssl_);
      // A full handshake goes through the server's Certificate; a resumed one does not.
      if (ssl_.state == MBEDTLS_SSL_SERVER_CERTIFICATE) full_handshake_ = true;
      if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE)
        return Status::kWantRead;
      if (rc != 0) {
        last_error_ = rc;
        return Status::kError;
      }
    }
    return Status::kDone;
  }

  bool write(std::string_view data) override {
    const auto* p = reinterpret_cast<const unsigned char*>(data.data());
    size_t left = data.size();
    while (left > 0) {
      const int rc = mbedtls_ssl_write(&ssl_, p, left);
      if (rc <= 0) {
        last_error_ = rc;
        return false;
      }
      p += rc;
      left -= static_cast<size_t>(rc);
    }
    return true;
  }

  Status read(std::string& plaintext) override {
    unsigned char buf[16384];
    for (;;) {
      const int rc = mbedtls_ssl_read(&ssl_, buf, sizeof buf);
      if (rc > 0) {
        plaintext.append(reinterpret_cast<const char*>(buf), static_cast<size_t>(rc));
        continue;
      }
      if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE)
        return Status::kWantRead;
      if (rc == 0 || rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) return Status::kClosed;
      last_error_ = rc;
      return Status::kError;
    }
  }

  void close_notify() override { mbedtls_ssl_close_notify(&ssl_); }

  void take_output(std::string& out) override {
    if (out.empty())
      out.swap(out_);
    else
      out.append(out_);
    out_.clear();
  }

  bool resumed() const override { return !full_handshake_; }

  std::unique_ptr<SavedSession> save() override {
    auto saved = std::make_unique<MbedSaved>();
    if (mbedtls_ssl_get_session(&ssl_, &saved->session) != 0) return nullptr;
    return saved;
  }

  std::string error() const override { return last_error_ ? mbed_error(last_error_) : "no error"; }

 private:
  static int on_send(void* ctx, const unsigned char* buf, size_t len) {
    static_cast<MbedSession*>(ctx)->out_.append(reinterpret_cast<const char*>(buf), len);
    return static_cast<int>(len);
  }
  static int on_recv(void* ctx, unsigned char* buf, size_t len) {
    auto* self = static_cast<MbedSession*>(ctx);
    const size_t avail = self->in_.size() - self->in_offset_;
    if (avail == 0) return MBEDTLS_ERR_SSL_WANT_READ;
    const size_t n = std::min(len, avail);
    std::memcpy(buf, self->in_.data() + self->in_offset_, n);
    self->in_offset_ += n;
    return static_cast<int>(n);
  }

  mbedtls_ssl_context ssl_;
  std::string in_;
  size_t in_offset_ = 0;
  std::string out_;
  bool full_handshake_ = false;
  int last_error_ = 0;
};

class MbedContext final : public Context {
 public:
  explicit MbedContext(const Settings& s) : servername_(s.servername) {
    mbedtls_entropy_init(&entropy_);
    mbedtls_ctr_drbg_init(&drbg_);
    mbedtls_x509_crt_init(&ca_);
    mbedtls_x509_crt_init(&cert_);
    mbedtls_pk_init(&key_);
    mbedtls_ssl_config_init(&conf_);
    static const char kPers[] = "mqgate-bench";
    check(mbedtls_ctr_drbg_seed(&drbg_, mbedtls_entropy_func, &entropy_,
                                reinterpret_cast<const unsigned char*>(kPers), sizeof kPers - 1),
          "seeding the random generator");
    check(mbedtls_ssl_config_defaults(&conf_, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                      MBEDTLS_SSL_PRESET_DEFAULT),
          "TLS defaults");
    mbedtls_ssl_conf_rng(&conf_, mbedtls_ctr_drbg_random, &drbg_);
    // TLS 1.2, as the broker comparison expects (mbedTLS 2.28 has nothing newer).
    mbedtls_ssl_conf_min_version(&conf_, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_max_version(&conf_, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_session_tickets(&conf_, MBEDTLS_SSL_SESSION_TICKETS_ENABLED);
    if (!s.cafile.empty()) {
      check(mbedtls_x509_crt_parse_file(&ca_, s.cafile.c_str()), ("CA file " + s.cafile).c_str());
      mbedtls_ssl_conf_ca_chain(&conf_, &ca_, nullptr);
      mbedtls_ssl_conf_authmode(&conf_, MBEDTLS_SSL_VERIFY_REQUIRED);
    } else {
      mbedtls_ssl_conf_authmode(&conf_, MBEDTLS_SSL_VERIFY_NONE);
    }
    if (!s.certfile.empty()) {
      check(mbedtls_x509_crt_parse_file(&cert_, s.certfile.c_str()),
            ("certificate " + s.certfile).c_str());
      check(mbedtls_pk_parse_keyfile(&key_, s.keyfile.c_str(), nullptr),
            ("key " + s.keyfile).c_str());
      check(mbedtls_ssl_conf_own_cert(&conf_, &cert_, &key_), "certificate and key");
    }
  }

  ~MbedContext() override {
    mbedtls_ssl_config_free(&conf_);
    mbedtls_pk_free(&key_);
    mbedtls_x509_crt_free(&cert_);
    mbedtls_x509_crt_free(&ca_);
    mbedtls_ctr_drbg_free(&drbg_);
    mbedtls_entropy_free(&entropy_);
  }

  std::unique_ptr<Session> new_session(const SavedSession* resume) override {
    return std::make_unique<MbedSession>(conf_, servername_, resume);
  }

 private:
  static void check(int rc, const char* what) {
    if (rc != 0) throw std::runtime_error(std::string(what) + ": " + mbed_error(rc));
  }

  std::string servername_;
  mbedtls_entropy_context entropy_;
  mbedtls_ctr_drbg_context drbg_;
  mbedtls_x509_crt ca_;
  mbedtls_x509_crt cert_;
  mbedtls_pk_context key_;
  mbedtls_ssl_config conf_;
};

}  // namespace

std::unique_ptr<Context> make_mbedtls_context(const Settings& settings) {
  return std::make_unique<MbedContext>(settings);
}

const char* library_name(Library lib) {
  return lib == Library::kOpenssl ? "openssl" : "mbedtls";
}

std::unique_ptr<Context> make_context(const Settings& settings) {
  if (settings.library == Library::kOpenssl) return make_openssl_context(settings);
  return make_mbedtls_context(settings);
}

}  // namespace mqgate::bench::tls
