#include "agent/backup.hpp"

#include "agent/audit_record.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <limits>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_set>
#include <utility>

#include "agent/headers.hpp"
#include "agent/mbox.hpp"
#include "agent/scan.hpp"
#include "agent/session.hpp"
#include "agent/text.hpp"
#include "restore/blobs.hpp"
#include "restore/snapshots.hpp"
#include "vault/catalog.hpp"
#include "vault/clock.hpp"
#include "vault/compress.hpp"
#include "vault/delta.hpp"
#include "vault/error.hpp"
#include "vault/repository.hpp"

#ifndef REDUIT_VERSION
#define REDUIT_VERSION "dev"
#endif

namespace reduit {

namespace {

// Names the calling thread as top(1), perf(1) and /proc/PID/task/*/comm show it.
void name_thread(const char* name) {
  pthread_setname_np(pthread_self(), name);
}

// The pack pipeline: the scanning thread fills packs; kSealers threads compress and
// encrypt them (each with its own gpg context); one thread uploads them over its own
// vault connection and journals each pack in the catalog right after it is in the
// vault. Bounded queues keep at most ~5 packs in memory.
//
// Pack buffers are kept for the next pack rather than freed: up to kSpares sealed
// packs' plaintext buffers of each kind for the writers to fill again, and up to
// kSpares uploaded packs' buffers for a sealer to write the next OpenPGP message
// into. A freed buffer is mapped and faulted in again for a later pack. Keeping
// one data buffer only, 70 of the 100,000-message set's 115 packs got new ones:
// 970 MiB of fresh pages, 250,000 page faults of 360,000. With two of each,
// 190,000-220,000 faults in all for 10-25 MiB more peak RSS; keeping every buffer
// saved 10,000 more faults for 37 MiB more RSS (docs/PERFORMANCE.md, stop 30).
class PackUploader {
 public:
  static constexpr int kSealers = 2;
  static constexpr std::size_t kSpares = 2;  // buffers kept per list (see above)

  PackUploader(const Config& cfg, const VaultConfig& vc, const std::string& gnupghome)
      : cfg_(cfg), vc_(vc), home_(gnupghome) {
    for (int i = 0; i < kSealers; ++i) {
      threads_.emplace_back([this] {
        name_thread("reduit-seal");
        guard([this] { seal_loop(); });
      });
    }
    threads_.emplace_back([this] {
      name_thread("reduit-upload");
      guard([this] { upload_loop(); });
    });
  }
  ~PackUploader() {
    {
      std::lock_guard<std::mutex> g(mu_);
      closing_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

  /// Blocks while a pack is already waiting for a sealer. Rethrows a worker failure.
  void submit(PackKind kind, Bytes plaintext, std::vector<PackEntry> entries) {
    std::unique_lock<std::mutex> g(mu_);
    cv_.wait(g, [&] { return plain_.empty() || error_; });
    if (error_) std::rethrow_exception(error_);
    plain_.push_back(Job{kind, std::move(plaintext), std::move(entries)});
    ++in_flight_;
    cv_.notify_all();
  }

  /// The plaintext buffer of a sealed pack of `kind`, done with, for the writer of
  /// that kind to fill again (empty when none is free yet).
  Bytes take_spare(PackKind kind) {
    std::lock_guard<std::mutex> g(mu_);
    std::vector<Bytes>& spares = spares_for(kind);
    if (spares.empty()) return {};
    Bytes b = std::move(spares.back());
    spares.pop_back();
    return b;
  }

  std::vector<IndexPack> take_completed() {
    std::lock_guard<std::mutex> g(mu_);
    if (error_) std::rethrow_exception(error_);
    std::vector<IndexPack> out(std::make_move_iterator(done_.begin()), std::make_move_iterator(done_.end()));
    done_.clear();
    return out;
  }

  /// Waits until every submitted pack is uploaded; rethrows a worker failure.
  void finish() {
    std::unique_lock<std::mutex> g(mu_);
    cv_.wait(g, [&] { return in_flight_ == 0 || error_; });
    if (error_) std::rethrow_exception(error_);
  }

  std::uint64_t data_bytes() const { return data_bytes_; }
  std::uint64_t metadata_bytes() const { return metadata_bytes_; }

 private:
  struct Job {
    PackKind kind;
    Bytes bytes;  // plaintext, then sealed
    std::vector<PackEntry> entries;
  };

  template <typename F>
  void guard(F&& f) {
    try {
      f();
    } catch (...) {
      std::lock_guard<std::mutex> g(mu_);
      if (!error_) error_ = std::current_exception();
    }
    cv_.notify_all();
  }

  // The plaintext buffers kept for the writer of `kind` (mu_ held).
  std::vector<Bytes>& spares_for(PackKind kind) { return kind == PackKind::kData ? spare_ : meta_spare_; }

  // A pack grown far past its target by one large blob is freed, not kept.
  bool keep(const Bytes& b) const { return b.capacity() <= 2 * (vc_.pack_size + (1u << 20)); }

  void seal_loop() {
    // gpg is started with posix_spawn and reads and writes shared memory, so this
    // large process forks nothing per pack and GPGME relays nothing
    // (vault/direct_gpg.hpp).
    PackSealer sealer(home_);
    while (true) {
      Job job;
      Bytes reuse;
      {
        std::unique_lock<std::mutex> g(mu_);
        cv_.wait(g, [&] {
          return error_ || (!plain_.empty() && sealed_.size() < 2) || (closing_ && plain_.empty());
        });
        if (error_ || plain_.empty()) {
          ++sealers_done_;
          cv_.notify_all();
          return;
        }
        job = std::move(plain_.front());
        plain_.pop_front();
        if (!sealed_spare_.empty()) {
          reuse = std::move(sealed_spare_.back());
          sealed_spare_.pop_back();
        }
      }
      cv_.notify_all();
      Bytes sealed = sealer.seal(vc_, job.bytes, job.kind, std::move(reuse));
      {
        std::lock_guard<std::mutex> g(mu_);
        std::vector<Bytes>& spares = spares_for(job.kind);
        if (spares.size() < kSpares && keep(job.bytes)) spares.push_back(std::move(job.bytes));
        job.bytes = std::move(sealed);
        sealed_.push_back(std::move(job));
      }
      cv_.notify_all();
    }
  }

  void upload_loop() {
    std::unique_ptr<Transport> transport = open_transport(cfg_.vault_url, cfg_.ssh);
    Catalog journal(cfg_.state_dir);
    while (true) {
      Job job;
      {
        std::unique_lock<std::mutex> g(mu_);
        cv_.wait(g, [&] { return error_ || !sealed_.empty() || (closing_ && sealers_done_ == kSealers); });
        if (error_ || sealed_.empty()) return;
        job = std::move(sealed_.front());
        sealed_.pop_front();
      }
      cv_.notify_all();
      IndexPack p;
      p.id = sha256(job.bytes.data(), job.bytes.size());
      p.size = job.bytes.size();
      p.kind = job.kind;
      p.blobs = std::move(job.entries);
      transport->put(pack_name(p.id), job.bytes);
      journal.add_pack(p, /*indexed=*/false);
      (job.kind == PackKind::kData ? data_bytes_ : metadata_bytes_) += p.size;
      {
        std::lock_guard<std::mutex> g(mu_);
        done_.push_back(std::move(p));
        --in_flight_;
        if (sealed_spare_.size() < kSpares && keep(job.bytes)) sealed_spare_.push_back(std::move(job.bytes));
      }
      cv_.notify_all();
    }
  }

  const Config& cfg_;
  VaultConfig vc_;
  std::string home_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> plain_, sealed_;
  std::vector<Bytes> spare_, meta_spare_, sealed_spare_;
  std::vector<IndexPack> done_;
  int in_flight_ = 0, sealers_done_ = 0;
  bool closing_ = false;
  std::exception_ptr error_;
  std::atomic<std::uint64_t> data_bytes_{0}, metadata_bytes_{0};
  std::vector<std::thread> threads_;
};

// The hard-link group of an inode within one snapshot (FORMAT.md §7).
std::string link_group(std::uint64_t dev, std::uint64_t ino) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%llx.%llx", static_cast<unsigned long long>(dev),
                static_cast<unsigned long long>(ino));
  return buf;
}

// A read buffer that grows but is never zero-filled (a resize() of std::string
// would memset every byte of every message first).
class ReadBuffer {
 public:
  std::string_view view() const { return {data_.get(), len_}; }
  char* reserve(std::size_t n) {
    if (n > cap_) {
      std::size_t cap = std::max(n, cap_ * 2);
      std::unique_ptr<char[]> bigger(new char[cap]);
      if (len_) std::memcpy(bigger.get(), data_.get(), len_);
      data_ = std::move(bigger);
      cap_ = cap;
    }
    return data_.get();
  }
  std::size_t capacity() const { return cap_; }
  void set_length(std::size_t n) { len_ = n; }

