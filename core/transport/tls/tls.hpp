// TLS for listeners, on mbedTLS 2.28.
//
// The listener knows TLS: each TLS listener holds its loaded material (certificate
// chain, key, CAs, CRL) as an immutable TlsGeneration; a reload builds a new
// generation and new handshakes use it while live connections keep theirs. A
// TlsSession is one connection's TLS state.
//
// Handshakes never run on the event loop. mbedTLS 2.28 (as Debian builds it) has no
// asynchronous private-key hook, so the whole handshake runs on TlsWorkers threads:
// the loop thread only moves bytes between the socket and the session's memory
// buffers. Each worker has its own copy of the private key and its own ssl config,
// because mbedTLS serialises RSA private operations on one key with a mutex. Once the
// handshake is done, record encryption (cheap, AES-GCM with AES-NI) runs on the loop.
//
// Hostile clients meet limits, not the event loop: at most tls_max_pending_handshakes
// handshakes are in progress at once (which also bounds the workers' queues), a job whose
// connection closed before a worker took it is dropped unrun, a client sends at most
// kMaxHandshakeBytes before its handshake completes, and TLS material is loaded (at
// SIGHUP) on a thread, from files of bounded size.
//
// What mbedTLS has no public API for (ticket key randomness, record buffer pages) is in
// tls_compat.{hpp,cpp}, and only there.
#pragma once

#include <uv.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_cache.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/x509_crl.h>
#include <mbedtls/x509_crt.h>

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "base/errors.hpp"
#include "base/log.hpp"
#include "config/config.hpp"
#include "transport/stream_layer.hpp"
#include "transport/tls/ticket_keys.hpp"

namespace mqgate {

class TlsSession;

// Text for an mbedTLS error code, e.g. "X509 - Certificate verification failed".
std::string tls_error_text(int code);
// A certificate time as seconds since the epoch (plugins/common/x509_time.h); nullopt
// if it is not a date (an absent CRL nextUpdate is all zeros). A certificate's subject
// as text.
std::optional<int64_t> x509_time_to_epoch(const mbedtls_x509_time& t);
std::string x509_subject(const mbedtls_x509_crt& crt);

// The largest files TlsGeneration::load reads. A certificate chain or a key is a few KiB
// and a CA bundle (Debian's whole ca-certificates) ~200 KiB; 16 MiB of PEM CRL lists some
// 300,000 revoked certificates. Anything bigger is a mistaken path (a log, an image),
// refused before it is read into memory.
inline constexpr size_t kMaxCertFileBytes = 1 << 20;
inline constexpr size_t kMaxKeyFileBytes = 1 << 20;
inline constexpr size_t kMaxCaFileBytes = 16 << 20;
inline constexpr size_t kMaxCrlFileBytes = 16 << 20;

// How a listener's TLS handshakes ended (GET /metrics). Loop thread only. Shared by
// the listener's generations, so a reload keeps counting where the last one was.
struct TlsHandshakeCounts {
  enum Failure : uint8_t {
    kProtocol,     // the handshake failed (version, ciphers, bad messages...)
    kCertificate,  // the client's certificate was rejected (chain, usage, signature)
    kExpired,      // ... has expired (or is not valid yet)
    kRevoked,      // ... is revoked by the CRL
    kFlood,        // the client sent more than kMaxHandshakeBytes before finishing
    kAborted,      // the connection closed first (client gone, connect_timeout, shutdown)
    kFailureCount
  };
  static const char* failure_name(Failure f);
  uint64_t full = 0;     // completed, with a full handshake
  uint64_t resumed = 0;  // completed, resuming a session (ticket or session id)
  uint64_t failed[kFailureCount] = {};
};

// The material of one generation: parsed once, read by every worker, never changed.
class TlsGeneration {
 public:
  // Loads and checks everything `config` names. On failure returns nullptr and adds to
  // `errors` why (naming the listener, the key and the file). Thread-safe: a reload runs it
  // off the loop.
  static std::shared_ptr<TlsGeneration> load(const ListenerConfig& listener, size_t workers,
                                             Errors& errors);
  ~TlsGeneration();
  TlsGeneration(const TlsGeneration&) = delete;
  TlsGeneration& operator=(const TlsGeneration&) = delete;

