// tests/support/sshd.hpp — a real OpenSSH sshd on 127.0.0.1 for SFTP tests.
//
// Each TestSshd owns a temporary directory with its own host key, an authorized
// client key, an sshd_config and a known_hosts file already holding the host key
// (so tests connect without trust-on-first-use). sshd runs as the current user
// (root in CI: PermitRootLogin prohibit-password) with StrictModes off (keys live
// under /tmp) and the in-process internal-sftp subsystem. See
// /work/shared/docs/PLATFORM.md, "A real sshd for tests".
#pragma once

#include <sys/types.h>
#include <string>

#include "vault/transport.hpp"

namespace reduit::test {

class TestSshd {
 public:
  /// Generates keys and starts sshd on a free loopback port (waits until it accepts
  /// connections, at most 10 s). Throws std::runtime_error when sshd cannot start.
  TestSshd();
  /// Stops sshd and removes the temporary directory.
  ~TestSshd();
  TestSshd(const TestSshd&) = delete;
  TestSshd& operator=(const TestSshd&) = delete;

  /// Starts sshd again (same port, same keys) after stop(). No-op when running.
  void start();
  /// SIGTERM to sshd and to its per-connection children, then waitpid: open
  /// sessions break and new connections are refused. No-op when stopped.
  void stop();
  bool running() const { return pid_ > 0; }

  int port() const { return port_; }
  const std::string& dir() const { return dir_; }
  /// Private key authorized for user(); ed25519, no passphrase.
  std::string client_key_path() const { return dir_ + "/client"; }
  /// A valid private key that is NOT in authorized_keys.
  std::string unauthorized_key_path() const { return dir_ + "/stranger"; }
  /// known_hosts holding "[127.0.0.1]:PORT ssh-ed25519 AAAA…".
  std::string known_hosts_path() const { return dir_ + "/known_hosts"; }
  /// A new, empty known_hosts file on every call (tests may write to it).
  std::string empty_known_hosts_path() const;
  /// "SHA256:<base64, no padding>" of the host key, as `ssh-keygen -lf` prints it.
  const std::string& host_key_fingerprint() const { return fingerprint_; }
  /// Login name of the current user (the one sshd accepts).
  const std::string& user() const { return user_; }
  /// sshd's stderr log (useful in failure messages).
  std::string log() const;

 private:
  bool try_start();  // false when sshd exited early (port taken)

  std::string dir_;
  std::string user_;
  std::string fingerprint_;
  int port_ = 0;
  pid_t pid_ = -1;
  mutable int empty_counter_ = 0;
};

/// Options that connect to `sshd` as its user with its client key and its
/// pre-filled known_hosts file.
TransportOptions sftp_options(const TestSshd& sshd);

}  // namespace reduit::test