 private:
  std::unique_ptr<char[]> data_;
  std::size_t cap_ = 0, len_ = 0;
};

// Opens a source file for reading without touching its atime where the owner
// allows it; -1 with errno set when it cannot be opened.
int open_source(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOATIME);
  if (fd < 0 && errno == EPERM) fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  return fd;
}

// Reads a whole file; returns false when it vanished (ENOENT). Fills `st`. `fd`,
// when not -1, is `path` opened already (by open_source); it is closed here.
// `uncached`, when given, is set to whether the file was not all in the page cache
// (its first read, with RWF_NOWAIT, could not be served from memory alone).
bool read_file(const std::string& path, int fd, ReadBuffer& buf, struct stat& st, bool* uncached = nullptr) {
  if (fd < 0) fd = open_source(path);
  if (fd < 0) {
    if (errno == ENOENT) return false;
    throw Error(ErrorCode::kSource, "cannot read " + path + ": " + std::strerror(errno));
  }
  if (fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    throw Error(ErrorCode::kSource, "cannot stat " + path + ": " + std::strerror(e));
  }
  std::size_t got = 0;
  buf.set_length(0);
  buf.reserve(static_cast<std::size_t>(st.st_size) + 1);
  if (uncached) {
    *uncached = false;
    if (st.st_size > 0) {
      // One byte more than the size: a read that stops at the size has met the end
      // of the file (or, for a file growing at this moment, the end of what is in
      // memory: then it is kept at the size its stat records), and the read below
      // that would return 0 is not made: one system call of five per file.
      iovec v{buf.reserve(1), static_cast<std::size_t>(st.st_size) + 1};
      const ssize_t n = ::preadv2(fd, &v, 1, -1, RWF_NOWAIT);
      if (n > 0) got = static_cast<std::size_t>(n);
      // EAGAIN: not in memory; EOPNOTSUPP: cannot tell (taken as not in memory).
      *uncached = n < st.st_size;
      if (n == st.st_size) {
        ::close(fd);
        buf.set_length(got);
        return true;
      }
    }
  }
  while (true) {
    if (got == buf.capacity()) buf.reserve(got + 65536);  // grew while reading
    buf.set_length(got);
    ssize_t n = ::read(fd, buf.reserve(got + 1) + got, buf.capacity() - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(fd);
      throw Error(ErrorCode::kSource, "cannot read " + path + ": " + std::strerror(e));
    }
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  ::close(fd);
  buf.set_length(got);
  return true;
}

// Reads, on a thread of its own, the files of a folder that the stat cache missed,
// and hashes them (SHA-256 of the file, HMAC-SHA256 blob ids of a message's header
// and body or of a whole file), ahead of the scanning thread, which stores them in
// the order it asked for them. Opening, reading and hashing are about half of the
// scanning thread's work on a first backup; this overlaps them with the pack copies
// and catalog writes. Holds at most kMaxAhead read files and kMaxAheadBytes,
// counting the file the scanning thread is storing; a larger file is read only
// when nothing else is held, so at most one large file is in memory, as before.
// Buffers are recycled, so reads touch no fresh pages.
class ReadAhead {
 public:
  static constexpr std::size_t kMaxAhead = 64;
  static constexpr std::size_t kMaxAheadBytes = 8u << 20;
  static constexpr std::size_t kKeepBytes = 4u << 20;  // capacity of the recycled buffers, at most
  // Files opened ahead of the one being read, for the kernel to read them in while
  // it is hashed (a cold page cache: a first backup, or mail not read for days).
  // Their scanned sizes add up to kOpenAheadBytes at most; a larger file is not
  // opened ahead, and the kernel's own readahead serves its sequential read.
  static constexpr std::size_t kOpenAhead = 64;
  static constexpr std::uint64_t kOpenAheadBytes = 16u << 20;
  static constexpr std::uint64_t kColdReads = 1024;

  struct Request {
    std::size_t entry = 0;        // index in the folder's entries
    std::string path;             // relative to the folder
    std::uint64_t size = 0;       // bytes, as scanned (for the memory bound only)
    bool message = false;         // split into header and body blobs
    bool whole_blob = false;      // not a message: its blob id, unless it is a delta-managed file
    std::uint64_t delta_min = 0;  // ... of at least this many bytes (whole_blob then skipped)
  };
  struct Item {
    std::size_t entry = 0;
    bool found = false;  // false: gone between the scan and the read
    std::string path;    // where it was read (a renamed message is found again)
    struct stat st {};
    ReadBuffer buf;                          // the whole file
    Hash sha256{};                           // of the file
    std::size_t header_length = 0;           // messages: header block length (RFC 5322 §2.1)
    std::optional<Hash> header, body, blob;  // blob ids (Repository::blob_id)
    std::exception_ptr failure;              // an Error(kSource) for an unreadable file, or worse
    bool uncached = false;                   // its first read missed the page cache (in part)
    bool read_ahead = false;                 // it was opened ahead and the kernel asked to read it in
  };

  explicit ReadAhead(const Repository& repo)
      : repo_(repo), thread_([this] {
          name_thread("reduit-read");
          loop();
        }) {}
  ~ReadAhead() {
    {
      std::lock_guard<std::mutex> g(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  /// Starts reading `requests` (in this order) in the folder `dir`; whatever the
  /// previous folder left unread is dropped.
  void begin(const std::string& dir, std::vector<Request> requests) {
    std::unique_lock<std::mutex> g(mu_);
    requests_.clear();
    cv_.wait(g, [&] { return !busy_; });
    if (fatal_) std::rethrow_exception(fatal_);
    ready_.clear();
    ready_bytes_ = held_bytes_ = 0;
    dir_ = dir;
    ++generation_;
    for (Request& r : requests) requests_.push_back(std::move(r));
    cv_.notify_all();
  }

  /// The next file, in request order; blocks until it is read. Give it back with
  /// recycle() once stored. Rethrows a failure of the reader thread itself.
  Item next() {
    std::unique_lock<std::mutex> g(mu_);
    if (ready_.empty()) {
      consumer_waiting_ = true;
      cv_.wait(g, [&] { return !ready_.empty() || fatal_; });
      consumer_waiting_ = false;
      if (ready_.empty()) std::rethrow_exception(fatal_);
    }
    Item it = std::move(ready_.front());
    ready_.pop_front();
    ready_bytes_ -= it.buf.view().size();
    held_bytes_ += it.buf.view().size();
    if (reader_should_wake()) cv_.notify_all();
    return it;
  }

  /// Gives an item from next() back: it is stored, its buffer can be read into again.
  void recycle(Item&& it) {
    std::lock_guard<std::mutex> g(mu_);
    held_bytes_ -= std::min(held_bytes_, it.buf.view().size());
    if (reader_should_wake()) cv_.notify_all();
    if (free_bytes_ + it.buf.capacity() > kKeepBytes) return;
    free_bytes_ += it.buf.capacity();
    free_.push_back(std::move(it));
  }

 private:
  bool room(const Request& r) const {
    if (ready_.size() >= kMaxAhead) return false;
    const std::size_t held = ready_bytes_ + held_bytes_;
    return held + r.size <= kMaxAheadBytes || (ready_.empty() && held_bytes_ == 0);
  }

  // The reader sleeps when it is a full window ahead; it is woken when the window
  // is half empty, not at every file (each wake-up is a futex call and a context
  // switch), or when it has nothing left to wait for (a large file next). The
  // scanning thread, when it waits for a file, is woken in the same way (serve()):
  // woken at every file, the two threads switched 45,000 times in a 100,000-message
  // first backup; at half a window, 11,000 times, and the run took 3% less CPU.
  bool reader_should_wake() const {
    if (!reader_waiting_ || requests_.empty() || !room(requests_.front())) return false;
    return ready_.empty() ||
           (ready_.size() <= kMaxAhead / 2 && ready_bytes_ + held_bytes_ <= kMaxAheadBytes / 2);
  }

  void loop() {
    try {
      serve();
    } catch (...) {
      // Not a file's error (those travel with the file): memory, most likely.
      std::lock_guard<std::mutex> g(mu_);
      fatal_ = std::current_exception();
      busy_ = false;
      cv_.notify_all();
    }
  }

  void serve() {
    while (true) {
      Request r;
      std::string dir;
      Item it;
      int fd = -1;                     // r's file, if it was opened ahead
      std::vector<Request> open_next;  // files to open ahead now (their path and size only)
      {
        std::unique_lock<std::mutex> g(mu_);
        auto can_read = [&] { return !requests_.empty() && room(requests_.front()); };
        if (!stop_ && !can_read()) {
          reader_waiting_ = true;
          cv_.wait(g, [&] { return stop_ || can_read(); });
          reader_waiting_ = false;
        }
        if (stop_) return;
        if (opened_generation_ != generation_) {  // begin() replaced the requests
          opened_.clear();
          opened_bytes_ = 0;
          opened_generation_ = generation_;
        }
        r = std::move(requests_.front());
        requests_.pop_front();
        if (!opened_.empty()) {  // opened_[i] is requests_[i]'s file, r's first
          fd = opened_.front().release();
          opened_bytes_ -= opened_.front().size;
          opened_.pop_front();
        }
        // Only while reads miss the page cache: a warm one gains nothing from it.
        const std::size_t window = reads_ < cold_until_ ? kOpenAhead : 0;
        std::uint64_t bytes = opened_bytes_;
        for (std::size_t i = opened_.size(); i < requests_.size() && i < window; ++i) {
          const Request& n = requests_[i];
          if (bytes + n.size > kOpenAheadBytes) break;
          bytes += n.size;
          open_next.push_back(Request{0, n.path, n.size});
        }
        dir = dir_;
        busy_ = true;
        if (!free_.empty()) {
          it = std::move(free_.back());
          free_.pop_back();
          free_bytes_ -= it.buf.capacity();
        }
      }
      for (const Request& n : open_next) {
        const int ahead = open_source(dir + "/" + n.path);
        if (ahead >= 0) ::posix_fadvise(ahead, 0, 0, POSIX_FADV_WILLNEED);
        opened_.emplace_back(ahead, n.size);  // -1 (gone, say): read() opens it again
        opened_bytes_ += n.size;
      }
      read(dir, r, fd, it);
      bool wake;
      {
        std::lock_guard<std::mutex> g(mu_);
        busy_ = false;
        ready_bytes_ += it.buf.view().size();
        ready_.push_back(std::move(it));
        // A waiting scanning thread is woken once half a window is ready, or when the
        // reader can go no further (begin() may also be waiting for !busy_).
        wake = requests_.empty() ||
               (consumer_waiting_ && (ready_.size() >= kMaxAhead / 2 || !room(requests_.front())));
      }
      if (wake) cv_.notify_all();
    }
  }

  void read(const std::string& dir, const Request& r, int fd, Item& it) {
    it.entry = r.entry;
    it.path = r.path;
    it.found = false;
    it.header_length = 0;
    it.header.reset();
    it.body.reset();
    it.blob.reset();
    it.failure = nullptr;
    it.uncached = it.read_ahead = false;
    try {
      it.read_ahead = fd >= 0;
      it.found = read_file(dir + "/" + r.path, fd, it.buf, it.st, &it.uncached);
      // Files opened ahead are in memory by the time they are read, so a miss
      // keeps read-ahead on for a while, not only until the next hit.
      ++reads_;
      if (it.uncached) cold_until_ = reads_ + kColdReads;
      if (!it.found && r.message) {
        // Renamed since the scan (a flag change, new/ → cur/): find it again by its
        // unique name, as often as it keeps moving under us.
        const std::string uname = maildir_unique_name(r.path.substr(r.path.rfind('/') + 1));
        for (int attempt = 0; attempt < 16 && !it.found; ++attempt) {
          std::string now = resolve_message(dir, uname);
          if (now.empty()) return;  // deleted: it did not exist throughout
          it.found = read_file(dir + "/" + now, -1, it.buf, it.st);
          if (it.found) it.path = now;
        }
        if (!it.found) {
          throw Error(ErrorCode::kSource, "message " + uname + " in " + dir +
                                              " kept being renamed while it was read (16 attempts)");
        }
      }
      if (!it.found) return;
      const std::string_view m = it.buf.view();
      it.sha256 = sha256(m.data(), m.size());
      if (r.message) {
        it.header_length = header_block_length(m);
        it.header = repo_.blob_id(m.data(), it.header_length);
        if (it.header_length < m.size())
          it.body = repo_.blob_id(m.data() + it.header_length, m.size() - it.header_length);
      } else if (r.whole_blob && !m.empty() && m.size() < r.delta_min) {
        it.blob = repo_.blob_id(m.data(), m.size());
      }
    } catch (...) {
      it.found = false;
      it.failure = std::current_exception();
    }
  }

  // A file of requests_ opened ahead of its read, with the kernel asked to read it
  // in meanwhile (POSIX_FADV_WILLNEED), so that several are read from the disk at
  // once; closed unless released to read().
  struct OpenedAhead {
    int fd = -1;
    std::uint64_t size = 0;  // as scanned
    OpenedAhead(int f, std::uint64_t s) : fd(f), size(s) {}
    OpenedAhead(OpenedAhead&& o) noexcept : fd(std::exchange(o.fd, -1)), size(o.size) {}
    OpenedAhead& operator=(OpenedAhead&&) = delete;
    ~OpenedAhead() {
      if (fd >= 0) ::close(fd);
    }
    int release() { return std::exchange(fd, -1); }
  };

  const Repository& repo_;  // blob_id() only: thread-safe
  std::deque<OpenedAhead> opened_;  // reader thread only: requests_' first files
  std::uint64_t opened_bytes_ = 0;  // their scanned sizes
  // Reader thread only: files read, and the count up to which files are opened
  // ahead (kColdReads past the last one that missed the page cache).
  std::uint64_t reads_ = 0, cold_until_ = 0;
  std::uint64_t opened_generation_ = 0;
  std::uint64_t generation_ = 0;  // begin() calls
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Request> requests_;
  std::deque<Item> ready_;
  std::vector<Item> free_;
  std::string dir_;
  std::size_t ready_bytes_ = 0, held_bytes_ = 0, free_bytes_ = 0;
  bool busy_ = false, stop_ = false, consumer_waiting_ = false, reader_waiting_ = false;
  std::exception_ptr fatal_;
  std::thread thread_;  // last: started once everything above exists
};

// A directory timestamp younger than this at scan time is not trusted for the fast
// path: a change in the same clock tick (file times are jiffy-coarse) could hide.
constexpr std::int64_t kRacyNs = 2'000'000'000;

class Backup {
 public:
  Backup(const Config& cfg, const BackupOptions& opts) : cfg_(cfg), opts_(opts) {}

  BackupStats run() {
    auto t0 = std::chrono::steady_clock::now();
    if (cfg_.sources.empty()) {
      throw Error(ErrorCode::kUsage, cfg_.origin + ": no [[source]] configured: nothing to back up");
    }
    // Discover first: a source that is not a Maildir fails before the vault is touched.
    std::vector<MailboxSpec> mailboxes;
    std::vector<bool> keys_backed_up;            // per mailbox: its source names mail_crypt_keys
    std::vector<const std::string*> mbox_roots;  // per mailbox: its mbox source root, or null
    for (const SourceConfig& s : cfg_.sources) {
      if (s.layout == kMboxLayout) {
        mailboxes.push_back(discover_mbox(s.root));
        mbox_roots.push_back(&s.root);
        keys_backed_up.push_back(true);
        continue;
      }
      std::vector<std::string> layouts =
          s.profile.empty() ? std::vector<std::string>{s.layout} : layout_profile(s.profile);
      for (auto& m : discover_mailboxes(s.root, layouts, s.profile)) {
        m.dovecot_index = s.dovecot_index;
        mailboxes.push_back(std::move(m));
        mbox_roots.push_back(nullptr);
        keys_backed_up.push_back(!s.mail_crypt_keys.empty());
      }
      if (!s.mail_crypt_keys.empty()) {
        // Dovecot's mail_crypt keys: without them restored mail is unreadable, so
        // they travel in the same snapshot, as a mailbox of plain files.
        struct stat st;
        if (stat(s.mail_crypt_keys.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
          throw Error(ErrorCode::kSource, "mail_crypt_keys " + s.mail_crypt_keys +
                                              " is not a directory; name the directory holding the "
                                              "mail_crypt key files (e.g. /etc/dovecot/mail-crypt)");
        }
        MailboxSpec k;
        k.name = "mail_crypt-keys" + (keys_sources_++ ? "-" + std::to_string(keys_sources_) : std::string());
        k.source = s.mail_crypt_keys;
        k.rel = "." + k.name;
        k.abs = s.mail_crypt_keys;
        mailboxes.push_back(std::move(k));
        mbox_roots.push_back(nullptr);
        keys_backed_up.push_back(true);
      }
    }
    catalog_ = std::make_unique<Catalog>(cfg_.state_dir);
    // No delta state at all (a new, rebuilt or lost catalog): the next version of a
    // delta-managed file is computed against the signature the vault holds.
    recover_deltas_ = !catalog_->has_deltas();
    repo_ = open_repository(cfg_, catalog_.get());
    if (!repo_->crypto().has_secret_key(repo_->config().agent_key)) {
      throw Error(ErrorCode::kKey, "the agent secret key " + repo_->config().agent_key +
                                       " is not in GNUPGHOME=" + cfg_.gnupghome +
                                       ": backups are signed with it");
    }
    Lease lease(repo_->transport(), "backup");
    if (lease.broke_stale()) warn("broke a stale vault lease left by an interrupted run");
    reconcile_with_vault();

    uploader_ = std::make_unique<PackUploader>(cfg_, repo_->config(), cfg_.gnupghome);
    data_ = std::make_unique<PackWriter>(PackKind::kData, repo_->config().pack_size + (1 << 20));
    meta_ = std::make_unique<PackWriter>(PackKind::kMetadata,
                                         pack_target(repo_->config(), PackKind::kMetadata) + (1 << 20));
    reader_ = std::make_unique<ReadAhead>(*repo_);
    catalog_->begin_staging();

    Snapshot snap;
    snap.time_ns = clock_now_ns();  // REDUIT_NOW in simulations (vault/clock.hpp)
    snap.host = cfg_.host;
    snap.reduit_version = REDUIT_VERSION;
    snap.tags = opts_.tags;
    for (std::size_t mi = 0; mi < mailboxes.size(); ++mi) {
      const MailboxSpec& m = mailboxes[mi];
      SnapshotMailbox sm;
      sm.name = m.name;
      sm.source = m.source;
      sm.path = m.rel;
      std::vector<std::string> folders = mbox_roots[mi] ? std::vector<std::string>{""} : find_folders(m.abs);
      crypted_in_mailbox_ = 0;
      for (const std::string& f : folders) {
        sm.folders.push_back(backup_folder(m, f, folders, mbox_roots[mi]));
        snap.messages += sm.folders.back().messages;
        snap.bytes += sm.folders.back().bytes;
        lease.renew_if_due();
      }
      check_mail_crypt(m, keys_backed_up[mi]);
      snap.mailboxes.push_back(std::move(sm));
      ++stats_.mailboxes;
    }
    flush_pack(*data_);
    flush_pack(*meta_);
    uploader_->finish();
    drain();
    if (progress_shown_) fprintf(stderr, "\r\033[K");

    // Commit: index objects for every journaled pack (64 packs each, so memory stays
    // bounded), then the snapshot — the commit point.
    catalog_->end_staging();
    for (const auto& [key, value] : crypt_marks_) catalog_->set_meta(key, value);
    write_index();  // this run's last packs; then any an interrupted run left unindexed
    std::uint64_t meta_before = repo_->transport().stats().bytes_written;
    for (std::vector<IndexPack> batch; !(batch = catalog_->unindexed_packs(kIndexPacks)).empty();) {
      const Hash index = repo_->put_object("index", encode_index(batch));
      std::vector<Hash> ids;
      for (const auto& p : batch) ids.push_back(p.id);
      catalog_->record_index(index, ids);
    }
    std::string text = encode_snapshot(snap);
    Hash sid = repo_->put_object("snapshots", Bytes(text.begin(), text.end()));
    catalog_->add_snapshot(to_hex(sid), snap, text);
    catalog_->commit_files();

    stats_.snapshot_id = to_hex(sid);
    stats_.messages = snap.messages;
    stats_.bytes = snap.bytes;
    stats_.data_bytes_uploaded = uploader_->data_bytes();
    stats_.metadata_bytes_uploaded =
        uploader_->metadata_bytes() + index_bytes_ + (repo_->transport().stats().bytes_written - meta_before);
    stats_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    // The snapshot object's id is the manifest root: it names (by hash) every tree,
    // and through them every blob, of this backup.
    try {
      for (auto& w :
           audit_record(cfg_, *catalog_, repo_.get(), "backup",
                        {{"result", "ok"},
                         {"snapshot", stats_.snapshot_id},
                         {"root", stats_.snapshot_id},
                         {"host", snap.host},
                         {"mailboxes", stats_.mailboxes},
                         {"messages", snap.messages},
                         {"bytes", snap.bytes},
                         {"bytes_added", stats_.data_bytes_uploaded + stats_.metadata_bytes_uploaded},
                         {"duration_s", std::round(stats_.seconds * 1000) / 1000}},
                        repo_->config().agent_key))
        warn(w);
    } catch (const std::exception& e) {
      // The snapshot is committed: a catalog that cannot take the entry is a warning.
      warn(std::string("the audit log could not record this backup: ") + e.what());
    }
    lease.release();
    uploader_.reset();
    return stats_;
  }

 private:
  void warn(const std::string& w) {
    // A folder scanned again must not repeat what it said the first time.
    if (std::find(stats_.warnings.begin(), stats_.warnings.end(), w) == stats_.warnings.end())
      stats_.warnings.push_back(w);
  }

  // The catalog is a cache of the vault: bring it in line with what is really there
  // before trusting it for deduplication.
  void reconcile_with_vault() {
    // Uploads interrupted by a crash; we hold the lease, so nobody else is uploading.
    for (const std::string& name : repo_->transport().list("tmp")) repo_->transport().remove(name);
    catalog_->merge_blobs();  // blob rows journaled by a run that did not finish
    std::vector<Hash> vault_indexes = repo_->list_objects("index");
    if (catalog_->pack_ids().empty() && !vault_indexes.empty()) {
      // A new or lost state dir on a host backing up into an existing vault: reuse
      // what the vault holds instead of uploading everything again.
      std::vector<Hash> ids;
      std::uint64_t packs = 0;
      for (const IndexPack& p : repo_->load_indexes(&ids)) {
        catalog_->add_pack(p, /*indexed=*/true);
        ++packs;
      }
      catalog_->merge_blobs();
      for (const Hash& id : ids) catalog_->add_index(id);
      warn("the catalog knew nothing of this vault's " + std::to_string(packs) +
           " pack(s); rebuilt its pack index from the vault's " + std::to_string(ids.size()) +
           " index object(s) (every file is read once, nothing stored is uploaded again)");
    } else {
      std::set<Hash> present(vault_indexes.begin(), vault_indexes.end());
      std::vector<Hash> missing;
      for (const Hash& id : catalog_->index_ids()) {
        if (!present.count(id)) missing.push_back(id);
      }
      if (!missing.empty()) {
        catalog_->reindex_all(missing);
        warn(std::to_string(missing.size()) +
             " index object(s) known to the catalog are missing from the vault (e.g. " +
             to_hex(missing.front()) + "); this backup writes a new index naming every pack");
      }
    }
    std::map<Hash, std::uint64_t> in_vault = repo_->list_packs();
    std::vector<Hash> missing;
    for (const Hash& id : catalog_->pack_ids()) {
      if (!in_vault.count(id)) missing.push_back(id);
    }
    if (!missing.empty()) {
      stats_.packs_forgotten = catalog_->forget_packs(missing);
      warn(std::to_string(missing.size()) +
           " pack(s) known to the catalog are missing from the vault (e.g. " + to_hex(missing.front()) +
           "); their content is read and uploaded again");
    }
  }

  bool known(const Hash& id) { return pending_.count(id) || catalog_->has_blob(id); }

  // Dovecot's mail_crypt encrypts messages at rest (files beginning "CRYPTED"). A
  // mailbox seen with one is remembered in the catalog (later runs read only new
  // files), and every run says so loudly while its keys are not in the backup set.
  void check_mail_crypt(const MailboxSpec& m, bool keys_backed_up) {
    const std::string key = "mail_crypt:" + m.abs;
    // Written after the staging transaction: a write to the main database now would
    // hold its lock against the upload thread's journal until the run ends.
    if (crypted_in_mailbox_ > 0) crypt_marks_.emplace_back(key, std::to_string(crypted_in_mailbox_));
    if (keys_backed_up || (crypted_in_mailbox_ == 0 && !catalog_->get_meta(key))) return;
    warn("WARNING: mailbox " + m.name +
         " holds messages encrypted by Dovecot's mail_crypt (they begin "
         "with CRYPTED) and its keys are not in the backup set: restored mail would be unreadable. "
         "Set mail_crypt_keys in this [[source]] to the directory of the key files.");
  }

  // Stores a blob unless the vault or this run has it; true when it was new.
  bool add_blob(PackWriter& w, BlobType type, const Hash& id, const char* data, std::size_t size) {
    if (known(id)) return false;
    pending_.insert(id);
    w.add(type, id, data, size);
    ++stats_.blobs_new;
    if (type != BlobType::kTree && type != BlobType::kSignature) {
      ++stats_.content_blobs_new;
      stats_.content_bytes_new += size;
    }
    stats_.bytes_new += size;
    if (w.size() >= pack_target(repo_->config(), w.kind())) flush_pack(w);
    return true;
  }

  void flush_pack(PackWriter& w) {
    if (w.empty()) return;
    std::vector<PackEntry> entries = w.entries();
    PackKind kind = w.kind();
    Bytes plain = w.finish(uploader_->take_spare(kind));
    (kind == PackKind::kData ? stats_.data_packs : stats_.metadata_packs)++;
    uploader_->submit(kind, std::move(plain), std::move(entries));
    drain();
  }

  // Completed packs are journaled in the catalog's pending_blobs, which has_blob()
  // does not see until merged into `blobs` (in id order, one transaction). Their ids
  // stay in the in-memory set until then; a merge every kMergeBlobs blobs bounds
  // that set (a million-message first run journals two million blobs).
  static constexpr std::size_t kMergeBlobs = 1 << 18;

  void drain() {
    for (IndexPack& p : uploader_->take_completed()) {
      for (const auto& e : p.blobs) journaled_.push_back(e.id);
      to_index_.push_back(std::move(p));
      if (to_index_.size() == kIndexPacks) write_index();
    }
    if (journaled_.size() < kMergeBlobs) return;
    catalog_->merge_blobs();
    for (const Hash& id : journaled_) pending_.erase(id);
    journaled_.clear();
    journaled_.shrink_to_fit();
  }

  // Index objects name kIndexPacks packs each (FORMAT.md), so memory stays bounded.
  static constexpr std::size_t kIndexPacks = 64;

  // Writes an index object for this run's uploaded packs in to_index_, as soon as
  // there are kIndexPacks of them: their entries are still in memory, so the
  // catalog is not read back for them, and the commit at the end of the run writes
  // only the last one. An index names only uploaded packs, so one written before
  // a run is killed is as good as one written at its end.
  void write_index() {
    if (to_index_.empty()) return;
    std::sort(to_index_.begin(), to_index_.end(), [](const IndexPack& a, const IndexPack& b) { return a.id < b.id; });
    for (IndexPack& p : to_index_) {
      std::sort(p.blobs.begin(), p.blobs.end(),
                [](const PackEntry& a, const PackEntry& b) { return a.offset < b.offset; });
    }
    const std::uint64_t before = repo_->transport().stats().bytes_written;
    const Hash index = repo_->put_object("index", encode_index(to_index_));
    index_bytes_ += repo_->transport().stats().bytes_written - before;
    std::vector<Hash> ids;
    for (const auto& p : to_index_) ids.push_back(p.id);
    catalog_->record_index(index, ids);
    to_index_.clear();
  }

  void show_progress() {
    if (!opts_.progress) return;
    auto now = std::chrono::steady_clock::now();
    if (now - last_progress_ < std::chrono::milliseconds(250)) return;
    last_progress_ = now;
    progress_shown_ = true;
    fprintf(stderr, "\r\033[K%llu files, %llu read (%s), %llu new blobs (%s), %llu packs",
            static_cast<unsigned long long>(stats_.files), static_cast<unsigned long long>(stats_.files_read),
            human_bytes(stats_.bytes_read).c_str(), static_cast<unsigned long long>(stats_.blobs_new),
            human_bytes(stats_.bytes_new).c_str(),
            static_cast<unsigned long long>(stats_.data_packs + stats_.metadata_packs));
  }

  // Maildir messages are immutable and every delivery, flag change or deletion is a
  // rename in cur/ or new/, which changes that directory's mtime and ctime. A
  // folder whose directories carry the stamp recorded last time, and whose other
  // files are unchanged, keeps its tree without a listing or stat of its messages.
  std::optional<SnapshotFolder> unchanged_folder(const MailboxSpec& m, const std::string& folder,
                                                 const std::vector<std::string>& folders,
                                                 const std::string& folder_abs, const std::string& stamp) {
    if (stamp.empty() || opts_.full_scan) return std::nullopt;
    std::optional<Catalog::CachedFolder> prev = catalog_->find_folder(folder_abs);
    if (!prev || prev->stamp != stamp || !known(prev->tree)) return std::nullopt;
    ScannedFolder light = scan_folder(m.abs, folder, folders, /*with_messages=*/false, m.dovecot_index);
    std::uint64_t others = 0;
    for (const ScannedEntry& e : light.entries) {
      if (e.kind == EntryKind::kDir) {
        if (e.path != "cur" && e.path != "new" && e.path != "tmp") return std::nullopt;
        continue;
      }
      std::optional<CachedFile> c = catalog_->find_file(folder_abs, e.key);
      if (!c || c->path != e.path || c->dev != e.dev || c->ino != e.ino || c->size != e.size ||
          c->mtime_ns != e.mtime_ns || c->ctime_ns != e.ctime_ns) {
        return std::nullopt;
      }
      ++others;
    }
    if (!light.skipped.empty() || others > prev->files) return std::nullopt;
    SnapshotFolder out;
    out.name = folder;
    out.tree = prev->tree;
    out.messages = prev->messages;
    out.bytes = prev->bytes;
    struct stat dst;
    if (stat(folder_abs.c_str(), &dst) == 0) {
      out.mode = dst.st_mode & 07777;
      out.mtime_ns = static_cast<std::int64_t>(dst.st_mtim.tv_sec) * 1000000000 + dst.st_mtim.tv_nsec;
    }
    catalog_->carry_folder(folder_abs);
    stats_.files += prev->files;
    ++stats_.trees_reused;
    ++stats_.folders;
    ++stats_.folders_unchanged;
    return out;
  }

  // A folder's control files and index files as one cut with its messages
  // (MAILDIR.md, "Concurrency during a backup"): their stat before the scan and
  // after the last read must agree, and no dovecot-uidlist.lock may exist at
  // either moment (Dovecot holds it from renaming a saved message into the folder
  // until the uidlist names it).
  static std::string control_stamp(const std::string& folder_abs, bool with_index) {
    std::string out;
    struct stat st;
    if (lstat((folder_abs + "/dovecot-uidlist.lock").c_str(), &st) == 0) return "locked";
    std::vector<std::string> names{"dovecot-uidlist", "dovecot-keywords"};
    if (with_index) {
      if (DIR* d = opendir(folder_abs.c_str())) {
        while (dirent* e = readdir(d)) {
          if (is_dovecot_index(e->d_name)) names.emplace_back(e->d_name);
        }
        closedir(d);
      }
      std::sort(names.begin() + 2, names.end());
    }
    for (const std::string& n : names) {
      if (lstat((folder_abs + "/" + n).c_str(), &st) != 0) {
        out += n + ":-;";
        continue;
      }
      out += n + ":" + std::to_string(st.st_ino) + ":" + std::to_string(st.st_size) + ":" +
             std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec) + ":" +
             std::to_string(st.st_ctim.tv_sec) + "." + std::to_string(st.st_ctim.tv_nsec) + ";";
    }
    return out;
  }

  SnapshotFolder backup_folder(const MailboxSpec& m, const std::string& folder,
                               const std::vector<std::string>& folders, const std::string* mbox_root) {
    const std::string folder_abs = folder.empty() ? m.abs : m.abs + "/" + folder;
    // The stamp is read before the scan: a change after it is seen next time.
    const std::string stamp = mbox_root ? "" : folder_stamp(folder_abs, now_ns(), kRacyNs);
    if (auto same = unchanged_folder(m, folder, folders, folder_abs, stamp)) return *same;
    bool with_index = m.dovecot_index;
    constexpr int kAttempts = 5;
    for (int attempt = 1;; ++attempt) {
      const std::string before = control_stamp(folder_abs, with_index);
      const std::uint64_t files = stats_.files, vanished = stats_.vanished;
      BuiltFolder b = build_folder(m, folder, folders, mbox_root, with_index);
      const std::string after = control_stamp(folder_abs, with_index);
      const bool cut = before == after && before != "locked";
      if (!cut && attempt < kAttempts) {
        stats_.files = files;  // scanned again: count once
        stats_.vanished = vanished;
        ++stats_.folder_rescans;
        continue;
      }
      if (!cut && with_index) {
        // Dovecot's index files are restored all from one moment or not at all.
        warn("Dovecot index files of " + folder_abs + " kept changing during " + std::to_string(kAttempts) +
             " scans; left out of this snapshot (Dovecot rebuilds them)");
        with_index = false;
        attempt = 0;
        stats_.files = files;
        stats_.vanished = vanished;
        continue;
      }
      if (!cut) {
        warn("the dovecot-uidlist of " + folder_abs + " kept changing during " + std::to_string(kAttempts) +
             " scans; the snapshot holds the last scan (Dovecot gives messages it does not list new UIDs)");
      }
      for (const auto& [key, cf] : b.rows) catalog_->stage_file(b.folder_key, key, cf);
      catalog_->stage_folder(b.folder_key, {stamp, b.out.tree, b.out.messages, b.out.bytes, b.files});
      catalog_->stage_folder_tree(b.folder_key, b.folder_tree);
      ++stats_.folders;
      return b.out;
    }
  }

  struct BuiltFolder {
    SnapshotFolder out;
    std::string folder_key;
    std::vector<std::pair<std::string, CachedFile>> rows;  // stat-cache rows to stage
    Catalog::FolderTree folder_tree;                       // the base of the next run's patch
    std::uint64_t files = 0;
  };

  // A folder rescanned since its last tree (FORMAT.md §7.1): the same entries keep
  // that tree; otherwise a patch against it, while the chain stays short (depth
  // below kTreeRebaseDepth, its patches together at most half the full tree's
  // plaintext, `full_size`). Returns the tree to use (id, depth, chain bytes; no
  // entries); nullopt means "write the full tree".
  static constexpr std::uint32_t kTreeRebaseDepth = 16;
  std::optional<Catalog::FolderTree> tree_base(const std::string& folder_key, std::size_t full_size,
                                               const Tree& tree) {
    std::optional<Catalog::FolderTree> prev = catalog_->find_folder_tree(folder_key);
    if (!prev || prev->depth >= kTreeRebaseDepth || !known(prev->tree)) return std::nullopt;
    Tree base;
    base.entries = std::move(prev->entries);
    base.depth = prev->depth;
    Tree patch = make_tree_patch(base, prev->tree, tree);
    Catalog::FolderTree out;
    if (patch.removed.empty() && patch.entries.empty()) {
      ++stats_.trees_reused;
      out.tree = prev->tree;
      out.depth = prev->depth;
      out.chain_bytes = prev->chain_bytes;
      return out;
    }
    std::string text = encode_tree(patch);
    if (prev->chain_bytes + text.size() > full_size / 2) return std::nullopt;
    out.tree = repo_->blob_id(text.data(), text.size());
    out.depth = patch.depth;
    out.chain_bytes = prev->chain_bytes + text.size();
    if (known(out.tree)) {
      ++stats_.trees_reused;
    } else {
      ++stats_.trees_new;
      ++stats_.tree_patches;
      add_blob(*meta_, BlobType::kTree, out.tree, text.data(), text.size());
      // What the next forget walks first, kept so that it decrypts no metadata pack
      // for it (vault/catalog.hpp, tree_cache). Patches only: at most half a full
      // tree, where full trees can be the size of the mailbox's message list.
      catalog_->stage_tree_blob(out.tree, text);
    }
    return out;
  }

  BuiltFolder build_folder(const MailboxSpec& m, const std::string& folder,
                           const std::vector<std::string>& folders, const std::string* mbox_root,
                           bool with_index) {
    ScannedFolder sf = mbox_root ? scan_mbox(m, *mbox_root)
                                 : scan_folder(m.abs, folder, folders, /*with_messages=*/true, with_index);
    if (!sf.skipped.empty()) {
      warn(std::to_string(sf.skipped.size()) + " symlink(s) or special file(s) not backed up, e.g. " +
           sf.abs + "/" + sf.skipped.front());
    }
    BuiltFolder b;
    const std::string& folder_key = b.folder_key = sf.abs;
    Tree tree;
    SnapshotFolder& out = b.out;
    out.name = folder;
    struct stat dst;
    if (stat(sf.abs.c_str(), &dst) == 0) {
      out.mode = dst.st_mode & 07777;
      out.mtime_ns = static_cast<std::int64_t>(dst.st_mtim.tv_sec) * 1000000000 + dst.st_mtim.tv_nsec;
    }
    // First the stat cache decides which files must be read, so the reader thread
    // can start on them while the entries are stored in order below. A hit's row
    // goes to b.rows at once (its place there is kept); a file read gets its row
    // once it is stored.
    struct Decision {
      bool read = false;
      bool changing = false;
      std::size_t row = 0;  // hits: index in b.rows
    };
    std::vector<Decision> decisions(sf.entries.size());
    std::vector<ReadAhead::Request> reads;
    for (std::size_t i = 0; i < sf.entries.size(); ++i) {
      const ScannedEntry& e = sf.entries[i];
      if (e.kind == EntryKind::kDir) continue;
      Decision& d = decisions[i];
      CachedFile cf;
      std::optional<CachedFile> cached = catalog_->find_file(folder_key, e.key);
      bool hit = cached && cached->dev == e.dev && cached->ino == e.ino && cached->size == e.size &&
                 cached->mtime_ns == e.mtime_ns &&
                 (cached->path == e.path ? cached->ctime_ns == e.ctime_ns : e.kind == EntryKind::kMessage);
      // Files that change in place are stored as delta chains (FORMAT.md §4.1);
      // messages never are.
      const bool changing = d.changing =
          e.kind == EntryKind::kFile && (mbox_root || is_changing_file(e.path));
      if (hit && changing && cached->size > 0 && !cached->blob) {
        // Stored as a delta: its chain state must still be there, else read it again.
        std::optional<DeltaState> ds = catalog_->find_delta(folder_key, e.key);
        hit = ds && ds->depth > 0 && ds->sha256 == cached->sha256;
        if (hit) {
          cf = *cached;
          cf.delta = ds->head;
          cf.signature = ds->base_signature;
          cf.chain = ds->chain;
          catalog_->stage_delta(folder_key, e.key, *ds);
        }
      } else if (hit) {
        cf = *cached;
        if (changing && cached->size >= cfg_.delta.min_size) {
          if (std::optional<DeltaState> ds = catalog_->find_delta(folder_key, e.key)) {
            if (ds->depth == 0 && ds->head == cached->blob) {
              cf.signature = ds->base_signature;
              catalog_->stage_delta(folder_key, e.key, *ds);
            }
          }
        }
      }
      if (hit) {
        d.row = b.rows.size();
        b.rows.emplace_back(e.key, std::move(cf));
      } else {
        d.read = true;
        ReadAhead::Request r;
        r.entry = i;
        r.path = e.path;
        r.size = e.size;
        r.message = e.kind == EntryKind::kMessage;
        r.whole_blob = !r.message;
        r.delta_min = changing ? cfg_.delta.min_size : std::numeric_limits<std::uint64_t>::max();
        reads.push_back(std::move(r));
      }
    }
    reader_->begin(sf.abs, std::move(reads));
    for (std::size_t i = 0; i < sf.entries.size(); ++i) {
      ScannedEntry& e = sf.entries[i];
      TreeEntry te;
      te.kind = e.kind;
      te.path = e.path;
      te.mode = e.mode;
      te.mtime_ns = e.mtime_ns;
      te.uid = e.uid;
      te.gid = e.gid;
      if (e.kind == EntryKind::kDir) {
        tree.entries.push_back(std::move(te));
        continue;
      }
      const Decision& d = decisions[i];
      CachedFile read_cf;
      CachedFile& cf = d.read ? read_cf : b.rows[d.row].second;
      if (d.read) {
        ReadAhead::Item item = reader_->next();
        if (item.entry != i) throw Error(ErrorCode::kInternal, "read-ahead out of order in " + sf.abs);
        bool read = false;
        try {
          read = store_read(item, sf, m, folder, e, cf, d.changing);
        } catch (const Error& err) {
          // One unreadable file must not cost every other mailbox its backup.
          if (err.code() != ErrorCode::kSource) throw;
          warn(std::string(err.what()) + "; not in this snapshot");
          reader_->recycle(std::move(item));
          continue;
        }
        reader_->recycle(std::move(item));
        if (!read) {
          ++stats_.vanished;  // deleted after the scan listed it: churn, not an error
          continue;
        }
      }
      ++stats_.files;  // in the snapshot (vanished and unreadable files are not)
      cf.path = e.path;
      cf.dev = e.dev;
      cf.ino = e.ino;
      cf.ctime_ns = e.ctime_ns;
      te.path = e.path;
      te.mode = cf.mode = e.mode;
      te.mtime_ns = cf.mtime_ns = e.mtime_ns;
      te.size = cf.size = e.size;
      te.sha256 = cf.sha256;
      te.header = cf.header;
      te.body = cf.body;
      te.blob = cf.blob;
      te.delta = cf.delta;
      te.signature = cf.signature;
      te.chain = cf.chain;
      te.uid = e.uid;
      te.gid = e.gid;
      if (e.nlink > 1) te.link = link_group(e.dev, e.ino);
      if (d.read) b.rows.emplace_back(e.key, std::move(cf));
      if (e.kind == EntryKind::kMessage) ++out.messages;
      out.bytes += e.size;
      tree.entries.push_back(std::move(te));
      show_progress();
    }
    std::sort(tree.entries.begin(), tree.entries.end(),
              [](const TreeEntry& a, const TreeEntry& b) { return a.path < b.path; });
    std::string text = encode_tree(tree);
    out.tree = repo_->blob_id(text.data(), text.size());
    Catalog::FolderTree row;
    if (known(out.tree)) {
      ++stats_.trees_reused;
    } else if (std::optional<Catalog::FolderTree> patched = tree_base(folder_key, text.size(), tree)) {
      row = std::move(*patched);
      out.tree = row.tree;
    } else {
      ++stats_.trees_new;
      add_blob(*meta_, BlobType::kTree, out.tree, text.data(), text.size());
    }
    // Where each message is, for `reduit find`: once per new tree (an unchanged
    // folder keeps its tree id and its rows).
    if (out.messages && !catalog_->has_tree_messages(out.tree)) catalog_->stage_tree_messages(out.tree, tree);
    for (const TreeEntry& e : tree.entries) b.files += e.kind != EntryKind::kDir;
    row.tree = out.tree;
    row.entries = std::move(tree.entries);
    b.folder_tree = std::move(row);
    return b;
  }

  // Stores the blobs of a changed file that the reader thread read and hashed.
  // Returns false when it vanished; rethrows the reader's error for it.
  bool store_read(const ReadAhead::Item& item, const ScannedFolder& sf, const MailboxSpec& mb,
                  const std::string& folder, ScannedEntry& e, CachedFile& cf, bool changing) {
    if (item.failure) std::rethrow_exception(item.failure);
    if (!item.found) return false;
    const struct stat& st = item.st;
    e.path = item.path;
    // What we read is what we record.
    e.dev = st.st_dev;
    e.ino = st.st_ino;
    e.nlink = st.st_nlink;
    e.uid = st.st_uid;
    e.gid = st.st_gid;
    const std::string_view m = item.buf.view();
    e.size = m.size();
    e.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    e.ctime_ns = static_cast<std::int64_t>(st.st_ctim.tv_sec) * 1000000000 + st.st_ctim.tv_nsec;
    e.mode = st.st_mode & 07777;
    ++stats_.files_read;
    stats_.bytes_read += m.size();
    stats_.files_uncached += item.uncached;
    stats_.files_read_ahead += item.read_ahead;
    cf.sha256 = item.sha256;
    if (e.kind == EntryKind::kMessage && m.substr(0, 7) == "CRYPTED") {
      ++crypted_in_mailbox_;
      ++stats_.mail_crypt_messages;
    }
    if (e.kind == EntryKind::kMessage) {
      const std::size_t hl = item.header_length;
      cf.header = item.header;
      const bool new_header = add_blob(*data_, BlobType::kHeader, *cf.header, m.data(), hl);
      if (item.body) {
        cf.body = item.body;
        add_blob(*data_, BlobType::kBody, *cf.body, m.data() + hl, m.size() - hl);
      }
      // A header never stored means a message never recorded: skip the look-up.
      if (new_header || !catalog_->has_message(cf.sha256)) {
        HeaderSummary h = summarize_headers(std::string_view(m.data(), hl));
        catalog_->add_message(cf.sha256, h.message_id, h.date, h.from, h.to, h.subject);
      }
    } else if (changing && m.size() >= cfg_.delta.min_size) {
      store_changing(sf.abs, mb, folder, e, m, cf);
    } else if (!m.empty()) {
      cf.blob = item.blob;
      add_blob(*data_, BlobType::kFile, *cf.blob, m.data(), m.size());
    }
    return true;
  }

  // A file that changes in place (content `m`, SHA-256 already in cf.sha256): a
  // delta against its previous version when the chain is short enough and the
  // delta small enough, else a full copy (a re-base) with its signature stored as
  // metadata, so that a host that lost its catalog can delta against it.
  void store_changing(const std::string& folder_key, const MailboxSpec& mb, const std::string& folder,
                      const ScannedEntry& e, std::string_view m, CachedFile& cf) {
    std::optional<DeltaState> prev = catalog_->find_delta(folder_key, e.key);
    if (!prev && recover_deltas_) prev = vault_delta_state(mb, folder, e.path);
    if (prev && !(known(prev->head) && known(prev->base_signature))) prev.reset();
    if (prev && prev->sha256 == cf.sha256 && prev->size == m.size()) {  // same bytes, new stat
      (prev->depth == 0 ? cf.blob : cf.delta) = prev->head;
      cf.signature = prev->base_signature;
      cf.chain = prev->chain;
      catalog_->stage_delta(folder_key, e.key, *prev);
      return;
    }
    DeltaState next;
    next.sha256 = cf.sha256;
    next.size = m.size();
    next.signature = make_signature(m);
    if (prev && prev->depth < cfg_.delta.max_chain) {
      std::string d = make_delta(LoadedSignature(prev->signature), m);
      if (static_cast<double>(kDeltaHeaderSize + d.size()) <=
          cfg_.delta.max_ratio * static_cast<double>(m.size())) {
        DeltaHeader h{prev->head, prev->sha256, prev->size, cf.sha256, m.size(), prev->depth + 1};
        std::string blob = encode_delta_blob(h, d);
        next.head = repo_->blob_id(blob.data(), blob.size());
        next.depth = h.depth;
        next.base_signature = prev->base_signature;
        next.chain = prev->chain;
        next.chain.push_back(prev->head);
        if (add_blob(*data_, BlobType::kDelta, next.head, blob.data(), blob.size())) {
          ++stats_.delta_files;
          stats_.delta_bytes += blob.size();
        }
        cf.delta = next.head;
        cf.signature = next.base_signature;
        cf.chain = next.chain;
        catalog_->stage_delta(folder_key, e.key, next);
        return;
      }
    }
    if (prev) ++stats_.rebased;
    cf.blob = repo_->blob_id(m.data(), m.size());
    add_blob(*data_, BlobType::kFile, *cf.blob, m.data(), m.size());
    std::string sig = encode_signature_blob(SignatureHeader{*cf.blob, cf.sha256, m.size()}, next.signature);
    next.head = *cf.blob;
    next.depth = 0;
    next.base_signature = repo_->blob_id(sig.data(), sig.size());
    add_blob(*meta_, BlobType::kSignature, next.base_signature, sig.data(), sig.size());
    cf.signature = next.base_signature;
    catalog_->stage_delta(folder_key, e.key, next);
  }

  // After a catalog loss: the chain state of a file as the vault's latest snapshot
  // of this host describes it. The agent cannot read data packs, so the next
  // version is computed against the chain's base, whose signature is metadata: a
  // delta of depth 1 (FORMAT.md §4.2). Looks only at metadata; any failure means
  // "no previous version" (the file is then stored whole).
  std::optional<DeltaState> vault_delta_state(const MailboxSpec& mb, const std::string& folder,
                                              const std::string& path) {
    try {
      if (!previous_) {
        previous_ = std::make_unique<Previous>();
        // The catalog's copy of the snapshots when it has one (catalog rebuild),
        // else the vault's (a lost state dir); the catalog is mid-transaction here.
        std::vector<SnapshotRef> snaps;
        for (auto& [id, json] : catalog_->snapshot_rows()) {
          snaps.push_back({id, decode_snapshot(Bytes(json.begin(), json.end()))});
        }
        if (snaps.empty()) snaps = list_snapshots(*repo_, nullptr, nullptr);
        std::stable_sort(snaps.begin(), snaps.end(), [](const SnapshotRef& a, const SnapshotRef& b) {
          return a.snap.time_ns < b.snap.time_ns;
        });
        for (auto it = snaps.rbegin(); it != snaps.rend(); ++it) {
          if (it->snap.host != cfg_.host) continue;
          for (const SnapshotMailbox& sm : it->snap.mailboxes) {
            for (const SnapshotFolder& f : sm.folders)
              previous_->trees[{sm.source, sm.path, f.name}] = f.tree;
          }
          break;
        }
        if (previous_->trees.empty()) return std::nullopt;
        previous_->index = std::make_unique<BlobIndex>(repo_->load_indexes());
        previous_->fetcher = std::make_unique<BlobFetcher>(*repo_, *previous_->index);
      }
      auto t = previous_->trees.find({mb.source, mb.rel, folder});
      if (t == previous_->trees.end() || !previous_->fetcher) return std::nullopt;
      auto loaded = previous_->loaded.find(t->second);
      if (loaded == previous_->loaded.end()) {
        resolve_tree(
            t->second,
            [&](const Hash& id) {
              std::string_view v = previous_->fetcher->fetch(id, BlobType::kTree);
              return Bytes(v.begin(), v.end());
            },
            previous_->loaded);
        loaded = previous_->loaded.find(t->second);
      }
      for (const TreeEntry& te : loaded->second.entries) {
        if (te.path != path || !te.signature) continue;
        std::string_view sig_stream;
        std::string_view blob = previous_->fetcher->fetch(*te.signature, BlobType::kSignature);
        SignatureHeader h = decode_signature_blob(blob, &sig_stream);
        DeltaState d;
        d.sha256 = h.sha256;
        d.size = h.size;
        d.head = h.file;
        d.depth = 0;
        d.base_signature = *te.signature;
        d.signature = std::string(sig_stream);
        ++stats_.signatures_from_vault;
        return d;
      }
    } catch (const Error& err) {
      if (err.code() != ErrorCode::kVerify && err.code() != ErrorCode::kNotFound) throw;
      warn(std::string("cannot use the vault's delta signatures (") + err.what() + "); storing whole files");
      previous_->fetcher.reset();
    }
    return std::nullopt;
  }

  const Config& cfg_;
  const BackupOptions& opts_;
  BackupStats stats_;
  std::unique_ptr<Catalog> catalog_;
  std::unique_ptr<Repository> repo_;
  std::unique_ptr<PackUploader> uploader_;
  std::unique_ptr<PackWriter> data_, meta_;
  std::unordered_set<Hash, HashHasher> pending_;
  std::uint64_t crypted_in_mailbox_ = 0;
  std::vector<std::pair<std::string, std::string>> crypt_marks_;  // catalog meta, set at commit
  int keys_sources_ = 0;
  std::vector<Hash> journaled_;  // ids of completed packs, in pending_ until merged
  std::vector<IndexPack> to_index_;  // completed packs of this run not yet in an index object
  std::uint64_t index_bytes_ = 0;     // stored bytes of the index objects written during the run
  bool recover_deltas_ = false;
  struct Previous {  // the vault's latest snapshot of this host, for vault_delta_state()
    std::map<std::tuple<std::string, std::string, std::string>, Hash> trees;  // (source, path, folder)
    std::unique_ptr<BlobIndex> index;
    std::unique_ptr<BlobFetcher> fetcher;
    std::map<Hash, Tree> loaded;
  };
  std::unique_ptr<Previous> previous_;
  std::unique_ptr<ReadAhead> reader_;
  std::chrono::steady_clock::time_point last_progress_{};
  bool progress_shown_ = false;
};

}  // namespace

BackupStats run_backup(const Config& cfg, const BackupOptions& opts) {
  auto t0 = std::chrono::steady_clock::now();
  try {
    Backup b(cfg, opts);
    return b.run();
  } catch (const Error& e) {
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    auto audit_warnings = audit_record_best_effort(cfg, nullptr, "backup",
                                                   {{"result", "failed"},
                                                    {"host", cfg.host},
                                                    {"exit", exit_status(e.code())},
                                                    {"error", e.what()},
                                                    {"duration_s", std::round(s * 1000) / 1000}});
    for (const auto& w : audit_warnings) std::fprintf(stderr, "reduit: warning: %s\n", w.c_str());
    throw;
  }
}

}  // namespace reduit
