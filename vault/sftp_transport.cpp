// vault/sftp_transport.cpp — the sftp:// backend (libssh 0.10).
//
// Layout on the server is the same as the file backend: <path>/<name>, temporary
// files in <path>/tmp/. Notes on libssh 0.10.6 against OpenSSH (measured, see
// tests/transport_conformance_test.cpp and /work/shared/docs/PLATFORM.md):
//
//  * sftp_rename() sends a plain SSH_FXP_RENAME (protocol v3, no flags). OpenSSH
//    implements it with link()+unlink(), so it FAILS (SSH_FX_FAILURE) when the target
//    exists. That is exactly the no-overwrite semantics Transport::rename() needs, but
//    put() must replace atomically: it sends "posix-rename@openssh.com" itself (libssh
//    0.10 has no API for it; 0.11's sftp_rename() switched to posix-rename, which
//    would silently break rename() — hence the version guard below).
//  * sftp_write() is synchronous (one round trip per call) and one request of
//    >= 256 KiB kills the session. put() therefore pipelines SSH_FXP_WRITE requests of
//    64 KiB itself, several in flight, and reads the status replies afterwards.
//    Raw requests are only sent when libssh has no request of its own outstanding,
//    and libssh 0.10 reads each SFTP packet exactly (length, then payload) from the
//    channel, so the two never interleave.
//  * After a lost connection sftp_get_error() still returns the status of an
//    earlier request: check the connection first, and clear the status before
//    each request whose failure we interpret.
#include <fcntl.h>
#include <libssh/libssh.h>
#include <libssh/sftp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <random>
#include <unordered_set>

#include "vault/error.hpp"
#include "vault/transport.hpp"

#if LIBSSH_VERSION_INT >= SSH_VERSION_INT(0, 11, 0)
#error "libssh >= 0.11: sftp_rename() overwrites (posix-rename); revisit rename()/put()"
#endif

namespace reduit {
namespace {

constexpr std::uint8_t kFxpWrite = 6;
constexpr std::uint8_t kFxpStatus = 101;
constexpr std::uint8_t kFxpExtended = 200;
constexpr std::uint8_t kFxpExtendedReply = 201;

constexpr std::size_t kWriteChunk = 64 * 1024;  // per SSH_FXP_WRITE (< 256 KiB limit)
constexpr std::size_t kWriteDepth = 16;         // writes in flight (1 MiB)
constexpr std::uint32_t kReadChunk = 64 * 1024;
constexpr std::size_t kReadDepth = 16;  // reads in flight (1 MiB, within libssh's window)

struct SessionDeleter {
  void operator()(ssh_session s) const {
    if (ssh_is_connected(s)) ssh_disconnect(s);
    ssh_free(s);
  }
};
struct SftpDeleter {
  void operator()(sftp_session s) const { sftp_free(s); }
};
struct KeyDeleter {
  void operator()(ssh_key k) const { ssh_key_free(k); }
};
using SessionPtr = std::unique_ptr<ssh_session_struct, SessionDeleter>;
using SftpPtr = std::unique_ptr<sftp_session_struct, SftpDeleter>;
using KeyPtr = std::unique_ptr<ssh_key_struct, KeyDeleter>;

std::string parent_of(const std::string& name) {
  std::size_t slash = name.rfind('/');
  return slash == std::string::npos ? std::string() : name.substr(0, slash);
}

const char* status_text(int status) {
  switch (status) {
    case SSH_FX_OK:
      return "ok";
    case SSH_FX_EOF:
      return "end of file";
    case SSH_FX_NO_SUCH_FILE:
      return "no such file";
    case SSH_FX_PERMISSION_DENIED:
      return "permission denied";
    case SSH_FX_FAILURE:
      return "failure (e.g. disk full or target exists)";
    case SSH_FX_BAD_MESSAGE:
      return "bad message";
    case SSH_FX_NO_CONNECTION:
      return "no connection";
    case SSH_FX_CONNECTION_LOST:
      return "connection lost";
    case SSH_FX_OP_UNSUPPORTED:
      return "operation unsupported";
    case SSH_FX_FILE_ALREADY_EXISTS:
      return "file already exists";
    default:
      return "error";
  }
}

void put_u32(std::string& b, std::uint32_t v) {
  char c[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
               static_cast<char>(v)};
  b.append(c, 4);
}
void put_u64(std::string& b, std::uint64_t v) {
  put_u32(b, static_cast<std::uint32_t>(v >> 32));
  put_u32(b, static_cast<std::uint32_t>(v));
}
void put_string(std::string& b, const void* data, std::size_t len) {
  put_u32(b, static_cast<std::uint32_t>(len));
  b.append(static_cast<const char*>(data), len);
}
void put_string(std::string& b, const std::string& s) {
  put_string(b, s.data(), s.size());
}
std::uint32_t get_u32(const std::string& b, std::size_t at) {
  auto u = [&](std::size_t i) { return static_cast<std::uint32_t>(static_cast<unsigned char>(b[i])); };
  return (u(at) << 24) | (u(at + 1) << 16) | (u(at + 2) << 8) | u(at + 3);
}

class SftpTransport final : public Transport {
 public:
  SftpTransport(const std::string& user, const std::string& host, int port, std::string path,
                const TransportOptions& options, bool create)
      : user_(user), host_(host), port_(port), root_(std::move(path)) {
    while (root_.size() > 1 && root_.back() == '/') root_.pop_back();
    const bool ipv6 = host_.find(':') != std::string::npos;
    url_ = "sftp://" + user_ + "@" + (ipv6 ? "[" + host_ + "]" : host_) + ":" + std::to_string(port_) + root_;
    if (root_.empty() || root_.front() != '/') {
      throw Error(ErrorCode::kUsage,
                  "vault path in " + url_ + " must be absolute, e.g. sftp://backup@nas:22/srv/reduit");
    }
    io_timeout_ = std::chrono::seconds(std::max(60, 4 * options.connect_timeout_seconds));
    std::random_device rd;
    rng_.seed((static_cast<std::uint64_t>(rd()) << 32) ^ rd() ^
              (static_cast<std::uint64_t>(::getpid()) << 16));

    connect(options);
    verify_host_key(options);
    authenticate(options);

    sftp_.reset(sftp_new(session()));
    if (!sftp_ || sftp_init(sftp_.get()) != SSH_OK) {
      throw Error(ErrorCode::kUnreachable, "cannot start the SFTP subsystem on " + url_ + ": " +
                                               ssh_get_error(session()) +
                                               "; check that sshd allows sftp for " + user_);
    }
    has_fsync_ = sftp_extension_supported(sftp_.get(), "fsync@openssh.com", "1") != 0;
    has_posix_rename_ = sftp_extension_supported(sftp_.get(), "posix-rename@openssh.com", "1") != 0;

    open_root(create);
  }

