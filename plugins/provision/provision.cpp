/*
 * provision: device certificates over MQTT, by claim and by renewal (issue 24;
 * docs/provisioning.md has the protocol, the options and the threat model).
 *
 *   [plugins.provision]
 *   uri_domain = "my.domain.name"          # required: the SPIFFE domain of claims and devices
 *   issuing_ca_key = "issuing.key"          # required: mode 0600, never logged
 *   issuing_ca_cert = "issuing.crt"         # required: the intermediate that signs
 *   issuing_ca_chain = "issuing-chain.crt"  # optional: sent after the leaf (default: the cert)
 *   allow_list = "claims.allow"             # required: "<batch> <id pattern>..." per line
 *   days = 365                              # optional: validity of what it issues
 *   renew_window_days = 30                  # optional: renewal only this close to notAfter
 *   min_rsa_bits = 2048                     # optional; EC P-256 and P-384 are accepted
 *   state_file = "provision.db"             # optional: SQLite record of what it issued
 *   max_pending = 64                        # optional: requests waiting (beyond: "busy")
 *   threads = 1                             # optional: signing threads
 *   token_file = "tokens"                   # optional: "<token> <id pattern>" per line, single use
 *
 * AUTHENTICATE lets in claim identities (a client certificate with the URI
 * spiffe://<domain>/claim/<batch>) whose client id the allow-list allows for the batch,
 * with a clean session only. AUTHORIZE keeps them to $provision/<id>/csr and
 * $provision/<id>/#, and devices to their own $provision/<id>/renew. MESSAGE checks and
 * signs on worker threads and replies to the requesting connection only.
 */
#include <fnmatch.h>
#include <mbedtls/asn1.h>
#include <mbedtls/oid.h>
#include <mbedtls/sha256.h>
#include <mbedtls/x509.h>
#include <mbedtls/x509_crt.h>
#include <sys/stat.h>

#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "csr_check.hpp"
#include "error.hpp"
#include "signer.hpp"
#include "state.hpp"
#include "x509.hpp"

#include "../common/bounded_read.h"
#include "../common/line_file.h"
#include "../common/mqgate_work_queue.h"
#include "mqgate_plugin.h"

MQGATE_PLUGIN_DECLARE_VERSION(2)

namespace mqgate::provision {
namespace {

constexpr std::string_view kPrefix = "$provision/";
constexpr const char* kCodes[] = {
    "id-not-allowed", "token-used", "token-unknown",        "bad-signature", "weak-key",
    "bad-csr",        "not-own-id", "outside-renew-window", "busy",          "internal"};
constexpr size_t kCodeCount = sizeof kCodes / sizeof kCodes[0];

// Device ids and batches go into topics and URIs: no '/', '+', '#' or controls.
bool valid_name(std::string_view s, size_t max) {
  if (s.empty() || s.size() > max) return false;
  for (unsigned char c : s)
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
          c == '_' || c == '-'))
      return false;
  return true;
}

struct Config {
  std::string domain, key, cert, chain, allow_list, state_file;
  unsigned days = 365, renew_window_days = 30;
  KeyPolicy keys;
  size_t max_pending = 64, threads = 1;
  std::map<std::string, std::vector<std::string>> batches;  // batch -> id patterns
  std::string token_file;
  std::map<std::string, std::string> tokens;  // single-use token -> device id pattern
};

// Who a claim identity is, kept with its client: the claim ("<batch>" or
// "token:<hash prefix>") and, for a token, the token (burnt when a certificate is issued).
struct ClaimData {
  std::string label, token;
};

std::string sha256_hex(const std::string& text) {
  unsigned char digest[32];
  mbedtls_sha256_ret(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest, 0);
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : digest) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

struct Counters {
  int requests = -1, issued = -1, renewals = -1;
  int refused[kCodeCount] = {};
};

struct Instance;

// One request, from MESSAGE to a worker thread.
struct Job {
  mqgate_wq_job head;  // first: the queue's
  Instance* self = nullptr;
  uint64_t reply_to = 0;
  bool renew = false;
  std::string id, claim, peer, payload, reply_topic, leaf_der;
  std::string token;  // a token claim's token: burnt on success
  std::optional<std::string> correlation;
  // The configuration and issuing CA as they were when the request came: a SIGHUP
  // reload swaps the instance's, never what a worker is using.
  std::shared_ptr<const Config> cfg;
  std::shared_ptr<Signer> signer;
};

