// vault/error.hpp — the one error type of reduit, and the exit-code contract.
//
// Every failure that reaches a user carries an ErrorCode; the CLI maps the code to
// the process exit status (docs/CLI.md, "Exit codes"). Library code throws
// reduit::Error; nothing else escapes a public function except std::bad_alloc.
// Messages are one line, say what is wrong and, where possible, what to do.
#pragma once

#include <stdexcept>
#include <string>

namespace reduit {

enum class ErrorCode {
  kUsage = 2,        // bad command line or config (with file:line where known)
  kLockHeld = 3,     // another process holds the vault lease
  kUnreachable = 4,  // vault cannot be reached: network, SSH auth, host key, missing dir
  kKey = 5,          // key missing, expired, unusable, or data not decryptable with it
  kVerify = 6,       // integrity failure: bad hash, bad signature, corrupt or hostile data
  kSource = 7,       // a mailbox source is missing, unreadable or not a Maildir
  kNotFound = 8,     // a named snapshot, mailbox, folder or object does not exist
  kIo = 9,           // local I/O failure (disk full, permission) — nothing committed
  kInternal = 70,    // a bug (EX_SOFTWARE)
};

/// Process exit status for a code (the numeric value of the enum). 0 = success and
/// 1 = "completed with warnings" are not errors and have no ErrorCode.
inline int exit_status(ErrorCode code) {
  return static_cast<int>(code);
}

/// Short stable name for --json output, e.g. "lock-held".
const char* error_code_name(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

/// Throws Error(kIo) naming `what` and strerror(errno_value).
[[noreturn]] void throw_errno(const std::string& what, int errno_value);

}  // namespace reduit