  ~SftpTransport() override {
    sftp_.reset();
    session_.reset();
  }

  void put(const std::string& name, const Bytes& data) override {
    check_object_name(name);
    const std::string tmp = root_ + "/tmp/" + unique_name();
    const int flags = O_WRONLY | O_CREAT | O_EXCL;
    sftp_file file = open_file(tmp, flags, "tmp");
    try {
      write_and_close(file, data, tmp);  // closes `file`, also when it throws
      replace(tmp, path_of(name), name);
    } catch (...) {
      if (alive()) sftp_unlink(sftp_.get(), tmp.c_str());  // no leftover in tmp/
      throw;
    }
    stats_.bytes_written += data.size();
    stats_.objects_written += 1;
  }

  bool put_exclusive(const std::string& name, const Bytes& data) override {
    check_object_name(name);
    const std::string path = path_of(name);
    clear_status();
    sftp_file file = sftp_open(sftp_.get(), path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (file == nullptr && alive() && status() == SSH_FX_NO_SUCH_FILE) {
      recreate_dir(parent_of(name));
      clear_status();
      file = sftp_open(sftp_.get(), path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
    }
    if (file == nullptr) {
      if (alive() && (status() == SSH_FX_FAILURE || status() == SSH_FX_FILE_ALREADY_EXISTS)) {
        // OpenSSH reports EEXIST as a generic failure: confirm by stat.
        if (stat_type(path).has_value()) return false;
      }
      fail("creating " + path);
    }
    try {
      write_and_close(file, data, path);
    } catch (...) {
      if (alive()) sftp_unlink(sftp_.get(), path.c_str());  // no partial lock file
      throw;
    }
    stats_.bytes_written += data.size();
    stats_.objects_written += 1;
    return true;
  }

  Bytes get(const std::string& name) override {
    check_object_name(name);
    const std::string path = path_of(name);
    clear_status();
    sftp_file file = sftp_open(sftp_.get(), path.c_str(), O_RDONLY, 0);
    if (file == nullptr) {
      if (alive() && status() == SSH_FX_NO_SUCH_FILE) {
        throw Error(ErrorCode::kNotFound, "object " + name + " not found in vault " + url_);
      }
      fail("opening " + path);
    }
    Bytes out;
    try {
      out = read_all(file, path);
    } catch (...) {
      sftp_close(file);
      throw;
    }
    sftp_close(file);
    stats_.bytes_read += out.size();
    return out;
  }

  std::optional<std::uint64_t> size(const std::string& name) override {
    check_object_name(name);
    const std::string path = path_of(name);
    clear_status();
    sftp_attributes attrs = sftp_stat(sftp_.get(), path.c_str());
    if (attrs == nullptr) {
      if (alive() && status() == SSH_FX_NO_SUCH_FILE) return std::nullopt;
      fail("stat " + path);
    }
    std::optional<std::uint64_t> result;
    if (attrs->type == SSH_FILEXFER_TYPE_REGULAR) result = attrs->size;
    sftp_attributes_free(attrs);
    return result;
  }

  std::vector<std::string> list(const std::string& dir) override { return scan(dir, false); }

  std::vector<std::string> list_dirs(const std::string& dir) override { return scan(dir, true); }

  bool rename(const std::string& from, const std::string& to) override {
    check_object_name(from);
    check_object_name(to);
    const std::string src = path_of(from);
    const std::string dst = path_of(to);
    for (int attempt = 0; attempt < 2; ++attempt) {
      clear_status();
      // Plain SSH_FXP_RENAME: OpenSSH refuses to overwrite (link() + unlink()).
      if (sftp_rename(sftp_.get(), src.c_str(), dst.c_str()) == 0) return true;
      if (!alive()) fail("renaming " + src + " to " + dst);
      const int st = status();
      if (st == SSH_FX_FAILURE || st == SSH_FX_FILE_ALREADY_EXISTS) {
        if (stat_type(dst).has_value()) return false;  // target exists
        if (!stat_type(src).has_value()) return false;
        fail("renaming " + src + " to " + dst);
      }
      if (st != SSH_FX_NO_SUCH_FILE) fail("renaming " + src + " to " + dst);
      if (!stat_type(src).has_value()) return false;  // `from` is absent
      if (attempt == 0) recreate_dir(parent_of(to));  // the parent of `to` is missing
    }
    fail("renaming " + src + " to " + dst);
  }

  void remove(const std::string& name) override {
    check_object_name(name);
    const std::string path = path_of(name);
    clear_status();
    if (sftp_unlink(sftp_.get(), path.c_str()) != 0) {
      if (alive() && status() == SSH_FX_NO_SUCH_FILE) return;
      fail("removing " + path);
    }
  }

  std::string describe() const override { return url_; }

  const TransportStats& stats() const override { return stats_; }

 private:
  ssh_session session() const { return session_.get(); }

  std::string path_of(const std::string& name) const {
    return root_ == "/" ? "/" + name : root_ + "/" + name;
  }
  std::string dir_path(const std::string& dir) const { return dir.empty() ? root_ : path_of(dir); }

  // ---- connection setup -------------------------------------------------------

  [[noreturn]] void unreachable(const std::string& detail) const {
    throw Error(ErrorCode::kUnreachable,
                "cannot reach vault " + url_ + ": " + detail + "; check the host, port and that sshd runs");
  }

  void set_option(enum ssh_options_e option, const void* value, const char* what) {
    if (ssh_options_set(session(), option, value) != SSH_OK) {
      throw Error(ErrorCode::kUsage, std::string("invalid SSH option ") + what + " for " + url_ + ": " +
                                         ssh_get_error(session()));
    }
  }

  void connect(const TransportOptions& options) {
    session_.reset(ssh_new());
    if (!session_) throw Error(ErrorCode::kInternal, "ssh_new failed");
    const int nodelay = 1;
    const long timeout = std::max(1, options.connect_timeout_seconds);
    const unsigned int port = static_cast<unsigned int>(port_);
    set_option(SSH_OPTIONS_HOST, host_.c_str(), "host");
    set_option(SSH_OPTIONS_PORT, &port, "port");
    set_option(SSH_OPTIONS_USER, user_.c_str(), "user");
    set_option(SSH_OPTIONS_NODELAY, &nodelay, "nodelay");
    set_option(SSH_OPTIONS_TIMEOUT, &timeout, "timeout");
    const std::string ciphers = ssh_ciphers();
    set_option(SSH_OPTIONS_CIPHERS_C_S, ciphers.c_str(), "ciphers");
    set_option(SSH_OPTIONS_CIPHERS_S_C, ciphers.c_str(), "ciphers");
    known_hosts_ = options.known_hosts.empty() ? "~/.ssh/known_hosts" : options.known_hosts;
    if (!options.known_hosts.empty()) {
      set_option(SSH_OPTIONS_KNOWNHOSTS, options.known_hosts.c_str(), "known_hosts");
    }
    if (ssh_connect(session()) != SSH_OK) unreachable(ssh_get_error(session()));
  }

  void verify_host_key(const TransportOptions& options) {
    ssh_key raw = nullptr;
    if (ssh_get_server_publickey(session(), &raw) != SSH_OK) {
      unreachable(std::string("no host key from server: ") + ssh_get_error(session()));
    }
    KeyPtr key(raw);
    unsigned char* hash = nullptr;
    size_t hash_len = 0;
    if (ssh_get_publickey_hash(key.get(), SSH_PUBLICKEY_HASH_SHA256, &hash, &hash_len) != 0) {
      unreachable("cannot hash the server's host key");
    }
    char* fp_raw = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, hash_len);
    ssh_clean_pubkey_hash(&hash);
    if (fp_raw == nullptr) unreachable("cannot format the server's host key fingerprint");
    const std::string fingerprint = fp_raw;  // "SHA256:<base64 without padding>"
    ssh_string_free_char(fp_raw);
    const std::string where =
        (host_.find(':') != std::string::npos ? "[" + host_ + "]" : host_) + ":" + std::to_string(port_);

    if (!options.host_key_fingerprint.empty()) {
      std::string pin = options.host_key_fingerprint;
      while (!pin.empty() && (pin.back() == '=' || pin.back() == ' ')) pin.pop_back();
      if (pin.rfind("SHA256:", 0) != 0) {
        throw Error(ErrorCode::kUsage, "host_key \"" + options.host_key_fingerprint +
                                           "\" must be \"SHA256:<base64>\" as `ssh-keygen -lf` "
                                           "prints it, e.g. host_key = \"" +
                                           fingerprint + "\"");
      }
      if (pin != fingerprint) {
        throw Error(ErrorCode::kUnreachable,
                    "HOST KEY MISMATCH for " + where + ": the server presents " + fingerprint +
                        " but host_key pins " + pin + "; refusing to connect to " + url_ +
                        " (possible attack, or the server key was replaced: verify it out of "
                        "band and update host_key)");
      }
      return;
    }

    switch (ssh_session_is_known_server(session())) {
      case SSH_KNOWN_HOSTS_OK:
        return;
      case SSH_KNOWN_HOSTS_CHANGED:
      case SSH_KNOWN_HOSTS_OTHER:
        throw Error(ErrorCode::kUnreachable,
                    "HOST KEY CHANGED for " + where + ": the server now presents " + fingerprint +
                        ", which does not match " + known_hosts_ + "; refusing to connect to " + url_ +
                        " — possible attack (man-in-the-middle). If the server was reinstalled, "
                        "verify the key out of band, then fix the entry in " +
                        known_hosts_ + " or pin host_key = \"" + fingerprint + "\" in [vault]");
      case SSH_KNOWN_HOSTS_UNKNOWN:
      case SSH_KNOWN_HOSTS_NOT_FOUND:
        if (!options.accept_new_host_key) {
          throw Error(ErrorCode::kUnreachable,
                      "unknown host key for " + where + " (not in " + known_hosts_ +
                          "): the server presents " + fingerprint + "; refusing to connect to " + url_ +
                          ". Verify the fingerprint, then set accept_new_host_key = true "
                          "in [vault] to trust it on first use, or pin host_key = \"" +
                          fingerprint + "\"");
        }
        if (ssh_session_update_known_hosts(session()) != SSH_OK) {
          throw Error(ErrorCode::kIo, "cannot add the host key of " + where + " to " + known_hosts_ + ": " +
                                          ssh_get_error(session()));
        }
        return;
      case SSH_KNOWN_HOSTS_ERROR:
      default:
        unreachable(std::string("cannot check the host key against ") + known_hosts_ + ": " +
                    ssh_get_error(session()));
    }
  }

  void authenticate(const TransportOptions& options) {
    int rc = SSH_AUTH_ERROR;
    std::string key_desc;
    if (!options.ssh_identity.empty()) {
      key_desc = options.ssh_identity;
      ssh_key raw = nullptr;
      if (ssh_pki_import_privkey_file(options.ssh_identity.c_str(), nullptr, nullptr, nullptr, &raw) !=
          SSH_OK) {
        throw Error(ErrorCode::kUnreachable,
                    "SSH authentication as " + user_ + " failed with key " + key_desc +
                        ": cannot read the private key (missing, unreadable or passphrase-"
                        "protected; use ssh-agent for protected keys)");
      }
      KeyPtr key(raw);
      rc = ssh_userauth_publickey(session(), nullptr, key.get());
    } else {
      key_desc = "(ssh-agent / default keys)";
      rc = ssh_userauth_publickey_auto(session(), nullptr, nullptr);
    }
    if (rc != SSH_AUTH_SUCCESS) {
      throw Error(ErrorCode::kUnreachable, "SSH authentication as " + user_ + " failed with key " + key_desc +
                                               " on " + url_ + ": " + ssh_get_error(session()) +
                                               "; check that its public key is in "
                                               "the authorized_keys of " +
                                               user_ + " on " + host_);
    }
  }

  void open_root(bool create) {
    auto type = stat_type(root_);
    if (!type.has_value()) {
      if (!create) {
        throw Error(ErrorCode::kUnreachable, "vault directory " + root_ + " does not exist on host " + host_ +
                                                 " (" + url_ + "; run reduit init first?)");
      }
      std::string prefix;
      for (std::size_t pos = 1; pos <= root_.size(); ++pos) {
        if (pos != root_.size() && root_[pos] != '/') continue;
        prefix = root_.substr(0, pos);
        clear_status();
        if (sftp_mkdir(sftp_.get(), prefix.c_str(), 0700) != 0) {
          if (!alive()) fail("creating " + prefix);
          if (stat_type(prefix) != SSH_FILEXFER_TYPE_DIRECTORY) {
            throw Error(ErrorCode::kUnreachable, "cannot create vault directory " + prefix + " on " + host_ +
                                                     ": " + ssh_get_error(session()));
          }
        }
      }
    } else if (*type != SSH_FILEXFER_TYPE_DIRECTORY) {
      throw Error(ErrorCode::kUnreachable,
                  "vault path " + root_ + " on host " + host_ + " is not a directory");
    }
  }

  // ---- error handling ---------------------------------------------------------

  bool alive() const {
    if (!session_ || !ssh_is_connected(session())) return false;
    if (!sftp_ || sftp_->channel == nullptr) return false;
    return ssh_channel_is_open(sftp_->channel) && !ssh_channel_is_eof(sftp_->channel);
  }

  void clear_status() {
    if (sftp_) sftp_->errnum = SSH_FX_OK;
  }
  int status() const { return sftp_get_error(sftp_.get()); }

  [[noreturn]] void lost(const std::string& what) const {
    throw Error(ErrorCode::kUnreachable,
                "lost the connection to vault " + url_ + " while " + what + ": " + ssh_get_error(session()));
  }

  // `libssh_detail`: false when the failed request was one of our raw ones, whose
  // status libssh never saw (its error text would be stale).
  [[noreturn]] void fail(const std::string& what, bool libssh_detail = true) const {
    if (!alive()) lost(what);
    const int st = status();
    std::string message = what + " on vault " + url_ + ": " + status_text(st);
    if (libssh_detail) message += std::string(" (") + ssh_get_error(session()) + ")";
    throw Error(ErrorCode::kIo, message);
  }

  std::optional<std::uint8_t> stat_type(const std::string& path) {
    clear_status();
    sftp_attributes attrs = sftp_stat(sftp_.get(), path.c_str());
    if (attrs == nullptr) {
      if (alive() && status() == SSH_FX_NO_SUCH_FILE) return std::nullopt;
      fail("stat " + path);
    }
    std::uint8_t type = attrs->type;
    sftp_attributes_free(attrs);
    return type;
  }

  // ---- directories --------------------------------------------------------------

  void recreate_dir(const std::string& dir) {
    for (std::string d = dir; !d.empty(); d = parent_of(d)) known_dirs_.erase(d);
    ensure_dir(dir);
  }

  void ensure_dir(const std::string& dir) {
    if (dir.empty() || known_dirs_.count(dir) != 0) return;
    const std::string path = path_of(dir);
    clear_status();
    if (sftp_mkdir(sftp_.get(), path.c_str(), 0700) != 0) {
      if (!alive()) lost("creating " + path);
      if (status() == SSH_FX_NO_SUCH_FILE) {
        ensure_dir(parent_of(dir));
        clear_status();
        if (sftp_mkdir(sftp_.get(), path.c_str(), 0700) != 0 &&
            stat_type(path) != SSH_FILEXFER_TYPE_DIRECTORY) {
          fail("creating directory " + path);
        }
      } else if (stat_type(path) != SSH_FILEXFER_TYPE_DIRECTORY) {
        fail("creating directory " + path);
      }
    }
    known_dirs_.insert(dir);
  }

  std::vector<std::string> scan(const std::string& dir, bool want_dirs) {
    if (!dir.empty()) check_object_name(dir);
    const std::string path = dir_path(dir);
    clear_status();
    sftp_dir handle = sftp_opendir(sftp_.get(), path.c_str());
    if (handle == nullptr) {
      if (alive() && status() == SSH_FX_NO_SUCH_FILE) return {};
      fail("listing " + path);
    }
    std::vector<std::string> out;
    while (sftp_attributes attrs = sftp_readdir(sftp_.get(), handle)) {
      const std::string name = attrs->name != nullptr ? attrs->name : "";
      const std::uint8_t type = attrs->type;
      sftp_attributes_free(attrs);
      if (name.empty() || name.front() == '.') continue;  // also "." and ".."
      const bool match = want_dirs ? type == SSH_FILEXFER_TYPE_DIRECTORY : type == SSH_FILEXFER_TYPE_REGULAR;
      if (match) out.push_back(dir.empty() ? name : dir + "/" + name);
    }
    const bool complete = sftp_dir_eof(handle) != 0;
    sftp_closedir(handle);
    if (!complete) fail("listing " + path);
    std::sort(out.begin(), out.end());
    return out;
  }

  // ---- files --------------------------------------------------------------------

  std::string unique_name() {
    static const char* hex = "0123456789abcdef";
    std::string s;
    for (int i = 0; i < 2; ++i) {
      std::uint64_t v = rng_();
      for (int j = 0; j < 16; ++j) {
        s += hex[v & 15];
        v >>= 4;
      }
    }
    return s + ".tmp";
  }

  // Opens `path` for writing; creates the vault-relative `dir` when it is missing.
  sftp_file open_file(const std::string& path, int flags, const std::string& dir) {
    clear_status();
    sftp_file file = sftp_open(sftp_.get(), path.c_str(), flags, 0600);
    if (file == nullptr && alive() && status() == SSH_FX_NO_SUCH_FILE) {
      recreate_dir(dir);
      clear_status();
      file = sftp_open(sftp_.get(), path.c_str(), flags, 0600);
    }
    if (file == nullptr) fail("creating " + path);
    return file;
  }

  // Writes all of `data` with pipelined SSH_FXP_WRITE requests, fsyncs (when the
  // server offers fsync@openssh.com) and closes `file` — also when it throws.
  void write_and_close(sftp_file file, const Bytes& data, const std::string& path) {
    try {
      write_pipelined(file, data, path);
      if (has_fsync_) {
        clear_status();
        if (sftp_fsync(file) != 0) fail("syncing " + path);
      }
    } catch (...) {
      sftp_close(file);
      throw;
    }
    clear_status();
    if (sftp_close(file) != 0) fail("closing " + path);
  }

  void write_pipelined(sftp_file file, const Bytes& data, const std::string& path) {
    const std::string handle(static_cast<const char*>(ssh_string_data(file->handle)),
                             ssh_string_len(file->handle));
    std::deque<std::uint32_t> in_flight;
    int first_error = SSH_FX_OK;
    std::uint64_t offset = 0;
    std::string packet;
    for (;;) {
      const bool more = offset < data.size() && first_error == SSH_FX_OK;
      if (more && in_flight.size() < kWriteDepth) {
        const std::size_t len = std::min<std::size_t>(kWriteChunk, data.size() - offset);
        const std::uint32_t id = next_id();
        packet.clear();
        put_u32(packet, 0);  // length, patched below
        packet.push_back(static_cast<char>(kFxpWrite));
        put_u32(packet, id);
        put_string(packet, handle);
        put_u64(packet, offset);
        put_string(packet, data.data() + offset, len);
        send_packet(packet, "writing " + path);
        in_flight.push_back(id);
        offset += len;
        continue;
      }
      if (in_flight.empty()) break;
      // Window full, or everything sent: collect a reply (after an error, drain all
      // before the session is used again).
      std::uint32_t id = 0;
      const int st = read_status_reply(&id, "writing " + path);
      auto it = std::find(in_flight.begin(), in_flight.end(), id);
      if (it == in_flight.end()) desync("writing " + path);
      in_flight.erase(it);
      if (st != SSH_FX_OK && first_error == SSH_FX_OK) first_error = st;
    }
    if (first_error != SSH_FX_OK) {
      sftp_->errnum = first_error;
      fail("writing " + path, /*libssh_detail=*/false);
    }
  }

  Bytes read_all(sftp_file file, const std::string& path) {
    clear_status();
    sftp_attributes attrs = sftp_fstat(file);
    if (attrs == nullptr) fail("stat " + path);
    const std::uint64_t size = attrs->size;
    sftp_attributes_free(attrs);
    Bytes out(static_cast<std::size_t>(size));

    struct Request {
      int id;
      std::uint64_t offset;
      std::uint32_t len;
    };
    std::deque<Request> in_flight;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> holes;  // short reads to redo
    std::uint64_t next = 0;
    auto drain = [&] {
      std::vector<std::uint8_t> scratch(kReadChunk);
      while (!in_flight.empty() && alive()) {
        sftp_async_read(file, scratch.data(), in_flight.front().len,
                        static_cast<std::uint32_t>(in_flight.front().id));
        in_flight.pop_front();
      }
      in_flight.clear();
    };
    try {
      while (next < size || !in_flight.empty()) {
        while (next < size && in_flight.size() < kReadDepth) {
          const std::uint32_t len =
              static_cast<std::uint32_t>(std::min<std::uint64_t>(kReadChunk, size - next));
          sftp_seek64(file, next);
          clear_status();
          const int id = sftp_async_read_begin(file, len);
          if (id < 0) fail("reading " + path);
          in_flight.push_back(Request{id, next, len});
          next += len;
        }
        Request req = in_flight.front();
        in_flight.pop_front();
        clear_status();
        const int n =
            sftp_async_read(file, out.data() + req.offset, req.len, static_cast<std::uint32_t>(req.id));
        if (n < 0) fail("reading " + path);
        if (static_cast<std::uint32_t>(n) < req.len) {
          holes.emplace_back(req.offset + static_cast<std::uint64_t>(n),
                             req.len - static_cast<std::uint64_t>(n));
        }
      }
    } catch (...) {
      drain();
      throw;
    }
    // Servers may return less than asked for; fetch the rest synchronously.
    for (auto [offset, len] : holes) {
      sftp_seek64(file, offset);
      while (len > 0) {
        clear_status();
        const ssize_t n = sftp_read(file, out.data() + offset,
                                    static_cast<std::size_t>(std::min<std::uint64_t>(len, kReadChunk)));
        if (n < 0) fail("reading " + path);
        if (n == 0) {
          throw Error(ErrorCode::kIo, "object " + path + " on " + url_ + " shrank while being read; retry");
        }
        offset += static_cast<std::uint64_t>(n);
        len -= static_cast<std::uint64_t>(n);
      }
    }
    return out;
  }

  // Atomically replaces `dst` by `src` (both absolute); creates the parent of the
  // vault-relative `name` when it is missing.
  void replace(const std::string& src, const std::string& dst, const std::string& name) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      int st = SSH_FX_OK;
      if (has_posix_rename_) {
        st = posix_rename(src, dst);
      } else {
        // No atomic replace on this server: unlink + rename (a short window in which
        // `dst` is absent, never partial).
        clear_status();
        if (sftp_rename(sftp_.get(), src.c_str(), dst.c_str()) == 0) return;
        if (!alive()) lost("renaming " + src + " to " + dst);
        st = status();
        if (st == SSH_FX_FAILURE || st == SSH_FX_FILE_ALREADY_EXISTS) {
          clear_status();
          sftp_unlink(sftp_.get(), dst.c_str());
          clear_status();
          if (sftp_rename(sftp_.get(), src.c_str(), dst.c_str()) == 0) return;
          if (!alive()) lost("renaming " + src + " to " + dst);
          st = status();
        }
      }
      if (st == SSH_FX_OK) return;
      if (st != SSH_FX_NO_SUCH_FILE || attempt == 1) {
        sftp_->errnum = st;
        fail("renaming " + src + " to " + dst, /*libssh_detail=*/!has_posix_rename_);
      }
      recreate_dir(parent_of(name));
    }
  }

