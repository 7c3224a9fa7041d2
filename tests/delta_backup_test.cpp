// Files that change in place, end to end with the real binary, real gpg keys and a
// file:// vault: mbox sources, librsync delta chains, re-basing, the catalog-loss
// path, and corrupt deltas (issue 5, must-show 3; docs/FORMAT.md §4.1–4.2).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "support/harness.hpp"
#include "support/site.hpp"
#include "vault/delta.hpp"
#include "vault/repository.hpp"

namespace fs = std::filesystem;
using reduit::test::read_file;
using reduit::test::RunResult;
using reduit::test::Site;
using reduit::test::TempDir;
using reduit::test::write_file;

namespace {

// One mbox message (mboxo: "From " line, headers, body of word lines; no body line
// starts with "From ").
std::string mbox_message(std::mt19937& rng, int n, std::size_t body_bytes) {
  static const char* words[] = {"quarterly", "report", "attached", "meeting", "vault",  "Dovecot", "restore",
                                "please",    "review", "invoice",  "Zurich",  "backup", "thanks",  "regards",
                                "tomorrow",  "server", "mailbox",  "policy",  "audit",  "delta"};
  std::string m = "From sender" + std::to_string(n % 97) + "@example.ch Mon Nov 30 07:00:00 2026\n";
  m += "From: Sender " + std::to_string(n % 97) + " <sender" + std::to_string(n % 97) + "@example.ch>\n";
  m += "To: alice@example.ch\nSubject: message " + std::to_string(n) + "\nMessage-ID: <" + std::to_string(n) +
       "." + std::to_string(rng()) + "@example.ch>\nDate: Mon, 30 Nov 2026 07:00:00 +0000\n\n";
  std::size_t start = m.size(), words_on_line = 0;
  while (m.size() - start < body_bytes) {
    m += words[rng() % 20];
    m += std::to_string(rng() % 100);
    m += (++words_on_line % 9 == 0) ? '\n' : ' ';
  }
  m += "\n\n";
  return m;
}

// An mbox of about `bytes` bytes of ~`message_bytes` messages.
std::string make_mbox(std::size_t bytes, std::size_t message_bytes, unsigned seed) {
  std::mt19937 rng(seed);
  std::string out;
  out.reserve(bytes + message_bytes * 2);
  for (int n = 0; out.size() < bytes; ++n) out += mbox_message(rng, n, message_bytes);
  return out;
}

std::uint64_t uploaded(const nlohmann::json& b) {
  return b["data_bytes_uploaded"].get<std::uint64_t>() + b["metadata_bytes_uploaded"].get<std::uint64_t>();
}

// Restores `mailbox` of `snapshot` and returns the bytes of file `name` in it.
std::string restored(const Site& site, const std::string& mailbox, const std::string& snapshot,
                     const std::string& name) {
  std::string to = site.path("r-" + snapshot.substr(0, 12) + "-" + std::to_string(rand()));
  RunResult r = site.restore(mailbox, to, snapshot);
  EXPECT_EQ(r.status, 0) << r.err;
  return read_file(to + "/" + name);
}

std::string delta_config(int max_chain, double max_ratio = 0.5, const std::string& min_size = "16KiB") {
  return "[delta]\nmax_chain = " + std::to_string(max_chain) + "\nmax_ratio = " + std::to_string(max_ratio) +
         "\nmin_size = \"" + min_size + "\"\n";
}

}  // namespace