struct Instance {
  mqgate_plugin* plugin = nullptr;
  const mqgate_host_api* api = nullptr;
  std::shared_ptr<const Config> cfg;  // replaced (on the loop) by a reload
  std::shared_ptr<Signer> signer;
  std::unique_ptr<StateFile> state;
  Counters counters;
  mqgate_work_queue queue{};
  bool queue_started = false;
  std::mutex token_mu;          // check-and-burn of a token is one step
  std::set<std::string> burnt;  // SHA-256 (hex) of the tokens used; under token_mu
};

// --- options --------------------------------------------------------------------------

struct OptionReader {
  const mqgate_host_api* api;
  const mqgate_options* options;
  char** errmsg;

  int fail(const char* key, const std::string& why) {
    *errmsg = api->mprintf("%s: %s: %s", api->opt_location(options, key), key, why.c_str());
    return MQGATE_ERR_CONFIG;
  }
  int path(const char* key, std::string& out, bool required) {
    const char* v = nullptr;
    const int rc = api->opt_path(options, key, &v);
    if (rc == MQGATE_ERR_NOT_FOUND)
      return required ? fail(key, "missing (a file path)") : MQGATE_OK;
    if (rc != MQGATE_OK || *v == '\0') return fail(key, "expected a file path (a string)");
    out = v;
    return MQGATE_OK;
  }
  int number(const char* key, int64_t min, int64_t max, size_t& out) {
    int64_t v = 0;
    const int rc = api->opt_integer(options, key, &v);
    if (rc == MQGATE_ERR_NOT_FOUND) return MQGATE_OK;
    if (rc != MQGATE_OK || v < min || v > max)
      return fail(key,
                  "expected an integer from " + std::to_string(min) + " to " + std::to_string(max));
    out = static_cast<size_t>(v);
    return MQGATE_OK;
  }
};

// The allow-list and the token file, line by line, with the bundled plugins' bounds
// (bounded_read.h: the whole file capped; line_file.h: each line capped, no NUL, blanks
// trimmed). `fn(words, where)` gets the words of each line left after '#' comments, and
// "<file>:<line>" for its messages; it returns MQGATE_OK or sets *o.errmsg.
template <typename Fn>
int for_each_line(OptionReader& o, const char* key, const std::string& path, Fn fn) {
  constexpr size_t kMaxFile = 64u << 20;
  constexpr unsigned kMaxLine = 4096;
  char err[512] = "";
  size_t len = 0;
  std::unique_ptr<char, decltype(&std::free)> data(
      bounded_read(path.c_str(), kMaxFile, &len, err, sizeof err), &std::free);
  if (!data) return o.fail(key, err);
  line_file lf;
  if (line_file_init(&lf, path.c_str(), data.get(), len, kMaxFile, kMaxLine, err, sizeof err) != 0)
    return o.fail(key, err);
  const char* line;
  size_t lb, le;
  int more;
  while ((more = line_file_next(&lf, &line, &lb, &le, err, sizeof err)) == 1) {
    std::string_view text(line + lb, le - lb);
    if (const size_t hash = text.find('#'); hash != std::string_view::npos)
      text.remove_suffix(text.size() - hash);
    std::vector<std::string> words;
    size_t at = 0;
    while ((at = text.find_first_not_of(" \t\r", at)) != std::string_view::npos) {
      const size_t end = text.find_first_of(" \t\r", at);
      words.emplace_back(text.substr(at, end == std::string_view::npos ? end : end - at));
      at = end;
    }
    if (words.empty()) continue;
    const std::string where = path + ":" + std::to_string(lf.lineno);
    if (const int rc = fn(words, where); rc != MQGATE_OK) return rc;
  }
  if (more < 0) {
    *o.errmsg = o.api->mprintf("%s", err);
    return MQGATE_ERR_CONFIG;
  }
  return MQGATE_OK;
}

// "<batch> <pattern> [<pattern>...]" per line; '#' starts a comment.
int read_allow_list(OptionReader& o, Config& c) {
  return for_each_line(o, "allow_list", c.allow_list,
                       [&](const std::vector<std::string>& words, const std::string& where) {
                         if (!valid_name(words[0], 64) || words.size() < 2) {
                           *o.errmsg = o.api->mprintf(
                               "%s: expected \"<batch> <device id pattern>...\" with a batch of "
                               "[A-Za-z0-9._-]{1,64}",
                               where.c_str());
                           return MQGATE_ERR_CONFIG;
                         }
                         auto& patterns = c.batches[words[0]];
                         patterns.insert(patterns.end(), words.begin() + 1, words.end());
                         return MQGATE_OK;
                       });
}