  // ---- raw SFTP requests (libssh 0.10 has no API for them) ------------------------

  std::uint32_t next_id() { return ++sftp_->id_counter; }  // as sftp_get_new_id() does

  // Replies may still be queued in the channel: the SFTP stream can no longer be
  // trusted, so drop the connection (later calls then fail with kUnreachable too).
  [[noreturn]] void desync(const std::string& what) {
    ssh_disconnect(session());
    throw Error(ErrorCode::kUnreachable, "unexpected or missing SFTP reply from vault " + url_ + " while " +
                                             what + "; the connection was closed");
  }

  // `packet` starts with a 4-byte placeholder for the length.
  void send_packet(std::string& packet, const std::string& what) {
    const std::uint32_t len = static_cast<std::uint32_t>(packet.size() - 4);
    packet[0] = static_cast<char>(len >> 24);
    packet[1] = static_cast<char>(len >> 16);
    packet[2] = static_cast<char>(len >> 8);
    packet[3] = static_cast<char>(len);
    const int n = ssh_channel_write(sftp_->channel, packet.data(), static_cast<std::uint32_t>(packet.size()));
    if (n != static_cast<int>(packet.size())) lost(what);
  }

  void read_exact(char* dst, std::size_t len, const std::string& what) {
    auto deadline = std::chrono::steady_clock::now() + io_timeout_;
    while (len > 0) {
      const int n = ssh_channel_read(sftp_->channel, dst, static_cast<std::uint32_t>(len), 0);
      if (n < 0) lost(what);
      if (n == 0) {
        if (!alive()) lost(what);
        if (std::chrono::steady_clock::now() > deadline) desync(what + " (no answer in time)");
        continue;
      }
      dst += n;
      len -= static_cast<std::size_t>(n);
      deadline = std::chrono::steady_clock::now() + io_timeout_;
    }
  }

