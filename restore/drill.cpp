#include "restore/drill.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>

#include "restore/imap_judge.hpp"
#include "restore/restore.hpp"
#include "restore/snapshots.hpp"
#include "vault/clock.hpp"
#include "vault/error.hpp"
#include "vault/hash.hpp"

namespace reduit {

namespace {

namespace fs = std::filesystem;

std::string join(const std::string& a, const std::string& b) {
  if (a.empty()) return b;
  if (b.empty()) return a;
  return a + "/" + b;
}

std::int64_t mtime_ns(const struct stat& st) {
  return static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

// SHA-256 of a file, read in 64 KiB pieces; nullopt when it cannot be read.
std::optional<Hash> hash_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  Sha256Stream h;
  std::vector<char> buf(1 << 16);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    if (in.gcount() > 0) h.update(buf.data(), static_cast<std::size_t>(in.gcount()));
  }
  if (in.bad()) return std::nullopt;
  return h.finish();
}

// The message file names a dovecot-uidlist lists ("<uid> [ext] :<name>" lines).
std::set<std::string> uidlist_names(const std::string& path) {
  std::set<std::string> out;
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);  // header: "3 V<uidvalidity> N<next uid> …"
  while (std::getline(in, line)) {
    std::size_t colon = line.find(" :");
    if (colon != std::string::npos) out.insert(line.substr(colon + 2));
  }
  return out;
}

std::string unique_of(const std::string& file_name) {
  std::size_t p = file_name.find(':');
  for (const char* sep : {"!2,", ";2,"}) {
    if (p == std::string::npos) p = file_name.find(sep);
  }
  return p == std::string::npos ? file_name : file_name.substr(0, p);
}

struct Folder {
  const SnapshotFolder* f;
  Tree tree;
};

// Checks the restored mailbox against the manifest without the restore code:
// every entry with its bytes, size, mtime and mode, and nothing else on disk.
void verify_restored(const std::string& dest, const std::vector<Folder>& folders, DrillResult& r) {
  std::set<std::string> expected;
  for (const Folder& fo : folders) {
    const std::string dir = join(dest, fo.f->name);
    struct stat st;
    if (lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      r.failures.push_back("folder '" + fo.f->name + "' is missing after the restore");
      continue;
    }
    std::set<std::string> messages;  // unique names of this folder's messages
    for (const TreeEntry& e : fo.tree.entries) {
      const std::string rel = join(fo.f->name, e.path);
      const std::string path = join(dest, rel);
      expected.insert(rel);
      if (lstat(path.c_str(), &st) != 0) {
        r.failures.push_back((e.kind == EntryKind::kMessage ? "message " : "file ") + rel +
                             " is missing after the restore");
        continue;
      }
      if (e.kind == EntryKind::kDir) {
        if (!S_ISDIR(st.st_mode)) r.failures.push_back(rel + " is not a directory after the restore");
        continue;
      }
      const char* what = e.kind == EntryKind::kMessage ? "message " : "file ";
      if (!S_ISREG(st.st_mode)) {
        r.failures.push_back(what + rel + " is not a regular file after the restore");
        continue;
      }
      if (static_cast<std::uint64_t>(st.st_size) != e.size) {
        r.failures.push_back(what + rel + ": " + std::to_string(st.st_size) + " bytes, the manifest says " +
                             std::to_string(e.size));
        continue;
      }
      std::optional<Hash> h = hash_file(path);
      if (!h || *h != e.sha256) {
        r.failures.push_back(what + rel + ": SHA-256 differs from the manifest");
        continue;
      }
      if (mtime_ns(st) != e.mtime_ns) r.failures.push_back(what + rel + ": mtime differs from the manifest");
      if ((st.st_mode & 07777) != e.mode)
        r.failures.push_back(what + rel + ": mode differs from the manifest");
      if (e.kind == EntryKind::kMessage) {
        ++r.messages;
        messages.insert(unique_of(e.path.substr(e.path.find('/') + 1)));
      } else {
        ++r.files;
      }
      r.bytes += e.size;
    }
    ++r.folders;
    // Control files agree with the messages: a message its uidlist does not name
    // gets a new UID from Dovecot (mail delivered but never seen by Dovecot).
    const std::string uidlist = join(dir, "dovecot-uidlist");
    if (!messages.empty() && lstat(uidlist.c_str(), &st) == 0) {
      std::set<std::string> listed;
      for (const std::string& n : uidlist_names(uidlist)) listed.insert(unique_of(n));
      std::size_t unlisted = 0;
      for (const std::string& m : messages) unlisted += !listed.count(m);
      if (unlisted) {
        r.warnings.push_back(std::to_string(unlisted) + " message(s) of folder '" + fo.f->name +
                             "' are not in its dovecot-uidlist (Dovecot gives them new UIDs)");
      }
    }
  }
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dest, ec); it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (ec) break;
    if (!it->is_regular_file()) continue;
    std::string rel = fs::relative(it->path(), dest).string();
    if (!expected.count(rel))
      r.failures.push_back("file " + rel + " is not in the manifest but was restored");
  }
}

