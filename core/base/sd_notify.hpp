// systemd's readiness protocol (sd_notify(3), "Type=notify"), without libsystemd: one
// datagram per message to the AF_UNIX socket named by $NOTIFY_SOCKET (a name starting
// with '@' is in the abstract namespace). Without $NOTIFY_SOCKET every call is a no-op.
// Sends never block: a message the socket cannot take at once is dropped (and logged).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace mqgate::sd {

// Reads $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID, and removes them from the
// environment (so that nothing started later sends in our name). Call once, early in
// main(), before any thread starts. Logs (warning) a socket it cannot use.
void init_from_environment();

bool enabled();

// Sends `message` ("READY=1", "STATUS=...", several lines separated by '\n').
void notify(std::string_view message);

// The watchdog interval systemd asked for (WatchdogSec=), in microseconds; 0: none.
uint64_t watchdog_usec();

// "RELOADING=1\nMONOTONIC_USEC=<now>", as Type=notify-reload expects.
std::string reloading_message();

}  // namespace mqgate::sd
