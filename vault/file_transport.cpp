// vault/file_transport.cpp — the file:// backend: a vault in a local directory.
//
// put() writes <root>/tmp/<random>, fsyncs it, renames it over the final name and
// fsyncs the parent directory, so a crash leaves either the old or the new object,
// never a partial one. rename() uses renameat2(RENAME_NOREPLACE) (link+unlink where
// the file system lacks it) and never overwrites.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>  // renameat2, RENAME_NOREPLACE
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>
#include <unordered_set>

#include "vault/error.hpp"
#include "vault/transport.hpp"

namespace reduit {
namespace {

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // Takes `fd`, closing the previous descriptor; keeps errno (from opening `fd`).
  void reset(int fd = -1) {
    const int saved = errno;
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
    errno = saved;
  }
  // close() reporting its error (NFS reports write errors here).
  int close_checked() {
    int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

std::string parent_of(const std::string& name) {
  std::size_t slash = name.rfind('/');
  return slash == std::string::npos ? std::string() : name.substr(0, slash);
}

class FileTransport final : public Transport {
 public:
  FileTransport(std::string root, bool create) : root_(std::move(root)) {
    while (root_.size() > 1 && root_.back() == '/') root_.pop_back();
    if (root_.empty() || root_.front() != '/') {
      throw Error(ErrorCode::kUsage,
                  "vault directory \"" + root_ + "\" must be an absolute path, e.g. /srv/reduit");
    }
    struct stat st {};
    if (::stat(root_.c_str(), &st) != 0) {
      int e = errno;
      if (e != ENOENT || !create) {
        if (e == ENOENT) {
          throw Error(ErrorCode::kUnreachable,
                      "vault directory " + root_ + " does not exist (run reduit init first?)");
        }
        throw Error(ErrorCode::kUnreachable,
                    "cannot access vault directory " + root_ + ": " + std::strerror(e));
      }
      mkdir_abs(root_);
    } else if (!S_ISDIR(st.st_mode)) {
      throw Error(ErrorCode::kUnreachable, "vault path " + root_ + " is not a directory");
    }
    std::random_device rd;
    rng_.seed((static_cast<std::uint64_t>(rd()) << 32) ^ rd() ^
              (static_cast<std::uint64_t>(::getpid()) << 16));
  }

  void put(const std::string& name, const Bytes& data) override {
    check_object_name(name);
    const std::string tmp = root_ + "/tmp/" + unique_name();
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (fd.get() < 0 && errno == ENOENT) {
      recreate_dir("tmp");
      fd.reset(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    }
    if (fd.get() < 0) fail_errno("creating " + tmp, errno);
    try {
      write_all(fd.get(), data, tmp);
      if (::fsync(fd.get()) != 0) fail_errno("syncing " + tmp, errno);
      if (fd.close_checked() != 0) fail_errno("closing " + tmp, errno);
      const std::string final_path = path_of(name);
      if (::rename(tmp.c_str(), final_path.c_str()) != 0) {
        int e = errno;
        if (e != ENOENT) fail_errno("renaming " + tmp + " to " + final_path, e);
        recreate_dir(parent_of(name));
        if (::rename(tmp.c_str(), final_path.c_str()) != 0) {
          fail_errno("renaming " + tmp + " to " + final_path, errno);
        }
      }
      fsync_dir(parent_dir_path(name));
    } catch (...) {
      ::unlink(tmp.c_str());
      throw;
    }
    stats_.bytes_written += data.size();
    stats_.objects_written += 1;
  }

  bool put_exclusive(const std::string& name, const Bytes& data) override {
    check_object_name(name);
    const std::string path = path_of(name);
    Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (fd.get() < 0 && errno == ENOENT) {
      recreate_dir(parent_of(name));
      fd.reset(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    }
    if (fd.get() < 0) {
      if (errno == EEXIST) return false;
      fail_errno("creating " + path, errno);
    }
    try {
      write_all(fd.get(), data, path);
      if (::fsync(fd.get()) != 0) fail_errno("syncing " + path, errno);
      if (fd.close_checked() != 0) fail_errno("closing " + path, errno);
      fsync_dir(parent_dir_path(name));
    } catch (...) {
      ::unlink(path.c_str());  // never leave a partial object under the final name
      throw;
    }
    stats_.bytes_written += data.size();
    stats_.objects_written += 1;
    return true;
  }

  Bytes get(const std::string& name) override {
    check_object_name(name);
    const std::string path = path_of(name);
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) {
      int e = errno;
      if (e == ENOENT || e == ENOTDIR) {
        check_root();
        throw Error(ErrorCode::kNotFound, "object " + name + " not found in vault " + describe());
      }
      fail_errno("opening " + path, e);
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) fail_errno("stat " + path, errno);
    if (!S_ISREG(st.st_mode)) {
      throw Error(ErrorCode::kNotFound,
                  "object " + name + " in vault " + describe() + " is not a regular file");
    }
    Bytes out(static_cast<std::size_t>(st.st_size));
    std::size_t got = 0;
    for (;;) {
      std::uint8_t probe[4096];  // after the expected size: confirm EOF cheaply
      std::uint8_t* dst = got < out.size() ? out.data() + got : probe;
      std::size_t want = got < out.size() ? out.size() - got : sizeof probe;
      ssize_t n = ::read(fd.get(), dst, want);
      if (n < 0) {
        if (errno == EINTR) continue;
        fail_errno("reading " + path, errno);
      }
      if (n == 0) break;
      if (dst == probe) out.insert(out.end(), probe, probe + n);  // grew meanwhile
      got += static_cast<std::size_t>(n);
    }
    out.resize(got);
    stats_.bytes_read += got;
    return out;
  }

  std::optional<std::uint64_t> size(const std::string& name) override {
    check_object_name(name);
    struct stat st {};
    if (::stat(path_of(name).c_str(), &st) != 0) {
      int e = errno;
      if (e == ENOENT || e == ENOTDIR) {
        check_root();
        return std::nullopt;
      }
      fail_errno("stat " + path_of(name), e);
    }
    if (!S_ISREG(st.st_mode)) return std::nullopt;
    return static_cast<std::uint64_t>(st.st_size);
  }

  std::vector<std::string> list(const std::string& dir) override { return scan(dir, false); }

  std::vector<std::string> list_dirs(const std::string& dir) override { return scan(dir, true); }

  bool rename(const std::string& from, const std::string& to) override {
    check_object_name(from);
    check_object_name(to);
    const std::string src = path_of(from);
    const std::string dst = path_of(to);
    for (int attempt = 0; attempt < 2; ++attempt) {
      int e = rename_noreplace(src, dst);
      if (e == 0) {
        fsync_dir(parent_dir_path(to));
        if (parent_of(to) != parent_of(from)) fsync_dir(parent_dir_path(from));
        return true;
      }
      if (e == EEXIST || e == ENOTEMPTY) return false;
      if (e != ENOENT) fail_errno("renaming " + src + " to " + dst, e);
      // ENOENT: either `from` is absent or the parent of `to` is missing.
      struct stat st {};
      if (::lstat(src.c_str(), &st) != 0) {
        check_root();
        return false;
      }
      if (attempt == 0) recreate_dir(parent_of(to));
    }
    fail_errno("renaming " + src + " to " + dst, ENOENT);
  }

  void remove(const std::string& name) override {
    check_object_name(name);
    const std::string path = path_of(name);
    if (::unlink(path.c_str()) != 0) {
      int e = errno;
      if (e == ENOENT || e == ENOTDIR) {
        check_root();
        return;
      }
      fail_errno("removing " + path, e);
    }
  }

  std::string describe() const override { return "file://" + root_; }

  const TransportStats& stats() const override { return stats_; }

 private:
  std::string path_of(const std::string& name) const { return root_ + "/" + name; }

  std::string parent_dir_path(const std::string& name) const {
    std::string parent = parent_of(name);
    return parent.empty() ? root_ : root_ + "/" + parent;
  }

  std::string unique_name() {
    static const char* hex = "0123456789abcdef";
    std::string s;
    for (int i = 0; i < 2; ++i) {
      std::uint64_t v = rng_();
      for (int j = 0; j < 16; ++j) {
        s += hex[v & 15];
        v >>= 4;
      }
    }
    return s + ".tmp";
  }

  // Throws kUnreachable when the vault directory itself has gone (unmounted disk).
  void check_root() const {
    struct stat st {};
    if (::stat(root_.c_str(), &st) != 0) {
      throw Error(ErrorCode::kUnreachable,
                  "vault directory " + root_ + " is no longer accessible: " + std::strerror(errno));
    }
    if (!S_ISDIR(st.st_mode)) {
      throw Error(ErrorCode::kUnreachable, "vault path " + root_ + " is no longer a directory");
    }
  }

  [[noreturn]] void fail_errno(const std::string& what, int e) const {
    if (e == ENOENT || e == ENOTDIR) check_root();
    throw_errno(what + " (vault " + describe() + ")", e);
  }

  void write_all(int fd, const Bytes& data, const std::string& path) {
    std::size_t done = 0;
    while (done < data.size()) {
      ssize_t n = ::write(fd, data.data() + done, data.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        fail_errno("writing " + path, errno);
      }
      if (n == 0) fail_errno("writing " + path, EIO);
      done += static_cast<std::size_t>(n);
    }
  }

  void fsync_dir(const std::string& dir_path) const {
    Fd fd(::open(dir_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (fd.get() < 0) fail_errno("opening directory " + dir_path, errno);
    if (::fsync(fd.get()) != 0 && errno != EINVAL) fail_errno("syncing " + dir_path, errno);
  }

  // A path below `dir` was missing: forget what we believed and mkdir -p it again
  // (another process may have pruned an empty directory).
  void recreate_dir(const std::string& dir) {
    for (std::string d = dir; !d.empty(); d = parent_of(d)) known_dirs_.erase(d);
    ensure_dir(dir);
  }

  // mkdir -p of the vault-relative `dir` ("" = root, which must exist).
  void ensure_dir(const std::string& dir) {
    if (dir.empty() || known_dirs_.count(dir) != 0) return;
    const std::string path = root_ + "/" + dir;
    if (::mkdir(path.c_str(), 0700) == 0) {
      fsync_dir(parent_dir_path(dir));
    } else {
      int e = errno;
      if (e == ENOENT) {
        ensure_dir(parent_of(dir));
        if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
          fail_errno("creating directory " + path, errno);
        }
        fsync_dir(parent_dir_path(dir));
      } else if (e != EEXIST) {
        fail_errno("creating directory " + path, e);
      }
      struct stat st {};
      if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
        throw Error(ErrorCode::kIo, "vault path " + path + " exists but is not a directory");
      }
    }
    known_dirs_.insert(dir);
  }

  // mkdir -p of an absolute path (used only by create).
  static void mkdir_abs(const std::string& path) {
    for (std::size_t pos = 1; pos <= path.size(); ++pos) {
      if (pos != path.size() && path[pos] != '/') continue;
      const std::string prefix = path.substr(0, pos);
      if (::mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) {
        throw Error(ErrorCode::kUnreachable,
                    "cannot create vault directory " + prefix + ": " + std::strerror(errno));
      }
    }
  }

  static int rename_noreplace(const std::string& src, const std::string& dst) {
    if (::renameat2(AT_FDCWD, src.c_str(), AT_FDCWD, dst.c_str(), RENAME_NOREPLACE) == 0) {
      return 0;
    }
    int e = errno;
    if (e != EINVAL && e != ENOSYS) return e;
    // File system without RENAME_NOREPLACE: link() refuses to overwrite too.
    if (::link(src.c_str(), dst.c_str()) != 0) return errno;
    if (::unlink(src.c_str()) != 0) {
      e = errno;
      ::unlink(dst.c_str());
      return e;
    }
    return 0;
  }

  std::vector<std::string> scan(const std::string& dir, bool want_dirs) {
    if (!dir.empty()) check_object_name(dir);
    const std::string path = dir.empty() ? root_ : root_ + "/" + dir;
    DIR* d = ::opendir(path.c_str());
    if (d == nullptr) {
      int e = errno;
      if (e == ENOENT || e == ENOTDIR) {
        check_root();
        return {};
      }
      fail_errno("listing " + path, e);
    }
    std::vector<std::string> out;
    errno = 0;
    while (dirent* entry = ::readdir(d)) {
      const std::string name = entry->d_name;
      if (name.empty() || name.front() == '.') continue;
      bool is_dir = false;
      bool is_reg = false;
      if (entry->d_type == DT_DIR) {
        is_dir = true;
      } else if (entry->d_type == DT_REG) {
        is_reg = true;
      } else if (entry->d_type == DT_UNKNOWN) {
        struct stat st {};
        if (::fstatat(::dirfd(d), entry->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
          is_dir = S_ISDIR(st.st_mode);
          is_reg = S_ISREG(st.st_mode);
        }
      }
      if (want_dirs ? is_dir : is_reg) out.push_back(dir.empty() ? name : dir + "/" + name);
      errno = 0;
    }
    int e = errno;
    ::closedir(d);
    if (e != 0) fail_errno("listing " + path, e);
    std::sort(out.begin(), out.end());
    return out;
  }

  std::string root_;
  std::unordered_set<std::string> known_dirs_;
  std::mt19937_64 rng_;
  TransportStats stats_;
};

}  // namespace

std::unique_ptr<Transport> make_file_transport(const std::string& root, bool create) {
  return std::make_unique<FileTransport>(root, create);
}

}  // namespace reduit
