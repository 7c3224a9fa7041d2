#include "support/sshd.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

extern char** environ;

namespace reduit::test {
namespace {

namespace fs = std::filesystem;

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_text(const std::string& path, const std::string& text, mode_t mode) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out) throw std::runtime_error("TestSshd: cannot write " + path);
  }
  ::chmod(path.c_str(), mode);
}

// Runs argv[0] (absolute path) with stdout captured; stderr goes to `err_path`.
std::string run(const std::vector<std::string>& argv, const std::string& err_path) {
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) throw std::runtime_error("TestSshd: pipe failed");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
  posix_spawn_file_actions_addopen(&fa, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(pipefd[1]);
  if (rc != 0) {
    ::close(pipefd[0]);
    throw std::runtime_error("TestSshd: cannot run " + argv[0] + ": " + std::strerror(rc));
  }
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(pipefd[0], buf, sizeof buf);
    if (n > 0) {
      out.append(buf, static_cast<size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      break;
    }
  }
  ::close(pipefd[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw std::runtime_error("TestSshd: " + argv[0] + " failed: " + read_text(err_path));
  }
  return out;
}

void keygen(const std::string& path, const std::string& err_path) {
  run({"/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "reduit-test", "-f", path}, err_path);
}

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("TestSshd: socket failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("TestSshd: cannot find a free port");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

// True while `pid` exists and is not a zombie (session processes are reparented to
// init, which may reap them late).
bool alive(pid_t pid) {
  std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat");
  auto close_paren = stat.rfind(')');
  if (close_paren == std::string::npos || close_paren + 2 >= stat.size()) return false;
  return stat[close_paren + 2] != 'Z';
}

bool port_accepts(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

// All descendants of `root` (per-connection sshd processes call setsid(), so a
// process-group kill would miss them).
std::vector<pid_t> descendants(pid_t root) {
  std::vector<std::pair<pid_t, pid_t>> parent_of;  // (pid, ppid)
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string stat = read_text("/proc/" + name + "/stat");
    auto close_paren = stat.rfind(')');
    if (close_paren == std::string::npos) continue;
    std::istringstream rest(stat.substr(close_paren + 1));
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    parent_of.emplace_back(static_cast<pid_t>(std::atoi(name.c_str())), ppid);
  }
  std::vector<pid_t> out;
  std::vector<pid_t> frontier{root};
  while (!frontier.empty()) {
    pid_t p = frontier.back();
    frontier.pop_back();
    for (const auto& [pid, ppid] : parent_of) {
      if (ppid == p) {
        out.push_back(pid);
        frontier.push_back(pid);
      }
    }
  }
  return out;
}

}  // namespace

TestSshd::TestSshd() {
  char tmpl[] = "/tmp/reduit-sshd.XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("TestSshd: mkdtemp failed");
  dir_ = tmpl;
  try {
    if (const passwd* pw = ::getpwuid(::geteuid())) user_ = pw->pw_name;
    if (user_.empty()) throw std::runtime_error("TestSshd: cannot determine the user name");
    ::mkdir("/run/sshd", 0755);  // privilege separation dir; sshd refuses to start without

    const std::string err = dir_ + "/keygen.err";
    keygen(dir_ + "/hostkey", err);
    keygen(dir_ + "/client", err);
    keygen(dir_ + "/stranger", err);
    write_text(dir_ + "/authorized_keys", read_text(dir_ + "/client.pub"), 0600);

    // "256 SHA256:abc… comment (ED25519)"
    std::istringstream lf(run({"/usr/bin/ssh-keygen", "-lf", dir_ + "/hostkey.pub"}, err));
    std::string bits;
    lf >> bits >> fingerprint_;
    if (fingerprint_.rfind("SHA256:", 0) != 0) {
      throw std::runtime_error("TestSshd: unexpected ssh-keygen -lf output");
    }

    for (int attempt = 0; attempt < 20 && pid_ <= 0; ++attempt) {
      port_ = free_port();
      std::ostringstream cfg;
      cfg << "Port " << port_ << "\n"
          << "ListenAddress 127.0.0.1\n"
          << "HostKey " << dir_ << "/hostkey\n"
          << "PidFile " << dir_ << "/sshd.pid\n"
          << "AuthorizedKeysFile " << dir_ << "/authorized_keys\n"
          << "PasswordAuthentication no\n"
          << "KbdInteractiveAuthentication no\n"
          << "PubkeyAuthentication yes\n"
          << "PermitRootLogin prohibit-password\n"
          << "UsePAM no\n"
          << "StrictModes no\n"
          << "MaxStartups 100\n"
          << "Subsystem sftp internal-sftp\n";
      write_text(dir_ + "/sshd_config", cfg.str(), 0600);
      if (!try_start()) port_ = 0;
    }
    if (pid_ <= 0) throw std::runtime_error("TestSshd: sshd did not start: " + log());

    // "[127.0.0.1]:PORT ssh-ed25519 AAAA…" (drop the key comment)
    std::istringstream pub(read_text(dir_ + "/hostkey.pub"));
    std::string type, blob;
    pub >> type >> blob;
    write_text(known_hosts_path(), "[127.0.0.1]:" + std::to_string(port_) + " " + type + " " + blob + "\n",
               0600);
  } catch (...) {
    stop();
    std::error_code ec;
    fs::remove_all(dir_, ec);
    throw;
  }
}

TestSshd::~TestSshd() {
  stop();
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

bool TestSshd::try_start() {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  const std::string log_path = dir_ + "/sshd.log";
  posix_spawn_file_actions_addopen(&fa, 2, log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  const std::string cfg = dir_ + "/sshd_config";
  const std::size_t log_start = read_text(log_path).size();  // the log is appended to
  std::vector<char*> args{const_cast<char*>("/usr/sbin/sshd"),
                          const_cast<char*>("-D"),
                          const_cast<char*>("-e"),
                          const_cast<char*>("-f"),
                          const_cast<char*>(cfg.c_str()),
                          nullptr};
  pid_t pid = -1;
  int rc = posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw std::runtime_error(std::string("TestSshd: spawn sshd: ") + strerror(rc));

  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) return false;  // exited: port taken?
    // Our own sshd must say it listens (a connect alone could reach another process
    // that grabbed the port under parallel ctest).
    const std::string ready = "Server listening on 127.0.0.1 port " + std::to_string(port_);
    if (read_text(log_path).find(ready, log_start) != std::string::npos && port_accepts(port_)) {
      pid_ = pid;
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  return false;
}

void TestSshd::start() {
  if (pid_ > 0) return;
  // The port may linger in TIME_WAIT for clients only; sshd sets SO_REUSEADDR.
  for (int attempt = 0; attempt < 50 && pid_ <= 0; ++attempt) {
    if (!try_start()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (pid_ <= 0) throw std::runtime_error("TestSshd: sshd did not restart: " + log());
}

void TestSshd::stop() {
  if (pid_ <= 0) return;
  std::vector<pid_t> children = descendants(pid_);
  ::kill(pid_, SIGTERM);
  for (pid_t child : children) ::kill(child, SIGTERM);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
  // Session processes are not our children: wait (≤ 2 s) until they are gone.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  for (pid_t child : children) {
    while (alive(child) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
}

std::string TestSshd::empty_known_hosts_path() const {
  std::string path = dir_ + "/known_hosts.empty." + std::to_string(++empty_counter_);
  write_text(path, "", 0600);
  return path;
}

std::string TestSshd::log() const {
  return read_text(dir_ + "/sshd.log");
}

TransportOptions sftp_options(const TestSshd& sshd) {
  TransportOptions options;
  options.ssh_identity = sshd.client_key_path();
  options.known_hosts = sshd.known_hosts_path();
  options.accept_new_host_key = false;
  options.connect_timeout_seconds = 5;
  return options;
}

}  // namespace reduit::test
