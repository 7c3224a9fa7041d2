// Bytes' allocator (vault/bytes.hpp): large buffers are mappings of their own that a
// forked child does not get; small ones come from the heap as before.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "vault/bytes.hpp"

using namespace reduit;

namespace {

// How a child that reads `p` ends: its exit status, or 128 + the signal that ended it.
int child_reading(const volatile std::uint8_t* p) {
  pid_t pid = fork();
  if (pid == 0) _exit(*p == 0x5a ? 0 : 1);
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

// The VmFlags line of the mapping in /proc/self/smaps that holds `p` ("" if none).
std::string vm_flags_of(const void* p) {
  const auto at = reinterpret_cast<std::uintptr_t>(p);
  std::ifstream smaps("/proc/self/smaps");
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2 && line.find(':') > line.find(' ')) {
      inside = lo <= at && at < hi;
    } else if (inside && line.rfind("VmFlags:", 0) == 0) {
      return line;
    }
  }
  return "";
}

// The bytes of every mapping in /proc/self/maps but the heap's (which the ifstream
// above may grow).
std::size_t mapped_bytes() {
  std::ifstream maps("/proc/self/maps");
  std::size_t total = 0;
  for (std::string line; std::getline(maps, line);) {
    unsigned long lo = 0, hi = 0;
    if (line.find("[heap]") == std::string::npos && std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2)
      total += hi - lo;
  }
  return total;
}

}  // namespace

// A large buffer starts on a 2 MiB boundary and is marked "hg" (MADV_HUGEPAGE), so
// the kernel may back it with huge pages (a kernel built without transparent huge
// pages has no /sys/kernel/mm/transparent_hugepage and refuses the advice, which
// changes nothing else); the extra huge page mapped to align it is given back at
// once, and freeing the buffer leaves no mapping behind.
TEST(Bytes, LargeBuffersAreHugePageAlignedAndLeaveNothingMapped) {
  const bool thp = std::ifstream("/sys/kernel/mm/transparent_hugepage/enabled").good();
  const std::size_t before = mapped_bytes();
  for (std::size_t size : {kLargeBuffer, kLargeBuffer + 1, 5 * kHugePage + 12345}) {
    Bytes b(size);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(b.data()) % kHugePage, 0u) << size;
    EXPECT_EQ(vm_flags_of(b.data()).find(" hg") != std::string::npos, thp) << vm_flags_of(b.data());
    EXPECT_EQ(vm_flags_of(b.data() + size - 1).find(" hg") != std::string::npos, thp) << size;
    EXPECT_EQ(mapped_bytes() - before, (size + kPageSize - 1) / kPageSize * kPageSize) << size;
  }
  EXPECT_EQ(mapped_bytes(), before);
}

// A buffer of kLargeBuffer bytes is marked "dc" (do not copy on fork, MADV_DONTFORK):
// a forked child that reads it dies of SIGSEGV, which is why no child in reduit
// does anything but exec. A small buffer is the child's to read.
TEST(Bytes, LargeBuffersAreKeptOutOfForkedChildren) {
  Bytes large(kLargeBuffer, 0x5a);
  Bytes small(4096, 0x5a);
  EXPECT_NE(vm_flags_of(large.data()).find(" dc"), std::string::npos) << vm_flags_of(large.data());
  EXPECT_EQ(vm_flags_of(small.data()).find(" dc"), std::string::npos) << vm_flags_of(small.data());
  EXPECT_EQ(child_reading(large.data()), 128 + SIGSEGV);
  EXPECT_EQ(child_reading(small.data()), 0);
  EXPECT_EQ(child_reading(large.data() + large.size() - 1), 128 + SIGSEGV);
}

// One byte under the threshold comes from the heap; growing past it moves the
// contents into a mapping of their own, byte for byte.
TEST(Bytes, GrowingPastTheThresholdKeepsTheContents) {
  Bytes b(kLargeBuffer - 1);
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<std::uint8_t>(i % 251);
  EXPECT_EQ(vm_flags_of(b.data()).find(" dc"), std::string::npos);
  b.push_back(0xff);
  EXPECT_NE(vm_flags_of(b.data()).find(" dc"), std::string::npos);
  ASSERT_EQ(b.size(), kLargeBuffer);
  for (std::size_t i = 0; i + 1 < b.size(); ++i) ASSERT_EQ(b[i], i % 251) << "at " << i;
  EXPECT_EQ(b.back(), 0xff);
  Bytes moved = std::move(b);
  EXPECT_EQ(moved.size(), kLargeBuffer);
  EXPECT_EQ(moved[kLargeBuffer - 2], (kLargeBuffer - 2) % 251);
}

