// Loading a plugin instance: find its .so, dlopen it, agree on the ABI version, init.
#include <dlfcn.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/log.hpp"
#include "plugin/instance.hpp"

namespace mqgate::detail {

namespace {

// The ABI versions this broker can host, newest first.
constexpr int kSupportedVersions[] = {MQGATE_PLUGIN_ABI_VERSION, 1};

}  // namespace

std::unique_ptr<mqgate_plugin> load_plugin(const PluginConfig& pc, const Config& config,
                                           const std::string& default_dir,
                                           const std::vector<std::unique_ptr<mqgate_plugin>>& peers,
                                           Errors& errors) {
  auto p = std::make_unique<mqgate_plugin>();
  p->peers = &peers;
  p->name = pc.name;
  p->module = pc.module;
  p->config_file = config.path;
  p->config_line = pc.line;
  const std::string where =
      config.path + ":" + std::to_string(pc.line) + ": plugin \"" + pc.name + "\"";

  // `path` and `plugin_dir` were resolved against the configuration file when it was read.
  if (!pc.path.empty()) {
    p->file = pc.path;
  } else {
    const std::string dir = config.plugin_dir.empty() ? default_dir : config.plugin_dir;
    p->file = dir + "/" + pc.module + ".so";
  }
  struct stat st;
  if (::stat(p->file.c_str(), &st) != 0) {
    errors.push_back(where + ": cannot find " + p->file + " (" + std::strerror(errno) + ")" +
                     (pc.path.empty() ? "; set `path`, or `plugin_dir` at the top level" : ""));
    return nullptr;
  }

  dlerror();
  p->dl = dlopen(p->file.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (p->dl == nullptr) {
    const char* why = dlerror();
    errors.push_back(where + ": cannot load " + p->file + ": " + (why ? why : "unknown error"));
    return nullptr;
  }
  auto fail = [&](const std::string& why) {
    errors.push_back(where + " (" + p->file + "): " + why);
    dlclose(p->dl);
    p->dl = nullptr;
    return nullptr;
  };

  using VersionFn = int (*)(int, const int*);
  using InitFn =
      int (*)(mqgate_plugin*, const mqgate_host_api*, const mqgate_options*, void**, char**);
  auto version_fn = reinterpret_cast<VersionFn>(dlsym(p->dl, "mqgate_plugin_version"));
  auto init_fn = reinterpret_cast<InitFn>(dlsym(p->dl, "mqgate_plugin_init"));
  p->shutdown = reinterpret_cast<void (*)(void*)>(dlsym(p->dl, "mqgate_plugin_shutdown"));
  if (version_fn == nullptr)
    return fail(
        "does not export the symbol mqgate_plugin_version (is it an mqgate plugin? "
        "use MQGATE_PLUGIN_DECLARE_VERSION)");
  if (init_fn == nullptr) return fail("does not export the symbol mqgate_plugin_init");

  const int count = static_cast<int>(std::size(kSupportedVersions));
  const int chosen = version_fn(count, kSupportedVersions);
  if (std::find(std::begin(kSupportedVersions), std::end(kSupportedVersions), chosen) ==
      std::end(kSupportedVersions)) {
    const auto* built = reinterpret_cast<const int*>(dlsym(p->dl, "mqgate_plugin_abi_version"));
    std::string supported;
    for (int v : kSupportedVersions)
      supported += (supported.empty() ? "" : ", ") + std::to_string(v);
    return fail("plugin ABI version mismatch: the plugin was built for version " +
                (built ? std::to_string(*built) : std::string("(unknown)")) +
                ", this broker hosts version" + (std::size(kSupportedVersions) > 1 ? "s " : " ") +
                supported);
  }
  p->abi_version = chosen;

  auto options = make_options(pc, config.path);
  char* errmsg = nullptr;
  p->in_init = true;
  const int rc = init_fn(p.get(), host_api(p->abi_version), options.get(), &p->instance, &errmsg);
  p->in_init = false;
  std::string message = take_plugin_string(errmsg);
  if (rc != MQGATE_OK) {
    std::fill(std::begin(p->callbacks), std::end(p->callbacks), nullptr);
    p->claims.clear();
    return fail("init failed (" + std::string(host_api()->strerror(rc)) + ")" +
                (message.empty() ? "" : ": " + message));
  }
  if (!p->claims.empty() && p->callbacks[MQGATE_EVT_MESSAGE] == nullptr) {
    if (p->shutdown) p->shutdown(p->instance);
    return fail("claims topics but registers no MQGATE_EVT_MESSAGE callback");
  }
  p->initialised = true;
  LOG_INFO("plugin \"%s\" loaded from %s (ABI %d)", p->name.c_str(), p->file.c_str(),
           p->abi_version);
  return p;
}

void unload_plugin(mqgate_plugin& p) {
  if (p.initialised && p.shutdown) p.shutdown(p.instance);
  p.initialised = false;
  std::fill(std::begin(p.callbacks), std::end(p.callbacks), nullptr);
  if (p.dl) dlclose(p.dl);
  p.dl = nullptr;
}

}  // namespace mqgate::detail