// doveadm's view of the restored mailbox against the manifest (after
// verify_restored: Dovecot adds its own control files to the scratch copy).
void judge(const std::string& dest, const std::vector<Folder>& folders, DrillResult& r) {
  std::vector<JudgeFolder> want;
  for (const Folder& fo : folders) {
    JudgeFolder jf;
    jf.name = fo.f->name;
    for (const TreeEntry& e : fo.tree.entries)
      if (e.kind == EntryKind::kMessage) jf.messages.push_back({e.path, e.size});
    want.push_back(std::move(jf));
  }
  JudgeResult j = judge_with_doveadm(find_doveadm(), dest, want);
  r.judge_ran = j.ran;
  r.judge = j.ran ? "doveadm" : "";
  r.judge_reason = j.reason;
  r.judge_folders = j.folders;
  r.judge_messages = j.messages;
  for (const auto& f : j.failures) r.failures.push_back("IMAP judge: " + f);
}

// Verifies one pack: its SHA-256 name and signature (load_pack), and every blob's
// HMAC id. Throws Error on the first problem.
void verify_pack(Repository& repo, const Hash& id) {
  LoadedPack pack = repo.load_pack(id);
  for (const PackEntry& e : pack.entries) {
    std::string_view b = repo.blob_bytes(pack, e);
    if (repo.blob_id(b.data(), b.size()) != e.id) {
      throw Error(ErrorCode::kVerify, "blob " + to_hex(e.id).substr(0, 16) + " does not match its id");
    }
  }
}

// After a failed restore: the first message (in folder and path order) whose
// blobs live in a pack that fails verification or is gone, with the reason.
void diagnose(Repository& repo, const std::vector<Folder>& folders, DrillResult& r) {
  BlobIndex index(repo.load_indexes());
  std::map<Hash, std::uint64_t> present = repo.list_packs();
  std::map<Hash, std::string> verdict;  // pack → "" (good) or the problem
  for (const Folder& fo : folders) {
    for (const TreeEntry& e : fo.tree.entries) {
      if (e.kind == EntryKind::kDir) continue;
      for (const auto& blob : {e.header, e.body, e.blob}) {
        if (!blob) continue;
        auto locs = index.find(*blob);
        std::string problem;
        if (locs.empty()) {
          problem = "blob " + to_hex(*blob).substr(0, 16) + " is in no index of the vault";
        } else {
          const Hash& pack = locs.front().pack;
          if (!present.count(pack)) {
            problem = "pack " + to_hex(pack).substr(0, 16) + " is missing from the vault";
          } else {
            auto [it, fresh] = verdict.emplace(pack, "");
            if (fresh) {
              try {
                verify_pack(repo, pack);
              } catch (const Error& err) {
                it->second = "pack " + to_hex(pack).substr(0, 16) + ": " + err.what();
              }
            }
            problem = it->second;
          }
        }
        if (!problem.empty()) {
          r.failures.insert(r.failures.begin(), (e.kind == EntryKind::kMessage ? "message " : "file ") +
                                                    join(fo.f->name, e.path) +
                                                    " cannot be restored: " + problem);
          return;
        }
      }
    }
  }
}

