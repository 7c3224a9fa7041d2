// tests/support/retention_site.hpp — a mail site for retention tests: one mailbox
// (alice@example.ch: INBOX, .Private) whose messages the test delivers and removes,
// a policy file, the controllable clock (REDUIT_NOW), and ways to look into the
// vault (every pack decrypted) and the catalog's retention log.
#pragma once

#include <SQLiteCpp/SQLiteCpp.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include "retention/policy.hpp"
#include "support/harness.hpp"
#include "support/site.hpp"
#include "vault/clock.hpp"
#include "vault/format.hpp"
#include "vault/repository.hpp"

namespace fs = std::filesystem;
using reduit::test::RunResult;
using reduit::test::Site;
using reduit::test::TempDir;

namespace retention_test {

inline constexpr std::int64_t kDayNs = 86400LL * 1000000000;

inline std::string iso(std::int64_t ns) {
  std::time_t t = ns / 1000000000;
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

inline std::string rfc5322(std::int64_t ns) {
  std::time_t t = ns / 1000000000;
  char buf[48];
  std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S +0000", std::gmtime(&t));
  return buf;
}

inline std::int64_t at(const std::string& s) {
  return *reduit::parse_instant(s);
}

// Sets REDUIT_NOW for every reduit run until the next call.
inline void set_now(std::int64_t ns) {
  setenv("REDUIT_NOW", iso(ns).c_str(), 1);
}

struct Msg {
  std::string folder;  // "" = INBOX
  std::string name;    // file name in cur/
  std::string content;
  std::int64_t date_ns;
};

// One mailbox alice@example.ch under root/example.ch/alice with INBOX and .Private.
class Mailbox {
 public:
  explicit Mailbox(const std::string& root) : dir_(root + "/example.ch/alice") {
    for (const char* f : {"", "/.Private"}) {
      for (const char* d : {"cur", "new", "tmp"}) fs::create_directories(dir_ + f + "/" + d);
    }
    reduit::test::write_file(dir_ + "/.Private/maildirfolder", "");
  }
  // Delivers a message dated `date_ns`; `pad` bytes of incompressible body.
  Msg deliver(const std::string& folder, std::int64_t date_ns, std::size_t pad, std::mt19937_64& rng) {
    std::string uname = std::to_string(date_ns / 1000000000) + ".M" + std::to_string(++seq_) + "P1.sim";
    std::string body;
    static const char kChars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/";
    for (std::size_t i = 0; i < pad; ++i) body += kChars[rng() % 64];
    std::string content = "From: bob@example.org\nTo: alice@example.ch\nDate: " + rfc5322(date_ns) +
                          "\nMessage-ID: <" + uname + "@sim>\nSubject: message " + std::to_string(seq_) +
                          "\n\nBody of message " + std::to_string(seq_) + "\n" + body + "\n";
    Msg m{folder, uname + ":2,S", content, date_ns};
    std::string path = file(m);
    reduit::test::write_file(path, content);
    timespec ts[2] = {{date_ns / 1000000000, 0}, {date_ns / 1000000000, 0}};
    utimensat(AT_FDCWD, path.c_str(), ts, 0);
    return m;
  }
  void remove(const Msg& m) { fs::remove(file(m)); }
  const std::string& dir() const { return dir_; }
  std::string file(const Msg& m) const {
    return dir_ + (m.folder.empty() ? "" : "/" + m.folder) + "/cur/" + m.name;
  }

 private:
  std::string dir_;
  int seq_ = 0;
};

inline std::string sha_hex(const std::string& s) {
  return reduit::to_hex(reduit::sha256(s));
}

// SHA-256 of every message file restored below `dir`.
inline std::multiset<std::string> restored_messages(const std::string& dir) {
  std::multiset<std::string> out;
  if (!fs::exists(dir)) return out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    std::string parent = e.path().parent_path().filename();
    if (e.is_regular_file() && (parent == "cur" || parent == "new"))
      out.insert(sha_hex(reduit::test::read_file(e.path())));
  }
  return out;
}

inline std::uint64_t dir_bytes(const std::string& dir) {
  std::uint64_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) n += e.file_size();
  return n;
}

