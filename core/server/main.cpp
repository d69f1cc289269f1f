// mqgate: command line, configuration, and the server's lifetime.
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>

// Without std::regex, cxxopts compiles in a fraction of the time (and without a GCC 12
// -Wmaybe-uninitialized false positive under sanitizers).
#define CXXOPTS_NO_REGEX 1
#include <cxxopts.hpp>

#include "base/log.hpp"
#include "base/privileges.hpp"
#include "base/sd_notify.hpp"
#include "base/version.hpp"
#include "config/config.hpp"
#include "plugin/auth.hpp"
#include "plugin/host.hpp"
#include "server/listener.hpp"
#include "server/server.hpp"

#ifndef MQGATE_DEFAULT_CONFIG
#define MQGATE_DEFAULT_CONFIG "/etc/mqgate/mqgate.toml"
#endif

namespace {

// Once bound and loaded, as the user the broker now is: what a SIGHUP re-reads must be
// readable, and the store's directory writable (a warning each, naming the file).
void check_access_after_drop(const mqgate::Config& config) {
  const auto check = [](const std::string& path, int mode, const char* what) {
    if (path.empty() || access(path.c_str(), mode) == 0) return;
    const int err = errno;
    LOG_WARN("%s: %s%s; %s", path.c_str(), strerror(err),
             mqgate::access_hint(err, mode == R_OK ? "readable" : "writable").c_str(), what);
  };
  check(config.path, R_OK, "a SIGHUP reload will fail");
  for (const auto& l : config.listeners) {
    if (!l.tls) continue;
    for (const std::string* f :
         {&l.tls->certfile, &l.tls->keyfile, &l.tls->cafile, &l.tls->crlfile})
      check(*f, R_OK, "a SIGHUP reload of the TLS material will fail");
  }
  if (config.persistence.enabled()) {
    const std::string& db = config.persistence.path;
    const size_t slash = db.rfind('/');
    const std::string dir = slash == std::string::npos ? "."
                            : slash == 0               ? "/"
                                                       : db.substr(0, slash);
    check(dir, W_OK | X_OK,
          "the store's directory must be writable (SQLite's -wal and -shm files, the TLS "
          "session-ticket keys)");
  }
}

// Certificate logins to the console trust every certificate [http]'s cafile signed: a
// CA that also signs devices lets a device named like an operator log in. Said at start
// and by --check-config (a warning: a test rig may share one CA on purpose).
void warn_shared_operator_ca(const mqgate::Config& config) {
  const auto& h = config.http;
  if (!h || !h->tls || h->tls->cafile.empty() ||
      (h->console_cert_admins.empty() && h->console_cert_readers.empty()))
    return;
  char http_ca[PATH_MAX], other[PATH_MAX];
  if (realpath(h->tls->cafile.c_str(), http_ca) == nullptr) return;
  for (const auto& l : config.listeners)
    if (l.tls && !l.tls->cafile.empty() && realpath(l.tls->cafile.c_str(), other) != nullptr &&
        std::strcmp(http_ca, other) == 0)
      LOG_WARN(
          "[http] cafile %s is also listener %s's cafile: a device certificate that CA signs "
          "can log in to the console if its identity is listed in console_cert_admins/readers; "
          "give operators a CA of their own (docs/console.md)",
          h->tls->cafile.c_str(), l.name.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  // First: before any thread starts, and so that nothing started later inherits it.
  mqgate::sd::init_from_environment();
  cxxopts::Options options("mqgate",
                           "mqgate " MQGATE_VERSION
                           " - an MQTT 3.1.1 and 5.0 broker with certificate identity and auth plugins");
  options.add_options()("c,config", "configuration file (TOML)",
                        cxxopts::value<std::string>()->default_value(MQGATE_DEFAULT_CONFIG))(
      "check-config", "check the configuration (and plugins) and exit: 0 if valid")(
      "u,user",
      "started as root: the user to run as once bound (overrides the `user` key; default "
      "mqgate; root keeps root)",
      cxxopts::value<std::string>())("version", "print the version and exit")(
      "h,help", "print this help and exit");
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
  warn_shared_operator_ca(*config);

  // Who to run as (base/privileges.hpp): decided before anything is loaded, done once
  // everything is bound, read and opened.
  std::optional<std::string> user = config->user;
  std::string user_source = path + ":" + std::to_string(config->user_line) + ": user";
  if (args.count("user")) {
    user = args["user"].as<std::string>();
    user_source = "--user";
  }
  mqgate::PrivilegePlan privileges;
  std::string error;
  if (!mqgate::plan_privileges(user, user_source, privileges, error)) {
    std::fprintf(stderr, "mqgate: %s\n", error.c_str());
    std::fprintf(stderr, "mqgate: not started\n");
    return 1;
  }

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
    if (config->http && config->http->tls &&
        !mqgate::Listener::check_tls(mqgate::Listener::http_tls_config(*config->http), errors))
      tls_ok = false;
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
  // The store's files root made (SQLite's -wal and -shm, the ticket keys) go to the user.
  const mqgate::Config& running = server.config();
  std::vector<std::string> store_files;
  if (running.persistence.enabled()) {
    for (const char* suffix : {"", "-wal", "-shm", ".lock"})
      store_files.push_back(running.persistence.path + suffix);
    for (const auto& l : running.listeners)
      if (l.tls && !l.tls->ticket_key_file.empty()) store_files.push_back(l.tls->ticket_key_file);
  }
  if (!mqgate::give_files_to(privileges, store_files, error) ||
      !mqgate::drop_privileges(privileges, error)) {
    LOG_ERROR("cannot drop privileges: %s; not started", error.c_str());
    return 1;
  }
  if (!privileges.warning.empty()) LOG_WARN("%s", privileges.warning.c_str());
  if (privileges.drop) {
    LOG_INFO("running as user %s (uid %u, gid %u); root dropped", privileges.user.c_str(),
             static_cast<unsigned>(privileges.uid), static_cast<unsigned>(privileges.gid));
    check_access_after_drop(running);
  } else {
    LOG_INFO("running as %s", mqgate::current_user_name().c_str());
  }
  return server.run();
}
