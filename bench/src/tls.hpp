// TLS for the load generator's client connections, over memory buffers: the connection
// feeds the ciphertext it reads and sends the ciphertext the session produces, so one
// event loop drives thousands of handshakes without blocking.
//
// Two libraries behind one interface. mbedTLS is what mqgate itself uses; OpenSSL is
// there because the client's own crypto must not be what limits a handshake benchmark:
// per full mTLS handshake the client signs (RSA-2048 or ECDSA) and does one ECDHE, and
// on this kind of machine mbedTLS manages ~680 RSA-2048 signatures and ~700-850 ECDHE
// per second per core against ~3,700 and ~20,000-30,000 for OpenSSL. On a 2-core box
// shared with the broker, an mbedTLS client would cap any broker at a few hundred
// handshakes per second.
#pragma once

#include <memory>
#include <string>
#include <string_view>

namespace mqgate::bench::tls {

enum class Library { kMbedtls, kOpenssl };

// Whether the generator was built with OpenSSL.
bool openssl_available();
const char* library_name(Library lib);

struct Settings {
  Library library = Library::kMbedtls;
  std::string cafile;      // trusted CA(s) for the server certificate
  std::string certfile;    // the client certificate (chain), optional
  std::string keyfile;     // its private key
  std::string servername;  // SNI and the name checked in the server certificate; empty: none
};

enum class Status { kDone, kWantRead, kError, kClosed };

// A saved session to resume a later connection with (TLS 1.2 session id or ticket).
class SavedSession {
 public:
  virtual ~SavedSession() = default;
};

// One client connection's TLS state.
class Session {
 public:
  virtual ~Session() = default;
  // Ciphertext received from the network.
  virtual void feed(std::string_view ciphertext) = 0;
  // Advances the handshake with what has been fed; kWantRead until it is done.
  virtual Status handshake() = 0;
  // Encrypts application data (after the handshake).
  virtual bool write(std::string_view plaintext) = 0;
  // Decrypts what has been fed, appending application data to `plaintext`. kWantRead
  // when everything fed was consumed, kClosed on close_notify, kError otherwise.
  virtual Status read(std::string& plaintext) = 0;
  // Queues a close_notify alert.
  virtual void close_notify() = 0;
  // Moves the ciphertext to send into `out` (appended).
  virtual void take_output(std::string& out) = 0;
  // After the handshake: whether it resumed a saved session, and the session to save.
  virtual bool resumed() const = 0;
  virtual std::unique_ptr<SavedSession> save() = 0;
  // The last error, for failure reports.
  virtual std::string error() const = 0;
};

// Per thread: keys, certificates and the library's configuration, shared by the
// thread's sessions. Construction throws std::runtime_error on unreadable files.
class Context {
 public:
  virtual ~Context() = default;
  // A new client session, resuming `resume` if given.
  virtual std::unique_ptr<Session> new_session(const SavedSession* resume) = 0;
};

std::unique_ptr<Context> make_context(const Settings& settings);

// Library-specific factories (tls_mbedtls.cpp, tls_openssl.cpp).
std::unique_ptr<Context> make_mbedtls_context(const Settings& settings);
std::unique_ptr<Context> make_openssl_context(const Settings& settings);

}  // namespace mqgate::bench::tls
