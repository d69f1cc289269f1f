// The OpenSSL client: memory BIOs on both sides of the SSL object. Built only when
// OpenSSL's development files are present (see bench/meson.build).
#include "tls.hpp"

#ifdef MQGATE_BENCH_OPENSSL

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <stdexcept>

namespace mqgate::bench::tls {
namespace {

std::string openssl_errors() {
  std::string text;
  while (unsigned long e = ERR_get_error()) {
    char b[256];
    ERR_error_string_n(e, b, sizeof b);
    if (!text.empty()) text += "; ";
    text += b;
  }
  return text.empty() ? "unknown error" : text;
}

class OsslSaved final : public SavedSession {
 public:
  explicit OsslSaved(SSL_SESSION* s) : session(s) {}
  ~OsslSaved() override { SSL_SESSION_free(session); }
  SSL_SESSION* session;
};

class OsslSession final : public Session {
 public:
  OsslSession(SSL_CTX* ctx, const std::string& servername, const SavedSession* resume) {
    ssl_ = SSL_new(ctx);
    rbio_ = BIO_new(BIO_s_mem());
    wbio_ = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl_, rbio_, wbio_);
    SSL_set_connect_state(ssl_);
    if (!servername.empty()) {
      SSL_set_tlsext_host_name(ssl_, servername.c_str());
      SSL_set1_host(ssl_, servername.c_str());
    }
    if (resume) SSL_set_session(ssl_, static_cast<const OsslSaved*>(resume)->session);
  }
  ~OsslSession() override { SSL_free(ssl_); }

  void feed(std::string_view data) override {
    BIO_write(rbio_, data.data(), static_cast<int>(data.size()));
  }

  Status handshake() override {
    ERR_clear_error();
    const int rc = SSL_do_handshake(ssl_);
    if (rc == 1) return Status::kDone;
    const int err = SSL_get_error(ssl_, rc);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return Status::kWantRead;
    record_error(err);
    return Status::kError;
  }

  bool write(std::string_view data) override {
    ERR_clear_error();
    size_t written = 0;
    if (SSL_write_ex(ssl_, data.data(), data.size(), &written) != 1 || written != data.size()) {
      record_error(SSL_ERROR_SSL);
      return false;
    }
    return true;
  }

  Status read(std::string& plaintext) override {
    char buf[16384];
    for (;;) {
      ERR_clear_error();
      size_t n = 0;
      if (SSL_read_ex(ssl_, buf, sizeof buf, &n) == 1) {
        plaintext.append(buf, n);
        continue;
      }
      const int err = SSL_get_error(ssl_, 0);
      if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return Status::kWantRead;
      if (err == SSL_ERROR_ZERO_RETURN) return Status::kClosed;
      record_error(err);
      return Status::kError;
    }
  }

  void close_notify() override {
    ERR_clear_error();
    SSL_shutdown(ssl_);
  }

  void take_output(std::string& out) override {
    char* p = nullptr;
    const long n = BIO_get_mem_data(wbio_, &p);
    if (n > 0) out.append(p, static_cast<size_t>(n));
    (void)BIO_reset(wbio_);
  }

  bool resumed() const override { return SSL_session_reused(ssl_) == 1; }

  std::unique_ptr<SavedSession> save() override {
    SSL_SESSION* s = SSL_get1_session(ssl_);
    if (!s) return nullptr;
    return std::make_unique<OsslSaved>(s);
  }

  std::string error() const override { return error_; }

 private:
  void record_error(int err) {
    const long verify = SSL_get_verify_result(ssl_);
    if (verify != X509_V_OK)
      error_ = std::string("certificate verify failed: ") + X509_verify_cert_error_string(verify);
    else if (err == SSL_ERROR_SSL)
      error_ = openssl_errors();
    else
      error_ = "SSL error " + std::to_string(err);
  }

  SSL* ssl_;
  BIO* rbio_;
  BIO* wbio_;
  std::string error_ = "no error";
};

class OsslContext final : public Context {
 public:
  explicit OsslContext(const Settings& s) : servername_(s.servername) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    if (!ctx_) throw std::runtime_error("SSL_CTX_new: " + openssl_errors());
    // TLS 1.2 on both libraries, so the two measure the same protocol.
    SSL_CTX_set_min_proto_version(ctx_, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx_, TLS1_2_VERSION);
    // Many idle TLS connections should not cost the generator 2 x 16 KiB each.
    SSL_CTX_set_mode(ctx_, SSL_MODE_RELEASE_BUFFERS);
    if (!s.cafile.empty()) {
      if (SSL_CTX_load_verify_locations(ctx_, s.cafile.c_str(), nullptr) != 1)
        fail("CA file " + s.cafile);
      SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    }
    if (!s.certfile.empty()) {
      if (SSL_CTX_use_certificate_chain_file(ctx_, s.certfile.c_str()) != 1)
        fail("certificate " + s.certfile);
      if (SSL_CTX_use_PrivateKey_file(ctx_, s.keyfile.c_str(), SSL_FILETYPE_PEM) != 1)
        fail("key " + s.keyfile);
      if (SSL_CTX_check_private_key(ctx_) != 1) fail("certificate and key");
    }
  }
  ~OsslContext() override { SSL_CTX_free(ctx_); }

  std::unique_ptr<Session> new_session(const SavedSession* resume) override {
    return std::make_unique<OsslSession>(ctx_, servername_, resume);
  }

 private:
  [[noreturn]] void fail(const std::string& what) {
    const std::string e = openssl_errors();
    SSL_CTX_free(ctx_);
    throw std::runtime_error(what + ": " + e);
  }

  SSL_CTX* ctx_;
  std::string servername_;
};

}  // namespace

bool openssl_available() {
  return true;
}

std::unique_ptr<Context> make_openssl_context(const Settings& settings) {
  return std::make_unique<OsslContext>(settings);
}

}  // namespace mqgate::bench::tls

#else  // !MQGATE_BENCH_OPENSSL

#include <stdexcept>

namespace mqgate::bench::tls {

bool openssl_available() {
  return false;
}

std::unique_ptr<Context> make_openssl_context(const Settings&) {
  throw std::runtime_error("this mqgate-bench was built without OpenSSL (install libssl-dev)");
}

}  // namespace mqgate::bench::tls

#endif
