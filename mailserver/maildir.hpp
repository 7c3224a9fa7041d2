// mailserver/maildir.hpp — final delivery into Maildir, durably (the Maildir spec,
// cr.yp.to/proto/maildir.html; docs/MAILDIR.md "Names and delivery").
//
// The only code of the mail server that writes mailboxes. It knows nothing of SMTP:
// it receives a DeliveryJob (session.hpp) and returns one outcome per user.
//
// One copy, per user:
//   1. create the mailbox's cur/ new/ tmp/ if missing (each new directory's parent
//      is fsync'd, so the mailbox itself survives a crash);
//   2. open tmp/<unique name> with O_EXCL, write "Return-Path:", "Delivered-To:",
//      the Received field and the message, fsync, close;
//   3. link it into new/ under the same name, fsync new/, unlink the tmp/ name.
// The unique name is "<sec>.M<usec>P<pid>Q<count>.<host>,S=<size>,W=<size with
// CRLF>" (Dovecot's S= and W= extensions; '/' and ':' in the host escaped as \057
// and \072). All-or-nothing jobs (SMTP) do step 2 for every copy before any step 3,
// and remove what they linked if a later copy fails: a message is either in every
// mailbox or in none. A failure never leaves a partial file in new/, and removes
// its files from tmp/. ENOSPC/EDQUOT → kNoSpace; anything else → kIoError.
// Thread-safe: many jobs may run at once (the counter is atomic).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "mailserver/session.hpp"

namespace reduit::mail {

/// The system calls delivery makes, so tests can inject ENOSPC, EIO or a failure
/// at the N-th call. Each returns 0 (or a byte count / fd) on success, -errno on
/// failure, like the raw system call would with errno folded in.
class DeliveryFs {
 public:
  virtual ~DeliveryFs() = default;
  /// open(path, O_WRONLY|O_CREAT|O_EXCL|O_CLOEXEC, 0600): fd or -errno.
  virtual int create(const std::string& path) = 0;
  /// write(2): bytes written (may be short) or -errno.
  virtual long write(int fd, const char* data, std::size_t size) = 0;
  virtual int fsync(int fd) = 0;
  virtual int close(int fd) = 0;
  virtual int link(const std::string& from, const std::string& to) = 0;
  virtual int unlink(const std::string& path) = 0;
  /// mkdir(path, 0700); -EEXIST when it exists.
  virtual int mkdir(const std::string& path) = 0;
  /// open(dir, O_RDONLY|O_DIRECTORY) + fsync + close.
  virtual int fsync_dir(const std::string& path) = 0;
};

/// The real system calls.
DeliveryFs& posix_delivery_fs();

class MaildirDelivery {
 public:
  /// `root` and `layout` as in the config (directory.hpp mailbox_path); `hostname`
  /// is the host part of unique names. `fs` must outlive this object.
  MaildirDelivery(std::string root, std::string layout, std::string hostname, DeliveryFs& fs);
  MaildirDelivery(const MaildirDelivery&) = delete;
  MaildirDelivery& operator=(const MaildirDelivery&) = delete;

  /// Delivers `job`; returns one outcome per job.users entry, in order.
  std::vector<DeliveryOutcome> deliver(const DeliveryJob& job);

  /// A fresh unique name for a message of `size` octets (LF) and `crlf_size`.
  std::string unique_name(std::uint64_t size, std::uint64_t crlf_size);

 private:
  struct Copy;
  int ensure_maildir(const std::string& dir);
  int write_copy(Copy& c, const DeliveryJob& job);
  int commit_copy(Copy& c);

  std::string root_, layout_, host_;
  DeliveryFs& fs_;
  std::atomic<std::uint64_t> counter_{0};
  std::mutex known_mu_;
  std::set<std::string> known_dirs_;  // Maildirs known to exist
};

}  // namespace reduit::mail