// "<token> <device id pattern>" per line: the token is the MQTT password of a device
// whose user name and client id are its device id.
int read_tokens(OptionReader& o, Config& c) {
  return for_each_line(o, "token_file", c.token_file,
                       [&](const std::vector<std::string>& words, const std::string& where) {
                         if (words[0].size() < 16 || words[0].size() > 256 || words.size() < 2) {
                           // The line is not echoed: it holds a secret.
                           *o.errmsg = o.api->mprintf(
                               "%s: expected \"<token> <device id pattern>\" with a token of 16 "
                               "to 256 characters",
                               where.c_str());
                           return MQGATE_ERR_CONFIG;
                         }
                         std::string pattern = words[1];  // (the rest of the line, as before)
                         for (size_t i = 2; i < words.size(); ++i)
                           pattern += " " + words[i];
                         c.tokens[words[0]] = std::move(pattern);
                         return MQGATE_OK;
                       });
}

int read_config(const mqgate_host_api* api, const mqgate_options* options, Config& c,
                char** errmsg) {
  OptionReader o{api, options, errmsg};
  static const char* kKnown[] = {"uri_domain",        "issuing_ca_key", "issuing_ca_cert",
                                 "issuing_ca_chain",  "allow_list",     "days",
                                 "renew_window_days", "min_rsa_bits",   "state_file",
                                 "max_pending",       "threads",        "token_file"};
  for (size_t i = 0; i < api->opt_count(options); ++i) {
    const char* key = api->opt_key(options, i);
    bool known = false;
    for (const char* k : kKnown)
      known |= std::strcmp(k, key) == 0;
    if (!known) return o.fail(key, "unknown option (see docs/provisioning.md)");
  }
  const char* domain = nullptr;
  if (api->opt_string(options, "uri_domain", &domain) != MQGATE_OK || *domain == '\0')
    return o.fail("uri_domain", "required: the SPIFFE domain, e.g. \"my.domain.name\"");
  c.domain = domain;
  int rc;
  if ((rc = o.path("issuing_ca_key", c.key, true)) != MQGATE_OK ||
      (rc = o.path("issuing_ca_cert", c.cert, true)) != MQGATE_OK ||
      (rc = o.path("issuing_ca_chain", c.chain, false)) != MQGATE_OK ||
      (rc = o.path("allow_list", c.allow_list, true)) != MQGATE_OK ||
      (rc = o.path("state_file", c.state_file, false)) != MQGATE_OK ||
      (rc = o.path("token_file", c.token_file, false)) != MQGATE_OK)
    return rc;
  if (!c.token_file.empty() && c.state_file.empty())
    return o.fail("token_file", "needs state_file: used tokens must stay burnt across restarts");
  if (c.chain.empty()) c.chain = c.cert;
  size_t days = c.days, window = c.renew_window_days, rsa = c.keys.min_rsa_bits;
  if ((rc = o.number("days", 1, 36500, days)) != MQGATE_OK ||
      (rc = o.number("renew_window_days", 1, 36500, window)) != MQGATE_OK ||
      (rc = o.number("min_rsa_bits", 2048, 16384, rsa)) != MQGATE_OK ||
      (rc = o.number("max_pending", 1, 100000, c.max_pending)) != MQGATE_OK ||
      (rc = o.number("threads", 1, 16, c.threads)) != MQGATE_OK)
    return rc;
  c.days = static_cast<unsigned>(days);
  c.renew_window_days = static_cast<unsigned>(window);
  c.keys.min_rsa_bits = static_cast<unsigned>(rsa);
  // The signing key is the fleet's root of trust: readable by its owner only.
  struct stat st;
  if (::stat(c.key.c_str(), &st) != 0)
    return o.fail("issuing_ca_key", "cannot read '" + c.key + "'");
  if ((st.st_mode & 077) != 0)
    return o.fail("issuing_ca_key",
                  "'" + c.key + "' is readable by others than its owner: chmod 600 it");
  if ((rc = read_allow_list(o, c)) != MQGATE_OK) return rc;
  return c.token_file.empty() ? MQGATE_OK : read_tokens(o, c);
}

// --- certificates ----------------------------------------------------------------------

// The URIs of a certificate's subjectAltName.
std::vector<std::string> san_uris(const mbedtls_x509_crt& crt) {
  std::vector<std::string> out;
  std::optional<pki::ByteView> san;
  try {
    san = pki::find_extension(crt.v3_ext, MBEDTLS_OID_SUBJECT_ALT_NAME);
  } catch (const std::exception&) {
    return out;
  }
  if (!san) return out;
  unsigned char* p = const_cast<unsigned char*>(san->data());
  const unsigned char* end = p + san->size();
  size_t len;
  if (mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0)
    return out;
  end = p + len;
  while (p < end) {
    const unsigned char tag = *p++;
    if (mbedtls_asn1_get_len(&p, end, &len) != 0) break;
    if (tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_X509_SAN_UNIFORM_RESOURCE_IDENTIFIER))
      out.emplace_back(reinterpret_cast<const char*>(p), len);
    p += len;
  }
  return out;
}

