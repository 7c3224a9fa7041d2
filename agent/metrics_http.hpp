// agent/metrics_http.hpp — the agent's optional Prometheus endpoint: GET /metrics on
// a loopback address ([schedule] metrics_listen), served from the agent process.
//
// One thread, one connection at a time, one request per connection (Connection:
// close). Limits: a request head of at most 8 KiB, read within 5 s; anything but
// `GET /metrics` gets 404 (other paths) or 405 (other methods), a head over the
// limit 431, a slow client 408. Each request calls `render` on the server thread
// (it must be safe there: open its own catalog connection). Signals are blocked on
// that thread, so the agent's sigtimedwait still sees SIGTERM, SIGHUP and SIGCHLD.
// Exposition format: text/plain; version=0.0.4 (Prometheus text format).
#pragma once

#include <functional>
#include <string>
#include <thread>

#include "agent/schedule.hpp"

namespace reduit {

class MetricsHttpServer {
 public:
  /// Binds and listens on `addr` and starts serving. Throws Error(kIo) when the
  /// address cannot be bound (in use, no such interface).
  MetricsHttpServer(const ListenAddress& addr, std::function<std::string()> render);
  /// Stops the thread and closes the socket.
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  int port() const { return port_; }

 private:
  void serve();
  void handle(int fd);

  std::function<std::string()> render_;
  int listen_fd_ = -1, stop_pipe_[2] = {-1, -1}, port_ = 0;
  std::thread thread_;
};

}  // namespace reduit
