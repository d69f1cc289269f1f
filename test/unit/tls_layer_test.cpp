// The TLS layer (TlsSession as a transport::StreamLayer) under a fake lower layer: the
// test moves bytes between an in-memory mbedTLS client and the layer, runs the loop for
// the handshake workers' completions, and checks what comes up and goes down.
#include <doctest/doctest.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>
#include <uv.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include "transport/stack.hpp"
#include "transport/tls/tls.hpp"

using namespace mqgate;

namespace {

struct Rng {
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
  Rng() {
    mbedtls_entropy_init(&entropy);
    mbedtls_ctr_drbg_init(&drbg);
    if (mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, nullptr, 0) != 0)
      throw std::runtime_error("drbg seed");
  }
  ~Rng() {
    mbedtls_ctr_drbg_free(&drbg);
    mbedtls_entropy_free(&entropy);
  }
};

// A self-signed EC P-256 server certificate and its key, as PEM files in `dir`.
void write_server_credentials(const std::filesystem::path& dir, Rng& rng) {
  mbedtls_pk_context key;
  mbedtls_pk_init(&key);
  mbedtls_x509write_cert crt;
  mbedtls_x509write_crt_init(&crt);
  mbedtls_mpi serial;
  mbedtls_mpi_init(&serial);
  unsigned char buf[4096];
  bool ok = mbedtls_pk_setup(&key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)) == 0 &&
            mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(key),
                                mbedtls_ctr_drbg_random, &rng.drbg) == 0;
  mbedtls_x509write_crt_set_subject_key(&crt, &key);
  mbedtls_x509write_crt_set_issuer_key(&crt, &key);
  mbedtls_x509write_crt_set_md_alg(&crt, MBEDTLS_MD_SHA256);
  ok = ok && mbedtls_x509write_crt_set_subject_name(&crt, "CN=localhost") == 0 &&
       mbedtls_x509write_crt_set_issuer_name(&crt, "CN=localhost") == 0 &&
       mbedtls_mpi_read_string(&serial, 10, "1") == 0 &&
       mbedtls_x509write_crt_set_serial(&crt, &serial) == 0 &&
       mbedtls_x509write_crt_set_validity(&crt, "20200101000000", "20991231235959") == 0 &&
       mbedtls_x509write_crt_pem(&crt, buf, sizeof buf, mbedtls_ctr_drbg_random, &rng.drbg) == 0;
  if (ok) std::ofstream(dir / "server.crt") << reinterpret_cast<const char*>(buf);
  ok = ok && mbedtls_pk_write_key_pem(&key, buf, sizeof buf) == 0;
  if (ok) std::ofstream(dir / "server.key") << reinterpret_cast<const char*>(buf);
  mbedtls_mpi_free(&serial);
  mbedtls_x509write_crt_free(&crt);
  mbedtls_pk_free(&key);
  if (!ok) throw std::runtime_error("cannot make the test server certificate");
}

// An mbedTLS client over memory buffers: what it sends goes to `out`, it reads `in`.
struct TestClient {
  mbedtls_ssl_config conf;
  mbedtls_ssl_context ssl;
  std::string in, out;
  explicit TestClient(Rng& rng) {
    mbedtls_ssl_config_init(&conf);
    mbedtls_ssl_init(&ssl);
    REQUIRE(mbedtls_ssl_config_defaults(&conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                        MBEDTLS_SSL_PRESET_DEFAULT) == 0);
    mbedtls_ssl_conf_authmode(&conf, MBEDTLS_SSL_VERIFY_NONE);  // self-signed, not the point here
    mbedtls_ssl_conf_rng(&conf, mbedtls_ctr_drbg_random, &rng.drbg);
    REQUIRE(mbedtls_ssl_setup(&ssl, &conf) == 0);
    mbedtls_ssl_set_bio(&ssl, this, send, recv, nullptr);
  }
  ~TestClient() {
    mbedtls_ssl_free(&ssl);
    mbedtls_ssl_config_free(&conf);
  }
  static int send(void* ctx, const unsigned char* b, size_t n) {
    static_cast<TestClient*>(ctx)->out.append(reinterpret_cast<const char*>(b), n);
    return static_cast<int>(n);
  }
  static int recv(void* ctx, unsigned char* b, size_t n) {
    auto* self = static_cast<TestClient*>(ctx);
    if (self->in.empty()) return MBEDTLS_ERR_SSL_WANT_READ;
    n = std::min(n, self->in.size());
    std::memcpy(b, self->in.data(), n);
    self->in.erase(0, n);
    return static_cast<int>(n);
  }
  std::string take_out() {
    std::string s;
    s.swap(out);
    return s;
  }
  std::string read_all() {
    std::string plain;
    unsigned char b[4096];
    for (;;) {
      const int n = mbedtls_ssl_read(&ssl, b, sizeof b);
      if (n <= 0) break;
      plain.append(reinterpret_cast<char*>(b), static_cast<size_t>(n));
    }
    return plain;
  }
};

