// device_enroll: a device gets its certificate from the broker over MQTT, with a key
// that never leaves it (docs/provisioning.md).
//
// It is also the reference for firmware writers, so it reads top to bottom like
// mbedTLS's own programs/ssl/ssl_client1.c: every step is plain mbedTLS plus a tiny MQTT
// encoder and decoder, nothing from the broker. Only the command line (with the tools'
// device-id rule) and the atomic writing of the two output files come from libpki.
//
//   1. make a key pair (EC P-256 by default) and a CSR for it
//   2. TCP + TLS to the broker: our claim certificate (or, with --renew, our current
//      one) as client certificate, the broker checked against --cafile
//   3. MQTT CONNECT, client id = device id, clean start
//   4. SUBSCRIBE to the reply topic $provision/<id>/reply
//   5. PUBLISH the CSR (QoS 1) to $provision/<id>/csr (or /renew), with a response
//      topic and correlation data under MQTT 5
//   6. wait for the reply carrying our correlation data
//   7. refused: say why and exit 3; issued: check the chain (it verifies up to --cafile,
//      holds our public key, names our device id), then write <out>.key and <out>.crt
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/oid.h>
#include <mbedtls/pem.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/rsa.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>
#include <mbedtls/x509_csr.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "cli.hpp"
#include "error.hpp"
#include "names.hpp"
#include "output.hpp"

using namespace mqgate::pki;

namespace {

// Exit codes (docs/pki-tools.md): 0 enrolled, 1 local error (files, keys), 2 usage,
// and these.
constexpr int kExitRefused = 3;   // the broker refused: the request, or the MQTT session
constexpr int kExitNetwork = 4;   // cannot connect, or the connection dropped
constexpr int kExitTls = 5;       // TLS handshake or certificate failure
constexpr int kExitTimeout = 6;   // no reply within --timeout
constexpr int kExitBadReply = 7;  // a malformed reply, or a certificate that fails the checks

// The largest MQTT packet we accept: a certificate chain is a few KiB.
constexpr size_t kMaxPacket = 64 * 1024;

// A refusal from the provisioning service: "refused: <code>: <text>".
struct Refused : Error {
  explicit Refused(const std::string& what) : Error(what, kExitRefused) {}
};

std::string tls_message(int ret) {
  char text[200];
  mbedtls_strerror(ret, text, sizeof text);
  return text;
}

// mbedTLS's reasons a certificate did not verify, on one line.
std::string verify_text(uint32_t flags) {
  char info[512];
  mbedtls_x509_crt_verify_info(info, sizeof info, "", flags);
  std::string text = info;
  while (!text.empty() && text.back() == '\n')
    text.pop_back();
  for (char& c : text)
    if (c == '\n') c = ';';
  return text;
}

// Text from the network, made safe to print: printable ASCII, at most 300 characters.
std::string printable(const std::string& s) {
  std::string out;
  for (char c : s.substr(0, 300))
    out += (c >= 0x20 && c < 0x7f) ? c : '?';
  return out;
}

// --- The connection: TCP, TLS, and reads bounded by the deadline ----------------------

using Clock = std::chrono::steady_clock;

struct Tls {
  mbedtls_net_context net;
  mbedtls_ssl_context ssl;
  mbedtls_ssl_config conf;
  mbedtls_x509_crt ca, own_cert;
  mbedtls_pk_context own_key;
  std::string peer;  // "host:port" for messages
  Clock::time_point deadline;

  Tls() {
    mbedtls_net_init(&net);
    mbedtls_ssl_init(&ssl);
    mbedtls_ssl_config_init(&conf);
    mbedtls_x509_crt_init(&ca);
    mbedtls_x509_crt_init(&own_cert);
    mbedtls_pk_init(&own_key);
  }
  ~Tls() {
    mbedtls_ssl_free(&ssl);
    mbedtls_net_free(&net);
    mbedtls_ssl_config_free(&conf);
    mbedtls_x509_crt_free(&ca);
    mbedtls_x509_crt_free(&own_cert);
    mbedtls_pk_free(&own_key);
  }
  Tls(const Tls&) = delete;
  Tls& operator=(const Tls&) = delete;

