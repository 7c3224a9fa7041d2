// vault/seal_helper.hpp — encrypt+sign of packs in a small helper process, so that
// gpg is forked from it and not from the backup process.
//
// Why: GPGME starts one gpg process per pack with fork(). A fork write-protects
// every private page of the process that forks; each later write to one of them
// takes a page fault. In a backup that is the whole heap of the scanning, reading
// and sealing threads, after every pack: 10% of a first backup's CPU samples were
// in do_wp_page alone, and as much again in the fault entry (docs/PERFORMANCE.md,
// "gpg forked from a helper"). A helper is started with posix_spawn (no page-table
// copy) of the running binary, stays small, and forks gpg from there; the backup
// process then forks nothing per pack.
//
// One helper serves one sealing thread, one request at a time. The pack's zstd
// frame goes in through a shared memory file (memfd) that the caller compresses
// into; the OpenPGP message comes back over a Unix socket, read straight into the
// caller's buffer. The helper runs the same Crypto::encrypt_sign as a sealer
// without one (GPGME, one gpg process per pack), so the stored objects are the
// same (docs/FORMAT.md §4).
//
// Errors: encrypt_sign rethrows the helper's reduit::Error with its code (kKey for
// a missing or unusable key, ...); a helper that dies or breaks the protocol gives
// kInternal naming its pid and exit status.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "vault/bytes.hpp"

namespace reduit {

/// argv[1] with which the reduit binary runs as a seal helper (agent/main.cpp).
inline constexpr const char* kSealHelperArg = "--internal-seal-helper";

/// Lets SealHelper::start spawn helpers: `exe` (default: the running executable)
/// must be a binary whose main() calls seal_helper_main() when argv[1] is
/// kSealHelperArg. The reduit binary does; test binaries do not, and seal
/// in-process unless a test names the reduit binary here.
void enable_seal_helpers(const std::string& exe = "/proc/self/exe");

/// The helper's main loop, on fd 3 (the socket) and fd 4 (the memfd); returns the
/// process exit status (0 when the caller closed the socket).
int seal_helper_main();

class SealHelper {
 public:
  /// A running helper for keys in `gnupghome`; null when helpers are not enabled
  /// or the helper cannot be started (the caller then seals in-process).
  static std::unique_ptr<SealHelper> start(const std::string& gnupghome);
  ~SealHelper();  // closes the socket; the helper exits; waits for it
  SealHelper(const SealHelper&) = delete;
  SealHelper& operator=(const SealHelper&) = delete;

  /// The helper's process id (for tests and diagnostics).
  pid_t pid() const { return pid_; }

  /// Shared memory for the next request's input, at least `size` bytes (grown when
  /// smaller; the contents are kept only up to the old size). Valid until the next
  /// call of input() or encrypt_sign().
  std::span<std::uint8_t> input(std::size_t size);

  /// Encrypts the first `size` bytes of input() to `recipients` and signs them
  /// with `signer`, exactly as Crypto::encrypt_sign; the OpenPGP message is
  /// written into `out` (cleared first, its pages reused).
  Bytes encrypt_sign(std::size_t size, const std::vector<std::string>& recipients,
                     const std::string& signer, Bytes out);

 private:
  SealHelper(pid_t pid, int sock, int memfd, std::string gnupghome);
  [[noreturn]] void fail(const std::string& what);

  pid_t pid_;
  int sock_;
  int memfd_;
  std::string gnupghome_;
  std::uint8_t* map_ = nullptr;
  std::size_t map_size_ = 0;
};

}  // namespace reduit
