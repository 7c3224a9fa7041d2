// End-to-end tests of the main job with the real binary, real gpg keys, real
// vaults (file:// and sftp:// on OpenSSH's sshd on loopback) and real mail: the
// "must show" list of the main-job issue, one test each.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <signal.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <set>
#include <thread>

#include <SQLiteCpp/SQLiteCpp.h>

#include "agent/scan.hpp"
#include "restore/snapshots.hpp"
#include "support/harness.hpp"
#include "support/site.hpp"
#include "support/sshd.hpp"
#include "vault/compress.hpp"
#include "vault/pack_filter.hpp"
#include "vault/repository.hpp"

namespace fs = std::filesystem;
using reduit::test::RunResult;
using reduit::test::Site;
using reduit::test::TempDir;

namespace {

std::string sftp_vault_extra(const reduit::test::TestSshd& sshd) {
  return "ssh_key = \"" + sshd.client_key_path() + "\"\nknown_hosts = \"" + sshd.known_hosts_path() + "\"\n";
}

std::string sftp_url(const reduit::test::TestSshd& sshd, const std::string& dir) {
  return "sftp://" + sshd.user() + "@127.0.0.1:" + std::to_string(sshd.port()) + dir;
}

// Names of the mailboxes in the latest snapshot.
std::vector<std::string> mailbox_names(const Site& site) {
  RunResult r = site.reduit({"ls", "latest"});
  EXPECT_EQ(r.status, 0) << r.err;
  std::vector<std::string> out;
  for (const auto& m : r.json()) out.push_back(m["mailbox"]);
  return out;
}

// Pages of the files in `dir` that are in the page cache, and all their pages, by
// mincore(2). `drop`: each file is written back and dropped from the page cache
// first (POSIX_FADV_DONTNEED); otherwise it is read whole first.
std::pair<std::size_t, std::size_t> page_cache_pages(const std::string& dir, bool drop) {
  std::size_t resident = 0, total = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    const int fd = ::open(e.path().c_str(), O_RDONLY);
    EXPECT_GE(fd, 0) << e.path();
    if (fd < 0) continue;
    const std::size_t size = fs::file_size(e.path());
    if (drop) {
      EXPECT_EQ(::fdatasync(fd), 0);
      EXPECT_EQ(::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
    } else {
      std::string buf(size, '\0');
      EXPECT_EQ(::pread(fd, buf.data(), size, 0), static_cast<ssize_t>(size)) << e.path();
    }
    void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    EXPECT_NE(map, MAP_FAILED);
    if (map != MAP_FAILED) {
      std::vector<unsigned char> pages((size + 4095) / 4096);
      EXPECT_EQ(::mincore(map, size, pages.data()), 0);
      for (unsigned char p : pages) resident += p & 1;
      total += pages.size();
      ::munmap(map, size);
    }
    ::close(fd);
  }
  return {resident, total};
}

// Starts `reduit backup` for `site` and kills it (SIGKILL) once `ready()` holds,
// polled every millisecond for up to 60 s. False when the backup had finished.
bool kill_backup_when(const Site& site, const std::function<bool()>& ready) {
  pid_t pid = reduit::test::spawn_command(
      {reduit::test::reduit_binary(), "--config", site.config(), "--json", "backup"}, site.path("out1"),
      site.path("err1"));
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!ready() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  kill(pid, SIGKILL);
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFSIGNALED(st);
}

std::size_t snapshot_count(const Site& site) {
  RunResult r = site.reduit({"snapshots"});
  EXPECT_EQ(r.status, 0) << r.err;
  return r.json().size();
}

// Expectation, independent of reduit's scanner: the facts of every file.
void expect_same_tree(const std::string& original, const std::string& restored) {
  auto a = reduit::test::tree_facts(original);
  auto b = reduit::test::tree_facts(restored);
  ASSERT_EQ(a.size(), b.size()) << original << " vs " << restored;
  for (const auto& [path, fa] : a) {
    auto it = b.find(path);
    ASSERT_NE(it, b.end()) << "missing after restore: " << path;
    EXPECT_EQ(fa.sha256, it->second.sha256) << path;
    EXPECT_EQ(fa.size, it->second.size) << path;
    EXPECT_EQ(fa.mtime_ns / 1000000000, it->second.mtime_ns / 1000000000) << path;
    EXPECT_EQ(fa.mtime_ns, it->second.mtime_ns) << path;
  }
}

std::vector<std::string> data_pack_files(const std::string& vault) {
  std::vector<std::string> out;
  if (!fs::exists(vault + "/packs")) return out;
  for (const auto& e : fs::recursive_directory_iterator(vault + "/packs")) {
    if (e.is_regular_file()) out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Restores `mailbox` from the latest snapshot into site/<out>; expects it identical to `maildir`.
void expect_restores_as(const Site& site, const std::string& mailbox, const std::string& out,
                        const std::string& maildir) {
  RunResult r = site.restore(mailbox, site.path(out));
  ASSERT_EQ(r.status, 0) << r.err;
  expect_same_tree(maildir, site.path(out));
}

// `reduit --json restore --all --to TO EXTRA...` on a fresh host: a config in `dir`
// naming the site's vault and the archive key's GnuPG home, nothing else.
RunResult restore_all_on_fresh_host(const Site& site, const std::string& dir, const std::string& to,
                                    const std::vector<std::string>& extra = {}) {
  std::string cfg = reduit::test::write_config(dir, site.url(), site.keys().archive_home->path(), {}, "");
  std::vector<std::string> args{
      reduit::test::reduit_binary(), "--config", cfg, "--json", "restore", "--all", "--to", to};
  args.insert(args.end(), extra.begin(), extra.end());
  return reduit::test::run_command(args);
}

// A Maildir++ mailbox built by hand: root/<domain>/<user>/{cur,new,tmp}.
std::string make_mailbox(const std::string& root, const std::string& domain, const std::string& user) {
  std::string m = root + "/" + domain + "/" + user;
  for (const char* d : {"cur", "new", "tmp"}) fs::create_directories(m + "/" + d);
  return m;
}

}  // namespace

// 1. Every corpus Maildir to an sftp:// vault on a real sshd; every mailbox restores
//    byte-identical with the same paths, names and mtimes.
TEST(MainJob, CorpusToSftpVaultRestoresEveryMailboxByteIdentical) {
  std::string corpus = reduit::test::corpus_dir();
  if (corpus.empty()) GTEST_SKIP() << "the shared corpus (../shared/corpus) is not beside this checkout";
  reduit::test::TestSshd sshd;
  TempDir vault;
  // Dovecot's index files too (dovecot_index = true), so the whole tree comes back.
  Site site({corpus + "/maildir"}, "*", sftp_url(sshd, vault.path() + "/v"), sftp_vault_extra(sshd), "",
            "dovecot_index = true");
  site.init();
  nlohmann::json b = site.backup();
  // 6 sources; 1,901 message files in the corpus of which 1,652 are in Maildirs,
  // counted independently of reduit: files directly in cur/ or new/ not starting with '.'.
  std::size_t expected_messages = 0;
  for (const auto& e : fs::recursive_directory_iterator(corpus + "/maildir")) {
    std::string parent = e.path().parent_path().filename();
    if (e.is_regular_file() && (parent == "cur" || parent == "new") &&
        e.path().filename().string()[0] != '.') {
      ++expected_messages;
    }
  }
  EXPECT_EQ(b["mailboxes"], 6);
  EXPECT_EQ(b["messages"], expected_messages);
  EXPECT_EQ(b["files_read"], b["files"]);

  std::vector<std::string> names = mailbox_names(site);
  ASSERT_EQ(names, (std::vector<std::string>{"imap2json-dovecot", "mailpile", "mjpeg-users", "mu", "notmuch",
                                             "usrp-users"}));
  for (const std::string& name : names) {
    std::string to = site.path("restore-" + name);
    RunResult r = site.restore(name, to);
    ASSERT_EQ(r.status, 0) << r.err;
    expect_same_tree(corpus + "/maildir/" + name, to);
  }
}

// 2. A second backup with no change uploads no pack and reuses every tree.
TEST(MainJob, SecondBackupWithoutChangesUploadsNoPackAndReusesEveryTree) {
  TempDir mail;
  reduit::test::generate_maildir(mail.path(), 400, 4, 7);
  Site site({mail.path()}, "%d/%n");
  site.init();
  nlohmann::json first = site.backup();
  nlohmann::json second = site.backup();
  EXPECT_EQ(second["messages"], first["messages"]);
  EXPECT_EQ(second["files_read"], 0);
  EXPECT_EQ(second["blobs_new"], 0);
  EXPECT_EQ(second["data_packs"], 0);
  EXPECT_EQ(second["metadata_packs"], 0);
  EXPECT_EQ(second["data_bytes_uploaded"], 0);
  EXPECT_EQ(second["trees_new"], 0);
  EXPECT_EQ(second["trees_reused"], first["folders"]);
  // Only the snapshot object itself: no index, no pack.
  EXPECT_LT(second["metadata_bytes_uploaded"].get<int>(), 8192);
  EXPECT_EQ(data_pack_files(site.vault_dir()).size(),
            first["data_packs"].get<std::size_t>() + first["metadata_packs"].get<std::size_t>());
}

// 3. Flag renames and new/→cur/ moves upload metadata only.
TEST(MainJob, FlagRenamesAndNewToCurMovesUploadNoContent) {
  TempDir mail;
  std::string m = make_mailbox(mail.path(), "example.ch", "alice");
  for (int i = 0; i < 300; ++i) {
    std::string name = std::to_string(1700000000 + i) + ".M" + std::to_string(i) + "P42.host,S=100";
    std::string body = "From: a@example.ch\nSubject: message " + std::to_string(i) + "\n\nbody " +
                       std::string(static_cast<std::size_t>(200 + i), 'x') + "\n";
    reduit::test::write_file(m + (i < 100 ? "/new/" + name : "/cur/" + name + ":2,"), body);
  }
  Site site({mail.path()}, "%d/%n");
  site.init();
  nlohmann::json first = site.backup();
  ASSERT_EQ(first["messages"], 300);
  // 100 moves new/ → cur/ (marking them seen), 100 flag changes in cur/.
  for (const auto& e : std::vector<fs::path>(fs::directory_iterator(m + "/new"), fs::directory_iterator())) {
    fs::rename(e, m + "/cur/" + e.filename().string() + ":2,S");
  }
  int renamed = 0;
  for (const auto& e : std::vector<fs::path>(fs::directory_iterator(m + "/cur"), fs::directory_iterator())) {
    std::string n = e.filename().string();
    if (n.size() > 3 && n.substr(n.size() - 3) == ":2," && renamed < 100) {
      fs::rename(e, m + "/cur/" + n + "FRS");
      ++renamed;
    }
  }
  ASSERT_EQ(renamed, 100);
  nlohmann::json second = site.backup();
  EXPECT_EQ(second["messages"], 300);
  EXPECT_EQ(second["files_read"], 0);
  EXPECT_EQ(second["content_blobs_new"], 0);
  EXPECT_EQ(second["data_packs"], 0);
  EXPECT_EQ(second["data_bytes_uploaded"], 0);
  EXPECT_EQ(second["trees_new"], 1);  // the one folder whose names changed
  EXPECT_EQ(second["metadata_packs"], 1);
  // Metadata only: one tree (300 entries, ~250 bytes each before zstd) + index + snapshot.
  EXPECT_LT(second["metadata_bytes_uploaded"].get<int>(), 48 * 1024);
  RunResult r = site.restore("alice@example.ch", site.path("out"));
  ASSERT_EQ(r.status, 0) << r.err;
  expect_same_tree(m, site.path("out"));
}

// 3a. Mail not in the page cache (a first backup, or mail untouched for days) is
//     read ahead: the reader opens the files after the one it reads and asks the
//     kernel to read them in meanwhile (POSIX_FADV_WILLNEED), once a read has
//     missed the cache; a warm cache gets none of it. What is stored is the same.
TEST(MainJob, MailNotInThePageCacheIsReadAheadAndComesBackByteIdentical) {
  TempDir mail;
  struct statfs fs_info {};
  ASSERT_EQ(statfs(mail.path().c_str(), &fs_info), 0);
  if (fs_info.f_type == TMPFS_MAGIC) {
    GTEST_SKIP() << mail.path() << " is on tmpfs, whose pages cannot be dropped from the page cache";
  }
  // One folder of 200 messages (no other file is read): first in name order, so
  // read first, one of 40 MiB, more than the kernel reads in at one read
  // (read_ahead_kb, 128 KiB to 8 MiB), so its first read cannot be served whole
  // without waiting for the disk; then 199 of 6,000 to 26,000 bytes.
  const std::string m = mail.path() + "/example.ch/alice";
  for (const char* d : {"cur", "new", "tmp"}) fs::create_directories(m + "/" + d);
  const int kMessages = 200;
  {
    std::string text = "From: bob@example.org\r\nTo: alice@example.ch\r\nSubject: large\r\n\r\n";
    for (int line = 0; text.size() < (40u << 20); ++line) text += "line " + std::to_string(line) + " of the large one\r\n";
    reduit::test::write_file(m + "/cur/1600000000.M0P1.host:2,S", text);
  }
  for (int i = 1; i < kMessages; ++i) {
    std::string text = "From: bob@example.org\r\nTo: alice@example.ch\r\nSubject: note " + std::to_string(i) +
                       "\r\n\r\n";
    for (int line = 0; line < 60 + i; ++line) text += "line " + std::to_string(line) + " of message " +
                                                       std::to_string(i) + ", to be read from the disk\r\n";
    reduit::test::write_file(m + "/cur/1700000000.M" + std::to_string(i) + "P1.host:2,S", text);
  }
  // Written back and dropped from the page cache, which mincore() confirms.
  const auto [resident, pages] = page_cache_pages(m + "/cur", /*drop=*/true);
  ASSERT_GT(pages, 0u);
  ASSERT_EQ(resident, 0u);

  Site site({mail.path()}, "%d/%n");
  site.init();
  nlohmann::json cold = site.backup();
  EXPECT_EQ(cold["messages"], kMessages);
  EXPECT_EQ(cold["files_read"], kMessages);
  // The first two files are read before any is opened ahead: the first misses the
  // cache, and the window is planned when the second is taken. Every later one
  // was opened ahead.
  EXPECT_EQ(cold["files_read_ahead"], kMessages - 2);
  // At least the first missed the cache. How many of the others were not yet read
  // in when they were read depends on the disk: the kernel starts reading a
  // missing small file at its first, non-blocking read, and a fast disk can
  // finish before that read gives up.
  EXPECT_GE(cold["files_uncached"].get<int>(), 1);
  EXPECT_LE(cold["files_uncached"].get<int>(), kMessages);
  RunResult r = site.restore("alice@example.ch", site.path("out"));
  ASSERT_EQ(r.status, 0) << r.err;
  expect_same_tree(m, site.path("out"));

  // The small messages, read into the page cache just now, to a new vault: nothing
  // misses, nothing is opened ahead, and the same blobs are stored but the large
  // message's two. (The large one goes: the kernel may already have reclaimed
  // some of its pages, which were read once.)
  const std::uintmax_t large = fs::file_size(m + "/cur/1600000000.M0P1.host:2,S");
  fs::remove(m + "/cur/1600000000.M0P1.host:2,S");
  const auto [warm_resident, warm_pages] = page_cache_pages(m + "/cur", /*drop=*/false);
  ASSERT_EQ(warm_resident, warm_pages);
  Site warm_site({mail.path()}, "%d/%n");
  warm_site.init();
  nlohmann::json warm = warm_site.backup();
  EXPECT_EQ(warm["files_read"], kMessages - 1);
  EXPECT_EQ(warm["files_uncached"], 0);
  EXPECT_EQ(warm["files_read_ahead"], 0);
  EXPECT_EQ(warm["content_blobs_new"], cold["content_blobs_new"].get<int>() - 2);
  EXPECT_EQ(warm["content_bytes_new"], cold["content_bytes_new"].get<std::uintmax_t>() - large);
}

// 3c. Index objects are written while the run goes on, one per 64 uploaded packs,
//     from the packs' entries in memory; the commit writes only the last one. They
//     name every pack: a catalog rebuilt from them alone finds every pack, and the
//     next backup uploads nothing.
TEST(MainJob, IndexObjectsOfSixtyFourPacksAreWrittenDuringTheRun) {
  TempDir mail;
  reduit::test::generate_maildir(mail.path(), 400, 2, 13);
  Site site({mail.path()}, "%d/%n", "", "", "[pack]\nsize = \"16KiB\"\n");
  site.init();
  nlohmann::json b = site.backup();
  const int packs = b["data_packs"].get<int>() + b["metadata_packs"].get<int>();
  ASSERT_GT(packs, 2 * 64);  // two index objects during the run at least
  std::size_t index_objects = 0;
  for (const auto& e : fs::directory_iterator(site.vault_dir() + "/index")) index_objects += e.is_regular_file();
  EXPECT_EQ(index_objects, static_cast<std::size_t>((packs + 63) / 64));
  RunResult check = site.reduit({"check"});
  EXPECT_EQ(check.status, 0) << check.err;

  fs::remove_all(site.path("state"));
  RunResult rb = site.reduit({"catalog", "rebuild"});
  ASSERT_EQ(rb.status, 0) << rb.err;
  EXPECT_EQ(rb.json()["packs"], packs);
  nlohmann::json second = site.backup();
  EXPECT_EQ(second["content_blobs_new"], 0);
  EXPECT_EQ(second["data_packs"], 0);
  std::vector<std::string> names = mailbox_names(site);
  ASSERT_EQ(names.size(), 2u);
  for (const std::string& name : names) {
    RunResult r = site.restore(name, site.path("out-" + name));
    ASSERT_EQ(r.status, 0) << r.err;
    const std::string user = name.substr(0, name.find('@')), domain = name.substr(name.find('@') + 1);
    expect_same_tree(mail.path() + "/" + domain + "/" + user, site.path("out-" + name));
  }

  // Killed once an index object is in the vault, before its snapshot: the index
  // names 64 packs, each in the vault, and the next run reuses their blobs.
  Site killed({mail.path()}, "%d/%n", "", "", "[pack]\nsize = \"16KiB\"\n");
  killed.init();
  const std::string index_dir = killed.vault_dir() + "/index";
  ASSERT_TRUE(kill_backup_when(killed, [&] { return fs::exists(index_dir) && !fs::is_empty(index_dir); }))
      << "the backup finished before it could be killed";
  EXPECT_EQ(snapshot_count(killed), 0u);
  reduit::Repository repo(reduit::open_transport(killed.url(), {}), killed.keys().archive_home->path());
  repo.load_config();
  std::set<reduit::Hash> in_vault;
  for (const auto& [id, size] : repo.list_packs(/*with_sizes=*/true)) in_vault.insert(id);
  // Written during the run: when the first index object appeared, far from every
  // pack of the complete run above was uploaded.
  EXPECT_LT(in_vault.size(), static_cast<std::size_t>(packs) * 3 / 4);
  std::vector<reduit::IndexPack> indexed = repo.load_indexes();
  EXPECT_EQ(indexed.size() % 64, 0u);
  ASSERT_GE(indexed.size(), 64u);
  for (const auto& p : indexed) EXPECT_EQ(in_vault.count(p.id), 1u) << reduit::to_hex(p.id);
  RunResult after = killed.reduit({"backup"});
  ASSERT_EQ(after.status, 1) << after.err;  // completed, warning about the dead run's lease
  EXPECT_EQ(after.json()["messages"], b["messages"]);
  EXPECT_LT(after.json()["content_blobs_new"].get<int>(), b["content_blobs_new"].get<int>());
}

// 3b. A few flag changes, a delivery and a deletion send a tree patch (FORMAT.md
//     §7.1), not the folder's whole tree; a patch of a patch restores; forget and
//     prune keep every tree a kept snapshot's patch is built on; a change of most
//     names writes a full tree again.
TEST(MainJob, SmallChangesSendTreePatchesThatRestoreAfterTheirBasesSnapshotsAreForgotten) {
  TempDir mail;
  std::string m = make_mailbox(mail.path(), "example.ch", "alice");
  std::vector<std::string> names;
  for (int i = 0; i < 300; ++i) {
    names.push_back(std::to_string(1700000000 + i) + ".M" + std::to_string(i) + "P42.host,S=100:2,");
    reduit::test::write_file(m + "/cur/" + names.back(),
                             "From: a@example.ch\nSubject: message " + std::to_string(i) + "\n\nbody " +
                                 std::string(static_cast<std::size_t>(200 + i), 'x') + "\n");
  }
  TempDir policy_dir;
  const std::string policy = policy_dir.path() + "/policy.toml";
  reduit::test::write_file(policy, "name = \"last\"\n[snapshots]\nkeep-last = 1\n");
  Site site({mail.path()}, "%d/%n", "", "", "policy = \"" + policy + "\"");
  site.init();
  nlohmann::json first = site.backup();
  EXPECT_EQ(first["trees_new"], 1);
  EXPECT_EQ(first["tree_patches"], 0);
  // 20 flag changes, 1 delivery, 1 deletion.
  for (int i = 0; i < 20; ++i) fs::rename(m + "/cur/" + names[i * 7], m + "/cur/" + names[i * 7] + "S");
  reduit::test::write_file(m + "/new/1800000000.M1P7.host", "Subject: new\n\nnew\n");
  fs::remove(m + "/cur/" + names[299]);
  nlohmann::json second = site.backup();
  EXPECT_EQ(second["messages"], 300);
  EXPECT_EQ(second["trees_new"], 1);
  EXPECT_EQ(second["tree_patches"], 1);
  // The patch: 21 entries and 21 removed paths, not 300 entries.
  EXPECT_LT(second["metadata_bytes_uploaded"].get<int>(), first["metadata_bytes_uploaded"].get<int>() / 2);
  {
    // The catalog keeps the patch (not the full tree) for the next forget's walk:
    // one row, the folder's current tree: 21 messages and the two directories whose
    // mtimes changed, 21 removed paths.
    SQLite::Database db(site.path("state") + "/catalog.sqlite", SQLite::OPEN_READONLY);
    EXPECT_EQ(db.execAndGet("SELECT count(*) FROM tree_cache").getInt(), 1);
    EXPECT_EQ(db.execAndGet("SELECT count(*) FROM tree_cache JOIN folders ON folders.tree = tree_cache.id")
                  .getInt(),
              1);
    nlohmann::json patch = nlohmann::json::parse(db.execAndGet("SELECT json FROM tree_cache").getString());
    std::vector<std::string> dirs;
    std::size_t messages = 0;
    for (const auto& e : patch["entries"]) {
      if (e["kind"] == "dir") dirs.push_back(e["path"]);
      if (e["kind"] == "message") ++messages;
    }
    EXPECT_EQ(messages, 21u);
    EXPECT_EQ(dirs, (std::vector<std::string>{"cur", "new"}));
    EXPECT_EQ(patch["entries"].size(), 23u);
    EXPECT_EQ(patch["removed"].size(), 21u) << patch.dump().substr(0, 300);
  }
  fs::rename(m + "/new/1800000000.M1P7.host", m + "/cur/1800000000.M1P7.host:2,S");
  nlohmann::json third = site.backup();
  EXPECT_EQ(third["tree_patches"], 1);
  expect_restores_as(site, "alice@example.ch", "out3", m);
  // Only the third snapshot is kept; its patch needs the first and second trees.
  nlohmann::json f = nlohmann::json::parse(site.reduit({"forget"}).out);
  EXPECT_EQ(f["removed"], 2);
  RunResult p = site.reduit({"prune", "--archive-gnupghome", site.keys().archive_home->path()});
  ASSERT_EQ(p.status, 0) << p.err;
  RunResult check = site.reduit({"check", "--read-data", "--gnupghome", site.keys().archive_home->path()});
  EXPECT_EQ(check.status, 0) << check.err << check.out;
  expect_restores_as(site, "alice@example.ch", "out3b", m);
  // Most names change: the patch would exceed half the tree, so a full tree.
  for (int i = 0; i < 250; ++i) {
    if (fs::exists(m + "/cur/" + names[i])) fs::rename(m + "/cur/" + names[i], m + "/cur/" + names[i] + "T");
  }
  nlohmann::json fourth = site.backup();
  EXPECT_EQ(fourth["trees_new"], 1);
  EXPECT_EQ(fourth["tree_patches"], 0);
  expect_restores_as(site, "alice@example.ch", "out4", m);
}

// A damaged row of the catalog's folder bases costs a full tree, nothing more.
TEST(MainJob, DamagedFolderBaseInTheCatalogWritesAFullTree) {
  TempDir mail;
  std::string m = make_mailbox(mail.path(), "example.ch", "bob");
  for (int i = 0; i < 50; ++i) {
    reduit::test::write_file(
        m + "/cur/" + std::to_string(1700000000 + i) + ".M" + std::to_string(i) + "P1.h:2,",
        "Subject: " + std::to_string(i) + "\n\nbody\n");
  }
  Site site({mail.path()}, "%d/%n");
  site.init();
  site.backup();
  {
    SQLite::Database db(site.path("state") + "/catalog.sqlite", SQLite::OPEN_READWRITE);
    EXPECT_EQ(db.exec("UPDATE folder_bases SET entries=x'28b52ffd0000'"), 1);  // a truncated zstd frame
  }
  fs::rename(m + "/cur/1700000000.M0P1.h:2,", m + "/cur/1700000000.M0P1.h:2,S");
  nlohmann::json second = site.backup();
  EXPECT_EQ(second["trees_new"], 1);
  EXPECT_EQ(second["tree_patches"], 0);
  fs::rename(m + "/cur/1700000001.M1P1.h:2,", m + "/cur/1700000001.M1P1.h:2,S");
  nlohmann::json third = site.backup();  // the row is good again
  EXPECT_EQ(third["tree_patches"], 1);
  expect_restores_as(site, "bob@example.ch", "out", m);
}

// 4. One message delivered into 3 mailboxes stores its body once.
TEST(MainJob, SameMessageInThreeMailboxesStoresItsBodyOnce) {
  TempDir mail;
  std::string body = "This quarterly report is attached.\n" + std::string(5000, 'r') + "\n";
  for (const char* user : {"alice", "bob", "carol"}) {
    std::string m = make_mailbox(mail.path(), "example.ch", user);
    std::string msg = std::string("Delivered-To: ") + user +
                      "@example.ch\nFrom: cfo@example.ch\n"
                      "Subject: Q3\nMessage-ID: <q3@example.ch>\n\n" +
                      body;
    reduit::test::write_file(m + "/cur/1700000000.M1P1.mx:2,S", msg);
  }
  Site site({mail.path()}, "%d/%n");
  site.init();
  nlohmann::json b = site.backup();
  EXPECT_EQ(b["messages"], 3);
  EXPECT_EQ(b["content_blobs_new"], 4);  // 3 header blocks + 1 body
  EXPECT_EQ(b["trees_new"], 3);
  EXPECT_EQ(b["blobs_new"], 7);
  std::uint64_t headers = 0;
  for (const char* user : {"alice", "bob", "carol"}) {
    headers +=
        std::string("Delivered-To: ").size() + std::strlen(user) +
        std::string("@example.ch\nFrom: cfo@example.ch\nSubject: Q3\nMessage-ID: <q3@example.ch>\n\n").size();
  }
  // bytes_new counts the plaintext of new blobs: trees + 3 headers + the body once.
  EXPECT_GT(b["bytes_new"].get<std::uint64_t>(), headers + body.size());
  EXPECT_LT(b["bytes_new"].get<std::uint64_t>(), headers + 2 * body.size());
}

// 5a. SIGKILL during upload: check passes, the next backup completes and sends at
//     most one pack again.
TEST(MainJob, KilledBackupLeavesACheckableVaultAndResendsAtMostOnePack) {
  TempDir mail;
  reduit::test::generate_maildir(mail.path(), 1500, 5, 11);
  Site site({mail.path()}, "%d/%n", "", "", "[pack]\nsize = \"512KiB\"\n");
  site.init();
  std::string packs_dir = site.vault_dir() + "/packs";
  // Kill once a few packs are in the vault, i.e. in the middle of uploading.
  ASSERT_TRUE(kill_backup_when(site, [&] { return data_pack_files(site.vault_dir()).size() >= 4; }))
      << "the backup finished before it could be killed";
  EXPECT_EQ(snapshot_count(site), 0u);
  std::size_t packs_after_kill = data_pack_files(site.vault_dir()).size();
  ASSERT_GE(packs_after_kill, 4u);

  RunResult check = site.reduit({"check"});
  EXPECT_EQ(check.status, 0) << check.out << check.err;

  RunResult second = site.reduit({"backup"});
  ASSERT_EQ(second.status, 1) << second.err;  // completed, warning about the dead run's lease
  nlohmann::json b = second.json();
  ASSERT_EQ(b["messages"], 1500);
  EXPECT_EQ(b["warnings"], nlohmann::json::array({"broke a stale vault lease left by an interrupted run"}));
  // Everything journaled before the kill is reused. The vault's indexes name each
  // blob exactly once (nothing journaled was sent again), and at most one pack — the
  // one in flight when the process died — is in the vault but in no index.
  reduit::Repository repo(reduit::open_transport(site.url(), {}), site.keys().archive_home->path());
  repo.load_config();
  std::map<reduit::Hash, int> seen;
  std::set<reduit::Hash> indexed_packs;
  std::uint64_t max_stored = 0;
  for (const auto& p : repo.load_indexes()) {
    indexed_packs.insert(p.id);
    max_stored = std::max(max_stored, p.size);
    for (const auto& e : p.blobs) ++seen[e.id];
  }
  for (const auto& [id, n] : seen) EXPECT_EQ(n, 1) << "blob stored twice: " << reduit::to_hex(id);
  std::uint64_t resent_bytes = 0;
  int resent_packs = 0;
  for (const auto& [id, size] : repo.list_packs(/*with_sizes=*/true)) {
    if (!indexed_packs.count(id)) {
      ++resent_packs;
      resent_bytes += size;
    }
  }
  EXPECT_LE(resent_packs, 1);
  EXPECT_LE(resent_bytes, max_stored);
  RunResult check2 = site.reduit({"check", "--read-data", "--gnupghome", site.keys().archive_home->path()});
  EXPECT_EQ(check2.status, 0) << check2.out << check2.err;
  for (const std::string& name : mailbox_names(site)) {
    std::string to = site.path("r-" + name);
    ASSERT_EQ(site.restore(name, to).status, 0);
    expect_same_tree(
        mail.path() + "/" + name.substr(name.find('@') + 1) + "/" + name.substr(0, name.find('@')), to);
  }
}

// 5b. A pack deleted behind the agent's back is noticed and its content re-sent.
TEST(MainJob, PackDeletedFromVaultIsNoticedAndReuploaded) {
  TempDir mail;
  reduit::test::generate_maildir(mail.path(), 300, 3, 5);
  Site site({mail.path()}, "%d/%n", "", "", "[pack]\nsize = \"256KiB\"\n");
  site.init();
  nlohmann::json first = site.backup();
  // A data pack (the catalog knows each pack's kind; the vault does not show it):
  // deleting the metadata pack instead re-uploads trees only.
  std::set<std::string> data_ids;
  {
    SQLite::Database db(site.path("state") + "/catalog.sqlite", SQLite::OPEN_READONLY);
    SQLite::Statement q(db, "SELECT lower(hex(id)) FROM packs WHERE kind=1");
    while (q.executeStep()) data_ids.insert(q.getColumn(0).getString());
  }
  std::vector<std::string> packs;
  for (const std::string& p : data_pack_files(site.vault_dir())) {
    if (data_ids.count(fs::path(p).filename().string())) packs.push_back(p);
  }
  ASSERT_EQ(packs.size(), first["data_packs"].get<std::size_t>());
  ASSERT_GE(packs.size(), 3u);
  fs::remove(packs[packs.size() / 2]);
  // Restoring now: data missing from the vault, exit 6 (not 8, which names a
  // snapshot, mailbox or folder that does not exist); nothing is left in --to.
  RunResult gone = site.reduit({"restore", "--all", "--to", site.path("r-gone"), "--gnupghome",
                                site.keys().archive_home->path()});
  EXPECT_EQ(gone.status, 6) << gone.err;
  EXPECT_NE(gone.err.find("pack " + fs::path(packs[packs.size() / 2]).filename().string() +
                          " is missing from vault "),
            std::string::npos)
      << gone.err;
  EXPECT_NE(gone.err.find(" (an index names it): 'reduit check' lists the mailboxes it affects"),
            std::string::npos)
      << gone.err;
  EXPECT_TRUE(!fs::exists(site.path("r-gone")) || fs::is_empty(site.path("r-gone")));
  RunResult r = site.reduit({"backup"});
  ASSERT_EQ(r.status, 1) << r.err;  // completed with a warning naming the missing pack
  nlohmann::json second = r.json();
  EXPECT_EQ(second["packs_forgotten"], 1);
  EXPECT_EQ(second["files_read"], second["files"]);
  EXPECT_GT(second["content_blobs_new"].get<int>(), 0);
  ASSERT_EQ(second["warnings"].size(), 1u);
  EXPECT_NE(second["warnings"][0].get<std::string>().find("missing from the vault"), std::string::npos);
  for (const std::string& name : mailbox_names(site)) {
    std::string to = site.path("r-" + name);
    RunResult rr = site.restore(name, to);
    ASSERT_EQ(rr.status, 0) << rr.err;
    expect_same_tree(
        mail.path() + "/" + name.substr(name.find('@') + 1) + "/" + name.substr(0, name.find('@')), to);
  }
}

// 6. Deliveries and renames during the backup: every message that existed
//    throughout is in the snapshot exactly once.
TEST(MainJob, ConcurrentDeliveriesAndRenamesKeepEveryStableMessageExactlyOnce) {
  TempDir mail;
  std::string m = make_mailbox(mail.path(), "example.ch", "busy");
  std::vector<std::string> initial;
  for (int i = 0; i < 4000; ++i) {
    std::string uname = "1700000000.M" + std::to_string(i) + "P7.mx";
    initial.push_back(uname);
    reduit::test::write_file(m + "/cur/" + uname + ":2,",
                             "Subject: " + std::to_string(i) + "\n\n" +
                                 std::string(static_cast<std::size_t>(2000 + i % 977), 'b'));
  }
  Site site({mail.path()}, "%d/%n");
  site.init();
  std::atomic<bool> stop{false};
  std::thread churn([&] {
    for (int i = 0; i < 500 && !stop; ++i) {
      std::string uname = "1800000000.M" + std::to_string(i) + "P8.mx";
      reduit::test::write_file(m + "/tmp/" + uname, "Subject: new\n\nnew " + std::to_string(i));
      fs::rename(m + "/tmp/" + uname, m + "/new/" + uname);
      // Rename one stable message's flags (each of 500 once).
      std::string u = initial[static_cast<std::size_t>(i) * 7];
      fs::rename(m + "/cur/" + u + ":2,", m + "/cur/" + u + ":2,S");
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  nlohmann::json b = site.backup();
  stop = true;
  churn.join();
  RunResult ls = site.reduit({"ls", "latest", "--mailbox", "busy@example.ch"});
  ASSERT_EQ(ls.status, 0) << ls.err;
  std::map<std::string, int> count;
  for (const auto& e : ls.json()) {
    if (e["kind"] != "message") continue;
    std::string path = e["path"];
    ++count[reduit::maildir_unique_name(path.substr(path.find('/') + 1))];
  }
  for (const std::string& u : initial) EXPECT_EQ(count[u], 1) << u;
  for (const auto& [u, n] : count) EXPECT_EQ(n, 1) << u;
  EXPECT_GE(b["messages"].get<int>(), 4000);
}

// 7. Catalog lost: rebuild with the agent key, then back up again without
//    re-uploading content; restore on a host that never ran a backup.
TEST(MainJob, CatalogRebuildAndRestoreOnAFreshHost) {
  TempDir mail;
  reduit::test::generate_maildir(mail.path(), 300, 3, 9);
  Site site({mail.path()}, "%d/%n");
  site.init();
  nlohmann::json first = site.backup();
  fs::remove_all(site.path("state"));
  RunResult rb = site.reduit({"catalog", "rebuild"});
  ASSERT_EQ(rb.status, 0) << rb.err;
  EXPECT_EQ(rb.json()["snapshots"], 1);
  EXPECT_EQ(rb.json()["packs"], first["data_packs"].get<int>() + first["metadata_packs"].get<int>());
  nlohmann::json second = site.backup();
  EXPECT_EQ(second["files_read"], second["files"]);  // the stat cache is gone…
  EXPECT_EQ(second["content_blobs_new"], 0);         // …but nothing is uploaded again
  EXPECT_EQ(second["data_bytes_uploaded"], 0);

  // A fresh host: its own empty state dir, only the archive key, no agent key.
  TempDir fresh;
  std::string cfg =
      reduit::test::write_config(fresh.path(), site.url(), site.keys().archive_home->path(), {}, "");
  RunResult r =
      reduit::test::run_command({reduit::test::reduit_binary(), "--config", cfg, "--json", "restore",
                                 "--mailbox", "alice@example.ch", "--to", fresh.path() + "/out"});
  ASSERT_EQ(r.status, 0) << r.err;
  expect_same_tree(mail.path() + "/example.ch/alice", fresh.path() + "/out");
}

// On the backup host a restore of a mailbox reads blob locations from the catalog
// when it names exactly the vault's index objects. When it names another index
// object, when a lookup misses, or when its locations fail the restore's checks,
// the locations come from the vault's index objects, and the mail restored is the
// same. `restore --all` always loads the index objects.
TEST(MainJob, RestoreOnTheBackupHostTakesBlobLocationsFromTheCatalogOrElseTheVault) {
  TempDir mail;
  reduit::test::generate_maildir(mail.path(), 300, 3, 9);
  Site site({mail.path()}, "%d/%n");
  site.init();
  site.backup();
  int n = 0;
  auto restore = [&](const std::string& why, int status = 0) {
    const std::string to = site.path("out" + std::to_string(n++));
    RunResult r = site.restore("alice@example.ch", to);
    EXPECT_EQ(r.status, status) << why << ": " << r.err;
    if (r.status != status) return nlohmann::json::object();
    expect_same_tree(mail.path() + "/example.ch/alice", to);
    return r.json();
  };
  nlohmann::json r = restore("as the backup left it");
  EXPECT_EQ(r["locations"], "catalog");
  EXPECT_EQ(r["warnings"], nlohmann::json::array());
  // --all needs nearly every location: it loads the index objects.
  RunResult all = site.reduit(
      {"restore", "--all", "--to", site.path("all"), "--gnupghome", site.keys().archive_home->path()});
  ASSERT_EQ(all.status, 0) << all.err;
  EXPECT_EQ(all.json()["locations"], "vault");
  EXPECT_EQ(all.json()["messages"], 300);

  std::optional<SQLite::Database> db;
  db.emplace(site.path("state/catalog.sqlite"), SQLite::OPEN_READWRITE);
  ASSERT_EQ(db->execAndGet("SELECT count(*) FROM indexes").getInt(), 1);
  // An index object the vault does not hold: the catalog is not the vault's copy.
  db->exec("INSERT INTO indexes VALUES(zeroblob(32))");
  r = restore("an extra index object");
  EXPECT_EQ(r["locations"], "vault");
  EXPECT_EQ(r["warnings"], nlohmann::json::array());
  db->exec("DELETE FROM indexes WHERE id = zeroblob(32)");

  // Header lengths one byte long: the restore fails its checks, then runs again
  // from the vault's index objects into the same (emptied) directory, and exits 1
  // (done, with a warning: docs/CLI.md).
  db->exec("UPDATE blobs SET length = length + 1 WHERE type = 1");
  r = restore("wrong header lengths", 1);
  EXPECT_EQ(r["locations"], "vault");
  ASSERT_EQ(r["warnings"].size(), 1u);
  EXPECT_EQ(
      r["warnings"][0].get<std::string>().rfind("restoring with the catalog's blob locations failed (", 0),
      0u)
      << r["warnings"][0];
  db->exec("UPDATE blobs SET length = length - 1 WHERE type = 1");

  // Blobs of one type (2 bodies, 4 trees) placed by the catalog in a pack the vault
  // does not hold: the vault's index objects are asked, without a warning or a second
  // restore (trees: the tree loader asks them itself); then the catalog is mended.
  auto in_a_pack_gone_from_the_vault = [&](int type, const std::string& label) {
    const std::string t = std::to_string(type);
    db->exec("CREATE TEMP TABLE saved AS SELECT id, pack FROM blobs WHERE type = " + t);
    const std::string kind = type == 4 ? "2" : "1";  // trees live in metadata packs
    db->exec("INSERT INTO packs VALUES(zeroblob(32), 1000, " + kind + ", 1)");
    db->exec("UPDATE blobs SET pack = zeroblob(32) WHERE type = " + t);
    nlohmann::json gone = restore(label);
    EXPECT_EQ(gone["locations"], "vault") << label;
    EXPECT_EQ(gone["warnings"], nlohmann::json::array()) << label;
    db->exec("UPDATE blobs SET pack = (SELECT pack FROM saved WHERE saved.id = blobs.id) WHERE type = " + t);
    db->exec("DELETE FROM packs WHERE id = zeroblob(32)");
    db->exec("DROP TABLE saved");
    EXPECT_EQ(restore("mended: " + label)["locations"], "catalog");
  };
  in_a_pack_gone_from_the_vault(2, "bodies in a pack gone from the vault");
  in_a_pack_gone_from_the_vault(4, "trees in a pack gone from the vault");

  // A catalog whose lookups fail (kIo from SQLite: here a column it does not have)
  // is not needed.
  db->exec("ALTER TABLE blobs RENAME COLUMN length TO len");
  r = restore("a catalog lookup that fails");
  EXPECT_EQ(r["locations"], "vault");
  EXPECT_EQ(r["warnings"], nlohmann::json::array());
  db->exec("ALTER TABLE blobs RENAME COLUMN len TO length");
  EXPECT_EQ(restore("mended")["locations"], "catalog");

  // Body blobs the catalog does not know: the first lookup that misses loads the
  // vault's index objects, once.
  db->exec("DELETE FROM blobs WHERE type = 2");
  r = restore("no body rows");
  EXPECT_EQ(r["locations"], "vault");
  EXPECT_EQ(r["warnings"], nlohmann::json::array());

  // A host that never ran a backup has no catalog: the vault's index objects serve.
  // The restore's audit record then makes one that knows no blobs, and the next
  // restore reads the vault too.
  const fs::path state = site.path("state");
  db.reset();
  fs::rename(state, site.path("state.moved"));
  r = restore("no catalog");
  EXPECT_EQ(r["locations"], "vault");
  EXPECT_EQ(r["warnings"], nlohmann::json::array());
  EXPECT_EQ(SQLite::Database((state / "catalog.sqlite").string()).execAndGet("SELECT count(*) FROM blobs").getInt(), 0);
  r = restore("a catalog with no blobs");
  EXPECT_EQ(r["locations"], "vault");
  EXPECT_EQ(r["warnings"], nlohmann::json::array());
  // One that cannot be opened is named on stderr; the mail is restored, but the
  // restore cannot be written to the audit log: a warning (in --json too), exit 1.
  fs::remove_all(state);
  fs::create_directories(state / "catalog.sqlite");
  RunResult unreadable = site.restore("alice@example.ch", site.path("out-unreadable"));
  EXPECT_EQ(unreadable.status, 1) << unreadable.err;
  expect_same_tree(mail.path() + "/example.ch/alice", site.path("out-unreadable"));
  EXPECT_EQ(unreadable.json()["locations"], "vault");
  EXPECT_NE(unreadable.err.find("reduit: note: the catalog could not be opened ("), std::string::npos)
      << unreadable.err;
  ASSERT_EQ(unreadable.json()["warnings"].size(), 1u) << unreadable.out;
  const std::string w = unreadable.json()["warnings"][0];
  EXPECT_EQ(w.rfind("could not write the audit log (", 0), 0u) << w;
  EXPECT_NE(w.find("): this restore is not in the audit log; if the catalog file is damaged, move it aside "
                   "and run 'reduit catalog rebuild'"),
            std::string::npos)
      << w;
  EXPECT_NE(unreadable.err.find("reduit: warning: could not write the audit log ("), std::string::npos)
      << unreadable.err;
}

// A restore of one mailbox on the backup host reads the snapshot objects from the
// catalog's copies (decrypted and verified when they were added) instead of running
// gpg once per snapshot; it adds the ones the catalog lacks. A catalog whose
// snapshot table cannot be read is not used: the vault's objects serve.
TEST(MainJob, RestoreOfOneMailboxReadsTheSnapshotsFromTheCatalog) {
  TempDir mail;
  make_mailbox(mail.path(), "example.ch", "alice");
  Site site({mail.path()}, "%d/%n");
  site.init();
  site.backup();
  int n = 0;
  auto restore = [&](const std::string& why, int status = 0) {
    RunResult r = site.restore("alice@example.ch", site.path("out" + std::to_string(n++)));
    EXPECT_EQ(r.status, status) << why << ": " << r.err;
    return r;
  };
  RunResult first = restore("the catalog has no snapshot rows yet");
  ASSERT_EQ(first.status, 0);
  const std::string id = first.json()["snapshot"];
  SQLite::Database db(site.path("state/catalog.sqlite"), SQLite::OPEN_READWRITE);
  EXPECT_EQ(db.execAndGet("SELECT count(*) FROM snapshots").getInt(), 1);
  EXPECT_EQ(db.execAndGet("SELECT id FROM snapshots").getString(), id);

  // The row is what the next restore reads: one naming another mailbox has no alice.
  db.exec("UPDATE snapshots SET json = replace(json, 'alice@example.ch', 'alicx@example.ch')");
  RunResult cached = restore("a cached row without alice", 8);
  EXPECT_NE(cached.err.find("snapshot " + id.substr(0, 8) + " has no mailbox 'alice@example.ch' (it has: "
                            "alicx@example.ch)"),
            std::string::npos)
      << cached.err;
  db.exec("DELETE FROM snapshots");
  EXPECT_EQ(restore("the row deleted: read from the vault again").json()["snapshot"], id);
  EXPECT_EQ(db.execAndGet("SELECT count(*) FROM snapshots WHERE instr(json, 'alice@example.ch') > 0").getInt(), 1);

  // A snapshot table the catalog cannot read (kIo from SQLite): the vault serves.
  db.exec("ALTER TABLE snapshots RENAME COLUMN json TO j");
  RunResult broken = restore("a snapshot table that cannot be read");
  EXPECT_EQ(broken.json()["snapshot"], id);
  EXPECT_EQ(broken.json()["warnings"], nlohmann::json::array());
  expect_same_tree(mail.path() + "/example.ch/alice", site.path("out" + std::to_string(n - 1)));
}

// On the backup host a restore reads the tree blobs the catalog's tree_cache holds
// (the patch a backup writes for a small change) instead of their metadata packs:
// after a flag change, the data pack and the first backup's metadata pack (the
// full tree the patch applies to), not the second backup's. A row whose bytes do
// not give its id is passed over for the vault.
TEST(MainJob, RestoreOfOneMailboxReadsTreePatchesFromTheCatalog) {
  TempDir mail;
  const std::string m = make_mailbox(mail.path(), "example.ch", "alice");
  for (int i = 0; i < 30; ++i) {
    reduit::test::write_file(
        m + "/cur/" + std::to_string(1700000000 + i) + ".M" + std::to_string(i) + "P42.host,S=100:2,",
        "From: a@example.ch\nSubject: message " + std::to_string(i) + "\n\nbody " +
            std::string(static_cast<std::size_t>(300 + i), 'x') + "\n");
  }
  Site site({mail.path()}, "%d/%n");
  site.init();
  site.backup();
  fs::rename(m + "/cur/1700000007.M7P42.host,S=100:2,", m + "/cur/1700000007.M7P42.host,S=100:2,S");
  nlohmann::json second = site.backup();
  EXPECT_EQ(second["tree_patches"], 1);
  int n = 0;
  auto packs_fetched = [&](const std::string& why) {
    const std::string out = "out" + std::to_string(n++);
    RunResult r = site.restore("alice@example.ch", site.path(out));
    EXPECT_EQ(r.status, 0) << why << ": " << r.err;
    expect_same_tree(m, site.path(out));
    return r.json()["packs_fetched"].get<int>();
  };
  EXPECT_EQ(packs_fetched("the patch from the catalog"), 2);
  SQLite::Database db(site.path("state/catalog.sqlite"), SQLite::OPEN_READWRITE);
  ASSERT_EQ(db.execAndGet("SELECT count(*) FROM tree_cache").getInt(), 1);
  db.exec(
      "UPDATE tree_cache SET json = CAST(replace(CAST(json AS TEXT), '1700000007', '1700000008') AS BLOB)");
  EXPECT_EQ(packs_fetched("a damaged row"), 3);
  db.exec("DELETE FROM tree_cache");
  EXPECT_EQ(packs_fetched("no row"), 3);
}

// Metadata packs close at 2 MiB of plaintext (FORMAT.md §5; data packs at the
// vault's pack_size, 16 MiB), so a restore of one mailbox opens only the packs that
// hold its trees: each pack closes at the first tree that takes it to 2 MiB, and only
// the one closed at the end of the run holds less. 12 mailboxes of 1,100 messages
// make 12 trees of about 385 kB: six reach 2 MiB, five do not.
TEST(MainJob, MetadataPacksCloseAtTwoMiB) {
  TempDir mail;
  for (int u = 0; u < 12; ++u) {
    std::string m = make_mailbox(mail.path(), "example.ch", "user" + std::to_string(u));
    for (int i = 0; i < 1100; ++i) {
      std::string body = "Subject: " + std::to_string(i) + "\r\n\r\nuser " + std::to_string(u) + "\r\n";
      reduit::test::write_file(m + "/cur/17000" + std::to_string(10000 + i) + ".M" + std::to_string(i) +
                                   "P7.mail.example.ch,S=" + std::to_string(body.size()) + ":2,S",
                               body);
    }
  }
  Site site({mail.path()}, "%d/%n");
  site.init();
  nlohmann::json b = site.backup();
  ASSERT_EQ(b["messages"], 13200);
  EXPECT_EQ(reduit::pack_target(reduit::VaultConfig{}, reduit::PackKind::kMetadata), 2u << 20);
  EXPECT_EQ(reduit::pack_target(reduit::VaultConfig{}, reduit::PackKind::kData), 16u << 20);
  reduit::VaultConfig small;
  small.pack_size = 1u << 20;
  EXPECT_EQ(reduit::pack_target(small, reduit::PackKind::kMetadata), 1u << 20);

  reduit::Repository repo(reduit::open_transport(site.url(), {}), site.keys().archive_home->path());
  repo.load_config();
  std::uint64_t metadata = 0, below_target = 0, trees = 0;
  for (const auto& [id, size] : repo.list_packs()) {
    reduit::LoadedPack p = repo.load_pack(id);
    ASSERT_FALSE(p.entries.empty());
    if (p.entries.front().type != reduit::BlobType::kTree) continue;
    ++metadata;
    const reduit::PackEntry* last = &p.entries.front();
    for (const reduit::PackEntry& e : p.entries) {
      EXPECT_EQ(e.type, reduit::BlobType::kTree);
      if (e.offset > last->offset) last = &e;
      ++trees;
    }
    const std::uint64_t filled = last->offset + last->length;  // magic + blobs: PackWriter::size()
    EXPECT_LT(filled - last->length, 2u << 20) << "pack " << reduit::to_hex(id) << " went on past 2 MiB";
    if (filled < (2u << 20)) ++below_target;
  }
  EXPECT_EQ(trees, 12u);
  EXPECT_EQ(metadata, b["metadata_packs"].get<std::uint64_t>());
  EXPECT_EQ(metadata, 2u);  // 6 trees of ~385 kB reach 2 MiB (one pack of 16 MiB before)
  EXPECT_EQ(below_target, 0u);
}

// 8. One flipped byte in a pack: check --read-data names it and the mailboxes it
//    affects; a mailbox not in that pack still restores.
TEST(MainJob, FlippedByteIsFoundByCheckAndOtherMailboxesStillRestore) {
  TempDir mail;
  reduit::test::generate_maildir(mail.path(), 600, 6, 3);
  Site site({mail.path()}, "%d/%n", "", "", "[pack]\nsize = \"256KiB\"\n");
  site.init();
  site.backup();
  // The newest data pack holds the last mailbox's mail; find the biggest pack file.
  std::vector<std::string> packs = data_pack_files(site.vault_dir());
  std::string victim;
  std::uintmax_t biggest = 0;
  for (const auto& p : packs) {
    if (fs::file_size(p) > biggest) biggest = fs::file_size(p), victim = p;
  }
  std::string bytes = reduit::test::read_file(victim);
  bytes[bytes.size() / 2] ^= 0x01;
  fs::permissions(victim, fs::perms::owner_write, fs::perm_options::add);
  reduit::test::write_file(victim, bytes);
  std::string victim_id = fs::path(victim).filename();

  RunResult c = site.reduit({"check", "--read-data"});
  EXPECT_EQ(c.status, 6) << c.out << c.err;
  nlohmann::json report = c.json();
  ASSERT_EQ(report["problems"].size(), 1u) << c.out;
  EXPECT_EQ(report["problems"][0]["object"], "packs/" + victim_id.substr(0, 2) + "/" + victim_id);
  std::set<std::string> affected;
  for (const auto& who : report["problems"][0]["mailboxes"]) {
    std::string s = who;
    affected.insert(s.substr(s.find(':') + 1));
  }
  ASSERT_FALSE(affected.empty());
  std::vector<std::string> names = mailbox_names(site);
  int restored_ok = 0;
  for (const std::string& name : names) {
    RunResult r = site.restore(name, site.path("r-" + name));
    if (affected.count(name)) {
      EXPECT_EQ(r.status, 6) << name << ": " << r.err;
    } else {
      EXPECT_EQ(r.status, 0) << name << ": " << r.err;
      ++restored_ok;
    }
  }
  EXPECT_GT(restored_ok, 0) << "every mailbox was in the damaged pack; the test proves nothing";
}

// 9a. A message's base64 attachment is stored decoded (FORMAT.md §5.1) and comes back
//     byte for byte; a filtered pack whose run table was forged with the agent key
//     (what a compromised agent could write) fails the restore with exit 6, naming
//     the table, and the message is not written.
TEST(MainJob, AttachmentsAreStoredDecodedAndAForgedRunTableIsRefused) {
  TempDir mail;
  std::string m = make_mailbox(mail.path(), "example.ch", "eve");
  // 3,420 bytes: 4,560 characters of base64 (OpenSSL's encoder), 60 lines of 76.
  std::string attachment(3420, '\0');
  for (std::size_t i = 0; i < attachment.size(); ++i)
    attachment[i] = static_cast<char>((i * 37 + i / 7) % 251);
  std::string flat(4560 + 1, '\0');
  ASSERT_EQ(EVP_EncodeBlock(reinterpret_cast<unsigned char*>(flat.data()),
                            reinterpret_cast<const unsigned char*>(attachment.data()), 3420),
            4560);
  flat.resize(4560);
  std::string b64;
  for (std::size_t at = 0; at < flat.size(); at += 76) b64 += flat.substr(at, 76) + "\r\n";
  std::string msg =
      "From: a@example.ch\r\nTo: eve@example.ch\r\nSubject: scan\r\nMIME-Version: 1.0\r\n"
      "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\n"
      "see attached\r\n--b1\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
      b64 + "--b1--\r\n";
  reduit::test::write_file(m + "/cur/1700000000.M1P1.host,S=" + std::to_string(msg.size()) + ":2,S", msg);
  Site site({mail.path()}, "%d/%n");
  site.init();
  ASSERT_EQ(site.backup()["messages"], 1);

  // The one data pack is filtered: its run is the attachment's 60 lines.
  reduit::Repository repo(reduit::open_transport(site.url(), {}), site.keys().archive_home->path());
  const reduit::VaultConfig& vc = repo.load_config();
  std::vector<std::pair<reduit::Hash, reduit::Bytes>> filtered;
  for (const auto& [id, size] : repo.list_packs()) {
    reduit::Bytes stored = repo.fetch_pack(id);
    reduit::Bytes plain =
        reduit::zstd_decompress(repo.crypto().decrypt_verify(stored, vc.agent_key).plaintext);
    if (reduit::is_filtered_pack(plain)) filtered.emplace_back(id, plain);
  }
  ASSERT_EQ(filtered.size(), 1u);
  const reduit::Bytes& f = filtered[0].second;
  ASSERT_GE(f.size(), 35u);
  EXPECT_EQ(reduit::load_le(f.data() + f.size() - 16, 8), 1u);                     // runs
  EXPECT_EQ(reduit::load_le(f.data() + f.size() - 35 + 8, 8), attachment.size());  // its decoded bytes
  reduit::LoadedPack pack = repo.load_pack(filtered[0].first);
  ASSERT_EQ(pack.entries.size(), 2u);  // header and body
  EXPECT_NE(
      std::string_view(reinterpret_cast<const char*>(pack.plaintext.data()), pack.plaintext.size()).find(b64),
      std::string_view::npos);
  expect_restores_as(site, "eve@example.ch", "r", m);

  // Forged: run 0 claims lines of 74 characters. Sealed and signed with the agent
  // key, named by a new index; the genuine pack is removed.
  reduit::Bytes forged = f;
  forged[forged.size() - 35 + 16] = 74;
  reduit::Repository agent(reduit::open_transport(site.url(), {}), site.keys().agent_home->path());
  const reduit::VaultConfig& ac = agent.load_config();
  reduit::Bytes sealed =
      agent.crypto().encrypt_sign(reduit::zstd_compress(forged, 3), ac.archive_keys, ac.agent_key);
  reduit::IndexPack p{reduit::sha256(sealed.data(), sealed.size()), sealed.size(), reduit::PackKind::kData,
                      pack.entries};
  agent.transport().put(reduit::pack_name(p.id), sealed);
  agent.put_object("index", reduit::encode_index({p}));
  agent.transport().remove(reduit::pack_name(filtered[0].first));
  std::string to = site.path("forged");
  RunResult r = site.restore("eve@example.ch", to);
  EXPECT_EQ(r.status, 6) << r.err;
  EXPECT_NE(r.err.find("pack " + reduit::to_hex(p.id) +
                       ": filtered pack: run 0 has lines of 74 characters (corrupt or forged)"),
            std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(to + "/cur/1700000000.M1P1.host,S=" + std::to_string(msg.size()) + ":2,S"));
}

// 9. A hostile manifest (../x, absolute path) is refused; nothing is written outside
//    the destination.
TEST(MainJob, HostileManifestIsRefusedAndNothingIsWrittenOutside) {
  for (std::string bad : {"../x", "/tmp/reduit-hostile-abs", "cur/../../x"}) {
    TempDir mail;
    make_mailbox(mail.path(), "example.ch", "eve");
    Site site({mail.path()}, "%d/%n");
    site.init();
    // Forge a snapshot with the agent key (what a compromised agent could write).
    reduit::Repository repo(reduit::open_transport(site.url(), {}), site.keys().agent_home->path());
    repo.load_config();
    reduit::Tree tree;
    std::string content = "Subject: x\n\npwned\n";
    reduit::TreeEntry e;
    e.kind = reduit::EntryKind::kFile;
    e.path = bad;
    e.mode = 0644;
    e.size = content.size();
    e.sha256 = reduit::sha256(content);
    e.blob = repo.blob_id(content.data(), content.size());
    tree.entries.push_back(e);
    std::string tree_json = reduit::encode_tree(tree);
    reduit::Hash tree_id = repo.blob_id(tree_json.data(), tree_json.size());
    std::vector<reduit::IndexPack> index;
    for (auto kind : {reduit::PackKind::kData, reduit::PackKind::kMetadata}) {
      reduit::PackWriter w(kind);
      if (kind == reduit::PackKind::kData)
        w.add(reduit::BlobType::kFile, *e.blob, content.data(), content.size());
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
    s.mailboxes.push_back(
        {"eve@example.ch", mail.path(), "example.ch/eve", {{"", tree_id, 0700, 0, 0, content.size()}}});
    std::string sj = reduit::encode_snapshot(s);
    repo.put_object("snapshots", reduit::Bytes(sj.begin(), sj.end()));

    std::string to = site.path("dest/inner");
    RunResult r = site.restore("eve@example.ch", to);
    EXPECT_EQ(r.status, 6) << bad << ": " << r.err;
    EXPECT_NE(r.err.find("refusing unsafe path in the manifest"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(site.path("dest/x")));
    EXPECT_FALSE(fs::exists(site.path("x")));
    EXPECT_FALSE(fs::exists("/tmp/reduit-hostile-abs"));
    EXPECT_FALSE(fs::exists(to)) << "restore created its destination before refusing";
  }
}

// 10. Faults: each gives a one-line error and a documented exit code, writes no
//     snapshot, and the next run after the fix succeeds.
TEST(MainJob, MissingKeyGivesExit5AndNoSnapshot) {
  TempDir mail;
  reduit::test::generate_maildir(mail.path(), 50, 1, 1);
  Site site({mail.path()}, "%d/%n");
  site.init();
  // The same site, but the config's GNUPGHOME holds no key at all.
  std::string cfg = reduit::test::read_file(site.config());
  std::string broken = cfg;
  broken.replace(broken.find(site.keys().agent_home->path()), site.keys().agent_home->path().size(),
                 site.keys().empty_home->path());
  reduit::test::write_file(site.config(), broken);
  RunResult r = site.reduit({"backup"});
  EXPECT_EQ(r.status, 5) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("cannot decrypt"), std::string::npos) << r.err;
  // The archive home can read the vault but cannot sign: also a key problem.
  broken = cfg;
  broken.replace(broken.find(site.keys().agent_home->path()), site.keys().agent_home->path().size(),
                 site.keys().archive_home->path());
  reduit::test::write_file(site.config(), broken);
  r = site.reduit({"backup"});
  EXPECT_EQ(r.status, 5) << r.err;
  EXPECT_NE(r.err.find("agent secret key"), std::string::npos) << r.err;
  reduit::test::write_file(site.config(), cfg);
  EXPECT_EQ(snapshot_count(site), 0u);
  nlohmann::json b = site.backup();
  EXPECT_EQ(b["messages"], 50);
}

TEST(MainJob, WrongRecipientKeyAtInitGivesExit5) {
  TempDir mail;
  Site site({mail.path()}, "%d/%n");
  RunResult r =
      site.reduit({"init", "--recipient", "nobody@nowhere.invalid", "--signing-key", site.keys().agent_fpr});
  EXPECT_EQ(r.status, 5) << r.err;
  EXPECT_NE(r.err.find("nobody@nowhere.invalid"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(site.vault_dir() + "/config"));
}

TEST(MainJob, UnreachableVaultGivesExit4AndNextRunSucceeds) {
  TempDir mail;
  reduit::test::generate_maildir(mail.path(), 60, 2, 2);
  reduit::test::TestSshd sshd;
  TempDir vault;
  Site site({mail.path()}, "%d/%n", sftp_url(sshd, vault.path() + "/v"), sftp_vault_extra(sshd));
  site.init();
  nlohmann::json first = site.backup();
  sshd.stop();
  RunResult r = site.reduit({"backup"});
  EXPECT_EQ(r.status, 4) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("cannot reach vault"), std::string::npos) << r.err;
  sshd.start();
  EXPECT_EQ(snapshot_count(site), 1u);
  nlohmann::json b = site.backup();
  EXPECT_EQ(b["messages"], first["messages"]);
  EXPECT_EQ(b["files_read"], 0);  // the catalog stayed usable
  EXPECT_EQ(snapshot_count(site), 2u);
}

TEST(MainJob, SourceThatIsNotAMaildirGivesExit7) {
  TempDir notmail;
  reduit::test::write_file(notmail.path() + "/example.ch/alice/notes.txt", "not mail");
  Site site({notmail.path()}, "%d/%n");
  site.init();
  RunResult r = site.reduit({"backup"});
  EXPECT_EQ(r.status, 7) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("no Maildir found under " + notmail.path()), std::string::npos) << r.err;
  Site missing({notmail.path() + "/does-not-exist"}, "%d/%n");
  missing.init();
  r = missing.reduit({"backup"});
  EXPECT_EQ(r.status, 7) << r.err;
  EXPECT_NE(r.err.find("does not exist"), std::string::npos) << r.err;
  // Fixed: make it a Maildir, and the next run succeeds.
  for (const char* d : {"cur", "new", "tmp"})
    fs::create_directories(notmail.path() + "/example.ch/alice/" + d);
  EXPECT_EQ(snapshot_count(site), 0u);
  nlohmann::json b = site.backup();
  EXPECT_EQ(b["mailboxes"], 1);
}

// The backup host needs no archive secret key (DESIGN.md "Keys").
TEST(MainJob, BackupRunsWithOnlyPublicArchiveKeysAndCannotReadData) {
  TempDir mail;
  reduit::test::generate_maildir(mail.path(), 80, 2, 4);
  Site site({mail.path()}, "%d/%n");
  site.init();
  RunResult sec = reduit::test::run_command({"/usr/bin/gpg", "--homedir", site.keys().agent_home->path(),
                                             "--list-secret-keys", "--with-colons", site.keys().archive_fpr});
  ASSERT_NE(sec.status, 0) << "the agent home must not hold the archive secret key";
  nlohmann::json b = site.backup();
  EXPECT_EQ(b["messages"], 80);
  // With the agent key only, restore cannot decrypt data packs: a key error.
  std::string name = mailbox_names(site).front();
  RunResult r = site.reduit({"restore", "--mailbox", name, "--to", site.path("out"), "--gnupghome",
                             site.keys().agent_home->path()});
  EXPECT_EQ(r.status, 5) << r.err;
  EXPECT_NE(r.err.find("cannot decrypt"), std::string::npos) << r.err;
  // …but it can list (metadata is encrypted to the agent key too).
  EXPECT_EQ(site.reduit({"ls", "latest", "--mailbox", name}).status, 0);
}

TEST(MainJob, SecondBackupWhileLeaseIsHeldGivesExit3) {
  TempDir mail;
  reduit::test::generate_maildir(mail.path(), 20, 1, 1);
  Site site({mail.path()}, "%d/%n");
  site.init();
  // A live lease held by another host (renewed now).
  std::string lease = "{\"purpose\":\"backup\",\"host\":\"other-host\",\"pid\":4242,\"started\":" +
                      std::to_string(time(nullptr)) + ",\"renewed\":" + std::to_string(time(nullptr)) +
                      ",\"ttl\":900,\"nonce\":\"abc\"}";
  reduit::test::write_file(site.vault_dir() + "/locks/lease", lease);
  RunResult r = site.reduit({"backup"});
  EXPECT_EQ(r.status, 3) << r.err;
  EXPECT_NE(r.err.find("other-host pid 4242"), std::string::npos) << r.err;
  // A lease left by a dead process on this host is stale and broken safely.
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  lease = "{\"purpose\":\"backup\",\"host\":\"" + std::string(host) +
          "\",\"pid\":999999,\"started\":1,"
          "\"renewed\":" +
          std::to_string(time(nullptr)) + ",\"ttl\":900,\"nonce\":\"def\"}";
  reduit::test::write_file(site.vault_dir() + "/locks/lease", lease);
  r = site.reduit({"backup"});
  EXPECT_EQ(r.status, 1) << r.err;  // done, with a warning about the stale lease
  EXPECT_EQ(r.json()["messages"], 20);
  EXPECT_FALSE(fs::exists(site.vault_dir() + "/locks/lease"));
}

// Disaster recovery: `restore --all` on a fresh host brings back every mailbox at
// its path below the source root, byte-identical.
TEST(MainJob, RestoreAllOnAFreshHostRebuildsTheWholeSourceTree) {
  TempDir mail;
  reduit::test::generate_maildir(mail.path(), 400, 6, 13);
  Site site({mail.path()}, "%d/%n");
  site.init();
  site.backup();
  TempDir fresh;
  std::string to = fresh.path() + "/srv/restore/vmail";  // parents are created
  RunResult r = restore_all_on_fresh_host(site, fresh.path(), to);
  ASSERT_EQ(r.status, 0) << r.err;
  const std::string cfg = fresh.path() + "/reduit.toml";
  EXPECT_EQ(r.json()["messages"], 400);
  expect_same_tree(mail.path(), to);
  r = reduit::test::run_command(
      {reduit::test::reduit_binary(), "--config", cfg, "restore", "--to", to + "2"});
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_NE(r.err.find("--mailbox M"), std::string::npos) << r.err;
}

// A message whose header and body blobs sit in different packs (4 KiB packs; a body
// stored once for several mailboxes) is written part by part through its temp file;
// one whose blobs share a pack is written at once from memory. Both come back
// byte-identical, in one batch and in batches of 5 entries (blobs from the stash).
TEST(MainJob, RestoreAllWritesMessagesSplitAcrossPacksByteIdentical) {
  TempDir mail;
  reduit::test::generate_maildir(mail.path(), 120, 4, 21);
  Site site({mail.path()}, "%d/%n", "", "", "[pack]\nsize = \"4KiB\"\n");
  site.init();
  site.backup();
  reduit::Repository repo(reduit::open_transport(site.url(), {}), site.keys().archive_home->path());
  repo.load_config();
  reduit::BlobIndex index(repo.load_indexes());
  std::size_t split = 0, together = 0;
  for (const auto& e : fs::recursive_directory_iterator(mail.path())) {
    const std::string dir = e.path().parent_path().filename();
    if (!e.is_regular_file() || (dir != "cur" && dir != "new")) continue;
    const std::string m = reduit::test::read_file(e.path());
    const std::size_t hl = reduit::header_block_length(m);
    ASSERT_LT(hl, m.size()) << e.path();
    const reduit::Hash header = repo.blob_id(m.data(), hl), body = repo.blob_id(m.data() + hl, m.size() - hl);
    ASSERT_EQ(index.find(header).size(), 1u);
    ASSERT_EQ(index.find(body).size(), 1u);
    ++(index.find(header).front().pack == index.find(body).front().pack ? together : split);
  }
  // Both ways of writing a message are taken (the counts are this seed's layout).
  EXPECT_EQ(split, 55u);
  EXPECT_EQ(together, 65u);
  TempDir fresh;
  RunResult one = restore_all_on_fresh_host(site, fresh.path(), fresh.path() + "/one");
  ASSERT_EQ(one.status, 0) << one.err;
  EXPECT_EQ(one.json()["messages"], 120);
  expect_same_tree(mail.path(), fresh.path() + "/one");
  RunResult many =
      restore_all_on_fresh_host(site, fresh.path(), fresh.path() + "/many", {"--batch-entries", "5"});
  ASSERT_EQ(many.status, 0) << many.err;
  EXPECT_GT(many.json()["stashed_blobs"].get<int>(), 0);
  expect_same_tree(mail.path(), fresh.path() + "/many");
}

// `restore --all` plans and writes a batch of folders at a time (--batch-entries):
// with batches smaller than every folder, each folder is its own batch, a hard link
// whose first name was restored by an earlier batch is still a link, each pack is
// still fetched once, and the tree is the same as the one-batch restore's.
TEST(MainJob, RestoreAllInBatchesKeepsHardLinksAcrossBatches) {
  TempDir mail;
  reduit::test::generate_maildir(mail.path(), 400, 6, 13);
  // Two names of one inode in two mailboxes (Dovecot's copy between users of one
  // hard-linked store), and one more in the same folder.
  std::vector<fs::path> cur_dirs;
  for (const auto& e : fs::recursive_directory_iterator(mail.path()))
    if (e.is_directory() && e.path().filename() == "cur" && !fs::is_empty(e.path()))
      cur_dirs.push_back(e.path());
  std::sort(cur_dirs.begin(), cur_dirs.end());
  ASSERT_GE(cur_dirs.size(), 2u);
  std::vector<fs::path> first_msgs;
  for (const auto& e : fs::directory_iterator(cur_dirs.front())) first_msgs.push_back(e.path());
  std::sort(first_msgs.begin(), first_msgs.end());
  const fs::path linked = first_msgs.front();
  fs::create_hard_link(linked, cur_dirs.back() / "1700000000.M1P1.linked:2,S");
  fs::create_hard_link(linked, cur_dirs.front() / "1700000001.M1P1.linked:2,");
  Site site({mail.path()}, "%d/%n");
  site.init();
  site.backup();
  TempDir fresh;
  RunResult one = restore_all_on_fresh_host(site, fresh.path(), fresh.path() + "/one");
  ASSERT_EQ(one.status, 0) << one.err;
  RunResult many =
      restore_all_on_fresh_host(site, fresh.path(), fresh.path() + "/many", {"--batch-entries", "7"});
  ASSERT_EQ(many.status, 0) << many.err;
  for (const char* k : {"messages", "hard_links", "folders", "bytes"})
    EXPECT_EQ(many.json()[k], one.json()[k]) << k;
  EXPECT_EQ(many.json()["messages"], 402);
  EXPECT_EQ(many.json()["hard_links"], 2);
  EXPECT_EQ(one.json()["batches"], 1);
  EXPECT_EQ(one.json()["stashed_blobs"], 0);
  EXPECT_EQ(many.json()["batches"], many.json()["folders"]);
  EXPECT_GT(many.json()["stashed_blobs"].get<int>(), 300);
  // Each pack is fetched once: what later batches need from it waits in a stash.
  EXPECT_EQ(many.json()["packs_fetched"], one.json()["packs_fetched"]);
  EXPECT_EQ(many.json()["bytes_fetched"], one.json()["bytes_fetched"]);
  expect_same_tree(mail.path(), fresh.path() + "/many");
  std::vector<std::string> top;  // no stash left behind
  for (const auto& e : fs::directory_iterator(fresh.path() + "/many")) top.push_back(e.path().filename());
  std::vector<std::string> want_top;
  for (const auto& e : fs::directory_iterator(mail.path())) want_top.push_back(e.path().filename());
  std::sort(top.begin(), top.end());
  std::sort(want_top.begin(), want_top.end());
  EXPECT_EQ(top, want_top);
  const std::string rel = fs::relative(linked, mail.path()).string();
  const std::string rel2 = fs::relative(cur_dirs.back() / "1700000000.M1P1.linked:2,S", mail.path()).string();
  struct stat a {
  }, b{};
  ASSERT_EQ(::stat((fresh.path() + "/many/" + rel).c_str(), &a), 0);
  ASSERT_EQ(::stat((fresh.path() + "/many/" + rel2).c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_EQ(a.st_nlink, 3u);
  EXPECT_EQ(site.reduit({"restore", "--all", "--to", fresh.path() + "/zero", "--batch-entries", "0"}).status,
            2);
}

namespace {

int catalog_page_size(const Site& site) {
  return SQLite::Database(site.path("state") + "/catalog.sqlite", SQLite::OPEN_READONLY)
      .execAndGet("PRAGMA page_size")
      .getInt();
}

int catalog_files(const Site& site) {
  return SQLite::Database(site.path("state") + "/catalog.sqlite", SQLite::OPEN_READONLY)
      .execAndGet("SELECT count(*) FROM files")
      .getInt();
}

// 30 messages, a first backup; then one message deleted and two delivered, a second.
void two_runs_with_churn(const Site& site, const std::string& m) {
  site.backup();
  EXPECT_EQ(catalog_files(site), 30);
  fs::remove(m + "/cur/1700000007.M7P1.h:2,S");
  for (int i = 30; i < 32; ++i) {
    reduit::test::write_file(
        m + "/new/" + std::to_string(1700000000 + i) + ".M" + std::to_string(i) + "P1.h",
        "Subject: " + std::to_string(i) + "\n\nbody " + std::string(i * 100, 'n') + "\n");
  }
  nlohmann::json second = site.backup();
  EXPECT_EQ(second["messages"], 31);
  EXPECT_EQ(second["content_blobs_new"], 4);  // the two new messages' header blocks and bodies
  EXPECT_EQ(catalog_files(site), 31);
  expect_restores_as(site, "bob@example.ch", "out", m);
}

void thirty_messages(const std::string& m) {
  for (int i = 0; i < 30; ++i) {
    reduit::test::write_file(
        m + "/cur/" + std::to_string(1700000000 + i) + ".M" + std::to_string(i) + "P1.h:2,S",
        "Subject: " + std::to_string(i) + "\n\nbody " + std::string(i * 100, 'b') + "\n");
  }
}

}  // namespace

// A new catalog has 16 KiB pages (fewer writes when a run's rows are committed);
// a catalog made with 4 KiB pages by an older reduit keeps them and goes on working.
TEST(MainJob, NewCatalogsHave16KiBPagesAndOlderCatalogsKeepTheirs) {
  {
    TempDir mail;
    std::string m = make_mailbox(mail.path(), "example.ch", "bob");
    thirty_messages(m);
    Site site({mail.path()}, "%d/%n");
    site.init();  // the first backup makes the catalog
    two_runs_with_churn(site, m);
    EXPECT_EQ(catalog_page_size(site), 16384);
  }
  {
    TempDir mail;
    std::string m = make_mailbox(mail.path(), "example.ch", "bob");
    thirty_messages(m);
    Site site({mail.path()}, "%d/%n");
    fs::create_directories(site.path("state"));
    {
      SQLite::Database old(site.path("state") + "/catalog.sqlite",
                           SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
      old.exec("PRAGMA page_size=4096; PRAGMA journal_mode=WAL; CREATE TABLE made_by_an_older_reduit(x)");
    }
    site.init();
    EXPECT_EQ(catalog_page_size(site), 4096);
    two_runs_with_churn(site, m);
    EXPECT_EQ(catalog_page_size(site), 4096);
  }
}

// commit_files() leaves the run's staged rows in the TEMP tables; the next
// begin_staging() empties them, so a second run on the same connection commits
// only its own rows.
TEST(MainJob, SecondRunOnOneCatalogCommitsOnlyItsOwnStagedFiles) {
  TempDir state;
  reduit::Catalog cat(state.path());
  reduit::CachedFile a;
  a.path = "cur/1.M1P1.h:2,S";
  a.size = 11;
  reduit::CachedFile b = a;
  b.path = "cur/2.M2P1.h:2,S";
  b.size = 22;
  cat.begin_staging();
  cat.stage_file("example.ch/bob", "1.M1P1.h", a);
  cat.end_staging();
  cat.commit_files();
  ASSERT_TRUE(cat.find_file("example.ch/bob", "1.M1P1.h"));
  EXPECT_EQ(cat.find_file("example.ch/bob", "1.M1P1.h")->size, 11u);
  cat.begin_staging();
  cat.stage_file("example.ch/bob", "2.M2P1.h", b);
  cat.end_staging();
  cat.commit_files();
  EXPECT_FALSE(cat.find_file("example.ch/bob", "1.M1P1.h"));
  ASSERT_TRUE(cat.find_file("example.ch/bob", "2.M2P1.h"));
  EXPECT_EQ(cat.find_file("example.ch/bob", "2.M2P1.h")->path, "cur/2.M2P1.h:2,S");
  EXPECT_EQ(SQLite::Database(state.path() + "/catalog.sqlite", SQLite::OPEN_READONLY)
                .execAndGet("SELECT count(*) FROM files")
                .getInt(),
            1);
}

// `blobs` has no index by pack (with one, the merge at the end of a 100,000-message
// first run took 0.53-0.68 s instead of 0.34-0.40 s). The two readers by pack, unindexed_packs() after an
// interrupted run and forget_packs() after a prune or a pack lost from the vault,
// read it in one pass: exactly the blobs of the packs asked for, in offset order.
TEST(MainJob, CatalogFindsAndForgetsAPacksBlobsWithoutAnIndexByPack) {
  TempDir state;
  auto id = [](std::uint8_t n) {
    reduit::Hash h{};
    h[0] = n;
    h[31] = static_cast<std::uint8_t>(255 - n);
    return h;
  };
  auto pack = [&](std::uint8_t n, std::vector<reduit::PackEntry> blobs) {
    return reduit::IndexPack{id(n), 1000u + n, reduit::PackKind::kData, std::move(blobs)};
  };
  using reduit::BlobType;
  {
    // A catalog made by an older reduit, with the index.
    reduit::Catalog old(state.path());
    old.db().exec("CREATE INDEX blobs_pack ON blobs(pack)");
  }
  reduit::Catalog cat(state.path());
  EXPECT_EQ(cat.db().execAndGet("SELECT count(*) FROM sqlite_master WHERE name='blobs_pack'").getInt(), 0);
  // Packs 0x30 and 0x10 are journaled but in no index object; 0x20 is indexed.
  cat.add_pack(pack(0x30, {{BlobType::kBody, id(1), 900, 40}, {BlobType::kHeader, id(2), 8, 30}}), false);
  cat.add_pack(pack(0x20, {{BlobType::kBody, id(3), 8, 50}}), true);
  cat.add_pack(pack(0x10, {{BlobType::kHeader, id(4), 300, 20},
                           {BlobType::kBody, id(5), 8, 10},
                           {BlobType::kTree, id(6), 120, 70}}),
               false);

  std::vector<reduit::IndexPack> got = cat.unindexed_packs(64);  // merges pending blobs first
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].id, id(0x10));
  EXPECT_EQ(got[0].size, 1016u);
  ASSERT_EQ(got[0].blobs.size(), 3u);
  EXPECT_EQ(got[0].blobs[0].id, id(5));
  EXPECT_EQ(got[0].blobs[0].offset, 8u);
  EXPECT_EQ(got[0].blobs[0].length, 10u);
  EXPECT_EQ(got[0].blobs[0].type, BlobType::kBody);
  EXPECT_EQ(got[0].blobs[1].id, id(6));
  EXPECT_EQ(got[0].blobs[1].offset, 120u);
  EXPECT_EQ(got[0].blobs[1].type, BlobType::kTree);
  EXPECT_EQ(got[0].blobs[2].id, id(4));
  EXPECT_EQ(got[0].blobs[2].offset, 300u);
  EXPECT_EQ(got[1].id, id(0x30));
  ASSERT_EQ(got[1].blobs.size(), 2u);
  EXPECT_EQ(got[1].blobs[0].id, id(2));
  EXPECT_EQ(got[1].blobs[1].id, id(1));
  EXPECT_EQ(got[1].blobs[1].offset, 900u);
  EXPECT_EQ(got[1].blobs[1].length, 40u);
  ASSERT_EQ(cat.unindexed_packs(1).size(), 1u);
  EXPECT_EQ(cat.unindexed_packs(1)[0].id, id(0x10));

  // Pack 0x40 is still in pending_blobs (not merged) when it is forgotten.
  cat.add_pack(pack(0x40, {{BlobType::kBody, id(7), 8, 5}}), false);
  EXPECT_EQ(cat.forget_packs({id(0x10), id(0x40)}), 2u);
  for (std::uint8_t n : {4, 5, 6, 7}) EXPECT_FALSE(cat.has_blob(id(n))) << int(n);
  EXPECT_EQ(cat.merge_blobs(), 0u);
  for (std::uint8_t n : {1, 2, 3}) EXPECT_TRUE(cat.has_blob(id(n))) << int(n);
  EXPECT_EQ(cat.db().execAndGet("SELECT count(*) FROM blobs").getInt(), 3);
  EXPECT_EQ(cat.pack_ids(), (std::vector<reduit::Hash>{id(0x20), id(0x30)}));
  got = cat.unindexed_packs(64);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].id, id(0x30));
  EXPECT_EQ(got[0].blobs.size(), 2u);
}
