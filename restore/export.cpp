#include "restore/export.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>

#include "restore/fetch.hpp"
#include "vault/error.hpp"

namespace reduit {

namespace {

void write_all(int fd, std::string_view data, const std::string& what) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("write " + what, errno);
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
}

bool dir_is_empty(const std::string& p) {
  DIR* d = opendir(p.c_str());
  if (!d) return false;
  bool empty = true;
  while (dirent* e = readdir(d)) {
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) empty = false;
  }
  closedir(d);
  return empty;
}

// Creates `name` exclusively in `dirfd`; when taken, `name-2`, `name-3`… (before
// the extension). Returns the fd and sets `made` to the name used.
int create_unique(int dirfd, const std::string& stem, const std::string& ext, std::string& made) {
  for (int n = 1; n < 10000; ++n) {
    made = stem + (n == 1 ? "" : "-" + std::to_string(n)) + ext;
    int fd = openat(dirfd, made.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd >= 0) return fd;
    if (errno != EEXIST) throw_errno("create " + made, errno);
  }
  throw Error(ErrorCode::kIo, "cannot find a free name for " + stem + ext);
}

}  // namespace

std::string safe_file_name(std::string_view name) {
  std::string out;
  for (unsigned char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              std::strchr(".,_=+-@", c) != nullptr;
    out += ok && c != 0 ? static_cast<char>(c) : '_';
  }
  if (out.size() > 200) out.resize(200);
  if (out.empty() || out[0] == '.') out = "_" + out;
  return out;
}

std::string folder_display_name(const std::string& folder) {
  if (folder.empty()) return "INBOX";
  std::string s = folder[0] == '.' ? folder.substr(1) : folder;
  for (char& c : s) {
    if (c == '/') c = '.';
  }
  return s.empty() ? "INBOX" : s;
}

std::string envelope_sender(std::string_view h) {
  std::size_t pos = 0;
  std::string value;
  bool in = false;
  while (pos < h.size()) {
    std::size_t nl = h.find('\n', pos);
    std::string_view line = h.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    pos = nl == std::string_view::npos ? h.size() : nl + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) break;
    if (in) {
      if (line[0] == ' ' || line[0] == '\t') {
        value.append(line);
        continue;
      }
      break;
    }
    if (line.size() >= 12 && strncasecmp(line.data(), "Return-Path:", 12) == 0) {
      value = std::string(line.substr(12));
      in = true;
    }
  }
  std::size_t b = value.find_first_not_of(" \t");
  std::size_t e = value.find_last_not_of(" \t");
  value = b == std::string::npos ? "" : value.substr(b, e - b + 1);
  if (value.size() >= 2 && value.front() == '<' && value.back() == '>')
    value = value.substr(1, value.size() - 2);
  if (value.empty() || value.find_first_of(" \t\r\n<>") != std::string::npos) return "MAILER-DAEMON";
  return value;
}

std::string mboxrd_record(std::string_view m, std::int64_t mtime_ns, bool* added_newline) {
  std::string hb(m.substr(0, header_block_length(m)));
  time_t t = static_cast<time_t>(mtime_ns / 1000000000);
  tm tmv;
  gmtime_r(&t, &tmv);
  char date[64];
  strftime(date, sizeof date, "%a %b %e %H:%M:%S %Y", &tmv);
  std::string out = "From " + envelope_sender(hb) + " " + date + "\n";
  out.reserve(out.size() + m.size() + m.size() / 64 + 2);
  std::size_t pos = 0;
  while (pos < m.size()) {
    std::size_t nl = m.find('\n', pos);
    std::size_t end = nl == std::string_view::npos ? m.size() : nl + 1;
    std::size_t q = pos;
    while (q < end && m[q] == '>') ++q;
    if (m.substr(q, 5) == "From ") out += '>';
    out.append(m.substr(pos, end - pos));
    pos = end;
  }
  bool add = m.empty() || m.back() != '\n';
  if (add) out += '\n';
  if (added_newline) *added_newline = add;
  out += '\n';
  return out;
}

