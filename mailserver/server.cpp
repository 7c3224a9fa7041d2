// mailserver/server.cpp — listeners, connections and TLS with standalone Asio and
// OpenSSL (server.hpp).
#include "mailserver/server.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <array>
#include <asio.hpp>
#include <asio/ssl.hpp>
#include <deque>
#include <functional>
#include <map>
#include <set>

#include "mailserver/directory.hpp"
#include "mailserver/maildir.hpp"
#include "mailserver/session.hpp"
#include "vault/error.hpp"

namespace reduit::mail {

using asio::ip::tcp;
using Clock = std::chrono::steady_clock;

std::shared_ptr<spdlog::logger> make_mail_logger(const std::string& file) {
  std::shared_ptr<spdlog::logger> log;
  try {
    if (file.empty()) {
      log = std::make_shared<spdlog::logger>("reduit-mailserver",
                                             std::make_shared<spdlog::sinks::stderr_sink_mt>());
    } else {
      log = std::make_shared<spdlog::logger>("reduit-mailserver",
                                             std::make_shared<spdlog::sinks::basic_file_sink_mt>(file));
    }
  } catch (const spdlog::spdlog_ex& e) {
    throw Error(ErrorCode::kIo, "cannot open log_file " + file + ": " + e.what());
  }
  log->set_pattern("%Y-%m-%dT%H:%M:%S.%e%z reduit-mailserver[%P]: %v");
  log->flush_on(spdlog::level::trace);  // a line per event, visible at once (fail2ban, tests)
  return log;
}

namespace {

std::string openssl_error() {
  unsigned long e = ERR_get_error();
  if (e == 0) return "unknown error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

// TLS 1.2 and 1.3 only, forward-secret suites only (RFC 7525 §4.2 recommendations).
void configure_tls(asio::ssl::context& ctx, const TlsConfig& tls) {
  SSL_CTX* c = ctx.native_handle();
  SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION);
  SSL_CTX_set_options(c, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_dh_auto(c, 1);
  if (SSL_CTX_set_cipher_list(c, "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!SHA1") != 1) {
    throw Error(ErrorCode::kInternal, "TLS cipher list rejected: " + openssl_error());
  }
  if (SSL_CTX_use_certificate_chain_file(c, tls.certificate.c_str()) != 1) {
    throw Error(ErrorCode::kUsage, "tls.certificate " + tls.certificate + ": " + openssl_error());
  }
  if (SSL_CTX_use_PrivateKey_file(c, tls.private_key.c_str(), SSL_FILETYPE_PEM) != 1) {
    throw Error(ErrorCode::kUsage, "tls.private_key " + tls.private_key + ": " + openssl_error());
  }
  if (SSL_CTX_check_private_key(c) != 1) {
    throw Error(ErrorCode::kUsage, "tls.private_key " + tls.private_key + " does not match tls.certificate");
  }
}

}  // namespace

void check_tls_files(const TlsConfig& tls) {
  if (tls.certificate.empty()) return;
  asio::ssl::context ctx(asio::ssl::context::tls_server);
  configure_tls(ctx, tls);
}

class Connection;

struct MailServer::Impl {
  Impl(const MailServerConfig& c, std::shared_ptr<spdlog::logger> l)
      : cfg(c),
        log(std::move(l)),
        directory(c.domains, c.users, c.aliases),
        delivery(c.mail_root, c.layout, c.hostname, posix_delivery_fs()),
        pool(c.limits.delivery_threads),
        signals(io, SIGTERM, SIGINT),
        shutdown_timer(io) {}

  void accept(std::size_t i);
  void on_accept(std::size_t i, tcp::socket sock);
  bool rate_exceeded(const std::string& ip, std::size_t* count);
  void begin_stop(const char* why);
  void closed(const std::shared_ptr<Connection>& c);

  const MailServerConfig& cfg;
  std::shared_ptr<spdlog::logger> log;
  Directory directory;
  MaildirDelivery delivery;
  asio::io_context io;
  asio::thread_pool pool;
  std::unique_ptr<asio::ssl::context> tls;
  SessionSettings smtp_settings, lmtp_settings;
  struct Listener {
    std::unique_ptr<tcp::acceptor> acceptor;
    Protocol protocol;
    std::string name;
  };
  std::vector<Listener> listeners;
  std::set<std::shared_ptr<Connection>> connections;
  std::map<std::string, std::deque<Clock::time_point>> recent;  // per client IP, for the rate limit
  std::size_t accepts = 0;
  asio::signal_set signals;
  asio::steady_timer shutdown_timer;
  bool stopping = false;
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(MailServer::Impl& srv, tcp::socket sock, const SessionSettings& settings, ClientInfo client)
      : srv_(srv),
        sock_(std::move(sock)),
        timer_(srv.io),
        client_(client),
        session_(settings, srv.directory, client, [this](const std::string& line) { srv_.log->info(line); }) {
  }

