#include "vault/delta.hpp"

#include <librsync.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "vault/bytes.hpp"
#include "vault/error.hpp"

namespace reduit {

namespace {

constexpr char kDeltaMagic[8] = {'R', 'D', 'D', 'E', 'L', 'T', '0', '1'};
constexpr char kSignatureMagic[8] = {'R', 'D', 'S', 'I', 'G', 'N', '0', '1'};
constexpr std::size_t kChunk = 1 << 16;

[[noreturn]] void malformed(const std::string& what) {
  throw Error(ErrorCode::kVerify, "malformed " + what);
}

void put_le(std::string& b, std::uint64_t v, int n) {
  char le[8];
  store_le(le, v, n);
  b.append(le, n);
}
void put_u64(std::string& b, std::uint64_t v) {
  put_le(b, v, 8);
}
void put_u32(std::string& b, std::uint32_t v) {
  put_le(b, v, 4);
}
void put_hash(std::string& b, const Hash& h) {
  b.append(reinterpret_cast<const char*>(h.data()), h.size());
}
Hash get_hash(const char* p) {
  Hash h;
  std::memcpy(h.data(), p, 32);
  return h;
}

// librsync reports errors on stderr through its trace hook; reduit reports them as
// Error messages instead.
void quiet_librsync() {
  static std::once_flag once;
  std::call_once(once, [] { rs_trace_to([](rs_loglevel, const char*) {}); });
}

struct JobFree {
  void operator()(rs_job_t* j) const { rs_job_free(j); }
};
using Job = std::unique_ptr<rs_job_t, JobFree>;

// Runs a job over all of `in` (eof at its end), appending its output to `out`.
// Returns the job's final result (RS_DONE or an error).
rs_result run_to_string(rs_job_t* job, std::string_view in, std::string& out, std::size_t* left_over) {
  rs_buffers_t buf{};
  buf.next_in = const_cast<char*>(in.data());
  buf.avail_in = in.size();
  buf.eof_in = 1;
  while (true) {
    std::size_t old = out.size();
    out.resize(old + kChunk);
    buf.next_out = out.data() + old;
    buf.avail_out = kChunk;
    rs_result r = rs_job_iter(job, &buf);
    out.resize(old + kChunk - buf.avail_out);
    if (r != RS_BLOCKED) {
      if (left_over) *left_over = buf.avail_in;
      return r;
    }
  }
}

void write_all(int fd, const char* p, std::size_t n, const char* what) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw_errno(std::string("write ") + what, errno);
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

// A scratch file in `dir` that has no name (unlinked at once) and closes itself.
class ScratchFile {
 public:
  explicit ScratchFile(const std::string& dir) {
    std::string tmpl = dir + "/.reduit-delta.XXXXXX";
    fd_ = mkstemp(tmpl.data());
    if (fd_ < 0) throw_errno("create scratch file in " + dir, errno);
    unlink(tmpl.c_str());
  }
  ~ScratchFile() { ::close(fd_); }
  ScratchFile(const ScratchFile&) = delete;
  ScratchFile& operator=(const ScratchFile&) = delete;
  int fd() const { return fd_; }
  void reset() {
    if (ftruncate(fd_, 0) != 0 || lseek(fd_, 0, SEEK_SET) != 0) throw_errno("truncate scratch file", errno);
  }

