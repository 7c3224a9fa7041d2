// tests/support/mailserver.hpp — a real `reduit mailserver` process on loopback
// ports chosen free at runtime, and a raw SMTP/LMTP client that sends exact bytes
// and reads exact replies (for the inputs no polite client would send).
#pragma once

#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

#include "support/harness.hpp"

namespace reduit::test {

/// A TCP port free on both 127.0.0.1 and ::1 right now (the kernel picks it).
int free_port();

/// The users, aliases and domains every mail server test uses.
/// Users: alice@example.test, bob@example.test, carol@example.org, dörte@example.test.
/// Alias: team@example.test → alice, bob, carol.
std::string mail_test_directory_toml();

class MailServerProcess {
 public:
  /// Writes a config in a temp dir (hostname mx.example.test, SMTP on 127.0.0.1 and
  /// ::1, LMTP on 127.0.0.1, mail_root, log_file) with `extra` appended (e.g. a
  /// [limits] or [tls] table), starts the server and waits for its listeners.
  /// `mail_root` empty = a fresh directory in the temp dir.
  /// `directory` replaces the test domains, users and aliases when not empty.
  explicit MailServerProcess(const std::string& extra = "", const std::string& mail_root = "",
                             const std::string& directory = "");
  ~MailServerProcess();  // SIGKILL if still running

  int smtp_port() const { return smtp_port_; }
  int lmtp_port() const { return lmtp_port_; }
  pid_t pid() const { return pid_; }
  const std::string& root() const { return root_; }
  const std::string& config() const { return config_; }
  std::string log() const { return read_file(log_); }
  std::string dir(const std::string& rel) const { return tmp_ / rel; }
  /// The Maildir of a user ("alice@example.test" → root/example.test/alice).
  std::string maildir(const std::string& user) const;

  /// SIGTERM and wait; returns the exit status (128+signal when killed).
  int terminate(int timeout_seconds = 30);
  /// Waits for a server already told to stop; its exit status (128+signal when
  /// killed), or -1 after the timeout (it is then killed).
  int wait(int timeout_seconds = 30);
  /// SIGKILL and wait.
  void kill9();
  bool running();

 private:
  TempDir tmp_;
  std::string root_, config_, log_;
  int smtp_port_ = 0, lmtp_port_ = 0;
  pid_t pid_ = -1;
};

/// A blocking TCP client with exact bytes; every read has a timeout.
class RawSmtp {
 public:
  RawSmtp(int port, const std::string& host = "127.0.0.1");
  ~RawSmtp();
  RawSmtp(const RawSmtp&) = delete;
  RawSmtp& operator=(const RawSmtp&) = delete;

  void send(const std::string& bytes);
  /// One complete reply ("250-a\r\n250 b\r\n" → "250-a\n250 b"), or "" when the
  /// server closed the connection. Fails the test after `timeout_ms`.
  std::string reply(int timeout_ms = 10000);
  /// The first line of each of the next `n` replies.
  std::vector<std::string> replies(std::size_t n, int timeout_ms = 10000);
  /// True when the server has closed the connection (reads EOF within timeout_ms).
  bool closed_by_server(int timeout_ms = 5000);

 private:
  bool fill(int timeout_ms);
  int fd_ = -1;
  std::string buf_;
};

/// Files in a Maildir's new/ (file name → content).
std::map<std::string, std::string> maildir_new(const std::string& maildir);
/// Number of entries in a directory (0 when it does not exist).
std::size_t count_entries(const std::string& dir);

}  // namespace reduit::test