  void start(const std::string& listener) {
    srv_.log->info("connect from " + client_.text() + " to " + listener);
    session_.greet();
    pump();
  }

  // The server is stopping (SIGTERM).
  void shutdown() {
    if (closed_ || finishing_) return;
    if (session_.shutdown()) {
      finishing_ = true;
      asio::error_code ignored;
      sock_.cancel(ignored);  // the pending read completes with operation_aborted
      write_then(session_.take_output(), [self = shared_from_this()] { self->close(); });
    }
  }

  void force_close() {
    if (closed_) return;
    srv_.log->info("shutdown timeout: closing " + client_.text());
    close();
  }

 private:
  template <typename F>
  void with_stream(F&& f) {
    if (tls_)
      f(*tls_);
    else
      f(sock_);
  }

  void pump() {
    if (closed_) return;
    Session::Action a = session_.next();
    std::string out = session_.take_output();
    auto self = shared_from_this();
    switch (a) {
      case Session::Action::kNeedInput:
        if (out.empty())
          read();
        else
          write_then(std::move(out), [self] { self->read(); });
        break;
      case Session::Action::kDeliver:
        write_then(std::move(out), [self] { self->deliver(); });
        break;
      case Session::Action::kStartTls:
        write_then(std::move(out), [self] { self->start_tls(); });
        break;
      case Session::Action::kClose:
        finishing_ = true;
        write_then(std::move(out), [self] { self->close(); });
        break;
    }
  }

  void write_then(std::string data, std::function<void()> then) {
    if (closed_) return;
    if (data.empty()) {
      then();
      return;
    }
    auto buf = std::make_shared<std::string>(std::move(data));
    auto self = shared_from_this();
    with_stream([&](auto& stream) {
      asio::async_write(stream, asio::buffer(*buf),
                        [self, buf, then = std::move(then)](const asio::error_code& ec, std::size_t) {
                          if (ec) {
                            self->lost(ec);
                            return;
                          }
                          then();
                        });
    });
  }

  void arm_timer(unsigned seconds) {
    timer_.expires_after(std::chrono::seconds(seconds));
    timer_.async_wait([self = shared_from_this(), gen = ++timer_gen_](const asio::error_code& ec) {
      // A generation check too: an expiry already queued when the read completed is stale.
      if (ec || gen != self->timer_gen_ || self->closed_ || self->finishing_) return;
      self->session_.timed_out();
      self->finishing_ = true;
      asio::error_code ignored;
      self->sock_.cancel(ignored);
      self->write_then(self->session_.take_output(), [self] { self->close(); });
    });
  }

  void disarm_timer() {
    ++timer_gen_;
    timer_.cancel();
  }

  void read() {
    if (closed_ || finishing_) return;
    const Limits& l = srv_.cfg.limits;
    arm_timer(session_.phase() == Session::Phase::kData ? l.data_timeout : l.command_timeout);
    auto self = shared_from_this();
    with_stream([&](auto& stream) {
      stream.async_read_some(asio::buffer(buf_), [self](const asio::error_code& ec, std::size_t n) {
        self->disarm_timer();
        if (self->closed_ || self->finishing_) return;
        if (ec) {
          self->lost(ec);
          return;
        }
        self->session_.receive(std::string_view(self->buf_.data(), n));
        self->pump();
      });
    });
  }

  void deliver() {
    auto job = std::make_shared<DeliveryJob>(session_.take_delivery());
    auto self = shared_from_this();
    auto work = asio::make_work_guard(srv_.io);  // run() waits for every delivery
    asio::post(srv_.pool, [self, job, work]() mutable {
      std::vector<DeliveryOutcome> outcomes = self->srv_.delivery.deliver(*job);
      asio::post(self->srv_.io, [self, outcomes = std::move(outcomes), work]() mutable {
        work.reset();
        self->session_.delivered(outcomes);
        self->pump();
      });
    });
  }

  void start_tls() {
    tls_ = std::make_unique<asio::ssl::stream<tcp::socket&>>(sock_, *srv_.tls);
    arm_timer(srv_.cfg.limits.command_timeout);
    tls_->async_handshake(
        asio::ssl::stream_base::server, [self = shared_from_this()](const asio::error_code& ec) {
          self->disarm_timer();
          if (self->closed_) return;
          if (ec) {
            self->srv_.log->info("tls handshake failed from " + self->client_.text() + ": " + ec.message());
            self->close();
            return;
          }
          SSL* ssl = self->tls_->native_handle();
          self->session_.tls_started(std::string(SSL_get_version(ssl)) + " " + SSL_get_cipher_name(ssl));
          self->pump();
        });
  }

