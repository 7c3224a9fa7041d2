#include "vault/error.hpp"

#include <cstring>

namespace reduit {

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kUsage:
      return "usage";
    case ErrorCode::kLockHeld:
      return "lock-held";
    case ErrorCode::kUnreachable:
      return "vault-unreachable";
    case ErrorCode::kKey:
      return "key";
    case ErrorCode::kVerify:
      return "verification-failed";
    case ErrorCode::kSource:
      return "source";
    case ErrorCode::kNotFound:
      return "not-found";
    case ErrorCode::kIo:
      return "io";
    case ErrorCode::kInternal:
      return "internal";
  }
  return "internal";
}

void throw_errno(const std::string& what, int errno_value) {
  throw Error(ErrorCode::kIo, what + ": " + std::strerror(errno_value));
}

}  // namespace reduit
