// vault/direct_gpg.cpp — see direct_gpg.hpp.
#include "vault/direct_gpg.hpp"

#include <errno.h>
#include <fcntl.h>
#include <gpgme.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include "vault/error.hpp"

extern char** environ;

namespace reduit {
namespace {

constexpr std::size_t kMaxStatus = 1 << 20;  // status lines read back; a seal writes about 1 KiB
constexpr std::size_t kMaxLog = 16 << 10;    // the tail of gpg's standard error kept for messages
constexpr std::string_view kStatusPrefix = "[GNUPG:] ";

// A close-on-exec memfd moved to descriptor 10 or above, so that the dup2 of one
// onto 0 to 3 in the child never overwrites another (a daemon may run with 0 to 2
// closed). -1 on failure.
int high_memfd(const char* name) {
  int fd = ::memfd_create(name, MFD_CLOEXEC);
  if (fd < 0) return -1;
  int high = ::fcntl(fd, F_DUPFD_CLOEXEC, 10);
  ::close(fd);
  return high;
}

// Rewinds and empties a memfd that gpg is to write.
bool reset(int fd) {
  return ::ftruncate(fd, 0) == 0 && ::lseek(fd, 0, SEEK_SET) == 0;
}

// Up to `max` bytes from the end of what gpg wrote to memfd `fd`.
std::string tail_of(int fd, std::size_t max) {
  struct stat st {};
  if (::fstat(fd, &st) != 0 || st.st_size <= 0) return std::string();
  const auto size = static_cast<std::size_t>(st.st_size);
  const std::size_t n = std::min(size, max);
  std::string s(n, '\0');
  ssize_t r = ::pread(fd, s.data(), n, static_cast<off_t>(size - n));
  s.resize(r > 0 ? static_cast<std::size_t>(r) : 0);
  return s;
}

// doc/DETAILS of GnuPG, "INV_RECP, INV_SGNR".
std::string inv_reason(std::string_view code) {
  static const char* const kReasons[] = {"no specific reason given",
                                         "not found",
                                         "ambiguous specification",
                                         "wrong key usage",
                                         "key revoked",
                                         "key expired",
                                         "no CRL known",
                                         "CRL too old",
                                         "policy mismatch",
                                         "not a secret key",
                                         "key not trusted",
                                         "missing certificate",
                                         "missing issuer certificate",
                                         "key disabled",
                                         "syntax error in specification"};
  unsigned n = 0;
  for (char c : code) {
    if (c < '0' || c > '9' || n > 100) return "reason " + std::string(code);
    n = n * 10 + static_cast<unsigned>(c - '0');
  }
  if (code.empty() || n >= std::size(kReasons)) return "reason " + std::string(code);
  return kReasons[n];
}

std::vector<std::string_view> words(std::string_view line) {
  std::vector<std::string_view> w;
  std::size_t at = 0;
  while (at < line.size()) {
    std::size_t end = line.find(' ', at);
    if (end == std::string_view::npos) end = line.size();
    if (end > at) w.push_back(line.substr(at, end - at));
    at = end + 1;
  }
  return w;
}

// The words of each of gpg's status lines ("[GNUPG:] KEYWORD ARGS…", doc/DETAILS),
// keyword first; other lines and empty ones are skipped. Views into `status`.
std::vector<std::vector<std::string_view>> status_lines(const std::string& status) {
  std::vector<std::vector<std::string_view>> lines;
  std::size_t at = 0;
  while (at < status.size()) {
    std::size_t end = status.find('\n', at);
    if (end == std::string::npos) end = status.size();
    std::string_view line(status.data() + at, end - at);
    at = end + 1;
    if (line.substr(0, kStatusPrefix.size()) != kStatusPrefix) continue;
    std::vector<std::string_view> w = words(line.substr(kStatusPrefix.size()));
    if (!w.empty()) lines.push_back(std::move(w));
  }
  return lines;
}

// What gpg's standard error says went wrong, for messages: of its messages (each
// begins "gpg: "; without a terminal some lack their line end), the last that
// reports a failure, else the last one.
std::string gpg_said(const std::string& log) {
  std::vector<std::string> said;
  std::size_t at = log.find("gpg: ");
  while (at != std::string::npos) {
    std::size_t next = log.find("gpg: ", at + 5);
    std::string m = log.substr(at, next == std::string::npos ? std::string::npos : next - at);
    while (!m.empty() && (m.back() == '\n' || m.back() == '\r' || m.back() == ' ')) m.pop_back();
    said.push_back(std::move(m));
    at = next;
  }
  for (auto it = said.rbegin(); it != said.rend(); ++it)
    for (const char* word : {"fail", "Sorry", "error", "can't", "cannot", "skipped"})
      if (it->find(word) != std::string::npos) return *it;
  if (!said.empty()) return said.back();
  std::size_t end = log.find_last_not_of("\r\n");
  return end == std::string::npos ? std::string() : log.substr(0, end + 1);
}

}  // namespace

std::unique_ptr<DirectGpg> DirectGpg::start(std::string program) {
  if (program.empty()) program = Crypto::gpg_program();
  int fds[4];
  const char* names[4] = {"reduit-gpg-in", "reduit-gpg-out", "reduit-gpg-status", "reduit-gpg-log"};
  for (int i = 0; i < 4; ++i) {
    fds[i] = high_memfd(names[i]);
    if (fds[i] < 0) {
      for (int j = 0; j < i; ++j) ::close(fds[j]);
      return nullptr;
    }
  }
  return std::unique_ptr<DirectGpg>(new DirectGpg(std::move(program), fds[0], fds[1], fds[2], fds[3]));
}

DirectGpg::DirectGpg(std::string program, int in, int out, int status, int log)
    : program_(std::move(program)), in_(in), out_(out), status_(status), log_(log) {}

DirectGpg::~DirectGpg() {
  if (map_) ::munmap(map_, map_size_);
  for (int fd : {in_, out_, status_, log_}) ::close(fd);
}

std::span<std::uint8_t> DirectGpg::input(std::size_t size) {
  if (size > map_size_) {
    // An eighth to spare: packs end a message past their target.
    std::size_t grown = (size + size / 8 + 0xFFFF) & ~std::size_t{0xFFFF};
    void* p = MAP_FAILED;
    if (::ftruncate(in_, static_cast<off_t>(grown)) == 0)
      p = ::mmap(nullptr, grown, PROT_READ | PROT_WRITE, MAP_SHARED, in_, 0);
    if (p == MAP_FAILED) throw_errno("mapping the shared memory of gpg's input", errno);
    // Out of the forks GPGME still makes on other threads (index objects, the
    // snapshot): not copied, not write-protected.
    ::madvise(p, grown, MADV_DONTFORK);
    if (map_) ::munmap(map_, map_size_);
    map_ = static_cast<std::uint8_t*>(p);
    map_size_ = grown;
    in_size_ = grown;
  } else if (in_size_ < map_size_) {
    // encrypt_sign cut the file to its input; the view needs all of it again.
    if (::ftruncate(in_, static_cast<off_t>(map_size_)) != 0)
      throw_errno("growing the shared memory of gpg's input", errno);
    in_size_ = map_size_;
  }
  return {map_, size};
}

DirectGpg::Run DirectGpg::run(std::vector<std::string> args, std::size_t size) {
  if (size > map_size_) throw Error(ErrorCode::kInternal, "direct gpg: input larger than its shared memory");
  // gpg reads its standard input to the end of the file: the file is cut to the
  // input (the pages past it are freed; input() grows it again).
  if (::ftruncate(in_, static_cast<off_t>(size)) != 0 || ::lseek(in_, 0, SEEK_SET) != 0)
    throw_errno("preparing gpg's input", errno);
  in_size_ = size;
  // The output is not cut: its pages are written again in place, and its length is
  // the file offset gpg's writes leave (the descriptor is shared with gpg's stdout).
  if (::lseek(out_, 0, SEEK_SET) != 0 || !reset(status_) || !reset(log_))
    throw_errno("preparing gpg's output", errno);
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  sigset_t none, pipe_default;
  sigemptyset(&none);
  sigemptyset(&pipe_default);
  sigaddset(&pipe_default, SIGPIPE);
  pid_t pid = -1;
  int rc = posix_spawn_file_actions_init(&fa);
  if (rc == 0) {
    rc = posix_spawn_file_actions_adddup2(&fa, in_, 0);
    if (rc == 0) rc = posix_spawn_file_actions_adddup2(&fa, out_, 1);
    if (rc == 0) rc = posix_spawn_file_actions_adddup2(&fa, log_, 2);
    if (rc == 0) rc = posix_spawn_file_actions_adddup2(&fa, status_, 3);
    // Nothing else of this process reaches gpg (a socket, the catalog).
    if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(&fa, 4);
    if (rc == 0 && (rc = posix_spawnattr_init(&attr)) == 0) {
      // No signal blocked in gpg, whichever thread starts it; SIGPIPE as default.
      rc = posix_spawnattr_setsigmask(&attr, &none);
      if (rc == 0) rc = posix_spawnattr_setsigdefault(&attr, &pipe_default);
      if (rc == 0) rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
      if (rc == 0) rc = ::posix_spawn(&pid, program_.c_str(), &fa, &attr, argv.data(), environ);
      posix_spawnattr_destroy(&attr);
    }
    posix_spawn_file_actions_destroy(&fa);
  }
  if (rc != 0)
    throw Error(ErrorCode::kInternal,
                "cannot start " + program_ + " (" + std::strerror(rc) + "): install gnupg");
  last_pid_ = pid;
  int wstatus = 0;
  pid_t w;
  while ((w = ::waitpid(pid, &wstatus, 0)) < 0 && errno == EINTR) {
  }
  if (w != pid) throw_errno("waiting for gpg (pid " + std::to_string(pid) + ")", errno);
  return Run{pid, wstatus, tail_of(status_, kMaxStatus), tail_of(log_, kMaxLog)};
}

std::size_t DirectGpg::output_length(pid_t pid) const {
  const off_t written = ::lseek(out_, 0, SEEK_CUR);
  if (written < 0) throw_errno("reading gpg's output (pid " + std::to_string(pid) + ")", errno);
  return static_cast<std::size_t>(written);
}

void DirectGpg::read_output(std::size_t len, Bytes& out) const {
  out.clear();
  if (len > out.capacity()) out.reserve(len);
  out.resize(len);
  std::size_t got = 0;
  while (got < len) {
    ssize_t r = ::pread(out_, out.data() + got, len - got, static_cast<off_t>(got));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) throw_errno("reading gpg's output", r < 0 ? errno : EIO);
    got += static_cast<std::size_t>(r);
  }
}

