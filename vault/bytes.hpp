// vault/bytes.hpp — Bytes, the byte buffer of every pack, object and file in reduit.
//
// A std::vector<std::uint8_t> whose large buffers (kLargeBuffer and up: packs,
// their zstd frames and OpenPGP messages, restored files) are mappings of their own
// marked MADV_DONTFORK. GPGME starts one gpg process per pack with fork(). A fork
// copies the page tables of every mapping and write-protects its pages in the
// parent, so the next write to each page takes a fault even after the child has
// called exec; with two sealing threads forking every few hundred milliseconds,
// every pack buffer page was faulted in again about once per pack (1.7 million
// faults in a first backup of 100,000 messages, docs/PERFORMANCE.md). A page kept
// out of the child is neither copied nor write-protected.
//
// The child of every fork in reduit (GPGME's, the daemon's, the restore drills',
// the tests') only calls exec, or exits when exec fails (libssh's ProxyCommand
// child calls exit(), which runs static destructors; none of them reads a Bytes),
// so no child reads these buffers. A child that did would get SIGSEGV. Smaller
// buffers come from malloc as before.
#pragma once

#include <sys/mman.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

namespace reduit {

/// Allocations of this many bytes and more are mappings of their own (glibc's own
/// mmap threshold, which agent/main.cpp also sets).
inline constexpr std::size_t kLargeBuffer = std::size_t{4} << 20;
/// The size of a transparent huge page on x86-64 (a PMD mapping), and the alignment
/// of every large buffer: see LargeBufferAllocator::allocate.
inline constexpr std::size_t kHugePage = std::size_t{2} << 20;
inline constexpr std::size_t kPageSize = 4096;

/// Stateless allocator: `n * sizeof(T)` >= kLargeBuffer comes from mmap (anonymous,
/// private), starts on a kHugePage boundary and is marked MADV_DONTFORK and
/// MADV_HUGEPAGE; smaller requests from ::operator new. Throws std::bad_alloc when
/// the mapping fails.
template <typename T>
struct LargeBufferAllocator {
  using value_type = T;

  LargeBufferAllocator() noexcept = default;
  template <typename U>
  LargeBufferAllocator(const LargeBufferAllocator<U>&) noexcept {}

  T* allocate(std::size_t n) {
    const std::size_t bytes = n * sizeof(T);
    if (bytes < kLargeBuffer) return static_cast<T*>(::operator new(bytes));
    // Map one huge page more than asked, keep the part that starts on a huge-page
    // boundary and give back the rest, so that the kernel can back the buffer with
    // 2 MiB pages (Debian's default is THP "madvise": only where MADV_HUGEPAGE
    // asks). A pack buffer is written once from end to end, so each 2 MiB page is
    // one fault instead of 512: a first backup of 100,000 messages took 30% fewer
    // minor faults (142,000–148,000 against 181,000–237,000), 18% less system
    // time, and 7% less wall time in the median of six alternated runs
    // (docs/PERFORMANCE.md, stop 35). The cost: a buffer's last, partly written
    // 2 MiB page is resident and zeroed as a whole (+7.3 MiB of peak RSS on
    // 1,000,000 messages; about 24 ms more per small daily backup, whose pack
    // buffers stay mostly empty). Both madvise calls are optimisations: their
    // failure (a kernel without transparent huge pages) changes nothing else.
    const std::size_t span = bytes + kHugePage;
    void* m = ::mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw std::bad_alloc();
    const auto base = reinterpret_cast<std::uintptr_t>(m);
    const std::uintptr_t start = (base + kHugePage - 1) & ~(kHugePage - 1);
    const std::uintptr_t end = (start + bytes + kPageSize - 1) & ~(kPageSize - 1);
    if (start > base) ::munmap(m, start - base);
    if (base + span > end) ::munmap(reinterpret_cast<void*>(end), base + span - end);
    void* p = reinterpret_cast<void*>(start);
    ::madvise(p, bytes, MADV_DONTFORK);
    ::madvise(p, bytes, MADV_HUGEPAGE);
    return static_cast<T*>(p);
  }

  /// Default-initialises: `Bytes(n)` and `resize(n)` leave the new bytes as the
  /// allocation left them (malloc's or a fresh mapping's), instead of zeroing them
  /// first. Every such call in reduit is followed by code that writes each of those
  /// bytes (a memcpy, pread, decoder or gpg's output), so zeroing was a second write
  /// of every pack byte: 3.3 GiB of memset in a 100,000-message first backup
  /// (docs/PERFORMANCE.md). `resize(n, 0)` and `Bytes(n, 0)` still zero.
  template <typename U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }

  void deallocate(T* p, std::size_t n) noexcept {
    const std::size_t bytes = n * sizeof(T);
    if (bytes < kLargeBuffer)
      ::operator delete(p);
    else
      ::munmap(p, bytes);  // allocate() kept exactly [p, p + bytes rounded up to a page)
  }

  template <typename U>
  bool operator==(const LargeBufferAllocator<U>&) const noexcept {
    return true;
  }
};

using Bytes = std::vector<std::uint8_t, LargeBufferAllocator<std::uint8_t>>;

/// Appends `n` bytes at `p` to `b` (which `p` must not point into) with one memcpy
/// (the allocator does not zero them first). Use it, not `b.insert(b.end(), …)`,
/// for anything but a few bytes: libstdc++ copies into a vector whose allocator is
/// not std::allocator one element at a time (a loop of allocator construct() calls,
/// stl_uninitialized.h), in insert(), in the copy constructor and when a growing
/// vector moves its contents.
/// Appending 16 MiB in 10 KiB pieces to a reserved buffer: 5.4 ms by insert(), 1.1 ms
/// by this (docs/PERFORMANCE.md). Growth doubles the capacity, as insert() does.
inline void append_bytes(Bytes& b, const void* p, std::size_t n) {
  if (n == 0) return;
  const std::size_t old = b.size();
  if (n > b.capacity() - old) {
    Bytes grown;
    grown.reserve(std::max(old + n, 2 * b.capacity()));
    grown.resize(old + n);
    if (old) std::memcpy(grown.data(), b.data(), old);
    b.swap(grown);
  } else {
    b.resize(old + n);
  }
  std::memcpy(b.data() + old, p, n);
}

/// Writes the low `n` bytes (1 to 8) of `v` to `p`, least significant first: the
/// byte order of every integer in the vault format (docs/FORMAT.md).
inline void store_le(void* p, std::uint64_t v, int n) {
  auto* out = static_cast<std::uint8_t*>(p);
  for (int i = 0; i < n; ++i) out[i] = static_cast<std::uint8_t>(v >> (8 * i));
}

/// Reads an `n`-byte (1 to 8) little-endian unsigned integer at `p`.
inline std::uint64_t load_le(const void* p, int n) {
  const auto* in = static_cast<const std::uint8_t*>(p);
  std::uint64_t v = 0;
  for (int i = 0; i < n; ++i) v |= std::uint64_t{in[i]} << (8 * i);
  return v;
}

}  // namespace reduit
