#include "support/harness.hpp"

#include <fcntl.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace fs = std::filesystem;

namespace reduit::test {

nlohmann::json RunResult::json() const {
  auto j = nlohmann::json::parse(out, nullptr, false);
  if (j.is_discarded()) throw std::runtime_error("not JSON: " + out + "\nstderr: " + err);
  return j;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& data) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
  if (!out) throw std::runtime_error("cannot write " + path);
}

pid_t spawn_command(const std::vector<std::string>& argv, const std::string& out_path,
                    const std::string& err_path) {
  pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    int o = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int e = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int n = open("/dev/null", O_RDONLY);
    dup2(n, 0);
    dup2(o, 1);
    dup2(e, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  return pid;
}

RunResult run_command(const std::vector<std::string>& argv) {
  char tmpl[] = "/tmp/reduit-run.XXXXXX";
  std::string dir = mkdtemp(tmpl);
  pid_t pid = spawn_command(argv, dir + "/out", dir + "/err");
  int st = 0;
  waitpid(pid, &st, 0);
  RunResult r;
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  r.out = read_file(dir + "/out");
  r.err = read_file(dir + "/err");
  fs::remove_all(dir);
  return r;
}

TempDir::TempDir() {
  char tmpl[] = "/tmp/reduit-test.XXXXXX";
  if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}
TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

SiteKeys& SiteKeys::get() {
  // Destroyed at exit, which stops the homes' gpg-agents and removes /tmp/g.*: ctest
  // runs every test in its own process, and each would otherwise leave three behind.
  static std::unique_ptr<SiteKeys> keys = [] {
    auto k = std::make_unique<SiteKeys>();
    k->agent_home = std::make_unique<GpgHome>();
    k->archive_home = std::make_unique<GpgHome>();
    k->empty_home = std::make_unique<GpgHome>();
    k->agent_fpr = k->agent_home->generate_key("Mail host agent <agent@example.test>");
    k->archive_fpr = k->archive_home->generate_key("Archive <archive@example.test>");
    k->agent_home->import(k->archive_home->export_public(k->archive_fpr));
    k->archive_home->import(k->agent_home->export_public(k->agent_fpr));
    return k;
  }();
  return *keys;
}

static std::string sha256_hex(const std::string& data) {
  unsigned char h[32];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), h);
  static const char* d = "0123456789abcdef";
  std::string s;
  for (unsigned char c : h) {
    s += d[c >> 4];
    s += d[c & 15];
  }
  return s;
}

std::map<std::string, FileFacts> tree_facts(const std::string& root) {
  std::map<std::string, FileFacts> out;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it) {
    const fs::path& p = it->path();
    if (it->is_directory() && p.filename() == "tmp" && fs::is_directory(p.parent_path() / "cur") &&
        fs::is_directory(p.parent_path() / "new")) {
      it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file() || it->is_symlink()) continue;
    struct stat st;
    lstat(p.c_str(), &st);
    out[fs::relative(p, root).string()] =
        FileFacts{static_cast<std::uint64_t>(st.st_size),
                  static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
                  static_cast<unsigned>(st.st_mode & 07777), sha256_hex(read_file(p))};
  }
  return out;
}

std::string write_config(const std::string& dir, const std::string& vault_url, const std::string& gnupghome,
                         const std::vector<std::string>& roots, const std::string& layout,
                         const std::string& vault_extra, const std::string& top_extra,
                         const std::string& source_extra) {
  std::string t = "state_dir = \"" + dir + "/state\"\n" + top_extra + "\n[vault]\nurl = \"" + vault_url +
                  "\"\n" + vault_extra + "\n[keys]\ngnupghome = \"" + gnupghome + "\"\n";
  const bool profile = layout.rfind("profile:", 0) == 0;
  for (const auto& r : roots) {
    t += "[[source]]\nroot = \"" + r + "\"\n" +
         (profile ? "profile = \"" + layout.substr(8) : "layout = \"" + layout) + "\"\n" + source_extra +
         "\n";
  }
  std::string path = dir + "/reduit.toml";
  write_file(path, t);
  return path;
}

std::string reduit_binary() {
  return REDUIT_BINARY;
}
std::string source_dir() {
  return REDUIT_SOURCE_DIR;
}
std::string corpus_dir() {
  std::string d = REDUIT_CORPUS_DIR;
  return fs::is_directory(d + "/maildir") ? d : "";
}

void copy_tree(const std::string& from, const std::string& to) {
  RunResult r = run_command({"/bin/cp", "-a", from, to});
  if (r.status != 0) throw std::runtime_error("cp -a failed: " + r.err);
}

nlohmann::json generate_maildir(const std::string& out, int messages, int mailboxes, int seed) {
  RunResult r =
      run_command({"/usr/bin/python3", source_dir() + "/scripts/gen-maildir", "--out", out, "--messages",
                   std::to_string(messages), "--mailboxes", std::to_string(mailboxes), "--domains",
                   std::to_string(mailboxes < 2 ? 1 : 2), "--seed", std::to_string(seed), "--json"});
  if (r.status != 0) throw std::runtime_error("gen-maildir failed: " + r.err);
  return r.json();
}

}  // namespace reduit::test
