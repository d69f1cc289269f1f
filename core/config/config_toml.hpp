// The TOML side of the configuration, for the few files that read plugin options
// (config.cpp, the plugin host). Kept out of config.hpp so that everything including
// the broker's headers does not compile toml++.
#pragma once

#include <toml++/toml.h>

#include <memory>

#include "config/config.hpp"

namespace mqgate {

struct PluginTable {
  std::shared_ptr<const toml::table> document;  // the whole file: keeps `table` alive
  const toml::table* table = nullptr;           // [plugins.<name>]
};

}  // namespace mqgate
