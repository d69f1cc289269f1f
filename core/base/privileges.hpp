// Running without root (docs/operations.md, "Running as a service"): started as root, the
// broker binds its ports, reads its TLS material and password/ACL files and opens the
// store, then becomes an unprivileged user for the rest of its life. Started as anyone
// else, it stays who it is and only gives up the capabilities it was given (e.g.
// CAP_NET_BIND_SERVICE from systemd's AmbientCapabilities) once it has bound.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace mqgate {

// The user the broker becomes when started as root and no `user` is configured.
inline constexpr const char* kDefaultUser = "mqgate";

struct PrivilegePlan {
  bool drop = false;  // setgroups/setgid/setuid to the user below
  std::string user;   // the user's name (also when not dropping: who we are)
  uid_t uid = 0;
  gid_t gid = 0;
  std::string warning;  // to log once started ("" if none)
};

// Decides what to do. `user` is the `user` key or --user (nullopt: neither was given);
// `source` says where it came from, for messages ("/etc/mqgate/mqgate.toml: user", "--user").
// Started as root: drop to `user`, or to kDefaultUser; "root" keeps root explicitly.
// Returns false with `error` (one line, naming the user and what to do) when the user
// does not exist or cannot be used.
bool plan_privileges(const std::optional<std::string>& user, const std::string& source,
                     PrivilegePlan& plan, std::string& error);

// Gives the store's files created by root to the user before the drop (files not owned by
// root are left alone; missing ones are skipped). Returns false with `error` on failure.
bool give_files_to(const PrivilegePlan& plan, const std::vector<std::string>& paths,
                   std::string& error);

// Carries the plan out: supplementary groups (initgroups), setgid, setuid, in that order,
// each checked, then checks that root cannot be regained (setuid(0) fails) and that no
// capability is left. Not dropping: clears the capabilities left (ambient, effective,
// permitted), if any. Returns false with `error` on any failure: the caller must exit.
bool drop_privileges(const PrivilegePlan& plan, std::string& error);

// Who the process runs as now ("mqgate", or "uid 1234" without a name).
std::string current_user_name();

// For a file error: " (not readable by user mqgate)" when `err` is EACCES or EPERM and the
// process is not root; "" otherwise.
std::string access_hint(int err, const char* what = "readable");

}  // namespace mqgate
