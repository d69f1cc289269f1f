#include "tls.hpp"

#include <mbedtls/error.h>
#include <mbedtls/md.h>
#include <mbedtls/oid.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/ssl_ciphersuites.h>
#include <mbedtls/x509.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>

#include "log.hpp"
#include "tls_compat.hpp"

namespace mqgate {

std::string tls_error_text(int code) {
  char buf[200];
  mbedtls_strerror(code, buf, sizeof buf);
  return buf;
}

namespace {

// Curves for ECDHE, fastest first (mbedTLS's own default starts with P-521).
const mbedtls_ecp_group_id kCurves[] = {MBEDTLS_ECP_DP_SECP256R1, MBEDTLS_ECP_DP_CURVE25519,
                                        MBEDTLS_ECP_DP_SECP384R1, MBEDTLS_ECP_DP_SECP521R1,
                                        MBEDTLS_ECP_DP_NONE};

// Default suites: forward-secret AEAD only, AES-GCM first (AES-NI makes it the
// cheapest per record here), then ChaCha20-Poly1305.
const char* const kDefaultCiphers[] = {
    "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256",       "TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256",
    "TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384",       "TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384",
    "TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256", "TLS-ECDHE-RSA-WITH-CHACHA20-POLY1305-SHA256",
};

int64_t to_epoch(const mbedtls_x509_time& t) {
  std::tm tm{};
  tm.tm_year = t.year - 1900;
  tm.tm_mon = t.mon - 1;
  tm.tm_mday = t.day;
  tm.tm_hour = t.hour;
  tm.tm_min = t.min;
  tm.tm_sec = t.sec;
  return static_cast<int64_t>(timegm(&tm));
}

std::string format_time(const mbedtls_x509_time& t) {
  char buf[32];
  snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02dZ", t.year, t.mon, t.day, t.hour, t.min, t.sec);
  return buf;
}

std::string subject_of(const mbedtls_x509_crt& crt) {
  char buf[512];
  if (mbedtls_x509_dn_gets(buf, sizeof buf, &crt.subject) < 0) return "?";
  return buf;
}

std::string raw(const mbedtls_x509_buf& b) { return std::string(reinterpret_cast<const char*>(b.p), b.len); }

// Verifies `crl`'s signature with one of the CAs in `ca` whose subject is its issuer.
bool crl_signed_by(const mbedtls_x509_crl& crl, const mbedtls_x509_crt* ca) {
  const mbedtls_md_info_t* md = mbedtls_md_info_from_type(crl.sig_md);
  if (md == nullptr) return false;
  unsigned char hash[MBEDTLS_MD_MAX_SIZE];
  if (mbedtls_md(md, crl.tbs.p, crl.tbs.len, hash) != 0) return false;
  for (const mbedtls_x509_crt* c = ca; c != nullptr && c->raw.p != nullptr; c = c->next) {
    if (c->subject_raw.len != crl.issuer_raw.len ||
        std::memcmp(c->subject_raw.p, crl.issuer_raw.p, crl.issuer_raw.len) != 0)
      continue;
    if (mbedtls_pk_verify_ext(crl.sig_pk, crl.sig_opts, const_cast<mbedtls_pk_context*>(&c->pk), crl.sig_md,
                              hash, mbedtls_md_get_size(md), crl.sig.p, crl.sig.len) == 0)
      return true;
  }
  return false;
}

// Reads a whole certificate, key or CRL file into `data`, refusing one over `cap` bytes
// before reading it. Returns "" or why not.
std::string read_capped(const std::string& path, size_t cap, std::string& data) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::string("cannot open: ") + strerror(errno);
  struct stat st;
  std::string why;
  if (fstat(fd, &st) != 0) {
    why = std::string("cannot read: ") + strerror(errno);
  } else if (!S_ISREG(st.st_mode)) {
    why = "not a regular file";
  } else if (static_cast<uint64_t>(st.st_size) > cap) {
    why = "is " + std::to_string(st.st_size) + " bytes, more than the " +
          std::to_string(cap >> 20) + " MiB such a file may have";
  } else {
    data.resize(static_cast<size_t>(st.st_size));
    size_t got = 0;
    while (got < data.size()) {
      const ssize_t n = read(fd, data.data() + got, data.size() - got);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) why = std::string("cannot read: ") + strerror(errno);
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    data.resize(got);  // a file that shrank meanwhile
  }
  close(fd);
  return why;
}

// mbedTLS's *_parse() want PEM text with its terminating NUL counted (std::string has
// one past size()), DER without: what its *_parse_file() pass.
const unsigned char* bytes(const std::string& data) {
  return reinterpret_cast<const unsigned char*>(data.c_str());
}
size_t parse_length(const std::string& data) {
  return data.size() + (data.find("-----BEGIN ") != std::string::npos ? 1 : 0);
}

// Wipes a key file's text from memory, however load() returns.
struct Wipe {
  std::string& data;
  ~Wipe() { mbedtls_platform_zeroize(data.data(), data.size()); }
};

}  // namespace

