#include "restore/imap_judge.hpp"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "restore/maildir_name.hpp"

namespace reduit {

namespace {

namespace fs = std::filesystem;

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string join(const std::string& a, const std::string& b) {
  return a.empty() ? b : b.empty() ? a : a + "/" + b;
}

// Runs argv with stdin from /dev/null, stdout into `out` (at most 64 MiB) and stderr
// into the file `err_path`, whose last line goes to `err`. Returns the exit status
// (128+signal; 127 cannot execute).
int run_capture(const std::vector<std::string>& argv, const std::string& err_path, std::string& out,
                std::string& err) {
  int po[2];
  if (pipe2(po, O_CLOEXEC) != 0) return 127;
  pid_t pid = fork();
  if (pid < 0) return 127;
  if (pid == 0) {
    int n = ::open("/dev/null", O_RDONLY);
    int e = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (n < 0 || e < 0) _exit(127);
    dup2(n, 0);
    dup2(po[1], 1);
    dup2(e, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  ::close(po[1]);
  char buf[65536];
  for (ssize_t n; (n = ::read(po[0], buf, sizeof buf)) != 0;) {
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (out.size() < (64u << 20)) out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(po[0]);
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  std::string e = slurp(err_path);
  while (!e.empty() && (e.back() == '\n' || e.back() == '\r')) e.pop_back();
  auto p = e.rfind('\n');
  err = p == std::string::npos ? e : e.substr(p + 1);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == sep) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(cur);
  return out;
}

// "<uid> [ext…] :<name>" lines of a dovecot-uidlist → unique name → UID.
std::map<std::string, std::uint64_t> uidlist_uids(const std::string& path) {
  std::map<std::string, std::uint64_t> out;
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::size_t colon = line.find(" :");
    if (colon == std::string::npos) continue;
    char* end = nullptr;
    unsigned long long uid = std::strtoull(line.c_str(), &end, 10);
    if (end == line.c_str()) continue;
    out[parse_maildir_name(line.substr(colon + 2)).unique] = uid;
  }
  return out;
}

std::string flags_text(const std::set<std::string>& flags) {
  std::string s;
  for (const auto& f : flags) s += (s.empty() ? "" : " ") + f;
  return "(" + s + ")";
}

void chown_tree(const std::string& root, uid_t u, gid_t g) {
  std::error_code ec;
  (void)lchown(root.c_str(), u, g);
  for (auto it = fs::recursive_directory_iterator(root, ec); it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (ec) break;
    (void)lchown(it->path().c_str(), u, g);
  }
}

}  // namespace

std::string find_doveadm() {
  const char* path = std::getenv("PATH");
  for (const std::string& dir : split(path ? path : "/usr/bin:/bin", ':')) {
    if (dir.empty()) continue;
    std::string p = dir + "/doveadm";
    if (access(p.c_str(), X_OK) == 0) return p;
  }
  return "";
}

JudgeResult judge_with_doveadm(const std::string& doveadm_path, const std::string& maildir,
                               const std::vector<JudgeFolder>& folders) {
  JudgeResult r;
  if (doveadm_path.empty()) {
    r.reason = "doveadm is not on PATH";
    return r;
  }
  // Expected view, keyed by (mailbox, unique name).
  struct Want {
    std::string rel;  // folder/path, for messages
    std::uint64_t size;
    std::set<std::string> flags;
    std::optional<std::uint64_t> uid;
    bool seen = false;
  };
  std::map<std::pair<std::string, std::string>, Want> want;
  for (const JudgeFolder& f : folders) {
    if (!f.name.empty() && (f.name[0] != '.' || f.name.find('/') != std::string::npos)) {
      r.reason = "folder '" + f.name + "' is not a Maildir++ folder";
      return r;
    }
    const std::string mailbox = f.name.empty() ? "INBOX" : f.name.substr(1);
    const std::string dir = join(maildir, f.name);
    auto uids = uidlist_uids(dir + "/dovecot-uidlist");
    std::vector<std::string> keywords = parse_dovecot_keywords(slurp(dir + "/dovecot-keywords"));
    for (const auto& m : f.messages) {
      MaildirName n = parse_maildir_name(m.path.substr(m.path.find('/') + 1));
      Want w{join(f.name, m.path), m.size, {}, std::nullopt};
      for (char c : n.info) {
        switch (c) {
          case 'D':
            w.flags.insert("\\Draft");
            break;
          case 'F':
            w.flags.insert("\\Flagged");
            break;
          case 'R':
            w.flags.insert("\\Answered");
            break;
          case 'S':
            w.flags.insert("\\Seen");
            break;
          case 'T':
            w.flags.insert("\\Deleted");
            break;
          default:
            if (c >= 'a' && c <= 'z' && static_cast<std::size_t>(c - 'a') < keywords.size() &&
                !keywords[c - 'a'].empty())
              w.flags.insert(keywords[c - 'a']);
        }
      }
      if (auto it = uids.find(n.unique); it != uids.end()) w.uid = it->second;
      want[{mailbox, n.unique}] = std::move(w);
    }
  }

  std::string home = maildir + ".judge-home";
  std::error_code ec;
  fs::create_directories(home, ec);
  std::vector<std::string> argv;
  const std::string location = "mail_location=maildir:" + maildir + ":INDEX=MEMORY";
  if (geteuid() == 0) {
    // doveadm refuses uid 0: the scratch copy goes to nobody.
    struct passwd* pw = getpwnam("nobody");
    if (!pw) {
      r.reason = "running as root and there is no user 'nobody' for doveadm";
      return r;
    }
    struct group* gr = getgrgid(pw->pw_gid);
    std::string group = gr ? gr->gr_name : std::to_string(pw->pw_gid);
    std::string runuser = access("/usr/sbin/runuser", X_OK) == 0 ? "/usr/sbin/runuser" : "/sbin/runuser";
    // nobody must be able to walk down to the scratch directory; otherwise doveadm
    // sees an empty mailbox and every message would read as a disagreement.
    for (fs::path p = fs::path(maildir).parent_path().parent_path(); !p.empty(); p = p.parent_path()) {
      struct stat st;
      if (stat(p.c_str(), &st) == 0 && !(st.st_mode & S_IXOTH)) {
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
        r.reason = "doveadm runs as nobody, who cannot enter " + p.string() + " (mode " + mode +
                   "): give --scratch a directory others may traverse, e.g. /var/tmp";
        return r;
      }
      if (p == p.root_path()) break;
    }
    chown_tree(maildir, pw->pw_uid, pw->pw_gid);
    chown_tree(home, pw->pw_uid, pw->pw_gid);
    // The scratch directory (mkdtemp: 0700) must let nobody through.
    chmod(fs::path(maildir).parent_path().c_str(), 0711);
    argv = {runuser,  "-u", "nobody",          "--", "/usr/bin/env",     "HOME=" + home, doveadm_path, "-o",
            location, "-o", "mail_uid=nobody", "-o", "mail_gid=" + group};
  } else {
    argv = {"/usr/bin/env", "HOME=" + home, doveadm_path, "-o", location};
  }
  argv.insert(argv.end(),
              {"-f", "tab", "fetch", "mailbox guid uid flags size.physical", "mailbox", "*", "ALL"});
  std::string out, err;
  int rc = run_capture(argv, maildir + ".judge-stderr", out, err);
  if (rc != 0) {
    r.reason = "doveadm failed (exit " + std::to_string(rc) + "): " + err;
    return r;
  }
  r.ran = true;
  std::set<std::string> mailboxes;
  std::istringstream in(out);
  std::string line;
  std::getline(in, line);  // "mailbox\tguid\tuid\tflags\tsize.physical"
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::vector<std::string> f = split(line, '\t');
    if (f.size() != 5) {
      r.failures.push_back("doveadm printed an unexpected line: " + line);
      continue;
    }
    ++r.messages;
    mailboxes.insert(f[0]);
    auto it = want.find({f[0], f[1]});
    if (it == want.end()) {
      r.failures.push_back("doveadm sees message " + f[1] + " in mailbox " + f[0] + " (UID " + f[2] +
                           ") that the manifest does not list there");
      continue;
    }
    Want& w = it->second;
    w.seen = true;
    std::set<std::string> flags;
    for (const std::string& fl : split(f[3], ' '))
      if (!fl.empty() && fl != "\\Recent") flags.insert(fl);
    std::uint64_t uid = std::strtoull(f[2].c_str(), nullptr, 10);
    std::uint64_t size = std::strtoull(f[4].c_str(), nullptr, 10);
    if (w.uid && uid != *w.uid)
      r.failures.push_back("message " + w.rel + ": doveadm sees UID " + f[2] + ", its dovecot-uidlist says " +
                           std::to_string(*w.uid));
    if (flags != w.flags)
      r.failures.push_back("message " + w.rel + ": doveadm sees flags " + flags_text(flags) +
                           ", the manifest's name says " + flags_text(w.flags));
    if (size != w.size)
      r.failures.push_back("message " + w.rel + ": doveadm sees " + f[4] + " bytes, the manifest says " +
                           std::to_string(w.size));
  }
  r.folders = mailboxes.size();
  for (const auto& [key, w] : want)
    if (!w.seen) r.failures.push_back("message " + w.rel + " is not seen by doveadm in mailbox " + key.first);
  return r;
}

}  // namespace reduit