  // Reads one reply packet; returns its SSH_FX_* status and stores its request id.
  int read_status_reply(std::uint32_t* id, const std::string& what) {
    char header[4];
    read_exact(header, 4, what);
    const std::uint32_t len = get_u32(std::string(header, 4), 0);
    if (len < 9 || len > 256 * 1024) desync(what);
    std::string body(len, '\0');
    read_exact(body.data(), len, what);
    const auto type = static_cast<std::uint8_t>(body[0]);
    *id = get_u32(body, 1);
    if (type != kFxpStatus) {
      if (type == kFxpExtendedReply) return SSH_FX_OK;
      desync(what);
    }
    return static_cast<int>(get_u32(body, 5));
  }

  // posix-rename@openssh.com: rename(2), replacing `dst` atomically.
  int posix_rename(const std::string& src, const std::string& dst) {
    const std::string what = "renaming " + src + " to " + dst;
    const std::uint32_t id = next_id();
    std::string packet;
    put_u32(packet, 0);
    packet.push_back(static_cast<char>(kFxpExtended));
    put_u32(packet, id);
    put_string(packet, std::string("posix-rename@openssh.com"));
    put_string(packet, src);
    put_string(packet, dst);
    send_packet(packet, what);
    std::uint32_t reply_id = 0;
    const int st = read_status_reply(&reply_id, what);
    if (reply_id != id) desync(what);
    return st;
  }