// --- TlsGeneration ----------------------------------------------------------------------

TlsGeneration::~TlsGeneration() {
  for (auto& w : per_worker_) {
    mbedtls_ssl_config_free(&w->conf);
    mbedtls_pk_free(&w->key);
    mbedtls_ctr_drbg_free(&w->drbg);
  }
  mbedtls_ssl_ticket_free(&ticket_);
  mbedtls_ssl_cache_free(&cache_);
  mbedtls_x509_crt_free(&own_chain_);
  mbedtls_x509_crt_free(&ca_);
  mbedtls_x509_crl_free(&crl_);
  mbedtls_entropy_free(&entropy_);
}

std::shared_ptr<TlsGeneration> TlsGeneration::load(const ListenerConfig& listener, size_t workers,
                                                   std::string& error) {
  std::shared_ptr<TlsGeneration> g(new TlsGeneration());
  const TlsConfig& s = *listener.tls;
  g->settings_ = s;
  g->listener_ = listener.name;
  mbedtls_entropy_init(&g->entropy_);
  mbedtls_x509_crt_init(&g->own_chain_);
  mbedtls_x509_crt_init(&g->ca_);
  mbedtls_x509_crl_init(&g->crl_);
  mbedtls_ssl_ticket_init(&g->ticket_);
  mbedtls_ssl_cache_init(&g->cache_);
  const std::string where = "listener \"" + listener.name + "\": ";
  auto fail = [&](const std::string& key, const std::string& file, const std::string& why) {
    error = where + key + " " + file + ": " + why;
    return nullptr;
  };

  std::string text;
  std::string why = read_capped(s.certfile, kMaxCertFileBytes, text);
  if (!why.empty()) return fail("certfile", s.certfile, why);
  int rc = mbedtls_x509_crt_parse(&g->own_chain_, bytes(text), parse_length(text));
  if (rc != 0 || g->own_chain_.raw.p == nullptr)
    return fail("certfile", s.certfile,
                rc < 0 ? tls_error_text(rc) : "not a PEM or DER certificate (chain)");
  const int64_t now = static_cast<int64_t>(time(nullptr));
  if (to_epoch(g->own_chain_.valid_to) < now)
    LOG_ERROR("%scertfile %s expired on %s: clients that check it will refuse to connect",
              where.c_str(), s.certfile.c_str(), format_time(g->own_chain_.valid_to).c_str());

  // The key is read once, parsed once to check it, then once more per worker (see the
  // header).
  std::string key_text;
  Wipe wipe_key{key_text};
  why = read_capped(s.keyfile, kMaxKeyFileBytes, key_text);
  if (!why.empty()) return fail("keyfile", s.keyfile, why);
  mbedtls_pk_context probe;
  mbedtls_pk_init(&probe);
  rc = mbedtls_pk_parse_key(&probe, bytes(key_text), parse_length(key_text), nullptr, 0);
  if (rc != 0) {
    mbedtls_pk_free(&probe);
    return fail("keyfile", s.keyfile,
                rc == MBEDTLS_ERR_PK_PASSWORD_REQUIRED ? "the key is encrypted; give an unencrypted key"
                                                       : tls_error_text(rc));
  }
  rc = mbedtls_pk_check_pair(&g->own_chain_.pk, &probe);
  mbedtls_pk_free(&probe);
  if (rc != 0)
    return fail("keyfile", s.keyfile, "does not match the certificate in certfile " + s.certfile);

  if (!s.cafile.empty()) {
    why = read_capped(s.cafile, kMaxCaFileBytes, text);
    if (!why.empty()) return fail("cafile", s.cafile, why);
    rc = mbedtls_x509_crt_parse(&g->ca_, bytes(text), parse_length(text));
    if (rc < 0 || g->ca_.raw.p == nullptr)
      return fail("cafile", s.cafile, rc < 0 ? tls_error_text(rc) : "holds no certificate");
    if (rc > 0)
      LOG_WARN("%scafile %s: %d certificate(s) could not be parsed and are ignored", where.c_str(),
               s.cafile.c_str(), rc);
    g->has_ca_ = true;
  }
  if (!s.crlfile.empty()) {
    why = read_capped(s.crlfile, kMaxCrlFileBytes, text);
    if (!why.empty()) return fail("crlfile", s.crlfile, why);
    rc = mbedtls_x509_crl_parse(&g->crl_, bytes(text), parse_length(text));
    std::string().swap(text);  // up to 16 MiB, parsed
    if (rc != 0) return fail("crlfile", s.crlfile, tls_error_text(rc));
    for (const mbedtls_x509_crl* c = &g->crl_; c != nullptr && c->raw.p != nullptr; c = c->next) {
      if (!crl_signed_by(*c, &g->ca_))
        return fail("crlfile", s.crlfile, "a CRL in it is not signed by any CA in cafile " + s.cafile);
      const int64_t next = to_epoch(c->next_update);
      if (g->crl_next_update_ == 0 || next < g->crl_next_update_) g->crl_next_update_ = next;
      for (const mbedtls_x509_crl_entry* e = &c->entry; e != nullptr; e = e->next)
        if (e->serial.len > 0) g->revoked_.insert(raw(c->issuer_raw) + raw(e->serial));
      if (next < now)
        LOG_ERROR("%sCRL in %s is STALE: its nextUpdate %s has passed. The certificates it lists are "
                  "still refused and other clients are still let in; refresh it (revoke_creds "
                  "--refresh) and send SIGHUP",
                  where.c_str(), s.crlfile.c_str(), format_time(c->next_update).c_str());
    }
    g->has_crl_ = true;
  }

  for (const auto& name : s.ciphers) {
    const int id = mbedtls_ssl_get_ciphersuite_id(name.c_str());
    if (id == 0)
      return fail("ciphers", "", "\"" + name + "\" is not a cipher suite mbedTLS 2.28 knows (names look like "
                  "\"TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256\")");
    g->ciphersuites_.push_back(id);
  }
  if (s.ciphers.empty())
    for (const char* name : kDefaultCiphers) g->ciphersuites_.push_back(mbedtls_ssl_get_ciphersuite_id(name));
  g->ciphersuites_.push_back(0);

  // One DRBG seeds the ticket keys; each worker gets its own for its handshakes.
  auto* seed_drbg = new mbedtls_ctr_drbg_context;
  mbedtls_ctr_drbg_init(seed_drbg);
  std::unique_ptr<mbedtls_ctr_drbg_context, void (*)(mbedtls_ctr_drbg_context*)> seed(
      seed_drbg, [](mbedtls_ctr_drbg_context* d) {
        mbedtls_ctr_drbg_free(d);
        delete d;
      });
  const char* personal = "mqgate tls";
  rc = mbedtls_ctr_drbg_seed(seed.get(), mbedtls_entropy_func, &g->entropy_,
                             reinterpret_cast<const unsigned char*>(personal), strlen(personal));
  if (rc != 0) return fail("", "", "cannot seed the random generator: " + tls_error_text(rc));
  if (s.session_tickets) {
    rc = mbedtls_ssl_ticket_setup(&g->ticket_, mbedtls_ctr_drbg_random, seed.get(), MBEDTLS_CIPHER_AES_256_GCM,
                                  s.session_lifetime);
    if (rc != 0) return fail("", "", "cannot set up session tickets: " + tls_error_text(rc));
    // The ticket keys are made; later key rotations use the workers' generators.
  }
  if (s.session_cache_size > 0) {
    mbedtls_ssl_cache_set_max_entries(&g->cache_, static_cast<int>(s.session_cache_size));
    mbedtls_ssl_cache_set_timeout(&g->cache_, static_cast<int>(s.session_lifetime));
  }

  for (size_t i = 0; i < workers; ++i) {
    auto w = std::make_unique<Worker>();
    mbedtls_ssl_config_init(&w->conf);
    mbedtls_pk_init(&w->key);
    mbedtls_ctr_drbg_init(&w->drbg);
    TlsGeneration::Worker* wp = w.get();
    g->per_worker_.push_back(std::move(w));
    rc = mbedtls_ctr_drbg_seed(&wp->drbg, mbedtls_entropy_func, &g->entropy_,
                               reinterpret_cast<const unsigned char*>(personal), strlen(personal));
    if (rc == 0)
      rc = mbedtls_pk_parse_key(&wp->key, bytes(key_text), parse_length(key_text), nullptr, 0);
    if (rc == 0)
      rc = mbedtls_ssl_config_defaults(&wp->conf, MBEDTLS_SSL_IS_SERVER, MBEDTLS_SSL_TRANSPORT_STREAM,
                                       MBEDTLS_SSL_PRESET_DEFAULT);
    if (rc == 0) rc = mbedtls_ssl_conf_own_cert(&wp->conf, &g->own_chain_, &wp->key);
    if (rc != 0) return fail("", "", "cannot set up TLS: " + tls_error_text(rc));
    mbedtls_ssl_config* conf = &wp->conf;
    mbedtls_ssl_conf_rng(conf, mbedtls_ctr_drbg_random, &wp->drbg);
    mbedtls_ssl_conf_min_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3, s.min_version_minor);
    mbedtls_ssl_conf_curves(conf, kCurves);
    mbedtls_ssl_conf_ciphersuites(conf, g->ciphersuites_.data());
    switch (s.client_cert) {
      case TlsConfig::ClientCert::kNone:
        mbedtls_ssl_conf_authmode(conf, MBEDTLS_SSL_VERIFY_NONE);
        break;
      case TlsConfig::ClientCert::kOptional:
        mbedtls_ssl_conf_authmode(conf, MBEDTLS_SSL_VERIFY_OPTIONAL);
        break;
      case TlsConfig::ClientCert::kRequired:
        mbedtls_ssl_conf_authmode(conf, MBEDTLS_SSL_VERIFY_REQUIRED);
        break;
    }
    if (g->has_ca_) mbedtls_ssl_conf_ca_chain(conf, &g->ca_, g->has_crl_ ? &g->crl_ : nullptr);
    if (s.session_tickets)
      mbedtls_ssl_conf_session_tickets_cb(conf, mbedtls_ssl_ticket_write, mbedtls_ssl_ticket_parse, &g->ticket_);
    if (s.session_cache_size > 0)
      mbedtls_ssl_conf_session_cache(conf, &g->cache_, mbedtls_ssl_cache_get, mbedtls_ssl_cache_set);
  }
  // Ticket key rotation draws randomness later, from whichever thread issues a
  // ticket: move it to a generator that lives as long as the generation.
  if (s.session_tickets) tls_compat::set_ticket_rng(g->ticket_, g->per_worker_[0]->drbg);

  char fingerprint[65] = {0};
  unsigned char digest[32];
  mbedtls_md(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), g->own_chain_.raw.p, g->own_chain_.raw.len, digest);
  for (int i = 0; i < 32; ++i) snprintf(fingerprint + 2 * i, 3, "%02x", digest[i]);
  const char* mode = s.client_cert == TlsConfig::ClientCert::kRequired   ? "required"
                     : s.client_cert == TlsConfig::ClientCert::kOptional ? "optional"
                                                                         : "none";
  g->summary_ = "certificate " + subject_of(g->own_chain_) + " (sha256 " + fingerprint + ", expires " +
                format_time(g->own_chain_.valid_to) + "), client certificates " + mode +
                (g->has_crl_ ? ", CRL with " + std::to_string(g->revoked_.size()) + " revoked" : "");
  return g;
}