  const mbedtls_ssl_config* config(size_t worker) const { return &per_worker_[worker]->conf; }
  const TlsConfig& settings() const { return settings_; }
  const mbedtls_x509_crl* crl() const { return has_crl_ ? &crl_ : nullptr; }
  // The certificate chain this listener serves, leaf first (the console shows it).
  const mbedtls_x509_crt& served_chain() const { return own_chain_; }
  // Seconds since the epoch of the CRL's nextUpdate (0 without a CRL).
  int64_t crl_next_update() const { return crl_next_update_; }
  // Whether (issuer DER, serial) is listed in the CRL.
  bool is_revoked(const std::string& issuer_raw, const std::string& serial_raw) const;
  const std::string& summary() const { return summary_; }
  // The listener's handshake counts (not material: changed by its sessions, on the loop).
  TlsHandshakeCounts& counts() const { return *counts_; }
  // A reload's generation goes on counting in its predecessor's counts.
  void share_counts(const TlsGeneration& previous) { counts_ = previous.counts_; }

 private:
  TlsGeneration() = default;
  struct Worker {
    mbedtls_ssl_config conf;
    mbedtls_pk_context key;
    mbedtls_ctr_drbg_context drbg;
  };
  TlsConfig settings_;
  std::string listener_;
  mbedtls_entropy_context entropy_;
  mbedtls_x509_crt own_chain_;
  mbedtls_x509_crt ca_;
  mbedtls_x509_crl crl_;
  bool has_ca_ = false, has_crl_ = false;
  int64_t crl_next_update_ = 0;
  mbedtls_ssl_ticket_context ticket_;
  std::unique_ptr<TicketKeyFile> ticket_keys_;  // [persistence] on: the ticket keys' file
  mbedtls_ssl_cache_context cache_;
  std::vector<int> ciphersuites_;  // zero-terminated, referenced by the configs
  std::vector<std::unique_ptr<Worker>> per_worker_;
  std::unordered_set<std::string> revoked_;  // issuer DER + serial DER
  std::string summary_;
  std::shared_ptr<TlsHandshakeCounts> counts_ = std::make_shared<TlsHandshakeCounts>();
};

// The handshake threads. Jobs run mbedtls_ssl_handshake() on a session's memory
// buffers; completions come back to the loop through a uv_async_t.
//
// It also counts the handshakes in progress: sessions from their creation until their
// handshake ends (waiting for a worker, on one, or waiting for the client's next flight;
// connect_timeout bounds the last). A session has at most one job queued, so the queues
// hold at most max_pending() jobs. Everything but run() is for the loop thread.
class TlsWorkers {
 public:
  TlsWorkers(uv_loop_t* loop, size_t threads, size_t max_pending);
  ~TlsWorkers();
  size_t size() const { return queues_.size(); }
  // Picks the worker for a new session (round robin).
  size_t next_worker() { return next_++ % queues_.size(); }
  void submit(TlsSession* session);
  // Takes `session`'s job out of its worker's queue if no worker has started it yet.
  // Returns whether it did (the job will then never run nor complete).
  bool cancel(TlsSession* session);
  // Stops the threads (finishing the jobs they run) and completes every job that is
  // left, on the calling (loop) thread. For shutdown.
  void stop();

  // Whether a new TLS connection may start a handshake (tls_max_pending_handshakes).
  bool has_room() const { return pending_ < max_pending_; }
  size_t pending() const { return pending_; }
  size_t max_pending() const { return max_pending_; }
  void set_max_pending(size_t max) { max_pending_ = max; }
  // A connection was refused for want of room: logged at most once a second, with how
  // many were refused since the last line. report_refused() (called every second)
  // writes the line a burst left unreported.
  void refused(uint64_t now_ms);
  void report_refused(uint64_t now_ms);

 private:
  friend class TlsSession;
  struct Queue {
    std::mutex mutex;
    std::condition_variable ready;
    std::deque<TlsSession*> jobs;
    bool stopping = false;
  };
  void run(Queue& queue);
  static void on_async(uv_async_t* async);
  void handshake_started() { ++pending_; }
  void handshake_ended() { --pending_; }

  std::vector<std::unique_ptr<Queue>> queues_;
  std::vector<std::thread> threads_;
  std::mutex done_mutex_;
  std::vector<TlsSession*> done_;
  uv_async_t async_;
  size_t next_ = 0;
  bool stopped_ = false;
  size_t pending_ = 0;
  size_t max_pending_;
  uint64_t refused_unreported_ = 0;
  uint64_t last_refused_log_ms_ = 0;
  bool refused_logged_ = false;
};

// One connection's TLS: the layer of its transport stack above TCP.
class TlsSession final : public transport::StreamLayer {
 public:
  // A client may send at most this much ciphertext until its handshake completes, which
  // bounds what is buffered while a job runs (pending_in_, cipher_in_) and what a worker
  // parses for it. A client's whole side of a handshake is two flights of one record per
  // handshake message, and mbedTLS refuses a handshake message bigger than its 16 KiB
  // record buffer: with a long certificate chain and an MQTT CONNECT sent right behind
  // its Finished, a few KiB to 20 KiB. More is a flood: the connection closes, rather
  // than memory growing while a worker is busy.
  static constexpr uint32_t kMaxHandshakeBytes = 64 * 1024;

