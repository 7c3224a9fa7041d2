// The audit log (issue 8, must-shows 1 and 4): every edit, deletion, reordering or
// truncation of entries, in the catalog or in the vault copy, is found by
// `reduit audit verify`, which names the first bad entry; heads are signed and
// time-stamped by a local RFC 3161 TSA whose tokens `openssl ts -verify` accepts.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <SQLiteCpp/SQLiteCpp.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "support/harness.hpp"
#include "support/site.hpp"
#include "support/tsa.hpp"
#include "vault/audit.hpp"
#include "vault/hash.hpp"

namespace fs = std::filesystem;
using reduit::test::RunResult;
using reduit::test::Site;
using reduit::test::TempDir;

namespace {

void make_mail(const std::string& root) {
  for (const char* user : {"alice", "bob"}) {
    const std::string m = root + "/example.ch/" + user;
    for (const char* d : {"cur", "new", "tmp"}) fs::create_directories(m + "/" + d);
    for (int i = 0; i < 3; ++i)
      reduit::test::write_file(
          m + "/cur/170000000" + std::to_string(i) + ".M" + std::to_string(i) + "P1.mx:2,S",
          "Subject: " + std::string(user) + " " + std::to_string(i) + "\n\nhello\n");
  }
}

std::vector<std::string> events(const nlohmann::json& shown) {
  std::vector<std::string> out;
  for (const auto& e : shown) out.push_back(e["event"].get<std::string>());
  return out;
}

// A site with ten audit entries: the five change events of the first run, three
// backups, a restore (archive key: no head signed), and a fourth backup that seals
// the head and copies the restore's entry to the vault.
struct AuditSite {
  TempDir mail, restored;
  std::unique_ptr<Site> site;
  AuditSite(const std::string& top_extra = "") {
    make_mail(mail.path());
    site = std::make_unique<Site>(std::vector<std::string>{mail.path()}, "%d/%n", "", "", top_extra);
    site->init();
    site->backup();
    site->backup();
    site->backup();
    RunResult r = site->restore("alice@example.ch", restored.path() + "/alice");
    EXPECT_EQ(r.status, 0) << r.err;
    site->backup();
  }
  std::string catalog() const { return site->path("state/catalog.sqlite"); }
  RunResult verify(const std::vector<std::string>& extra = {}) const {
    std::vector<std::string> args{"audit", "verify"};
    args.insert(args.end(), extra.begin(), extra.end());
    return site->reduit(args);
  }
  // The vault's audit objects, oldest first (one per sealed run).
  std::vector<std::string> audit_objects() const {
    std::vector<std::pair<fs::file_time_type, std::string>> v;
    for (const auto& e : fs::recursive_directory_iterator(site->vault_dir() + "/audit"))
      if (e.is_regular_file()) v.emplace_back(e.last_write_time(), e.path().string());
    std::sort(v.begin(), v.end());
    std::vector<std::string> out;
    for (auto& [t, p] : v) out.push_back(p);
    return out;
  }
};

void expect_first_bad(const RunResult& r, std::uint64_t seq, const std::string& problem_prefix) {
  EXPECT_EQ(r.status, 6) << r.out << r.err;
  nlohmann::json j = r.json();
  EXPECT_EQ(j["ok"], false);
  EXPECT_EQ(j["first_bad_entry"], seq) << j.dump(2);
  ASSERT_FALSE(j["problems"].empty());
  bool found = false;
  for (const auto& p : j["problems"])
    found = found || p["problem"].get<std::string>().rfind(problem_prefix, 0) == 0;
  EXPECT_TRUE(found) << "no problem starting with \"" << problem_prefix << "\" in " << j["problems"].dump(2);
}

}  // namespace

