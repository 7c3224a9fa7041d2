// vault/gpg_helper.cpp — see gpg_helper.hpp.
//
// Protocol on the socket (SOCK_STREAM, one request at a time, integers little-endian):
//   request: u64 memfd size, u64 input length, u32 string count, then per string
//            a u32 length and its bytes: GNUPGHOME, the signer, the recipients.
//   reply:   u8 status (0 = ok, else the reduit::ErrorCode), u64 length, then the
//            OpenPGP message (ok) or the error message.
#include "vault/gpg_helper.hpp"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <mutex>

#include "vault/crypto.hpp"
#include "vault/error.hpp"

extern char** environ;

namespace reduit {
namespace {

constexpr int kSocketFd = 3;
constexpr int kMemFd = 4;
constexpr std::uint32_t kMaxStrings = 4096;          // GNUPGHOME, signer, recipients
constexpr std::uint32_t kMaxString = 64 << 10;       // one of them, or an error message
constexpr int kSocketBuffer = 4 << 20;               // asked for; the kernel caps it
static_assert(static_cast<int>(ErrorCode::kInternal) <= 255, "reply status is one byte");
std::mutex g_mu;
std::string g_exe;  // empty: helpers are not enabled

// Whole reads and writes; false on EOF or error (errno says which; 0 on EOF).
bool read_all(int fd, void* p, std::size_t n) {
  auto* at = static_cast<std::uint8_t*>(p);
  while (n > 0) {
    ssize_t r = ::read(fd, at, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      if (r == 0) errno = 0;
      return false;
    }
    at += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

bool write_all(int fd, const void* p, std::size_t n) {
  const auto* at = static_cast<const std::uint8_t*>(p);
  while (n > 0) {
    ssize_t r = ::send(fd, at, n, MSG_NOSIGNAL);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    at += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

void put_u(std::string& s, std::uint64_t v, int n) {
  char b[8];
  store_le(b, v, n);
  s.append(b, static_cast<std::size_t>(n));
}

// Bigger socket buffers: fewer switches between the helper and the caller while a
// 16 MiB message crosses (the kernel caps them at net.core.*mem_max).
void widen_buffers(int fd) {
  int size = kSocketBuffer;
  ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
}

bool known_status(std::uint8_t s) {
  switch (static_cast<ErrorCode>(s)) {
    case ErrorCode::kUsage:
    case ErrorCode::kLockHeld:
    case ErrorCode::kUnreachable:
    case ErrorCode::kKey:
    case ErrorCode::kVerify:
    case ErrorCode::kSource:
    case ErrorCode::kNotFound:
    case ErrorCode::kIo:
    case ErrorCode::kInternal:
      return true;
  }
  return false;
}

}  // namespace

void enable_gpg_helpers(const std::string& exe) {
  std::lock_guard<std::mutex> g(g_mu);
  g_exe = exe;
}

int gpg_helper_main() {
  // Only the two descriptors of the protocol: nothing the caller had open stays
  // open in gpg's processes.
  ::close_range(kMemFd + 1, ~0U, 0);
  ::prctl(PR_SET_NAME, "reduit-gpg");  // started as /proc/self/exe, it would be "exe"
  widen_buffers(kSocketFd);
  std::unique_ptr<Crypto> crypto;
  std::string crypto_home;
  const std::uint8_t* map = nullptr;
  std::size_t map_size = 0;
  Bytes out;
  while (true) {
    std::uint8_t head[20];
    if (!read_all(kSocketFd, head, sizeof head)) return errno == 0 ? 0 : 1;
    const std::uint64_t size = load_le(head, 8), in_len = load_le(head + 8, 8);
    const auto count = static_cast<std::uint32_t>(load_le(head + 16, 4));
    if (count < 3 || count > kMaxStrings || in_len > size) return 1;  // not our caller
    std::vector<std::string> strings;
    for (std::uint32_t i = 0; i < count; ++i) {
      std::uint8_t len[4];
      if (!read_all(kSocketFd, len, 4) || load_le(len, 4) > kMaxString) return 1;
      std::string s(load_le(len, 4), '\0');
      if (!read_all(kSocketFd, s.data(), s.size())) return 1;
      strings.push_back(std::move(s));
    }
    if (size != map_size) {
      if (map) ::munmap(const_cast<std::uint8_t*>(map), map_size);
      void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, kMemFd, 0);
      if (p == MAP_FAILED) return 1;
      ::madvise(p, size, MADV_DONTFORK);
      map = static_cast<const std::uint8_t*>(p);
      map_size = size;
    }
    std::uint8_t status = 0;
    std::string message;
    try {
      if (!crypto || crypto_home != strings[0]) {
        crypto.reset();
        crypto = std::make_unique<Crypto>(strings[0]);
        crypto_home = strings[0];
      }
      std::vector<std::string> recipients(strings.begin() + 2, strings.end());
      out = crypto->encrypt_sign(std::span<const std::uint8_t>(map, in_len), recipients, strings[1],
                                 std::move(out));
    } catch (const Error& e) {
      status = static_cast<std::uint8_t>(e.code());
      message = e.what();
    } catch (const std::exception& e) {
      status = static_cast<std::uint8_t>(ErrorCode::kInternal);
      message = e.what();
    }
    std::string reply;
    put_u(reply, status, 1);
    if (message.size() > kMaxString) message.resize(kMaxString);
    put_u(reply, status ? message.size() : out.size(), 8);
    reply += message;
    if (!write_all(kSocketFd, reply.data(), reply.size())) return 1;
    if (status == 0 && !write_all(kSocketFd, out.data(), out.size())) return 1;
  }
}

std::unique_ptr<GpgHelper> GpgHelper::start(const std::string& gnupghome) {
  std::string exe;
  {
    std::lock_guard<std::mutex> g(g_mu);
    exe = g_exe;
  }
  if (exe.empty()) return nullptr;
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return nullptr;
  int memfd = ::memfd_create("reduit-gpg", MFD_CLOEXEC);
  if (memfd < 0) {
    ::close(sv[0]);
    ::close(sv[1]);
    return nullptr;
  }
  // The child's ends are first moved above 3 and 4, so that neither dup2 below
  // closes the other's source.
  const int child_sock = ::fcntl(sv[1], F_DUPFD_CLOEXEC, 10);
  const int child_mem = ::fcntl(memfd, F_DUPFD_CLOEXEC, 10);
  ::close(sv[1]);
  // posix_spawn starts the child without copying this process's page tables
  // (glibc: clone with CLONE_VM | CLONE_VFORK), unlike fork().
  int rc = EBADF;
  pid_t pid = -1;
  if (child_sock >= 0 && child_mem >= 0) {
    // stdin and stdout are not the helper's: a pipe reading reduit's output ends
    // with reduit, not with the helper's last gpg. No signal is blocked in it,
    // whichever thread starts it.
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none;
    sigemptyset(&none);
    rc = posix_spawn_file_actions_init(&fa);
    if (rc == 0) {
      rc = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
      if (rc == 0) rc = posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
      if (rc == 0) rc = posix_spawn_file_actions_adddup2(&fa, child_sock, kSocketFd);
      if (rc == 0) rc = posix_spawn_file_actions_adddup2(&fa, child_mem, kMemFd);
      if (rc == 0 && (rc = posix_spawnattr_init(&attr)) == 0) {
        rc = posix_spawnattr_setsigmask(&attr, &none);
        if (rc == 0) rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
        char arg0[] = "reduit-gpg";
        std::string arg1 = kGpgHelperArg;
        char* argv[] = {arg0, arg1.data(), nullptr};
        if (rc == 0) rc = ::posix_spawn(&pid, exe.c_str(), &fa, &attr, argv, environ);
        posix_spawnattr_destroy(&attr);
      }
      posix_spawn_file_actions_destroy(&fa);
    }
  }
  if (child_sock >= 0) ::close(child_sock);
  if (child_mem >= 0) ::close(child_mem);
  if (rc != 0) {
    ::close(sv[0]);
    ::close(memfd);
    return nullptr;
  }
  widen_buffers(sv[0]);
  return std::unique_ptr<GpgHelper>(new GpgHelper(pid, sv[0], memfd, gnupghome));
}

GpgHelper::GpgHelper(pid_t pid, int sock, int memfd, std::string gnupghome)
    : pid_(pid), sock_(sock), memfd_(memfd), gnupghome_(std::move(gnupghome)) {}

GpgHelper::~GpgHelper() {
  if (map_) ::munmap(map_, map_size_);
  ::close(sock_);  // the helper reads EOF and exits
  ::close(memfd_);
  int status;
  while (pid_ > 0 && ::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
}

void GpgHelper::fail(const std::string& what) {
  // The socket failed or the reply was not one: the helper has ended or is ending
  // (a dying process closes its descriptors before it can be waited for), or it
  // broke the protocol. Either way it is killed (no effect on one already exiting)
  // and waited for, so that the message says how it ended.
  const pid_t pid = pid_;
  pid_ = -1;
  ::kill(pid, SIGKILL);
  int status = 0;
  pid_t r;
  while ((r = ::waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
  }
  std::string how;
  if (r != pid)
    how = "could not be waited for (" + std::string(std::strerror(errno)) + ")";
  else if (WIFSIGNALED(status))
    how = "was killed by signal " + std::to_string(WTERMSIG(status));
  else
    how = "exited with status " + std::to_string(WEXITSTATUS(status));
  throw Error(ErrorCode::kInternal, "the gpg helper process (pid " + std::to_string(pid) + ") " + how +
                                        " while " + what + " (please report)");
}

std::span<std::uint8_t> GpgHelper::input(std::size_t size) {
  if (size > map_size_) {
    // An eighth to spare: packs end a message past their target.
    std::size_t grown = (size + size / 8 + 0xFFFF) & ~std::size_t{0xFFFF};
    void* p = MAP_FAILED;
    if (::ftruncate(memfd_, static_cast<off_t>(grown)) == 0)
      p = ::mmap(nullptr, grown, PROT_READ | PROT_WRITE, MAP_SHARED, memfd_, 0);
    if (p == MAP_FAILED) throw_errno("mapping the gpg helper's shared memory", errno);
    ::madvise(p, grown, MADV_DONTFORK);
    if (map_) {
      // The file keeps its contents; only the old view goes.
      ::munmap(map_, map_size_);
    }
    map_ = static_cast<std::uint8_t*>(p);
    map_size_ = grown;
  }
  return {map_, size};
}

Bytes GpgHelper::encrypt_sign(std::size_t size, const std::vector<std::string>& recipients,
                              const std::string& signer, Bytes out) {
  if (pid_ <= 0) throw Error(ErrorCode::kInternal, "the gpg helper process has ended");
  if (size > map_size_) throw Error(ErrorCode::kInternal, "gpg helper: input larger than its shared memory");
  std::string req;
  put_u(req, map_size_, 8);
  put_u(req, size, 8);
  put_u(req, 2 + recipients.size(), 4);
  auto add = [&](const std::string& s) {
    put_u(req, s.size(), 4);
    req += s;
  };
  add(gnupghome_);
  add(signer);
  for (const std::string& r : recipients) add(r);
  if (!write_all(sock_, req.data(), req.size())) fail("taking a request");
  std::uint8_t head[9];
  if (!read_all(sock_, head, sizeof head)) fail("encrypting");
  const std::uint8_t status = head[0];
  const std::uint64_t len = load_le(head + 1, 8);
  // An OpenPGP message without compression is its input plus headers, keys and a
  // signature (Crypto::encrypt_sign reserves input/4096 + 4 KiB more).
  if ((status != 0 && (!known_status(status) || len > kMaxString)) ||
      (status == 0 && len > size + size / 64 + (std::uint64_t{1} << 20)))
    fail("replying (status " + std::to_string(status) + ", length " + std::to_string(len) + ")");
  if (status != 0) {
    std::string message(len, '\0');
    if (!read_all(sock_, message.data(), message.size())) fail("replying");
    throw Error(static_cast<ErrorCode>(status), message);
  }
  out.clear();
  if (len > out.capacity()) out.reserve(len);
  out.resize(len);
  if (!read_all(sock_, out.data(), len)) fail("replying");
  return out;
}

}  // namespace reduit