  // Every read waits at most until the deadline (mbedtls_net_recv_timeout).
  void arm_timeout(const char* waiting_for) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) throw Error("timed out " + std::string(waiting_for), kExitTimeout);
    mbedtls_ssl_conf_read_timeout(&conf, static_cast<uint32_t>(left.count()));
  }

  // A failed TLS read or write: which kind of failure decides the exit code.
  [[noreturn]] void fail(int ret, const char* doing) {
    if (ret == MBEDTLS_ERR_SSL_TIMEOUT) {
      throw Error("timed out " + std::string(doing) + " (" + peer + ")", kExitTimeout);
    }
    if (ret == 0 || ret == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || ret == MBEDTLS_ERR_NET_CONN_RESET ||
        ret == MBEDTLS_ERR_NET_RECV_FAILED || ret == MBEDTLS_ERR_NET_SEND_FAILED) {
      throw Error(peer + " closed the connection while " + doing, kExitNetwork);
    }
    throw Error("TLS error with " + peer + " while " + doing + ": " + tls_message(ret), kExitTls);
  }

  void write_all(const std::string& data, const char* doing) {
    size_t done = 0;
    while (done < data.size()) {
      int ret = mbedtls_ssl_write(&ssl, reinterpret_cast<const unsigned char*>(data.data()) + done,
                                  data.size() - done);
      if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE) continue;
      if (ret <= 0) fail(ret, doing);
      done += static_cast<size_t>(ret);
    }
  }

  void read_exact(unsigned char* out, size_t len, const char* doing) {
    size_t done = 0;
    while (done < len) {
      arm_timeout(doing);
      int ret = mbedtls_ssl_read(&ssl, out + done, len - done);
      if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE) continue;
      if (ret <= 0) fail(ret, doing);
      done += static_cast<size_t>(ret);
    }
  }
};

// --- A tiny MQTT 3.1.1 / 5 encoder and decoder ---------------------------------------

void put_u16(std::string& b, size_t v) {
  b += static_cast<char>((v >> 8) & 0xff);
  b += static_cast<char>(v & 0xff);
}
void put_str(std::string& b, const std::string& s) {  // UTF-8 string or binary data
  put_u16(b, s.size());
  b += s;
}
void put_varint(std::string& b, size_t v) {
  do {
    unsigned char byte = v % 128;
    v /= 128;
    b += static_cast<char>(v > 0 ? byte | 0x80 : byte);
  } while (v > 0);
}
std::string packet(unsigned char first_byte, const std::string& body) {
  std::string p(1, static_cast<char>(first_byte));
  put_varint(p, body.size());
  return p + body;
}

struct Packet {
  unsigned char first_byte = 0;  // type << 4 | flags
  std::string body;
  unsigned type() const { return first_byte >> 4; }
};

Packet read_packet(Tls& tls, const char* waiting_for) {
  Packet p;
  tls.read_exact(&p.first_byte, 1, waiting_for);
  size_t len = 0;
  for (int i = 0;; ++i) {
    unsigned char byte;
    tls.read_exact(&byte, 1, waiting_for);
    len |= static_cast<size_t>(byte & 0x7f) << (7 * i);
    if (!(byte & 0x80)) break;
    if (i == 3) throw Error("malformed MQTT packet length from " + tls.peer, kExitBadReply);
  }
  if (len > kMaxPacket) {
    throw Error("a " + std::to_string(len) + "-byte MQTT packet from " + tls.peer +
                    " is over the limit of " + std::to_string(kMaxPacket),
                kExitBadReply);
  }
  p.body.resize(len);
  tls.read_exact(reinterpret_cast<unsigned char*>(p.body.data()), len, waiting_for);
  return p;
}

// Reads a packet body front to back; any overrun is a malformed packet.
struct Reader {
  const std::string& b;
  size_t pos = 0;
  const std::string& peer;