bool TlsGeneration::is_revoked(const std::string& issuer_raw, const std::string& serial_raw) const {
  return !revoked_.empty() && revoked_.count(issuer_raw + serial_raw) > 0;
}

// --- TlsWorkers -------------------------------------------------------------------------

TlsWorkers::TlsWorkers(uv_loop_t* loop, size_t threads, size_t max_pending)
    : max_pending_(max_pending) {
  uv_async_init(loop, &async_, on_async);
  async_.data = this;
  for (size_t i = 0; i < threads; ++i) queues_.push_back(std::make_unique<Queue>());
  for (size_t i = 0; i < threads; ++i) threads_.emplace_back([this, i] { run(*queues_[i]); });
}

TlsWorkers::~TlsWorkers() { stop(); }

void TlsWorkers::stop() {
  if (stopped_) return;
  stopped_ = true;
  for (auto& q : queues_) {
    std::lock_guard<std::mutex> lock(q->mutex);
    q->stopping = true;
    q->ready.notify_all();
  }
  for (auto& t : threads_) t.join();
  threads_.clear();
  // Jobs never started fail; finished ones complete as usual.
  std::vector<TlsSession*> left;
  for (auto& q : queues_) {
    for (TlsSession* s : q->jobs) {
      s->job_result_ = MBEDTLS_ERR_SSL_INTERNAL_ERROR;
      left.push_back(s);
    }
    q->jobs.clear();
  }
  {
    std::lock_guard<std::mutex> lock(done_mutex_);
    left.insert(left.begin(), done_.begin(), done_.end());
    done_.clear();
  }
  for (TlsSession* s : left) s->finish_job();
  if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&async_)))
    uv_close(reinterpret_cast<uv_handle_t*>(&async_), nullptr);
}