 private:
  int fd_ = -1;
};

struct CopyArg {
  int fd;
  std::uint64_t size;
  bool outside = false;
  int err = 0;
};

rs_result copy_from_basis(void* opaque, rs_long_t pos, std::size_t* len, void** buf) {
  auto* c = static_cast<CopyArg*>(opaque);
  if (pos < 0 || static_cast<std::uint64_t>(pos) > c->size ||
      *len > c->size - static_cast<std::uint64_t>(pos)) {
    c->outside = true;
    return RS_CORRUPT;
  }
  std::size_t got = 0;
  char* p = static_cast<char*>(*buf);
  while (got < *len) {
    ssize_t n = pread(c->fd, p + got, *len - got, static_cast<off_t>(pos) + static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      c->err = n < 0 ? errno : EIO;
      return RS_IO_ERROR;
    }
    got += static_cast<std::size_t>(n);
  }
  return RS_DONE;
}

}  // namespace

// ---- blobs -----------------------------------------------------------------

std::string encode_delta_blob(const DeltaHeader& h, std::string_view rs_delta) {
  std::string b;
  b.reserve(kDeltaHeaderSize + rs_delta.size());
  b.append(kDeltaMagic, 8);
  put_hash(b, h.basis);
  put_hash(b, h.basis_sha256);
  put_u64(b, h.basis_size);
  put_hash(b, h.target_sha256);
  put_u64(b, h.target_size);
  put_u32(b, h.depth);
  b.append(rs_delta);
  return b;
}

DeltaHeader decode_delta_blob(std::string_view blob, std::string_view* rs_delta) {
  if (blob.size() < kDeltaHeaderSize)
    malformed("delta blob: " + std::to_string(blob.size()) + " bytes, shorter than its header");
  if (std::memcmp(blob.data(), kDeltaMagic, 8) != 0) malformed("delta blob: bad magic");
  const char* p = blob.data() + 8;
  DeltaHeader h;
  h.basis = get_hash(p);
  h.basis_sha256 = get_hash(p + 32);
  h.basis_size = load_le(p + 64, 8);
  h.target_sha256 = get_hash(p + 72);
  h.target_size = load_le(p + 104, 8);
  h.depth = static_cast<std::uint32_t>(load_le(p + 112, 4));
  if (h.depth == 0 || h.depth > kMaxDeltaDepth) {
    malformed("delta blob: depth " + std::to_string(h.depth) + " outside 1.." +
              std::to_string(kMaxDeltaDepth));
  }
  if (rs_delta) *rs_delta = blob.substr(kDeltaHeaderSize);
  return h;
}

std::string encode_signature_blob(const SignatureHeader& h, std::string_view rs_signature) {
  std::string b;
  b.reserve(kSignatureHeaderSize + rs_signature.size());
  b.append(kSignatureMagic, 8);
  put_hash(b, h.file);
  put_hash(b, h.sha256);
  put_u64(b, h.size);
  b.append(rs_signature);
  return b;
}

SignatureHeader decode_signature_blob(std::string_view blob, std::string_view* rs_signature) {
  if (blob.size() < kSignatureHeaderSize + 12) malformed("signature blob: too short");
  if (std::memcmp(blob.data(), kSignatureMagic, 8) != 0) malformed("signature blob: bad magic");
  const char* p = blob.data() + 8;
  SignatureHeader h;
  h.file = get_hash(p);
  h.sha256 = get_hash(p + 32);
  h.size = load_le(p + 64, 8);
  std::string_view sig = blob.substr(kSignatureHeaderSize);
  // librsync writes its magic big-endian (network order).
  std::uint32_t magic = 0;
  for (int i = 0; i < 4; ++i) magic = magic << 8 | static_cast<std::uint8_t>(sig[i]);
  if (magic != RS_RK_BLAKE2_SIG_MAGIC) malformed("signature blob: not a RabinKarp/BLAKE2 librsync signature");
  if (rs_signature) *rs_signature = sig;
  return h;
}

// ---- librsync --------------------------------------------------------------

std::string make_signature(std::string_view data) {
  quiet_librsync();
  rs_magic_number magic = RS_RK_BLAKE2_SIG_MAGIC;
  std::size_t block_len = 0, strong_len = 0;  // recommended block, maximum strong sum
  if (rs_sig_args(static_cast<rs_long_t>(data.size()), &magic, &block_len, &strong_len) != RS_DONE) {
    throw Error(ErrorCode::kInternal,
                "rs_sig_args refused a file of " + std::to_string(data.size()) + " bytes");
  }
  if (block_len > kMaxDeltaBlockLen) block_len = kMaxDeltaBlockLen;
  Job job(rs_sig_begin(block_len, strong_len, magic));
  std::string out;
  out.reserve(12 + (data.size() / block_len + 1) * (4 + strong_len));
  rs_result r = run_to_string(job.get(), data, out, nullptr);
  if (r != RS_DONE) throw Error(ErrorCode::kInternal, std::string("librsync signature: ") + rs_strerror(r));
  return out;
}

LoadedSignature::LoadedSignature(std::string_view rs_signature) {
  quiet_librsync();
  Job job(rs_loadsig_begin(&sig_));
  std::string none;
  std::size_t left = 0;
  rs_result r = run_to_string(job.get(), rs_signature, none, &left);
  if (r == RS_DONE && left == 0 && sig_) r = rs_build_hash_table(sig_);
  if (r != RS_DONE || left != 0 || !sig_) {
    if (sig_) rs_free_sumset(sig_);
    sig_ = nullptr;
    throw Error(ErrorCode::kVerify, std::string("malformed librsync signature: ") +
                                        (r != RS_DONE ? rs_strerror(r) : "trailing bytes"));
  }
}

LoadedSignature::~LoadedSignature() {
  if (sig_) rs_free_sumset(sig_);
}

std::string make_delta(const LoadedSignature& sig, std::string_view target) {
  quiet_librsync();
  Job job(rs_delta_begin(sig.get()));
  std::string out;
  rs_result r = run_to_string(job.get(), target, out, nullptr);
  if (r != RS_DONE) throw Error(ErrorCode::kInternal, std::string("librsync delta: ") + rs_strerror(r));
  return out;
}

void apply_delta(int basis_fd, std::uint64_t basis_size, std::string_view rs_delta, int out_fd,
                 std::uint64_t target_size, const Hash& target_sha256) {
  quiet_librsync();
  CopyArg arg{basis_fd, basis_size};
  Job job(rs_patch_begin(copy_from_basis, &arg));
  rs_buffers_t buf{};
  buf.next_in = const_cast<char*>(rs_delta.data());
  buf.avail_in = rs_delta.size();
  buf.eof_in = 1;
  std::vector<char> chunk(kChunk);
  std::uint64_t written = 0;
  Sha256Stream h;
  rs_result r;
  do {
    buf.next_out = chunk.data();
    buf.avail_out = chunk.size();
    r = rs_job_iter(job.get(), &buf);
    std::size_t n = chunk.size() - buf.avail_out;
    if (n > target_size - written) {
      throw Error(ErrorCode::kVerify, "corrupt delta: it produces more than the announced " +
                                          std::to_string(target_size) + " bytes");
    }
    write_all(out_fd, chunk.data(), n, "patched file");
    h.update(chunk.data(), n);
    written += n;
  } while (r == RS_BLOCKED);
  if (arg.err) throw_errno("read delta basis", arg.err);
  if (arg.outside) throw Error(ErrorCode::kVerify, "corrupt delta: it copies from outside its basis");
  if (r != RS_DONE)
    throw Error(ErrorCode::kVerify, std::string("corrupt delta: librsync: ") + rs_strerror(r));
  if (buf.avail_in != 0)
    throw Error(ErrorCode::kVerify, "corrupt delta: trailing bytes after its end command");
  if (written != target_size) {
    throw Error(ErrorCode::kVerify, "corrupt delta: it produces " + std::to_string(written) +
                                        " bytes, not the announced " + std::to_string(target_size));
  }
  if (h.finish() != target_sha256) {
    throw Error(ErrorCode::kVerify, "corrupt delta: its result does not match the SHA-256 in its header");
  }
}

// ---- chains ----------------------------------------------------------------

ChainInfo rebuild_delta_chain(const Hash& head, const BlobFetch& fetch, int out_fd,
                              const std::string& scratch_dir) {
  // Walk back to the base, keeping only the headers (the streams are fetched again
  // on the way forward, so a long chain of large deltas is never all in memory).
  std::vector<std::pair<Hash, DeltaHeader>> links;  // head first
  Hash id = head;
  ChainInfo info;
  while (true) {
    std::string_view blob = fetch(id, BlobType::kDelta);
    DeltaHeader h = decode_delta_blob(blob);
    info.delta_bytes += blob.size();
    if (!links.empty()) {
      const DeltaHeader& next = links.back().second;
      if (h.depth + 1 != next.depth) {
        throw Error(ErrorCode::kVerify, "corrupt delta chain: blob " + to_hex(id) + " has depth " +
                                            std::to_string(h.depth) + " under a link of depth " +
                                            std::to_string(next.depth));
      }
      if (h.target_sha256 != next.basis_sha256 || h.target_size != next.basis_size) {
        throw Error(ErrorCode::kVerify, "corrupt delta chain: blob " + to_hex(id) +
                                            " does not produce the basis its successor names");
      }
    }
    links.emplace_back(id, h);
    if (h.depth == 1) break;
    id = h.basis;
  }
  info.depth = static_cast<std::uint32_t>(links.size());
  info.chain.push_back(links.back().second.basis);
  for (std::size_t i = links.size(); i-- > 1;) info.chain.push_back(links[i].first);

  const DeltaHeader& first = links.back().second;
  ScratchFile a(scratch_dir), b(scratch_dir);
  {
    std::string_view base = fetch(first.basis, BlobType::kFile);
    if (base.size() != first.basis_size || sha256(base) != first.basis_sha256) {
      throw Error(ErrorCode::kVerify, "corrupt delta chain: base " + to_hex(first.basis) +
                                          " does not match the size and SHA-256 its first delta names");
    }
    write_all(a.fd(), base.data(), base.size(), "delta base");
    info.base_bytes = base.size();
  }
  ScratchFile* basis = &a;
  ScratchFile* next = &b;
  for (std::size_t i = links.size(); i-- > 0;) {
    const auto& [lid, h] = links[i];
    std::string_view stream;
    decode_delta_blob(fetch(lid, BlobType::kDelta), &stream);
    int out = i == 0 ? out_fd : next->fd();
    apply_delta(basis->fd(), h.basis_size, stream, out, h.target_size, h.target_sha256);
    if (i != 0) {
      std::swap(basis, next);
      next->reset();
    }
  }
  return info;
}

}  // namespace reduit
