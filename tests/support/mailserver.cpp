#include "support/mailserver.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <stdexcept>
#include <thread>

namespace fs = std::filesystem;

namespace reduit::test {

namespace {

int bind_port(int family, int port) {
  int fd = socket(family, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  int got = -1;
  if (family == AF_INET) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
      socklen_t len = sizeof a;
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
      got = ntohs(a.sin_port);
    }
  } else {
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(static_cast<uint16_t>(port));
    a.sin6_addr = in6addr_loopback;
    if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
      socklen_t len = sizeof a;
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
      got = ntohs(a.sin6_port);
    }
  }
  close(fd);
  return got;
}

}  // namespace

int free_port() {
  for (int attempt = 0; attempt < 50; ++attempt) {
    int p = bind_port(AF_INET, 0);
    if (p > 0 && bind_port(AF_INET6, p) == p) return p;
  }
  throw std::runtime_error("no free port on 127.0.0.1 and ::1");
}

std::string mail_test_directory_toml() {
  return "domains = [\"example.test\", \"example.org\"]\n"
         "users = [\"alice@example.test\", \"bob@example.test\", \"carol@example.org\", "
         "\"dörte@example.test\"]\n";
}

MailServerProcess::MailServerProcess(const std::string& extra, const std::string& mail_root,
                                     const std::string& directory) {
  root_ = mail_root.empty() ? tmp_ / "mail" : mail_root;
  fs::create_directories(root_);
  log_ = tmp_ / "server.log";
  smtp_port_ = free_port();
  lmtp_port_ = free_port();
  std::string sp = std::to_string(smtp_port_), lp = std::to_string(lmtp_port_);
  std::string text = "hostname = \"mx.example.test\"\nsmtp_listen = [\"127.0.0.1:" + sp +
                     "\", \"[::1]:" + sp + "\"]\nlmtp_listen = [\"127.0.0.1:" + lp + "\"]\nmail_root = \"" +
                     root_ + "\"\nlog_file = \"" + log_ + "\"\n" +
                     (directory.empty() ? mail_test_directory_toml() +
                                              "[aliases]\n\"team@example.test\" = [\"alice@example.test\", "
                                              "\"bob@example.test\", \"carol@example.org\"]\n"
                                        : directory) +
                     extra;
  config_ = tmp_ / "mailserver.toml";
  write_file(config_, text);
  // Like spawn_command, and the server dies with the test process, even if that crashes.
  std::string out = tmp_ / "stdout", err = tmp_ / "stderr", bin = reduit_binary();
  pid_ = fork();
  if (pid_ == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int o = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int e = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(o, 1);
    dup2(e, 2);
    execl(bin.c_str(), bin.c_str(), "mailserver", "--config", config_.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  for (int i = 0; i < 500; ++i) {
    std::string l = read_file(log_);
    std::size_t n = 0;
    for (std::size_t p = l.find("listening on"); p != std::string::npos; p = l.find("listening on", p + 1))
      ++n;
    if (n == 3) return;
    if (!running()) {
      throw std::runtime_error("mailserver exited: " + read_file(tmp_ / "stderr") + read_file(log_));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  throw std::runtime_error("mailserver did not start listening: " + read_file(log_));
}

MailServerProcess::~MailServerProcess() {
  if (pid_ > 0) kill9();
}

std::string MailServerProcess::maildir(const std::string& user) const {
  std::size_t at = user.rfind('@');
  return root_ + "/" + user.substr(at + 1) + "/" + user.substr(0, at);
}

bool MailServerProcess::running() {
  if (pid_ <= 0) return false;
  int st;
  pid_t r = waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

int MailServerProcess::terminate(int timeout_seconds) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  return wait(timeout_seconds);
}

int MailServerProcess::wait(int timeout_seconds) {
  if (pid_ <= 0) return -1;
  for (int i = 0; i < timeout_seconds * 100; ++i) {
    int st;
    if (waitpid(pid_, &st, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill9();
  return -1;
}

void MailServerProcess::kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int st;
  waitpid(pid_, &st, 0);
  pid_ = -1;
}

RawSmtp::RawSmtp(int port, const std::string& host) {
  bool v6 = host.find(':') != std::string::npos;
  fd_ = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
  int rc;
  if (v6) {
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET6, host.c_str(), &a.sin6_addr);
    rc = connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
  } else {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, host.c_str(), &a.sin_addr);
    rc = connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
  }
  if (rc != 0) throw std::runtime_error("connect to " + host + ":" + std::to_string(port) + " failed");
}

RawSmtp::~RawSmtp() {
  if (fd_ >= 0) close(fd_);
}

void RawSmtp::send(const std::string& bytes) {
  std::size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return;  // the server closed; the next reply() says so
    off += static_cast<std::size_t>(n);
  }
}

bool RawSmtp::fill(int timeout_ms) {
  pollfd p{fd_, POLLIN, 0};
  if (poll(&p, 1, timeout_ms) <= 0) throw std::runtime_error("timeout waiting for the server; have: " + buf_);
  char tmp[65536];
  ssize_t n = recv(fd_, tmp, sizeof tmp, 0);
  if (n <= 0) return false;
  buf_.append(tmp, static_cast<std::size_t>(n));
  return true;
}

std::string RawSmtp::reply(int timeout_ms) {
  std::string out;
  while (true) {
    std::size_t nl = buf_.find("\r\n");
    if (nl == std::string::npos) {
      if (!fill(timeout_ms)) return out;
      continue;
    }
    std::string line = buf_.substr(0, nl);
    buf_.erase(0, nl + 2);
    out += (out.empty() ? "" : "\n") + line;
    if (line.size() < 4 || line[3] != '-') return out;
  }
}

std::vector<std::string> RawSmtp::replies(std::size_t n, int timeout_ms) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < n; ++i) {
    std::string r = reply(timeout_ms);
    out.push_back(r.substr(0, r.find('\n')));
    if (r.empty()) break;
  }
  return out;
}

bool RawSmtp::closed_by_server(int timeout_ms) {
  while (buf_.empty()) {
    if (!fill(timeout_ms)) return true;
  }
  return false;
}

std::map<std::string, std::string> maildir_new(const std::string& maildir) {
  std::map<std::string, std::string> out;
  if (!fs::is_directory(maildir + "/new")) return out;
  for (const auto& e : fs::directory_iterator(maildir + "/new")) {
    out[e.path().filename().string()] = read_file(e.path().string());
  }
  return out;
}

std::size_t count_entries(const std::string& dir) {
  if (!fs::is_directory(dir)) return 0;
  std::size_t n = 0;
  for (auto it = fs::directory_iterator(dir); it != fs::directory_iterator(); ++it) ++n;
  return n;
}

}  // namespace reduit::test
