#include "vault/pack_filter.hpp"

#include <cstring>
#include <string>
#include <vector>

#include "vault/error.hpp"

namespace reduit {

namespace {

constexpr char kPackMagic[] = "RDPACK01";
constexpr std::size_t kMagicSize = 8;
constexpr std::size_t kRunEntrySize = 19;  // offset u64, decoded bytes u64, line u16, line end u8
constexpr std::size_t kTrailerSize = 16;   // runs u64, plaintext bytes u64
constexpr std::size_t kMinLine = 16;       // the shortest full line that starts a run
// RFC 5322 §2.1.1: at most 998 characters before CR LF; full lines are whole groups of 4.
constexpr std::size_t kMaxLine = 996;

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// Character → 6-bit value; 0xff for anything outside the alphabet ('=' included).
struct DecodeTable {
  std::uint8_t v[256];
  constexpr DecodeTable() : v() {
    for (std::uint8_t& x : v) x = 0xff;
    for (int i = 0; i < 64; ++i) v[static_cast<unsigned char>(kAlphabet[i])] = static_cast<std::uint8_t>(i);
  }
};
constexpr DecodeTable kDecode;

struct Run {
  std::uint64_t offset;   // in the pack plaintext
  std::uint64_t decoded;  // bytes
  std::uint16_t line;     // characters per full line
  std::uint8_t eol;       // 1 LF, 2 CR LF
};

[[noreturn]] void malformed(const std::string& what) {
  throw Error(ErrorCode::kVerify, "filtered pack: " + what + " (corrupt or forged)");
}

// Decodes `n` characters (a multiple of 4, no padding) into 3n/4 bytes at `out`;
// false when one is outside the alphabet (`out` then holds garbage).
bool decode_groups(const std::uint8_t* s, std::size_t n, std::uint8_t* out) {
  std::uint32_t bad = 0;
  for (std::size_t i = 0; i < n; i += 4, out += 3) {
    std::uint32_t a = kDecode.v[s[i]], b = kDecode.v[s[i + 1]], c = kDecode.v[s[i + 2]],
                  d = kDecode.v[s[i + 3]];
    bad |= a | b | c | d;
    std::uint32_t w = a << 18 | b << 12 | c << 6 | d;
    out[0] = static_cast<std::uint8_t>(w >> 16);
    out[1] = static_cast<std::uint8_t>(w >> 8);
    out[2] = static_cast<std::uint8_t>(w);
  }
  return bad < 64;
}

// The last line of a run (`n` characters, a multiple of 4): its final group may end
// in "=" or "==", with the unused bits zero (RFC 4648 §3.5: canonical, so that
// writing the bytes again gives these characters). Returns the bytes decoded, or -1.
long decode_last(const std::uint8_t* s, std::size_t n, std::uint8_t* out) {
  if (n < 4) return -1;
  std::size_t pad = s[n - 1] != '=' ? 0 : s[n - 2] != '=' ? 1 : 2;
  if (pad == 0) return decode_groups(s, n, out) ? static_cast<long>(n / 4 * 3) : -1;
  if (!decode_groups(s, n - 4, out)) return -1;
  const std::uint8_t* g = s + n - 4;
  std::uint32_t a = kDecode.v[g[0]], b = kDecode.v[g[1]];
  if ((a | b) > 63) return -1;
  std::uint8_t* o = out + (n - 4) / 4 * 3;
  if (pad == 2) {
    if (b & 0x0f) return -1;
    o[0] = static_cast<std::uint8_t>(a << 2 | b >> 4);
  } else {
    std::uint32_t c = kDecode.v[g[2]];
    if (c > 63 || (c & 0x03)) return -1;
    o[0] = static_cast<std::uint8_t>(a << 2 | b >> 4);
    o[1] = static_cast<std::uint8_t>((b & 0x0f) << 4 | c >> 2);
  }
  return static_cast<long>((n - 4) / 4 * 3 + 3 - pad);
}

// Bytes of a run of `n` decoded bytes written in lines of `line` characters, each
// line (the last too) ended by `eol` bytes.
std::uint64_t encoded_length(std::uint64_t n, std::uint64_t line, std::uint64_t eol) {
  std::uint64_t chars = (n + 2) / 3 * 4;
  return chars + (chars + line - 1) / line * eol;
}

// 12 bits → their two characters: two look-ups per 3 bytes instead of four.
struct PairTable {
  char v[4096][2];
  constexpr PairTable() : v() {
    for (int i = 0; i < 4096; ++i) {
      v[i][0] = kAlphabet[i >> 6];
      v[i][1] = kAlphabet[i & 63];
    }
  }
};
constexpr PairTable kPairs;

// Writes `groups` whole groups (3 bytes → 4 characters) from `d` to `o`.
std::uint8_t* encode_groups(const std::uint8_t* d, std::size_t groups, std::uint8_t* o) {
  for (; groups > 0; --groups, d += 3, o += 4) {
    std::uint32_t w = std::uint32_t{d[0]} << 16 | std::uint32_t{d[1]} << 8 | d[2];
    std::memcpy(o, kPairs.v[w >> 12], 2);
    std::memcpy(o + 2, kPairs.v[w & 4095], 2);
  }
  return o;
}

std::uint8_t* encode_run(const std::uint8_t* d, std::uint64_t n, std::size_t line, std::size_t eol,
                         std::uint8_t* o) {
  auto end_line = [&] {
    if (eol == 2) *o++ = '\r';
    *o++ = '\n';
  };
  const std::size_t per_line = line / 4 * 3;  // bytes per full line
  for (; n >= per_line; n -= per_line, d += per_line) {
    o = encode_groups(d, line / 4, o);
    end_line();
  }
  if (n == 0) return o;
  o = encode_groups(d, n / 3, o);
  d += n / 3 * 3;
  if (std::uint64_t rem = n % 3) {
    std::uint32_t w = std::uint32_t{d[0]} << 16 | (rem == 2 ? std::uint32_t{d[1]} << 8 : 0);
    o[0] = kAlphabet[w >> 18];
    o[1] = kAlphabet[(w >> 12) & 63];
    o[2] = rem == 2 ? kAlphabet[(w >> 6) & 63] : '=';
    o[3] = '=';
    o += 4;
  }
  end_line();
  return o;
}

}  // namespace

std::size_t filter_pack(Bytes& pack, Bytes& scratch) {
  const std::size_t size = pack.size();
  if (size < kMagicSize || std::memcmp(pack.data(), kPackMagic, kMagicSize) != 0) return 0;
  // Every 4 characters decode to 3 bytes, so the decoded bytes never pass 3/4 of
  // the pack. Reserved, not resized: only the pages written become resident (a
  // sealer's scratch is the buffer gpg writes the sealed pack into next). A scratch
  // of half the pack is used as it is, and grows if more is decoded: a sealer's is
  // the last sealed pack's buffer, about a pack's compressed size, and reserving
  // 3/4 of the pack replaced it with a new mapping for 42 of the 115 packs of a
  // 100,000-message first backup.
  scratch.clear();
  if (scratch.capacity() < size / 2) scratch.reserve(size / 4 * 3);
  std::uint8_t* const base = pack.data();
  std::vector<Run> runs;
  std::size_t pos = kMagicSize;        // start of the line looked at
  std::size_t text_from = kMagicSize;  // text not yet moved down
  std::size_t w = kMagicSize;          // where the text is moved to
  // Decoded lines are gathered here and appended to `scratch` a batch at a time.
  constexpr std::size_t kBatch = 32 * 1024;
  std::uint8_t batch[kBatch];
  std::size_t held = 0;
  auto flush = [&] {
    append_bytes(scratch, batch, held);
    held = 0;
  };

  // The line at `at`: its characters (line end excluded) and the line end's bytes;
  // false when no LF follows.
  auto line_at = [&](std::size_t at, std::size_t& chars, std::size_t& eol) {
    const void* nl = std::memchr(base + at, '\n', size - at);
    if (!nl) return false;
    chars = static_cast<std::size_t>(static_cast<const std::uint8_t*>(nl) - (base + at));
    eol = chars > 0 && base[at + chars - 1] == '\r' ? 2 : 1;
    chars -= eol - 1;
    return true;
  };
  // Room in `batch` for one more line; the line decodes there and is kept by
  // advancing `held`.
  auto room = [&] {
    if (held > kBatch - kMaxLine / 4 * 3) flush();
    return batch + held;
  };

  while (pos < size) {
    std::size_t len = 0, eol = 0;
    if (!line_at(pos, len, eol)) break;
    const std::size_t next = pos + len + eol;
    if (len < kMinLine || len > kMaxLine || len % 4 != 0 || !decode_groups(base + pos, len, room())) {
      pos = next;
      continue;
    }
    // A run: full lines of `len` characters ended alike, then perhaps one shorter
    // or padded last line.
    const std::size_t run_from = scratch.size() + held;
    held += len / 4 * 3;
    std::size_t run_end = next;
    while (run_end < size) {
      std::size_t m = 0, e = 0;
      if (!line_at(run_end, m, e) || e != eol) break;
      if (m == len && decode_groups(base + run_end, m, room())) {
        held += m / 4 * 3;
        run_end += m + e;
        continue;
      }
      if (m <= len && m % 4 == 0) {
        long k = decode_last(base + run_end, m, room());
        if (k >= 0) {
          held += static_cast<std::size_t>(k);
          run_end += m + e;
        }
      }
      break;
    }
    if (run_end - pos >= kMinBase64Run) {
      std::memmove(base + w, base + text_from, pos - text_from);
      w += pos - text_from;
      runs.push_back(Run{pos, scratch.size() + held - run_from, static_cast<std::uint16_t>(len),
                         static_cast<std::uint8_t>(eol)});
      text_from = run_end;
      pos = run_end;  // the line that ended the run may start the next one
      continue;
    }
    // Too short: text after all. Its second line may still start a run (a longer
    // first line, then a block of shorter ones); each trial spans under 256 bytes.
    if (run_from >= scratch.size()) {
      held = run_from - scratch.size();
    } else {
      scratch.resize(run_from);
      held = 0;
    }
    pos = next;
  }
  if (runs.empty()) return 0;
  flush();

  std::memmove(base + w, base + text_from, size - text_from);
  w += size - text_from;
  // Each run of 256 or more characters decodes to at most 3/4 of them: 64 bytes or
  // more saved against its 19-byte entry, so all of it fits in the pack's buffer.
  const std::size_t d = scratch.size();
  if (w + d + runs.size() * kRunEntrySize + kTrailerSize > size) {
    throw Error(ErrorCode::kInternal, "filter_pack: the filtered form would not be shorter");
  }
  std::memcpy(base + w, scratch.data(), d);
  w += d;
  for (const Run& r : runs) {
    store_le(base + w, r.offset, 8);
    store_le(base + w + 8, r.decoded, 8);
    store_le(base + w + 16, r.line, 2);
    base[w + 18] = r.eol;
    w += kRunEntrySize;
  }
  store_le(base + w, runs.size(), 8);
  store_le(base + w + 8, size, 8);
  w += kTrailerSize;
  std::memcpy(base, kFilteredPackMagic, kMagicSize);
  pack.resize(w);
  return runs.size();
}

bool is_filtered_pack(const Bytes& plaintext) {
  return plaintext.size() >= kMagicSize && std::memcmp(plaintext.data(), kFilteredPackMagic, kMagicSize) == 0;
}

Bytes unfilter_pack(const Bytes& f) {
  if (f.size() < kMagicSize + kTrailerSize || !is_filtered_pack(f)) malformed("bad magic or truncated");
  const std::uint8_t* const end = f.data() + f.size();
  const std::uint64_t count = load_le(end - kTrailerSize, 8);
  const std::uint64_t plain = load_le(end - 8, 8);
  if (count == 0 || count > (f.size() - kMagicSize - kTrailerSize) / kRunEntrySize) {
    malformed("run count " + std::to_string(count) + " does not fit its " + std::to_string(f.size()) +
              " bytes");
  }
  const std::uint64_t table = f.size() - kTrailerSize - count * kRunEntrySize;
  std::vector<Run> runs(count);
  std::uint64_t prev_end = kMagicSize, encoded = 0, decoded = 0;
  for (std::uint64_t i = 0; i < count; ++i) {
    const std::uint8_t* p = f.data() + table + i * kRunEntrySize;
    Run r{load_le(p, 8), load_le(p + 8, 8), static_cast<std::uint16_t>(load_le(p + 16, 2)), p[18]};
    const std::string which = "run " + std::to_string(i);
    if (r.line < 4 || r.line > kMaxLine || r.line % 4 != 0) {
      malformed(which + " has lines of " + std::to_string(r.line) + " characters");
    }
    if (r.eol != 1 && r.eol != 2) malformed(which + " has line end code " + std::to_string(r.eol));
    if (r.decoded == 0 || r.decoded > table)
      malformed(which + " claims " + std::to_string(r.decoded) + " bytes");
    const std::uint64_t len = encoded_length(r.decoded, r.line, r.eol);
    if (r.offset < prev_end || r.offset > plain || len > plain - r.offset) {
      malformed(which + " overlaps the one before it or lies outside the plaintext");
    }
    prev_end = r.offset + len;
    encoded += len;
    decoded += r.decoded;
    runs[i] = r;
  }
  // The text is the plaintext but its magic and runs; the decoded bytes follow it.
  const std::uint64_t text = plain - kMagicSize - encoded;
  if (decoded > table - kMagicSize || text != table - kMagicSize - decoded) {
    malformed("its text, decoded bytes and table do not add up to its size");
  }
  Bytes out(plain);
  std::uint8_t* o = out.data();
  std::memcpy(o, kPackMagic, kMagicSize);
  const std::uint8_t* t = f.data() + kMagicSize;
  const std::uint8_t* dd = t + text;
  std::uint64_t at = kMagicSize;
  for (const Run& r : runs) {
    std::memcpy(o + at, t, r.offset - at);
    t += r.offset - at;
    std::uint8_t* e = encode_run(dd, r.decoded, r.line, r.eol, o + r.offset);
    dd += r.decoded;
    at = static_cast<std::uint64_t>(e - o);
  }
  std::memcpy(o + at, t, plain - at);
  return out;
}

}  // namespace reduit