  // `current` is the listener's current generation (it outlives the session): the session
  // uses the one current now, and at the end of the handshake checks the client's
  // certificate against the CRL of the one current then (a SIGHUP may have come between).
  // `scratch` (shared, e.g. the loop's read buffer) receives decrypted records on their
  // way up. Handshake progress and its end are reported to `events`.
  TlsSession(const std::shared_ptr<const TlsGeneration>* current, size_t worker,
             TlsWorkers& workers, transport::LayerEvents& events, char* scratch,
             size_t scratch_size);
  ~TlsSession() override;
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;

  // transport::StreamLayer. During the handshake, input is queued for a worker; after
  // it, records are decrypted and handed up. send() encrypts; shutdown() queues a
  // close_notify.
  const char* name() const override { return "TLS"; }
  bool input(std::string_view ciphertext, transport::Receiver& up, std::string& error) override;
  bool ready() const override { return state_ == State::kEstablished; }
  bool send(std::string& plain, std::string& error) override;
  bool wire_available() const override { return !job_in_flight_; }
  std::string& wire() override { return cipher_out_; }
  void shutdown() override;
  size_t buffered() const override { return cipher_in_.size() - in_pos_ + pending_in_.size(); }
  // After the handshake: what the peer proved, for the plugins (call once).
  std::unique_ptr<TlsPeerInfo> take_peer_info() override;
  // Gives back buffer capacity the handshake needed and an idle connection does not.
  // With `long_idle`, also the pages of mbedTLS's record buffers (a syscall and page
  // faults on the next record: for connections that have been idle a while).
  void release_idle_buffers(bool long_idle) override;
  void abandon(std::function<void()> on_dead) override;
  const TlsGeneration& generation() const { return *generation_; }

  // The connection is closing: a handshake job still waiting for a worker is dropped
  // unrun (no private-key operation for a client that is gone). Returns whether one was.
  bool drop_queued_work() override;

 private:
  friend class TlsWorkers;
  enum class State : uint8_t { kHandshake, kEstablished, kFailed };

  void start_job();
  void run_job();     // on a worker thread
  void finish_job();  // back on the loop thread
  // Leaves the handshake state (counted by the workers) for `state`.
  void set_state(State state);
  // Counts how the handshake ended (once).
  void count_success();
  void count_failure(TlsHandshakeCounts::Failure why);
  // Checks a completed handshake's client certificate; returns why it is refused ("" if
  // it is not) and the alert to send.
  std::string check_completed(unsigned char& alert) const;
  static int bio_send(void* ctx, const unsigned char* buf, size_t len);
  static int bio_recv(void* ctx, unsigned char* buf, size_t len);
  static int verify(void* ctx, mbedtls_x509_crt* crt, int depth, uint32_t* flags);

  std::shared_ptr<const TlsGeneration> generation_;
  const std::shared_ptr<const TlsGeneration>* current_;
  size_t worker_;
  TlsWorkers& workers_;
  transport::LayerEvents& events_;
  char* scratch_;
  size_t scratch_size_;
  mbedtls_ssl_context ssl_;
  State state_ = State::kHandshake;
  bool job_in_flight_ = false;
  bool trimmed_ = false;  // record buffers' pages released since the last traffic
  bool counted_ = false;  // the handshake's end is in the counts
  bool resumed_ = false;  // the client resumes a session (seen between steps)
  uint8_t cert_failure_ = TlsHandshakeCounts::kCertificate;  // why verify() refused
  int job_result_ = 0;
  uint32_t handshake_bytes_ = 0;  // ciphertext received until the handshake completed
  std::string cipher_in_;         // ciphertext mbedTLS has not read yet (from in_pos_)
  size_t in_pos_ = 0;
  std::string pending_in_;  // ciphertext that arrived while a job ran
  std::string cipher_out_;
  std::vector<std::string> verified_chain_;  // DER, index = depth (0 = leaf)
  std::string verify_error_;
  std::function<void()> on_dead_;
};

}  // namespace mqgate
