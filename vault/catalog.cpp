#include "vault/catalog.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>

#include "vault/clock.hpp"
#include "vault/compress.hpp"
#include "vault/error.hpp"

namespace reduit {

namespace {

const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS packs(id BLOB PRIMARY KEY, size INTEGER NOT NULL, kind INTEGER NOT NULL,
  indexed INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blobs(id BLOB PRIMARY KEY, pack BLOB NOT NULL, type INTEGER NOT NULL,
  offset INTEGER NOT NULL, length INTEGER NOT NULL) WITHOUT ROWID;
DROP INDEX IF EXISTS blobs_pack;
CREATE TABLE IF NOT EXISTS pending_blobs(pack BLOB NOT NULL, id BLOB NOT NULL, type INTEGER NOT NULL,
  offset INTEGER NOT NULL, length INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS files(folder TEXT NOT NULL, key TEXT NOT NULL, path TEXT NOT NULL,
  dev INTEGER, ino INTEGER, size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, mode INTEGER,
  sha256 BLOB, header BLOB, body BLOB, blob BLOB, PRIMARY KEY(folder, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS indexes(id BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS folders(key TEXT PRIMARY KEY, stamp TEXT NOT NULL, tree BLOB NOT NULL,
  messages INTEGER, bytes INTEGER, files INTEGER) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots(id TEXT PRIMARY KEY, time_ns INTEGER NOT NULL, host TEXT,
  json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deltas(folder TEXT NOT NULL, key TEXT NOT NULL, sha256 BLOB NOT NULL,
  size INTEGER NOT NULL, head BLOB NOT NULL, depth INTEGER NOT NULL, base_signature BLOB NOT NULL,
  signature BLOB NOT NULL, chain BLOB NOT NULL, PRIMARY KEY(folder, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages(sha256 BLOB PRIMARY KEY, message_id TEXT, date TEXT,
  from_addr TEXT, to_addr TEXT, subject TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_runs(id INTEGER PRIMARY KEY, job TEXT NOT NULL, scheduled INTEGER NOT NULL,
  attempt INTEGER NOT NULL, started INTEGER NOT NULL, ended INTEGER NOT NULL, exit_code INTEGER NOT NULL,
  summary TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS job_runs_job ON job_runs(job, scheduled);
CREATE TABLE IF NOT EXISTS tree_messages(tree BLOB NOT NULL, path TEXT NOT NULL, sha256 BLOB NOT NULL,
  mtime_ns INTEGER NOT NULL, size INTEGER NOT NULL, PRIMARY KEY(tree, path)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS folder_bases(key TEXT PRIMARY KEY, tree BLOB NOT NULL, depth INTEGER NOT NULL,
  chain_bytes INTEGER NOT NULL, entries BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pack_verified(pack BLOB PRIMARY KEY, time_ns INTEGER NOT NULL, how TEXT NOT NULL)
  WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tree_cache(id BLOB PRIMARY KEY, json BLOB NOT NULL) WITHOUT ROWID;
)sql";

// The run's rows are appended to heaps (rowid order) and sorted once at commit:
// keyed inserts during the run were random B-tree writes.
const char* kStagingSchema = R"sql(
CREATE TEMP TABLE IF NOT EXISTS run_files(folder TEXT NOT NULL, key TEXT NOT NULL, path TEXT NOT NULL,
  dev INTEGER, ino INTEGER, size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, mode INTEGER,
  sha256 BLOB, header BLOB, body BLOB, blob BLOB);
CREATE TEMP TABLE IF NOT EXISTS run_folders(key TEXT PRIMARY KEY, stamp TEXT NOT NULL, tree BLOB NOT NULL,
  messages INTEGER, bytes INTEGER, files INTEGER) WITHOUT ROWID;
CREATE TEMP TABLE IF NOT EXISTS run_carried(key TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TEMP TABLE IF NOT EXISTS run_folder_bases(key TEXT PRIMARY KEY, tree BLOB NOT NULL,
  depth INTEGER NOT NULL, chain_bytes INTEGER NOT NULL, entries BLOB NOT NULL) WITHOUT ROWID;
CREATE TEMP TABLE IF NOT EXISTS run_deltas(folder TEXT NOT NULL, key TEXT NOT NULL, sha256 BLOB NOT NULL,
  size INTEGER NOT NULL, head BLOB NOT NULL, depth INTEGER NOT NULL, base_signature BLOB NOT NULL,
  signature BLOB NOT NULL, chain BLOB NOT NULL);
CREATE TEMP TABLE IF NOT EXISTS run_messages(sha256 BLOB NOT NULL, message_id TEXT, date TEXT,
  from_addr TEXT, to_addr TEXT, subject TEXT);
CREATE TEMP TABLE IF NOT EXISTS run_tree_messages(tree BLOB NOT NULL, path TEXT NOT NULL, sha256 BLOB NOT NULL,
  mtime_ns INTEGER NOT NULL, size INTEGER NOT NULL);
CREATE TEMP TABLE IF NOT EXISTS run_tree_cache(id BLOB NOT NULL, json BLOB NOT NULL);
)sql";

void bind_hash(SQLite::Statement& q, int i, const Hash& h) {
  q.bind(i, h.data(), 32);
}
void bind_opt(SQLite::Statement& q, int i, const std::optional<Hash>& h) {
  if (h)
    bind_hash(q, i, *h);
  else
    q.bind(i);
}
Hash col_hash(const SQLite::Column& c) {
  Hash h{};
  if (c.getBytes() == 32) std::memcpy(h.data(), c.getBlob(), 32);
  return h;
}
std::optional<Hash> col_opt(const SQLite::Column& c) {
  if (c.isNull() || c.getBytes() != 32) return std::nullopt;
  return col_hash(c);
}

template <typename F>
auto guarded(const std::string& path, const char* op, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const SQLite::Exception& e) {
    throw Error(ErrorCode::kIo, "catalog " + path + " (" + op + "): " + e.what());
  }
}

// One (tree, path, sha256, mtime_ns, size) row per message of `tree` through `q`.
void insert_tree_messages(SQLite::Statement& q, const Hash& tree_id, const Tree& tree) {
  for (const TreeEntry& e : tree.entries) {
    if (e.kind != EntryKind::kMessage) continue;
    q.reset();
    bind_hash(q, 1, tree_id);
    q.bind(2, e.path);
    bind_hash(q, 3, e.sha256);
    q.bind(4, e.mtime_ns);
    q.bind(5, static_cast<std::int64_t>(e.size));
    q.exec();
  }
}

}  // namespace

Catalog::Catalog(const std::string& state_dir) {
  std::error_code ec;
  std::filesystem::create_directories(state_dir, ec);
  if (ec) throw Error(ErrorCode::kIo, "cannot create state dir " + state_dir + ": " + ec.message());
  path_ = state_dir + "/catalog.sqlite";
  guarded(path_, __func__, [&] {
    db_ = std::make_unique<SQLite::Database>(path_, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    db_->setBusyTimeout(60000);
    // 16 KiB pages for a new catalog and for the run's TEMP tables (an existing
    // catalog keeps its own; page_size cannot change in WAL mode). Each page costs
    // SQLite a pwrite into the WAL, one more into the database at the checkpoint and
    // one per spill of a TEMP table. After a 100,000-message first run, commit_files()
    // took 1.1-1.6 s with 4 KiB pages and 0.8-1.1 s with 16 KiB (64 KiB: no better).
    // 8 MiB page caches (main and temp): blob ids are random keys, and a cache
    // smaller than the tables turns every lookup and insert into a pread/pwrite.
    db_->exec(
        "PRAGMA page_size=16384; PRAGMA temp.page_size=16384; "
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA temp_store=FILE; "
        "PRAGMA cache_size=-8192; PRAGMA temp.cache_size=-8192;");
    const bool had_pack_verified =
        db_->execAndGet("SELECT count(*) FROM sqlite_master WHERE name='pack_verified'").getInt() != 0;
    db_->exec(kSchema);
    if (!had_pack_verified) {
      // A catalog from before pack_verified: its packs count from now.
      SQLite::Statement q(*db_, "INSERT OR IGNORE INTO pack_verified SELECT id, ?, 'added' FROM packs");
      q.bind(1, clock_now_ns());
      q.exec();
    }
    db_->exec(kStagingSchema);
    q_has_blob_ = std::make_unique<SQLite::Statement>(*db_, "SELECT 1 FROM blobs WHERE id=?");
    q_find_file_ = std::make_unique<SQLite::Statement>(
        *db_,
        "SELECT path, dev, ino, size, mtime_ns, ctime_ns, mode, sha256, header, body, blob "
        "FROM main.files WHERE folder=? AND key=?");
    q_stage_file_ = std::make_unique<SQLite::Statement>(
        *db_, "INSERT INTO temp.run_files VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)");
    q_has_message_ = std::make_unique<SQLite::Statement>(*db_, "SELECT 1 FROM main.messages WHERE sha256=?");
    q_add_message_ =
        std::make_unique<SQLite::Statement>(*db_, "INSERT INTO temp.run_messages VALUES(?,?,?,?,?,?)");
    q_stage_tree_message_ =
        std::make_unique<SQLite::Statement>(*db_, "INSERT INTO temp.run_tree_messages VALUES(?,?,?,?,?)");
    q_stage_tree_blob_ = std::make_unique<SQLite::Statement>(*db_, "INSERT INTO temp.run_tree_cache VALUES(?,?)");
    return 0;
  });
}

Catalog::~Catalog() {
  try {
    staging_.reset();  // rolls back an unfinished staging transaction (temp table only)
  } catch (...) {
  }
}

std::optional<std::string> Catalog::get_meta(const std::string& key) {
  return guarded(path_, __func__, [&]() -> std::optional<std::string> {
    SQLite::Statement q(*db_, "SELECT value FROM meta WHERE key=?");
    q.bind(1, key);
    if (q.executeStep()) return q.getColumn(0).getString();
    return std::nullopt;
  });
}

void Catalog::set_meta(const std::string& key, const std::string& value) {
  guarded(path_, __func__, [&] {
    SQLite::Statement q(*db_, "INSERT OR REPLACE INTO meta VALUES(?,?)");
    q.bind(1, key);
    q.bind(2, value);
    q.exec();
    return 0;
  });
}

bool Catalog::has_blob(const Hash& id) {
  return guarded(path_, __func__, [&] {
    q_has_blob_->reset();
    bind_hash(*q_has_blob_, 1, id);
    bool found = q_has_blob_->executeStep();
    q_has_blob_->reset();  // an active statement would pin a read snapshot
    return found;
  });
}

std::optional<std::pair<Hash, PackEntry>> Catalog::find_indexed_blob(const Hash& id) {
  return guarded(path_, __func__, [&]() -> std::optional<std::pair<Hash, PackEntry>> {
    if (!q_find_indexed_blob_) {
      q_find_indexed_blob_ = std::make_unique<SQLite::Statement>(
          *db_,
          "SELECT b.pack, b.type, b.offset, b.length FROM blobs b JOIN packs p ON p.id = b.pack "
          "WHERE b.id=? AND p.indexed=1");
    }
    SQLite::Statement& q = *q_find_indexed_blob_;
    q.reset();
    bind_hash(q, 1, id);
    std::optional<std::pair<Hash, PackEntry>> out;
    if (q.executeStep()) {
      out.emplace(col_hash(q.getColumn(0)), PackEntry{static_cast<BlobType>(q.getColumn(1).getInt()), id,
                                                      static_cast<std::uint64_t>(q.getColumn(2).getInt64()),
                                                      static_cast<std::uint64_t>(q.getColumn(3).getInt64())});
    }
    q.reset();  // an active statement would pin a read snapshot
    return out;
  });
}

std::vector<IndexPack> Catalog::indexed_packs() {
  return guarded(path_, __func__, [&] {
    std::vector<IndexPack> out;
    SQLite::Statement q(*db_, "SELECT id, size, kind FROM packs WHERE indexed=1");
    while (q.executeStep()) {
      IndexPack p;
      p.id = col_hash(q.getColumn(0));
      p.size = static_cast<std::uint64_t>(q.getColumn(1).getInt64());
      p.kind = static_cast<PackKind>(q.getColumn(2).getInt());
      out.push_back(std::move(p));
    }
    return out;
  });
}

void Catalog::add_pack(const IndexPack& pack, bool indexed) {
  guarded(path_, __func__, [&] {
    SQLite::Transaction txn(*db_, SQLite::TransactionBehavior::IMMEDIATE);
    SQLite::Statement qp(*db_, "INSERT OR REPLACE INTO packs VALUES(?,?,?,?)");
    bind_hash(qp, 1, pack.id);
    qp.bind(2, static_cast<std::int64_t>(pack.size));
    qp.bind(3, static_cast<int>(pack.kind));
    qp.bind(4, indexed ? 1 : 0);
    qp.exec();
    SQLite::Statement qv(*db_, "INSERT OR IGNORE INTO pack_verified VALUES(?,?,'added')");
    bind_hash(qv, 1, pack.id);
    qv.bind(2, clock_now_ns());
    qv.exec();
    SQLite::Statement qb(*db_, "INSERT INTO pending_blobs VALUES(?,?,?,?,?)");
    for (const PackEntry& e : pack.blobs) {
      qb.reset();
      bind_hash(qb, 1, pack.id);
      bind_hash(qb, 2, e.id);
      qb.bind(3, static_cast<int>(e.type));
      qb.bind(4, static_cast<std::int64_t>(e.offset));
      qb.bind(5, static_cast<std::int64_t>(e.length));
      qb.exec();
    }
    txn.commit();
    return 0;
  });
}

template <typename F>
void Catalog::outside_staging(F&& f) {
  const bool staging = staging_ != nullptr;
  if (staging) staging_->commit();
  staging_.reset();
  f();
  if (staging) staging_ = std::make_unique<SQLite::Transaction>(*db_);
  staged_in_txn_ = 0;
}

std::size_t Catalog::merge_blobs() {
  return guarded(path_, __func__, [&] {
    std::size_t moved = 0;
    outside_staging([&] {
      SQLite::Transaction txn(*db_, SQLite::TransactionBehavior::IMMEDIATE);
      moved = static_cast<std::size_t>(
          db_->exec("INSERT OR REPLACE INTO blobs SELECT id, pack, type, offset, length FROM pending_blobs "
                    "ORDER BY id, rowid"));
      if (moved) db_->exec("DELETE FROM pending_blobs");
      txn.commit();
    });
    return moved;
  });
}

std::vector<Hash> Catalog::pack_ids() {
  return guarded(path_, __func__, [&] {
    std::vector<Hash> out;
    SQLite::Statement q(*db_, "SELECT id FROM packs");
    while (q.executeStep()) out.push_back(col_hash(q.getColumn(0)));
    return out;
  });
}

// `blobs` is keyed by blob id and has no index by pack. With one, the merge at the
// end of a 100,000-message first run took 0.53-0.68 s; without, 0.34-0.40 s. The
// two readers by pack below run only after an interrupted run, a prune or packs
// lost from the vault, and read what they want in one pass over `blobs` (0.47 s
// for 64 packs, 0.83 s to delete them, among 2,000,000 blobs).
namespace {
// Fills the TEMP table `table`(id BLOB PRIMARY KEY) with `ids`, emptied first: a set
// of packs or trees that one statement then joins against. No transaction of its
// own: the caller's, if any.
void fill_temp_ids(SQLite::Database& db, const std::string& table, const std::vector<Hash>& ids) {
  db.exec("CREATE TEMP TABLE IF NOT EXISTS " + table +
          "(id BLOB PRIMARY KEY) WITHOUT ROWID; DELETE FROM temp." + table + ";");
  SQLite::Statement q(db, "INSERT OR IGNORE INTO temp." + table + " VALUES(?)");
  for (const Hash& h : ids) {
    q.reset();
    bind_hash(q, 1, h);
    q.exec();
  }
}
}  // namespace

std::vector<IndexPack> Catalog::unindexed_packs(std::size_t limit) {
  merge_blobs();
  return guarded(path_, __func__, [&] {
    std::vector<IndexPack> out;
    std::map<Hash, std::size_t> at;  // pack id -> its place in `out`
    {
      SQLite::Statement q(*db_, "SELECT id, size, kind FROM packs WHERE indexed=0 ORDER BY id LIMIT ?");
      q.bind(1, static_cast<std::int64_t>(limit));
      while (q.executeStep()) {
        IndexPack p;
        p.id = col_hash(q.getColumn(0));
        p.size = static_cast<std::uint64_t>(q.getColumn(1).getInt64());
        p.kind = static_cast<PackKind>(q.getColumn(2).getInt());
        at.emplace(p.id, out.size());
        out.push_back(std::move(p));
      }
    }
    if (out.empty()) return out;
    std::vector<Hash> ids;
    for (const IndexPack& p : out) ids.push_back(p.id);
    fill_temp_ids(*db_, "want_packs", ids);
    SQLite::Statement qb(*db_,
                         "SELECT pack, id, type, offset, length FROM blobs "
                         "WHERE pack IN (SELECT id FROM temp.want_packs)");
    while (qb.executeStep()) {
      out[at.at(col_hash(qb.getColumn(0)))].blobs.push_back(
          PackEntry{static_cast<BlobType>(qb.getColumn(2).getInt()), col_hash(qb.getColumn(1)),
                    static_cast<std::uint64_t>(qb.getColumn(3).getInt64()),
                    static_cast<std::uint64_t>(qb.getColumn(4).getInt64())});
    }
    qb.reset();
    for (IndexPack& p : out) {
      std::sort(p.blobs.begin(), p.blobs.end(),
                [](const PackEntry& a, const PackEntry& b) { return a.offset < b.offset; });
    }
    return out;
  });
}

void Catalog::record_index(const Hash& index, const std::vector<Hash>& packs) {
  guarded(path_, __func__, [&] {
    outside_staging([&] {
      SQLite::Transaction txn(*db_);
      SQLite::Statement add(*db_, "INSERT OR IGNORE INTO indexes VALUES(?)");
      bind_hash(add, 1, index);
      add.exec();
      SQLite::Statement q(*db_, "UPDATE packs SET indexed=1 WHERE id=?");
      for (const Hash& h : packs) {
        q.reset();
        bind_hash(q, 1, h);
        q.exec();
      }
      txn.commit();
    });
    return 0;
  });
}

std::size_t Catalog::forget_packs(const std::vector<Hash>& packs) {
  if (packs.empty()) return 0;
  return guarded(path_, __func__, [&] {
    SQLite::Transaction txn(*db_);
    fill_temp_ids(*db_, "want_packs", packs);
    db_->exec(
        "DELETE FROM blobs WHERE pack IN (SELECT id FROM temp.want_packs); "
        "DELETE FROM pending_blobs WHERE pack IN (SELECT id FROM temp.want_packs); "
        "DELETE FROM packs WHERE id IN (SELECT id FROM temp.want_packs);");
    db_->exec(
        "DELETE FROM main.files; DELETE FROM main.folders; DELETE FROM main.deltas; DELETE FROM "
        "main.folder_bases;");
    txn.commit();
    return packs.size();
  });
}

void Catalog::add_index(const Hash& id) {
  guarded(path_, __func__, [&] {
    SQLite::Statement q(*db_, "INSERT OR IGNORE INTO indexes VALUES(?)");
    bind_hash(q, 1, id);
    q.exec();
    return 0;
  });
}

std::vector<Hash> Catalog::index_ids() {
  return guarded(path_, __func__, [&] {
    std::vector<Hash> out;
    SQLite::Statement q(*db_, "SELECT id FROM indexes");
    while (q.executeStep()) out.push_back(col_hash(q.getColumn(0)));
    return out;
  });
}

void Catalog::reindex_all(const std::vector<Hash>& missing) {
  guarded(path_, __func__, [&] {
    SQLite::Transaction txn(*db_);
    SQLite::Statement q(*db_, "DELETE FROM indexes WHERE id=?");
    for (const Hash& h : missing) {
      q.reset();
      bind_hash(q, 1, h);
      q.exec();
    }
    db_->exec("UPDATE packs SET indexed=0");
    txn.commit();
    return 0;
  });
}

std::optional<CachedFile> Catalog::find_file(const std::string& folder_key, const std::string& key) {
  return guarded(path_, __func__, [&]() -> std::optional<CachedFile> {
    q_find_file_->reset();
    q_find_file_->bind(1, folder_key);
    q_find_file_->bind(2, key);
    if (!q_find_file_->executeStep()) return std::nullopt;
    CachedFile f;
    f.path = q_find_file_->getColumn(0).getString();
    f.dev = static_cast<std::uint64_t>(q_find_file_->getColumn(1).getInt64());
    f.ino = static_cast<std::uint64_t>(q_find_file_->getColumn(2).getInt64());
    f.size = static_cast<std::uint64_t>(q_find_file_->getColumn(3).getInt64());
    f.mtime_ns = q_find_file_->getColumn(4).getInt64();
    f.ctime_ns = q_find_file_->getColumn(5).getInt64();
    f.mode = static_cast<std::uint32_t>(q_find_file_->getColumn(6).getInt());
    f.sha256 = col_hash(q_find_file_->getColumn(7));
    f.header = col_opt(q_find_file_->getColumn(8));
    f.body = col_opt(q_find_file_->getColumn(9));
    f.blob = col_opt(q_find_file_->getColumn(10));
    q_find_file_->reset();
    return f;
  });
}

void Catalog::begin_staging() {
  guarded(path_, __func__, [&] {
    db_->exec(
        "DELETE FROM temp.run_files; DELETE FROM temp.run_messages; DELETE FROM temp.run_folders; "
        "DELETE FROM temp.run_carried; DELETE FROM temp.run_tree_messages; DELETE FROM temp.run_deltas; "
        "DELETE FROM temp.run_folder_bases; DELETE FROM temp.run_tree_cache;");
    staging_ = std::make_unique<SQLite::Transaction>(*db_);
    staged_in_txn_ = 0;
    return 0;
  });
}

void Catalog::flush_staging() {
  guarded(path_, __func__, [&] {
    if (staging_) {
      staging_->commit();
      staging_ = std::make_unique<SQLite::Transaction>(*db_);
      staged_in_txn_ = 0;
    }
    return 0;
  });
}

void Catalog::end_staging() {
  guarded(path_, __func__, [&] {
    if (staging_) {
      staging_->commit();
      staging_.reset();
    }
    return 0;
  });
}

void Catalog::stage_file(const std::string& folder_key, const std::string& key, const CachedFile& f) {
  guarded(path_, __func__, [&] {
    auto& q = *q_stage_file_;
    q.reset();
    q.bind(1, folder_key);
    q.bind(2, key);
    q.bind(3, f.path);
    q.bind(4, static_cast<std::int64_t>(f.dev));
    q.bind(5, static_cast<std::int64_t>(f.ino));
    q.bind(6, static_cast<std::int64_t>(f.size));
    q.bind(7, f.mtime_ns);
    q.bind(8, f.ctime_ns);
    q.bind(9, static_cast<int>(f.mode));
    bind_hash(q, 10, f.sha256);
    bind_opt(q, 11, f.header);
    bind_opt(q, 12, f.body);
    bind_opt(q, 13, f.blob);
    q.exec();
    return 0;
  });
  if (++staged_in_txn_ >= 4096) flush_staging();
}

void Catalog::commit_files() {
  guarded(path_, __func__, [&] {
    if (staging_) {
      staging_->commit();
      staging_.reset();
    }
    SQLite::Transaction txn(*db_);
    db_->exec("DELETE FROM main.files WHERE folder NOT IN (SELECT key FROM temp.run_carried)");
    // rowid breaks ties: a file staged twice in one run keeps its last row.
    db_->exec("INSERT OR REPLACE INTO main.files SELECT * FROM temp.run_files ORDER BY folder, key, rowid");
    db_->exec("DELETE FROM main.folders WHERE key NOT IN (SELECT key FROM temp.run_carried)");
    db_->exec("INSERT OR REPLACE INTO main.folders SELECT * FROM temp.run_folders");
    db_->exec("DELETE FROM main.folder_bases WHERE key NOT IN (SELECT key FROM temp.run_carried)");
    db_->exec("INSERT OR REPLACE INTO main.folder_bases SELECT * FROM temp.run_folder_bases");
    db_->exec("DELETE FROM main.deltas WHERE folder NOT IN (SELECT key FROM temp.run_carried)");
    db_->exec("INSERT OR REPLACE INTO main.deltas SELECT * FROM temp.run_deltas ORDER BY folder, key, rowid");
    db_->exec("INSERT OR IGNORE INTO main.messages SELECT * FROM temp.run_messages ORDER BY sha256");
    db_->exec(
        "INSERT OR IGNORE INTO main.tree_messages SELECT * FROM temp.run_tree_messages ORDER BY tree, path");
    db_->exec("INSERT OR IGNORE INTO main.tree_cache SELECT * FROM temp.run_tree_cache ORDER BY id");
    txn.commit();
    // The staged rows stay in the TEMP tables: begin_staging() empties them, and
    // closing the connection drops them with their file. Emptying them here walked
    // every page the run had spilled (0.35 s after a 100,000-message first run).
    return 0;
  });
}

std::optional<Catalog::CachedFolder> Catalog::find_folder(const std::string& key) {
  return guarded(path_, __func__, [&]() -> std::optional<CachedFolder> {
    SQLite::Statement q(*db_, "SELECT stamp, tree, messages, bytes, files FROM main.folders WHERE key=?");
    q.bind(1, key);
    if (!q.executeStep()) return std::nullopt;
    CachedFolder f;
    f.stamp = q.getColumn(0).getString();
    f.tree = col_hash(q.getColumn(1));
    f.messages = static_cast<std::uint64_t>(q.getColumn(2).getInt64());
    f.bytes = static_cast<std::uint64_t>(q.getColumn(3).getInt64());
    f.files = static_cast<std::uint64_t>(q.getColumn(4).getInt64());
    return f;
  });
}

void Catalog::stage_folder(const std::string& key, const CachedFolder& f) {
  guarded(path_, __func__, [&] {
    SQLite::Statement q(*db_, "INSERT OR REPLACE INTO temp.run_folders VALUES(?,?,?,?,?,?)");
    q.bind(1, key);
    q.bind(2, f.stamp);
    bind_hash(q, 3, f.tree);
    q.bind(4, static_cast<std::int64_t>(f.messages));
    q.bind(5, static_cast<std::int64_t>(f.bytes));
    q.bind(6, static_cast<std::int64_t>(f.files));
    q.exec();
    return 0;
  });
}

namespace {

// The catalog's form of a folder's entries (local state, not the vault format):
// per entry kind u8, presence flags u8, mode u32, mtime i64, size u64, sha256, the
// present ids (header, body, blob, delta, signature), uid and gid u32, then path,
// link (u32 length + bytes) and chain (u32 count + ids); little-endian, then zstd-1.
// JSON would cost a parse of every entry of every changed folder on each run.
enum : std::uint8_t {
  kHasHeader = 1,
  kHasBody = 2,
  kHasBlob = 4,
  kHasDelta = 8,
  kHasSignature = 16,
  kHasOwner = 32
};

template <typename T>
void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

Bytes encode_entries(const std::vector<TreeEntry>& entries) {
  std::string out;
  out.reserve(entries.size() * 200);
  for (const TreeEntry& e : entries) {
    put<std::uint8_t>(out, static_cast<std::uint8_t>(e.kind));
    std::uint8_t flags = (e.header ? kHasHeader : 0) | (e.body ? kHasBody : 0) | (e.blob ? kHasBlob : 0) |
                         (e.delta ? kHasDelta : 0) | (e.signature ? kHasSignature : 0) |
                         (e.uid && e.gid ? kHasOwner : 0);
    put(out, flags);
    put(out, e.mode);
    put(out, e.mtime_ns);
    put(out, e.size);
    out.append(reinterpret_cast<const char*>(e.sha256.data()), 32);
    for (const std::optional<Hash>* h : {&e.header, &e.body, &e.blob, &e.delta, &e.signature}) {
      if (*h) out.append(reinterpret_cast<const char*>((*h)->data()), 32);
    }
    if (flags & kHasOwner) {
      put(out, *e.uid);
      put(out, *e.gid);
    }
    put(out, static_cast<std::uint32_t>(e.path.size()));
    out += e.path;
    put(out, static_cast<std::uint32_t>(e.link.size()));
    out += e.link;
    put(out, static_cast<std::uint32_t>(e.chain.size()));
    for (const Hash& h : e.chain) out.append(reinterpret_cast<const char*>(h.data()), 32);
  }
  return zstd_compress(Bytes(out.begin(), out.end()), 1);
}

// nullopt when malformed (a damaged catalog costs a full tree, nothing more).
std::optional<std::vector<TreeEntry>> decode_entries(const Bytes& frame) {
  Bytes b;
  try {
    b = zstd_decompress(frame);
  } catch (const Error&) {
    return std::nullopt;
  }
  std::size_t pos = 0;
  auto take = [&](void* dst, std::size_t n) {
    if (b.size() - pos < n) return false;
    std::memcpy(dst, b.data() + pos, n);
    pos += n;
    return true;
  };
  auto take_string = [&](std::string& s) {
    std::uint32_t n = 0;
    if (!take(&n, 4) || b.size() - pos < n) return false;
    s.assign(reinterpret_cast<const char*>(b.data()) + pos, n);
    pos += n;
    return true;
  };
  std::vector<TreeEntry> out;
  while (pos < b.size()) {
    TreeEntry e;
    std::uint8_t kind = 0, flags = 0;
    if (!take(&kind, 1) || kind > static_cast<std::uint8_t>(EntryKind::kDir) || !take(&flags, 1) ||
        !take(&e.mode, 4) || !take(&e.mtime_ns, 8) || !take(&e.size, 8) || !take(e.sha256.data(), 32))
      return std::nullopt;
    e.kind = static_cast<EntryKind>(kind);
    const std::pair<std::uint8_t, std::optional<Hash>*> ids[] = {{kHasHeader, &e.header},
                                                                 {kHasBody, &e.body},
                                                                 {kHasBlob, &e.blob},
                                                                 {kHasDelta, &e.delta},
                                                                 {kHasSignature, &e.signature}};
    for (const auto& [bit, h] : ids) {
      if (!(flags & bit)) continue;
      Hash v;
      if (!take(v.data(), 32)) return std::nullopt;
      *h = v;
    }
    if (flags & kHasOwner) {
      std::uint32_t uid = 0, gid = 0;
      if (!take(&uid, 4) || !take(&gid, 4)) return std::nullopt;
      e.uid = uid;
      e.gid = gid;
    }
    std::uint32_t chain = 0;
    if (!take_string(e.path) || !take_string(e.link) || !take(&chain, 4) || chain > (b.size() - pos) / 32)
      return std::nullopt;
    e.chain.resize(chain);
    for (Hash& h : e.chain) take(h.data(), 32);
    if (!out.empty() && !(out.back().path < e.path)) return std::nullopt;
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace

std::optional<Catalog::FolderTree> Catalog::find_folder_tree(const std::string& key) {
  return guarded(path_, __func__, [&]() -> std::optional<FolderTree> {
    SQLite::Statement q(*db_, "SELECT tree, depth, chain_bytes, entries FROM main.folder_bases WHERE key=?");
    q.bind(1, key);
    if (!q.executeStep()) return std::nullopt;
    FolderTree t;
    t.tree = col_hash(q.getColumn(0));
    t.depth = static_cast<std::uint32_t>(q.getColumn(1).getInt64());
    t.chain_bytes = static_cast<std::uint64_t>(q.getColumn(2).getInt64());
    const SQLite::Column c = q.getColumn(3);
    const auto* p = static_cast<const std::uint8_t*>(c.getBlob());
    std::optional<std::vector<TreeEntry>> entries = decode_entries(Bytes(p, p + c.getBytes()));
    if (!entries) return std::nullopt;
    t.entries = std::move(*entries);
    return t;
  });
}

void Catalog::stage_folder_tree(const std::string& key, const FolderTree& t) {
  const Bytes entries = encode_entries(t.entries);
  guarded(path_, __func__, [&] {
    SQLite::Statement q(*db_, "INSERT OR REPLACE INTO temp.run_folder_bases VALUES(?,?,?,?,?)");
    q.bind(1, key);
    bind_hash(q, 2, t.tree);
    q.bind(3, static_cast<std::int64_t>(t.depth));
    q.bind(4, static_cast<std::int64_t>(t.chain_bytes));
    q.bind(5, entries.data(), static_cast<int>(entries.size()));
    q.exec();
    return 0;
  });
}

void Catalog::carry_folder(const std::string& key) {
  guarded(path_, __func__, [&] {
    SQLite::Statement q(*db_, "INSERT OR IGNORE INTO temp.run_carried VALUES(?)");
    q.bind(1, key);
    q.exec();
    return 0;
  });
}

void Catalog::add_snapshot(const std::string& id, const Snapshot& s, const std::string& json) {
  guarded(path_, __func__, [&] {
    SQLite::Statement q(*db_, "INSERT OR REPLACE INTO snapshots VALUES(?,?,?,?)");
    q.bind(1, id);
    q.bind(2, s.time_ns);
    q.bind(3, s.host);
    q.bind(4, json);
    q.exec();
    return 0;
  });
}

std::vector<std::pair<std::string, std::string>> Catalog::snapshot_rows() {
  return guarded(path_, __func__, [&] {
    std::vector<std::pair<std::string, std::string>> out;
    SQLite::Statement q(*db_, "SELECT id, json FROM snapshots ORDER BY time_ns, id");
    while (q.executeStep()) out.emplace_back(q.getColumn(0).getString(), q.getColumn(1).getString());
    return out;
  });
}

void Catalog::remove_snapshots_not_in(const std::vector<std::string>& ids) {
  guarded(path_, __func__, [&] {
    SQLite::Transaction txn(*db_);
    db_->exec("CREATE TEMP TABLE IF NOT EXISTS keep_ids(id TEXT PRIMARY KEY)");
    db_->exec("DELETE FROM temp.keep_ids");
    SQLite::Statement q(*db_, "INSERT OR IGNORE INTO temp.keep_ids VALUES(?)");
    for (const auto& id : ids) {
      q.reset();
      q.bind(1, id);
      q.exec();
    }
    db_->exec("DELETE FROM snapshots WHERE id NOT IN (SELECT id FROM temp.keep_ids)");
    txn.commit();
    return 0;
  });
}

std::optional<DeltaState> Catalog::find_delta(const std::string& folder_key, const std::string& key) {
  return guarded(path_, __func__, [&]() -> std::optional<DeltaState> {
    SQLite::Statement q(*db_,
                        "SELECT sha256, size, head, depth, base_signature, signature, chain FROM main.deltas "
                        "WHERE folder=? AND key=?");
    q.bind(1, folder_key);
    q.bind(2, key);
    if (!q.executeStep()) return std::nullopt;
    DeltaState d;
    d.sha256 = col_hash(q.getColumn(0));
    d.size = static_cast<std::uint64_t>(q.getColumn(1).getInt64());
    d.head = col_hash(q.getColumn(2));
    d.depth = static_cast<std::uint32_t>(q.getColumn(3).getInt64());
    d.base_signature = col_hash(q.getColumn(4));
    const SQLite::Column sig = q.getColumn(5);
    d.signature.assign(static_cast<const char*>(sig.getBlob()), static_cast<std::size_t>(sig.getBytes()));
    const SQLite::Column chain = q.getColumn(6);
    const auto* c = static_cast<const std::uint8_t*>(chain.getBlob());
    for (int off = 0; off + 32 <= chain.getBytes(); off += 32) {
      d.chain.emplace_back();
      std::memcpy(d.chain.back().data(), c + off, 32);
    }
    return d;
  });
}

void Catalog::stage_delta(const std::string& folder_key, const std::string& key, const DeltaState& d) {
  guarded(path_, __func__, [&] {
    SQLite::Statement q(*db_, "INSERT INTO temp.run_deltas VALUES(?,?,?,?,?,?,?,?,?)");
    q.bind(1, folder_key);
    q.bind(2, key);
    bind_hash(q, 3, d.sha256);
    q.bind(4, static_cast<std::int64_t>(d.size));
    bind_hash(q, 5, d.head);
    q.bind(6, static_cast<std::int64_t>(d.depth));
    bind_hash(q, 7, d.base_signature);
    q.bind(8, d.signature.data(), static_cast<int>(d.signature.size()));
    std::string chain;
    for (const Hash& h : d.chain) chain.append(reinterpret_cast<const char*>(h.data()), 32);
    q.bind(9, chain.data(), static_cast<int>(chain.size()));
    q.exec();
    return 0;
  });
}

bool Catalog::has_deltas() {
  return guarded(path_, __func__, [&] {
    SQLite::Statement q(*db_, "SELECT 1 FROM main.deltas LIMIT 1");
    return q.executeStep();
  });
}

bool Catalog::has_message(const Hash& sha) {
  return guarded(path_, __func__, [&] {
    q_has_message_->reset();
    bind_hash(*q_has_message_, 1, sha);
    bool found = q_has_message_->executeStep();
    q_has_message_->reset();
    return found;
  });
}

void Catalog::add_message(const Hash& sha, const std::string& message_id, const std::string& date,
                          const std::string& from, const std::string& to, const std::string& subject) {
  guarded(path_, __func__, [&] {
    auto& q = *q_add_message_;
    q.reset();
    bind_hash(q, 1, sha);
    q.bind(2, message_id);
    q.bind(3, date);
    q.bind(4, from);
    q.bind(5, to);
    q.bind(6, subject);
    q.exec();
    return 0;
  });
}

bool Catalog::has_tree_messages(const Hash& tree) {
  return guarded(path_, __func__, [&] {
    SQLite::Statement q(*db_, "SELECT 1 FROM main.tree_messages WHERE tree=? LIMIT 1");
    bind_hash(q, 1, tree);
    return q.executeStep();
  });
}

void Catalog::stage_tree_messages(const Hash& tree_id, const Tree& tree) {
  guarded(path_, __func__, [&] {
    auto& q = *q_stage_tree_message_;
    insert_tree_messages(q, tree_id, tree);
    return 0;
  });
}

void Catalog::stage_tree_blob(const Hash& tree_id, std::string_view text) {
  guarded(path_, __func__, [&] {
    auto& q = *q_stage_tree_blob_;
    q.reset();
    bind_hash(q, 1, tree_id);
    q.bind(2, text.data(), static_cast<int>(text.size()));
    q.exec();
    return 0;
  });
}

std::optional<Bytes> Catalog::cached_tree(const Hash& tree_id) {
  return guarded(path_, __func__, [&]() -> std::optional<Bytes> {
    SQLite::Statement q(*db_, "SELECT json FROM main.tree_cache WHERE id=?");
    bind_hash(q, 1, tree_id);
    if (!q.executeStep()) return std::nullopt;
    const SQLite::Column c = q.getColumn(0);
    const auto* p = static_cast<const std::uint8_t*>(c.getBlob());
    return Bytes(p, p + c.getBytes());
  });
}

void Catalog::add_tree_messages(const Hash& tree_id, const Tree& tree) {
  guarded(path_, __func__, [&] {
    SQLite::Transaction txn(*db_);
    SQLite::Statement q(*db_, "INSERT OR IGNORE INTO main.tree_messages VALUES(?,?,?,?,?)");
    insert_tree_messages(q, tree_id, tree);
    txn.commit();
    return 0;
  });
}

std::vector<Hash> Catalog::messages_with_id(const std::string& message_id) {
  return guarded(path_, __func__, [&] {
    std::string bare = message_id;
    if (bare.size() >= 2 && bare.front() == '<' && bare.back() == '>') bare = bare.substr(1, bare.size() - 2);
    std::vector<Hash> out;
    SQLite::Statement q(*db_, "SELECT sha256 FROM main.messages WHERE message_id=? OR message_id=?");
    q.bind(1, bare);
    q.bind(2, "<" + bare + ">");
    while (q.executeStep()) out.push_back(col_hash(q.getColumn(0)));
    return out;
  });
}

namespace {
// A LIKE pattern matching `s` anywhere ('\\' escapes % and _).
std::string like_anywhere(const std::string& s) {
  std::string out = "%";
  for (char c : s) {
    if (c == '%' || c == '_' || c == '\\') out += '\\';
    out += c;
  }
  return out + "%";
}
}  // namespace

void Catalog::find_messages(const MessageFilter& filter, const std::vector<Hash>& trees,
                            const std::function<void(const MessageRow&)>& row) {
  guarded(path_, __func__, [&] {
    {
      SQLite::Transaction txn(*db_);
      fill_temp_ids(*db_, "want_tree_ids", trees);
      txn.commit();
    }
    std::string bare = filter.message_id;
    if (bare.size() >= 2 && bare.front() == '<' && bare.back() == '>') bare = bare.substr(1, bare.size() - 2);
    SQLite::Statement q(
        *db_,
        "SELECT t.tree, t.path, t.sha256, t.mtime_ns, t.size, m.sha256 IS NOT NULL, m.message_id, m.date, "
        "m.from_addr, m.to_addr, m.subject FROM temp.want_tree_ids w JOIN main.tree_messages t ON t.tree = "
        "w.id "
        "LEFT JOIN main.messages m ON m.sha256 = t.sha256 "
        "WHERE (?1 = '' OR m.message_id = ?1 OR m.message_id = '<' || ?1 || '>') "
        "AND (?2 = '' OR m.from_addr LIKE ?2 ESCAPE '\\') AND (?3 = '' OR m.to_addr LIKE ?3 ESCAPE '\\') "
        "AND (?4 = '' OR m.subject LIKE ?4 ESCAPE '\\')");
    q.bind(1, bare);
    q.bind(2, filter.from.empty() ? "" : like_anywhere(filter.from));
    q.bind(3, filter.to.empty() ? "" : like_anywhere(filter.to));
    q.bind(4, filter.subject.empty() ? "" : like_anywhere(filter.subject));
    MessageRow r;
    while (q.executeStep()) {
      r.tree = col_hash(q.getColumn(0));
      r.path = q.getColumn(1).getString();
      r.sha256 = col_hash(q.getColumn(2));
      r.mtime_ns = q.getColumn(3).getInt64();
      r.size = static_cast<std::uint64_t>(q.getColumn(4).getInt64());
      r.has_summary = q.getColumn(5).getInt() != 0;
      r.message_id = q.getColumn(6).getString();
      r.date = q.getColumn(7).getString();
      r.from = q.getColumn(8).getString();
      r.to = q.getColumn(9).getString();
      r.subject = q.getColumn(10).getString();
      row(r);
    }
    return 0;
  });
}

void Catalog::add_job_run(const JobRun& r) {
  guarded(path_, __func__, [&] {
    SQLite::Statement q(*db_,
                        "INSERT INTO job_runs(job, scheduled, attempt, started, ended, exit_code, summary) "
                        "VALUES(?, ?, ?, ?, ?, ?, ?)");
    q.bind(1, r.job);
    q.bind(2, static_cast<std::int64_t>(r.scheduled));
    q.bind(3, r.attempt);
    q.bind(4, static_cast<std::int64_t>(r.started));
    q.bind(5, static_cast<std::int64_t>(r.ended));
    q.bind(6, r.exit_code);
    q.bind(7, r.summary);
    q.exec();
    return 0;
  });
}

std::vector<JobRun> Catalog::job_runs(const std::string& job, std::size_t limit) {
  return guarded(path_, __func__, [&] {
    std::vector<JobRun> out;
    SQLite::Statement q(*db_,
                        "SELECT job, scheduled, attempt, started, ended, exit_code, summary FROM job_runs "
                        "WHERE ?1 = '' OR job = ?1 ORDER BY id DESC LIMIT ?2");
    q.bind(1, job);
    q.bind(2, static_cast<std::int64_t>(limit));
    while (q.executeStep()) {
      JobRun r;
      r.job = q.getColumn(0).getString();
      r.scheduled = q.getColumn(1).getInt64();
      r.attempt = q.getColumn(2).getInt();
      r.started = q.getColumn(3).getInt64();
      r.ended = q.getColumn(4).getInt64();
      r.exit_code = q.getColumn(5).getInt();
      r.summary = q.getColumn(6).getString();
      out.push_back(std::move(r));
    }
    std::reverse(out.begin(), out.end());
    return out;
  });
}

void Catalog::mark_pack_verified(const Hash& pack, std::int64_t time_ns, const std::string& how) {
  guarded(path_, __func__, [&] {
    SQLite::Statement q(*db_, "INSERT OR REPLACE INTO pack_verified VALUES(?,?,?)");
    bind_hash(q, 1, pack);
    q.bind(2, time_ns);
    q.bind(3, how);
    q.exec();
    return 0;
  });
}

Catalog::PackUsage Catalog::pack_usage() {
  return guarded(path_, __func__, [&] {
    PackUsage u;
    SQLite::Statement q(*db_, "SELECT count(*), coalesce(sum(size), 0) FROM packs");
    if (q.executeStep()) {
      u.packs = static_cast<std::uint64_t>(q.getColumn(0).getInt64());
      u.bytes = static_cast<std::uint64_t>(q.getColumn(1).getInt64());
    }
    SQLite::Statement o(*db_,
                        "SELECT p.id, coalesce(v.time_ns, 0), coalesce(v.how, 'added') FROM packs p "
                        "LEFT JOIN pack_verified v ON v.pack = p.id ORDER BY 2, 1 LIMIT 1");
    if (o.executeStep()) {
      u.oldest_verified =
          PackVerified{col_hash(o.getColumn(0)), o.getColumn(1).getInt64(), o.getColumn(2).getString()};
    }
    return u;
  });
}

void Catalog::reset() {
  guarded(path_, __func__, [&] {
    db_->exec(
        "BEGIN; DELETE FROM meta; DELETE FROM packs; DELETE FROM blobs; DELETE FROM pending_blobs; "
        "DELETE FROM main.files; DELETE FROM main.deltas; "
        "DELETE FROM snapshots; DELETE FROM indexes; DELETE FROM folders; DELETE FROM tree_messages; "
        "DELETE FROM folder_bases; "
        "COMMIT;");
    return 0;
  });
}

}  // namespace reduit