// The <name> of the first URI spiffe://<domain><path><name>, or empty.
std::string spiffe_name(const std::vector<std::string>& uris, const std::string& domain,
                        std::string_view path) {
  const std::string head = "spiffe://" + domain + std::string(path);
  for (const std::string& u : uris)
    if (u.size() > head.size() && u.compare(0, head.size(), head) == 0 &&
        valid_name(std::string_view(u).substr(head.size()), 128))
      return u.substr(head.size());
  return {};
}

struct Leaf {
  mbedtls_x509_crt crt;
  Leaf() { mbedtls_x509_crt_init(&crt); }
  ~Leaf() { mbedtls_x509_crt_free(&crt); }
  bool parse(const uint8_t* der, size_t len) {
    return der != nullptr && mbedtls_x509_crt_parse_der(&crt, der, len) == 0;
  }
};

// --- replies and the audit log -----------------------------------------------------------

void reply(Instance& s, const Job& j, const std::string& payload, const char* status,
           const char* code) {
  mqgate_user_property props[2] = {{"status", status}, {"reason", code ? code : ""}};
  mqgate_outgoing m;
  std::memset(&m, 0, sizeof m);
  m.struct_size = sizeof m;
  m.to = j.reply_to;
  m.topic = j.reply_topic.c_str();
  m.payload = reinterpret_cast<const uint8_t*>(payload.data());
  m.payload_len = payload.size();
  m.qos = 1;
  if (j.correlation) {
    m.correlation_data = reinterpret_cast<const uint8_t*>(j.correlation->data());
    m.correlation_data_len = j.correlation->size();
  }
  if (code == nullptr) m.content_type = "application/pem-certificate-chain";
  m.user_properties = props;
  m.user_properties_len = code ? 2 : 1;
  s.api->send_to_client(s.plugin, &m);
}

void refuse(Instance& s, const Job& j, const std::string& code, const std::string& text) {
  for (size_t i = 0; i < kCodeCount; ++i)
    if (code == kCodes[i]) s.api->counter_add(s.plugin, s.counters.refused[i], 1);
  s.api->log(s.plugin, MQGATE_LOG_INFO, "refused: %s client=%s peer=%s claim=%s reason=%s: %s",
             j.renew ? "renew" : "claim", j.id.c_str(), j.peer.c_str(), j.claim.c_str(),
             code.c_str(), text.c_str());
  reply(s, j, "refused: " + code + ": " + text, "refused", code.c_str());
}

// --- the worker ------------------------------------------------------------------------

// Renewal: the device's own certificate names its id, and expires within the window.
bool check_renewal(Instance& s, const Job& j) {
  Leaf leaf;
  if (!leaf.parse(reinterpret_cast<const uint8_t*>(j.leaf_der.data()), j.leaf_der.size())) {
    refuse(s, j, "not-own-id", "no client certificate to renew");
    return false;
  }
  if (spiffe_name(san_uris(leaf.crt), j.cfg->domain, "/device/") != j.id) {
    refuse(s, j, "not-own-id", "the client certificate does not name device " + j.id);
    return false;
  }
  std::time_t not_after;
  try {
    not_after = pki::to_time_t(leaf.crt.valid_to);
  } catch (const std::exception&) {
    refuse(s, j, "internal", "the client certificate's notAfter cannot be read");
    return false;
  }
  const std::time_t opens = not_after - static_cast<std::time_t>(j.cfg->renew_window_days) * 86400;
  if (std::time(nullptr) < opens) {
    refuse(s, j, "outside-renew-window",
           "renewal opens " + std::to_string(j.cfg->renew_window_days) +
               " days before the certificate expires, on " + pki::human_time(opens));
    return false;
  }
  return true;
}

