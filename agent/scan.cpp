#include "agent/scan.hpp"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <tuple>
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
  e.nlink = st.st_nlink;
  e.uid = st.st_uid;
  e.gid = st.st_gid;
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

namespace {

// Where the info begins: the first ':'; else "!2,"/"!1," (offlineimap, Evolution,
// mu) or ";2,"/";1," (mbsync, neomutt) on colon-hostile file systems.
std::size_t info_separator(const std::string& n) {
  std::size_t colon = n.find(':');
  if (colon != std::string::npos) return colon;
  for (const char* sep : {"!2,", "!1,", ";2,", ";1,"}) {
    std::size_t p = n.find(sep);
    if (p != std::string::npos) return p;
  }
  return std::string::npos;
}

std::optional<std::uint64_t> name_field(const std::string& unique, const char* field) {
  // ",S=123" style fields after the first ',' of the unique name.
  std::size_t p = unique.find(',');
  while (p != std::string::npos) {
    std::size_t q = unique.find(',', p + 1);
    std::string part = unique.substr(p + 1, q == std::string::npos ? std::string::npos : q - p - 1);
    if (part.size() > 2 && part[0] == field[0] && part[1] == '=' &&
        part.find_first_not_of("0123456789", 2) == std::string::npos && part.size() <= 22) {
      return std::stoull(part.substr(2));
    }
    p = q;
  }
  return std::nullopt;
}

}  // namespace

std::string maildir_unique_name(const std::string& n) {
  std::size_t p = info_separator(n);
  return p == std::string::npos ? n : n.substr(0, p);
}

MaildirName parse_maildir_name(const std::string& n) {
  MaildirName m;
  std::size_t p = info_separator(n);
  m.unique = p == std::string::npos ? n : n.substr(0, p);
  if (p != std::string::npos) {
    m.separator = n[p];
    m.info = n.substr(p + 1);
    if (m.info.rfind("2,", 0) == 0) {
      for (char c : m.info.substr(2)) {
        if (c >= 'A' && c <= 'Z')
          m.flags += c;
        else if (c >= 'a' && c <= 'z')
          m.keywords += c;
      }
    }
  }
  m.size = name_field(m.unique, "S");
  m.vsize = name_field(m.unique, "W");
  m.uid = name_field(m.unique, "U");
  return m;
}

