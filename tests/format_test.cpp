// The vault format's encodings against docs/FORMAT.md §11 (values computed
// independently with Python's hmac/hashlib), and the decoders' refusals.
#include <gtest/gtest.h>

#include <string>
#include <thread>

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
// The id whose first byte is n, the rest zero.
Hash numbered(int n) {
  Hash id{};
  id[0] = static_cast<std::uint8_t>(n);
  return id;
}
// Adds the blobs to `w` in order, under the ids numbered(1), numbered(2), ...
void add_numbered(PackWriter& w, std::initializer_list<std::pair<BlobType, const std::string*>> blobs) {
  int n = 0;
  for (const auto& [type, b] : blobs) w.add(type, numbered(++n), b->data(), b->size());
}
}  // namespace

TEST(FormatVector, BlobIdsAreKeyedHmacSha256) {
  std::string h = "Subject: hi\n\n", b = "hello\n";
  EXPECT_EQ(to_hex(hmac_sha256(key_0_to_31(), h.data(), h.size())),
            "267b6c11c72b3db6a913e09a541a756bf507a8297a03735090937bfbe710dc9a");
  EXPECT_EQ(to_hex(hmac_sha256(key_0_to_31(), b.data(), b.size())),
            "d53db90fadc43613379d41ea261d0aaeb319e979bbfbbf2098a94362b0405757");
  // Each thread keeps one context keyed with the last key: another key, then the
  // first again, an empty input, and another thread give RFC 2104's values
  // (computed with Python's hmac module).
  Hash other{};
  for (int i = 0; i < 32; ++i) other[i] = static_cast<std::uint8_t>(32 + i);
  EXPECT_EQ(to_hex(hmac_sha256(other, h.data(), h.size())),
            "c3dcf0e61c89c069b8bdfb83586c7f332a9775e27eb09223602c11c3ffc73df8");
  EXPECT_EQ(to_hex(hmac_sha256(key_0_to_31(), "", 0)),
            "d38b42096d80f45f826b44a9d5607de72496a415d3f4a1a8c88e3bb9da8dc1cb");
  std::string in_thread;
  std::thread([&] { in_thread = to_hex(hmac_sha256(other, h.data(), h.size())); }).join();
  EXPECT_EQ(in_thread, "c3dcf0e61c89c069b8bdfb83586c7f332a9775e27eb09223602c11c3ffc73df8");
  EXPECT_EQ(to_hex(hmac_sha256(key_0_to_31(), h.data(), h.size())),
            "267b6c11c72b3db6a913e09a541a756bf507a8297a03735090937bfbe710dc9a");
}

// A pack writer given back an earlier pack's buffer fills it in place (no fresh
// pages per pack) and writes exactly the bytes a new writer would.
TEST(FormatVector, PackWriterReusesARecycledBufferForTheSameBytes) {
  std::string h = "Subject: hi\n\n", b = "hello\n";
  Hash hid = hmac_sha256(key_0_to_31(), h.data(), h.size());
  Hash bid = hmac_sha256(key_0_to_31(), b.data(), b.size());
  PackWriter w(PackKind::kData, 4096);
  w.add(BlobType::kFile, bid, b.data(), b.size());
  Bytes first = w.finish();
  ASSERT_GE(first.capacity(), 4096u);
  const std::uint8_t* recycled = first.data();
  Bytes stale = first;  // what the recycled buffer held before
  w.add(BlobType::kFile, bid, b.data(), b.size());
  w.finish(std::move(first));  // the writer now fills the first pack's buffer
  w.add(BlobType::kHeader, hid, h.data(), h.size());
  w.add(BlobType::kBody, bid, b.data(), b.size());
  Bytes again = w.finish();
  EXPECT_EQ(again.data(), recycled);
  ASSERT_EQ(again.size(), 141u);
  EXPECT_EQ(to_hex(sha256(again.data(), again.size())),
            "bf9caca6d9c96312d0dffea017690dcb52ddc93fcdb0b00ed491ff7863c43709");
  EXPECT_NE(again, stale);
  // A buffer smaller than the writer's reserve is grown to it.
  w.finish(Bytes(3, 0x55));
  w.add(BlobType::kBody, bid, b.data(), b.size());
  Bytes small = w.finish();
  EXPECT_GE(small.capacity(), 4096u);
  EXPECT_EQ(small.size(), 8u + 6u + 49u + 16u);
  EXPECT_EQ(std::string(small.begin() + 8, small.begin() + 14), b);
}

