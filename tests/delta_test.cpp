// librsync deltas (vault/delta.hpp, docs/FORMAT.md §4.1–4.2): the blob encodings,
// signature sizes, patching, chains, and refusal of hostile or corrupt deltas.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <map>
#include <random>

#include "agent/config.hpp"
#include "support/harness.hpp"
#include "vault/delta.hpp"
#include "vault/error.hpp"

using namespace reduit;
using reduit::test::error_code_of;
using reduit::test::TempDir;

namespace {

// Deterministic mail-like text: words from a small vocabulary, lines of ~70 bytes.
std::string text(std::size_t n, unsigned seed) {
  static const char* words[] = {"the",     "backup",  "vault",  "Dovecot",   "mailbox",
                                "restore", "delta",   "chain",  "signature", "librsync",
                                "Maildir", "message", "folder", "snapshot",  "pack"};
  std::mt19937 rng(seed);
  std::string s;
  s.reserve(n + 80);
  std::size_t line = 0;
  while (s.size() < n) {
    s += words[rng() % 15];
    s += std::to_string(rng() % 1000);
    if (++line % 8 == 0)
      s += '\n';
    else
      s += ' ';
  }
  s.resize(n);
  return s;
}

// Reads back everything written to `fd`.
std::string slurp(int fd) {
  std::string out;
  char buf[65536];
  off_t off = 0;
  while (true) {
    ssize_t n = pread(fd, buf, sizeof buf, off);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
    off += n;
  }
  return out;
}

class Scratch {
 public:
  Scratch() {
    std::string p = dir_.path() + "/f.XXXXXX";
    fd_ = mkstemp(p.data());
  }
  ~Scratch() { close(fd_); }
  int fd() const { return fd_; }
  const std::string& dir() const { return dir_.path(); }
  void put(std::string_view s) {
    ftruncate(fd_, 0);
    pwrite(fd_, s.data(), s.size(), 0);
  }

 private:
  TempDir dir_;
  int fd_;
};

// Patches `basis` with `stream`; returns the result (throws like apply_delta).
std::string patch(std::string_view basis, std::string_view stream, std::uint64_t size, const Hash& sha) {
  Scratch in, out;
  in.put(basis);
  apply_delta(in.fd(), basis.size(), stream, out.fd(), size, sha);
  return slurp(out.fd());
}

std::string rs(std::initializer_list<int> bytes) {
  std::string s = "rs\x02\x36";
  for (int b : bytes) s.push_back(static_cast<char>(b));
  return s;
}

}  // namespace

