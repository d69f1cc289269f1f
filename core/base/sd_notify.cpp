#include "base/sd_notify.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "base/log.hpp"

namespace mqgate::sd {

namespace {

int fd_ = -1;
sockaddr_un addr_{};
socklen_t addr_len_ = 0;
uint64_t watchdog_usec_ = 0;
bool send_failed_logged_ = false;

}  // namespace

void init_from_environment() {
  const char* socket_name = getenv("NOTIFY_SOCKET");
  const char* wd_usec = getenv("WATCHDOG_USEC");
  const char* wd_pid = getenv("WATCHDOG_PID");
  std::string name = socket_name ? socket_name : "";
  std::string usec = wd_usec ? wd_usec : "";
  std::string pid = wd_pid ? wd_pid : "";
  unsetenv("NOTIFY_SOCKET");
  unsetenv("WATCHDOG_USEC");
  unsetenv("WATCHDOG_PID");
  if (name.empty()) return;
  if ((name[0] != '/' && name[0] != '@') || name.size() < 2 ||
      name.size() >= sizeof addr_.sun_path) {
    LOG_WARN(
        "NOTIFY_SOCKET \"%.120s\" is not an absolute path or an abstract name (@...) "
        "that fits a socket address; systemd is not notified",
        name.c_str());
    return;
  }
  addr_.sun_family = AF_UNIX;
  memcpy(addr_.sun_path, name.data(), name.size());
  if (name[0] == '@') addr_.sun_path[0] = '\0';
  addr_len_ = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size() +
                                     (name[0] == '@' ? 0 : 1));
  fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd_ < 0) {
    LOG_WARN("cannot create the socket to notify systemd: %s", strerror(errno));
    return;
  }
  if (!usec.empty()) {
    char* end = nullptr;
    errno = 0;
    const unsigned long long v = strtoull(usec.c_str(), &end, 10);
    const bool ours = pid.empty() || strtoll(pid.c_str(), nullptr, 10) == getpid();
    if (errno != 0 || *end != '\0' || v == 0 || v > (1ull << 50) || usec[0] == '-')
      LOG_WARN("WATCHDOG_USEC \"%.40s\" is not a positive number of microseconds; no watchdog",
               usec.c_str());
    else if (ours)
      watchdog_usec_ = v;
  }
}

bool enabled() {
  return fd_ >= 0;
}

void notify(std::string_view message) {
  if (fd_ < 0) return;
  std::string flat(message);  // for the log: one line
  for (char& c : flat)
    if (c == '\n') c = ' ';
  const ssize_t n = sendto(fd_, message.data(), message.size(), MSG_NOSIGNAL,
                           reinterpret_cast<const sockaddr*>(&addr_), addr_len_);
  if (n < 0) {
    // Once until a send works again: systemd gone, or its queue full, is one event.
    if (!send_failed_logged_)
      LOG_WARN("cannot notify systemd (%.80s): %s", flat.c_str(), strerror(errno));
    send_failed_logged_ = true;
    return;
  }
  send_failed_logged_ = false;
  if (message != "WATCHDOG=1") LOG_DEBUG("systemd notified: %.200s", flat.c_str());
}

uint64_t watchdog_usec() {
  return fd_ >= 0 ? watchdog_usec_ : 0;
}

std::string reloading_message() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  const uint64_t usec =
      static_cast<uint64_t>(ts.tv_sec) * 1000000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
  return "RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec);
}

}  // namespace mqgate::sd