// Every blob id stored in any pack of the vault, by decrypting every pack with the
// archive key; also returns the vault's id key so expected ids can be computed.
struct VaultContents {
  std::set<reduit::Hash> blobs;
  std::size_t packs = 0;
  std::unique_ptr<reduit::Repository> repo;
};
inline VaultContents decrypt_every_pack(const Site& site) {
  VaultContents v;
  v.repo = std::make_unique<reduit::Repository>(reduit::open_transport(site.url(), {}),
                                                site.keys().archive_home->path());
  v.repo->load_config();
  for (const auto& [id, size] : v.repo->list_packs()) {
    reduit::LoadedPack p = v.repo->load_pack(id);
    for (const auto& e : p.entries) v.blobs.insert(v.repo->blob_bytes(p, e).empty() ? e.id : e.id);
    ++v.packs;
  }
  return v;
}

// The blob ids of a message (header block, body) under the vault's id key.
inline std::vector<reduit::Hash> message_blobs(const reduit::Repository& repo, const std::string& content) {
  std::size_t hl = reduit::header_block_length(content);
  std::vector<reduit::Hash> out{repo.blob_id(content.data(), hl)};
  if (hl < content.size()) out.push_back(repo.blob_id(content.data() + hl, content.size() - hl));
  return out;
}

struct Event {
  std::string action, object, klass, rule, detail;
};
inline std::vector<Event> events(const Site& site, const std::string& action) {
  SQLite::Database db(site.path("state/catalog.sqlite"), SQLite::OPEN_READONLY);
  SQLite::Statement q(db,
                      "SELECT action, object, class, rule, detail FROM retention_events WHERE action=? "
                      "ORDER BY rowid");
  q.bind(1, action);
  std::vector<Event> out;
  while (q.executeStep()) {
    out.push_back({q.getColumn(0).getString(), q.getColumn(1).getString(), q.getColumn(2).getString(),
                   q.getColumn(3).getString(), q.getColumn(4).getString()});
  }
  return out;
}

inline const char* kSimPolicy = R"(name = "simulation"
time_zone = "Europe/Zurich"
[snapshots]
keep-daily = 30
keep-weekly = 26
keep-monthly = 84
[[archive.class]]
name = "private"
mailboxes = ["*"]
folders = [".Private"]
minimum = "1y"
maximum = "2y"
basis = "date"
[[archive.class]]
name = "business"
folders = ["*"]
minimum = "10y"
basis = "financial-year-end"
[prune]
repack-below = 0.5
)";

class RetentionSite {
 public:
  /// `config_extra`: more top-level TOML for reduit.toml (a table such as [pack]).
  explicit RetentionSite(const std::string& policy_text = kSimPolicy, const std::string& config_extra = "") {
    policy_ = tmp_.path() + "/policy.toml";
    reduit::test::write_file(policy_, policy_text);
    site_ = std::make_unique<Site>(std::vector<std::string>{tmp_.path() + "/mail"}, "%d/%n", "", "",
                                   "policy = \"" + policy_ + "\"\n" + config_extra);
    mailbox_ = std::make_unique<Mailbox>(tmp_.path() + "/mail");
  }
  Site& site() { return *site_; }
  Mailbox& mailbox() { return *mailbox_; }
  RunResult run(const std::vector<std::string>& args) { return site_->reduit(args); }
  nlohmann::json ok(const std::vector<std::string>& args) {
    RunResult r = run(args);
    EXPECT_EQ(r.status, 0) << r.err << r.out;
    return r.status == 0 ? r.json() : nlohmann::json::object();
  }
  nlohmann::json prune() { return ok({"prune", "--archive-gnupghome", site_->keys().archive_home->path()}); }
  std::string archive_home() const { return site_->keys().archive_home->path(); }

 private:
  TempDir tmp_;
  std::string policy_;
  std::unique_ptr<Site> site_;
  std::unique_ptr<Mailbox> mailbox_;
};

}  // namespace retention_test
using namespace retention_test;