void run_job(void* context, mqgate_wq_job* head, int stopping) {
  Instance& s = *static_cast<Instance*>(context);
  std::unique_ptr<Job> j(reinterpret_cast<Job*>(head));
  if (stopping) {
    refuse(s, *j, "internal", "the broker is stopping");
    return;
  }
  Csr csr;
  if (Refusal r = check_csr(j->payload, j->cfg->keys, csr)) {
    refuse(s, *j, r.code, r.text);
    return;
  }
  if (j->renew && !check_renewal(s, *j)) return;
  // A token is checked and burnt in one step with the issue: a replay, even one racing
  // the first use on another connection, gets `token-used`.
  std::unique_lock<std::mutex> token_lock(s.token_mu, std::defer_lock);
  const std::string token_hash = j->token.empty() ? "" : sha256_hex(j->token);
  if (!j->token.empty()) {
    token_lock.lock();
    if (s.burnt.count(token_hash) != 0) {
      refuse(s, *j, "token-used", "this enrolment token was used already");
      return;
    }
  }
  Issued issued;
  try {
    issued = j->signer->sign(j->id, j->cfg->domain, j->cfg->days, csr.get().pk);
  } catch (const std::exception& e) {
    s.api->log(s.plugin, MQGATE_LOG_ERROR, "signing for %s failed: %s", j->id.c_str(), e.what());
    refuse(s, *j, "internal", "the certificate could not be signed");
    return;
  }
  if (s.state) {
    IssueRecord rec{
        issued.serial,      j->id,           j->claim, j->renew ? "renew" : "claim", j->peer,
        std::time(nullptr), issued.not_after};
    std::string why;
    if (!s.state->record(rec, why)) {
      s.api->log(s.plugin, MQGATE_LOG_ERROR, "state_file: cannot record serial %s: %s",
                 issued.serial.c_str(), why.c_str());
      refuse(s, *j, "internal", "the issue could not be recorded");
      return;
    }
    if (!j->token.empty()) {
      if (!s.state->burn(token_hash, j->id, why)) {
        s.api->log(s.plugin, MQGATE_LOG_ERROR, "state_file: cannot burn a token: %s", why.c_str());
        refuse(s, *j, "internal", "the token could not be burnt");
        return;
      }
      s.burnt.insert(token_hash);
    }
  }
  s.api->counter_add(s.plugin, s.counters.issued, 1);
  if (j->renew) s.api->counter_add(s.plugin, s.counters.renewals, 1);
  s.api->log(s.plugin, MQGATE_LOG_INFO, "issued: %s client=%s peer=%s claim=%s serial=%s",
             j->renew ? "renew" : "claim", j->id.c_str(), j->peer.c_str(), j->claim.c_str(),
             issued.serial.c_str());
  reply(s, *j, issued.chain_pem, "issued", nullptr);
}

// --- events ----------------------------------------------------------------------------

const ClaimData* claim_of(Instance& s, mqgate_client* client) {
  return static_cast<const ClaimData*>(s.api->client_get_data(client, s.plugin));
}

void free_claim(void* data) {
  delete static_cast<ClaimData*>(data);
}

int deny(Instance& s, char** reason, const std::string& why) {
  *reason = s.api->strdup(why.c_str());
  return MQGATE_DENY;
}

int allow_claim(Instance& s, mqgate_evt_authenticate* evt, ClaimData claim, const std::string& id) {
  auto* data = new ClaimData(std::move(claim));
  if (s.api->client_set_data(evt->client, s.plugin, data, free_claim) != MQGATE_OK) {
    delete data;
    return deny(s, &evt->reason, "out of memory");
  }
  evt->identity = s.api->mprintf("claim:%s:%s", data->label.c_str(), id.c_str());
  return MQGATE_ALLOW;
}

// A session that outlives the connection: MQTT 5.0's Session Expiry Interval (ABI 2.5
// tells it; an older host leaves the field out, and clean_session is all there is).
bool keeps_session(const mqgate_evt_authenticate* evt) {
  return MQGATE_HAS_FIELD(evt, mqgate_evt_authenticate, session_expiry) && evt->session_expiry != 0;
}

// A device without a claim certificate that sends a known single-use token as its
// password, its device id as user name and client id.

int token_authenticate(Instance& s, mqgate_evt_authenticate* evt) {
  if (s.cfg->tokens.empty() || evt->password == nullptr || evt->username == nullptr)
    return MQGATE_ABSTAIN;
  const std::string token(reinterpret_cast<const char*>(evt->password), evt->password_len);
  const std::string id = evt->client_id ? evt->client_id : "";
  auto known = s.cfg->tokens.find(token);
  const std::string hash = sha256_hex(token);
  const std::string label = "token:" + hash.substr(0, 12);
  if (known == s.cfg->tokens.end()) {
    s.api->log(s.plugin, MQGATE_LOG_INFO,
               "refused: connect client=%s peer=%s claim=token: token-unknown", id.c_str(),
               evt->peer_address);
    evt->reason = s.api->strdup("token-unknown (left to the other plugins)");
    return MQGATE_ABSTAIN;  // perhaps a password for another plugin
  }
  bool used;
  {
    std::lock_guard<std::mutex> lock(s.token_mu);
    used = s.burnt.count(hash) != 0;
  }
  std::string why;
  if (used)
    why = "token-used: this enrolment token was used already";
  else if (evt->client_id_generated || !valid_name(id, 128) || id != evt->username)
    why = "id-not-allowed: connect with the device id as client id and user name";
  else if (!evt->clean_session || keeps_session(evt))
    why =
        "a claim identity may not keep a session (connect with a clean session and no "
        "session expiry)";
  else if (fnmatch(known->second.c_str(), id.c_str(), 0) != 0)
    why = "id-not-allowed: device id " + id + " is not allowed for this token";
  if (!why.empty()) {
    s.api->log(s.plugin, MQGATE_LOG_INFO, "refused: connect client=%s peer=%s claim=%s: %s",
               id.c_str(), evt->peer_address, label.c_str(), why.c_str());
    evt->connack_code = MQGATE_CONNACK_BAD_CREDENTIALS;
    return deny(s, &evt->reason, why);
  }
  return allow_claim(s, evt, ClaimData{label, token}, id);
}

