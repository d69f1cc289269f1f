// mqgate-bench: an MQTT load generator for loopback benchmarks (see bench/README.md).
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <thread>

// cxxopts' std::regex use trips a GCC 12 false positive at -O2 with sanitizers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <cxxopts.hpp>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#include "harness.hpp"

namespace {

using mqgate::bench::Options;

constexpr const char* kUsage =
    "mqgate-bench MODE [options]\n"
    "\n"
    "  conn    connection rate: N connectors loop connect / CONNECT / CONNACK / DISCONNECT\n"
    "  pubsub  P publishers -> S subscribers: throughput, end-to-end latency, every message "
    "checked\n"
    "  idle    opens N connections, holds them, reports the broker's RSS per connection\n"
    "\n"
    "Targets are 127.0.0.1 or ::1 only. Every mode stops by itself. Exit status: 0 all good,\n"
    "1 failures (connections, lost or unordered messages), 2 bad usage or setup, 3 watchdog.\n";

int usage_error(const std::string& message) {
  std::fprintf(stderr, "mqgate-bench: %s (see --help)\n", message.c_str());
  return mqgate::bench::kExitSetup;
}

}  // namespace

int main(int argc, char** argv) {
  cxxopts::Options options("mqgate-bench", kUsage);
  options.positional_help("MODE");
  // clang-format off
  options.add_options()
      ("mode", "conn, pubsub or idle", cxxopts::value<std::string>())
      ("host", "broker address: 127.0.0.1 or ::1", cxxopts::value<std::string>()->default_value("127.0.0.1"))
      ("p,port", "broker port", cxxopts::value<int>()->default_value("1883"))
      ("threads", "event-loop threads (0: one per core)", cxxopts::value<int>()->default_value("0"))
      ("d,duration", "seconds of load (conn; pubsub without --count)", cxxopts::value<double>()->default_value("10"))
      ("n,count", "conn: connections in all; pubsub: messages per publisher (instead of --duration)",
       cxxopts::value<uint64_t>()->default_value("0"))
      ("warmup", "seconds at the start left out of rates and latencies (pubsub)",
       cxxopts::value<double>()->default_value("0"))
      ("max-time", "hard limit in seconds for the whole run (watchdog)", cxxopts::value<double>()->default_value("900"))
      ("broker-pid", "broker process: its CPU time (all modes) and RSS (idle) are reported",
       cxxopts::value<int>()->default_value("0"))
      ("broker-pids", "more processes of the broker (comma-separated, e.g. a cluster's): their "
       "CPU time is added to --broker-pid's", cxxopts::value<std::vector<int>>())
      ("client-prefix", "client id and topic prefix (default: mb<pid>)", cxxopts::value<std::string>())
      ("keepalive", "CONNECT keep-alive in seconds", cxxopts::value<int>()->default_value("60"))
      ("json", "print the summary as one JSON object on stdout")
      ("q,quiet", "no progress lines on stderr")
      ("username", "username in every CONNECT", cxxopts::value<std::string>())
      ("password", "password in every CONNECT (a test password: visible in ps)",
       cxxopts::value<std::string>())
      ("V,mqtt-version", "MQTT version of every connection: 4 (3.1.1) or 5",
       cxxopts::value<int>()->default_value("4"))
      ("mqtt5", "same as -V 5")
      ("content-type", "pubsub, MQTT 5: a Content Type property on every PUBLISH",
       cxxopts::value<std::string>())
      ("user-property", "pubsub, MQTT 5: a user property KEY=VALUE on every PUBLISH (repeatable; "
       "comma-separated)", cxxopts::value<std::vector<std::string>>())
      ("h,help", "print this help and exit");
  options.add_options("TLS (mutual TLS when --cert is given)")
      ("tls", "connect with TLS (implied by --cafile/--cert)")
      ("ws", "MQTT over WebSocket: upgrade this path (e.g. /mqtt) first", cxxopts::value<std::string>())
      ("cafile", "CA certificate(s) that sign the broker's certificate", cxxopts::value<std::string>())
      ("cert", "client certificate (chain), PEM", cxxopts::value<std::string>())
      ("key", "client private key, PEM", cxxopts::value<std::string>())
      ("servername", "SNI and the name checked in the broker's certificate",
       cxxopts::value<std::string>()->default_value(""))
      ("tls-lib", "client TLS library: mbedtls or openssl (the client's crypto is cheaper with openssl)",
       cxxopts::value<std::string>()->default_value("mbedtls"))
      ("resume", "conn: resume each connector's previous TLS session (session id or ticket)");
  options.add_options("conn")
      ("c,connectors", "concurrent connectors", cxxopts::value<int>()->default_value("4"))
      ("connect-timeout", "seconds from TCP connect to CONNACK before a connection counts as failed",
       cxxopts::value<double>()->default_value("10"));
  options.add_options("pubsub")
      ("P,publishers", "publishers", cxxopts::value<int>()->default_value("1"))
      ("S,subscribers", "subscribers", cxxopts::value<int>()->default_value("1"))
      ("sub-port", "subscribers connect to this port instead of --port (same host): another "
       "node of a cluster", cxxopts::value<int>()->default_value("0"))
      ("topics", "topics: publisher p uses topic p % T, subscriber s subscribes to s % T",
       cxxopts::value<int>()->default_value("1"))
      ("qos", "QoS of publications and subscriptions: 0, 1 or 2", cxxopts::value<int>()->default_value("0"))
      ("payload", "payload bytes (at least 24: publisher, sequence, timestamp)",
       cxxopts::value<size_t>()->default_value("64"))
      ("rate", "total publish rate in msg/s, paced every ms (0: as fast as the window allows)",
       cxxopts::value<double>()->default_value("0"))
      ("window", "per publisher: messages sent but not yet delivered (times its fan-out)",
       cxxopts::value<int>()->default_value("1000"))
      ("settle", "seconds to wait after the last SUBACK before publishing (a cluster spreads "
       "interest asynchronously)", cxxopts::value<double>()->default_value("0"))
      ("drain-timeout", "seconds without progress after publishing stops before giving up",
       cxxopts::value<double>()->default_value("10"))
      ("persistent", "publishers and subscribers use clean session 0 (a broker's durable state)")
      ("open-loop", "publishers write as fast as TCP takes them, not waiting for deliveries "
       "(QoS 1/2: at most --window unacknowledged)")
      ("sub-rate", "each subscriber reads at most this many msg/s (0: as fast as it can)",
       cxxopts::value<double>()->default_value("0"))
      ("stall-subscribers", "the first N subscribers stop reading after their SUBACK",
       cxxopts::value<int>()->default_value("0"))
      ("shared", "subscribers share each topic: $share/NAME/<topic> (each message once per "
       "topic's group)", cxxopts::value<std::string>()->default_value(""))
      ("filter-suffix", "appended to every subscription filter, e.g. /# (<topic>/#: the same "
       "messages through a wildcard filter)", cxxopts::value<std::string>()->default_value(""));
  options.add_options("idle")
      ("connections", "connections to open and hold (at most ~15000 with ulimit -n 20000)",
       cxxopts::value<int>()->default_value("1000"))
      ("concurrency", "connections being opened at once", cxxopts::value<int>()->default_value("64"))
      ("hold", "seconds to hold them before reading the broker's RSS", cxxopts::value<double>()->default_value("3"));
  // clang-format on
  options.parse_positional({"mode"});

  cxxopts::ParseResult args;
  try {
    args = options.parse(argc, argv);
  } catch (const std::exception& e) {
    return usage_error(e.what());
  }
  if (args.count("help")) {
    std::cout << options.help(
                     {"", "TLS (mutual TLS when --cert is given)", "conn", "pubsub", "idle"})
              << std::endl;
    return 0;
  }
  if (!args.unmatched().empty())
    return usage_error("unexpected argument \"" + args.unmatched()[0] + "\"");
  if (!args.count("mode")) return usage_error("which mode: conn, pubsub or idle?");

  Options o;
  try {
    o.mode = args["mode"].as<std::string>();
    o.host = args["host"].as<std::string>();
    o.port = args["port"].as<int>();
    o.threads = args["threads"].as<int>();
    o.duration = args["duration"].as<double>();
    o.count = args["count"].as<uint64_t>();
    o.warmup = args["warmup"].as<double>();
    o.max_time = args["max-time"].as<double>();
    o.broker_pid = args["broker-pid"].as<int>();
    if (args.count("broker-pids")) o.extra_broker_pids = args["broker-pids"].as<std::vector<int>>();
    o.client_prefix = args.count("client-prefix") ? args["client-prefix"].as<std::string>()
                                                  : "mb" + std::to_string(getpid());
    o.keepalive = args["keepalive"].as<int>();
    if (args.count("username")) o.username = args["username"].as<std::string>();
    if (args.count("password")) o.password = args["password"].as<std::string>();
    o.json = args.count("json") > 0;
    const int version = args.count("mqtt5") ? 5 : args["mqtt-version"].as<int>();
    if (version != 4 && version != 5) return usage_error("--mqtt-version must be 4 or 5");
    o.mqtt_version = static_cast<uint8_t>(version);
    if (args.count("content-type")) o.content_type = args["content-type"].as<std::string>();
    if (args.count("user-property"))
      for (const auto& kv : args["user-property"].as<std::vector<std::string>>()) {
        const size_t eq = kv.find('=');
        if (eq == std::string::npos) return usage_error("--user-property: KEY=VALUE");
        o.user_properties.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
      }
    if ((o.content_type || !o.user_properties.empty()) && o.mqtt_version != 5)
      return usage_error("--content-type and --user-property need --mqtt-version 5");
    o.quiet = args.count("quiet") > 0;
    o.tls_settings.cafile = args.count("cafile") ? args["cafile"].as<std::string>() : "";
    o.tls_settings.certfile = args.count("cert") ? args["cert"].as<std::string>() : "";
    o.tls_settings.keyfile = args.count("key") ? args["key"].as<std::string>() : "";
    o.tls_settings.servername = args["servername"].as<std::string>();
    o.tls = args.count("tls") || !o.tls_settings.cafile.empty() || !o.tls_settings.certfile.empty();
    o.resume = args.count("resume") > 0;
    const std::string lib = args["tls-lib"].as<std::string>();
    o.connectors = args["connectors"].as<int>();
    o.connect_timeout = args["connect-timeout"].as<double>();
    o.publishers = args["publishers"].as<int>();
    o.subscribers = args["subscribers"].as<int>();
    o.sub_port = args["sub-port"].as<int>();
    o.topics = args["topics"].as<int>();
    o.qos = args["qos"].as<int>();
    o.payload = args["payload"].as<size_t>();
    o.rate = args["rate"].as<double>();
    o.window = args["window"].as<int>();
    o.persistent = args.count("persistent") > 0;
    o.drain_timeout = args["drain-timeout"].as<double>();
    o.settle = args["settle"].as<double>();
    o.open_loop = args.count("open-loop") > 0;
    o.sub_rate = args["sub-rate"].as<double>();
    o.stall_subscribers = args["stall-subscribers"].as<int>();
    o.shared = args["shared"].as<std::string>();
    o.filter_suffix = args["filter-suffix"].as<std::string>();
    o.connections = args["connections"].as<int>();
    o.concurrency = args["concurrency"].as<int>();
    o.hold = args["hold"].as<double>();

    if (lib == "mbedtls")
      o.tls_settings.library = mqgate::bench::tls::Library::kMbedtls;
    else if (lib == "openssl")
      o.tls_settings.library = mqgate::bench::tls::Library::kOpenssl;
    else
      return usage_error("--tls-lib must be mbedtls or openssl");
    if (o.tls_settings.library == mqgate::bench::tls::Library::kOpenssl &&
        !mqgate::bench::tls::openssl_available())
      return usage_error(
          "--tls-lib openssl: this build has no OpenSSL (install libssl-dev and rebuild)");
  } catch (const std::exception& e) {
    return usage_error(e.what());
  }

  std::string error;
  mqgate::bench::Target target;
  if (!mqgate::bench::make_target(o.host, o.port, target, error)) return usage_error(error);
  if (o.sub_port && !mqgate::bench::make_target(o.host, o.sub_port, target, error))
    return usage_error("--sub-port: " + error);
  if (!o.extra_broker_pids.empty() && o.broker_pid <= 0)
    return usage_error("--broker-pids needs --broker-pid");
  for (int pid : o.extra_broker_pids)
    if (pid <= 0) return usage_error("--broker-pids: process ids");
  if (args.count("ws")) {
    o.ws_path = args["ws"].as<std::string>();
    if (o.ws_path.empty() || o.ws_path[0] != '/') return usage_error("--ws: a path such as /mqtt");
  }
  if (o.mode != "conn" && o.mode != "pubsub" && o.mode != "idle")
    return usage_error("unknown mode \"" + o.mode + "\": conn, pubsub or idle");
  if (o.threads < 0 || o.threads > 64) return usage_error("--threads must be 0..64");
  if (o.duration <= 0 || o.duration > 3600)
    return usage_error("--duration must be 0..3600 seconds");
  if (o.warmup < 0 || (!o.count && o.warmup >= o.duration))
    return usage_error("--warmup must be shorter than --duration");
  if (o.max_time <= 0) return usage_error("--max-time must be positive");
  if (o.keepalive < 0 || o.keepalive > 65535) return usage_error("--keepalive must be 0..65535");
  if (o.tls_settings.certfile.empty() != o.tls_settings.keyfile.empty())
    return usage_error("--cert and --key go together");
  if (o.resume && !o.tls) return usage_error("--resume needs TLS");
  if (o.connectors < 1 || o.connectors > 10000) return usage_error("--connectors must be 1..10000");
  if (o.connect_timeout <= 0) return usage_error("--connect-timeout must be positive");
  if (o.publishers < 1 || o.publishers > 10000) return usage_error("--publishers must be 1..10000");
  if (o.subscribers < 1 || o.subscribers > 10000)
    return usage_error("--subscribers must be 1..10000");
  if (o.topics < 1 || o.topics > std::max(o.publishers, o.subscribers))
    return usage_error("--topics must be 1..max(publishers, subscribers)");
  if (o.qos < 0 || o.qos > 2) return usage_error("--qos must be 0, 1 or 2");
  if (o.payload < 24 || o.payload > 64 * 1024 * 1024)
    return usage_error("--payload must be 24..67108864 bytes");
  if (o.rate < 0) return usage_error("--rate must not be negative");
  if (o.window < 1 || o.window > 1000000) return usage_error("--window must be 1..1000000");
  if (o.drain_timeout <= 0) return usage_error("--drain-timeout must be positive");
  if (o.settle < 0 || o.settle > 60) return usage_error("--settle must be 0..60 seconds");
  if (o.sub_rate < 0) return usage_error("--sub-rate must be >= 0");
  if (o.stall_subscribers < 0 || (o.stall_subscribers > 0 && o.stall_subscribers >= o.subscribers))
    return usage_error("--stall-subscribers must leave at least one subscriber reading");
  if (!o.shared.empty() && (o.stall_subscribers > 0 ||
                            o.shared.find_first_of("/+#") != std::string::npos))
    return usage_error("--shared: a name without '/', '+', '#', and no --stall-subscribers");
  if (!o.filter_suffix.empty() && o.filter_suffix[0] != '/')
    return usage_error("--filter-suffix: more levels, starting with '/' (e.g. /#)");
  if (o.connections < 1 || o.connections > 100000)
    return usage_error("--connections must be 1..100000");
  if (o.concurrency < 1) return usage_error("--concurrency must be positive");
  if (o.hold < 0) return usage_error("--hold must not be negative");

  signal(SIGPIPE, SIG_IGN);
  // Whatever happens, the run ends.
  std::thread([limit = o.max_time + 30] {
    std::this_thread::sleep_for(std::chrono::duration<double>(limit));
    std::fprintf(stderr,
                 "mqgate-bench: watchdog: still running after --max-time + 30 s; exiting\n");
    std::fflush(stdout);
    std::_Exit(3);
  }).detach();

  if (o.mode == "conn") return mqgate::bench::run_conn(o);
  if (o.mode == "pubsub") return mqgate::bench::run_pubsub(o);
  return mqgate::bench::run_idle(o);
}