void TlsWorkers::submit(TlsSession* session) {
  Queue& q = *queues_[session->worker_];
  std::lock_guard<std::mutex> lock(q.mutex);
  q.jobs.push_back(session);
  q.ready.notify_one();
}

bool TlsWorkers::cancel(TlsSession* session) {
  Queue& q = *queues_[session->worker_];
  std::lock_guard<std::mutex> lock(q.mutex);
  // At most tls_max_pending_handshakes entries, and rarely called: a linear search.
  auto it = std::find(q.jobs.begin(), q.jobs.end(), session);
  if (it == q.jobs.end()) return false;  // a worker runs it, or it is done
  q.jobs.erase(it);
  return true;
}

void TlsWorkers::refused(uint64_t now_ms) {
  ++refused_unreported_;
  report_refused(now_ms);
}

void TlsWorkers::report_refused(uint64_t now_ms) {
  // One line a second at most: a flood of connections must not become a flood of logs.
  if (refused_unreported_ == 0 || (refused_logged_ && now_ms - last_refused_log_ms_ < 1000)) return;
  LOG_INFO("TLS: refused %llu new connection%s since the last report: "
           "tls_max_pending_handshakes (%zu) handshakes were in progress",
           static_cast<unsigned long long>(refused_unreported_),
           refused_unreported_ == 1 ? "" : "s", max_pending_);
  refused_unreported_ = 0;
  refused_logged_ = true;
  last_refused_log_ms_ = now_ms;
}

