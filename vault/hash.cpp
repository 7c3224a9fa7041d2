#include "vault/hash.hpp"

#include <openssl/evp.h>
#include <openssl/hmac.h>
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

Hash hmac_sha256(const Hash& key, const void* data, std::size_t size) {
  Hash out;
  unsigned int len = 0;
  if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), static_cast<const unsigned char*>(data),
            size, out.data(), &len) ||
      len != out.size()) {
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