Bytes DirectGpg::encrypt_sign(std::size_t size, const SealKeys& keys, Bytes out) {
  if (keys.recipients.empty() || keys.signer.empty())
    throw Error(ErrorCode::kInternal, "direct gpg: no recipients or no signer");
  std::vector<std::string> args = {"gpg"};
  if (!keys.gnupghome.empty()) args.insert(args.end(), {"--homedir", keys.gnupghome});
  args.insert(args.end(), {"--batch", "--no-tty", "--status-fd", "3", "--exit-on-status-write-error",
                           "--pinentry-mode", "loopback", "--compress-algo", "none", "--always-trust",
                           "--encrypt", "--sign", "-u", keys.signer});
  // A preference, not --digest-algo: a digest-algo in the keyring's gpg.conf wins.
  if (keys.sha256_signature) args.insert(args.end(), {"--personal-digest-preferences", "SHA256"});
  for (const std::string& r : keys.recipients) args.insert(args.end(), {"-r", r});
  args.insert(args.end(), {"--output", "-"});
  const Run ran = run(std::move(args), size);
  const pid_t pid = ran.pid;
  const int wstatus = ran.wstatus;
  const std::string& status = ran.status;
  const std::string& log = ran.log;
  const std::string where =
      "GNUPGHOME=" + (keys.gnupghome.empty() ? std::string("(default)") : keys.gnupghome);
  bool signed_ = false, encrypted = false, passphrase = false;
  std::string failure;  // FAILURE or ERROR: "<location> <gpg-error code>"
  gpgme_error_t failure_code = 0;
  for (const std::vector<std::string_view>& w : status_lines(status)) {
    if (w[0] == "INV_RECP" || w[0] == "INV_SGNR") {
      const bool recp = w[0] == "INV_RECP";
      const std::string key = w.size() > 2 ? std::string(w[2]) : std::string("?");
      throw Error(ErrorCode::kKey, (recp ? "cannot encrypt to " : "cannot sign with ") + key + " (" +
                                       inv_reason(w.size() > 1 ? w[1] : "") + "): check the " +
                                       (recp ? "key" : "secret key") + " in " + where);
    } else if (w[0] == "SIG_CREATED") {
      signed_ = true;
    } else if (w[0] == "END_ENCRYPTION") {
      encrypted = true;
    } else if (w[0] == "NEED_PASSPHRASE") {
      passphrase = true;
    } else if ((w[0] == "FAILURE" || w[0] == "ERROR") && w.size() > 2 && failure.empty()) {
      failure_code = static_cast<gpgme_error_t>(std::strtoul(std::string(w[2]).c_str(), nullptr, 10));
      failure = std::string(w[1]) + ": " + gpgme_strerror(failure_code);
    }
  }
  const std::string said = gpg_said(log);
  if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) != 0) {
    if (passphrase && !signed_)
      throw Error(ErrorCode::kKey, "encrypt+sign in " + where + " failed: the secret key of " + keys.signer +
                                       " is protected by a passphrase, and reduit signs unattended: use an "
                                       "agent key without one (gpg --passwd)");
    auto code = gpgme_err_code(failure_code);
    if (code == GPG_ERR_UNUSABLE_PUBKEY || code == GPG_ERR_UNUSABLE_SECKEY || code == GPG_ERR_NO_SECKEY ||
        code == GPG_ERR_BAD_PASSPHRASE || code == GPG_ERR_NO_PASSPHRASE || code == GPG_ERR_NO_PUBKEY)
      throw Error(ErrorCode::kKey, "encrypt+sign in " + where + " failed: " + gpgme_strerror(failure_code));
  }
  if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0 || !signed_ || !encrypted) {
    std::string how = WIFSIGNALED(wstatus)  ? "was killed by signal " + std::to_string(WTERMSIG(wstatus))
                      : !WIFEXITED(wstatus) ? "ended"
                      : WEXITSTATUS(wstatus) != 0
                          ? "exited with status " + std::to_string(WEXITSTATUS(wstatus))
                          : std::string("exited 0 without ") + (signed_ ? "END_ENCRYPTION" : "SIG_CREATED");
    std::string detail = failure.empty() ? said : failure + (said.empty() ? "" : "; " + said);
    throw Error(ErrorCode::kInternal, program_ + " (pid " + std::to_string(pid) + ") " + how +
                                          " while encrypting and signing in " + where +
                                          (detail.empty() ? std::string() : ": " + detail));
  }

  const std::size_t len = output_length(pid);
  // An OpenPGP message without compression is its input plus headers, keys and a
  // signature (Crypto::encrypt_sign reserves input/4096 + 4 KiB more).
  if (len <= size || len > size + size / 64 + (std::size_t{1} << 20))
    throw Error(ErrorCode::kInternal, program_ + " (pid " + std::to_string(pid) + ") wrote " +
                                          std::to_string(len) + " bytes for an input of " +
                                          std::to_string(size));
  read_output(len, out);
  return out;
}

