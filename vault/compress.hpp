// vault/compress.hpp — zstd (RFC 8878) frames for packs and metadata objects.
#pragma once

#include <cstdint>
#include <span>

#include "vault/transport.hpp"  // Bytes

namespace reduit {

/// One zstd frame holding `data`, content size recorded in the frame header.
/// `level` 1..19 (reduit default 3; PLATFORM.md has ratios and speeds on mail).
Bytes zstd_compress(const Bytes& data, int level);

/// The same frame, in this thread's scratch buffer: the view is valid until this
/// thread's next zstd_compress or zstd_compress_view (no allocation and no copy
/// for a frame that goes straight to gpg, as a pack's does).
std::span<const std::uint8_t> zstd_compress_view(std::span<const std::uint8_t> data, int level);

/// Frees this thread's scratch buffer (zstd_compress_view), for a thread that will
/// compress elsewhere from now on; the next zstd_compress_view allocates it again.
void zstd_release_scratch();

/// Bytes this thread's scratch buffer holds (0 before the first
/// zstd_compress_view and after zstd_release_scratch).
std::size_t zstd_scratch_bytes();

/// The same frame, written into `out`, which must hold zstd_bound(data.size())
/// bytes (Error kInternal otherwise); returns the frame's length.
std::size_t zstd_compress_into(std::span<const std::uint8_t> data, int level, std::span<std::uint8_t> out);

/// The largest frame zstd_compress_into can write for `size` bytes of input
/// (ZSTD_compressBound).
std::size_t zstd_bound(std::size_t size);

/// Decompresses one frame. `max_size` bounds the output (defends against a
/// hostile frame claiming terabytes). Throws Error(kVerify) on a corrupt frame.
Bytes zstd_decompress(const Bytes& frame, std::size_t max_size = std::size_t(1) << 32);

}  // namespace reduit
