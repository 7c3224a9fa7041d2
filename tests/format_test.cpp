// The vault format's encodings against docs/FORMAT.md §11 (values computed
// independently with Python's hmac/hashlib), and the decoders' refusals.
#include <gtest/gtest.h>

#include "support/harness.hpp"
#include "vault/error.hpp"
#include "vault/format.hpp"

using namespace reduit;

namespace {
Hash key_0_to_31() {
  Hash k;
  for (int i = 0; i < 32; ++i) k[i] = static_cast<std::uint8_t>(i);
  return k;
}
Bytes bytes(const std::string& s) {
  return Bytes(s.begin(), s.end());
}
}  // namespace

TEST(FormatVector, BlobIdsAreKeyedHmacSha256) {
  std::string h = "Subject: hi\n\n", b = "hello\n";
  EXPECT_EQ(to_hex(hmac_sha256(key_0_to_31(), h.data(), h.size())),
            "267b6c11c72b3db6a913e09a541a756bf507a8297a03735090937bfbe710dc9a");
  EXPECT_EQ(to_hex(hmac_sha256(key_0_to_31(), b.data(), b.size())),
            "d53db90fadc43613379d41ea261d0aaeb319e979bbfbbf2098a94362b0405757");
}

TEST(FormatVector, PackPlaintextAndIndexBytes) {
  std::string h = "Subject: hi\n\n", b = "hello\n";
  Hash hid = hmac_sha256(key_0_to_31(), h.data(), h.size());
  Hash bid = hmac_sha256(key_0_to_31(), b.data(), b.size());
  PackWriter w(PackKind::kData);
  w.add(BlobType::kHeader, hid, h.data(), h.size());
  w.add(BlobType::kBody, bid, b.data(), b.size());
  std::vector<PackEntry> entries = w.entries();
  Bytes pack = w.finish();
  ASSERT_EQ(pack.size(), 141u);
  EXPECT_EQ(to_hex(pack.data(), pack.size()),
            "52445041434b30315375626a6563743a2068690a0a68656c6c6f0a01267b6c11c72b3db6a913e0"
            "9a541a756bf507a8297a03735090937bfbe710dc9a08000000000000000d0000000000000002d5"
            "3db90fadc43613379d41ea261d0aaeb319e979bbfbbf2098a94362b04057571500000000000000"
            "0600000000000000020000000000000052445041434b3031");
  EXPECT_EQ(to_hex(sha256(pack.data(), pack.size())),
            "b38decb33ad8d9ceef12a3df909231cc5a55da16daab9ffbf0e196da97d8105f");
  std::vector<PackEntry> parsed = parse_pack(pack);
  ASSERT_EQ(parsed.size(), 2u);
  EXPECT_EQ(parsed[1].id, bid);
  EXPECT_EQ(parsed[1].offset, 21u);
  EXPECT_EQ(parsed[1].length, 6u);

  IndexPack ip;
  for (int i = 0; i < 32; ++i) ip.id[i] = static_cast<std::uint8_t>(32 + i);
  ip.size = 1234;
  ip.kind = PackKind::kData;
  ip.blobs = entries;
  Bytes idx = encode_index({ip});
  ASSERT_EQ(idx.size(), 163u);
  EXPECT_EQ(to_hex(sha256(idx.data(), idx.size())),
            "5d39bf1cd4b7e92e9fd6f603920c1190b4c648681bfdedc7c4d3d77abf7af18f");
  std::vector<IndexPack> back = decode_index(idx);
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(back[0].size, 1234u);
  EXPECT_EQ(back[0].blobs.size(), 2u);
  EXPECT_EQ(back[0].blobs[0].id, hid);
}

TEST(FormatDecoders, RefuseHostilePacks) {
  PackWriter w(PackKind::kData);
  std::string x = "abc";
  w.add(BlobType::kFile, Hash{}, x.data(), x.size());
  Bytes good = w.finish();
  // Entry offset pointing into the table.
  Bytes bad = good;
  bad[8 + 3 + 33] = 200;
  EXPECT_EQ(reduit::test::error_code_of([&] { parse_pack(bad); }), ErrorCode::kVerify);
  // Entry count larger than the pack.
  bad = good;
  bad[bad.size() - 16] = 0xff;
  EXPECT_EQ(reduit::test::error_code_of([&] { parse_pack(bad); }), ErrorCode::kVerify);
  // Unknown blob type.
  bad = good;
  bad[8 + 3] = 9;
  EXPECT_EQ(reduit::test::error_code_of([&] { parse_pack(bad); }), ErrorCode::kVerify);
  // Truncated.
  bad.assign(good.begin(), good.begin() + 10);
  EXPECT_EQ(reduit::test::error_code_of([&] { parse_pack(bad); }), ErrorCode::kVerify);
  EXPECT_EQ(
      reduit::test::error_code_of([&] { decode_index(bytes("RDINDX01\xff\xff\xff\xff\xff\xff\xff\x7f")); }),
      ErrorCode::kVerify);
  EXPECT_EQ(reduit::test::error_code_of([&] { decode_index(bytes("garbage")); }), ErrorCode::kVerify);
}

TEST(FormatTrees, RoundTripIsDeterministic) {
  Tree t;
  TreeEntry d;
  d.kind = EntryKind::kDir;
  d.path = "cur";
  d.mode = 0700;
  d.mtime_ns = 1;
  TreeEntry m;
  m.kind = EntryKind::kMessage;
  m.path = "cur/1.M1P1.h,S=5:2,S";
  m.mode = 0600;
  m.mtime_ns = 1700000000123456789;
  m.size = 5;
  m.sha256 = sha256("hello");
  m.header = Hash{};
  t.entries = {d, m};
  std::string text = encode_tree(t);
  EXPECT_EQ(
      text,
      "{\"version\":1,\"entries\":[{\"path\":\"cur\",\"kind\":\"dir\",\"mode\":448,\"mtime_ns\":1},"
      "{\"path\":\"cur/1.M1P1.h,S=5:2,S\",\"kind\":\"message\",\"mode\":384,\"mtime_ns\":1700000000123456789,"
      "\"size\":5,\"sha256\":\"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\","
      "\"header\":\"0000000000000000000000000000000000000000000000000000000000000000\"}]}");
  Tree back = decode_tree(bytes(text));
  EXPECT_EQ(encode_tree(back), text);
  EXPECT_EQ(reduit::test::error_code_of([&] {
              decode_tree(
                  bytes("{\"version\":1,\"entries\":[{\"path\":\"x\",\"kind\":\"message\","
                        "\"mode\":1,\"mtime_ns\":1,\"size\":1,\"sha256\":\"00\"}]}"));
            }),
            ErrorCode::kVerify);
  EXPECT_EQ(reduit::test::error_code_of([&] { decode_tree(bytes("[1,2]")); }), ErrorCode::kVerify);
}

TEST(FormatPaths, RelativePathRules) {
  for (const char* ok : {"cur/x:2,S", "a", ".Archive.2024", "default/bar/cur/01:2,"}) {
    EXPECT_NO_THROW(check_relative_path(ok, "path")) << ok;
  }
  for (std::string bad : std::vector<std::string>{"", "/etc/passwd", "../x", "a/../b", "a//b", "a/./b", "a/",
                                                  "a\\b", std::string("a\0b", 3)}) {
    EXPECT_EQ(reduit::test::error_code_of([&] { check_relative_path(bad, "path"); }), ErrorCode::kVerify)
        << bad;
  }
}