  void lost(const asio::error_code& ec) {
    if (closed_) return;
    if (ec != asio::error::eof && ec != asio::error::operation_aborted &&
        ec != asio::ssl::error::stream_truncated) {
      srv_.log->info("lost connection after " +
                     std::string(session_.phase() == Session::Phase::kData ? "DATA" : "command") + " from " +
                     client_.text() + ": " + ec.message());
    }
    close();
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    timer_.cancel();
    asio::error_code ignored;
    if (!tls_ && !srv_.stopping) {
      // Lingering close: stop sending, then read and drop what the client still
      // pipelines (at most 2 s), so that our last replies are not destroyed by a
      // TCP reset for unread input.
      sock_.shutdown(tcp::socket::shutdown_send, ignored);
      auto s = std::make_shared<tcp::socket>(std::move(sock_));
      auto t = std::make_shared<asio::steady_timer>(srv_.io, std::chrono::seconds(2));
      t->async_wait([s](const asio::error_code&) {
        asio::error_code e;
        s->close(e);
      });
      drain(s, t);
    } else {
      sock_.shutdown(tcp::socket::shutdown_both, ignored);
      sock_.close(ignored);
    }
    srv_.log->info("disconnect from " + client_.text() + " commands=" + std::to_string(session_.commands()) +
                   " errors=" + std::to_string(session_.errors()));
    srv_.closed(shared_from_this());
  }

  static void drain(std::shared_ptr<tcp::socket> s, std::shared_ptr<asio::steady_timer> t) {
    auto buf = std::make_shared<std::array<char, 16384>>();
    s->async_read_some(asio::buffer(*buf), [s, t, buf](const asio::error_code& ec, std::size_t) {
      if (ec) {
        t->cancel();
        asio::error_code e;
        s->close(e);
        return;
      }
      drain(s, t);
    });
  }