int on_authenticate(Instance& s, mqgate_evt_authenticate* evt) {
  Leaf leaf;
  if (evt->peer_chain_len == 0 || !leaf.parse(evt->peer_chain[0].der, evt->peer_chain[0].der_len))
    return token_authenticate(s, evt);  // no certificate: a token, or not a claim identity
  const std::vector<std::string> uris = san_uris(leaf.crt);
  const std::string batch = spiffe_name(uris, s.cfg->domain, "/claim/");
  if (batch.empty()) return MQGATE_ABSTAIN;  // a device (certauth's) or someone else's
  const std::string id = evt->client_id ? evt->client_id : "";
  std::string why;
  auto known = s.cfg->batches.find(batch);
  if (!spiffe_name(uris, s.cfg->domain, "/device/").empty())
    why = "a certificate naming both a claim and a device";
  else if (known == s.cfg->batches.end())
    why = "claim batch " + batch + " is not in the allow-list";
  else if (evt->client_id_generated || !valid_name(id, 128))
    why = "id-not-allowed: connect with the device id ([A-Za-z0-9._-]{1,128}) as client id";
  else if (!evt->clean_session || keeps_session(evt))
    why =
        "a claim identity may not keep a session (connect with a clean session and no "
        "session expiry)";
  else {
    bool allowed = false;
    for (const std::string& pattern : known->second)
      allowed |= fnmatch(pattern.c_str(), id.c_str(), 0) == 0;
    if (!allowed) why = "id-not-allowed: device id " + id + " is not allowed for batch " + batch;
  }
  if (!why.empty()) {
    s.api->log(s.plugin, MQGATE_LOG_INFO, "refused: connect client=%s peer=%s claim=%s: %s",
               id.c_str(), evt->peer_address, batch.c_str(), why.c_str());
    return deny(s, &evt->reason, why);
  }
  return allow_claim(s, evt, ClaimData{batch, {}}, id);
}

int on_authorize(Instance& s, mqgate_evt_authorize* evt) {
  const ClaimData* claim = claim_of(s, evt->client);
  const std::string topic = evt->topic ? evt->topic : "";
  const bool ours = topic.compare(0, kPrefix.size(), kPrefix) == 0;
  if (claim == nullptr && !ours) return MQGATE_ABSTAIN;  // other clients' other topics
  const std::string own = std::string(kPrefix) + s.api->client_id(evt->client) + "/";
  const std::string own_all = own + "#";
  switch (evt->action) {
    case MQGATE_ACTION_PUBLISH:
      if (!evt->deferrable) return deny(s, &evt->reason, "no will on $provision topics");
      if (topic == own + (claim ? "csr" : "renew")) return MQGATE_ALLOW;
      break;
    case MQGATE_ACTION_SUBSCRIBE:
      if (s.api->filter_covers(own_all.c_str(), topic.c_str())) return MQGATE_ALLOW;
      break;
    case MQGATE_ACTION_RECEIVE:
      if (s.api->topic_matches(own_all.c_str(), topic.c_str())) return MQGATE_ALLOW;
      break;
  }
  return deny(s, &evt->reason,
              claim
                  ? "a claim identity may only publish to " + own + "csr and subscribe under " + own
                  : "only " + own + "renew and " + own + "# are this client's");
}