  void need(size_t n) {
    if (b.size() - pos < n) throw Error("malformed MQTT packet from " + peer, kExitBadReply);
  }
  unsigned u8() {
    need(1);
    return static_cast<unsigned char>(b[pos++]);
  }
  unsigned u16() {
    unsigned hi = u8();
    return hi << 8 | u8();
  }
  std::string bytes(size_t n) {
    need(n);
    pos += n;
    return b.substr(pos - n, n);
  }
  std::string str() { return bytes(u16()); }
  size_t varint() {
    size_t v = 0;
    for (int i = 0; i < 4; ++i) {
      unsigned byte = u8();
      v |= static_cast<size_t>(byte & 0x7f) << (7 * i);
      if (!(byte & 0x80)) return v;
    }
    throw Error("malformed MQTT variable integer from " + peer, kExitBadReply);
  }
  std::string rest() { return bytes(b.size() - pos); }
};

// The reason codes a device is likely to meet; the number is always printed.
std::string reason_text(unsigned code, bool v5) {
  if (!v5) {
    static const char* const v3[] = {
        "accepted",           "unacceptable protocol version", "identifier rejected",
        "server unavailable", "bad user name or password",     "not authorized"};
    return code < 6 ? v3[code] : "unknown";
  }
  switch (code) {
    case 0x80:
      return "unspecified error";
    case 0x85:
      return "client identifier not valid";
    case 0x87:
      return "not authorized";
    case 0x89:
      return "server busy";
    case 0x8A:
      return "banned";
    case 0x8F:
      return "topic filter invalid";
    case 0x90:
      return "topic name invalid";
    case 0x97:
      return "quota exceeded";
    default:
      return "see the MQTT 5 reason codes";
  }
}
std::string reason(unsigned code, bool v5) {
  char hex[8];
  std::snprintf(hex, sizeof hex, "0x%02X", code);
  return std::string("reason code ") + hex + " (" + reason_text(code, v5) + ")";
}

// A PUBLISH the broker sent us, with the MQTT 5 properties the reply uses.
struct Message {
  std::string topic, payload, correlation, status, reason_code;
  bool retained = false;
};

Message parse_publish(Tls& tls, const Packet& p, bool v5) {
  Reader r{p.body, 0, tls.peer};
  Message m;
  const unsigned qos = (p.first_byte >> 1) & 3;
  m.retained = p.first_byte & 1;
  m.topic = r.str();
  unsigned packet_id = 0;
  if (qos > 0) packet_id = r.u16();
  if (qos > 1) throw Error("unexpected QoS 2 message from " + tls.peer, kExitBadReply);
  if (v5) {
    const size_t end = r.varint() + r.pos;
    while (r.pos < end) {
      switch (r.u8()) {
        case 0x01:  // payload format indicator
          r.u8();
          break;
        case 0x02:  // message expiry interval
          r.bytes(4);
          break;
        case 0x03:  // content type
        case 0x08:  // response topic
          r.str();
          break;
        case 0x09:  // correlation data
          m.correlation = r.str();
          break;
        case 0x0B:  // subscription identifier
          r.varint();
          break;
        case 0x23:  // topic alias
          r.u16();
          break;
        case 0x26: {  // user property
          std::string key = r.str(), value = r.str();
          if (key == "status") m.status = value;
          if (key == "reason") m.reason_code = value;
          break;
        }
        default:
          throw Error("unknown MQTT property in a message from " + tls.peer, kExitBadReply);
      }
    }
    if (r.pos != end) throw Error("malformed MQTT properties from " + tls.peer, kExitBadReply);
  }
  m.payload = r.rest();
  if (qos == 1) {  // acknowledge, so the broker does not send it again
    std::string ack;
    put_u16(ack, packet_id);
    tls.write_all(packet(0x40, ack), "acknowledging the reply");
  }
  return m;
}

// --- The issued certificate ---------------------------------------------------------