std::uint64_t default_seed() {
  return static_cast<std::uint64_t>(std::chrono::system_clock::now().time_since_epoch().count()) ^
         (static_cast<std::uint64_t>(getpid()) << 32);
}

void record(Catalog& catalog, const DrillResult& r) {
  SQLite::Database& db = catalog.db();
  db.exec(
      "CREATE TABLE IF NOT EXISTS drills(time_ns INTEGER NOT NULL, seed INTEGER, snapshot TEXT, mailbox "
      "TEXT, "
      "passed INTEGER NOT NULL, folders INTEGER, messages INTEGER, files INTEGER, bytes INTEGER, "
      "packs_fetched INTEGER, bytes_fetched INTEGER, restore_seconds REAL, seconds REAL, "
      "packs_verified INTEGER, packs_total INTEGER, failures TEXT)");
  // Added later (additive migration): the IMAP judge; judge NULL = it did not run.
  std::set<std::string> columns;
  for (SQLite::Statement c(db, "PRAGMA table_info(drills)"); c.executeStep();)
    columns.insert(c.getColumn(1).getString());
  for (const char* col : {"judge TEXT", "judge_reason TEXT", "judge_messages INTEGER"}) {
    std::string name(col, std::strchr(col, ' '));
    if (!columns.count(name)) db.exec(std::string("ALTER TABLE drills ADD COLUMN ") + col);
  }
  SQLite::Statement q(
      db,
      "INSERT INTO drills(time_ns, seed, snapshot, mailbox, passed, folders, messages, files, "
      "bytes, packs_fetched, bytes_fetched, restore_seconds, seconds, packs_verified, "
      "packs_total, failures, judge, judge_reason, judge_messages) "
      "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
  q.bind(1, clock_now_ns());
  q.bind(2, static_cast<std::int64_t>(r.seed));
  q.bind(3, r.snapshot_id);
  q.bind(4, r.mailbox);
  q.bind(5, r.passed ? 1 : 0);
  q.bind(6, static_cast<std::int64_t>(r.folders));
  q.bind(7, static_cast<std::int64_t>(r.messages));
  q.bind(8, static_cast<std::int64_t>(r.files));
  q.bind(9, static_cast<std::int64_t>(r.bytes));
  q.bind(10, static_cast<std::int64_t>(r.packs_fetched));
  q.bind(11, static_cast<std::int64_t>(r.bytes_fetched));
  q.bind(12, r.restore_seconds);
  q.bind(13, r.seconds);
  q.bind(14, static_cast<std::int64_t>(r.packs_verified));
  q.bind(15, static_cast<std::int64_t>(r.packs_total));
  std::string failures;
  for (const auto& f : r.failures) failures += f + "\n";
  q.bind(16, failures);
  if (r.judge_ran) {
    q.bind(17, r.judge);
    q.bind(18);
    q.bind(19, static_cast<std::int64_t>(r.judge_messages));
  } else {
    q.bind(17);
    q.bind(18, r.judge_reason);
    q.bind(19);
  }
  q.exec();
}

}  // namespace

