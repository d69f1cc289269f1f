// TLS material: certificate, key, CAs and CRL, loaded and checked into immutable
// generations (TlsGeneration in tls.hpp).
#include "transport/tls/tls.hpp"

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

#include "base/log.hpp"
#include "base/privileges.hpp"
#include "common/x509_time.h"
#include "transport/tls/compat.hpp"

namespace mqgate {

std::string tls_error_text(int code) {
  char buf[200];
  mbedtls_strerror(code, buf, sizeof buf);
  return buf;
}

namespace {

// Curves for ECDHE, cheapest first: mbedTLS 2.28 takes the server's first curve the
// client offers, and X25519 costs the server ~1.10 ms per handshake against ~1.39 ms for
// P-256 (Debian's build, bench/RESULTS.md). mbedTLS's own default starts with P-521.
// The list also bounds the curves of EC client certificates: X25519 is never one, so
// P-256 and the others stay.
const mbedtls_ecp_group_id kCurves[] = {MBEDTLS_ECP_DP_CURVE25519, MBEDTLS_ECP_DP_SECP256R1,
                                        MBEDTLS_ECP_DP_SECP384R1, MBEDTLS_ECP_DP_SECP521R1,
                                        MBEDTLS_ECP_DP_NONE};

// Default suites: forward-secret AEAD only, AES-GCM first (AES-NI makes it the
// cheapest per record here), then ChaCha20-Poly1305.
const char* const kDefaultCiphers[] = {
    "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256",       "TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256",
    "TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384",       "TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384",
    "TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256", "TLS-ECDHE-RSA-WITH-CHACHA20-POLY1305-SHA256",
};

}  // namespace

std::optional<int64_t> x509_time_to_epoch(const mbedtls_x509_time& t) {
  int64_t seconds = 0;
  if (mqgate_x509_time_to_epoch(&t, &seconds) != 0) return std::nullopt;
  return seconds;
}

std::string x509_subject(const mbedtls_x509_crt& crt) {
  char buf[512];
  if (mbedtls_x509_dn_gets(buf, sizeof buf, &crt.subject) < 0) return "?";
  return buf;
}

namespace {

std::string format_time(const mbedtls_x509_time& t) {
  char buf[32];
  snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02dZ", t.year, t.mon, t.day, t.hour, t.min,
           t.sec);
  return buf;
}

std::string raw(const mbedtls_x509_buf& b) {
  return std::string(reinterpret_cast<const char*>(b.p), b.len);
}

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
    if (mbedtls_pk_verify_ext(crl.sig_pk, crl.sig_opts, const_cast<mbedtls_pk_context*>(&c->pk),
                              crl.sig_md, hash, mbedtls_md_get_size(md), crl.sig.p,
                              crl.sig.len) == 0)
      return true;
  }
  return false;
}

// Reads a whole certificate, key or CRL file into `data`, refusing one over `cap` bytes
// before reading it. Returns "" or why not.
std::string read_capped(const std::string& path, size_t cap, std::string& data) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    return std::string("cannot open: ") + strerror(err) + access_hint(err);
  }
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