void TlsWorkers::run(Queue& q) {
  for (;;) {
    TlsSession* session;
    {
      std::unique_lock<std::mutex> lock(q.mutex);
      q.ready.wait(lock, [&] { return q.stopping || !q.jobs.empty(); });
      if (q.stopping) return;
      session = q.jobs.front();
      q.jobs.pop_front();
    }
    session->run_job();
    {
      std::lock_guard<std::mutex> lock(done_mutex_);
      done_.push_back(session);
    }
    uv_async_send(&async_);
  }
}

void TlsWorkers::on_async(uv_async_t* async) {
  auto* self = static_cast<TlsWorkers*>(async->data);
  std::vector<TlsSession*> done;
  {
    std::lock_guard<std::mutex> lock(self->done_mutex_);
    done.swap(self->done_);
  }
  for (TlsSession* s : done) s->finish_job();
}

// --- TlsSession ---------------------------------------------------------------------------

TlsSession::TlsSession(const std::shared_ptr<const TlsGeneration>* current, size_t worker,
                       TlsWorkers& workers, TlsSessionOwner& owner)
    : generation_(*current), current_(current), worker_(worker), workers_(workers), owner_(owner) {
  workers_.handshake_started();
  mbedtls_ssl_init(&ssl_);
  if (mbedtls_ssl_setup(&ssl_, generation_->config(worker_)) != 0) set_state(State::kFailed);
  mbedtls_ssl_set_bio(&ssl_, this, bio_send, bio_recv, nullptr);
  mbedtls_ssl_set_verify(&ssl_, verify, this);
}

