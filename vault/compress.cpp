#include "vault/compress.hpp"

#include <zstd.h>

#include <memory>

#include "vault/error.hpp"

namespace reduit {

namespace {
constexpr int kWindowLog = 24;  // 16 MiB: the default pack size (FORMAT.md §2)

// Storage from Bytes' allocator, not value-initialised (a vector's resize() would
// write every page of it).
struct Scratch {
  std::uint8_t* data = nullptr;
  std::size_t size = 0;
  void grow(std::size_t n) {
    std::uint8_t* p = LargeBufferAllocator<std::uint8_t>().allocate(n);
    release();
    data = p;
    size = n;
  }
  void release() {
    if (data) LargeBufferAllocator<std::uint8_t>().deallocate(data, size);
    data = nullptr;
    size = 0;
  }
  ~Scratch() { release(); }
};
}  // namespace

std::size_t zstd_compress_into(std::span<const std::uint8_t> data, int level, std::span<std::uint8_t> out) {
  // One context per thread, reused: its tables are allocated once.
  thread_local std::unique_ptr<ZSTD_CCtx, decltype(&ZSTD_freeCCtx)> cctx(ZSTD_createCCtx(), &ZSTD_freeCCtx);
  if (out.size() < ZSTD_compressBound(data.size()))
    throw Error(ErrorCode::kInternal, "zstd: output buffer smaller than ZSTD_compressBound");
  // Levels 1–19 keep a window of 0.5–8 MiB for large inputs; a 16 MiB pack then
  // cannot match a header against those early in the pack. The window is widened
  // to 16 MiB, the default pack target (zstd shrinks it to a smaller input's
  // size; a larger pack still compresses, matching within 16 MiB). No cost to reduit's
  // readers, which decode a frame in one piece (no window buffer); libzstd, and so
  // the zstd CLI, accepts windows up to 128 MiB by default (RFC 8878 §3.1.1.1.2
  // has the window descriptor).
  std::size_t n = ZSTD_CCtx_reset(cctx.get(), ZSTD_reset_session_and_parameters);
  if (!ZSTD_isError(n)) n = ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_compressionLevel, level);
  if (!ZSTD_isError(n)) n = ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_windowLog, kWindowLog);
  if (!ZSTD_isError(n)) n = ZSTD_compress2(cctx.get(), out.data(), out.size(), data.data(), data.size());
  if (ZSTD_isError(n)) {
    throw Error(ErrorCode::kInternal, std::string("zstd: ") + ZSTD_getErrorName(n));
  }
  return n;
}

std::size_t zstd_bound(std::size_t size) { return ZSTD_compressBound(size); }

// A per-thread scratch buffer, reused: no fresh pages per pack, and a large
// buffer is kept out of gpg's forks (vault/bytes.hpp). The buffer is never
// zero-filled: only the pages zstd writes are ever resident. It grows with an
// eighth to spare, since packs end a message past their target.
static thread_local Scratch scratch;

void zstd_release_scratch() { scratch.release(); }

std::size_t zstd_scratch_bytes() { return scratch.size; }

std::span<const std::uint8_t> zstd_compress_view(std::span<const std::uint8_t> data, int level) {
  std::size_t bound = ZSTD_compressBound(data.size());
  if (bound > scratch.size) scratch.grow(bound + bound / 8);
  return {scratch.data, zstd_compress_into(data, level, {scratch.data, bound})};
}

Bytes zstd_compress(const Bytes& data, int level) {
  std::span<const std::uint8_t> frame = zstd_compress_view(data, level);
  return Bytes(frame.begin(), frame.end());
}

Bytes zstd_decompress(const Bytes& frame, std::size_t max_size) {
  unsigned long long size = ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN) {
    throw Error(ErrorCode::kVerify, "corrupt zstd frame (no content size)");
  }
  if (size > max_size) {
    throw Error(ErrorCode::kVerify,
                "zstd frame claims " + std::to_string(size) + " bytes, more than the limit");
  }
  Bytes out(size);
  std::size_t n = ZSTD_decompress(out.data(), out.size(), frame.data(), frame.size());
  if (ZSTD_isError(n) || n != size) {
    throw Error(ErrorCode::kVerify,
                std::string("corrupt zstd frame: ") + (ZSTD_isError(n) ? ZSTD_getErrorName(n) : "short"));
  }
  return out;
}

}  // namespace reduit