TEST(DeltaSignature, SizeIsTwelvePlus36PerBlockWithBlocksCappedAt4KiB) {
  // rs_sig_args: block = floor(sqrt(size)) rounded down to a multiple of 128 (256
  // minimum); reduit caps it at 4096. Header 12 bytes, then 4 + 32 bytes per block.
  EXPECT_EQ(make_signature(text(1'000'000, 1)).size(), 12u + 1117u * 36u);   // block 896
  EXPECT_EQ(make_signature(text(300'000, 2)).size(), 12u + 586u * 36u);      // block 512
  EXPECT_EQ(make_signature(text(40'000'000, 3)).size(), 12u + 9766u * 36u);  // block 6272 → 4096
  std::string sig = make_signature(text(1000, 4));
  EXPECT_EQ(sig.substr(0, 4), std::string("rs\x01\x47", 4));  // RS_RK_BLAKE2_SIG_MAGIC, big-endian
}

TEST(DeltaPatch, AppendCostsTheAppendedBytesPlusAtMostOneBlock) {
  std::string v1 = text(1'000'000, 7);
  std::string v2 = v1 + text(10'000, 8);
  LoadedSignature sig(make_signature(v1));
  std::string d = make_delta(sig, v2);
  EXPECT_GE(d.size(), 10'000u);
  EXPECT_LT(d.size(), 10'000u + 896u + 64u);
  EXPECT_EQ(patch(v1, d, v2.size(), sha256(v2)), v2);
}

TEST(DeltaPatch, EditsInTheMiddleAndTruncationRestoreExactly) {
  std::string v1 = text(200'000, 9);
  std::string v2 = v1.substr(0, 50'000) + "X-Inserted: yes\n" + v1.substr(50'000, 100'000);
  v2[150'000] = '#';
  LoadedSignature sig(make_signature(v1));
  std::string d = make_delta(sig, v2);
  EXPECT_LT(d.size(), 2'000u);
  EXPECT_EQ(patch(v1, d, v2.size(), sha256(v2)), v2);
  // The empty file and a delta from an empty basis.
  EXPECT_EQ(patch(v1, make_delta(sig, ""), 0, sha256("")), "");
  LoadedSignature empty(make_signature(""));
  EXPECT_EQ(patch("", make_delta(empty, "abc"), 3, sha256("abc")), "abc");
}

TEST(DeltaPatch, HostileStreamsFailWithVerifyAndWriteNoMoreThanAnnounced) {
  std::string basis = "0123456789";
  // LITERAL_5 "hello", END.
  std::string hello = rs({0x05, 'h', 'e', 'l', 'l', 'o', 0x00});
  EXPECT_EQ(patch(basis, hello, 5, sha256("hello")), "hello");
  EXPECT_EQ(error_code_of([&] { patch(basis, hello, 3, sha256("hel")); }), ErrorCode::kVerify);
  EXPECT_EQ(error_code_of([&] { patch(basis, hello, 6, sha256("hello")); }), ErrorCode::kVerify);
  EXPECT_EQ(error_code_of([&] { patch(basis, hello, 5, sha256("jello")); }), ErrorCode::kVerify);
  // COPY_N1_N1 pos 4 len 6 = "456789"; then pos 5 len 6 reaches past the basis.
  EXPECT_EQ(patch(basis, rs({0x45, 4, 6, 0x00}), 6, sha256("456789")), "456789");
  try {
    patch(basis, rs({0x45, 5, 6, 0x00}), 6, sha256("56789?"));
    ADD_FAILURE() << "a COPY outside the basis was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kVerify);
    EXPECT_STREQ(e.what(), "corrupt delta: it copies from outside its basis");
  }
  // Truncated (no END), trailing bytes, bad magic, unknown opcode.
  EXPECT_EQ(error_code_of([&] {
              patch(basis, rs({0x05, 'h', 'e'}), 5, sha256("hello"));
            }),
            ErrorCode::kVerify);
  EXPECT_EQ(error_code_of([&] { patch(basis, hello + "x", 5, sha256("hello")); }), ErrorCode::kVerify);
  EXPECT_EQ(error_code_of([&] { patch(basis, "xx" + hello.substr(2), 5, sha256("hello")); }),
            ErrorCode::kVerify);
  EXPECT_EQ(error_code_of([&] { patch(basis, rs({0xff, 0x00}), 0, sha256("")); }), ErrorCode::kVerify);
  // A literal claiming 16 MiB of a 1-byte stream.
  EXPECT_EQ(error_code_of([&] {
              patch(basis, rs({0x44, 0, 0, 0, 0, 1, 0, 0, 0, 'a'}), 1, sha256("a"));
            }),
            ErrorCode::kVerify);
}

TEST(DeltaBlob, EncodingIsTheDocumentedLayout) {
  DeltaHeader h;
  for (int i = 0; i < 32; ++i) {
    h.basis[i] = static_cast<std::uint8_t>(i);
    h.basis_sha256[i] = static_cast<std::uint8_t>(0x20 + i);
    h.target_sha256[i] = static_cast<std::uint8_t>(0x40 + i);
  }
  h.basis_size = 0x0102;
  h.target_size = 0x0304;
  h.depth = 5;
  std::string b = encode_delta_blob(h, std::string_view("rs\x02\x36\x00", 5));
  ASSERT_EQ(b.size(), kDeltaHeaderSize + 5);
  EXPECT_EQ(b.substr(0, 8), "RDDELT01");
  EXPECT_EQ(to_hex(b.data() + 72, 8), "0201000000000000");
  EXPECT_EQ(to_hex(b.data() + 112, 8), "0403000000000000");
  EXPECT_EQ(to_hex(b.data() + 120, 4), "05000000");
  std::string_view stream;
  DeltaHeader back = decode_delta_blob(b, &stream);
  EXPECT_EQ(back.basis, h.basis);
  EXPECT_EQ(back.basis_sha256, h.basis_sha256);
  EXPECT_EQ(back.target_sha256, h.target_sha256);
  EXPECT_EQ(back.basis_size, 0x0102u);
  EXPECT_EQ(back.target_size, 0x0304u);
  EXPECT_EQ(back.depth, 5u);
  EXPECT_EQ(stream, std::string_view("rs\x02\x36\x00", 5));

  EXPECT_EQ(error_code_of([&] { decode_delta_blob(b.substr(0, 123)); }), ErrorCode::kVerify);
  std::string bad = b;
  bad[120] = 0;  // depth 0
  EXPECT_EQ(error_code_of([&] { decode_delta_blob(bad); }), ErrorCode::kVerify);
  bad = b;
  bad[0] = 'X';
  EXPECT_EQ(error_code_of([&] { decode_delta_blob(bad); }), ErrorCode::kVerify);

  SignatureHeader s{h.basis, h.basis_sha256, 77};
  std::string sig = make_signature("hello");
  std::string sb = encode_signature_blob(s, sig);
  ASSERT_EQ(sb.size(), kSignatureHeaderSize + sig.size());
  EXPECT_EQ(sb.substr(0, 8), "RDSIGN01");
  std::string_view sv;
  SignatureHeader sback = decode_signature_blob(sb, &sv);
  EXPECT_EQ(sback.file, h.basis);
  EXPECT_EQ(sback.size, 77u);
  EXPECT_EQ(sv, sig);
  EXPECT_EQ(error_code_of([&] {
              decode_signature_blob(encode_signature_blob(s, make_delta(LoadedSignature(sig), "x")));
            }),
            ErrorCode::kVerify);
  EXPECT_EQ(error_code_of([&] { LoadedSignature(sig.substr(0, sig.size() - 1)); }), ErrorCode::kVerify);
}

namespace {

// An in-memory vault of blobs for chain tests: id = SHA-256 (the tests need no key).
struct Blobs {
  std::map<Hash, std::pair<BlobType, std::string>> m;
  Hash put(BlobType t, std::string b) {
    Hash id = sha256(b);
    m[id] = {t, std::move(b)};
    return id;
  }
  BlobFetch fetch() {
    return [this](const Hash& id, BlobType t) -> std::string_view {
      auto it = m.find(id);
      if (it == m.end()) throw Error(ErrorCode::kVerify, "no blob " + to_hex(id));
      if (it->second.first != t)
        throw Error(ErrorCode::kVerify, "blob " + to_hex(id) + " has the wrong type");
      return it->second.second;
    };
  }
};

// Base + one delta per later version; returns the head id of each version.
std::vector<Hash> build_chain(Blobs& blobs, const std::vector<std::string>& versions) {
  std::vector<Hash> heads{blobs.put(BlobType::kFile, versions[0])};
  for (std::size_t i = 1; i < versions.size(); ++i) {
    DeltaHeader h;
    h.basis = heads.back();
    h.basis_sha256 = sha256(versions[i - 1]);
    h.basis_size = versions[i - 1].size();
    h.target_sha256 = sha256(versions[i]);
    h.target_size = versions[i].size();
    h.depth = static_cast<std::uint32_t>(i);
    LoadedSignature sig(make_signature(versions[i - 1]));
    heads.push_back(blobs.put(BlobType::kDelta, encode_delta_blob(h, make_delta(sig, versions[i]))));
  }
  return heads;
}

}  // namespace

TEST(DeltaChain, FiveLinksRebuildEveryVersionExactly) {
  std::vector<std::string> v{text(100'000, 11)};
  for (int i = 1; i <= 5; ++i) v.push_back(v.back() + text(3'000, 11 + i));
  v[3][10] = '!';  // an in-place edit in the middle of the chain
  for (int i = 4; i <= 5; ++i) v[i][10] = '!';
  Blobs blobs;
  std::vector<Hash> heads = build_chain(blobs, v);
  for (int i = 1; i <= 5; ++i) {
    Scratch out;
    ChainInfo info = rebuild_delta_chain(heads[i], blobs.fetch(), out.fd(), out.dir());
    EXPECT_EQ(slurp(out.fd()), v[i]) << "version " << i;
    EXPECT_EQ(info.depth, static_cast<std::uint32_t>(i));
    EXPECT_EQ(info.base_bytes, 100'000u);
    EXPECT_EQ(info.chain, std::vector<Hash>(heads.begin(), heads.begin() + i));
  }
}

TEST(DeltaChain, InconsistentChainsFailWithVerify) {
  std::vector<std::string> v{text(20'000, 21), text(20'500, 21), text(21'000, 21)};
  Blobs blobs;
  std::vector<Hash> heads = build_chain(blobs, v);
  // Depth that does not count down: the head claims depth 3 over a link of depth 1.
  {
    std::string head = blobs.m[heads[2]].second;
    head[120] = 3;
    Hash bad = blobs.put(BlobType::kDelta, head);
    Scratch out;
    EXPECT_EQ(error_code_of([&] { rebuild_delta_chain(bad, blobs.fetch(), out.fd(), out.dir()); }),
              ErrorCode::kVerify);
  }
  // A basis of the wrong type (a delta where the base should be a full copy).
  {
    std::string first = blobs.m[heads[1]].second;
    std::memcpy(first.data() + 8, heads[2].data(), 32);
    Hash bad = blobs.put(BlobType::kDelta, first);
    Scratch out;
    EXPECT_EQ(error_code_of([&] { rebuild_delta_chain(bad, blobs.fetch(), out.fd(), out.dir()); }),
              ErrorCode::kVerify);
  }
  // A base whose SHA-256 differs from what the first delta names.
  {
    std::string first = blobs.m[heads[1]].second;
    Hash other = blobs.put(BlobType::kFile, text(20'000, 99));
    std::memcpy(first.data() + 8, other.data(), 32);
    Hash bad = blobs.put(BlobType::kDelta, first);
    Scratch out;
    EXPECT_EQ(error_code_of([&] { rebuild_delta_chain(bad, blobs.fetch(), out.fd(), out.dir()); }),
              ErrorCode::kVerify);
  }
  // A corrupted stream byte (re-hashed, so only the patch can notice).
  {
    std::string head = blobs.m[heads[2]].second;
    head[head.size() - 2] ^= 0x55;
    Hash bad = blobs.put(BlobType::kDelta, head);
    Scratch out;
    EXPECT_EQ(error_code_of([&] { rebuild_delta_chain(bad, blobs.fetch(), out.fd(), out.dir()); }),
              ErrorCode::kVerify);
    struct stat st;
    fstat(out.fd(), &st);
    EXPECT_LE(static_cast<std::uint64_t>(st.st_size), v[2].size());
  }
}

TEST(DeltaConfigKeys, DefaultsValuesAndErrors) {
  const std::string head = "state_dir = \"/s\"\n[vault]\nurl = \"file:///v\"\n";
  Config d = parse_config(head, "site.toml");
  EXPECT_EQ(d.delta.max_chain, 8u);
  EXPECT_EQ(d.delta.max_ratio, 0.5);
  EXPECT_EQ(d.delta.min_size, 16384u);
  Config c = parse_config(head +
                              "[delta]\nmax_chain = 3\nmax_ratio = 0.25\nmin_size = \"1MiB\"\n"
                              "[[source]]\nroot = \"/var/mail\"\nlayout = \"mbox\"\n",
                          "site.toml");
  EXPECT_EQ(c.delta.max_chain, 3u);
  EXPECT_EQ(c.delta.max_ratio, 0.25);
  EXPECT_EQ(c.delta.min_size, 1u << 20);
  ASSERT_EQ(c.sources.size(), 1u);
  EXPECT_EQ(c.sources[0].layout, "mbox");
  auto error_of = [&](const std::string& extra) -> std::string {
    try {
      parse_config(head + extra, "site.toml");
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kUsage);
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(error_of("[delta]\nmax_ratio = 1.5\n"),
            "site.toml:5: 'delta.max_ratio' must be a number in (0, 1], e.g. 0.5");
  EXPECT_EQ(error_of("[delta]\nmax_chain = -1\n"), "site.toml:5: 'max_chain' = -1 is out of range 0..1000");
  EXPECT_EQ(error_of("[delta]\nchain = 2\n"),
            "site.toml:5: unknown key 'delta.chain' (known: max_chain, max_ratio, min_size)");
}

TEST(DeltaTree, DeltaEntriesNeedTheirChainAndOnlyFilesHaveThem) {
  const std::string id(64, 'a');
  auto tree = [&](const std::string& extra, const char* kind = "file") {
    std::string t = std::string(R"({"version":1,"entries":[{"path":"f","kind":")") + kind +
                    R"(","mode":384,"mtime_ns":0,"size":1,"sha256":")" + std::string(64, '0') + "\"" + extra +
                    (std::string(kind) == "message" ? R"(,"header":")" + id + "\"" : "") + "}]}";
    return Bytes(t.begin(), t.end());
  };
  Tree ok =
      decode_tree(tree(R"(,"delta":")" + id + R"(","chain":[")" + id + R"("],"signature":")" + id + "\""));
  ASSERT_EQ(ok.entries.size(), 1u);
  EXPECT_EQ(ok.entries[0].chain.size(), 1u);
  EXPECT_TRUE(ok.entries[0].signature.has_value());
  EXPECT_EQ(
      encode_tree(ok),
      std::string(
          R"({"version":1,"entries":[{"path":"f","kind":"file","mode":384,"mtime_ns":0,"size":1,"sha256":")") +
          std::string(64, '0') + R"(","delta":")" + id + R"(","chain":[")" + id + R"("],"signature":")" + id +
          R"("}]})");
  for (std::string bad : {R"(,"delta":")" + id + "\"", R"(,"chain":[")" + id + R"("])",
                          R"(,"delta":")" + id + R"(","chain":[])", R"(,"delta":")" + id + R"(","chain":[3])",
                          R"(,"blob":")" + id + R"(","delta":")" + id + R"(","chain":[")" + id + R"("])"}) {
    EXPECT_EQ(error_code_of([&] { decode_tree(tree(bad)); }), ErrorCode::kVerify) << bad;
  }
  EXPECT_EQ(error_code_of([&] {
              decode_tree(tree(R"(,"delta":")" + id + R"(","chain":[")" + id + R"("])", "message"));
            }),
            ErrorCode::kVerify);
}
