// vault/gpg_helper.hpp — a pack's encrypt+sign run by a small helper process, so
// that gpg is forked from it and not from the backup process.
//
// Why: GPGME starts one gpg process per pack with fork(). A fork write-protects
// every private page of the process that forks, and each later write to one of
// them takes a page fault. In a backup that is the whole heap of the scanning,
// reading and sealing threads, after every pack: 10% of a first backup's CPU
// samples were in do_wp_page, and about as many again in the fault entry
// (docs/PERFORMANCE.md, "gpg forked from a helper process"). A helper is started
// with posix_spawn (no page tables copied) of the reduit binary, stays small, and
// forks gpg from there; reduit then forks nothing per pack.
//
// One helper serves one sealing thread, one request at a time. The pack's zstd
// frame goes in through shared memory (a memfd both map), which the caller
// compresses into; the OpenPGP message comes back over a Unix socket into the
// caller's buffer. The helper runs the same Crypto::encrypt_sign (GPGME, one gpg
// process per pack), so the stored objects are the same (docs/FORMAT.md §4).
// Restores are not changed: opening packs through a helper measured no faster
// (their faults are on fresh buffers, not after forks) and slower for one mailbox
// (docs/PERFORMANCE.md).
//
// Errors: the helper's reduit::Error comes back with its code and message (kKey
// and the others Crypto::encrypt_sign documents); a helper that dies or breaks
// the protocol gives kInternal naming its pid and how it ended, and is not used
// again.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "vault/bytes.hpp"

namespace reduit {

/// argv[1] with which the reduit binary runs as a gpg helper (agent/main.cpp).
inline constexpr const char* kGpgHelperArg = "--internal-gpg-helper";

/// Lets GpgHelper::start spawn helpers: `exe` (default: the running executable)
/// must be a binary whose main() returns gpg_helper_main() when argv[1] is
/// kGpgHelperArg. The reduit binary does; test binaries do not, and so run gpg
/// in-process unless a test names the reduit binary here. "" disables helpers.
void enable_gpg_helpers(const std::string& exe = "/proc/self/exe");

/// The helper's main loop, on fd 3 (the socket) and fd 4 (the memfd); returns the
/// process exit status (0 when the caller closed the socket, 1 on a broken request).
int gpg_helper_main();

/// One helper process and its shared memory; used by one thread at a time.
class GpgHelper {
 public:
  /// A running helper using the keys in `gnupghome`; null when helpers are not
  /// enabled or the helper cannot be started (the caller then uses a Crypto).
  static std::unique_ptr<GpgHelper> start(const std::string& gnupghome);
  ~GpgHelper();  // closes the socket, so the helper exits; waits for it
  GpgHelper(const GpgHelper&) = delete;
  GpgHelper& operator=(const GpgHelper&) = delete;

  /// Shared memory for the next request's input: a view of `size` bytes (the
  /// mapping grows when smaller, with an eighth to spare; what it held before is
  /// then unspecified). Valid until the next call of input(). Throws kIo when the
  /// memory cannot be grown (ftruncate or mmap fails).
  std::span<std::uint8_t> input(std::size_t size);

  /// Crypto::encrypt_sign of the first `size` bytes (at most the last input()'s
  /// size) of the shared memory: the OpenPGP message (RFC 4880 §11.3) is written
  /// into `out` (cleared first; its pages are reused) and returned. Throws what
  /// Crypto::encrypt_sign throws (kKey for a missing or unusable key), and kInternal
  /// when the helper dies, breaks the protocol or has ended.
  Bytes encrypt_sign(std::size_t size, const std::vector<std::string>& recipients, const std::string& signer,
                     Bytes out);

  /// The helper's process id (for tests and diagnostics).
  pid_t pid() const { return pid_; }

 private:
  GpgHelper(pid_t pid, int sock, int memfd, std::string gnupghome);
  [[noreturn]] void fail(const std::string& what);

  pid_t pid_;
  int sock_;
  int memfd_;
  std::string gnupghome_;
  std::uint8_t* map_ = nullptr;
  std::size_t map_size_ = 0;
};

}  // namespace reduit
