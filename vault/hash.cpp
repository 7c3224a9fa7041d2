#include "vault/hash.hpp"

#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/sha.h>
#include <sys/random.h>

#include <cerrno>

#include "vault/error.hpp"

namespace reduit {

Hash sha256(const void* data, std::size_t size) {
  Hash out;
  SHA256(static_cast<const unsigned char*>(data), size, out.data());
  return out;
}

namespace {

// One HMAC context per thread, keyed once: EVP_MAC_init with no key starts again
// from the key's hashed inner and outer pads. The one-shot HMAC() fetches the
// algorithm, allocates a context and hashes both pads at every call: about 1.7 µs,
// more than hashing a 2 KiB header block.
struct HmacSha256 {
  EVP_MAC* mac = nullptr;
  EVP_MAC_CTX* ctx = nullptr;
  Hash key{};
  bool keyed = false;
  HmacSha256() {
    mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    if (mac) ctx = EVP_MAC_CTX_new(mac);
  }
  ~HmacSha256() {
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
  }
  HmacSha256(const HmacSha256&) = delete;
  HmacSha256& operator=(const HmacSha256&) = delete;
};

}  // namespace

Hash hmac_sha256(const Hash& key, const void* data, std::size_t size) {
  thread_local HmacSha256 h;
  if (!h.ctx) throw Error(ErrorCode::kInternal, "HMAC-SHA256: no HMAC in libcrypto");
  bool ok;
  if (h.keyed && h.key == key) {
    ok = EVP_MAC_init(h.ctx, nullptr, 0, nullptr) == 1;
  } else {
    char digest[] = "SHA256";
    const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0), OSSL_PARAM_construct_end()};
    ok = EVP_MAC_init(h.ctx, key.data(), key.size(), params) == 1;
    h.keyed = ok;
    h.key = key;
  }
  Hash out;
  std::size_t len = 0;
  if (!ok || EVP_MAC_update(h.ctx, static_cast<const unsigned char*>(data), size) != 1 ||
      EVP_MAC_final(h.ctx, out.data(), &len, out.size()) != 1 || len != out.size()) {
    h.keyed = false;
    throw Error(ErrorCode::kInternal, "HMAC-SHA256 failed");
  }
  return out;
}

std::string to_base64(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3), '\0');
  int n =
      EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                      reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

std::string from_base64(std::string_view text, const char* what) {
  if (text.size() % 4 != 0) throw Error(ErrorCode::kVerify, std::string(what) + " is not base64");
  std::string out(3 * (text.size() / 4), '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  if (n < 0) throw Error(ErrorCode::kVerify, std::string(what) + " is not base64");
  // EVP_DecodeBlock counts padding as zero bytes.
  std::size_t pad = 0;
  if (!text.empty() && text.back() == '=') pad = text.size() >= 2 && text[text.size() - 2] == '=' ? 2 : 1;
  out.resize(static_cast<std::size_t>(n) - pad);
  return out;
}

std::string to_hex(const void* data, std::size_t size) {
  static const char* digits = "0123456789abcdef";
  const auto* p = static_cast<const std::uint8_t*>(data);
  std::string s(size * 2, '0');
  for (std::size_t i = 0; i < size; ++i) {
    s[2 * i] = digits[p[i] >> 4];
    s[2 * i + 1] = digits[p[i] & 15];
  }
  return s;
}

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

Hash hash_from_hex(std::string_view hex, const char* what) {
  Hash h;
  if (hex.size() != 64) {
    throw Error(ErrorCode::kVerify, std::string("malformed ") + what + " '" + std::string(hex.substr(0, 80)) +
                                        "': want 64 hex digits");
  }
  for (std::size_t i = 0; i < 32; ++i) {
    int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      throw Error(ErrorCode::kVerify,
                  std::string("malformed ") + what + " '" + std::string(hex) + "': not hex");
    }
    h[i] = static_cast<std::uint8_t>(hi << 4 | lo);
  }
  return h;
}

Hash random_hash() {
  Hash h;
  std::size_t got = 0;
  while (got < h.size()) {
    ssize_t n = getrandom(h.data() + got, h.size() - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("getrandom", errno);
    }
    got += static_cast<std::size_t>(n);
  }
  return h;
}

Sha256Stream::Sha256Stream() : ctx_(EVP_MD_CTX_new()) {
  if (!ctx_ || !EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha256(), nullptr)) {
    throw Error(ErrorCode::kInternal, "SHA-256 init failed");
  }
}
Sha256Stream::~Sha256Stream() {
  EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_));
}
void Sha256Stream::update(const void* data, std::size_t size) {
  EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data, size);
}
Hash Sha256Stream::finish() {
  Hash out;
  unsigned int len = 0;
  EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), out.data(), &len);
  return out;
}

}  // namespace reduit