// Must-show 3a: a 200 MB mbox with one message appended: the second backup uploads
// under 2x the appended bytes; restore is byte-identical.
TEST(Deltas, MboxWithOneMessageAppendedUploadsUnderTwiceItsSizeAndRestoresExactly) {
  TempDir mail;
  const std::string path = mail.path() + "/alice";
  std::string v1 = make_mbox(200'000'000, 6'000, 1);
  write_file(path, v1);
  Site site({mail.path()}, "mbox");
  site.init();
  nlohmann::json first = site.backup();
  EXPECT_EQ(first["files"], 1);
  EXPECT_EQ(first["delta_files"], 0);
  EXPECT_EQ(first["bytes"], v1.size());

  std::mt19937 rng(2);
  const std::string appended = mbox_message(rng, 999'999, 20'000);
  {
    std::ofstream out(path, std::ios::app | std::ios::binary);
    out << appended;
  }
  nlohmann::json second = site.backup();
  EXPECT_EQ(second["files_read"], 1);
  EXPECT_EQ(second["delta_files"], 1);
  EXPECT_EQ(second["rebased"], 0);
  EXPECT_EQ(second["bytes"], v1.size() + appended.size());
  // Plaintext: the message, the old tail block (at most 4 KiB) and the blob header.
  EXPECT_LT(second["delta_bytes"].get<std::size_t>(), appended.size() + 4096 + 200);
  EXPECT_LT(uploaded(second), 2 * appended.size())
      << "data " << second["data_bytes_uploaded"] << " + metadata " << second["metadata_bytes_uploaded"]
      << " for " << appended.size() << " appended bytes";
  std::printf(
      "[ figures  ] 200 MB mbox: first backup %.2f s, uploaded %llu B; one %zu-byte message appended: "
      "%.2f s, uploaded %llu B (data %llu + metadata %llu), delta blob %llu B\n",
      first["seconds"].get<double>(), static_cast<unsigned long long>(uploaded(first)), appended.size(),
      second["seconds"].get<double>(), static_cast<unsigned long long>(uploaded(second)),
      second["data_bytes_uploaded"].get<unsigned long long>(),
      second["metadata_bytes_uploaded"].get<unsigned long long>(),
      second["delta_bytes"].get<unsigned long long>());

  std::string to = site.path("restored");
  RunResult r = site.restore(fs::path(mail.path()).filename(), to);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(reduit::test::tree_facts(to).at("alice").sha256,
            reduit::test::tree_facts(mail.path()).at("alice").sha256);
  EXPECT_EQ(fs::file_size(to + "/alice"), v1.size() + appended.size());
}

// Must-show 3b: a 5-link delta chain restores every version exactly, and
// check --read-data (with an archive key) finds every link.
TEST(Deltas, FiveLinkChainRestoresEveryVersionExactly) {
  TempDir mail;
  const std::string path = mail.path() + "/bob";
  std::vector<std::string> versions{make_mbox(400'000, 3'000, 3)};
  std::mt19937 rng(4);
  for (int i = 1; i <= 5; ++i) {
    std::string v = versions.back() + mbox_message(rng, 1000 + i, 2'000);
    if (i == 3) v.replace(1000, 7, "EDITED!");  // an in-place change, as a mail client's expunge does
    versions.push_back(v);
  }
  Site site({mail.path()}, "mbox");
  site.init();
  std::vector<std::string> snaps;
  for (std::size_t i = 0; i < versions.size(); ++i) {
    write_file(path, versions[i]);
    nlohmann::json b = site.backup();
    snaps.push_back(b["snapshot"]);
    EXPECT_EQ(b["delta_files"], i == 0 ? 0 : 1) << "version " << i;
    EXPECT_EQ(b["rebased"], 0) << "version " << i;
    // The appended message, the old tail block and (version 3) the edited block:
    // the block length for 400 kB is 512 (floor(sqrt) rounded down to 128s).
    if (i > 0) {
      EXPECT_LT(b["delta_bytes"].get<std::size_t>(),
                versions[i].size() - versions[i - 1].size() + 2 * 512 + 200)
          << "version " << i;
    }
  }
  for (std::size_t i = 0; i < versions.size(); ++i) {
    EXPECT_TRUE(restored(site, fs::path(mail.path()).filename(), snaps[i], "bob") == versions[i])
        << "version " << i;
  }
  RunResult check = site.reduit({"check", "--read-data", "--gnupghome", site.keys().archive_home->path()});
  EXPECT_EQ(check.status, 0) << check.out << check.err;
}

// Must-show 3c: a chain is re-based to a full copy past delta.max_chain links, and
// when a delta would exceed delta.max_ratio of the file; every version restores.
TEST(Deltas, ChainRebasesPastMaxChainAndForLargeDeltasAndEveryVersionRestores) {
  TempDir mail;
  const std::string path = mail.path() + "/carol";
  Site site({mail.path()}, "mbox", "", "", delta_config(2, 0.5));
  site.init();
  std::mt19937 rng(5);
  std::string v = make_mbox(100'000, 2'000, 6);
  // version: 0 full, 1 delta, 2 delta, 3 re-based (chain of 2 full), 4 delta,
  // 5 rewritten (a delta would be ~100% of the file) → re-based, 6 delta.
  const int expect_delta[] = {0, 1, 1, 0, 1, 0, 1};
  const int expect_rebased[] = {0, 0, 0, 1, 0, 1, 0};
  std::vector<std::string> versions, snaps;
  for (int i = 0; i <= 6; ++i) {
    if (i == 5)
      v = make_mbox(100'000, 2'000, 77);
    else if (i > 0)
      v += mbox_message(rng, 500 + i, 1'500);
    write_file(path, v);
    versions.push_back(v);
    nlohmann::json b = site.backup();
    snaps.push_back(b["snapshot"]);
    EXPECT_EQ(b["delta_files"], expect_delta[i]) << "version " << i;
    EXPECT_EQ(b["rebased"], expect_rebased[i]) << "version " << i;
  }
  const std::string mailbox = fs::path(mail.path()).filename();
  for (int i = 0; i <= 6; ++i) EXPECT_TRUE(restored(site, mailbox, snaps[i], "carol") == versions[i]) << i;
}

// A changed dovecot-uidlist (Maildir control file) is stored as a delta and every
// version restores exactly, with the messages beside it.
TEST(Deltas, ChangedDovecotUidlistIsStoredAsADeltaAndRestoresExactly) {
  TempDir mail;
  std::string box = mail.path() + "/example.ch/dave";
  for (const char* d : {"cur", "new", "tmp"}) fs::create_directories(box + "/" + d);
  std::string uidlist = "3 V1700000000 N1 Gd3f1a2b4c5d6e7f80123456789abcdef\n";
  for (int uid = 1; uid <= 1500; ++uid) {
    std::string name = std::to_string(1700000000 + uid) + ".M" + std::to_string(uid) + "P42.mx,S=120,W=124";
    uidlist += std::to_string(uid) + " :" + name + ":2,S\n";
    if (uid % 100 == 0)
      write_file(box + "/cur/" + name + ":2,S", "Subject: " + std::to_string(uid) + "\n\nhi\n");
  }
  write_file(box + "/dovecot-uidlist", uidlist);
  Site site({mail.path()}, "%d/%n");
  site.init();
  nlohmann::json first = site.backup();
  EXPECT_EQ(first["delta_files"], 0);
  std::string v1 = uidlist;
  // Dovecot rewrites the file (rename over it): a new header and three new UIDs.
  uidlist.replace(0, uidlist.find('\n'), "3 V1700000000 N1504 Gd3f1a2b4c5d6e7f80123456789abcdef");
  for (int uid = 1501; uid <= 1503; ++uid)
    uidlist += std::to_string(uid) + " :170000" + std::to_string(uid) + ".M1.mx:2,\n";
  write_file(box + "/dovecot-uidlist.tmp", uidlist);
  fs::rename(box + "/dovecot-uidlist.tmp", box + "/dovecot-uidlist");
  nlohmann::json second = site.backup();
  EXPECT_EQ(second["files_read"], 1);
  EXPECT_EQ(second["delta_files"], 1);
  EXPECT_LT(second["delta_bytes"].get<std::size_t>(), 1'000u);
  EXPECT_EQ(restored(site, "dave@example.ch", first["snapshot"], "dovecot-uidlist"), v1);
  std::string to = site.path("latest");
  ASSERT_EQ(site.restore("dave@example.ch", to).status, 0);
  EXPECT_EQ(read_file(to + "/dovecot-uidlist"), uidlist);
  EXPECT_EQ(reduit::test::tree_facts(to).size(), reduit::test::tree_facts(box).size());
}

// After a catalog loss (catalog rebuild, or a new state dir) the next version is a
// delta against the base whose signature the vault holds; it restores exactly.
TEST(Deltas, AfterCatalogLossTheNextVersionDeltasAgainstTheVaultsSignature) {
  TempDir mail;
  const std::string path = mail.path() + "/erin";
  Site site({mail.path()}, "mbox");
  site.init();
  std::mt19937 rng(8);
  std::string v = make_mbox(300'000, 2'000, 9);
  write_file(path, v);
  site.backup();
  v += mbox_message(rng, 1, 2'000);
  write_file(path, v);
  EXPECT_EQ(site.backup()["delta_files"], 1);

  RunResult rebuild = site.reduit({"catalog", "rebuild"});
  ASSERT_EQ(rebuild.status, 0) << rebuild.err;
  v += mbox_message(rng, 2, 2'000);
  write_file(path, v);
  nlohmann::json b = site.backup();
  EXPECT_EQ(b["signatures_from_vault"], 1);
  EXPECT_EQ(b["delta_files"], 1);
  EXPECT_EQ(b["rebased"], 0);
  EXPECT_LT(b["delta_bytes"].get<std::size_t>(), 2 * 2'100u + 4'096u + 200u);  // both messages since the base
  EXPECT_TRUE(restored(site, fs::path(mail.path()).filename(), b["snapshot"], "erin") == v);

  // The whole state dir lost: the same again, from the vault alone.
  fs::remove_all(site.path("state"));
  v += mbox_message(rng, 3, 2'000);
  write_file(path, v);
  RunResult r = site.reduit({"backup"});
  ASSERT_EQ(r.status, 1) << r.err;  // warns that the catalog was rebuilt from the vault
  nlohmann::json c = r.json();
  EXPECT_EQ(c["signatures_from_vault"], 1);
  EXPECT_EQ(c["delta_files"], 1);
  EXPECT_TRUE(restored(site, fs::path(mail.path()).filename(), c["snapshot"], "erin") == v);
}

// A delta whose stream is corrupt but whose blob id and pack signature are valid
// (written with the agent key, as a compromised mail host could): restore fails
// with exit 6 and a clear message, and leaves its destination as it found it.
TEST(Deltas, CorruptDeltaFailsRestoreWithVerifyAndWritesNothing) {
  TempDir mail;
  const std::string path = mail.path() + "/frank";
  std::string v1 = make_mbox(100'000, 2'000, 10);
  write_file(path, v1);
  Site site({mail.path()}, "mbox");
  site.init();
  site.backup();
  reduit::Repository repo(reduit::open_transport(site.url(), {}), site.keys().agent_home->path());
  repo.load_config();
  reduit::Hash base = repo.blob_id(v1.data(), v1.size());
  std::string v2 = v1 + "From x\n\nforged\n";
  reduit::DeltaHeader h{base, reduit::sha256(v1), v1.size(), reduit::sha256(v2), v2.size(), 1};
  // COPY_N4_N4 from offset 99,990 for 4,096 bytes: past the end of the basis.
  std::string stream = std::string("rs\x02\x36", 4) + "\x4f" + std::string("\x00\x01\x86\x96", 4) +
                       std::string("\x00\x00\x10\x00", 4) + std::string(1, '\0');
  std::string blob = reduit::encode_delta_blob(h, stream);
  reduit::Hash delta_id = repo.blob_id(blob.data(), blob.size());
  reduit::Tree tree;
  reduit::TreeEntry e;
  e.kind = reduit::EntryKind::kFile;
  e.path = "frank";
  e.mode = 0600;
  e.size = v2.size();
  e.sha256 = reduit::sha256(v2);
  e.delta = delta_id;
  e.chain = {base};
  tree.entries.push_back(e);
  std::string tree_json = reduit::encode_tree(tree);
  reduit::Hash tree_id = repo.blob_id(tree_json.data(), tree_json.size());
  std::vector<reduit::IndexPack> index;
  for (auto kind : {reduit::PackKind::kData, reduit::PackKind::kMetadata}) {
    reduit::PackWriter w(kind);
    if (kind == reduit::PackKind::kData)
      w.add(reduit::BlobType::kDelta, delta_id, blob.data(), blob.size());
    else
      w.add(reduit::BlobType::kTree, tree_id, tree_json.data(), tree_json.size());
    auto entries = w.entries();
    reduit::Bytes sealed = repo.seal(w.finish(), kind);
    reduit::IndexPack p{reduit::sha256(sealed.data(), sealed.size()), sealed.size(), kind, entries};
    repo.transport().put(reduit::pack_name(p.id), sealed);
    index.push_back(p);
  }
  repo.put_object("index", reduit::encode_index(index));
  reduit::Snapshot s;
  s.time_ns = reduit::now_ns();
  s.host = "evil";
  s.reduit_version = "x";
  const std::string mailbox = fs::path(mail.path()).filename();
  s.mailboxes.push_back({mailbox, mail.path(), "", {{"", tree_id, 0700, 0, 0, v2.size()}}});
  std::string sj = reduit::encode_snapshot(s);
  reduit::Hash sid = repo.put_object("snapshots", reduit::Bytes(sj.begin(), sj.end()));

  std::string to = site.path("dest/inner");
  RunResult r = site.restore(mailbox, to, reduit::to_hex(sid));
  EXPECT_EQ(r.status, 6) << r.err;
  EXPECT_NE(r.err.find("corrupt delta: it copies from outside its basis"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(to)) << "restore left its destination behind";
}
