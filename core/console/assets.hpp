// The console page's files (core/console/assets/), compiled into the binary by
// scripts/embed_assets.py: no files to install, no CDN.
#pragma once

#include <cstddef>
#include <string_view>

namespace mqgate::console {

struct Asset {
  const char* name;          // e.g. "index.html"
  const char* content_type;  // e.g. "text/html; charset=utf-8"
  const char* data;
  size_t size;
};

// The asset called `name` (a file name under assets/, no directories), or null.
const Asset* find_asset(std::string_view name);

}  // namespace mqgate::console