int on_message(Instance& s, mqgate_evt_message* evt) {
  s.api->counter_add(s.plugin, s.counters.requests, 1);
  const ClaimData* claim = claim_of(s, evt->client);
  const std::string id = s.api->client_id(evt->client);
  const std::string own = std::string(kPrefix) + id + "/";
  const std::string topic = evt->topic;
  const bool renew = topic == own + "renew";
  if (!(renew ? claim == nullptr : claim != nullptr && topic == own + "csr")) {
    evt->reason_code = 0x87;
    return deny(s, &evt->reason, "not this client's request topic");
  }
  auto j = std::make_unique<Job>();
  j->self = &s;
  j->cfg = s.cfg;
  j->signer = s.signer;
  j->reply_to = evt->reply_to;
  j->renew = renew;
  j->id = id;
  j->claim = claim ? claim->label : "-";
  if (claim) j->token = claim->token;
  j->peer = s.api->client_peer_address(evt->client);
  j->payload.assign(reinterpret_cast<const char*>(evt->payload), evt->payload_len);
  j->reply_topic = own + "reply";
  if (evt->response_topic != nullptr) {
    j->reply_topic = evt->response_topic;
    if (j->reply_topic.compare(0, own.size(), own) != 0 ||
        !s.api->topic_matches((own + "#").c_str(), j->reply_topic.c_str())) {
      evt->reason_code = 0x87;
      evt->reason_string = s.api->mprintf("the response topic must be under %s", own.c_str());
      return deny(s, &evt->reason, "response topic outside " + own);
    }
  }
  if (evt->correlation_data != nullptr)
    j->correlation.emplace(reinterpret_cast<const char*>(evt->correlation_data),
                           evt->correlation_data_len);
  if (renew) {
    size_t n = 0;
    const mqgate_cert* chain = s.api->client_peer_chain(evt->client, &n);
    if (n > 0) j->leaf_der.assign(reinterpret_cast<const char*>(chain[0].der), chain[0].der_len);
  }
  s.api->log(s.plugin, MQGATE_LOG_INFO, "request: %s client=%s peer=%s claim=%s",
             renew ? "renew" : "claim", id.c_str(), j->peer.c_str(), j->claim.c_str());
  if (mqgate_wq_push(&s.queue, &j->head) != 0) {
    refuse(s, *j, "busy", "too many requests are waiting; try again later");
    return MQGATE_ALLOW;  // taken: the answer is the reply
  }
  j.release();  // the queue's now
  return MQGATE_ALLOW;
}

// SIGHUP: the options, the allow-list, the token file and the issuing CA are read again;
// a bad set is refused (the old one stays). Requests already queued finish with what
// they started with. The queue's size and threads and the state file stay until a
// restart. (The files are small; they are read on the loop as the acl plugin does.)
int on_reload(Instance& s, mqgate_evt_reload* evt) {
  auto cfg = std::make_shared<Config>();
  if (int rc = read_config(s.api, evt->options, *cfg, &evt->errmsg); rc != MQGATE_OK) return rc;
  std::shared_ptr<Signer> signer;
  try {
    signer = std::make_shared<Signer>(cfg->key, cfg->cert, cfg->chain);
  } catch (const std::exception& e) {
    evt->errmsg = s.api->mprintf("issuing CA: %s", e.what());
    return MQGATE_ERR_CONFIG;
  }
  if (cfg->max_pending != s.cfg->max_pending || cfg->threads != s.cfg->threads ||
      cfg->state_file != s.cfg->state_file)
    s.api->log(s.plugin, MQGATE_LOG_WARNING,
               "reload: max_pending, threads and state_file change at the next restart");
  // Those stay as they are until then.
  cfg->max_pending = s.cfg->max_pending;
  cfg->threads = s.cfg->threads;
  cfg->state_file = s.cfg->state_file;
  s.cfg = std::move(cfg);
  s.signer = std::move(signer);
  s.api->log(s.plugin, MQGATE_LOG_INFO,
             "reloaded: uri_domain=%s issuing CA %s, %zu claim batch(es), %zu token(s)",
             s.cfg->domain.c_str(), s.cfg->cert.c_str(), s.cfg->batches.size(),
             s.cfg->tokens.size());
  return MQGATE_OK;
}

int on_event(int event, void* data, void* instance) try {
  Instance& s = *static_cast<Instance*>(instance);
  switch (event) {
    case MQGATE_EVT_AUTHENTICATE:
      return on_authenticate(s, static_cast<mqgate_evt_authenticate*>(data));
    case MQGATE_EVT_AUTHORIZE:
      return on_authorize(s, static_cast<mqgate_evt_authorize*>(data));
    case MQGATE_EVT_MESSAGE:
      return on_message(s, static_cast<mqgate_evt_message*>(data));
    case MQGATE_EVT_RELOAD:
      return on_reload(s, static_cast<mqgate_evt_reload*>(data));
  }
  return MQGATE_OK;
} catch (const std::exception&) {  // out of memory: nothing may cross into the C host
  return MQGATE_DENY;
}

