// mailserver/maildir.cpp — durable Maildir delivery (maildir.hpp).
#include "mailserver/maildir.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>

#include "mailserver/directory.hpp"

namespace reduit::mail {

namespace {

class PosixFs : public DeliveryFs {
 public:
  int create(const std::string& path) override {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    return fd < 0 ? -errno : fd;
  }
  long write(int fd, const char* data, std::size_t size) override {
    ssize_t n;
    do {
      n = ::write(fd, data, size);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : static_cast<long>(n);
  }
  int fsync(int fd) override { return ::fsync(fd) == 0 ? 0 : -errno; }
  int close(int fd) override { return ::close(fd) == 0 ? 0 : -errno; }
  int link(const std::string& from, const std::string& to) override {
    return ::link(from.c_str(), to.c_str()) == 0 ? 0 : -errno;
  }
  int unlink(const std::string& path) override { return ::unlink(path.c_str()) == 0 ? 0 : -errno; }
  int mkdir(const std::string& path) override { return ::mkdir(path.c_str(), 0700) == 0 ? 0 : -errno; }
  int fsync_dir(const std::string& path) override {
    int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int rc = ::fsync(fd) == 0 ? 0 : -errno;
    ::close(fd);
    return rc;
  }
};

DeliveryOutcome outcome_of(int neg_errno) {
  if (neg_errno == 0) return DeliveryOutcome::kDelivered;
  if (neg_errno == -ENOSPC || neg_errno == -EDQUOT) return DeliveryOutcome::kNoSpace;
  return DeliveryOutcome::kIoError;
}

// The host part of a unique name: '/' → \057, ':' → \072 (Maildir spec).
std::string escape_host(const std::string& h) {
  std::string out;
  for (char c : h) {
    if (c == '/')
      out += "\\057";
    else if (c == ':')
      out += "\\072";
    else
      out += c;
  }
  return out.empty() ? "localhost" : out;
}

}  // namespace

DeliveryFs& posix_delivery_fs() {
  static PosixFs fs;
  return fs;
}

struct MaildirDelivery::Copy {
  std::string user, dir, prefix, name, tmp_path, new_path;
  int error = 0;  // -errno
  bool written = false, linked = false;
};

MaildirDelivery::MaildirDelivery(std::string root, std::string layout, std::string hostname, DeliveryFs& fs)
    : root_(std::move(root)), layout_(std::move(layout)), host_(escape_host(hostname)), fs_(fs) {}

std::string MaildirDelivery::unique_name(std::uint64_t size, std::uint64_t crlf_size) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  static const long pid = static_cast<long>(getpid());
  char buf[128];
  std::snprintf(buf, sizeof buf, "%lld.M%06ldP%ldQ%llu.", static_cast<long long>(ts.tv_sec),
                ts.tv_nsec / 1000, pid, static_cast<unsigned long long>(++counter_));
  return buf + host_ + ",S=" + std::to_string(size) + ",W=" + std::to_string(crlf_size);
}

int MaildirDelivery::ensure_maildir(const std::string& dir) {
  {
    std::lock_guard<std::mutex> lock(known_mu_);
    if (known_dirs_.count(dir)) return 0;
  }
  // Create each missing directory below the root, then cur/ new/ tmp/; fsync the
  // parent of every directory created so the new entry is durable.
  std::vector<std::string> chain;
  for (std::string d = dir; d.size() > root_.size(); d = d.substr(0, d.rfind('/'))) chain.push_back(d);
  std::reverse(chain.begin(), chain.end());
  for (const char* sub : {"cur", "new", "tmp"}) chain.push_back(dir + "/" + sub);
  for (const std::string& d : chain) {
    int rc = fs_.mkdir(d);
    if (rc == -EEXIST) continue;
    if (rc != 0) return rc;
    rc = fs_.fsync_dir(d.substr(0, d.rfind('/')));
    if (rc != 0) return rc;
  }
  std::lock_guard<std::mutex> lock(known_mu_);
  known_dirs_.insert(dir);
  return 0;
}

int MaildirDelivery::write_copy(Copy& c, const DeliveryJob& job) {
  int fd = fs_.create(c.tmp_path);
  if (fd < 0) return fd;
  int rc = 0;
  for (std::string_view part : {std::string_view(c.prefix), std::string_view(job.body)}) {
    while (rc == 0 && !part.empty()) {
      long n = fs_.write(fd, part.data(), part.size());
      if (n < 0) {
        rc = static_cast<int>(n);
      } else if (n == 0) {
        rc = -EIO;
      } else {
        part.remove_prefix(static_cast<std::size_t>(n));
      }
    }
  }
  if (rc == 0) rc = fs_.fsync(fd);
  int crc = fs_.close(fd);
  if (rc == 0) rc = crc;
  if (rc != 0) fs_.unlink(c.tmp_path);
  return rc;
}

int MaildirDelivery::commit_copy(Copy& c) {
  for (int attempt = 0; attempt < 5; ++attempt) {
    int rc = fs_.link(c.tmp_path, c.new_path);
    if (rc != -EEXIST) return rc;
    // Another file took the name (a clock step back and a reused pid): pick another.
    std::string size_part = c.name.substr(c.name.find(",S="));
    c.name = unique_name(0, 0);
    c.name = c.name.substr(0, c.name.find(",S=")) + size_part;
    c.new_path = c.dir + "/new/" + c.name;
  }
  return -EEXIST;
}

std::vector<DeliveryOutcome> MaildirDelivery::deliver(const DeliveryJob& job) {
  std::vector<Copy> copies(job.users.size());
  const std::uint64_t body_lf =
      static_cast<std::uint64_t>(std::count(job.body.begin(), job.body.end(), '\n'));
  int first_error = 0;
  // Step 1 and 2 for every copy: the message is durable in tmp/.
  for (std::size_t i = 0; i < copies.size(); ++i) {
    Copy& c = copies[i];
    c.user = job.users[i];
    c.dir = mailbox_path(root_, layout_, c.user);
    c.prefix = "Return-Path: <" + job.return_path + ">\nDelivered-To: " + c.user + "\n" + job.received;
    std::uint64_t size = c.prefix.size() + job.body.size();
    std::uint64_t lf =
        static_cast<std::uint64_t>(std::count(c.prefix.begin(), c.prefix.end(), '\n')) + body_lf;
    c.name = unique_name(size, size + lf);
    c.tmp_path = c.dir + "/tmp/" + c.name;
    c.new_path = c.dir + "/new/" + c.name;
    c.error = ensure_maildir(c.dir);
    if (c.error == 0) c.error = write_copy(c, job);
    if (c.error == -ENOENT) {  // the mailbox was removed behind our back: create it again
      {
        std::lock_guard<std::mutex> lock(known_mu_);
        known_dirs_.erase(c.dir);
      }
      c.error = ensure_maildir(c.dir);
      if (c.error == 0) c.error = write_copy(c, job);
    }
    c.written = c.error == 0;
    if (c.error != 0 && first_error == 0) first_error = c.error;
    if (first_error != 0 && job.all_or_nothing) break;
  }
  auto abort_all = [&](int error) {
    for (Copy& c : copies) {
      if (c.linked) fs_.unlink(c.new_path);
      if (c.written) fs_.unlink(c.tmp_path);
      c.linked = c.written = false;
      if (c.error == 0) c.error = error;
    }
    std::vector<DeliveryOutcome> out;
    for (const Copy& c : copies) out.push_back(outcome_of(c.error ? c.error : error));
    return out;
  };
  if (first_error != 0 && job.all_or_nothing) return abort_all(first_error);

  // Step 3: link into new/, then make the new/ entries durable, one fsync per dir.
  for (Copy& c : copies) {
    if (!c.written) continue;
    c.error = commit_copy(c);
    c.linked = c.error == 0;
    if (c.error != 0) {
      fs_.unlink(c.tmp_path);
      c.written = false;
      if (first_error == 0) first_error = c.error;
    }
  }
  if (first_error != 0 && job.all_or_nothing) return abort_all(first_error);
  std::vector<std::string> dirs;
  for (const Copy& c : copies) {
    if (c.linked) dirs.push_back(c.dir);
  }
  std::sort(dirs.begin(), dirs.end());
  dirs.erase(std::unique(dirs.begin(), dirs.end()), dirs.end());
  for (const std::string& d : dirs) {
    int rc = fs_.fsync_dir(d + "/new");
    if (rc == 0) continue;
    // Not known to be durable: take these copies back out of new/.
    for (Copy& c : copies) {
      if (c.linked && c.dir == d) {
        fs_.unlink(c.new_path);
        c.linked = false;
        c.error = rc;
      }
    }
    if (first_error == 0) first_error = rc;
  }
  if (first_error != 0 && job.all_or_nothing) return abort_all(first_error);
  std::vector<DeliveryOutcome> out;
  for (Copy& c : copies) {
    if (c.written) fs_.unlink(c.tmp_path);  // new/ holds it now (or it failed)
    out.push_back(outcome_of(c.error));
  }
  return out;
}

}  // namespace reduit::mail
