#include "base/privileges.hpp"

#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace mqgate {

namespace {

// The user database entry of `name` or `uid` (getpwnam_r/getpwuid_r: plugins' threads may
// be running). Returns false if there is none; `error` is set on a lookup failure.
struct UserEntry {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
};

bool lookup_user(const std::string* name, uid_t uid, UserEntry& out, std::string& error) {
  struct passwd pw;
  struct passwd* found = nullptr;
  std::vector<char> buf(16384);
  int rc;
  for (;;) {
    rc = name ? getpwnam_r(name->c_str(), &pw, buf.data(), buf.size(), &found)
              : getpwuid_r(uid, &pw, buf.data(), buf.size(), &found);
    if (rc != ERANGE || buf.size() > (1u << 20)) break;
    buf.resize(buf.size() * 2);
  }
  if (rc != 0 && rc != ENOENT && rc != ESRCH) {
    error = std::string("cannot look the user up: ") + strerror(rc);
    return false;
  }
  if (!found) return false;
  out.name = pw.pw_name;
  out.uid = pw.pw_uid;
  out.gid = pw.pw_gid;
  return true;
}

// The capability sets of this thread (effective, permitted, inheritable): false if any
// is not empty or they cannot be read.
bool capabilities(__user_cap_data_struct (&data)[2]) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  memset(data, 0, sizeof data);
  return syscall(SYS_capget, &header, data) == 0;
}

bool no_capabilities() {
  __user_cap_data_struct data[2];
  if (!capabilities(data)) return false;
  for (const auto& d : data)
    if (d.effective || d.permitted || d.inheritable) return false;
  return true;
}

}  // namespace

std::string current_user_name() {
  UserEntry e;
  std::string ignored;
  if (lookup_user(nullptr, geteuid(), e, ignored)) return e.name;
  return "uid " + std::to_string(geteuid());
}

std::string access_hint(int err, const char* what) {
  if ((err != EACCES && err != EPERM) || geteuid() == 0) return "";
  return std::string(" (not ") + what + " by user " + current_user_name() + ")";
}

bool plan_privileges(const std::optional<std::string>& user, const std::string& source,
                     PrivilegePlan& plan, std::string& error) {
  plan = PrivilegePlan{};
  if (geteuid() != 0) {
    plan.user = current_user_name();
    if (user && *user != plan.user && *user != "root")
      plan.warning = source + " is \"" + *user +
                     "\", but the broker was not started as root: " + "it runs as " + plan.user +
                     " (only root can change user)";
    return true;
  }
  const std::string name = user.value_or(kDefaultUser);
  plan.user = name;
  if (name == "root") {
    plan.warning = source +
                   " is \"root\": the broker keeps root for its whole life (not recommended; "
                   "name an unprivileged user)";
    return true;
  }
  UserEntry e;
  std::string lookup_error;
  if (!lookup_user(&name, 0, e, lookup_error)) {
    if (!lookup_error.empty())
      error = source + ": user \"" + name + "\": " + lookup_error;
    else if (user)
      error = source + ": there is no user \"" + name + "\" on this system";
    else
      error = std::string("started as root, and there is no user \"") + kDefaultUser +
              "\" to run as: create it (useradd --system --no-create-home --shell "
              "/usr/sbin/nologin " +
              kDefaultUser +
              "), or name another with user = \"...\" in the configuration or --user, or keep "
              "root explicitly with user = \"root\" (not recommended)";
    return false;
  }
  if (e.uid == 0) {
    error = source + ": user \"" + name +
            "\" has uid 0, which is root; name an unprivileged user (or \"root\" to keep root "
            "explicitly)";
    return false;
  }
  plan.drop = true;
  plan.uid = e.uid;
  plan.gid = e.gid;
  return true;
}

bool give_files_to(const PrivilegePlan& plan, const std::vector<std::string>& paths,
                   std::string& error) {
  if (!plan.drop) return true;
  for (const std::string& path : paths) {
    struct stat st;
    if (lstat(path.c_str(), &st) != 0) {
      if (errno == ENOENT) continue;
      error = path + ": " + strerror(errno);
      return false;
    }
    // Only what root made (this start, or an earlier one as root); never through a link.
    if (!S_ISREG(st.st_mode) || st.st_uid != 0) continue;
    if (lchown(path.c_str(), plan.uid, plan.gid) != 0) {
      error = path + ": cannot give it to user " + plan.user + ": " + strerror(errno);
      return false;
    }
  }
  return true;
}

bool drop_privileges(const PrivilegePlan& plan, std::string& error) {
  if (!plan.drop) {
    if (geteuid() == 0 || no_capabilities()) return true;
    // Not root but with capabilities (e.g. CAP_NET_BIND_SERVICE from systemd): bound
    // now, so none is needed any more.
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    if (syscall(SYS_capset, &header, data) != 0) {
      error = std::string("cannot clear the capabilities left after binding: ") + strerror(errno);
      return false;
    }
    return true;
  }
  if (initgroups(plan.user.c_str(), plan.gid) != 0) {
    error = "initgroups(" + plan.user + "): " + strerror(errno);
    return false;
  }
  if (setgid(plan.gid) != 0) {
    error = "setgid(" + std::to_string(plan.gid) + "): " + strerror(errno);
    return false;
  }
  if (setuid(plan.uid) != 0) {
    error = "setuid(" + std::to_string(plan.uid) + "): " + strerror(errno);
    return false;
  }
  uid_t ruid, euid, suid;
  gid_t rgid, egid, sgid;
  if (getresuid(&ruid, &euid, &suid) != 0 || getresgid(&rgid, &egid, &sgid) != 0 ||
      ruid != plan.uid || euid != plan.uid || suid != plan.uid || rgid != plan.gid ||
      egid != plan.gid || sgid != plan.gid) {
    error = "the user and group ids are not all " + plan.user + "'s after setuid";
    return false;
  }
  if (setuid(0) == 0 || seteuid(0) == 0) {
    error = "root could be regained after dropping to " + plan.user;
    return false;
  }
  if (!no_capabilities()) {
    error = "capabilities are left after dropping to " + plan.user;
    return false;
  }
  return true;
}

}  // namespace mqgate