  MailServer::Impl& srv_;
  tcp::socket sock_;
  std::unique_ptr<asio::ssl::stream<tcp::socket&>> tls_;
  asio::steady_timer timer_;
  ClientInfo client_;
  Session session_;
  std::array<char, 64 * 1024> buf_;
  bool closed_ = false;
  bool finishing_ = false;  // the last reply is being written; then close
  unsigned timer_gen_ = 0;
};

void MailServer::Impl::accept(std::size_t i) {
  listeners[i].acceptor->async_accept([this, i](const asio::error_code& ec, tcp::socket sock) {
    if (stopping) return;
    if (!ec) {
      on_accept(i, std::move(sock));
    } else if (ec != asio::error::operation_aborted) {
      log->warn("accept failed on " + listeners[i].name + ": " + ec.message());
    }
    accept(i);
  });
}

bool MailServer::Impl::rate_exceeded(const std::string& ip, std::size_t* count) {
  const unsigned limit = cfg.limits.client_connection_rate_limit;
  if (limit == 0) return false;
  auto now = Clock::now();
  auto window = std::chrono::seconds(cfg.limits.client_connection_rate_time_unit);
  if (++accepts % 1024 == 0) {  // forget clients that went quiet
    for (auto it = recent.begin(); it != recent.end();) {
      it = (it->second.empty() || now - it->second.back() > window) ? recent.erase(it) : std::next(it);
    }
  }
  auto& q = recent[ip];
  while (!q.empty() && now - q.front() > window) q.pop_front();
  *count = q.size() + 1;
  if (q.size() >= limit) return true;
  q.push_back(now);
  return false;
}

void MailServer::Impl::on_accept(std::size_t i, tcp::socket sock) {
  asio::error_code ec;
  tcp::endpoint peer = sock.remote_endpoint(ec);
  if (ec) return;
  ClientInfo client;
  asio::ip::address addr = peer.address();
  if (addr.is_v6() && addr.to_v6().is_v4_mapped())
    addr = asio::ip::make_address_v4(asio::ip::v4_mapped, addr.to_v6());
  client.address = addr.to_string();
  client.port = peer.port();
  const Listener& l = listeners[i];
  std::string refusal;
  std::size_t count = 0;
  if (connections.size() >= cfg.limits.max_connections) {
    refusal = "421 4.7.0 " + cfg.hostname + " Error: too many connections\r\n";
    log->info("too many connections: refused " + client.text() + " (" + std::to_string(connections.size()) +
              " open, max_connections " + std::to_string(cfg.limits.max_connections) + ")");
  } else if (l.protocol == Protocol::kSmtp && rate_exceeded(client.address, &count)) {
    refusal = "421 4.7.0 " + cfg.hostname + " Error: too many connections from " + client.address + "\r\n";
    log->info("connection rate limit exceeded: " + std::to_string(count) + " from " + client.text() + " in " +
              std::to_string(cfg.limits.client_connection_rate_time_unit) + "s");
  }
  if (!refusal.empty()) {
    auto s = std::make_shared<tcp::socket>(std::move(sock));
    auto buf = std::make_shared<std::string>(std::move(refusal));
    asio::async_write(*s, asio::buffer(*buf), [s, buf](const asio::error_code&, std::size_t) {
      asio::error_code ignored;
      s->shutdown(tcp::socket::shutdown_both, ignored);
      s->close(ignored);
    });
    return;
  }
  sock.set_option(tcp::no_delay(true), ec);
  auto c = std::make_shared<Connection>(
      *this, std::move(sock), l.protocol == Protocol::kSmtp ? smtp_settings : lmtp_settings, client);
  connections.insert(c);
  c->start(l.name);
}

void MailServer::Impl::closed(const std::shared_ptr<Connection>& c) {
  connections.erase(c);
  if (stopping && connections.empty()) shutdown_timer.cancel();
}

void MailServer::Impl::begin_stop(const char* why) {
  if (stopping) return;
  stopping = true;
  log->info(std::string("stopping (") + why + "): " + std::to_string(connections.size()) +
            " session(s) open; transactions in flight are finished");
  asio::error_code ignored;
  for (Listener& l : listeners) l.acceptor->close(ignored);
  signals.cancel(ignored);
  std::vector<std::shared_ptr<Connection>> open(connections.begin(), connections.end());
  for (auto& c : open) c->shutdown();
  if (connections.empty()) return;
  shutdown_timer.expires_after(std::chrono::seconds(cfg.limits.shutdown_timeout));
  shutdown_timer.async_wait([this](const asio::error_code& ec) {
    if (ec) return;
    std::vector<std::shared_ptr<Connection>> left(connections.begin(), connections.end());
    for (auto& c : left) c->force_close();
  });
}

MailServer::MailServer(const MailServerConfig& config, std::shared_ptr<spdlog::logger> log)
    : impl_(std::make_unique<Impl>(config, std::move(log))) {
  Impl& m = *impl_;
  struct stat st;
  if (stat(config.mail_root.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    throw Error(ErrorCode::kSource,
                "mail_root " + config.mail_root + " does not exist or is not a directory");
  }
  if (!config.tls.certificate.empty()) {
    m.tls = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
    configure_tls(*m.tls, config.tls);
  }
  for (SessionSettings* s : {&m.smtp_settings, &m.lmtp_settings}) {
    s->hostname = config.hostname;
    s->tls_available = m.tls != nullptr;
    s->limits = config.limits;
  }
  m.smtp_settings.protocol = Protocol::kSmtp;
  m.smtp_settings.tls_required = config.tls.require;
  m.lmtp_settings.protocol = Protocol::kLmtp;
  auto bind = [&](const ListenAddress& a, Protocol p) {
    std::string name = std::string(p == Protocol::kSmtp ? "smtp " : "lmtp ") + a.text();
    try {
      tcp::endpoint ep(asio::ip::make_address(a.host), a.port);
      auto acc = std::make_unique<tcp::acceptor>(m.io);
      acc->open(ep.protocol());
      acc->set_option(tcp::acceptor::reuse_address(true));
      if (ep.address().is_v6()) acc->set_option(asio::ip::v6_only(true));
      acc->bind(ep);
      acc->listen(asio::socket_base::max_listen_connections);
      m.listeners.push_back({std::move(acc), p, name});
    } catch (const asio::system_error& e) {
      throw Error(ErrorCode::kIo, "cannot listen on " + name + ": " + e.code().message());
    }
  };
  for (const auto& a : config.smtp_listen) bind(a, Protocol::kSmtp);
  for (const auto& a : config.lmtp_listen) bind(a, Protocol::kLmtp);
}

MailServer::~MailServer() = default;

void MailServer::run() {
  Impl& m = *impl_;
  ::signal(SIGPIPE, SIG_IGN);
  for (std::size_t i = 0; i < m.listeners.size(); ++i) {
    tcp::endpoint ep = m.listeners[i].acceptor->local_endpoint();
    m.log->info("listening on " + m.listeners[i].name.substr(0, 5) +
                (ep.address().is_v6() ? "[" + ep.address().to_string() + "]" : ep.address().to_string()) +
                ":" + std::to_string(ep.port()));
    m.accept(i);
  }
  m.signals.async_wait([&m](const asio::error_code& ec, int sig) {
    if (!ec) m.begin_stop(sig == SIGTERM ? "SIGTERM" : "SIGINT");
  });
  m.io.run();
  m.pool.join();
  // Stopped: a SIGTERM or SIGINT from now on (systemd or an admin repeating
  // itself) must not kill the process with the signal's default action while the
  // signal_set is torn down; the exit status stays 0.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  m.log->info("stopped");
}

void MailServer::stop() {
  asio::post(impl_->io, [this] { impl_->begin_stop("stop requested"); });
}

}  // namespace reduit::mail