// append_bytes: the bytes in order, capacity doubled as insert() would (at least
// what is needed), and a buffer grown past kLargeBuffer is a mapping kept out of
// forks with every byte kept.
TEST(Bytes, AppendKeepsEveryByteAndDoublesTheCapacity) {
  Bytes b;
  const std::uint8_t abc[] = {'a', 'b', 'c'}, de[] = {'d', 'e'};
  append_bytes(b, abc, 3);
  EXPECT_EQ(b.capacity(), 3u);
  append_bytes(b, de, 2);
  EXPECT_EQ(b.capacity(), 6u);
  append_bytes(b, de, 0);
  EXPECT_EQ(std::string(b.begin(), b.end()), "abcde");
  append_bytes(b, abc, 1);
  EXPECT_EQ(b.capacity(), 6u);  // it fitted: no new buffer
  EXPECT_EQ(std::string(b.begin(), b.end()), "abcdea");

  std::string chunk(1 << 20, '\0');
  for (std::size_t i = 0; i < chunk.size(); ++i) chunk[i] = static_cast<char>(i * 7 + i / 4096);
  for (int i = 0; i < 5; ++i) append_bytes(b, chunk.data(), chunk.size());
  ASSERT_EQ(b.size(), 6 + 5 * chunk.size());
  EXPECT_EQ(std::string(b.begin(), b.begin() + 6), "abcdea");
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(std::memcmp(b.data() + 6 + i * chunk.size(), chunk.data(), chunk.size()), 0) << "chunk " << i;
  }
  EXPECT_GE(b.capacity(), kLargeBuffer);
  EXPECT_NE(vm_flags_of(b.data()).find(" dc"), std::string::npos);
}

// store_le / load_le: least significant byte first, only the `n` bytes asked for.
TEST(Bytes, LittleEndianIntegersKeepTheirByteOrderAndWidth) {
  std::uint8_t b[9];
  std::memset(b, 0xEE, sizeof b);
  store_le(b, 0x0102030405060708ULL, 8);
  const std::uint8_t want[9] = {0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, 0xEE};
  EXPECT_EQ(std::memcmp(b, want, 9), 0);
  EXPECT_EQ(load_le(b, 8), 0x0102030405060708ULL);
  EXPECT_EQ(load_le(b, 2), 0x0708u);
  EXPECT_EQ(load_le(b + 7, 1), 0x01u);

  std::memset(b, 0xEE, sizeof b);
  store_le(b, 0xFFFF'FFFF'0000'ABCDULL, 2);  // only the low two bytes are written
  EXPECT_EQ(b[0], 0xCD);
  EXPECT_EQ(b[1], 0xAB);
  EXPECT_EQ(b[2], 0xEE);
  EXPECT_EQ(load_le(b, 2), 0xABCDu);
}

namespace {

// Pages of [p, p + n) in memory (mincore), n a multiple of the page size.
std::size_t resident_pages(const void* p, std::size_t n) {
  const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> in(n / page);
  EXPECT_EQ(mincore(const_cast<void*>(p), n, in.data()), 0) << std::strerror(errno);
  std::size_t count = 0;
  for (unsigned char c : in) count += c & 1;
  return count;
}

}  // namespace

// resize() and Bytes(n) do not zero what they add (every caller writes it next): a
// 16 MiB pack buffer grown to its size has not touched a page of its mapping, and
// the bytes written after are the bytes read. resize(n, 0) still zeroes.
TEST(Bytes, ResizeLeavesNewBytesUnwrittenAndResizeWithAValueFillsThem) {
  constexpr std::size_t kPack = std::size_t{16} << 20;
  Bytes b;
  b.reserve(kPack);
  ASSERT_EQ(reinterpret_cast<std::uintptr_t>(b.data()) % sysconf(_SC_PAGESIZE), 0u);  // a mapping of its own
  // One write faults in one page, not a 2 MiB one where transparent huge pages are "always".
  ASSERT_EQ(madvise(b.data(), kPack, MADV_NOHUGEPAGE), 0) << std::strerror(errno);
  EXPECT_EQ(resident_pages(b.data(), kPack), 0u);
  b.resize(kPack);
  EXPECT_EQ(b.size(), kPack);
  EXPECT_EQ(resident_pages(b.data(), kPack), 0u);
  std::memset(b.data(), 0x5a, 4096);
  EXPECT_EQ(resident_pages(b.data(), kPack), 1u);

  Bytes fresh(kPack);
  EXPECT_EQ(resident_pages(fresh.data(), kPack), 0u);

  Bytes zeroed(kPack, 0);
  EXPECT_EQ(resident_pages(zeroed.data(), kPack), kPack / sysconf(_SC_PAGESIZE));
  EXPECT_EQ(std::count(zeroed.begin(), zeroed.end(), 0), static_cast<std::ptrdiff_t>(kPack));

  Bytes grown(8, 7);
  grown.resize(16, 9);
  EXPECT_EQ(grown, Bytes({7, 7, 7, 7, 7, 7, 7, 7, 9, 9, 9, 9, 9, 9, 9, 9}));
}