  std::string user_;
  std::string host_;
  int port_;
  std::string root_;
  std::string url_;
  std::string known_hosts_;
  std::chrono::seconds io_timeout_{60};
  SessionPtr session_;
  SftpPtr sftp_;
  bool has_fsync_ = false;
  bool has_posix_rename_ = false;
  std::unordered_set<std::string> known_dirs_;
  std::mt19937_64 rng_;
  TransportStats stats_;
};

}  // namespace

std::string ssh_ciphers(bool aes_gcm_fast) {
  return aes_gcm_fast ? "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,"
                        "aes256-ctr,aes192-ctr,aes128-ctr"
                      : "chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-gcm@openssh.com,"
                        "aes256-ctr,aes192-ctr,aes128-ctr";
}

std::string ssh_ciphers() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool fast = __builtin_cpu_supports("aes") && __builtin_cpu_supports("pclmul");
#else
  static const bool fast = false;  // the feature test above is x86's; elsewhere OpenSSH's order
#endif
  return ssh_ciphers(fast);
}

std::unique_ptr<Transport> make_sftp_transport(const std::string& user, const std::string& host, int port,
                                               const std::string& path, const TransportOptions& options,
                                               bool create) {
  return std::make_unique<SftpTransport>(user, host, port, path, options, create);
}

}  // namespace reduit