DrillResult run_drill(Repository& repo, Catalog* catalog, const DrillRequest& req) {
  const auto t0 = std::chrono::steady_clock::now();
  DrillResult r;
  r.seed = req.seed ? *req.seed : default_seed();
  std::mt19937_64 rng(r.seed);

  std::vector<SnapshotRef> all = list_snapshots(repo, nullptr, &r.warnings);
  if (all.empty()) throw Error(ErrorCode::kNotFound, "the vault holds no snapshot: nothing to drill");
  SnapshotRef snap;
  if (req.snapshot == "oldest")
    snap = all.front();
  else if (req.snapshot == "random")
    snap = all[rng() % all.size()];
  else
    snap = find_snapshot(all, req.snapshot);
  r.snapshot_id = snap.id;
  const SnapshotMailbox* mb = nullptr;
  if (req.mailbox.empty()) {
    if (snap.snap.mailboxes.empty()) {
      throw Error(ErrorCode::kNotFound, "snapshot " + snap.id.substr(0, 8) + " holds no mailbox");
    }
    mb = &snap.snap.mailboxes[rng() % snap.snap.mailboxes.size()];
  } else {
    mb = &find_mailbox(snap, req.mailbox);
  }
  r.mailbox = mb->name;

  // The manifest, read from the vault before the restore touches anything.
  BlobIndex index(repo.load_indexes());
  TreeLoader trees(repo, index);
  std::vector<Folder> folders;
  for (const SnapshotFolder& f : mb->folders) {
    try {
      folders.push_back({&f, trees.load(f.tree)});
    } catch (const Error& e) {
      if (e.code() != ErrorCode::kVerify && e.code() != ErrorCode::kNotFound) throw;
      r.failures.push_back("folder '" + f.name + "': its manifest cannot be read: " + e.what());
    }
  }

  std::string parent = req.scratch;
  if (parent.empty()) parent = std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp";
  std::string templ = parent + "/reduit-drill.XXXXXX";
  if (!mkdtemp(templ.data())) throw_errno("cannot create drill scratch space below " + parent, errno);
  const std::string scratch = templ;
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  } cleanup{scratch};

  if (r.failures.empty()) {
    RestoreRequest rr;
    rr.snapshot = snap.id;
    rr.mailbox = mb->name;
    rr.dest = scratch + "/mailbox";
    rr.owner = "none";
    rr.progress = req.progress;
    const auto tr = std::chrono::steady_clock::now();
    try {
      RestoreStats s = restore_mailbox(repo, rr);
      r.restore_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - tr).count();
      r.packs_fetched = s.packs_fetched;
      r.bytes_fetched = s.bytes_fetched;
      verify_restored(rr.dest, folders, r);
      if (r.failures.empty()) judge(rr.dest, folders, r);
    } catch (const Error& e) {
      if (e.code() == ErrorCode::kUsage || e.code() == ErrorCode::kKey ||
          e.code() == ErrorCode::kUnreachable || e.code() == ErrorCode::kIo) {
        throw;
      }
      r.failures.push_back(std::string("the restore failed: ") + e.what());
      diagnose(repo, folders, r);
    }
  }

  // A rolling share of every pack, continuing after the last one verified.
  std::map<Hash, std::uint64_t> packs = repo.list_packs();
  r.packs_total = packs.size();
  if (req.pack_share > 0 && !packs.empty()) {
    std::size_t n = (packs.size() + req.pack_share - 1) / req.pack_share;
    std::optional<std::string> cursor = catalog ? catalog->get_meta("drill_pack_cursor") : std::nullopt;
    auto it = packs.begin();
    if (cursor) {
      for (auto p = packs.begin(); p != packs.end(); ++p) {
        if (to_hex(p->first) > *cursor) {
          it = p;
          break;
        }
      }
      if (to_hex(packs.rbegin()->first) <= *cursor) it = packs.begin();
    }
    std::string last;
    for (std::size_t i = 0; i < n; ++i, ++it) {
      if (it == packs.end()) it = packs.begin();
      last = to_hex(it->first);
      try {
        verify_pack(repo, it->first);
        if (catalog) catalog->mark_pack_verified(it->first, clock_now_ns(), "drill");
      } catch (const Error& e) {
        if (e.code() == ErrorCode::kUnreachable || e.code() == ErrorCode::kKey) throw;
        r.failures.push_back("pack " + last.substr(0, 16) + " fails verification: " + e.what());
      }
      ++r.packs_verified;
    }
    if (catalog) catalog->set_meta("drill_pack_cursor", last);
  }

  r.passed = r.failures.empty();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (catalog) record(*catalog, r);
  return r;
}

}  // namespace reduit
