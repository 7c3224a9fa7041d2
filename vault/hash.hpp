// vault/hash.hpp — SHA-256, HMAC-SHA256 and hex, via OpenSSL's libcrypto.
//
// Ids in reduit are 32-byte values: pack/object names are SHA-256 of the stored
// bytes (FIPS 180-4); blob ids are HMAC-SHA256 (RFC 2104) of the plaintext under
// the vault's secret id key, so the vault cannot test for a known message.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace reduit {

using Hash = std::array<std::uint8_t, 32>;

Hash sha256(const void* data, std::size_t size);
inline Hash sha256(std::string_view s) {
  return sha256(s.data(), s.size());
}

/// HMAC-SHA256(key, data). `key` is the 32-byte vault id key.
Hash hmac_sha256(const Hash& key, const void* data, std::size_t size);

/// Lowercase hex of `size` bytes.
std::string to_hex(const void* data, std::size_t size);
inline std::string to_hex(const Hash& h) {
  return to_hex(h.data(), h.size());
}

/// Standard base64 with padding (RFC 4648 §4), no line breaks.
std::string to_base64(std::string_view bytes);
/// Decodes RFC 4648 §4 base64; throws Error(kVerify) naming `what` when malformed.
std::string from_base64(std::string_view text, const char* what = "base64 field");

/// Parses exactly 64 hex digits; throws Error(kVerify) naming `what` otherwise.
Hash hash_from_hex(std::string_view hex, const char* what = "id");

/// 32 bytes from the OS CSPRNG (getrandom(2)).
Hash random_hash();

struct HashHasher {
  std::size_t operator()(const Hash& h) const noexcept {
    std::size_t v;
    static_assert(sizeof(v) <= sizeof(Hash));
    __builtin_memcpy(&v, h.data(), sizeof(v));
    return v;
  }
};

/// Incremental SHA-256 for streams.
class Sha256Stream {
 public:
  Sha256Stream();
  ~Sha256Stream();
  Sha256Stream(const Sha256Stream&) = delete;
  Sha256Stream& operator=(const Sha256Stream&) = delete;
  void update(const void* data, std::size_t size);
  Hash finish();

 private:
  void* ctx_;
};

}  // namespace reduit
