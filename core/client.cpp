#include "client.hpp"

#include <cstdarg>
#include <cstdio>

#include "config.hpp"

namespace mqgate {

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