// True if the certificate's subjectAltName holds the URI spiffe://<domain>/device/<id>.
// mbedTLS 2.28 does not list URIs in crt->subject_alt_names, so the extension is read.
bool names_device(const mbedtls_x509_crt& crt, const std::string& device_id) {
  static const unsigned char kSanOid[] = {0x55, 0x1d, 0x11};
  const std::string suffix = "/device/" + device_id;
  unsigned char* p = crt.v3_ext.p;
  const unsigned char* end = p + crt.v3_ext.len;
  size_t len = 0;
  if (p == nullptr || mbedtls_asn1_get_tag(&p, end, &len, 0x30) != 0) return false;
  while (p < end) {  // Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue }
    if (mbedtls_asn1_get_tag(&p, end, &len, 0x30) != 0) return false;
    unsigned char* next = p + len;
    size_t oid_len = 0, value_len = 0;
    int critical = 0;
    if (mbedtls_asn1_get_tag(&p, next, &oid_len, MBEDTLS_ASN1_OID) != 0) return false;
    const bool is_san = oid_len == sizeof kSanOid && std::memcmp(p, kSanOid, oid_len) == 0;
    p += oid_len;
    if (p < next && *p == MBEDTLS_ASN1_BOOLEAN && mbedtls_asn1_get_bool(&p, next, &critical) != 0)
      return false;
    if (mbedtls_asn1_get_tag(&p, next, &value_len, MBEDTLS_ASN1_OCTET_STRING) != 0) return false;
    if (is_san) {  // GeneralNames ::= SEQUENCE OF GeneralName; a URI is [6] IA5String
      const unsigned char* names_end = p + value_len;
      if (mbedtls_asn1_get_tag(&p, names_end, &len, 0x30) != 0) return false;
      while (p < names_end) {
        const unsigned char tag = *p++;
        if (mbedtls_asn1_get_len(&p, names_end, &len) != 0) return false;
        std::string name(reinterpret_cast<const char*>(p), len);
        if (tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 6) && name.rfind("spiffe://", 0) == 0 &&
            name.size() > 9 + suffix.size() &&
            name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0 &&
            name.find('/', 9) == name.size() - suffix.size()) {
          return true;
        }
        p += len;
      }
      return false;
    }
    p = next;
  }
  return false;
}

// --- The enrolment ------------------------------------------------------------------