// Header blobs are laid out together after the other blobs (they compress better
// beside each other); entries() gives, before finish(), the offsets it writes.
TEST(FormatVector, PackWriterLaysHeaderBlobsOutAfterTheOthers) {
  std::string h1 = "Subject: one\n\n", b1 = "body one\n", f = "file", h2 = "Subject: two\n\n";
  PackWriter w(PackKind::kData);
  add_numbered(
      w, {{BlobType::kHeader, &h1}, {BlobType::kBody, &b1}, {BlobType::kFile, &f}, {BlobType::kHeader, &h2}});
  EXPECT_EQ(w.size(), 8 + h1.size() + b1.size() + f.size() + h2.size());
  std::vector<PackEntry> promised = w.entries();
  Bytes pack = w.finish();
  EXPECT_EQ(std::string(pack.begin() + 8, pack.begin() + 8 + 41), b1 + f + h1 + h2);
  std::vector<PackEntry> parsed = parse_pack(pack);
  ASSERT_EQ(parsed.size(), 4u);
  const std::uint64_t offsets[4] = {21, 8, 17, 35};
  const std::string* blobs[4] = {&h1, &b1, &f, &h2};
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(parsed[i].id, numbered(i + 1)) << i;
    EXPECT_EQ(parsed[i].offset, offsets[i]) << i;
    EXPECT_EQ(promised[i].offset, offsets[i]) << i;
    EXPECT_EQ(
        std::string(pack.begin() + parsed[i].offset, pack.begin() + parsed[i].offset + parsed[i].length),
        *blobs[i])
        << i;
  }
  // The next pack starts empty: no header blob is carried over.
  add_numbered(w, {{BlobType::kHeader, &h1}});
  Bytes next = w.finish();
  EXPECT_EQ(next.size(), 8 + h1.size() + 49 + 16);
  EXPECT_EQ(parse_pack(next)[0].offset, 8u);
}

// A header blob above kGroupedHeaderMax (a file without an empty line is all header
// block) stays where it was added; one of exactly that size is grouped.
TEST(FormatVector, PackWriterLeavesALargeHeaderBlobWhereItWasAdded) {
  const std::size_t max = PackWriter::kGroupedHeaderMax;
  std::string big(max + 1, 'h'), edge(max, 'e'), body = "body\n";
  PackWriter w(PackKind::kData);
  add_numbered(w, {{BlobType::kHeader, &edge}, {BlobType::kHeader, &big}, {BlobType::kBody, &body}});
  std::vector<PackEntry> promised = w.entries();
  Bytes pack = w.finish();
  std::vector<PackEntry> parsed = parse_pack(pack);
  ASSERT_EQ(parsed.size(), 3u);
  const std::uint64_t offsets[3] = {8 + big.size() + body.size(), 8, 8 + big.size()};
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(parsed[i].offset, offsets[i]) << i;
    EXPECT_EQ(promised[i].offset, offsets[i]) << i;
  }
  EXPECT_EQ(pack.size(), 8 + big.size() + body.size() + edge.size() + 3 * 49 + 16);
  EXPECT_EQ(pack[8 + big.size() + body.size()], 'e');
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
            "52445041434b303168656c6c6f0a5375626a6563743a2068690a0a01267b6c11c72b3db6a913e0"
            "9a541a756bf507a8297a03735090937bfbe710dc9a0e000000000000000d0000000000000002d5"
            "3db90fadc43613379d41ea261d0aaeb319e979bbfbbf2098a94362b04057570800000000000000"
            "0600000000000000020000000000000052445041434b3031");
  EXPECT_EQ(to_hex(sha256(pack.data(), pack.size())),
            "bf9caca6d9c96312d0dffea017690dcb52ddc93fcdb0b00ed491ff7863c43709");
  std::vector<PackEntry> parsed = parse_pack(pack);
  ASSERT_EQ(parsed.size(), 2u);
  EXPECT_EQ(parsed[0].id, hid);  // entries in the order added, the header blob after the body
  EXPECT_EQ(parsed[0].offset, 14u);
  EXPECT_EQ(parsed[0].length, 13u);
  EXPECT_EQ(parsed[1].id, bid);
  EXPECT_EQ(parsed[1].offset, 8u);
  EXPECT_EQ(parsed[1].length, 6u);
  ASSERT_EQ(entries.size(), 2u);  // what entries() promised before finish()
  EXPECT_EQ(entries[0].offset, 14u);
  EXPECT_EQ(entries[1].offset, 8u);

  IndexPack ip;
  for (int i = 0; i < 32; ++i) ip.id[i] = static_cast<std::uint8_t>(32 + i);
  ip.size = 1234;
  ip.kind = PackKind::kData;
  ip.blobs = entries;
  Bytes idx = encode_index({ip});
  ASSERT_EQ(idx.size(), 163u);
  EXPECT_EQ(to_hex(sha256(idx.data(), idx.size())),
            "7f6b0992f624ecb7fd2020e40e1d0db3145665fa3247f9a347596cccf054ca03");
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

