#include "agent/mbox.hpp"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "vault/error.hpp"

namespace reduit {

namespace {

ScannedEntry file_entry(const std::string& name, const struct stat& st) {
  ScannedEntry f;
  f.kind = EntryKind::kFile;
  f.path = f.key = name;
  f.dev = st.st_dev;
  f.ino = st.st_ino;
  f.size = static_cast<std::uint64_t>(st.st_size);
  f.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  f.ctime_ns = static_cast<std::int64_t>(st.st_ctim.tv_sec) * 1000000000 + st.st_ctim.tv_nsec;
  f.mode = st.st_mode & 07777;
  return f;
}

bool ends_with(const std::string& s, const char* suffix) {
  std::size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

}  // namespace

MailboxSpec discover_mbox(const std::string& root) {
  struct stat st;
  if (stat(root.c_str(), &st) != 0) {
    throw Error(ErrorCode::kSource, "mbox source " + root + ": " + std::strerror(errno));
  }
  std::string base = root.substr(root.find_last_of('/') + 1);
  if (S_ISREG(st.st_mode)) {
    std::string dir = root.substr(0, root.find_last_of('/'));
    return {base, root, "", dir.empty() ? "/" : dir};
  }
  if (!S_ISDIR(st.st_mode)) {
    throw Error(ErrorCode::kSource,
                "mbox source " + root + " is neither an mbox file nor a directory of them");
  }
  return {base.empty() ? root : base, root, "", root};
}

ScannedFolder scan_mbox(const MailboxSpec& m, const std::string& root) {
  ScannedFolder out;
  out.abs = m.abs;
  struct stat st;
  if (root != m.abs) {  // one file
    if (lstat(root.c_str(), &st) != 0) {
      if (errno == ENOENT) return out;  // removed since discovery
      throw Error(ErrorCode::kSource, "cannot stat " + root + ": " + std::strerror(errno));
    }
    std::string name = root.substr(root.find_last_of('/') + 1);
    if (S_ISREG(st.st_mode))
      out.entries.push_back(file_entry(name, st));
    else
      out.skipped.push_back(name);
    return out;
  }
  DIR* d = opendir(root.c_str());
  if (!d) throw Error(ErrorCode::kSource, "cannot read directory " + root + ": " + std::strerror(errno));
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name[0] == '.' || ends_with(name, ".lock")) continue;
    if (lstat((root + "/" + name).c_str(), &st) != 0) continue;  // vanished
    if (S_ISDIR(st.st_mode)) continue;
    if (S_ISREG(st.st_mode))
      out.entries.push_back(file_entry(name, st));
    else
      out.skipped.push_back(name);
  }
  closedir(d);
  std::sort(out.entries.begin(), out.entries.end(),
            [](const ScannedEntry& a, const ScannedEntry& b) { return a.path < b.path; });
  return out;
}

bool is_changing_file(const std::string& path) {
  std::string base = path.substr(path.find_last_of('/') + 1);
  return base == "dovecot-uidlist" || base == "dovecot-keywords" || base == "subscriptions" ||
         base == "maildirsize" || base.rfind("dovecot.index", 0) == 0 ||
         base.rfind("dovecot.list.index", 0) == 0;
}

}  // namespace reduit