ExportStats export_messages(Repository& repo, const ExportRequest& req) {
  auto t0 = std::chrono::steady_clock::now();
  ExportStats stats;
  if (req.dest.empty()) throw Error(ErrorCode::kUsage, "export needs --to PATH");
  SelectRequest sreq = req.select;
  const bool flat = req.one_folder;
  sreq.subfolders = !flat;
  BlobIndex index(repo.load_indexes());
  TreeLoader trees(repo, index);
  Selection sel = select_messages(repo, trees, sreq, &stats.warnings);
  stats.snapshot_id = sel.snapshot.id;
  stats.mailbox = sel.mailbox.name;
  const bool mbox = req.format == ExportFormat::kMbox;
  const bool single_file = mbox && flat;

  // The destination: a new file, or an absent or empty directory.
  struct stat st;
  bool exists = lstat(req.dest.c_str(), &st) == 0;
  if (single_file && exists) {
    throw Error(ErrorCode::kUsage,
                "export target " + req.dest + " exists; give a new file name (export never overwrites)");
  }
  if (!single_file && exists && (!S_ISDIR(st.st_mode) || !dir_is_empty(req.dest))) {
    throw Error(
        ErrorCode::kUsage,
        "export target " + req.dest + " exists and is not an empty directory; give a new or empty directory");
  }
  require_archive_key(repo);
  std::filesystem::path dest_path(req.dest);
  std::error_code ec;
  if (dest_path.has_parent_path()) std::filesystem::create_directories(dest_path.parent_path(), ec);

  bool created_dir = false;
  int rootfd = -1;
  std::string single_name;
  if (single_file) {
    std::string parent = dest_path.has_parent_path() ? dest_path.parent_path().string() : ".";
    rootfd = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0) throw_errno("open " + parent, errno);
    single_name = dest_path.filename().string();
    int fd = openat(rootfd, single_name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
      int err = errno;
      ::close(rootfd);
      throw_errno("create " + req.dest, err);
    }
    ::close(fd);
  } else {
    if (!exists) {
      if (mkdir(req.dest.c_str(), 0700) != 0) throw_errno("create " + req.dest, errno);
      created_dir = true;
    }
    rootfd = ::open(req.dest.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (rootfd < 0) throw_errno("open " + req.dest, errno);
  }
  // Everything written is tracked, so a failure can remove it.
  std::vector<std::pair<int, std::string>> made_files;  // (dirfd, name)
  std::vector<std::string> made_dirs;                   // below rootfd
  std::vector<int> dirfds;
  auto undo = [&] {
    for (auto it = made_files.rbegin(); it != made_files.rend(); ++it)
      unlinkat(it->first, it->second.c_str(), 0);
    for (auto it = made_dirs.rbegin(); it != made_dirs.rend(); ++it)
      unlinkat(rootfd, it->c_str(), AT_REMOVEDIR);
    if (single_file) unlinkat(rootfd, single_name.c_str(), 0);
    for (int fd : dirfds) ::close(fd);
    ::close(rootfd);
    if (created_dir) rmdir(req.dest.c_str());
  };
  try {
    // Per folder: where its messages go.
    struct Target {
      int dirfd;         // eml: directory; mbox: directory of the file
      std::string file;  // mbox: file name in dirfd
    };
    std::vector<Target> targets;
    std::vector<const TreeEntry*> entries;
    std::vector<std::size_t> entry_folder;
    for (std::size_t fi = 0; fi < sel.folders.size(); ++fi) {
      const SelectedFolder& f = sel.folders[fi];
      Target t{rootfd, ""};
      std::string name = safe_file_name(folder_display_name(f.folder.name));
      if (single_file) {
        t.file = single_name;
      } else if (mbox) {
        int fd = create_unique(rootfd, name, ".mbox", t.file);
        ::close(fd);
        made_files.emplace_back(rootfd, t.file);
        stats.files.push_back(t.file);
      } else if (!flat) {
        std::string dir = name;
        for (int n = 2; mkdirat(rootfd, dir.c_str(), 0700) != 0; ++n) {
          if (errno != EEXIST || n > 10000) throw_errno("create " + req.dest + "/" + dir, errno);
          dir = name + "-" + std::to_string(n);
        }
        made_dirs.push_back(dir);
        t.dirfd = openat(rootfd, dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (t.dirfd < 0) throw_errno("open " + req.dest + "/" + dir, errno);
        dirfds.push_back(t.dirfd);
        t.file = dir;
      }
      targets.push_back(t);
      for (std::size_t i : f.messages) {
        entries.push_back(&f.tree.entries[i]);
        entry_folder.push_back(fi);
      }
    }
    if (single_file) stats.files.push_back("");
    std::uint64_t no_newline = 0;
    FetchStats fs;
    fetch_entries(
        repo, index, entries,
        [&](std::size_t i, std::string_view bytes) {
          const TreeEntry& e = *entries[i];
          const Target& t = targets[entry_folder[i]];
          if (mbox) {
            bool added = false;
            std::string rec = mboxrd_record(bytes, e.mtime_ns, &added);
            no_newline += added;
            int fd = openat(t.dirfd, t.file.c_str(), O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0) throw_errno("open " + t.file, errno);
            try {
              write_all(fd, rec, t.file);
            } catch (...) {
              ::close(fd);
              throw;
            }
            ::close(fd);
          } else {
            std::string base = e.path.substr(e.path.rfind('/') + 1);
            std::size_t colon = base.find(':');
            std::string made;
            int fd = create_unique(t.dirfd, safe_file_name(base.substr(0, colon)), ".eml", made);
            made_files.emplace_back(t.dirfd, made);
            try {
              write_all(fd, bytes, made);
              timespec times[2];
              times[0].tv_sec = times[1].tv_sec = e.mtime_ns / 1000000000;
              times[0].tv_nsec = times[1].tv_nsec = e.mtime_ns % 1000000000;
              futimens(fd, times);
            } catch (...) {
              ::close(fd);
              throw;
            }
            ::close(fd);
            stats.files.push_back(flat ? made : t.file + "/" + made);
          }
          ++stats.messages;
          stats.bytes += bytes.size();
        },
        &fs,
        [&](std::size_t done, std::size_t total) {
          if (req.progress) fprintf(stderr, "\r\033[Kexporting: %zu/%zu packs", done, total);
        });
    if (req.progress) fprintf(stderr, "\r\033[K");
    if (no_newline) {
      stats.warnings.push_back(std::to_string(no_newline) +
                               " message(s) did not end with a newline; mbox added one (the eml format keeps "
                               "every byte)");
    }
    stats.packs_fetched = fs.packs_fetched + trees.packs_fetched();
    stats.bytes_fetched = fs.bytes_fetched + trees.bytes_fetched();
  } catch (...) {
    undo();
    throw;
  }
  for (int fd : dirfds) ::close(fd);
  ::close(rootfd);
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return stats;
}

}  // namespace reduit
