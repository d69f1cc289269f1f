#include "client/client.hpp"

#include <cstdarg>
#include <cstdio>

#include "config/config.hpp"

namespace mqgate {

void Client::set_plugin_data(const void* plugin, void* data, void (*free_fn)(void*)) {
  auto& plugin_slots_ = extras().plugin_slots;
  for (auto& slot : plugin_slots_) {
    if (slot.plugin != plugin) continue;
    if (slot.free_fn && slot.data != data) slot.free_fn(slot.data);
    slot.data = data;
    slot.free_fn = free_fn;
    return;
  }
  plugin_slots_.push_back({plugin, data, free_fn});
}

void* Client::plugin_data(const void* plugin) const {
  if (!extras_) return nullptr;
  for (const auto& slot : extras_->plugin_slots)
    if (slot.plugin == plugin) return slot.data;
  return nullptr;
}

void Client::clear_plugin_data() {
  if (!extras_) return;
  std::vector<PluginSlot> slots;
  slots.swap(extras_->plugin_slots);
  for (auto& slot : slots)
    if (slot.free_fn) slot.free_fn(slot.data);
}

void client_log(log::Level level, const Client& client, const char* format, ...) {
  char message[1536];
  va_list ap;
  va_start(ap, format);
  vsnprintf(message, sizeof message, format, ap);
  va_end(ap);
  const std::string id = client.client_id().empty() ? std::string("-") : log::quote(client.client_id(), 128);
  log::write(level, "client=%s peer=%s listener=%s: %s", id.c_str(), client.peer().c_str(),
             client.listener() ? client.listener()->name.c_str() : "-", message);
}

}  // namespace mqgate