namespace {
TreeEntry msg(const std::string& name, const std::string& content) {
  TreeEntry m;
  m.kind = EntryKind::kMessage;
  m.path = "cur/" + name;
  m.mode = 0600;
  m.mtime_ns = 1700000000000000000;
  m.size = content.size();
  m.sha256 = sha256(content);
  m.header = sha256("h" + content);
  return m;
}
std::string patch_text(const std::string& base_hex, int depth, const std::string& removed,
                       const std::string& entries) {
  return "{\"version\":2,\"base\":\"" + base_hex + "\",\"depth\":" + std::to_string(depth) +
         ",\"removed\":[" + removed + "],\"entries\":[" + entries + "]}";
}
}  // namespace

// FORMAT.md §7.1: a patch names its base, removes paths and adds or replaces
// entries; resolving it gives exactly the next tree.
TEST(FormatTreePatches, PatchOfAFlagChangeADeliveryAndADeletionResolvesToTheNextTree) {
  Tree prev;
  prev.entries = {msg("1.M1P1.h:2,", "one"), msg("2.M2P1.h:2,", "two"), msg("3.M3P1.h:2,", "three")};
  Tree next;
  TreeEntry flagged = msg("1.M1P1.h:2,S", "one");
  next.entries = {flagged, msg("3.M3P1.h:2,", "three"), msg("4.M4P1.h:2,", "four")};
  std::map<Hash, Bytes> blobs;
  const Hash prev_id = sha256("prev-id");
  blobs[prev_id] = bytes(encode_tree(prev));

  Tree patch = make_tree_patch(prev, prev_id, next);
  ASSERT_TRUE(patch.base);
  EXPECT_EQ(*patch.base, prev_id);
  EXPECT_EQ(patch.depth, 1u);
  EXPECT_EQ(patch.removed, (std::vector<std::string>{"cur/1.M1P1.h:2,", "cur/2.M2P1.h:2,"}));
  ASSERT_EQ(patch.entries.size(), 2u);
  EXPECT_EQ(patch.entries[0].path, "cur/1.M1P1.h:2,S");
  EXPECT_EQ(patch.entries[1].path, "cur/4.M4P1.h:2,");
  const std::string text = encode_tree(patch);
  const std::string head = "{\"version\":2,\"base\":\"" + to_hex(prev_id) + "\",\"depth\":1,\"removed\":[";
  EXPECT_EQ(text.substr(0, head.size()), head);
  EXPECT_EQ(encode_tree(decode_tree(bytes(text))), text);

  const Hash patch_id = sha256("patch-id");
  blobs[patch_id] = bytes(text);
  auto raw = [&](const Hash& id) { return blobs.at(id); };
  Tree resolved = resolve_tree(patch_id, raw);
  EXPECT_EQ(encode_tree(resolved), encode_tree(next));
  EXPECT_EQ(resolved.depth, 1u);
  EXPECT_EQ(resolved.bases, std::vector<Hash>{prev_id});

  // A second patch on the first: two bases, nearest first.
  Tree next2 = next;
  next2.entries.pop_back();
  Tree patch2 = make_tree_patch(resolved, patch_id, next2);
  EXPECT_EQ(patch2.depth, 2u);
  EXPECT_EQ(patch2.removed, std::vector<std::string>{"cur/4.M4P1.h:2,"});
  EXPECT_TRUE(patch2.entries.empty());
  const Hash patch2_id = sha256("patch2-id");
  blobs[patch2_id] = bytes(encode_tree(patch2));
  std::map<Hash, Tree> memo;
  Tree resolved2 = resolve_tree(patch2_id, raw, memo);
  EXPECT_EQ(encode_tree(resolved2), encode_tree(next2));
  EXPECT_EQ(resolved2.bases, (std::vector<Hash>{patch_id, prev_id}));
  EXPECT_EQ(memo.size(), 3u);
}