void enroll(int argc, char** argv) {
  CommandLine cl("device_enroll",
                 "Get this device's certificate from the broker: make a key, send a certificate "
                 "request over MQTT with the claim certificate (or, with --renew, the current "
                 "one), check the certificate issued, write <out>.key and <out>.crt.");
  cl.option("host", "broker host name, checked against its certificate [default: localhost]");
  cl.option("port", "broker TLS port [default: 8883]", "N");
  cl.option("cafile",
            "the root CA certificate the broker and the issued chain must verify "
            "against [required]",
            "FILE");
  cl.option("device-id",
            "this device's id: the MQTT client id and the certificate's name "
            "[required]");
  cl.option("claim-cert",
            "claim certificate (with any intermediates after it) [required "
            "unless --renew]",
            "FILE");
  cl.option("claim-key", "the claim certificate's key [required unless --renew]", "FILE");
  cl.flag("renew", "renew: connect with --cert/--key, the device's current credentials");
  cl.option("cert", "with --renew: the device's current certificate chain", "FILE");
  cl.option("key", "with --renew: the device's current key", "FILE");
  cl.option("out", "write <out>.key and <out>.crt [default: the device id]", "PATH");
  cl.flag("force", "overwrite existing output files");
  cl.option("timeout",
            "seconds to wait for the connection and the reply, 1 to 3600 "
            "[default: 30]",
            "N");
  cl.option("mqtt", "MQTT version: 5 or 3.1.1 [default: 5]", "5|3.1.1");
  add_key_options(cl, KeyType::kEc);
  cl.parse(argc, argv);

  // --- 0. Options -------------------------------------------------------------------
  const std::string host = cl.value_or("host", "localhost");
  const std::string port = std::to_string(cl.number("port", 8883, 1, 65535));
  const std::string cafile = cl.required("cafile");
  const std::string device_id = cl.required("device-id");
  check_device_id(device_id);  // it goes into topic names and file names
  const bool renew = cl.is_set("renew");
  const std::string cert_opt = renew ? "cert" : "claim-cert", key_opt = renew ? "key" : "claim-key";
  if (cl.has(renew ? "claim-cert" : "cert") || cl.has(renew ? "claim-key" : "key"))
    throw UsageError(renew ? "--renew connects with --cert/--key, not a claim"
                           : "--cert/--key go with --renew; a first enrolment uses --claim-cert");
  const std::string cert_file = cl.required(cert_opt), key_file = cl.required(key_opt);
  const std::string mqtt = cl.value_or("mqtt", "5");
  if (mqtt != "5" && mqtt != "3.1.1") throw UsageError("--mqtt '" + mqtt + "' must be 5 or 3.1.1");
  const bool v5 = mqtt == "5";
  const unsigned timeout_s = cl.number("timeout", 30, 1, 3600);
  const KeySpec key_spec_wanted = key_spec(cl, KeyType::kEc);
  const std::string out_prefix = cl.value_or("out", device_id);
  const std::string reply_topic = "$provision/" + device_id + "/reply";
  const std::string request_topic = "$provision/" + device_id + (renew ? "/renew" : "/csr");

  // The outputs first, so that a bad path fails before any work (libpki's atomic files).
  OutputSet out(cl.is_set("force"));
  const size_t out_key = out.add(out_prefix + ".key", 0600);
  const size_t out_crt = out.add(out_prefix + ".crt", 0644);

  // --- 1. Random numbers, the device's key pair and its CSR ---------------------------
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
  mbedtls_entropy_init(&entropy);
  mbedtls_ctr_drbg_init(&drbg);
  struct Cleanup {
    mbedtls_entropy_context* e;
    mbedtls_ctr_drbg_context* d;
    ~Cleanup() {
      mbedtls_ctr_drbg_free(d);
      mbedtls_entropy_free(e);
    }
  } cleanup{&entropy, &drbg};
  const char pers[] = "mqgate device_enroll";
  check_mbedtls(mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy,
                                      reinterpret_cast<const unsigned char*>(pers), sizeof pers),
                "cannot seed the random number generator");

  mbedtls_pk_context key;  // the device's new key: written to <out>.key, sent nowhere
  mbedtls_pk_init(&key);
  struct KeyCleanup {
    mbedtls_pk_context* k;
    ~KeyCleanup() { mbedtls_pk_free(k); }
  } key_cleanup{&key};
  if (key_spec_wanted.type == KeyType::kEc) {
    check_mbedtls(mbedtls_pk_setup(&key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)), "EC key");
    check_mbedtls(mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(key),
                                      mbedtls_ctr_drbg_random, &drbg),
                  "EC key generation failed");
  } else {
    check_mbedtls(mbedtls_pk_setup(&key, mbedtls_pk_info_from_type(MBEDTLS_PK_RSA)), "RSA key");
    check_mbedtls(mbedtls_rsa_gen_key(mbedtls_pk_rsa(key), mbedtls_ctr_drbg_random, &drbg,
                                      key_spec_wanted.rsa_bits, 65537),
                  "RSA key generation failed");
  }

  // The CSR proves we hold the key. Its subject is only a hint: the issuer sets the
  // certificate's names from the device id we connect with.
  std::string csr(4096 + 2 * MBEDTLS_MPI_MAX_SIZE, '\0');
  {
    mbedtls_x509write_csr req;
    mbedtls_x509write_csr_init(&req);
    mbedtls_x509write_csr_set_md_alg(&req, MBEDTLS_MD_SHA256);
    mbedtls_x509write_csr_set_key(&req, &key);
    int ret = mbedtls_x509write_csr_set_subject_name(&req, ("CN=" + device_id).c_str());
    if (ret == 0) {
      ret = mbedtls_x509write_csr_pem(&req, reinterpret_cast<unsigned char*>(csr.data()),
                                      csr.size(), mbedtls_ctr_drbg_random, &drbg);
    }
    mbedtls_x509write_csr_free(&req);
    check_mbedtls(ret, "cannot write the certificate request");
    csr.resize(std::strlen(csr.c_str()));
  }

  // --- 2. TLS: our certificate out, the broker's checked against --cafile ------------
  Tls tls;
  tls.peer = host + ":" + port;
  tls.deadline = Clock::now() + std::chrono::seconds(timeout_s);
  int ret = mbedtls_x509_crt_parse_file(&tls.ca, cafile.c_str());
  if (ret != 0) throw Error("cannot load --cafile '" + cafile + "': " + tls_message(ret));
  ret = mbedtls_x509_crt_parse_file(&tls.own_cert, cert_file.c_str());
  if (ret != 0)
    throw Error("cannot load --" + cert_opt + " '" + cert_file + "': " + tls_message(ret));
  ret = mbedtls_pk_parse_keyfile(&tls.own_key, key_file.c_str(), nullptr);
  if (ret != 0)
    throw Error("cannot load --" + key_opt + " '" + key_file + "': " + tls_message(ret));

  if (mbedtls_pk_check_pair(&tls.own_cert.pk, &tls.own_key) != 0) {
    throw Error("--" + key_opt + " '" + key_file + "' is not the key of --" + cert_opt + " '" +
                cert_file + "'");
  }

  ret = mbedtls_net_connect(&tls.net, host.c_str(), port.c_str(), MBEDTLS_NET_PROTO_TCP);
  if (ret != 0)
    throw Error("cannot connect to " + tls.peer + ": " + tls_message(ret), kExitNetwork);
  // Small TLS and MQTT writes go out at once: without this, each waits for the broker's
  // delayed ACK (about 40 ms of every enrolment, measured by bench/provision/enroll_e2e).
  const int nodelay = 1;
  setsockopt(tls.net.fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, sizeof nodelay);

  check_mbedtls(
      mbedtls_ssl_config_defaults(&tls.conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                  MBEDTLS_SSL_PRESET_DEFAULT),
      "TLS configuration");
  mbedtls_ssl_conf_authmode(&tls.conf, MBEDTLS_SSL_VERIFY_REQUIRED);
  mbedtls_ssl_conf_ca_chain(&tls.conf, &tls.ca, nullptr);
  mbedtls_ssl_conf_rng(&tls.conf, mbedtls_ctr_drbg_random, &drbg);
  check_mbedtls(mbedtls_ssl_conf_own_cert(&tls.conf, &tls.own_cert, &tls.own_key),
                "TLS client certificate");
  check_mbedtls(mbedtls_ssl_setup(&tls.ssl, &tls.conf), "TLS setup");
  check_mbedtls(mbedtls_ssl_set_hostname(&tls.ssl, host.c_str()), "TLS server name");
  mbedtls_ssl_set_bio(&tls.ssl, &tls.net, mbedtls_net_send, nullptr, mbedtls_net_recv_timeout);
  tls.arm_timeout("in the TLS handshake");
  while ((ret = mbedtls_ssl_handshake(&tls.ssl)) != 0) {
    if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE) continue;
    if (ret == MBEDTLS_ERR_SSL_TIMEOUT) tls.fail(ret, "in the TLS handshake");
    if (uint32_t flags = mbedtls_ssl_get_verify_result(&tls.ssl); flags != 0 && flags != ~0u) {
      throw Error("the certificate of " + tls.peer + " does not verify against --cafile '" +
                      cafile + "': " + verify_text(flags),
                  kExitTls);
    }
    // The broker ends the handshake when it does not accept our certificate.
    throw Error("TLS handshake with " + tls.peer + " failed: " + tls_message(ret) +
                    " (does the broker accept --" + cert_opt + " '" + cert_file +
                    "'? A certificate from an issuing CA goes with it: leaf, then issuing CA)",
                kExitTls);
  }

  // --- 3. MQTT CONNECT: client id = device id, clean start, no session kept ---------
  std::string body;
  put_str(body, "MQTT");
  body += static_cast<char>(v5 ? 5 : 4);  // protocol level
  body += static_cast<char>(0x02);        // clean start / clean session
  put_u16(body, timeout_s + 30);          // keep alive: longer than we will wait
  if (v5) put_varint(body, 0);            // no properties: the session expires at once
  put_str(body, device_id);
  tls.write_all(packet(0x10, body), "sending CONNECT");
  Packet p = read_packet(tls, "waiting for CONNACK");
  if (p.type() != 2 || p.body.size() < 2) throw Error("no CONNACK from " + tls.peer, kExitBadReply);
  if (unsigned code = static_cast<unsigned char>(p.body[1]); code != 0) {
    throw Error(
        tls.peer + " refused the connection of '" + device_id + "': CONNACK " + reason(code, v5),
        kExitRefused);
  }

  // --- 4. SUBSCRIBE to the reply topic before asking (QoS 1) --------------------------
  body.clear();
  put_u16(body, 1);  // packet id
  if (v5) put_varint(body, 0);
  put_str(body, reply_topic);
  body += static_cast<char>(1);  // QoS 1
  tls.write_all(packet(0x82, body), "sending SUBSCRIBE");
  do {
    p = read_packet(tls, "waiting for SUBACK");
  } while (p.type() != 9);
  {
    Reader r{p.body, 0, tls.peer};
    r.u16();
    if (v5) r.bytes(r.varint());
    if (unsigned code = r.u8(); code >= 0x80) {
      throw Error(
          tls.peer + " refused the subscription to '" + reply_topic + "': " + reason(code, v5),
          kExitRefused);
    }
  }

  // --- 5. PUBLISH the CSR, QoS 1, with a response topic and our correlation data -----
  unsigned char nonce[16];
  check_mbedtls(mbedtls_ctr_drbg_random(&drbg, nonce, sizeof nonce), "random correlation data");
  const std::string correlation(reinterpret_cast<char*>(nonce), sizeof nonce);
  body.clear();
  put_str(body, request_topic);
  put_u16(body, 2);  // packet id
  if (v5) {
    std::string props;
    props += static_cast<char>(0x08);  // response topic
    put_str(props, reply_topic);
    props += static_cast<char>(0x09);  // correlation data
    put_str(props, correlation);
    put_varint(body, props.size());
    body += props;
  }
  body += csr;
  tls.write_all(packet(0x32, body), "publishing the request");

  // --- 6. Wait for our reply (the PUBACK comes first, or not at all) ----------------
  Message reply;
  for (;;) {
    p = read_packet(tls, "waiting for the reply");
    if (p.type() == 4 && v5 && p.body.size() >= 3 &&
        static_cast<unsigned char>(p.body[2]) >= 0x80) {
      throw Error(tls.peer + " refused the request on '" + request_topic + "': PUBACK " +
                      reason(static_cast<unsigned char>(p.body[2]), v5),
                  kExitRefused);
    }
    if (p.type() == 14) {  // DISCONNECT (5.0)
      unsigned code = p.body.empty() ? 0 : static_cast<unsigned char>(p.body[0]);
      throw Error(tls.peer + " disconnected us: " + reason(code, v5), kExitRefused);
    }
    if (p.type() != 3) continue;  // PUBACK, PINGRESP: nothing to do
    reply = parse_publish(tls, p, v5);
    // A retained message is an old one; under 5.0 a reply must carry our correlation data.
    if (reply.topic != reply_topic || reply.retained) continue;
    if (v5 && reply.correlation != correlation) continue;
    break;
  }
  tls.write_all(packet(0xE0, std::string()), "disconnecting");
  mbedtls_ssl_close_notify(&tls.ssl);

  // --- 7. Refused, or a certificate chain to check -----------------------------------
  if (reply.status == "refused" || reply.payload.rfind("refused:", 0) == 0) {
    std::string text = reply.payload.rfind("refused:", 0) == 0
                           ? reply.payload
                           : "refused: " + reply.reason_code + ": " + reply.payload;
    throw Refused(printable(text));
  }
  mbedtls_x509_crt chain;  // leaf first, then the issuing CA
  mbedtls_x509_crt_init(&chain);
  struct ChainCleanup {
    mbedtls_x509_crt* c;
    ~ChainCleanup() { mbedtls_x509_crt_free(c); }
  } chain_cleanup{&chain};
  ret =
      mbedtls_x509_crt_parse(&chain, reinterpret_cast<const unsigned char*>(reply.payload.c_str()),
                             reply.payload.size() + 1);
  if (ret != 0 || reply.payload.find("-----BEGIN CERTIFICATE-----") != 0) {
    throw Error("the reply is not a PEM certificate chain: '" +
                    printable(reply.payload.substr(0, 60)) + "'",
                kExitBadReply);
  }
  uint32_t flags = 0;
  ret = mbedtls_x509_crt_verify(&chain, &tls.ca, nullptr, nullptr, &flags, nullptr, nullptr);
  if (ret != 0) {
    throw Error("the issued certificate does not verify against --cafile '" + cafile +
                    "': " + verify_text(flags),
                kExitBadReply);
  }
  if (mbedtls_pk_check_pair(&chain.pk, &key) != 0) {
    throw Error("the issued certificate is not for this device's new key", kExitBadReply);
  }
  if (!names_device(chain, device_id)) {
    throw Error("the issued certificate does not name device '" + device_id +
                    "' (no SAN URI spiffe://<domain>/device/" + device_id + ")",
                kExitBadReply);
  }
  if (mbedtls_x509_crt_check_extended_key_usage(&chain, MBEDTLS_OID_CLIENT_AUTH,
                                                MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH)) != 0) {
    throw Error("the issued certificate is not for TLS clients (no clientAuth)", kExitBadReply);
  }

  // --- 8. Write <out>.key (0600) and <out>.crt (the chain as received, re-encoded) ----
  std::string chain_pem;
  for (const mbedtls_x509_crt* c = &chain; c != nullptr && c->raw.len > 0; c = c->next) {
    unsigned char pem[8192];
    size_t olen = 0;
    check_mbedtls(
        mbedtls_pem_write_buffer("-----BEGIN CERTIFICATE-----\n", "-----END CERTIFICATE-----\n",
                                 c->raw.p, c->raw.len, pem, sizeof pem, &olen),
        "cannot encode the certificate");
    chain_pem += reinterpret_cast<char*>(pem);
  }
  std::string key_pem(16000, '\0');
  check_mbedtls(mbedtls_pk_write_key_pem(&key, reinterpret_cast<unsigned char*>(key_pem.data()),
                                         key_pem.size()),
                "cannot write the key");
  key_pem.resize(std::strlen(key_pem.c_str()));
  out.write(out_key, key_pem);
  mbedtls_platform_zeroize(key_pem.data(), key_pem.size());
  out.write(out_crt, chain_pem);
  out.commit();
  std::printf("wrote %s (private key, mode 0600)\n", out.path(out_key).c_str());
  std::printf("wrote %s (certificate for '%s' from %s, then its issuing CA)\n",
              out.path(out_crt).c_str(), device_id.c_str(), tls.peer.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  // A refusal is the service's answer, not a tool error: "device_enroll: refused: ...".
  std::string refusal;
  const int rc = run_tool("device_enroll", argc, argv, [&](int argc, char** argv) {
    try {
      enroll(argc, argv);
    } catch (const Refused& r) {
      refusal = r.what();
    }
  });
  if (!refusal.empty()) {
    std::fprintf(stderr, "device_enroll: %s\n", refusal.c_str());
    return kExitRefused;
  }
  return rc;
}