namespace {

// One directory name against one template segment: literals, '*' (any text) and
// %d %n %u (captured). Backtracking, placeholders longest-first, so "%n-*" splits
// "jean-luc-2024.01.02.03.04.05" at its last '-'.
struct Captures {
  std::string domain, local, user;
  std::vector<std::string> wild;
};

bool match_segment(const std::string& seg, std::size_t si, const std::string& name, std::size_t ni,
                   Captures& c) {
  if (si == seg.size()) return ni == name.size();
  const bool star = seg[si] == '*';
  const bool placeholder = seg[si] == '%' && si + 1 < seg.size();
  if (!star && !placeholder) {
    return ni < name.size() && name[ni] == seg[si] && match_segment(seg, si + 1, name, ni + 1, c);
  }
  const std::size_t next = si + (star ? 1 : 2);
  for (std::size_t len = name.size() - ni; len >= 1; --len) {
    Captures trial = c;
    std::string part = name.substr(ni, len);
    if (star) {
      trial.wild.push_back(part);
    } else if (seg[si + 1] == 'd') {
      trial.domain = part;
    } else if (seg[si + 1] == 'n') {
      trial.local = part;
    } else if (seg[si + 1] == 'u') {
      trial.user = part;
    }
    if (match_segment(seg, next, name, ni + len, trial)) {
      c = std::move(trial);
      return true;
    }
  }
  return false;
}

void check_template(const std::string& layout) {
  for (std::size_t i = 0; i < layout.size(); ++i) {
    if (layout[i] != '%') continue;
    if (i + 1 >= layout.size() || std::string("dnu").find(layout[i + 1]) == std::string::npos) {
      throw Error(ErrorCode::kUsage, "layout '" + layout + "': unknown placeholder " + layout.substr(i, 2) +
                                         " (use %d, %n, %u or *)");
    }
    ++i;
  }
}

// iRedMail's <c1>/<c2>/<c3>: the first three letters of the local part, the last
// one repeated when it is shorter (MAILDIR.md, "Where mail lives").
bool iredmail_hash_dirs_match(const Captures& c) {
  // The wildcards end with c1, c2, c3 and the timestamp.
  if (c.wild.size() < 4 || c.local.empty()) return false;
  const std::size_t base = c.wild.size() - 4;
  for (std::size_t i = 0; i < 3; ++i) {
    char want = c.local[std::min(i, c.local.size() - 1)];
    if (c.wild[base + i] != std::string(1, want)) return false;
  }
  return true;
}

struct Candidate {
  MailboxSpec spec;
  Captures caps;
};

std::vector<Candidate> match_template(const std::string& root, const std::string& layout) {
  check_template(layout);
  struct Partial {
    std::string rel;
    Captures caps;
  };
  std::vector<Partial> cur{{}};
  for (const std::string& seg : split(layout, '/')) {
    if (seg.empty() || seg == ".") continue;
    std::vector<Partial> next;
    const bool literal = seg.find_first_of("%*") == std::string::npos;
    for (const Partial& p : cur) {
      std::string dir = join(root, p.rel);
      if (literal) {
        if (is_dir(dir + "/" + seg)) next.push_back({join(p.rel, seg), p.caps});
        continue;
      }
      for (const std::string& d : subdirs(dir)) {
        Captures c = p.caps;
        if (match_segment(seg, 0, d, 0, c)) next.push_back({join(p.rel, d), std::move(c)});
      }
    }
    cur = std::move(next);
  }
  std::vector<Candidate> out;
  for (Partial& p : cur) {
    std::string abs = join(root, p.rel);
    if (!has_maildir_below(abs, 8)) continue;
    std::string name = p.rel;
    if (!p.caps.local.empty() && !p.caps.domain.empty())
      name = p.caps.local + "@" + p.caps.domain;
    else if (!p.caps.user.empty())
      name = p.caps.user;
    out.push_back({{name, root, p.rel, abs}, std::move(p.caps)});
  }
  return out;
}

}  // namespace

const std::vector<std::string>& layout_profile_names() {
  static const std::vector<std::string> names{"postfix-dovecot", "iredmail", "mailinabox", "mailcow",
                                              "docker-mailserver"};
  return names;
}

std::vector<std::string> layout_profile(const std::string& profile) {
  if (profile == "postfix-dovecot") return {"%d/%n/Maildir", "%d/%n"};
  if (profile == "iredmail") return {"vmail*/%d/*/*/*/%n-*/Maildir", "%d/*/*/*/%n-*/Maildir"};
  if (profile == "mailinabox") return {"mail/mailboxes/%d/%n", "mailboxes/%d/%n", "%d/%n"};
  if (profile == "mailcow") return {"%d/%n/Maildir"};
  if (profile == "docker-mailserver") return {"%d/%n"};
  std::string known;
  for (const auto& n : layout_profile_names()) known += (known.empty() ? "" : ", ") + n;
  throw Error(ErrorCode::kUsage, "unknown layout profile '" + profile + "' (known: " + known + ")");
}

std::vector<MailboxSpec> discover_mailboxes(const std::string& root, const std::string& layout) {
  return discover_mailboxes(root, std::vector<std::string>{layout});
}

