// The base64 filter of data packs (vault/pack_filter.hpp, FORMAT.md §5.1): which
// runs it takes, the exact size of the filtered form, the round trip byte for byte
// (hand-made shapes, seeded random mixtures, the shared corpus), and its refusal of
// hostile tables. The base64 in these tests is written by OpenSSL's
// EVP_EncodeBlock and wrapped here, not by the code under test.
#include <openssl/evp.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <random>
#include <string>

#include "support/harness.hpp"
#include "vault/error.hpp"
#include "vault/format.hpp"
#include "vault/pack_filter.hpp"

using namespace reduit;
namespace fs = std::filesystem;

namespace {

std::string random_bytes(std::mt19937& rng, std::size_t n) {
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

// `data` in base64 (RFC 4648 §4), in lines of `line` characters, each ended by `eol`.
std::string base64_lines(const std::string& data, std::size_t line, const std::string& eol) {
  std::string flat(4 * ((data.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(flat.data()),
                          reinterpret_cast<const unsigned char*>(data.data()), static_cast<int>(data.size()));
  flat.resize(static_cast<std::size_t>(n));
  std::string out;
  for (std::size_t at = 0; at < flat.size(); at += line) out += flat.substr(at, line) + eol;
  return out;
}

Bytes pack_of(const std::string& body) {
  std::string s = "RDPACK01" + body;
  return Bytes(s.begin(), s.end());
}

struct Filtered {
  std::size_t runs;
  Bytes bytes;
};
Filtered filter(Bytes pack) {
  Bytes scratch;
  std::size_t runs = filter_pack(pack, scratch);
  return {runs, std::move(pack)};
}

const std::string kHead = "Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n";
const std::string kTail = "\r\n--b1--\r\n";

}  // namespace

// 570 bytes are exactly 10 lines of 76 characters: one run of 780 bytes becomes its
// 570 bytes behind the text, plus a 19-byte entry and the 16-byte trailer.
TEST(PackFilter, ARunOfFullLinesBecomesItsBytes) {
  std::mt19937 rng(1);
  std::string data = random_bytes(rng, 570);
  std::string run = base64_lines(data, 76, "\r\n");
  ASSERT_EQ(run.size(), 780u);
  Bytes pack = pack_of(kHead + run + kTail);
  Filtered f = filter(pack);
  ASSERT_EQ(f.runs, 1u);
  EXPECT_EQ(f.bytes.size(), 8 + kHead.size() + kTail.size() + 570 + 19 + 16);
  EXPECT_TRUE(is_filtered_pack(f.bytes));
  EXPECT_EQ(std::string(f.bytes.begin(), f.bytes.begin() + 8), "RDPACKF1");
  // The text, then the decoded bytes, in the order of the format.
  EXPECT_EQ(std::string(f.bytes.begin() + 8, f.bytes.begin() + 8 + kHead.size()), kHead);
  EXPECT_EQ(std::string(f.bytes.begin() + 8 + kHead.size() + kTail.size(),
                        f.bytes.begin() + 8 + kHead.size() + kTail.size() + 570),
            data);
  EXPECT_EQ(unfilter_pack(f.bytes), pack);
}

// Every last-line shape: no padding, "=", "==", a short last line, LF and CR LF,
// other line lengths. Each is one run, written back exactly.
TEST(PackFilter, LastLinesLineLengthsAndLineEndsComeBackExactly) {
  std::mt19937 rng(2);
  struct Case {
    std::size_t bytes, line;
    std::string eol;
    std::size_t encoded;  // computed by hand: 4 * ceil(bytes / 3) characters plus a line end per line
  };
  const Case cases[] = {
      {1000, 64, "\n", 1336 + 21},        // 1000 = 3 * 333 + 1: ends in "==", 20 full lines and 56 characters
      {1001, 64, "\n", 1336 + 21},        // ends in "="
      {1002, 76, "\r\n", 1336 + 2 * 18},  // no padding, 17 full lines and 44 characters
      {1140, 76, "\r\n", 1520 + 2 * 20},  // exactly 20 full lines
      {999, 72, "\n", 1332 + 19},         // 18 full lines and 36 characters
      {3000, 996, "\r\n", 4000 + 2 * 5},  // the longest lines RFC 5322 allows, rounded to groups
      {300, 16, "\n", 400 + 25},          // the shortest lines that start a run
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::to_string(c.bytes) + " bytes in lines of " + std::to_string(c.line));
    std::string run = base64_lines(random_bytes(rng, c.bytes), c.line, c.eol);
    ASSERT_EQ(run.size(), c.encoded);
    Bytes pack = pack_of("text before\n" + run + "text after\n");
    Filtered f = filter(pack);
    ASSERT_EQ(f.runs, 1u);
    EXPECT_EQ(f.bytes.size(), 8 + 12 + 11 + c.bytes + 19 + 16);
    EXPECT_EQ(unfilter_pack(f.bytes), pack);
  }
}

// What is not exactly what the writer would write again stays text: a run shorter
// than kMinBase64Run, a last group whose unused bits are not zero, a line end that
// changes, a last line without a line end, lines of other lengths.
TEST(PackFilter, OnlyRunsWrittenAgainByteForByteAreTaken) {
  std::mt19937 rng(3);
  // 180 bytes: 240 characters plus 4 line ends = 244 bytes, under 256.
  std::string short_run = base64_lines(random_bytes(rng, 180), 64, "\n");
  ASSERT_EQ(short_run.size(), 244u);
  Bytes none = pack_of("x\n" + short_run + "y\n");
  EXPECT_EQ(filter(none).runs, 0u);
  EXPECT_EQ(filter(none).bytes, none);  // left as it was

  // 1000 bytes end in "xx==": a last character whose low 4 bits are set is not
  // canonical (RFC 4648 §3.5), so the run ends at the 20 full lines before it.
  std::string data = random_bytes(rng, 1000);
  std::string run = base64_lines(data, 64, "\n");
  std::size_t last = run.size() - 4;  // the second character of "xx==\n"
  ASSERT_EQ(run.substr(last + 1, 3), "==\n");
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  run[last] = alphabet[alphabet.find(run[last]) | 1];
  Bytes odd = pack_of(run);
  Filtered f = filter(odd);
  ASSERT_EQ(f.runs, 1u);
  EXPECT_EQ(f.bytes.size(), 8 + (56 + 1) + 20 * 48 + 19 + 16);  // the last line stays text
  EXPECT_EQ(unfilter_pack(f.bytes), odd);

  // Lines of 76 then of 72 (the first 72-character line ends the first run as its
  // shorter last line; the other 9 are a run), CR LF, then LF again: four runs.
  std::string a = base64_lines(random_bytes(rng, 570), 76, "\n");
  std::string b = base64_lines(random_bytes(rng, 540), 72, "\n");
  std::string c = base64_lines(random_bytes(rng, 570), 76, "\r\n");
  Bytes mixed = pack_of(a + b + c + a);
  Filtered m = filter(mixed);
  EXPECT_EQ(m.runs, 4u);
  EXPECT_EQ(m.bytes.size(), 8 + 570 + 540 + 570 + 570 + 4 * 19 + 16);
  EXPECT_EQ(unfilter_pack(m.bytes), mixed);

  // The pack's last line has no LF: it is not part of the run before it (a's 10
  // lines and the first 9 of the next run are one run of 76-character lines).
  std::string tail_run = base64_lines(random_bytes(rng, 570), 76, "\n");
  tail_run.pop_back();
  Bytes open_end = pack_of(a + tail_run);
  Filtered t = filter(open_end);
  ASSERT_EQ(t.runs, 1u);
  EXPECT_EQ(t.bytes.size(), 8 + 76 + (570 + 9 * 57) + 19 + 16);
  EXPECT_EQ(unfilter_pack(t.bytes), open_end);

  // A longer line (80 characters) before a block of 76: the two lines make a run
  // too short to take, and the block's own 10 lines are then a run (found by a
  // second reader, helper-16).
  std::string block = base64_lines(random_bytes(rng, 570), 76, "\n");
  Bytes longer_first = pack_of(std::string(80, 'A') + "\n" + block);
  Filtered l = filter(longer_first);
  ASSERT_EQ(l.runs, 1u);
  EXPECT_EQ(l.bytes.size(), 8 + 81 + 570 + 19 + 16);
  EXPECT_EQ(unfilter_pack(l.bytes), longer_first);

  // Not a pack plaintext: left alone.
  std::string json = "{\"v\":1}\n" + a;
  Bytes meta(json.begin(), json.end());
  EXPECT_EQ(filter(meta).runs, 0u);
}

// Seeded mixtures of text lines, runs of every shape and damaged runs: each comes
// back byte for byte, and a filtered form is always shorter.
TEST(PackFilter, RandomMixturesComeBackByteForByte) {
  std::mt19937 rng(4);
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=";
  std::size_t filtered = 0;
  for (int round = 0; round < 400; ++round) {
    std::string s;
    int parts = 1 + static_cast<int>(rng() % 12);
    for (int i = 0; i < parts; ++i) {
      switch (rng() % 4) {
        case 0:  // text lines, some of them base64-like
          for (int l = 0, n = static_cast<int>(rng() % 6); l < n; ++l) {
            std::size_t len = rng() % 90;
            for (std::size_t k = 0; k < len; ++k) s += alphabet[rng() % (rng() % 2 ? 65 : 64)];
            s += rng() % 3 ? "\n" : "\r\n";
          }
          break;
        case 3: {  // a damaged run: one character flipped, dropped or made '='
          std::string r = base64_lines(random_bytes(rng, 1 + rng() % 3000), 4 * (4 + rng() % 30),
                                       rng() % 2 ? "\n" : "\r\n");
          std::size_t at = rng() % r.size();
          int how = static_cast<int>(rng() % 3);
          if (how == 0) r[at] = static_cast<char>(rng() & 0xff);
          if (how == 1) r.erase(at, 1);
          if (how == 2) r[at] = '=';
          s += r;
          break;
        }
        default:
          s += base64_lines(random_bytes(rng, 1 + rng() % 5000), 4 * (4 + rng() % 30),
                            rng() % 2 ? "\n" : "\r\n");
      }
    }
    if (rng() % 4 == 0 && !s.empty()) s.pop_back();  // no line end at the very end
    Bytes pack = pack_of(s);
    Filtered f = filter(pack);
    if (f.runs == 0) {
      ASSERT_EQ(f.bytes, pack) << "round " << round;
      continue;
    }
    ++filtered;
    ASSERT_LT(f.bytes.size(), pack.size()) << "round " << round;
    ASSERT_EQ(unfilter_pack(f.bytes), pack) << "round " << round;
  }
  // Most rounds hold a run of 256 bytes or more (seed 4: 382 of 400).
  EXPECT_EQ(filtered, 382u);
}

// The shared corpus's messages, laid out in 1 MiB packs as a backup lays out body
// blobs: every pack comes back byte for byte.
TEST(PackFilter, CorpusPacksComeBackByteForByte) {
  std::string corpus = reduit::test::corpus_dir();
  if (corpus.empty()) GTEST_SKIP() << "the shared corpus (../shared/corpus) is not beside this checkout";
  std::vector<std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(corpus + "/maildir")) {
    if (e.is_regular_file() && e.path().parent_path().filename() != "tmp" &&
        (e.path().parent_path().filename() == "cur" || e.path().parent_path().filename() == "new"))
      files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  ASSERT_GT(files.size(), 0u);
  std::size_t packs = 0, runs = 0, plain = 0, stored = 0;
  std::string body;
  auto flush = [&] {
    Bytes pack = pack_of(body);
    Filtered f = filter(pack);
    runs += f.runs;
    plain += pack.size();
    stored += f.bytes.size();
    ++packs;
    ASSERT_EQ(unfilter_pack(f.bytes), pack) << "pack " << packs;
    body.clear();
  };
  for (const std::string& p : files) {
    std::string m = reduit::test::read_file(p);
    body += m.substr(header_block_length(m));
    if (body.size() >= (1u << 20)) flush();
  }
  if (!body.empty()) flush();
  EXPECT_GT(runs, 0u);
  EXPECT_LT(stored, plain);
}

// A hostile or damaged table is refused before anything is written out.
TEST(PackFilter, HostileTablesAreRefused) {
  std::mt19937 rng(5);
  Bytes good = filter(pack_of("a\n" + base64_lines(random_bytes(rng, 570), 76, "\n") + "b\n")).bytes;
  ASSERT_TRUE(is_filtered_pack(good));
  const std::size_t entry = good.size() - 16 - 19;
  auto refused = [](const Bytes& b) {
    try {
      unfilter_pack(b);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kVerify);
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  auto with = [&](std::size_t at, std::uint64_t v, int bytes) {
    Bytes b = good;
    for (int i = 0; i < bytes; ++i) b[at + i] = static_cast<std::uint8_t>(v >> (8 * i));
    return b;
  };
  EXPECT_EQ(refused(Bytes(good.begin(), good.begin() + 20)),
            "filtered pack: bad magic or truncated (corrupt or forged)");
  EXPECT_EQ(refused(with(good.size() - 16, 0, 8)), "filtered pack: run count 0 does not fit its " +
                                                       std::to_string(good.size()) +
                                                       " bytes (corrupt or forged)");
  EXPECT_EQ(refused(with(good.size() - 16, 1000, 8)), "filtered pack: run count 1000 does not fit its " +
                                                          std::to_string(good.size()) +
                                                          " bytes (corrupt or forged)");
  EXPECT_EQ(refused(with(entry + 16, 74, 2)),
            "filtered pack: run 0 has lines of 74 characters (corrupt or forged)");
  EXPECT_EQ(refused(with(entry + 16, 1000, 2)),
            "filtered pack: run 0 has lines of 1000 characters (corrupt or forged)");
  EXPECT_EQ(refused(with(entry + 18, 3, 1)), "filtered pack: run 0 has line end code 3 (corrupt or forged)");
  EXPECT_EQ(refused(with(entry + 8, 0, 8)), "filtered pack: run 0 claims 0 bytes (corrupt or forged)");
  EXPECT_EQ(
      refused(with(entry, 4, 8)),
      "filtered pack: run 0 overlaps the one before it or lies outside the plaintext (corrupt or forged)");
  EXPECT_EQ(refused(with(good.size() - 8, 1u << 30, 8)),
            "filtered pack: its text, decoded bytes and table do not add up to its size (corrupt or forged)");
  EXPECT_EQ(refused(with(entry + 8, 569, 8)),
            "filtered pack: its text, decoded bytes and table do not add up to its size (corrupt or forged)");
  EXPECT_EQ(refused(with(0, 0x31304b4341504452ull, 8)),
            "filtered pack: bad magic or truncated (corrupt or forged)");
}

// A sealer's scratch is the last sealed pack's buffer. One of half the pack is used
// as it is (not replaced by a new reservation of 3/4 of the pack), and grows when
// the pack decodes to more: a pack that is nearly all base64 decodes to 3/4 of it.
TEST(PackFilter, AScratchOfHalfThePackIsKeptAndGrowsWhenMoreIsDecoded) {
  std::mt19937 rng(7);
  const std::string data = random_bytes(rng, 570 * 2000);  // 20,000 lines of 76 characters
  const std::string run = base64_lines(data, 76, "\r\n");
  std::string text;
  while (text.size() < run.size()) text += "Plain text of a reply, not a run of base64 at all.\r\n";

  // Half base64, half text: 1,140,000 decoded bytes fit in half the pack.
  Bytes mixed = pack_of(kHead + run + kTail + text);
  const Bytes mixed_original = mixed;
  Bytes scratch;
  scratch.reserve(mixed.size() / 2);
  const std::uint8_t* buffer = scratch.data();
  ASSERT_EQ(filter_pack(mixed, scratch), 1u);
  EXPECT_EQ(scratch.data(), buffer);
  EXPECT_EQ(scratch.capacity(), mixed_original.size() / 2);
  EXPECT_EQ(scratch.size(), data.size());
  EXPECT_EQ(unfilter_pack(mixed), mixed_original);

  // All base64: 1,140,000 decoded bytes do not fit in half of a 1,560,086-byte pack;
  // the scratch doubles once, as any append does.
  Bytes b64 = pack_of(kHead + run + kTail);
  const Bytes b64_original = b64;
  ASSERT_EQ(b64_original.size(), 1560086u);
  Bytes half;
  half.reserve(b64.size() / 2);
  ASSERT_EQ(filter_pack(b64, half), 1u);
  EXPECT_EQ(half.capacity(), 2 * (b64_original.size() / 2));
  EXPECT_EQ(b64.size(), 8 + kHead.size() + kTail.size() + data.size() + 19 + 16);
  EXPECT_EQ(unfilter_pack(b64), b64_original);

  // Less than half the pack: 3/4 of it reserved at once, as before.
  Bytes small;
  small.reserve(1024);
  Bytes again = b64_original;
  ASSERT_EQ(filter_pack(again, small), 1u);
  EXPECT_EQ(small.capacity(), b64_original.size() / 4 * 3);
  EXPECT_EQ(again, b64);
}
