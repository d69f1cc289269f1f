#include "output.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <limits.h>
#include <array>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>

#include "error.hpp"

namespace mqgate::pki {

namespace {

constexpr off_t kMaxInputSize = 4 << 20;  // certificates, keys and CRLs are far smaller

// What to remove if the process is interrupted: the temporary files, then the
// directories the run created, deepest first. Signal handlers may only make
// async-signal-safe calls, so the paths live in fixed buffers.
enum : sig_atomic_t { kFree = 0, kTempFile = 1, kCreatedDir = 2 };
constexpr size_t kMaxCleanup = 16;
std::array<char[PATH_MAX], kMaxCleanup> g_cleanup_paths;
volatile sig_atomic_t g_cleanup_kind[kMaxCleanup];

void on_fatal_signal(int sig) {
  for (size_t i = 0; i < kMaxCleanup; ++i) {
    if (g_cleanup_kind[i] == kTempFile) unlink(g_cleanup_paths[i]);
  }
  // Directories take the first slots, parents before children.
  for (size_t i = kMaxCleanup; i-- > 0;) {
    if (g_cleanup_kind[i] == kCreatedDir) rmdir(g_cleanup_paths[i]);
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

std::atomic<bool> g_leave_signals_alone{false};

void install_signal_cleanup() {
  static bool installed = false;
  if (installed || g_leave_signals_alone) return;
  installed = true;
  struct sigaction sa {};
  sa.sa_handler = on_fatal_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP})
    sigaction(sig, &sa, nullptr);
}

// Holds back SIGINT/SIGTERM/SIGHUP for a scope, so that the handler sees either no new
// file or directory or a registered one, and a set of renames happens whole.
class SignalBlock {
 public:
  SignalBlock() {
    sigset_t set;
    sigemptyset(&set);
    for (int sig : {SIGINT, SIGTERM, SIGHUP})
      sigaddset(&set, sig);
    sigprocmask(SIG_BLOCK, &set, &old_);
  }
  ~SignalBlock() { sigprocmask(SIG_SETMASK, &old_, nullptr); }
  SignalBlock(const SignalBlock&) = delete;
  SignalBlock& operator=(const SignalBlock&) = delete;

 private:
  sigset_t old_;
};

// Call with the signals blocked (SignalBlock).
void register_cleanup(const std::string& path, sig_atomic_t kind) {
  if (path.size() >= PATH_MAX) return;
  for (size_t i = 0; i < kMaxCleanup; ++i) {
    if (g_cleanup_kind[i] == kFree) {
      std::memcpy(g_cleanup_paths[i], path.c_str(), path.size() + 1);
      g_cleanup_kind[i] = kind;
      return;
    }
  }
}

void unregister_cleanup(const std::string& path) {
  for (size_t i = 0; i < kMaxCleanup; ++i) {
    if (g_cleanup_kind[i] != kFree && path == g_cleanup_paths[i]) g_cleanup_kind[i] = kFree;
  }
}

std::string dir_of(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string base_of(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

void sync_directory(const std::string& dir) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // best effort: the files themselves are already synced
  fsync(fd);
  close(fd);
}

// rename() that fails with EEXIST instead of replacing an existing target.
int rename_noreplace(const char* from, const char* to) {
  if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0) return 0;
  if (errno != EINVAL && errno != ENOSYS) return -1;
  // The file system has no RENAME_NOREPLACE: link() also refuses an existing target.
  if (link(from, to) != 0) return -1;
  unlink(from);
  return 0;
}

}  // namespace

std::string read_file(const std::string& path, const std::string& role) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw Error("cannot read " + role + " '" + path + "': " + errno_message(errno));
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    throw Error("cannot read " + role + " '" + path + "': not a regular file");
  }
  if (st.st_size > kMaxInputSize) {
    close(fd);
    throw Error(role + " '" + path + "' is too large (" + std::to_string(st.st_size) + " bytes)");
  }
  std::string data;
  char buf[8192];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      close(fd);
      throw Error("cannot read " + role + " '" + path + "': " + errno_message(err));
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
    if (data.size() > static_cast<size_t>(kMaxInputSize)) {
      close(fd);
      throw Error(role + " '" + path + "' is too large");
    }
  }
  close(fd);
  std::memset(buf, 0, sizeof buf);
  return data;
}

size_t parse_length(const std::string& content) {
  return content.find("-----BEGIN ") != std::string::npos ? content.size() + 1 : content.size();
}

void leave_signals_alone() {
  g_leave_signals_alone = true;
}

bool path_exists(const std::string& path) {
  struct stat st {};
  return lstat(path.c_str(), &st) == 0;
}

std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty() || dir == ".") return name;
  if (dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

DirectoryLock::DirectoryLock(const std::string& path) {
  std::string dir = dir_of(path);
  fd_ = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd_ < 0) throw Error("cannot open directory '" + dir + "': " + errno_message(errno));
  while (flock(fd_, LOCK_EX) != 0) {
    if (errno != EINTR) {
      int err = errno;
      close(fd_);
      throw Error("cannot lock directory '" + dir + "': " + errno_message(err));
    }
  }
}