std::vector<MailboxSpec> discover_mailboxes(const std::string& root, const std::vector<std::string>& layouts,
                                            const std::string& profile) {
  if (!is_dir(root)) {
    throw Error(ErrorCode::kSource, "mailbox root " + root + " does not exist or is not a directory");
  }
  std::vector<MailboxSpec> out;
  if (layouts.size() == 1 && (layouts[0] == "." || layouts[0].empty())) {
    if (!has_maildir_below(root, 8)) {
      throw Error(ErrorCode::kSource, root + " is not a Maildir: no folder with cur/ and new/ found");
    }
    std::string base = root.substr(root.find_last_of('/') + 1);
    out.push_back({base.empty() ? root : base, root, "", root});
    return out;
  }
  std::vector<Candidate> found;
  for (const std::string& layout : layouts) {
    for (Candidate& c : match_template(root, layout)) {
      if (profile == "iredmail" && !iredmail_hash_dirs_match(c.caps)) continue;
      found.push_back(std::move(c));
    }
  }
  // Several templates may match one mailbox at two depths (%d/%n and %d/%n/Maildir):
  // the deeper directory is the mailbox; a directory inside another is not a second one.
  std::sort(found.begin(), found.end(),
            [](const Candidate& a, const Candidate& b) { return a.spec.rel < b.spec.rel; });
  for (std::size_t i = 0; i < found.size(); ++i) {
    bool ancestor = false, same = false;
    for (std::size_t j = 0; j < found.size(); ++j) {
      if (j == i) continue;
      const std::string& a = found[i].spec.rel;
      const std::string& b = found[j].spec.rel;
      if (b.size() > a.size() && b.compare(0, a.size(), a) == 0 && (a.empty() || b[a.size()] == '/'))
        ancestor = true;
      if (j < i && a == b) same = true;
    }
    if (!ancestor && !same) out.push_back(found[i].spec);
  }
  if (out.empty()) {
    std::string shown;
    for (const auto& l : layouts) shown += (shown.empty() ? "" : "', '") + l;
    throw Error(ErrorCode::kSource, "no Maildir found under " + root + " with layout '" + shown +
                                        "' (a mailbox is a directory with cur/ and new/)");
  }
  // Two directories for one address (iRedMail keeps a re-created account's old
  // directory beside the new one, told apart by the timestamp): the last in path
  // order — the newest timestamp — keeps the address, the others get "#<path>".
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.name != b.name ? a.name < b.name : a.rel < b.rel; });
  for (std::size_t i = 0; i + 1 < out.size(); ++i) {
    if (out[i].name == out[i + 1].name) out[i].name += "#" + out[i].rel;
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

bool is_dovecot_index(const std::string& n) {
  return n.rfind("dovecot.index", 0) == 0 || n.rfind("dovecot.list.index", 0) == 0;
}

ScannedFolder scan_folder(const std::string& mailbox_abs, const std::string& folder,
                          const std::vector<std::string>& folders, bool with_messages, bool with_index) {
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
      if (is_folder && rel.empty()) {
        // Messages only move new/ → cur/: list new/ first, so one moving meanwhile is
        // in cur/ when cur/ is listed (the other order can miss it in both). The
        // stack pops in reverse: cur/ and new/ go first, so they are popped last, new/ then cur/.
        auto rank = [](const std::string& n) { return n == "cur" ? 0 : n == "new" ? 1 : 2; };
        std::stable_sort(names.begin(), names.end(),
                         [&](const std::string& a, const std::string& b) { return rank(a) < rank(b); });
      }
    }
    for (const std::string& name : names) {
      if (!with_index && !message_dir && is_dovecot_index(name)) continue;
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

  // One entry per message inode and unique name (a rename seen under both names),
  // preferring cur/. Two unique names on one inode are hard links (Dovecot's
  // maildir_copy_with_hardlinks): both are messages.
  std::sort(out.entries.begin(), out.entries.end(),
            [](const ScannedEntry& a, const ScannedEntry& b) { return a.path < b.path; });
  std::map<std::tuple<std::uint64_t, std::uint64_t, std::string>, std::size_t> by_inode;
  std::vector<bool> drop(out.entries.size(), false);
  for (std::size_t i = 0; i < out.entries.size(); ++i) {
    auto& e = out.entries[i];
    if (e.kind != EntryKind::kMessage) continue;
    auto [it, fresh] = by_inode.emplace(std::make_tuple(e.dev, e.ino, e.key), i);
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
