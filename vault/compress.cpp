#include "vault/compress.hpp"

#include <zstd.h>

#include "vault/error.hpp"

namespace reduit {

Bytes zstd_compress(const Bytes& data, int level) {
  Bytes out(ZSTD_compressBound(data.size()));
  std::size_t n = ZSTD_compress(out.data(), out.size(), data.data(), data.size(), level);
  if (ZSTD_isError(n)) {
    throw Error(ErrorCode::kInternal, std::string("zstd: ") + ZSTD_getErrorName(n));
  }
  out.resize(n);
  return out;
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