// What the layer reports, and the receiver above it.
struct Events final : transport::LayerEvents, transport::Receiver {
  int outputs = 0;
  int readies = 0;
  std::string error;
  std::string up;
  bool on_layer_output(transport::StreamLayer&) override {
    ++outputs;
    return true;
  }
  void on_layer_ready(transport::StreamLayer&, const std::string& e) override {
    ++readies;
    error = e;
  }
  bool on_bytes(std::string_view b) override {
    up += b;
    return true;
  }
};

struct Fixture {
  std::filesystem::path dir;
  Rng rng;
  uv_loop_t loop;
  ListenerConfig listener;
  std::shared_ptr<const TlsGeneration> generation;
  std::unique_ptr<TlsWorkers> workers;
  char scratch[16384];

  Fixture() {
    char tmpl[] = "/tmp/mqgate-tls-layer-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    write_server_credentials(dir, rng);
    uv_loop_init(&loop);
    listener.name = "test";
    TlsConfig tls;
    tls.certfile = (dir / "server.crt").string();
    tls.keyfile = (dir / "server.key").string();
    listener.tls = tls;
    Errors errors;
    generation = TlsGeneration::load(listener, 1, errors);
    REQUIRE_MESSAGE(generation, one_line(errors));
    workers = std::make_unique<TlsWorkers>(&loop, 1, 16);
  }
  ~Fixture() {
    workers->stop();
    uv_run(&loop, UV_RUN_DEFAULT);  // the async handle's close
    uv_loop_close(&loop);
    std::filesystem::remove_all(dir);
  }
  // Runs the loop until `done` (worker completions arrive through it), at most ~10 s.
  template <typename Fn>
  void run_until(Fn&& done) {
    for (int i = 0; i < 10000 && !done(); ++i) {
      uv_run(&loop, UV_RUN_NOWAIT);
      if (!done()) uv_sleep(1);
    }
    REQUIRE(done());
  }
};

// Moves bytes both ways until the client's handshake is over and the layer is ready.
void handshake(Fixture& f, transport::Stack& stack, TestClient& client, Events& events) {
  std::string error, app;
  for (int round = 0; round < 20 && events.readies == 0; ++round) {
    const int rc = mbedtls_ssl_handshake(&client.ssl);
    REQUIRE((rc == 0 || rc == MBEDTLS_ERR_SSL_WANT_READ));
    std::string flight = client.take_out();
    if (!flight.empty()) REQUIRE(stack.input(flight, events, error));
    const int before = events.outputs + events.readies;
    if (!flight.empty()) f.run_until([&] { return events.outputs + events.readies > before; });
    std::string* wire = stack.output(app, error);
    REQUIRE(wire != nullptr);
    client.in += *wire;
    wire->clear();
  }
  REQUIRE(events.readies == 1);
  // The client's last flight may wait for the server's Finished.
  REQUIRE(mbedtls_ssl_handshake(&client.ssl) == 0);
}

}  // namespace