TlsSession::~TlsSession() {
  if (state_ == State::kHandshake) workers_.handshake_ended();
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
    self->verify_error_ = "certificate at depth " + std::to_string(depth) + " (" + subject_of(*crt) +
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

bool TlsSession::connection_closing() {
  if (!job_in_flight_ || !workers_.cancel(this)) return false;
  job_in_flight_ = false;
  std::string().swap(pending_in_);
  return true;
}

void TlsSession::run_job() { job_result_ = mbedtls_ssl_handshake(&ssl_); }

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
      set_state(State::kFailed);
      // The client has finished its side: tell it why before the connection closes.
      mbedtls_ssl_send_alert_message(&ssl_, MBEDTLS_SSL_ALERT_LEVEL_FATAL, alert);
      owner_.on_tls_handshake_done(refused);
      return;
    }
    set_state(State::kEstablished);
    // Bytes that arrived during the job are application data now.
    cipher_in_.append(pending_in_);
    std::string().swap(pending_in_);
    owner_.on_tls_handshake_done("");
    return;
  }
  if (job_result_ == MBEDTLS_ERR_SSL_WANT_READ) {
    if (!owner_.on_tls_progress()) return;  // flushed; the connection may be closing
    if (!pending_in_.empty()) {
      cipher_in_.append(pending_in_);
      pending_in_.clear();
      start_job();
    }
    return;
  }
  set_state(State::kFailed);
  std::string why = tls_error_text(job_result_);
  if (!verify_error_.empty()) why = verify_error_;
  owner_.on_tls_handshake_done("TLS handshake failed: " + why);
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
      return "TLS handshake failed: client certificate (" + subject_of(*peer) +
             ") rejected: " + info;
    }
  }
  const bool resumed = verified_chain_.empty();  // resumption skips the verify callback
  if (resumed && to_epoch(peer->valid_to) < static_cast<int64_t>(time(nullptr))) {
    alert = MBEDTLS_SSL_ALERT_MSG_CERT_EXPIRED;
    return "resumed session's client certificate has expired";
  }
  // The CRL in force now, which a SIGHUP may have replaced during the handshake (the
  // handshake verified against the generation it started with). Resumed sessions skip
  // verification altogether.
  const TlsGeneration& current = *current_ ? **current_ : *generation_;
  if (current.is_revoked(raw(peer->issuer_raw), raw(peer->serial))) {
    alert = MBEDTLS_SSL_ALERT_MSG_CERT_REVOKED;
    if (resumed) return "resumed session's client certificate is revoked";
    return "TLS handshake failed: client certificate (" + subject_of(*peer) + ") is revoked by " +
           (&current != generation_.get() ? "the CRL reloaded during the handshake" : "the CRL");
  }
  return "";
}

bool TlsSession::feed(std::string_view ciphertext, const std::function<bool(std::string_view)>& on_plain,
                      char* scratch, size_t scratch_size, std::string& error) {
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
    const int n = mbedtls_ssl_read(&ssl_, reinterpret_cast<unsigned char*>(scratch), scratch_size);
    if (n > 0) {
      if (!on_plain(std::string_view(scratch, static_cast<size_t>(n)))) return true;
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

bool TlsSession::encrypt(std::string& plain, std::string& error) {
  trimmed_ = false;
  size_t done = 0;
  while (done < plain.size()) {
    const int n = mbedtls_ssl_write(&ssl_, reinterpret_cast<const unsigned char*>(plain.data() + done),
                                    plain.size() - done);
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

void TlsSession::close_notify() {
  if (state_ == State::kEstablished && !job_in_flight_) mbedtls_ssl_close_notify(&ssl_);
}

void TlsSession::release_idle_buffers(bool trim_records) {
  if (job_in_flight_) return;  // a worker owns the buffers
  if (cipher_out_.empty()) std::string().swap(cipher_out_);
  if (cipher_in_.empty()) std::string().swap(cipher_in_);
  if (pending_in_.empty()) std::string().swap(pending_in_);
  // mbedTLS 2.28 keeps two fixed ~16.7 KiB record buffers per connection (Debian's
  // build has no MBEDTLS_SSL_VARIABLE_BUFFER_LENGTH). Between records their content is
  // dead: with nothing buffered in either direction, their pages go back to the kernel.
  if (!trim_records || state_ != State::kEstablished || trimmed_) return;
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
    info->not_after = to_epoch(peer->valid_to);
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