void destroy(Instance* s) {
  if (s->queue_started) mqgate_wq_stop(&s->queue);
  delete s;
}

int init(mqgate_plugin* plugin, const mqgate_host_api* api, const mqgate_options* options,
         void** instance, char** errmsg) {
  if (!MQGATE_API_HAS(api, claim_topic) || !MQGATE_API_HAS(api, counter_add)) {
    *errmsg = api->mprintf("needs a broker with plugin ABI 2.5 (broker-owned topics)");
    return MQGATE_ERR_UNSUPPORTED;
  }
  auto s = std::make_unique<Instance>();
  s->plugin = plugin;
  s->api = api;
  auto cfg = std::make_shared<Config>();
  if (int rc = read_config(api, options, *cfg, errmsg); rc != MQGATE_OK) return rc;
  try {
    s->signer = std::make_shared<Signer>(cfg->key, cfg->cert, cfg->chain);
  } catch (const std::exception& e) {
    *errmsg = api->mprintf("issuing CA: %s", e.what());
    return MQGATE_ERR_CONFIG;
  }
  s->cfg = std::move(cfg);
  if (!s->cfg->state_file.empty()) {
    s->state = std::make_unique<StateFile>();
    std::string why;
    std::vector<std::string> burnt;
    if (!s->state->open(s->cfg->state_file, why) || !s->state->burnt_tokens(burnt, why)) {
      *errmsg =
          api->mprintf("%s: state_file: %s", api->opt_location(options, "state_file"), why.c_str());
      return MQGATE_ERR_CONFIG;
    }
    s->burnt.insert(burnt.begin(), burnt.end());
  }
  Counters& c = s->counters;
  c.requests = api->register_counter(plugin, "requests", "Certificate requests received.");
  c.issued = api->register_counter(plugin, "issued", "Certificates issued (claims and renewals).");
  c.renewals = api->register_counter(plugin, "renewals", "Certificates issued by renewal.");
  for (size_t i = 0; i < kCodeCount; ++i) {
    std::string name = std::string("refused_") + kCodes[i];
    for (char& ch : name)
      if (ch == '-') ch = '_';
    c.refused[i] = api->register_counter(plugin, name.c_str(), "Requests refused, by reason.");
  }
  for (int event :
       {MQGATE_EVT_AUTHENTICATE, MQGATE_EVT_AUTHORIZE, MQGATE_EVT_MESSAGE, MQGATE_EVT_RELOAD})
    if (api->register_event(plugin, event, on_event) != MQGATE_OK) {
      *errmsg = api->mprintf("cannot register the plugin's event callbacks");
      return MQGATE_ERR_PLUGIN;
    }
  if (api->claim_topic(plugin, "$provision/+/csr") != MQGATE_OK ||
      api->claim_topic(plugin, "$provision/+/renew") != MQGATE_OK) {
    *errmsg = api->mprintf("cannot claim $provision/+/csr and $provision/+/renew (see the log)");
    return MQGATE_ERR_CONFIG;
  }
  if (mqgate_wq_start(&s->queue, s->cfg->threads, s->cfg->max_pending, run_job, s.get()) != 0) {
    *errmsg = api->mprintf("cannot start the signing threads");
    return MQGATE_ERR_PLUGIN;
  }
  s->queue_started = true;
  api->log(plugin, MQGATE_LOG_INFO,
           "uri_domain=%s issuing CA %s, %zu claim batch(es), days=%u renew_window_days=%u "
           "max_pending=%zu threads=%zu tokens=%zu state_file=%s",
           s->cfg->domain.c_str(), s->cfg->cert.c_str(), s->cfg->batches.size(), s->cfg->days,
           s->cfg->renew_window_days, s->cfg->max_pending, s->cfg->threads, s->cfg->tokens.size(),
           s->cfg->state_file.empty() ? "(none)" : s->cfg->state_file.c_str());
  *instance = s.release();
  return MQGATE_OK;
}

}  // namespace
}  // namespace mqgate::provision

MQGATE_PLUGIN_EXPORT int mqgate_plugin_init(mqgate_plugin* plugin, const mqgate_host_api* api,
                                            const mqgate_options* options, void** instance,
                                            char** errmsg) {
  try {
    return mqgate::provision::init(plugin, api, options, instance, errmsg);
  } catch (const std::bad_alloc&) {
    return MQGATE_ERR_NOMEM;
  }
}

MQGATE_PLUGIN_EXPORT void mqgate_plugin_shutdown(void* instance) {
  mqgate::provision::destroy(static_cast<mqgate::provision::Instance*>(instance));
}