TEST_CASE("TLS layer: handshake on a worker, then records up and down through the stack") {
  Fixture f;
  Events events;
  transport::Stack stack;
  auto* tls = new TlsSession(&f.generation, 0, *f.workers, events, f.scratch, sizeof f.scratch);
  stack.push(std::unique_ptr<transport::StreamLayer>(tls));
  CHECK_FALSE(tls->ready());
  CHECK(f.workers->pending() == 1);  // counted from its creation until the handshake ends

  TestClient client(f.rng);
  handshake(f, stack, client, events);
  CHECK(events.error.empty());
  CHECK(tls->ready());
  CHECK(f.workers->pending() == 0);
  auto info = tls->take_peer_info();
  REQUIRE(info);
  CHECK(info->version == "TLSv1.2");
  CHECK(info->chain.empty());  // no client certificate was asked for

  // Up: the client's records become plaintext for the layer above.
  std::string error;
  const std::string mqtt = "\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00";
  REQUIRE(mbedtls_ssl_write(&client.ssl, reinterpret_cast<const unsigned char*>(mqtt.data()),
                            mqtt.size()) == static_cast<int>(mqtt.size()));
  REQUIRE(stack.input(client.take_out(), events, error));
  CHECK(events.up == mqtt);

  // Down: bytes from above become records the client decrypts.
  std::string app("\x20\x02\x00\x00", 4);
  std::string* wire = stack.output(app, error);
  REQUIRE(wire != nullptr);
  CHECK(app.empty());
  client.in += *wire;
  wire->clear();
  CHECK(client.read_all() == std::string("\x20\x02\x00\x00", 4));

  // Shutdown: the last bytes, then a close_notify the client sees.
  app = "bye";
  wire = stack.shutdown(app, error);
  REQUIRE(wire != nullptr);
  client.in += *wire;
  unsigned char b[16];
  CHECK(mbedtls_ssl_read(&client.ssl, b, sizeof b) == 3);
  CHECK(mbedtls_ssl_read(&client.ssl, b, sizeof b) == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY);
}

TEST_CASE("TLS layer: garbage instead of a ClientHello fails the handshake with a reason") {
  Fixture f;
  Events events;
  transport::Stack stack;
  stack.push(std::make_unique<TlsSession>(&f.generation, 0, *f.workers, events, f.scratch,
                                          sizeof f.scratch));
  std::string error;
  REQUIRE(stack.input("GET / HTTP/1.1\r\nHost: x\r\n\r\n", events, error));
  f.run_until([&] { return events.readies > 0; });
  CHECK(events.error.rfind("TLS handshake failed: ", 0) == 0);
  CHECK(f.workers->pending() == 0);
  // A failed session refuses further input.
  CHECK_FALSE(stack.input("more", events, error));
}

TEST_CASE("TLS layer: a flood before the handshake completes is refused at the cap") {
  Fixture f;
  Events events;
  transport::Stack stack;
  stack.push(std::make_unique<TlsSession>(&f.generation, 0, *f.workers, events, f.scratch,
                                          sizeof f.scratch));
  TestClient client(f.rng);
  REQUIRE(mbedtls_ssl_handshake(&client.ssl) == MBEDTLS_ERR_SSL_WANT_READ);
  std::string error;
  REQUIRE(stack.input(client.take_out(), events, error));
  const std::string junk(16 * 1024, 'x');
  bool refused = false;
  for (int i = 0; i < 8 && !refused; ++i)
    refused = !stack.input(junk, events, error);
  CHECK(refused);
  CHECK(error.find("TLS handshake flooded") != std::string::npos);
  f.run_until([&] { return !stack.busy(); });  // the job in flight comes back
}

TEST_CASE("TLS layer: a connection that goes away while a worker runs its step is freed after it") {
  Fixture f;
  Events events;
  bool dead = false;
  {
    auto stack = std::make_unique<transport::Stack>();
    stack->push(std::make_unique<TlsSession>(&f.generation, 0, *f.workers, events, f.scratch,
                                             sizeof f.scratch));
    TestClient client(f.rng);
    REQUIRE(mbedtls_ssl_handshake(&client.ssl) == MBEDTLS_ERR_SSL_WANT_READ);
    std::string error;
    REQUIRE(stack->input(client.take_out(), events, error));
    CHECK(stack->busy());
    transport::Stack* raw = stack.release();
    raw->abandon([&dead, raw] {
      dead = true;
      delete raw;
    });
  }
  f.run_until([&] { return dead; });
  CHECK(events.readies == 0);  // an abandoned session reports nothing
  CHECK(f.workers->pending() == 0);
}
