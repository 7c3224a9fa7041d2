// vault/direct_gpg.hpp — a pack's encrypt+sign (and decrypt+verify) by a gpg
// process reduit starts itself, reading and writing shared memory.
//
// Why not GPGME: GPGME 1.18 relays every byte between its data objects and gpg's
// pipes, and formats each 16 bytes it relays for its debug trace before it finds
// tracing off (src/debug.h: `_gpgme_debug_trace() 1`). In a first backup of
// 100,000 messages that relay was 13.6% of all CPU samples (3.9 CPU-s of 28.9),
// in a helper process started only so that gpg was not forked from the backup
// (docs/PERFORMANCE.md, stop 28). Here gpg's standard input is a memfd holding the
// pack's zstd frame and its standard output another memfd: gpg reads and writes
// them as files, and nothing is relayed. gpg is started with posix_spawn (glibc:
// clone with CLONE_VM | CLONE_VFORK), so no page table of the backup is copied and
// nothing in it is write-protected, unlike GPGME's fork().
//
// The command line is GPGME's for gpgme_op_encrypt_sign with
// GPGME_ENCRYPT_ALWAYS_TRUST | GPGME_ENCRYPT_NO_COMPRESS and loopback pinentry
// (engine-gpg.c gpg_encrypt_sign), with the keys Crypto::seal_keys checked, so the
// message is the one Crypto::encrypt_sign writes (docs/FORMAT.md §4). gpg's status
// lines (doc/DETAILS in GnuPG, "Format of the --status-fd output") and its standard
// error go to two more memfds, read when it has exited.
//
// Packs are opened the same way (decrypt_verify): restores and `check --read-data`
// take the plaintext from gpg's output memfd when its status lines show a good,
// integrity-protected message signed by the agent key, and hand everything else to
// Crypto::decrypt_verify (GPGME), whose checks and messages decide; the direct path
// never accepts what GPGME's would refuse.
//
// Errors of encrypt_sign: INV_RECP and INV_SGNR give kKey naming the key and gpg's
// reason; NEED_PASSPHRASE on a failed run gives kKey; any other failure (gpg exits
// non-zero, is killed, or exits 0 without SIG_CREATED and END_ENCRYPTION) gives
// kInternal with gpg's pid, how it ended and its failure line. Nothing is written
// anywhere but the memfds.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "vault/bytes.hpp"
#include "vault/crypto.hpp"

namespace reduit {

/// Shared memory for one thread's packs and the gpg runs that seal or open them;
/// used by one thread at a time.
class DirectGpg {
 public:
  /// Ready to run `program` (default: Crypto::gpg_program()); null when the
  /// memfds cannot be made (the caller then seals through GPGME).
  static std::unique_ptr<DirectGpg> start(std::string program = std::string());
  ~DirectGpg();
  DirectGpg(const DirectGpg&) = delete;
  DirectGpg& operator=(const DirectGpg&) = delete;

  /// Shared memory for the next request's input: a view of `size` bytes (the
  /// mapping grows when smaller, with an eighth to spare; what it held before is
  /// then unspecified). Valid until the next call of input() or encrypt_sign().
  /// Throws kIo when the memory cannot be grown (ftruncate or mmap fails).
  std::span<std::uint8_t> input(std::size_t size);

  /// Encrypts the first `size` bytes (at most the last input()'s size) of the
  /// shared memory to `keys.recipients` and signs them with `keys.signer`, in
  /// `keys.gnupghome`: one OpenPGP message (RFC 4880 §11.3), as
  /// Crypto::encrypt_sign writes it, in `out` (cleared first; its pages are
  /// reused). Throws kKey when gpg refuses a key (INV_RECP, INV_SGNR), kIo when the
  /// shared memory fails, kInternal when gpg cannot be started or fails otherwise.
  Bytes encrypt_sign(std::size_t size, const SealKeys& keys, Bytes out);

  /// Decrypts and verifies `stored` (an OpenPGP message, RFC 4880 §11.3) with the
  /// keys in `gnupghome`, copied into the shared memory first. Returns the
  /// plaintext only when gpg exited 0 and its status lines show all of:
  /// DECRYPTION_OKAY and END_DECRYPTION, integrity protection (DECRYPTION_INFO with
  /// an MDC or AEAD), no BADMDC or DECRYPTION_FAILED, one literal packet
  /// (PLAINTEXT), and exactly one signature, good (one NEWSIG, one GOODSIG, no other
  /// signature status), whose VALIDSIG names `expected_signer` (a primary
  /// fingerprint) as its primary key. Anything else gives nullopt, and the caller
  /// asks Crypto::decrypt_verify, whose checks and messages say what is wrong: a
  /// fast path for the common case, never a second opinion that accepts more.
  /// Throws kIo when the shared memory fails, kInternal when gpg cannot be started.
  std::optional<Bytes> decrypt_verify(std::span<const std::uint8_t> stored, const std::string& gnupghome,
                                      const std::string& expected_signer);

  /// The pid of the last gpg started (for tests and diagnostics; 0 before any).
  pid_t last_pid() const { return last_pid_; }

 private:
  DirectGpg(std::string program, int in, int out, int status, int log);
  // Runs gpg with `args` (argv[0] first) on the first `size` bytes of the input
  // memfd; returns the wait status, gpg's status lines and its standard error.
  struct Run {
    pid_t pid;
    int wstatus;
    std::string status, log;
  };
  Run run(std::vector<std::string> args, std::size_t size);
  std::size_t output_length(pid_t pid) const;
  void read_output(std::size_t len, Bytes& out) const;

  std::string program_;
  int in_, out_, status_, log_;  // memfds: gpg's stdin, stdout, --status-fd and stderr
  std::uint8_t* map_ = nullptr;  // of in_
  std::size_t map_size_ = 0;
  std::size_t in_size_ = 0;  // in_'s file size
  pid_t last_pid_ = 0;
};

}  // namespace reduit