// --- TlsGeneration: the loaded material (certificate, key, CAs, CRL)
// ----------------------------------------------------------------------

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
                                                   Errors& errors) {
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
  // "[http]" (the HTTP endpoint's material) is named as is.
  const std::string where =
      (listener.name.starts_with("[") ? listener.name : "listener \"" + listener.name + "\"") +
      ": ";
  auto fail = [&](const std::string& key, const std::string& file, const std::string& why) {
    errors.push_back(where + key + " " + file + ": " + why);
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
  // (mbedTLS parses only real dates; were this one not, it would count as expired.)
  if (x509_time_to_epoch(g->own_chain_.valid_to).value_or(INT64_MIN) < now)
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
                rc == MBEDTLS_ERR_PK_PASSWORD_REQUIRED
                    ? "the key is encrypted; give an unencrypted key"
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
        return fail("crlfile", s.crlfile,
                    "a CRL in it is not signed by any CA in cafile " + s.cafile);
      // RFC 5280 (5.1.2.5) has issuers include nextUpdate, but its syntax makes it
      // optional and mbedTLS accepts a CRL without: that one is never reported stale.
      const std::optional<int64_t> next = x509_time_to_epoch(c->next_update);
      if (!next)
        LOG_WARN("%sCRL in %s has no nextUpdate: it is never reported as stale", where.c_str(),
                 s.crlfile.c_str());
      if (next && (g->crl_next_update_ == 0 || *next < g->crl_next_update_))
        g->crl_next_update_ = *next;
      for (const mbedtls_x509_crl_entry* e = &c->entry; e != nullptr; e = e->next)
        if (e->serial.len > 0) g->revoked_.insert(raw(c->issuer_raw) + raw(e->serial));
      if (next && *next < now)
        LOG_ERROR(
            "%sCRL in %s is STALE: its nextUpdate %s has passed. The certificates it lists are "
            "still refused and other clients are still let in; refresh it (revoke_creds "
            "--refresh) and send SIGHUP",
            where.c_str(), s.crlfile.c_str(), format_time(c->next_update).c_str());
    }
    g->has_crl_ = true;
  }

  for (const auto& name : s.ciphers) {
    const int id = mbedtls_ssl_get_ciphersuite_id(name.c_str());
    if (id == 0)
      return fail("ciphers", "",
                  "\"" + name +
                      "\" is not a cipher suite mbedTLS 2.28 knows (names look like "
                      "\"TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256\")");
    g->ciphersuites_.push_back(id);
  }
  if (s.ciphers.empty())
    for (const char* name : kDefaultCiphers)
      g->ciphersuites_.push_back(mbedtls_ssl_get_ciphersuite_id(name));
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
  if (s.session_tickets && !s.ticket_key_file.empty()) {
    // Keys kept next to the persistence store: tickets resume across restarts.
    std::string why_keys;
    g->ticket_keys_ =
        TicketKeyFile::open(s.ticket_key_file, s.session_lifetime, &g->entropy_, why_keys);
    if (!g->ticket_keys_) return fail("", "", why_keys);
    rc = g->ticket_keys_->setup(g->ticket_, s.session_lifetime);
    if (rc != 0) return fail("", "", "cannot set up session tickets: " + tls_error_text(rc));
  } else if (s.session_tickets) {
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
      rc = mbedtls_ssl_config_defaults(&wp->conf, MBEDTLS_SSL_IS_SERVER,
                                       MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
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
      mbedtls_ssl_conf_session_tickets_cb(conf, mbedtls_ssl_ticket_write, mbedtls_ssl_ticket_parse,
                                          &g->ticket_);
    if (s.session_cache_size > 0)
      mbedtls_ssl_conf_session_cache(conf, &g->cache_, mbedtls_ssl_cache_get,
                                     mbedtls_ssl_cache_set);
  }
  // Ticket key rotation draws randomness later, from whichever thread issues a
  // ticket: move it to a generator that lives as long as the generation.
  if (s.session_tickets && !g->ticket_keys_)
    tls_compat::set_ticket_rng(g->ticket_, g->per_worker_[0]->drbg);

  char fingerprint[65] = {0};
  unsigned char digest[32];
  mbedtls_md(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), g->own_chain_.raw.p,
             g->own_chain_.raw.len, digest);
  for (int i = 0; i < 32; ++i)
    snprintf(fingerprint + 2 * i, 3, "%02x", digest[i]);
  const char* mode = s.client_cert == TlsConfig::ClientCert::kRequired   ? "required"
                     : s.client_cert == TlsConfig::ClientCert::kOptional ? "optional"
                                                                         : "none";
  g->summary_ =
      "certificate " + x509_subject(g->own_chain_) + " (sha256 " + fingerprint + ", expires " +
      format_time(g->own_chain_.valid_to) + "), client certificates " + mode +
      (g->has_crl_ ? ", CRL with " + std::to_string(g->revoked_.size()) + " revoked" : "");
  return g;
}

bool TlsGeneration::is_revoked(const std::string& issuer_raw, const std::string& serial_raw) const {
  return !revoked_.empty() && revoked_.count(issuer_raw + serial_raw) > 0;
}

}  // namespace mqgate