std::optional<Bytes> DirectGpg::decrypt_verify(std::span<const std::uint8_t> stored,
                                               const std::string& gnupghome,
                                               const std::string& expected_signer) {
  if (expected_signer.empty() || stored.empty()) return std::nullopt;
  std::span<std::uint8_t> in = input(stored.size());
  std::memcpy(in.data(), stored.data(), stored.size());
  std::vector<std::string> args = {"gpg"};
  if (!gnupghome.empty()) args.insert(args.end(), {"--homedir", gnupghome});
  args.insert(args.end(), {"--batch", "--no-tty", "--status-fd", "3", "--exit-on-status-write-error",
                           "--pinentry-mode", "loopback", "--disable-dirmngr", "--decrypt", "--output", "-"});
  const Run ran = run(std::move(args), stored.size());
  if (!WIFEXITED(ran.wstatus) || WEXITSTATUS(ran.wstatus) != 0) return std::nullopt;
  int okay = 0, end = 0, protected_ = 0, plaintext = 0, newsig = 0, goodsig = 0, validsig = 0, other = 0;
  bool signer_matches = false;
  for (const std::vector<std::string_view>& w : status_lines(ran.status)) {
    const std::string_view k = w[0];
    if (k == "DECRYPTION_OKAY") {
      ++okay;
    } else if (k == "END_DECRYPTION") {
      ++end;
    } else if (k == "DECRYPTION_INFO") {
      // <mdc_method> <sym_algo> [<aead_algo>] (doc/DETAILS): 0 = none.
      if ((w.size() > 1 && w[1] != "0") || (w.size() > 3 && w[3] != "0")) ++protected_;
    } else if (k == "PLAINTEXT") {
      ++plaintext;
    } else if (k == "NEWSIG") {
      ++newsig;
    } else if (k == "GOODSIG") {
      ++goodsig;
    } else if (k == "VALIDSIG") {
      ++validsig;
      // <fpr> <date> <timestamp> <expire> <version> <reserved> <pk algo> <hash algo>
      // <class> <primary-key-fpr>
      std::string primary = w.size() > 10 ? std::string(w[10]) : std::string();
      for (char& c : primary) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      std::string expected = expected_signer;
      for (char& c : expected) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      signer_matches = primary == expected;
    } else if (k == "BADSIG" || k == "ERRSIG" || k == "EXPSIG" || k == "EXPKEYSIG" || k == "REVKEYSIG" ||
               k == "BADMDC" || k == "DECRYPTION_FAILED" || k == "FAILURE" || k == "ERROR" ||
               k == "TRUNCATED") {
      // (NO_SECKEY is not among them: it names another recipient's key whenever
      // this home holds one recipient's secret key and not the others'.)
      ++other;
    }
  }
  if (okay != 1 || end != 1 || protected_ != 1 || plaintext != 1 || newsig != 1 || goodsig != 1 ||
      validsig != 1 || other != 0 || !signer_matches)
    return std::nullopt;
  Bytes out;
  read_output(output_length(ran.pid), out);
  return out;
}

}  // namespace reduit
