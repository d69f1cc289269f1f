// File input and atomic output.
//
// A tool's outputs are written as one OutputSet: each file first goes to a temporary
// file beside it (mode set with fchmod, so the umask does not matter), is fsync'ed, and
// only when every file is complete are they renamed into place. Any failure before
// that, or SIGINT/SIGTERM/SIGHUP, removes the temporary files and any directory the set
// created, so nothing half-written is ever left under an output name.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

namespace mqgate::pki {

// Reads a whole (small) file. `role` names it in errors: "cannot read CA key 'x': ...".
std::string read_file(const std::string& path, const std::string& role);

// The length to pass to mbedTLS's parse functions for a file's content: mbedTLS takes
// PEM only NUL-terminated with the NUL counted, and DER at its exact length.
size_t parse_length(const std::string& content);

// For a process that handles its own signals (the broker's console): from now on outputs
// install no SIGINT/SIGTERM/SIGHUP handlers to remove temporary files (an interrupted
// run may leave one behind, never a half-written output).
void leave_signals_alone();

// True if something (a file, a directory, even a dangling symlink) exists at path.
bool path_exists(const std::string& path);

// "dir/name", or just "name" when dir is "" or ".".
std::string join_path(const std::string& dir, const std::string& name);

// An exclusive flock() on the directory holding `path`, held for the object's lifetime, so
// that two runs updating the same file in place do not lose each other's changes.
class DirectoryLock {
 public:
  explicit DirectoryLock(const std::string& path);
  ~DirectoryLock();
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;

 private:
  int fd_ = -1;
};

class OutputSet {
 public:
  // With `overwrite`, existing outputs are replaced; without it they are refused.
  explicit OutputSet(bool overwrite);
  ~OutputSet();
  OutputSet(const OutputSet&) = delete;
  OutputSet& operator=(const OutputSet&) = delete;

  // Creates dir and its missing parents (mode 0755 less the umask). Directories created
  // here are removed again if the set is never committed.
  void create_directory(const std::string& dir);

  // Declares an output file and creates its temporary file now, so that an unwritable
  // directory fails before any slow work. Refuses an existing path unless overwriting.
  // Returns the index for write().
  size_t add(const std::string& path, mode_t mode);

  // Writes the whole content of output `index` to its temporary file and syncs it.
  void write(size_t index, std::string_view data);

  // Renames every temporary file to its final name, then syncs the directories.
  void commit();

  const std::string& path(size_t index) const { return files_[index].path; }

 private:
  struct File {
    std::string path;
    std::string temp;
    int fd = -1;
    mode_t mode = 0;
    bool written = false;
    bool committed = false;
  };
  void discard();

  bool overwrite_;
  bool committed_ = false;
  std::vector<File> files_;
  std::vector<std::string> created_dirs_;
};

}  // namespace mqgate::pki
