// zstd frames as reduit writes them (vault/compress.cpp, FORMAT.md §2).
#include <gtest/gtest.h>

#include <random>
#include <thread>

#include "support/harness.hpp"
#include "vault/compress.hpp"
#include "vault/error.hpp"

using namespace reduit;

// A 16 MiB pack is one frame whose window spans the whole pack: a blob matches
// one 6 MiB back, beyond level 3's default window of 2 MiB.
TEST(Compress, PackFramesMatchAcrossTheWholePack) {
  std::mt19937_64 rng(7);
  Bytes random(6 << 20);
  for (auto& b : random) b = static_cast<std::uint8_t>(rng());
  Bytes twice;
  twice.reserve(2 * random.size());
  for (int copy = 0; copy < 2; ++copy) twice.insert(twice.end(), random.begin(), random.end());
  Bytes frame = zstd_compress(twice, 3);
  // Frame header (RFC 8878 §3.1.1.1): magic, then the descriptor, whose bit 5 is
  // Single_Segment_flag: the window is the whole 12 MiB content.
  ASSERT_GT(frame.size(), 5u);
  EXPECT_EQ(frame[0], 0x28);
  EXPECT_EQ(frame[3], 0xfd);
  EXPECT_EQ((frame[4] >> 5) & 1, 1);
  // The second copy is stored as matches: the frame is the random half plus
  // less than 1% (it would be 12 MiB with a 2 MiB window).
  EXPECT_LT(frame.size(), (6u << 20) + (6u << 20) / 100);
  EXPECT_EQ(zstd_decompress(frame), twice);
}

// A full pack (the 16 MiB target plus its last blob and table) is larger than the
// window: its frame declares a Window_Size of exactly 16 MiB, what FORMAT.md §2 says
// readers must accept. Window_Descriptor (RFC 8878 §3.1.1.1.2): exponent 14
// (2^(10+14) bytes), mantissa 0.
TEST(Compress, AFullPackDeclaresASixteenMebibyteWindow) {
  Bytes pack((16u << 20) + (1u << 20));
  for (std::size_t i = 0; i < pack.size(); ++i) pack[i] = static_cast<std::uint8_t>(i % 251);
  Bytes frame = zstd_compress(pack, 3);
  ASSERT_GT(frame.size(), 6u);
  EXPECT_EQ((frame[4] >> 5) & 1, 0);  // not single-segment: a window descriptor follows
  EXPECT_EQ(frame[5], 14 << 3);
  EXPECT_EQ(zstd_decompress(frame), pack);
}

// A small object round-trips, and a reader's bound on the content size holds.
TEST(Compress, SmallObjectsRoundTrip) {
  std::string s = "{\"version\":1}";
  Bytes in(s.begin(), s.end());
  Bytes frame = zstd_compress(in, 3);
  EXPECT_EQ(zstd_decompress(frame), in);
  EXPECT_EQ(reduit::test::error_code_of([&] { zstd_decompress(frame, in.size() - 1); }), ErrorCode::kVerify);
}

// zstd_compress_view writes into this thread's scratch buffer: the same bytes as
// zstd_compress, at the same address on the next call (nothing allocated per
// pack), and the view of an earlier call is overwritten by the next. Run on a
// thread of its own, so the scratch buffer starts empty.
TEST(Compress, TheViewIsTheSameFrameInAReusedBuffer) {
  std::thread([] {
    Bytes a(6u << 20), b(6u << 20);
    for (std::size_t i = 0; i < a.size(); ++i) {
      a[i] = static_cast<std::uint8_t>(i % 251);
      b[i] = static_cast<std::uint8_t>(i % 241);
    }
    Bytes frame_a = zstd_compress(a, 3);
    Bytes frame_b = zstd_compress(b, 3);
    ASSERT_NE(frame_a, frame_b);
    std::span<const std::uint8_t> va = zstd_compress_view(a, 3);
    EXPECT_EQ(Bytes(va.begin(), va.end()), frame_a);
    std::span<const std::uint8_t> vb = zstd_compress_view(b, 3);
    EXPECT_EQ(vb.data(), va.data());
    EXPECT_EQ(Bytes(vb.begin(), vb.end()), frame_b);
    // The earlier view now shows the second frame's bytes.
    EXPECT_EQ(Bytes(va.begin(), va.begin() + static_cast<std::ptrdiff_t>(vb.size())), frame_b);
    EXPECT_EQ(zstd_decompress(frame_b), b);
  }).join();
}
