// vault/transport.hpp — the one storage interface every vault backend implements.
//
// A vault is a flat namespace of objects named by relative paths with '/'
// separators ("packs/3f/3f1a…", "snapshots/…", "locks/lease"). Names are always
// relative, never contain "..", "." components, empty components or NUL; a backend
// rejects anything else with ErrorCode::kVerify. Directories are implicit: put()
// creates the parent directories it needs.
//
// Backends: file:///abs/path (FileTransport) and sftp://user@host[:port]/abs/path
// (SftpTransport, libssh). All pass tests/transport_conformance_test.cpp. Cross-
// cutting behaviour (byte counting, progress) is a wrapper (CountingTransport), not
// an `if` in each backend.
//
// Errors: every method throws reduit::Error. kNotFound for a missing object,
// kUnreachable when the backend itself cannot be reached (connection lost, vault
// directory gone), kIo for other storage failures. Instances are NOT thread-safe:
// use one per thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "vault/bytes.hpp"

namespace reduit {

struct TransportStats {
  std::uint64_t bytes_written = 0;  // payload bytes of successful put/put_exclusive
  std::uint64_t bytes_read = 0;     // payload bytes returned by get
  std::uint64_t objects_written = 0;
};

class Transport {
 public:
  virtual ~Transport() = default;
  Transport() = default;
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  /// Stores `data` under `name` atomically: written to a temporary name in
  /// "tmp/" (same vault), fsync'd where the server supports it, then renamed over
  /// `name`. Readers never see a partial object. Overwrites an existing object.
  virtual void put(const std::string& name, const Bytes& data) = 0;

  /// Creates `name` with `data` only if it does not exist yet (O_CREAT|O_EXCL).
  /// Returns false, writing nothing, when it exists. Used for lease locks.
  virtual bool put_exclusive(const std::string& name, const Bytes& data) = 0;

  /// Whole object. Throws kNotFound when absent.
  virtual Bytes get(const std::string& name) = 0;

  /// Size in bytes, or nullopt when absent.
  virtual std::optional<std::uint64_t> size(const std::string& name) = 0;

  /// Names (relative to the vault, e.g. "packs/3f/3f1a…") of the regular objects
  /// directly inside `dir` ("" = vault root), sorted. A missing dir lists empty.
  virtual std::vector<std::string> list(const std::string& dir) = 0;

  /// Names of the sub-directories directly inside `dir` (e.g. "packs/3f"), sorted.
  virtual std::vector<std::string> list_dirs(const std::string& dir) = 0;

  /// Atomically renames `from` to `to`; fails (returns false) if `from` is absent.
  /// Must not overwrite `to` silently when it exists: returns false then too.
  virtual bool rename(const std::string& from, const std::string& to) = 0;

  /// Removes `name`; removing an absent object is not an error.
  virtual void remove(const std::string& name) = 0;

  /// Human-readable location for messages, e.g. "sftp://backup@127.0.0.1:2222/srv/v".
  virtual std::string describe() const = 0;

  virtual const TransportStats& stats() const = 0;
};

/// Options for opening a vault URL. Only the sftp backend reads the ssh fields.
struct TransportOptions {
  std::string ssh_identity;          // private key file; empty = ssh-agent / default keys
  std::string known_hosts;           // known_hosts file; empty = ~/.ssh/known_hosts
  std::string host_key_fingerprint;  // "SHA256:<base64>" pin; overrides known_hosts
  bool accept_new_host_key = false;  // add an UNKNOWN host key to known_hosts (TOFU)
  int connect_timeout_seconds = 15;
};

/// Opens "file:///abs/path" or "sftp://user@host[:port]/abs/path" ("[::1]" for
/// IPv6). The vault directory must already exist unless `create` is true.
/// Throws kUsage for an unsupported or malformed URL, kUnreachable when the vault
/// cannot be reached or its directory does not exist.
std::unique_ptr<Transport> open_transport(const std::string& url, const TransportOptions& options,
                                          bool create = false);

/// Throws Error(kVerify) unless `name` is a safe relative object name (see above).
void check_object_name(const std::string& name);

/// The SSH ciphers sftp:// offers, preferred first (RFC 4253 §7.1
/// encryption_algorithms, comma-separated). With AES-NI and PCLMULQDQ (`aes_gcm_fast`,
/// this CPU's answer by default) AES-GCM (RFC 5647) leads: on such CPUs it costs
/// both ends less than chacha20-poly1305, OpenSSH's and libssh's first choice (a
/// first backup of 1.7 GB: 0.5 s less CPU in sshd, 3% less wall; docs/PERFORMANCE.md).
/// Without them chacha20-poly1305 leads, as in OpenSSH.
std::string ssh_ciphers(bool aes_gcm_fast);
std::string ssh_ciphers();

/// Backend constructors (used by open_transport and the conformance tests).
std::unique_ptr<Transport> make_file_transport(const std::string& root, bool create);
std::unique_ptr<Transport> make_sftp_transport(const std::string& user, const std::string& host, int port,
                                               const std::string& path, const TransportOptions& options,
                                               bool create);

}  // namespace reduit
