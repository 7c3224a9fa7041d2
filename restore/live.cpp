#include "restore/live.hpp"

#include <fcntl.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <thread>
#include <tuple>

#include "restore/export.hpp"
#include "restore/fetch.hpp"
#include "restore/maildir_name.hpp"
#include "vault/error.hpp"

namespace reduit {

namespace {

struct Owner {
  uid_t uid;
  gid_t gid;
  bool change;  // running as root and the mailbox is someone else's
};

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

void fsync_path(const std::string& p) {
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    fsync(fd);
    ::close(fd);
  }
}

void make_dir(const std::string& p, const Owner& o, mode_t mode) {
  if (mkdir(p.c_str(), mode) != 0) throw_errno("mkdir " + p, errno);
  if (o.change && chown(p.c_str(), o.uid, o.gid) != 0) throw_errno("chown " + p, errno);
}

// Writes a whole small file exclusively (never over an existing one).
void write_new_file(const std::string& p, std::string_view data, mode_t mode, const Owner& o) {
  int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) throw_errno("create " + p, errno);
  try {
    write_all(fd, data, p);
    if (o.change && fchown(fd, o.uid, o.gid) != 0) throw_errno("chown " + p, errno);
    if (fsync(fd) != 0) throw_errno("fsync " + p, errno);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
}

bool is_dir(const std::string& p) {
  struct stat st;
  return lstat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool exists(const std::string& p) {
  struct stat st;
  return lstat(p.c_str(), &st) == 0;
}

std::string local_date() {
  time_t t = time(nullptr);
  tm tmv;
  localtime_r(&t, &tmv);
  char buf[16];
  strftime(buf, sizeof buf, "%Y-%m-%d", &tmv);
  return buf;
}

// Runs argv; returns its exit status (128+signal) and the first line of its output.
int run(const std::vector<std::string>& argv, std::string& first_line) {
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) throw_errno("pipe", errno);
  pid_t pid = fork();
  if (pid < 0) throw_errno("fork", errno);
  if (pid == 0) {
    int n = ::open("/dev/null", O_RDONLY);
    dup2(n, 0);
    dup2(pipefd[1], 1);
    dup2(pipefd[1], 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    fprintf(stderr, "cannot run %s: %s\n", args[0], strerror(errno));
    _exit(127);
  }
  ::close(pipefd[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(pipefd[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
    if (n > 0 && out.size() < 65536) out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(pipefd[0]);
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  std::size_t b = out.find_first_not_of(" \r\n");
  first_line = b == std::string::npos ? "" : out.substr(b, out.find('\n', b) - b);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

bool on_path(const std::string& cmd) {
  if (cmd.find('/') != std::string::npos) return access(cmd.c_str(), X_OK) == 0;
  const char* path = getenv("PATH");
  std::string p = path ? path : "/usr/local/bin:/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= p.size()) {
    std::size_t colon = p.find(':', start);
    if (colon == std::string::npos) colon = p.size();
    std::string dir = p.substr(start, colon - start);
    if (!dir.empty() && access((dir + "/" + cmd).c_str(), X_OK) == 0) return true;
    start = colon + 1;
  }
  return false;
}

// Adds `names` to the mailbox's subscriptions file the way Dovecot writes it: the
// new content goes into the dot-lock file subscriptions.lock, which is then renamed
// over subscriptions. Format 2 ("V\t2" header) separates hierarchy levels with a
// TAB; the old format lists names with the '.' separator.
void subscribe(const std::string& root, const std::vector<std::vector<std::string>>& names) {
  const std::string file = root + "/subscriptions", lock = file + ".lock";
  struct stat st;
  if (lstat(file.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return;
  int fd = -1;
  for (int attempt = 0; attempt < 100; ++attempt) {
    fd = ::open(lock.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, st.st_mode & 0777);
    if (fd >= 0 || errno != EEXIST) break;
    struct stat ls;
    if (lstat(lock.c_str(), &ls) == 0 && time(nullptr) - ls.st_mtime > 120) unlink(lock.c_str());  // stale
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (fd < 0) throw_errno("lock " + lock, errno);
  try {
    std::string text;
    {
      FILE* f = fopen(file.c_str(), "rb");
      if (!f) throw_errno("read " + file, errno);
      char buf[8192];
      std::size_t n;
      while ((n = fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
      fclose(f);
    }
    const bool v2 = text.rfind("V\t2\n", 0) == 0;
    if (!text.empty() && text.back() != '\n') text += '\n';
    for (const auto& parts : names) {
      std::string line;
      for (const auto& p : parts) line += (line.empty() ? "" : v2 ? "\t" : ".") + p;
      text += line + "\n";
    }
    write_all(fd, text, lock);
    if (fchown(fd, st.st_uid, st.st_gid) != 0 && geteuid() == 0) throw_errno("chown " + lock, errno);
    if (fsync(fd) != 0) throw_errno("fsync " + lock, errno);
    ::close(fd);
    fd = -1;
    if (rename(lock.c_str(), file.c_str()) != 0) throw_errno("rename " + lock, errno);
  } catch (...) {
    if (fd >= 0) ::close(fd);
    unlink(lock.c_str());
    throw;
  }
}

}  // namespace

std::string check_folder_name(const std::string& in) {
  std::string name = !in.empty() && in[0] == '.' ? in.substr(1) : in;
  if (name.empty() || name.size() > 200) {
    throw Error(ErrorCode::kUsage, "folder name '" + in + "' must be 1 to 200 bytes");
  }
  for (unsigned char c : name) {
    if (c < 0x20 || c == 0x7f || c == '/' || c == '.' || c == '\\' || c == '~' || c == '%' || c == '*') {
      throw Error(ErrorCode::kUsage, "folder name '" + in +
                                         "' may not hold '.', '/', '\\', '~', '%', '*' or control characters "
                                         "(one Maildir++ level)");
    }
  }
  if (strcasecmp(name.c_str(), "INBOX") == 0) throw Error(ErrorCode::kUsage, "folder name may not be INBOX");
  return name;
}

LiveRestoreStats restore_into_live(Repository& repo, const LiveRestoreRequest& req) {
  auto t0 = std::chrono::steady_clock::now();
  LiveRestoreStats stats;
  const bool named = !req.folder_name.empty();
  std::string name = named ? check_folder_name(req.folder_name) : "Restored-" + local_date();

  BlobIndex index(repo.load_indexes());
  TreeLoader trees(repo, index);
  Selection sel = select_messages(repo, trees, req.select, &stats.warnings);
  stats.snapshot_id = sel.snapshot.id;
  stats.mailbox = sel.mailbox.name;

  // The live mailbox: a Maildir++ root (its INBOX has cur/ and new/).
  std::string live = req.live_dir;
  if (live.empty()) {
    if (!sel.mailbox.path.empty()) check_relative_path(sel.mailbox.path, "mailbox path in the manifest");
    live = sel.mailbox.path.empty() ? sel.mailbox.source : sel.mailbox.source + "/" + sel.mailbox.path;
  }
  char real[PATH_MAX];
  if (live.empty() || !realpath(live.c_str(), real) || !is_dir(std::string(real) + "/cur") ||
      !is_dir(std::string(real) + "/new") || !is_dir(std::string(real) + "/tmp")) {
    throw Error(ErrorCode::kSource, "live mailbox " + (live.empty() ? "\"\"" : live) +
                                        " does not exist or is not a Maildir (no cur/, new/ and tmp/)");
  }
  const std::string root = real;
  stats.live_dir = root;
  struct stat rst;
  if (stat(root.c_str(), &rst) != 0) throw_errno("stat " + root, errno);
  const Owner owner{rst.st_uid, rst.st_gid, geteuid() == 0 && (rst.st_uid != 0 || rst.st_gid != 0)};
  const mode_t dir_mode = rst.st_mode & 0777 ? rst.st_mode & 0777 : 0700;

  // The new folder's name: never an existing one.
  std::string base = name;
  for (int n = 2; exists(root + "/." + name); ++n) {
    if (named || n > 1000) {
      throw Error(ErrorCode::kUsage, "folder ." + name + " already exists in " + root +
                                         "; a restore never writes into an existing folder (give another "
                                         "--folder-name)");
    }
    name = base + "-" + std::to_string(n);
  }
  stats.folder = "." + name;
  stats.imap_name = name;
  require_archive_key(repo);

  struct Target {
    std::string dir;                 // directory name in the live root, e.g. ".Restored-X.Archive"
    std::vector<std::string> parts;  // IMAP hierarchy, e.g. {"Restored-X", "Archive"}
    std::vector<std::string> from_keywords, to_keywords;
  };
  std::vector<Target> targets;
  for (const SelectedFolder& f : sel.folders) {
    Target t;
    t.parts = {name};
    if (!f.folder.name.empty()) {
      std::string rest = folder_display_name(f.folder.name);
      std::size_t start = 0;
      while (start <= rest.size()) {
        std::size_t dot = rest.find('.', start);
        if (dot == std::string::npos) dot = rest.size();
        if (dot > start) t.parts.push_back(rest.substr(start, dot - start));
        start = dot + 1;
      }
    }
    for (const auto& p : t.parts) t.dir += "." + p;
    check_relative_path(t.dir, "restored folder name");
    if (t.dir.find('/') != std::string::npos || exists(root + "/" + t.dir)) {
      throw Error(ErrorCode::kUsage,
                  "cannot restore into " + root + "/" + t.dir + ": it exists or is not one level");
    }
    targets.push_back(std::move(t));
  }

  // Assemble in the mailbox's tmp/ (the Maildir place for work in progress), then
  // rename each folder into place.
  const std::string stage = root + "/tmp/.reduit-restore." + to_hex(random_hash().data(), 8);
  std::vector<std::string> placed;
  auto undo = [&] {
    std::error_code ec;
    std::filesystem::remove_all(stage, ec);
    for (const auto& d : placed) std::filesystem::remove_all(root + "/" + d, ec);
  };
  try {
    make_dir(stage, owner, 0700);
    for (const Target& t : targets) {
      make_dir(stage + "/" + t.dir, owner, dir_mode);
      for (const char* sub : {"cur", "new", "tmp"})
        make_dir(stage + "/" + t.dir + "/" + sub, owner, dir_mode);
    }
    // Everything to fetch: each folder's dovecot-keywords, then its chosen messages.
    std::vector<const TreeEntry*> entries;
    std::vector<std::size_t> entry_target;
    std::vector<bool> is_keywords;
    for (std::size_t ti = 0; ti < sel.folders.size(); ++ti) {
      const SelectedFolder& f = sel.folders[ti];
      for (const TreeEntry& e : f.tree.entries) {
        if (e.kind == EntryKind::kFile && e.path == "dovecot-keywords") {
          entries.push_back(&e);
          entry_target.push_back(ti);
          is_keywords.push_back(true);
        }
      }
      for (std::size_t i : f.messages) {
        entries.push_back(&f.tree.entries[i]);
        entry_target.push_back(ti);
        is_keywords.push_back(false);
      }
    }
    struct Written {
      std::size_t target;
      std::string tmp_name, sub, unique;
      MaildirName orig;
    };
    std::vector<Written> written;
    const std::string host = local_hostname();
    // Fresh names are handed out in the messages' delivery order (the time at the
    // front of the original unique name, seconds then microseconds, as numbers), not
    // in the order packs deliver them, so Dovecot gives the restored messages UIDs
    // in their original order.
    std::vector<std::string> fresh(entries.size());
    {
      auto delivered = [&](std::size_t i) {
        const std::string& path = entries[i]->path;
        const std::string name = path.substr(path.find('/') + 1);
        long long secs = 0, usecs = 0;
        std::size_t p = 0;
        while (p < name.size() && std::isdigit(static_cast<unsigned char>(name[p])))
          secs = secs * 10 + (name[p++] - '0');
        if (name.compare(p, 2, ".M") == 0)
          for (p += 2; p < name.size() && std::isdigit(static_cast<unsigned char>(name[p])); ++p)
            usecs = usecs * 10 + (name[p] - '0');
        return std::make_tuple(secs, usecs, name);
      };
      std::vector<std::size_t> order;
      for (std::size_t i = 0; i < entries.size(); ++i)
        if (!is_keywords[i]) order.push_back(i);
      std::stable_sort(order.begin(), order.end(),
                       [&](std::size_t a, std::size_t b) { return delivered(a) < delivered(b); });
      for (std::size_t i : order) fresh[i] = fresh_unique_name(now_ns(), host);
    }
    FetchStats fs;
    fetch_entries(
        repo, index, entries,
        [&](std::size_t i, std::string_view bytes) {
          const TreeEntry& e = *entries[i];
          Target& t = targets[entry_target[i]];
          if (is_keywords[i]) {
            t.from_keywords = parse_dovecot_keywords(bytes);
            return;
          }
          std::string file = e.path.substr(e.path.find('/') + 1);
          Written w{entry_target[i], "", e.path.substr(0, e.path.find('/')), "", parse_maildir_name(file)};
          w.unique = fresh[i];
          if (w.orig.size) w.unique += ",S=" + std::to_string(*w.orig.size);
          if (w.orig.vsize) w.unique += ",W=" + std::to_string(*w.orig.vsize);
          w.tmp_name = w.unique;
          std::string p = stage + "/" + t.dir + "/tmp/" + w.tmp_name;
          int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, e.mode & 0777);
          if (fd < 0) throw_errno("create " + p, errno);
          try {
            write_all(fd, bytes, p);
            if (owner.change && fchown(fd, owner.uid, owner.gid) != 0) throw_errno("chown " + p, errno);
            fchmod(fd, e.mode & 0777);
            if (fsync(fd) != 0) throw_errno("fsync " + p, errno);
            timespec times[2];
            times[0].tv_sec = times[1].tv_sec = e.mtime_ns / 1000000000;
            times[0].tv_nsec = times[1].tv_nsec = e.mtime_ns % 1000000000;
            if (futimens(fd, times) != 0) throw_errno("set mtime of " + p, errno);
          } catch (...) {
            ::close(fd);
            throw;
          }
          ::close(fd);
          written.push_back(std::move(w));
          ++stats.messages;
          stats.bytes += bytes.size();
        },
        &fs,
        [&](std::size_t done, std::size_t total) {
          if (req.progress) fprintf(stderr, "\r\033[Krestoring: %zu/%zu packs", done, total);
        });
    if (req.progress) fprintf(stderr, "\r\033[K");
    stats.packs_fetched = fs.packs_fetched + trees.packs_fetched();
    stats.bytes_fetched = fs.bytes_fetched + trees.bytes_fetched();

    // Deliver: tmp/ → cur/ or new/ with the keyword letters of the new folder.
    std::vector<std::string> dropped;
    for (const Written& w : written) {
      Target& t = targets[w.target];
      std::string final_name = w.unique;
      if (w.orig.has_info) {
        final_name += ":2," + remap_keywords(w.orig.info, t.from_keywords, t.to_keywords, &dropped);
      } else if (w.sub == "cur") {
        final_name += ":2,";
      }
      std::string dir = stage + "/" + t.dir;
      if (renameat2(AT_FDCWD, (dir + "/tmp/" + w.tmp_name).c_str(), AT_FDCWD,
                    (dir + "/" + w.sub + "/" + final_name).c_str(), RENAME_NOREPLACE) != 0) {
        throw_errno("rename into " + dir + "/" + w.sub, errno);
      }
    }
    if (!dropped.empty()) {
      stats.warnings.push_back(std::to_string(dropped.size()) + " keyword(s) could not be kept, e.g. " +
                               dropped.front());
    }
    for (const Target& t : targets) {
      std::string dir = stage + "/" + t.dir;
      std::string kw = format_dovecot_keywords(t.to_keywords);
      if (!kw.empty()) write_new_file(dir + "/dovecot-keywords", kw, 0600, owner);
      write_new_file(dir + "/maildirfolder", "", 0600, owner);
      for (const char* sub : {"cur", "new", ""}) fsync_path(dir + "/" + sub);
    }
    // Into place, each folder whole; never over an existing name.
    for (const Target& t : targets) {
      if (renameat2(AT_FDCWD, (stage + "/" + t.dir).c_str(), AT_FDCWD, (root + "/" + t.dir).c_str(),
                    RENAME_NOREPLACE) != 0) {
        throw_errno("rename " + t.dir + " into " + root, errno);
      }
      placed.push_back(t.dir);
      stats.folders_created.push_back(t.dir);
    }
    fsync_path(root);
    rmdir(stage.c_str());
  } catch (...) {
    undo();
    throw;
  }

  // The mail is in place; what follows only helps Dovecot and the client notice.
  try {
    std::vector<std::vector<std::string>> names;
    for (const Target& t : targets) names.push_back(t.parts);
    if (exists(root + "/subscriptions")) {
      subscribe(root, names);
      stats.subscribed = true;
    }
  } catch (const Error& e) {
    stats.warnings.push_back(std::string("could not subscribe the restored folder: ") + e.what());
  }
  if (!req.doveadm.empty()) {
    if (!on_path(req.doveadm.front())) {
      stats.doveadm_note = req.doveadm.front() + " not found: Dovecot picks the folder up at its next sync";
    } else {
      // The template's %c is the doveadm command (its options such as -u follow
      // it), %u the mailbox name; the command's arguments come last.
      const std::string mask = targets.size() == 1 ? name : name + "*";  // '*' crosses levels
      for (const auto& [command, args] :
           std::vector<std::pair<std::vector<std::string>, std::vector<std::string>>>{
               {{"force-resync"}, {mask}}, {{"quota", "recalc"}, {}}}) {
        std::vector<std::string> argv;
        bool placed = false;
        for (std::string a : req.doveadm) {
          if (a == "%c") {
            argv.insert(argv.end(), command.begin(), command.end());
            placed = true;
            continue;
          }
          for (std::size_t p = 0; (p = a.find("%u", p)) != std::string::npos; p += sel.mailbox.name.size()) {
            a.replace(p, 2, sel.mailbox.name);
          }
          argv.push_back(a);
        }
        if (!placed) argv.insert(argv.end(), command.begin(), command.end());
        argv.insert(argv.end(), args.begin(), args.end());
        const auto& cmd = command;
        std::string line, shown;
        for (const auto& a : argv) shown += (shown.empty() ? "" : " ") + a;
        int rc = run(argv, line);
        if (rc == 0) {
          stats.doveadm_ran.push_back(shown);
        } else if (cmd[0] == "quota" && line.find("Unknown command 'quota'") != std::string::npos) {
          stats.doveadm_note = "quota plugin not enabled: quota recalc skipped";
        } else {
          stats.warnings.push_back("'" + shown + "' failed (exit " + std::to_string(rc) + ")" +
                                   (line.empty() ? "" : ": " + line));
        }
      }
    }
  }
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return stats;
}

}  // namespace reduit