// Hostile patches: each is refused with kVerify and says why.
TEST(FormatTreePatches, RefuseCyclesLiesAboutDepthAndRemovalsOfMissingPaths) {
  Tree full;
  full.entries = {msg("1.M1P1.h:2,", "one")};
  const Hash full_id = sha256("full"), a = sha256("a"), b = sha256("b");
  const std::string entry4 = encode_tree(Tree{{msg("4.M4P1.h:2,", "four")}, {}, 0, {}, {}});
  const std::string e4 = entry4.substr(entry4.find('[') + 1, entry4.rfind(']') - entry4.find('[') - 1);
  std::map<Hash, Bytes> blobs{{full_id, bytes(encode_tree(full))}};
  auto raw = [&](const Hash& id) { return blobs.at(id); };
  auto refused = [&](const std::string& a_text, const std::string& b_text, const std::string& why) {
    blobs[a] = bytes(a_text);
    blobs[b] = bytes(b_text);
    try {
      resolve_tree(a, raw);
      ADD_FAILURE() << "accepted: " << a_text;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kVerify);
      EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
    }
  };
  const std::string fh = to_hex(full_id), ah = to_hex(a), bh = to_hex(b);
  // a → b → a: every step claims one less, so the second visit of a is too deep.
  refused(patch_text(bh, 2, "", ""), patch_text(ah, 1, "", ""), "deeper than its patch says");
  // A depth that does not match its base's.
  refused(patch_text(fh, 2, "", ""), "", "depth 2 on a base of depth 0");
  refused(patch_text(fh, 65, "", ""), "", "depth 65 is not 1..64");
  refused(patch_text(fh, 0, "", ""), "", "depth 0 is not 1..64");
  refused(patch_text(fh, 1, "\"cur/9.M9P9.h:2,\"", ""), "",
          "removes 'cur/9.M9P9.h:2,', which its base does not hold");
  refused(patch_text(fh, 1, "\"cur/1.M1P1.h:2,\",\"cur/0\"", ""), "", "removed paths are not sorted");
  refused(patch_text(fh, 1, "", e4 + "," + e4), "", "entries are not sorted by path and unique");
  // A self-reference.
  refused(patch_text(ah, 1, "", ""), "", "deeper than its patch says");
  // A full tree out of path order (patches are merged with it in that order).
  {
    Tree unsorted;
    unsorted.entries = {msg("2.M2P1.h:2,", "two"), msg("1.M1P1.h:2,", "one")};
    try {
      decode_tree(bytes(encode_tree(unsorted)));
      ADD_FAILURE() << "accepted an unsorted tree";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), "malformed tree: entries are not sorted by path and unique");
    }
  }
  // And a good one resolves.
  blobs[a] = bytes(patch_text(fh, 1, "\"cur/1.M1P1.h:2,\"", e4));
  Tree t = resolve_tree(a, raw);
  ASSERT_EQ(t.entries.size(), 1u);
  EXPECT_EQ(t.entries[0].path, "cur/4.M4P1.h:2,");
}