TEST(Audit, MerkleRootIsRfc6962OverSortedIds) {
  using reduit::Hash;
  auto leaf = [](const Hash& h) {
    std::string s(1, '\0');
    s.append(reinterpret_cast<const char*>(h.data()), 32);
    return reduit::sha256(s);
  };
  auto node = [](const Hash& l, const Hash& r) {
    std::string s(1, '\x01');
    s.append(reinterpret_cast<const char*>(l.data()), 32);
    s.append(reinterpret_cast<const char*>(r.data()), 32);
    return reduit::sha256(s);
  };
  Hash a = reduit::sha256("a"), b = reduit::sha256("b"), c = reduit::sha256("c");
  // Sorted bytewise: sha256("a") = ca97…, "b" = 3e23…, "c" = 2e7d… → c, b, a.
  EXPECT_EQ(reduit::to_hex(reduit::merkle_root({})),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(reduit::merkle_root({a}), leaf(a));
  EXPECT_EQ(reduit::merkle_root({a, b, c}), node(node(leaf(c), leaf(b)), leaf(a)));
  EXPECT_EQ(reduit::merkle_root({c, a, b}), reduit::merkle_root({a, b, c}));
}

TEST(Audit, EveryRunIsLoggedChainedSignedAndCopiedToTheVault) {
  AuditSite s;
  RunResult shown = s.site->reduit({"audit", "show"});
  ASSERT_EQ(shown.status, 0) << shown.err;
  nlohmann::json j = shown.json();
  std::vector<std::string> ev = events(j);
  ASSERT_EQ(ev.size(), 10u) << j.dump(2);
  EXPECT_EQ(std::vector<std::string>(ev.begin(), ev.begin() + 3),
            (std::vector<std::string>{"config-change", "policy-change", "vault-added"}));
  EXPECT_EQ(ev[3], "key-added");
  EXPECT_EQ(ev[4], "key-added");
  EXPECT_EQ(std::vector<std::string>(ev.begin() + 5, ev.end()),
            (std::vector<std::string>{"backup", "backup", "backup", "restore", "backup"}));
  std::set<std::string> roles{j[3]["data"]["role"].get<std::string>(),
                              j[4]["data"]["role"].get<std::string>()};
  EXPECT_EQ(roles, (std::set<std::string>{"archive", "agent"}));
  // Entry 1 chains to zeros; each later one to the SHA-256 of the one before.
  // (Parsed keeping key order: the entry text is the ordered dump.)
  auto ordered = nlohmann::ordered_json::parse(shown.out);
  EXPECT_EQ(ordered[0]["prev"], std::string(64, '0'));
  for (std::size_t i = 1; i < ordered.size(); ++i)
    EXPECT_EQ(ordered[i]["prev"], reduit::to_hex(reduit::sha256(ordered[i - 1].dump()))) << i;
  EXPECT_EQ(j[5]["data"]["result"], "ok");
  EXPECT_EQ(j[5]["data"]["messages"], 6);
  EXPECT_EQ(j[5]["actor"]["key"], s.site->keys().agent_fpr);
  EXPECT_EQ(j[8]["data"]["target"], s.restored.path() + "/alice");
  EXPECT_EQ(j[8]["data"]["messages"], 3);
  EXPECT_EQ(j[8]["data"]["mailboxes"], nlohmann::json::array({"alice@example.ch"}));
  EXPECT_EQ(j[8]["actor"]["key"], s.site->keys().archive_fpr);

  RunResult v = s.verify();
  ASSERT_EQ(v.status, 0) << v.out << v.err;
  nlohmann::json r = v.json();
  EXPECT_EQ(r["entries"], 10);
  EXPECT_EQ(r["heads"], 4);  // the four backups; the restore's keyring cannot sign
  EXPECT_EQ(r["heads_signed"], 4);
  EXPECT_EQ(r["heads_time_stamped"], 0);
  EXPECT_EQ(r["vault_checked"], true);
  EXPECT_EQ(r["vault_objects"], 4);
  EXPECT_EQ(r["vault_entries"], 10);
  EXPECT_EQ(r["first_bad_entry"], 0);
  EXPECT_EQ(s.audit_objects().size(), 4u);

  // A failed backup (vault gone) is logged too, and a later good run seals it.
  fs::rename(s.site->vault_dir(), s.site->vault_dir() + ".away");
  RunResult failed = s.site->reduit({"backup"});
  EXPECT_EQ(failed.status, 4) << failed.err;
  fs::rename(s.site->vault_dir() + ".away", s.site->vault_dir());
  nlohmann::json after = s.site->reduit({"audit", "show", "--event", "backup"}).json();
  ASSERT_EQ(after.size(), 5u);
  EXPECT_EQ(after[4]["seq"], 11);
  EXPECT_EQ(after[4]["data"]["result"], "failed");
  EXPECT_EQ(after[4]["data"]["exit"], 4);
  s.site->backup();
  nlohmann::json r2 = s.verify().json();
  EXPECT_EQ(r2["ok"], true) << r2.dump(2);
  EXPECT_EQ(r2["entries"], 12);
  EXPECT_EQ(r2["vault_entries"], 12);

  // The mail host's catalog is lost: a rebuild takes the log from the vault, and
  // the chain continues with entry 13 (no spurious change events).
  fs::remove_all(s.site->path("state"));
  RunResult rebuilt = s.site->reduit({"catalog", "rebuild"});
  ASSERT_EQ(rebuilt.status, 0) << rebuilt.err;
  EXPECT_EQ(rebuilt.json()["audit_entries"], 12);
  s.site->backup();
  nlohmann::json all = s.site->reduit({"audit", "show"}).json();
  ASSERT_EQ(all.size(), 13u);
  EXPECT_EQ(all[12]["event"], "backup");
  nlohmann::json r3 = s.verify().json();
  EXPECT_EQ(r3["ok"], true) << r3.dump(2);
  EXPECT_EQ(r3["vault_entries"], 13);
}

TEST(Audit, VerifyNamesTheFirstBadEntryAfterTamperingWithTheCatalog) {
  AuditSite s;
  const std::string db = s.catalog(), pristine = s.catalog() + ".pristine";
  fs::copy_file(db, pristine);
  auto tamper = [&](const std::string& sql) {
    fs::copy_file(pristine, db, fs::copy_options::overwrite_existing);
    fs::remove(db + "-wal");
    fs::remove(db + "-shm");
    SQLite::Database d(db, SQLite::OPEN_READWRITE);
    d.exec(sql);
  };
  auto text_of = [&](int seq) {
    SQLite::Database d(pristine, SQLite::OPEN_READONLY);
    SQLite::Statement q(d, "SELECT text FROM audit_log WHERE seq=?");
    q.bind(1, seq);
    EXPECT_TRUE(q.executeStep());
    return q.getColumn(0).getString();
  };

  // Edited text, stored hash left alone.
  tamper("UPDATE audit_log SET text=replace(text, '\"messages\":6', '\"messages\":5') WHERE seq=7");
  expect_first_bad(s.verify({"--local"}), 7, "entry 7 was altered");

  // Edited text with its hash recomputed: the next entry's prev gives it away.
  std::string edited = text_of(7);
  edited.replace(edited.find("\"messages\":6"), 12, "\"messages\":5");
  {
    fs::copy_file(pristine, db, fs::copy_options::overwrite_existing);
    SQLite::Database d(db, SQLite::OPEN_READWRITE);
    SQLite::Statement q(d, "UPDATE audit_log SET text=?, hash=? WHERE seq=7");
    q.bind(1, edited);
    reduit::Hash h = reduit::sha256(edited);
    q.bind(2, h.data(), 32);
    q.exec();
  }
  expect_first_bad(s.verify({"--local"}), 7, "entry 7 was altered: entry 8 records its hash");

  // The last entry edited and rehashed: the signed head (and the vault copy) disagree.
  std::string last = text_of(10);
  last.replace(last.find("\"result\":\"ok\""), 13, "\"result\":\"no\"");
  {
    fs::copy_file(pristine, db, fs::copy_options::overwrite_existing);
    SQLite::Database d(db, SQLite::OPEN_READWRITE);
    SQLite::Statement q(d, "UPDATE audit_log SET text=?, hash=? WHERE seq=10");
    q.bind(1, last);
    reduit::Hash h = reduit::sha256(last);
    q.bind(2, h.data(), 32);
    q.exec();
  }
  expect_first_bad(s.verify({"--local"}), 10, "entry 10 differs from the signed head");
  expect_first_bad(s.verify(), 10, "entry 10 differs from the signed head");

  // A deleted entry.
  tamper("DELETE FROM audit_log WHERE seq=4");
  expect_first_bad(s.verify({"--local"}), 4, "entry 4 is missing");

  // Two entries swapped.
  tamper(
      "UPDATE audit_log SET seq=-1 WHERE seq=6; UPDATE audit_log SET seq=6 WHERE seq=7; "
      "UPDATE audit_log SET seq=7 WHERE seq=-1");
  expect_first_bad(s.verify({"--local"}), 6, "entry 6 records seq 7: entries were reordered");

  // Truncated: the last signed head still names entry 10.
  tamper("DELETE FROM audit_log WHERE seq>=9");
  expect_first_bad(s.verify({"--local"}), 9,
                   "the log was truncated: a signed head covers entry 10 but the log ends at entry 8");

  // Truncated together with its heads: the vault copy still has the entries, and an
  // anchor from an earlier report names the lost head.
  tamper("DELETE FROM audit_log WHERE seq>=9; DELETE FROM audit_heads WHERE seq>=9");
  RunResult local = s.verify({"--local"});
  EXPECT_EQ(local.status, 0) << "without the vault or an anchor a clean cut is invisible: " << local.out;
  expect_first_bad(s.verify(), 9, "the catalog's log was truncated: the vault copy holds entry 9 (restore)");
  expect_first_bad(s.verify({"--local", "--anchor", "10:" + reduit::to_hex(reduit::sha256(text_of(10)))}), 9,
                   "the anchor names entry 10 but the log ends at entry 8");
}

TEST(Audit, VerifyNamesTheFirstBadEntryAfterTamperingWithTheVaultCopy) {
  AuditSite s;
  std::vector<std::string> objs = s.audit_objects();
  ASSERT_EQ(objs.size(), 4u);  // entries 1–6, 7, 8, 9–10
  std::map<std::string, std::string> pristine;
  for (const auto& o : objs) pristine[o] = reduit::test::read_file(o);
  auto reset = [&] {
    for (const auto& [p, bytes] : pristine) reduit::test::write_file(p, bytes);
  };

  // One flipped byte in the object holding entry 7.
  std::string bytes = pristine[objs[1]];
  bytes[bytes.size() / 2] ^= 0x01;
  reduit::test::write_file(objs[1], bytes);
  expect_first_bad(s.verify(), 7, "entry 7 is missing");
  reset();

  // The object holding entry 8 deleted.
  fs::remove(objs[2]);
  expect_first_bad(s.verify(), 8, "entry 8 is missing");
  reset();

  // Two objects swapped (each name now disagrees with its bytes).
  reduit::test::write_file(objs[1], pristine[objs[2]]);
  reduit::test::write_file(objs[2], pristine[objs[1]]);
  expect_first_bad(s.verify(), 7, "entries 7–8 are missing");
  reset();

  // Truncated: the last object cut in half, or deleted.
  reduit::test::write_file(objs[3], pristine[objs[3]].substr(0, pristine[objs[3]].size() / 2));
  expect_first_bad(s.verify(), 9, "the vault copy ends at entry 8 but entries up to 10 were copied there");
  fs::remove(objs[3]);
  expect_first_bad(s.verify(), 9, "the vault copy ends at entry 8 but entries up to 10 were copied there");
  reset();
  EXPECT_EQ(s.verify().status, 0);
}

TEST(Audit, HeadsCarryRfc3161TokensThatOpensslVerifies) {
  reduit::test::LocalTsa tsa;
  TempDir mail;
  make_mail(mail.path());
  Site site({mail.path()}, "%d/%n", "", "",
            "[audit]\ntsa_url = \"" + tsa.url() + "\"\ntsa_ca_file = \"" + tsa.ca_file() + "\"\n");
  site.init();
  site.backup();
  site.backup();
  EXPECT_EQ(tsa.requests(), 2);

  RunResult heads = site.reduit({"audit", "show", "--heads"});
  ASSERT_EQ(heads.status, 0) << heads.err;
  nlohmann::json h = heads.json();
  ASSERT_EQ(h.size(), 2u);
  TempDir out;
  for (std::size_t i = 0; i < h.size(); ++i) {
    const std::string stmt = out.path() + "/head" + std::to_string(i) + ".txt",
                      tsr = out.path() + "/head" + std::to_string(i) + ".tsr";
    reduit::test::write_file(stmt, h[i]["statement"].get<std::string>());
    reduit::test::write_file(tsr, reduit::from_base64(h[i]["tsr"].get<std::string>()));
    EXPECT_EQ(h[i]["statement"].get<std::string>().rfind("reduit audit head v1\nvault ", 0), 0u);
    RunResult ok = reduit::test::run_command(
        {"/usr/bin/openssl", "ts", "-verify", "-data", stmt, "-in", tsr, "-CAfile", tsa.ca_file()});
    EXPECT_EQ(ok.status, 0) << ok.out << ok.err;
    EXPECT_EQ(ok.out, "Verification: OK\n");
    RunResult other = reduit::test::run_command(
        {"/usr/bin/openssl", "ts", "-verify", "-data", stmt, "-in", tsr, "-CAfile", tsa.other_ca_file()});
    EXPECT_NE(other.status, 0);
    // One changed byte of the statement: the token no longer covers it.
    std::string changed = h[i]["statement"].get<std::string>();
    changed[changed.size() - 3] ^= 0x01;
    reduit::test::write_file(stmt, changed);
    RunResult bad = reduit::test::run_command(
        {"/usr/bin/openssl", "ts", "-verify", "-data", stmt, "-in", tsr, "-CAfile", tsa.ca_file()});
    EXPECT_NE(bad.status, 0) << bad.out;
    // The detached signature on the same statement verifies with gpg.
    reduit::test::write_file(stmt, h[i]["statement"].get<std::string>());
    reduit::test::write_file(stmt + ".asc", h[i]["signature"].get<std::string>());
    RunResult gpg = reduit::test::run_command({"/usr/bin/gpg", "--homedir", site.keys().archive_home->path(),
                                               "--batch", "--verify", stmt + ".asc", stmt});
    EXPECT_EQ(gpg.status, 0) << gpg.err;
  }
  RunResult v = site.reduit({"audit", "verify"});
  ASSERT_EQ(v.status, 0) << v.out << v.err;
  EXPECT_EQ(v.json()["heads_time_stamped"], 2);

  // A TSA that does not answer: the backup completes with a warning (exit 1), the
  // head is signed but not stamped.
  Site down({mail.path()}, "%d/%n", "", "", "[audit]\ntsa_url = \"http://127.0.0.1:9/tsa\"\n");
  down.init();
  RunResult b = down.reduit({"backup"});
  EXPECT_EQ(b.status, 1) << b.err;
  ASSERT_EQ(b.json()["warnings"].size(), 1u);
  EXPECT_EQ(b.json()["warnings"][0].get<std::string>().rfind(
                "audit head not time-stamped (the next run stamps its head): time-stamping authority "
                "http://127.0.0.1:9/tsa did not answer: ",
                0),
            0u)
      << b.json()["warnings"][0];
  nlohmann::json dh = down.reduit({"audit", "show", "--heads"}).json();
  ASSERT_EQ(dh.size(), 1u);
  EXPECT_EQ(dh[0]["tsr"], "");
  EXPECT_NE(dh[0]["signature"], "");
}

// Several reduit processes append at once (checks started together, as a restore
// may run during a backup): every entry lands, seq has no gaps, the chain verifies.
TEST(Audit, ConcurrentCommandsAppendWithoutLosingOrBreakingEntries) {
  TempDir mail;
  make_mail(mail.path());
  Site site({mail.path()}, "%d/%n");
  site.init();
  site.backup();
  std::vector<pid_t> pids;
  TempDir out;
  for (int i = 0; i < 6; ++i) {
    pids.push_back(reduit::test::spawn_command(
        {reduit::test::reduit_binary(), "--config", site.config(), "--json", "check"},
        out.path() + "/out" + std::to_string(i), out.path() + "/err" + std::to_string(i)));
  }
  for (std::size_t i = 0; i < pids.size(); ++i) {
    int st = 0;
    ASSERT_EQ(waitpid(pids[i], &st, 0), pids[i]);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0)
        << reduit::test::read_file(out.path() + "/err" + std::to_string(i));
    EXPECT_EQ(reduit::test::read_file(out.path() + "/err" + std::to_string(i)), "");
  }
  nlohmann::json checks = site.reduit({"audit", "show", "--event", "check"}).json();
  EXPECT_EQ(checks.size(), 6u);
  nlohmann::json v = site.reduit({"audit", "verify"}).json();
  EXPECT_EQ(v["ok"], true) << v.dump(2);
  EXPECT_EQ(v["entries"], 12);  // 5 change events, the backup, 6 checks
}
