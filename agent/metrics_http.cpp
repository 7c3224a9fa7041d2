#include "agent/metrics_http.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "vault/error.hpp"

namespace reduit {

namespace {

constexpr std::size_t kMaxHead = 8192;
constexpr int kReadTimeoutMs = 5000;

void send_all(int fd, const std::string& s) {
  std::size_t done = 0;
  while (done < s.size()) {
    // Poll for writability so a client that stops reading cannot stall the agent.
    pollfd p{fd, POLLOUT, 0};
    if (poll(&p, 1, kReadTimeoutMs) <= 0) return;
    ssize_t n = ::send(fd, s.data() + done, s.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<std::size_t>(n);
  }
}

void reply(int fd, const std::string& status, const std::string& type, const std::string& body,
           bool head_only) {
  std::string r = "HTTP/1.1 " + status + "\r\nContent-Type: " + type +
                  "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n";
  if (!head_only) r += body;
  send_all(fd, r);
}

}  // namespace

MetricsHttpServer::MetricsHttpServer(const ListenAddress& addr, std::function<std::string()> render)
    : render_(std::move(render)) {
  const std::string where = (addr.ipv6 ? "[" + addr.host + "]" : addr.host) + ":" + std::to_string(addr.port);
  listen_fd_ = ::socket(addr.ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) throw_errno("metrics_listen " + where + ": socket", errno);
  int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  int rc;
  if (addr.ipv6) {
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(static_cast<uint16_t>(addr.port));
    inet_pton(AF_INET6, addr.host.c_str(), &a.sin6_addr);
    rc = ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
  } else {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(addr.port));
    inet_pton(AF_INET, addr.host.c_str(), &a.sin_addr);
    rc = ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
  }
  if (rc != 0 || ::listen(listen_fd_, 16) != 0) {
    int e = errno;
    ::close(listen_fd_);
    throw_errno("metrics_listen " + where + ": cannot listen", e);
  }
  port_ = addr.port;
  if (pipe2(stop_pipe_, O_CLOEXEC) != 0) {
    int e = errno;
    ::close(listen_fd_);
    throw_errno("metrics_listen: pipe", e);
  }
  thread_ = std::thread([this] { serve(); });
}

MetricsHttpServer::~MetricsHttpServer() {
  if (stop_pipe_[1] >= 0) {
    char c = 0;
    (void)!::write(stop_pipe_[1], &c, 1);
  }
  if (thread_.joinable()) thread_.join();
  for (int fd : {listen_fd_, stop_pipe_[0], stop_pipe_[1]})
    if (fd >= 0) ::close(fd);
}

void MetricsHttpServer::serve() {
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  for (;;) {
    pollfd p[2] = {{listen_fd_, POLLIN, 0}, {stop_pipe_[0], POLLIN, 0}};
    int n = poll(p, 2, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || (p[1].revents & POLLIN)) return;
    if (!(p[0].revents & POLLIN)) continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    handle(fd);
    ::close(fd);
  }
}

void MetricsHttpServer::handle(int fd) {
  std::string head;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kReadTimeoutMs);
  char buf[2048];
  while (head.find("\r\n\r\n") == std::string::npos && head.find("\n\n") == std::string::npos) {
    if (head.size() > kMaxHead) {
      reply(fd, "431 Request Header Fields Too Large", "text/plain", "request head over 8 KiB\n", false);
      return;
    }
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    if (left.count() <= 0 || poll(&p, 1, static_cast<int>(left.count())) <= 0) {
      reply(fd, "408 Request Timeout", "text/plain", "timeout\n", false);
      return;
    }
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    head.append(buf, static_cast<std::size_t>(n));
  }
  std::size_t end = std::min(head.find("\r\n\r\n"), head.find("\n\n"));
  if (end > kMaxHead) {
    reply(fd, "431 Request Header Fields Too Large", "text/plain", "request head over 8 KiB\n", false);
    return;
  }
  std::string line = head.substr(0, head.find_first_of("\r\n"));
  auto sp1 = line.find(' '), sp2 = line.rfind(' ');
  if (sp1 == std::string::npos || sp2 == sp1) {
    reply(fd, "400 Bad Request", "text/plain", "bad request line\n", false);
    return;
  }
  std::string method = line.substr(0, sp1), target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  if (method != "GET" && method != "HEAD") {
    reply(fd, "405 Method Not Allowed", "text/plain", "only GET /metrics\n", false);
    return;
  }
  if (target != "/metrics" && target.rfind("/metrics?", 0) != 0) {
    reply(fd, "404 Not Found", "text/plain", "only GET /metrics\n", method == "HEAD");
    return;
  }
  std::string body;
  try {
    body = render_();
  } catch (const std::exception& e) {
    reply(fd, "500 Internal Server Error", "text/plain", std::string(e.what()) + "\n", method == "HEAD");
    return;
  }
  reply(fd, "200 OK", "text/plain; version=0.0.4; charset=utf-8", body, method == "HEAD");
}

}  // namespace reduit
