// mailserver/server.hpp — the network side of `reduit mailserver`: listeners,
// connections, TLS, timeouts, connection limits, logs, graceful stop.
//
// One event-loop thread (standalone Asio) runs every connection's Session
// (session.hpp); deliveries run on a pool of `limits.delivery_threads` threads
// (maildir.hpp) and post their outcome back to the loop. So the code that reads
// the network never writes a mailbox, and a slow fsync never stalls other clients.
//
// Per connection: a per-client-IP rate check (SMTP listeners only: LMTP clients are
// the local MTA) and the max_connections check happen before the greeting, with
// "421 4.7.0" when exceeded; reads are bounded by command_timeout or data_timeout
// (RFC 5321 §4.5.3.2) and answered "421 4.4.2" when they expire.
//
// STARTTLS (RFC 3207): TLS 1.2 and 1.3 only, forward-secret ciphers only (ECDHE/DHE
// with AES-GCM or ChaCha20-Poly1305; TLS 1.3's suites are all forward-secret), no
// compression, no renegotiation.
//
// Log lines (one per event, fail2ban-readable, docs/MAILSERVER.md):
//   <ISO-8601 time> reduit-mailserver[<pid>]: <event> ... [<client ip>]:<port> ...
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "mailserver/config.hpp"

namespace spdlog {
class logger;
}

namespace reduit::mail {

/// The spdlog logger the server writes to: `file` ("" = stderr), pattern
/// "%Y-%m-%dT%H:%M:%S.%e%z reduit-mailserver[%P]: %v". Throws Error(kIo) when the
/// file cannot be opened.
std::shared_ptr<spdlog::logger> make_mail_logger(const std::string& file);

/// Throws Error(kUsage) naming the key when the certificate or key cannot be used.
void check_tls_files(const TlsConfig& tls);

class MailServer {
 public:
  /// Binds every listener. Throws Error(kUsage) for unusable TLS files, Error(kIo)
  /// when an address cannot be bound (in use, not local) and Error(kSource) when
  /// mail_root is not a directory.
  MailServer(const MailServerConfig& config, std::shared_ptr<spdlog::logger> log);
  ~MailServer();
  MailServer(const MailServer&) = delete;
  MailServer& operator=(const MailServer&) = delete;

  /// Serves until SIGTERM or SIGINT (or stop()), then stops gracefully: listeners
  /// close, idle sessions get "421 4.3.2", transactions in flight are finished
  /// (their deliveries always are), and after shutdown_timeout seconds any session
  /// still open is closed. Returns when every delivery has completed.
  void run();
  /// Starts the graceful stop from any thread.
  void stop();

  struct Impl;  // opaque: the event loop, listeners and connections (server.cpp)

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace reduit::mail
