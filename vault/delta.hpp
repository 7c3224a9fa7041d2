// vault/delta.hpp — librsync deltas for files that change in place (Dovecot control
// and index files, mbox files) and the two blob types that carry them
// (docs/FORMAT.md §4.1 delta blob, §4.2 signature blob; §7 tree "delta"/"signature").
//
// librsync 2.3 (librsync.h; the "streaming API": rs_sig_begin, rs_loadsig_begin +
// rs_build_hash_table, rs_delta_begin, rs_patch_begin, each cranked with
// rs_job_iter over rs_buffers_t). Every signature reduit writes uses
// RS_RK_BLAKE2_SIG_MAGIC (RabinKarp rolling sum, BLAKE2b strong sum) with the full
// 32-byte strong sum: the agent computes a delta from a signature alone, never
// seeing the old bytes, so a strong-sum collision would silently store a wrong
// delta; 32 bytes make that infeasible even for crafted mail.
//
// A delta chain: a kFile blob (the "base", a full copy) and kDelta blobs, each
// naming its basis (the previous version: the base or another delta) and the
// SHA-256 and size of both the basis and the version it produces. Rebuilding walks
// from the head to the base, then patches forward one link at a time through
// scratch files, checking every intermediate version's size and SHA-256.
//
// Errors: every decoder and the patcher throw Error(kVerify) on malformed, hostile
// or mismatching input (bad magic, truncated header, a COPY outside the basis,
// output longer or shorter than announced, a wrong SHA-256, a chain whose depths do
// not count down to 1, a basis of the wrong blob type). Local file failures throw
// kIo. Nothing here writes anywhere but the descriptors and scratch directory given.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "vault/format.hpp"
#include "vault/hash.hpp"

struct rs_signature;

namespace reduit {

/// Largest librsync block length reduit uses. librsync recommends sqrt(size)
/// (14,080 bytes for 200 MB); an appended mbox message then also re-sends the old
/// tail block. 4 KiB bounds that to < 4 KiB per change for a signature of
/// 36 bytes per 4 KiB (0.9% of the file).
inline constexpr std::size_t kMaxDeltaBlockLen = 4096;

/// Longest chain any reader accepts (a hostile chain cannot make a restore loop).
inline constexpr std::uint32_t kMaxDeltaDepth = 1024;

/// The fixed part of a delta blob (FORMAT.md §4.1), all integers little-endian.
struct DeltaHeader {
  Hash basis{};                   // blob id of the basis version (kFile at depth 1, else kDelta)
  Hash basis_sha256{};            // SHA-256 of the basis version's whole content
  std::uint64_t basis_size = 0;   // bytes
  Hash target_sha256{};           // SHA-256 of the version this delta produces
  std::uint64_t target_size = 0;  // bytes
  std::uint32_t depth = 0;        // links from the base: 1 when `basis` is a full copy
};
inline constexpr std::size_t kDeltaHeaderSize = 8 + 32 + 32 + 8 + 32 + 8 + 4;  // 124

/// The fixed part of a signature blob (FORMAT.md §4.2).
struct SignatureHeader {
  Hash file{};             // blob id of the kFile blob (the chain's base) it describes
  Hash sha256{};           // SHA-256 of that content
  std::uint64_t size = 0;  // bytes
};
inline constexpr std::size_t kSignatureHeaderSize = 8 + 32 + 32 + 8;  // 80

/// Delta blob bytes: the header, then a librsync delta stream (RS_DELTA_MAGIC).
std::string encode_delta_blob(const DeltaHeader& h, std::string_view rs_delta);
/// Parses a delta blob; `rs_delta` (optional) receives the stream after the header.
/// Throws kVerify on bad magic, a short blob, depth 0 or > kMaxDeltaDepth.
DeltaHeader decode_delta_blob(std::string_view blob, std::string_view* rs_delta = nullptr);

/// Signature blob bytes: the header, then a librsync signature stream.
std::string encode_signature_blob(const SignatureHeader& h, std::string_view rs_signature);
/// Parses a signature blob; throws kVerify on bad magic or a short blob, or when
/// the stream is not an RS_RK_BLAKE2_SIG_MAGIC signature.
SignatureHeader decode_signature_blob(std::string_view blob, std::string_view* rs_signature = nullptr);

/// The librsync signature of `data` (RS_RK_BLAKE2_SIG_MAGIC, block length
/// min(rs_sig_args' recommendation, kMaxDeltaBlockLen), 32-byte strong sums).
/// Size ≈ 12 + 36 bytes per block.
std::string make_signature(std::string_view data);

/// A signature loaded and hashed for delta computation (rs_loadsig_begin +
/// rs_build_hash_table). Throws kVerify when `rs_signature` does not parse.
class LoadedSignature {
 public:
  explicit LoadedSignature(std::string_view rs_signature);
  ~LoadedSignature();
  LoadedSignature(const LoadedSignature&) = delete;
  LoadedSignature& operator=(const LoadedSignature&) = delete;
  rs_signature* get() const { return sig_; }

 private:
  rs_signature* sig_ = nullptr;
};

/// The librsync delta stream that turns the version `sig` describes into `target`.
std::string make_delta(const LoadedSignature& sig, std::string_view target);

/// Applies `rs_delta` to the basis read from `basis_fd` (`basis_size` bytes; read
/// with pread, the offset is not used) and writes the result to `out_fd` from its
/// current offset. Throws kVerify when the stream is corrupt, copies outside the
/// basis, or produces other than exactly `target_size` bytes with SHA-256
/// `target_sha256` (checked while writing: a hostile stream cannot write more
/// than `target_size` bytes). kIo on read/write failures.
void apply_delta(int basis_fd, std::uint64_t basis_size, std::string_view rs_delta, int out_fd,
                 std::uint64_t target_size, const Hash& target_sha256);

/// Returns the bytes of blob `id`, which the caller has checked against `id` (HMAC)
/// and whose type must be `type` (throw kVerify otherwise). The view must stay
/// valid until the next call.
using BlobFetch = std::function<std::string_view(const Hash& id, BlobType type)>;

struct ChainInfo {
  std::uint32_t depth = 0;        // links patched (0 when `head` is a full copy)
  std::uint64_t base_bytes = 0;   // size of the base
  std::uint64_t delta_bytes = 0;  // sum of the delta blobs' sizes
  std::vector<Hash> chain;        // the blobs the head was patched from, base first
};

/// Rebuilds the version whose delta blob is `head` into `out_fd` (from its current
/// offset): fetches the chain back to its base, then patches forward through two
/// unlinked scratch files created in `scratch_dir`. Every link's basis and result
/// are checked (size and SHA-256 from the delta headers), and depths must count
/// down by exactly one to 1. Throws kVerify on any mismatch, kIo on local errors.
ChainInfo rebuild_delta_chain(const Hash& head, const BlobFetch& fetch, int out_fd,
                              const std::string& scratch_dir);

}  // namespace reduit
