// vault/pack_filter.hpp — the base64 filter of data packs (docs/FORMAT.md §5.1).
//
// A third of mail is attachments, and MIME carries them as base64 (RFC 2045 §6.8)
// in lines of 76 characters: 6 bits of data per 8-bit character plus a line end.
// zstd stores such text at about 0.754 of its size and slowly (every character a
// Huffman-coded literal); the bytes it encodes, 0.731 of it with CR LF line ends,
// are what is worth storing. The filter replaces each run of regular base64 lines in a data pack's
// plaintext with the bytes it encodes, moved behind the rest of the text, plus a
// table to write the lines again; it is exact: the writer takes only runs whose
// encoding it would write again byte for byte (one line length, one line end,
// canonical padding), and a reader restores the pack plaintext bit for bit before
// parsing it, and checks every blob against its HMAC id as always.
#pragma once

#include <cstddef>
#include <cstdint>

#include "vault/bytes.hpp"

namespace reduit {

/// First 8 bytes of a filtered pack plaintext (in place of "RDPACK01").
inline constexpr char kFilteredPackMagic[] = "RDPACKF1";

/// Rewrites the pack plaintext `pack` (as PackWriter::finish returns it) in place
/// into its filtered form (FORMAT.md §5.1) when it holds at least one base64 run of
/// kMinBase64Run bytes or more; returns the number of runs (0: `pack` unchanged).
/// The filtered form is always shorter than the plaintext, so `pack` keeps its
/// buffer. `scratch` is working space and must be another buffer than `pack` (its
/// contents are overwritten, its capacity reused: a sealer passes a buffer it is
/// done with). A run starts with a full line: a base64 block of one padded line is
/// left as text. Linear in the pack size. Throws std::bad_alloc when `scratch`
/// cannot grow, and kInternal should the form not be shorter (it always is); `pack`
/// is then unspecified.
std::size_t filter_pack(Bytes& pack, Bytes& scratch);

/// Runs shorter than this (encoded bytes, line ends included) stay text: each
/// costs a 19-byte table entry.
inline constexpr std::size_t kMinBase64Run = 256;

/// Whether `plaintext` (a decompressed pack) is in the filtered form.
bool is_filtered_pack(const Bytes& plaintext);

/// The pack plaintext that `filtered` was made from, byte for byte. Every length
/// and offset is checked before use: throws Error(kVerify) naming what is wrong
/// for a truncated or inconsistent table, a run outside the plaintext, a line
/// length that is not a multiple of 4 in 4..996, or a line end other than 1 (LF)
/// or 2 (CR LF).
Bytes unfilter_pack(const Bytes& filtered);

}  // namespace reduit
