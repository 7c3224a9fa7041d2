#include "agent/scan.hpp"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>
#include <unordered_map>

#include "vault/error.hpp"

namespace reduit {

namespace {

bool is_dir(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_maildir_folder(const std::string& p) {
  return is_dir(p + "/cur") && is_dir(p + "/new");
}

std::string join(const std::string& a, const std::string& b) {
  if (a.empty()) return b;
  if (b.empty()) return a;
  return a + "/" + b;
}

struct DirEntry {
  std::string name;
  unsigned char type;
};

// Lists a directory (without "." and ".."). Throws kSource on failure other than ENOENT.
std::vector<DirEntry> list_dir(const std::string& p, bool* missing = nullptr) {
  std::vector<DirEntry> out;
  DIR* d = opendir(p.c_str());
  if (!d) {
    if (errno == ENOENT && missing) {
      *missing = true;
      return out;
    }
    throw Error(ErrorCode::kSource, "cannot read directory " + p + ": " + std::strerror(errno));
  }
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.' && (e->d_name[1] == 0 || (e->d_name[1] == '.' && e->d_name[2] == 0))) {
      continue;
    }
    out.push_back({e->d_name, e->d_type});
  }
  closedir(d);
  return out;
}

std::vector<std::string> subdirs(const std::string& p) {
  std::vector<std::string> out;
  for (const auto& e : list_dir(p)) {
    if (e.name[0] == '.') continue;
    if (e.type == DT_DIR || (e.type == DT_UNKNOWN && is_dir(p + "/" + e.name))) out.push_back(e.name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool has_maildir_below(const std::string& p, int depth) {
  if (is_maildir_folder(p)) return true;
  if (depth == 0) return false;
  for (const auto& e : list_dir(p)) {
    if (e.name == "cur" || e.name == "new" || e.name == "tmp") continue;
    std::string c = p + "/" + e.name;
    if ((e.type == DT_DIR || (e.type == DT_UNKNOWN && is_dir(c))) && has_maildir_below(c, depth - 1)) {
      return true;
    }
  }
  return false;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (true) {
    std::size_t p = s.find(sep, start);
    out.push_back(s.substr(start, p == std::string::npos ? std::string::npos : p - start));
    if (p == std::string::npos) break;
    start = p + 1;
  }
  return out;
}

void fill_stat(ScannedEntry& e, const struct stat& st) {
  e.dev = st.st_dev;
  e.ino = st.st_ino;
  e.size = static_cast<std::uint64_t>(st.st_size);
  e.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  e.ctime_ns = static_cast<std::int64_t>(st.st_ctim.tv_sec) * 1000000000 + st.st_ctim.tv_nsec;
  e.mode = st.st_mode & 07777;
}

// Lists cur/ or new/ until two consecutive looks at the directory's own stat agree,
// merging the listings, so a rename during the listing cannot hide a message.
std::vector<std::string> stable_listing(const std::string& dir) {
  std::set<std::string> names;
  for (int round = 0; round < 5; ++round) {
    struct stat before, after;
    if (stat(dir.c_str(), &before) != 0) {
      if (errno == ENOENT) return {};
      throw Error(ErrorCode::kSource, "cannot stat " + dir + ": " + std::strerror(errno));
    }
    bool missing = false;
    for (const auto& e : list_dir(dir, &missing)) names.insert(e.name);
    if (stat(dir.c_str(), &after) != 0) break;
    if (before.st_mtim.tv_sec == after.st_mtim.tv_sec && before.st_mtim.tv_nsec == after.st_mtim.tv_nsec &&
        before.st_ctim.tv_sec == after.st_ctim.tv_sec && before.st_ctim.tv_nsec == after.st_ctim.tv_nsec) {
      break;
    }
  }
  return {names.begin(), names.end()};
}

}  // namespace

std::string maildir_unique_name(const std::string& n) {
  std::size_t colon = n.find(':');
  if (colon != std::string::npos) return n.substr(0, colon);
  for (const char* sep : {"!2,", "!1,"}) {
    std::size_t p = n.find(sep);
    if (p != std::string::npos) return n.substr(0, p);
  }
  return n;
}

std::vector<MailboxSpec> discover_mailboxes(const std::string& root, const std::string& layout) {
  if (!is_dir(root)) {
    throw Error(ErrorCode::kSource, "mailbox root " + root + " does not exist or is not a directory");
  }
  std::vector<MailboxSpec> out;
  if (layout == "." || layout.empty()) {
    if (!has_maildir_below(root, 8)) {
      throw Error(ErrorCode::kSource, root + " is not a Maildir: no folder with cur/ and new/ found");
    }
    std::string base = root.substr(root.find_last_of('/') + 1);
    out.push_back({base.empty() ? root : base, root, "", root});
    return out;
  }
  std::vector<std::string> segs = split(layout, '/');
  struct Partial {
    std::string rel, domain, local, user;
  };
  std::vector<Partial> cur{{}};
  for (const std::string& seg : segs) {
    std::vector<Partial> next;
    for (const Partial& p : cur) {
      std::string dir = join(root, p.rel);
      if (seg.empty() || seg == ".") continue;
      if (seg[0] != '%' && seg != "*") {
        if (is_dir(dir + "/" + seg)) next.push_back({join(p.rel, seg), p.domain, p.local, p.user});
        continue;
      }
      for (const std::string& d : subdirs(dir)) {
        Partial q{join(p.rel, d), p.domain, p.local, p.user};
        if (seg == "%d")
          q.domain = d;
        else if (seg == "%n")
          q.local = d;
        else if (seg == "%u")
          q.user = d;
        else if (seg != "*") {
          throw Error(ErrorCode::kUsage,
                      "layout '" + layout + "': unknown placeholder " + seg + " (use %d, %n, %u or *)");
        }
        next.push_back(std::move(q));
      }
    }
    cur = std::move(next);
  }
  for (const Partial& p : cur) {
    std::string abs = join(root, p.rel);
    if (!has_maildir_below(abs, 8)) continue;
    std::string name = p.rel;
    if (!p.local.empty() && !p.domain.empty())
      name = p.local + "@" + p.domain;
    else if (!p.user.empty())
      name = p.user;
    out.push_back({name, root, p.rel, abs});
  }
  if (out.empty()) {
    throw Error(ErrorCode::kSource, "no Maildir found under " + root + " with layout '" + layout +
                                        "' (a mailbox is a directory with cur/ and new/)");
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return out;
}

std::vector<std::string> find_folders(const std::string& mailbox_abs) {
  std::vector<std::string> out{""};
  std::vector<std::string> stack{""};
  while (!stack.empty()) {
    std::string rel = stack.back();
    stack.pop_back();
    std::string abs = join(mailbox_abs, rel);
    bool folder = is_maildir_folder(abs);
    for (const auto& e : list_dir(abs)) {
      if (folder && (e.name == "cur" || e.name == "new" || e.name == "tmp")) continue;
      std::string c = abs + "/" + e.name;
      if (!(e.type == DT_DIR || (e.type == DT_UNKNOWN && is_dir(c)))) continue;
      std::string crel = join(rel, e.name);
      if (is_maildir_folder(c)) out.push_back(crel);
      stack.push_back(crel);
    }
  }
  std::sort(out.begin() + 1, out.end());
  return out;
}

std::string resolve_message(const std::string& folder_abs, const std::string& uname) {
  for (const char* sub : {"cur", "new"}) {
    bool missing = false;
    for (const auto& e : list_dir(folder_abs + "/" + sub, &missing)) {
      if (e.name[0] != '.' && maildir_unique_name(e.name) == uname) {
        return std::string(sub) + "/" + e.name;
      }
    }
  }
  return "";
}

std::string folder_stamp(const std::string& folder_abs, std::int64_t now_ns, std::int64_t racy_ns) {
  std::string stamp;
  for (const char* sub : {"", "/cur", "/new", "/tmp"}) {
    struct stat st;
    if (stat((folder_abs + sub).c_str(), &st) != 0) return "";
    std::int64_t m = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    std::int64_t c = static_cast<std::int64_t>(st.st_ctim.tv_sec) * 1000000000 + st.st_ctim.tv_nsec;
    if (now_ns - m < racy_ns || now_ns - c < racy_ns) return "";
    stamp += std::to_string(m) + ":" + std::to_string(c) + ":" + std::to_string(st.st_ino) + ";";
  }
  return stamp;
}

ScannedFolder scan_folder(const std::string& mailbox_abs, const std::string& folder,
                          const std::vector<std::string>& folders, bool with_messages) {
  ScannedFolder out;
  out.name = folder;
  out.abs = join(mailbox_abs, folder);
  std::set<std::string> child_folders;
  for (const auto& f : folders) {
    if (f != folder && (folder.empty() || f.rfind(folder + "/", 0) == 0)) {
      child_folders.insert(folder.empty() ? f : f.substr(folder.size() + 1));
    }
  }
  const bool is_folder = is_maildir_folder(out.abs);
  struct stat st;
  if (lstat(out.abs.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    throw Error(ErrorCode::kSource, "cannot read folder " + out.abs + ": " + std::strerror(errno));
  }

  std::vector<std::string> stack{""};
  while (!stack.empty()) {
    std::string rel = stack.back();
    stack.pop_back();
    std::string abs = join(out.abs, rel);
    const bool message_dir = is_folder && (rel == "cur" || rel == "new");
    std::vector<std::string> names;
    if (message_dir && !with_messages) {
      continue;
    } else if (message_dir) {
      names = stable_listing(abs);
    } else {
      for (auto& e : list_dir(abs)) names.push_back(std::move(e.name));
    }
    for (const std::string& name : names) {
      std::string crel = join(rel, name);
      std::string cabs = abs + "/" + name;
      if (lstat(cabs.c_str(), &st) != 0) {
        if (errno != ENOENT) {
          throw Error(ErrorCode::kSource, "cannot stat " + cabs + ": " + std::strerror(errno));
        }
        if (!message_dir || name[0] == '.') continue;  // vanished: churn
        // Renamed meanwhile (a flag change): find it again by its unique name. A
        // message renamed again between look-up and stat is looked up again.
        std::string now;
        for (int attempt = 0; attempt < 16; ++attempt) {
          now = resolve_message(out.abs, maildir_unique_name(name));
          if (now.empty() || lstat((out.abs + "/" + now).c_str(), &st) == 0) break;
          now.clear();
        }
        if (now.empty()) continue;  // deleted
        crel = now;
      }
      if (S_ISDIR(st.st_mode)) {
        if (child_folders.count(crel)) continue;  // its own tree
        ScannedEntry d;
        d.kind = EntryKind::kDir;
        d.path = d.key = crel;
        fill_stat(d, st);
        d.size = 0;
        out.entries.push_back(std::move(d));
        if (!(is_folder && crel == "tmp")) stack.push_back(crel);
        continue;
      }
      if (!S_ISREG(st.st_mode)) {
        out.skipped.push_back(crel);
        continue;
      }
      ScannedEntry f;
      fill_stat(f, st);
      f.path = crel;
      const std::string base = crel.substr(crel.rfind('/') + 1);
      if (message_dir && base[0] != '.') {
        f.kind = EntryKind::kMessage;
        f.key = maildir_unique_name(base);
      } else {
        f.kind = EntryKind::kFile;
        f.key = crel;
      }
      out.entries.push_back(std::move(f));
    }
  }

  // One entry per message inode (a rename seen under both names), preferring cur/.
  std::sort(out.entries.begin(), out.entries.end(),
            [](const ScannedEntry& a, const ScannedEntry& b) { return a.path < b.path; });
  std::map<std::pair<std::uint64_t, std::uint64_t>, std::size_t> by_inode;
  std::vector<bool> drop(out.entries.size(), false);
  for (std::size_t i = 0; i < out.entries.size(); ++i) {
    auto& e = out.entries[i];
    if (e.kind != EntryKind::kMessage) continue;
    auto [it, fresh] = by_inode.emplace(std::make_pair(e.dev, e.ino), i);
    if (!fresh) {
      // Same inode twice: keep the path that still exists, prefer cur/.
      std::size_t j = it->second;
      struct stat s2;
      bool i_exists = lstat((out.abs + "/" + e.path).c_str(), &s2) == 0;
      bool j_exists = lstat((out.abs + "/" + out.entries[j].path).c_str(), &s2) == 0;
      bool keep_i = i_exists && (!j_exists || e.path.rfind("cur/", 0) == 0);
      drop[keep_i ? j : i] = true;
      if (keep_i) it->second = i;
    }
  }
  // Distinct files sharing a unique name keep distinct cache keys.
  std::unordered_map<std::string, int> key_count;
  std::vector<ScannedEntry> kept;
  kept.reserve(out.entries.size());
  for (std::size_t i = 0; i < out.entries.size(); ++i) {
    if (drop[i]) continue;
    auto& e = out.entries[i];
    if (e.kind == EntryKind::kMessage && key_count[e.key]++ > 0) e.key = e.path;
    kept.push_back(std::move(e));
  }
  out.entries = std::move(kept);
  return out;
}

}  // namespace reduit