DirectoryLock::~DirectoryLock() {
  if (fd_ >= 0) close(fd_);  // releases the lock
}

OutputSet::OutputSet(bool overwrite) : overwrite_(overwrite) {}

OutputSet::~OutputSet() {
  if (!committed_) discard();
}

void OutputSet::discard() {
  for (File& f : files_) {
    if (f.fd >= 0) close(f.fd);
    f.fd = -1;
    if (!f.temp.empty()) {
      unlink(f.temp.c_str());
      unregister_cleanup(f.temp);
    }
    // A file already renamed into place is only taken back if it was new.
    if (f.committed && !overwrite_) unlink(f.path.c_str());
  }
  for (auto it = created_dirs_.rbegin(); it != created_dirs_.rend(); ++it) {
    rmdir(it->c_str());
    unregister_cleanup(*it);
  }
}

void OutputSet::create_directory(const std::string& dir) {
  if (dir.empty()) return;
  install_signal_cleanup();
  // Walk the path from the top, creating each missing component.
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = dir.find('/', pos + 1);
    std::string part = dir.substr(0, pos);
    if (part.empty() || part.back() == '/') continue;
    struct stat st {};
    if (stat(part.c_str(), &st) == 0) {
      if (!S_ISDIR(st.st_mode)) {
        throw Error("cannot create output directory '" + dir + "': '" + part +
                    "' is not a directory");
      }
      continue;
    }
    SignalBlock block;
    if (mkdir(part.c_str(), 0755) != 0) {
      if (errno == EEXIST) continue;  // made by someone else meanwhile
      throw Error("cannot create output directory '" + dir + "': " + errno_message(errno));
    }
    register_cleanup(part, kCreatedDir);
    created_dirs_.push_back(part);
  }
}

size_t OutputSet::add(const std::string& path, mode_t mode) {
  struct stat st {};
  if (lstat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) throw Error("cannot write '" + path + "': it is a directory");
    if (!overwrite_) {
      throw Error("'" + path + "' already exists; use --force to overwrite it");
    }
  }
  for (const File& f : files_) {
    if (f.path == path) throw Error("internal error: '" + path + "' written twice");
  }
  File f;
  f.path = path;
  f.mode = mode;
  std::string dir = dir_of(path);
  // Built by appending: GCC 12 -O3 warns falsely (-Wrestrict) on "." + std::string&&.
  std::string temp_name = ".";
  temp_name += base_of(path);
  temp_name += ".tmp-XXXXXX";
  std::string temp = join_path(dir, temp_name);
  install_signal_cleanup();
  {
    SignalBlock block;
    int fd = mkostemp(temp.data(), O_CLOEXEC);  // mode 0600
    if (fd < 0) {
      throw Error("cannot write to directory '" + dir + "': " + errno_message(errno));
    }
    register_cleanup(temp, kTempFile);
    f.fd = fd;
    f.temp = temp;
  }
  files_.push_back(std::move(f));
  return files_.size() - 1;
}

void OutputSet::write(size_t index, std::string_view data) {
  File& f = files_.at(index);
  const char* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    ssize_t n = ::write(f.fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Error("cannot write '" + f.path + "': " + errno_message(errno));
    p += n;
    left -= static_cast<size_t>(n);
  }
  // fchmod is not subject to the umask: the final mode is exactly f.mode.
  if (fchmod(f.fd, f.mode) != 0 || fsync(f.fd) != 0) {
    throw Error("cannot write '" + f.path + "': " + errno_message(errno));
  }
  if (close(f.fd) != 0) {
    f.fd = -1;
    throw Error("cannot write '" + f.path + "': " + errno_message(errno));
  }
  f.fd = -1;
  f.written = true;
}

void OutputSet::commit() {
  for (const File& f : files_) {
    if (!f.written) throw Error("internal error: '" + f.path + "' was never written");
  }
  SignalBlock block;  // all renames, or (on failure) none kept: see discard()
  for (File& f : files_) {
    int ret = overwrite_ ? rename(f.temp.c_str(), f.path.c_str())
                         : rename_noreplace(f.temp.c_str(), f.path.c_str());
    if (ret != 0) {
      int err = errno;
      if (err == EEXIST) {
        throw Error("'" + f.path + "' appeared while writing; use --force to overwrite it");
      }
      throw Error("cannot write '" + f.path + "': " + errno_message(err));
    }
    unregister_cleanup(f.temp);
    f.temp.clear();
    f.committed = true;
  }
  for (const std::string& d : created_dirs_)
    unregister_cleanup(d);
  std::vector<std::string> dirs;
  for (const File& f : files_) {
    std::string d = dir_of(f.path);
    bool seen = false;
    for (const std::string& x : dirs)
      seen = seen || x == d;
    if (!seen) dirs.push_back(d);
  }
  for (const std::string& d : dirs)
    sync_directory(d);
  committed_ = true;
}

}  // namespace mqgate::pki
