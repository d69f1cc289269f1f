// mqgate: command line, configuration, and the server's lifetime.
#include <cstdio>
#include <iostream>

// Without std::regex, cxxopts compiles in a fraction of the time (and without a GCC 12
// -Wmaybe-uninitialized false positive under sanitizers).
#define CXXOPTS_NO_REGEX 1
#include <cxxopts.hpp>

#include "base/log.hpp"
#include "base/version.hpp"
#include "config/config.hpp"
#include "plugin/auth.hpp"
#include "plugin/host.hpp"
#include "server/listener.hpp"
#include "server/server.hpp"

#ifndef MQGATE_DEFAULT_CONFIG
#define MQGATE_DEFAULT_CONFIG "/etc/mqgate/mqgate.toml"
#endif

int main(int argc, char** argv) {
  cxxopts::Options options("mqgate",
                           "mqgate " MQGATE_VERSION
                           " - an MQTT 3.1.1 and 5.0 broker with certificate identity and auth plugins");
  options.add_options()("c,config", "configuration file (TOML)",
                        cxxopts::value<std::string>()->default_value(MQGATE_DEFAULT_CONFIG))(
      "check-config", "check the configuration (and plugins) and exit: 0 if valid")(
      "version", "print the version and exit")("h,help", "print this help and exit");
  cxxopts::ParseResult args;
  try {
    args = options.parse(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mqgate: %s (see --help)\n", e.what());
    return 2;
  }
  if (!args.unmatched().empty()) {
    std::fprintf(stderr, "mqgate: unexpected argument \"%s\" (see --help)\n",
                 args.unmatched()[0].c_str());
    return 2;
  }
  if (args.count("help")) {
    std::cout << options.help() << std::endl;
    return 0;
  }
  if (args.count("version")) {
    std::cout << "mqgate " MQGATE_VERSION << std::endl;
    return 0;
  }

  const std::string path = args["config"].as<std::string>();
  mqgate::Errors errors;
  auto config = mqgate::load_config(path, errors);
  if (!config) {
    for (const auto& e : errors)
      std::fprintf(stderr, "mqgate: %s\n", e.c_str());
    std::fprintf(stderr, "mqgate: configuration is not valid; not started\n");
    return 1;
  }
  mqgate::log::set_level(config->log_level);
  const bool check_only = args.count("check-config") > 0;
  if (check_only && config->log_level > mqgate::log::Level::kWarning)
    mqgate::log::set_level(mqgate::log::Level::kWarning);

  // Plugins are loaded (and their options checked by their init) before anything
  // listens; --check-config does the same, then unloads them.
  mqgate::PluginHost plugins;
  if (!plugins.load(*config, errors)) {
    for (const auto& e : errors)
      std::fprintf(stderr, "mqgate: %s\n", e.c_str());
    std::fprintf(stderr, "mqgate: a plugin could not be loaded; not started\n");
    return 1;
  }
  if (check_only) {
    plugins.unload();
    bool tls_ok = true;
    for (const auto& l : config->listeners) {
      if (!l.tls) continue;
      if (!mqgate::Listener::check_tls(l, errors)) tls_ok = false;
    }
    if (!tls_ok) {
      for (const auto& e : errors)
        std::fprintf(stderr, "mqgate: %s\n", e.c_str());
      std::fprintf(stderr, "mqgate: TLS material is not valid; not started\n");
      return 1;
    }
    std::printf("%s: configuration is valid\n", path.c_str());
    return 0;
  }

  mqgate::Server server(std::move(*config), plugins);
  server.on_reload([&plugins](const mqgate::Config& fresh) { plugins.reload(fresh); });
  server.on_tick([&plugins](uint64_t now) { plugins.tick(now); });
  LOG_INFO("mqgate %s starting with %s", MQGATE_VERSION, path.c_str());
  if (!server.start()) {
    LOG_ERROR("not started");
    return 1;
  }
  return server.run();
}
