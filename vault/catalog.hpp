// vault/catalog.hpp — the local SQLite catalog (state_dir/catalog.sqlite).
//
// Plaintext local state that makes the nightly run cheap and resumable:
//   meta       vault url, vault id, id key (copied from the vault config)
//   packs      every pack known to be in the vault; indexed=0 means "uploaded and
//              journaled, not yet in an index object" (the resume journal)
//   blobs      blob id → pack, offset, length, type (dedup lookups); no index by
//              pack (the rare readers by pack scan it once)
//   pending_blobs  the journal's blob rows, appended per uploaded pack in upload
//              order and merged into `blobs` sorted by id (merge_blobs()): random
//              32-byte keys inserted one pack at a time rewrote most of the blobs
//              B-tree on every commit (30% of a first backup's CPU at 100k messages)
//   files      stat cache: (folder key, unique name) → dev, ino, size, mtime, ctime,
//              blob ids, sha256 — unchanged stat means no read
//   folder_bases  per folder, its last tree: id, patch depth and the resolved
//              entries (a compact binary form, zstd), so the next run writes a patch
//              against it (FORMAT.md §7.1) without decoding JSON
//   snapshots  snapshot object id → decoded JSON (cache of the vault's snapshots)
//   job_runs   the agent's job history, one row per attempt (agent/daemon.hpp);
//              local state that reset() keeps
//   deltas     per file that changes in place (vault/delta.hpp): the librsync
//              signature of its last stored version, that version's blob (a full
//              copy or a delta), chain depth and the vault's base signature blob
//   messages   header metadata per message sha256 (Message-ID, Date, From, To,
//              Subject; RFC 2047 decoded) for search and reports
//   tree_messages  per folder tree id, its messages: path (cur/<name>), sha256,
//              mtime (INTERNALDATE), size. Written only for trees not yet recorded
//              (an unchanged folder keeps its tree id and costs nothing); joined
//              with the cached snapshots it tells which snapshot, mailbox and
//              folder hold a message (reduit find)
//   tree_cache  tree blob id → its plaintext (JSON) as stored, a full tree or a
//              patch: what forget and prune walk (retention/walk.hpp) and a
//              restore reads before the vault (TreeLoader::use_tree_cache), checked
//              against the id's HMAC when read. Filled by forget and prune as they
//              load trees from the vault, and by the backup with the patches it
//              writes (small by construction), so walking the newest snapshots
//              decrypts nothing; prune drops the rows of trees no snapshot uses any more
//   pack_verified  per pack, when it was last fully read back and found intact
//              (time_ns, how = "drill" | "check"), or when this catalog first saw it
//              (how = "added": recorded by add_pack; packs of a catalog created
//              before this table count from the first open that created it).
//              Local state that reset() keeps; rows of packs gone are ignored
// The catalog is a cache: `reduit catalog rebuild` recreates all of it but the file
// cache from the vault. WAL mode. One Catalog object per thread; the backup's
// upload thread opens its own to write the journal.
// Errors: SQLite failures become Error(kIo) naming the catalog file.
#pragma once

#include <SQLiteCpp/SQLiteCpp.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "vault/format.hpp"

namespace reduit {

struct CachedFile {
  std::string path;  // relative to the folder, as last seen
  std::uint64_t dev = 0, ino = 0, size = 0;
  std::int64_t mtime_ns = 0, ctime_ns = 0;
  std::uint32_t mode = 0;
  Hash sha256{};
  std::optional<Hash> header, body, blob;
  // Files stored as delta chains (not columns of the files table: the deltas table
  // holds them). `delta` replaces `blob`; `signature` names the base's signature;
  // `chain` the blobs `delta` is patched from, base first.
  std::optional<Hash> delta, signature;
  std::vector<Hash> chain;
};

/// What the next version of a file that changes in place is computed against
/// (docs/FORMAT.md §4.1). Local plaintext state, like the stat cache.
struct DeltaState {
  Hash sha256{};            // content of the last stored version
  std::uint64_t size = 0;   // its bytes
  Hash head{};              // its blob: kFile when depth is 0, else kDelta
  std::uint32_t depth = 0;  // links from the chain's base
  Hash base_signature{};    // kSignature blob (in the vault) of the chain's base
  std::string signature;    // librsync signature of the last stored version
  std::vector<Hash> chain;  // the blobs `head` is patched from, base first (empty at depth 0)
};

/// One attempt of a scheduled agent job. Times are Unix seconds (UTC);
/// `scheduled` is the calendar occurrence the attempt belongs to; `exit_code` is
/// the child's exit status (128+signal when killed); `summary` is its --json output
/// (or the last line of stderr when it printed no JSON).
struct JobRun {
  std::string job;
  std::int64_t scheduled = 0;
  int attempt = 1;
  std::int64_t started = 0, ended = 0;
  int exit_code = 0;
  std::string summary;
};

class Catalog {
 public:
  /// Opens (creating when absent) `state_dir`/catalog.sqlite; creates state_dir.
  explicit Catalog(const std::string& state_dir);
  ~Catalog();
  Catalog(const Catalog&) = delete;
  Catalog& operator=(const Catalog&) = delete;

  const std::string& path() const { return path_; }
  SQLite::Database& db() { return *db_; }

  std::optional<std::string> get_meta(const std::string& key);
  void set_meta(const std::string& key, const std::string& value);

  // Blobs and packs.
  /// True when `id` is in the merged `blobs` table. Blobs of packs journaled since the
  /// last merge_blobs() are not seen: the backup keeps them in its own set.
  bool has_blob(const Hash& id);
  /// Records an uploaded pack and appends its blobs to pending_blobs, in one
  /// transaction (the journal). Cheap: no random-key B-tree insert.
  void add_pack(const IndexPack& pack, bool indexed);
  /// Moves every pending blob row into `blobs`, in id order, in one transaction;
  /// returns the number of rows moved. Commits and reopens an open staging
  /// transaction around it (a stale read snapshot cannot write).
  std::size_t merge_blobs();
  std::vector<Hash> pack_ids();
  /// Where blob `id` is, if a pack that an index object names (packs.indexed = 1)
  /// holds it: (pack id, its entry). nullopt for a blob the catalog does not know,
  /// or knows only in a pack not yet indexed. One point lookup (restore's blob
  /// locations on the backup host, restore/snapshots.hpp BlobIndex).
  std::optional<std::pair<Hash, PackEntry>> find_indexed_blob(const Hash& id);
  /// Every pack an index object names: id, stored size and kind (`blobs` empty).
  std::vector<IndexPack> indexed_packs();
  /// Up to `limit` packs uploaded but not yet named by an index object, in id
  /// order, with their blobs in offset order (bounded so that a million-message
  /// first run never holds them all). Merges pending blobs first; then one pass
  /// over `blobs`, which has no index by pack (called only after an interrupted run).
  std::vector<IndexPack> unindexed_packs(std::size_t limit);
  /// The index object `index` (in the vault now) names `packs`: recorded, and the
  /// packs marked indexed, in one transaction. During a backup's staging (begin_staging)
  /// the staged rows are committed first, as merge_blobs does, so the vault's
  /// catalog is not held locked until the end of the run.
  void record_index(const Hash& index, const std::vector<Hash>& packs);
  /// Forgets packs (and their blobs) that are gone from the vault, and drops the
  /// whole file cache so every file is read and re-hashed once. Returns how many
  /// packs were forgotten. One pass over `blobs` and one over pending_blobs.
  std::size_t forget_packs(const std::vector<Hash>& packs);

  // Index objects known to be in the vault (to notice one deleted behind our back).
  void add_index(const Hash& id);
  std::vector<Hash> index_ids();
  /// An index object went missing: forget it and mark every pack unindexed, so the
  /// next commit writes an index naming them all again.
  void reindex_all(const std::vector<Hash>& missing_indexes);

  // Folder cache: a folder whose stamp (agent/scan.hpp folder_stamp) is unchanged
  // keeps its tree without listing or stat-ing its messages.
  struct CachedFolder {
    std::string stamp;
    Hash tree{};
    std::uint64_t messages = 0, bytes = 0, files = 0;
  };
  std::optional<CachedFolder> find_folder(const std::string& folder_key);
  /// Stages this run's row for a rescanned folder.
  void stage_folder(const std::string& folder_key, const CachedFolder& f);
  /// Marks a folder carried over unchanged: its cached files and folder rows stay.
  void carry_folder(const std::string& folder_key);
  /// A folder's last tree, as the base of its next tree patch.
  struct FolderTree {
    Hash tree{};                     // the id in the vault (a full tree or a patch)
    std::uint32_t depth = 0;         // patches from a full tree (FORMAT.md §7.1)
    std::uint64_t chain_bytes = 0;   // plaintext bytes of those patches
    std::vector<TreeEntry> entries;  // of the resolved tree, sorted by path
  };
  /// nullopt when there is no row, or when it does not decode (then the next tree
  /// is a full one).
  std::optional<FolderTree> find_folder_tree(const std::string& folder_key);
  /// Stages a rescanned folder's tree (committed by commit_files()).
  void stage_folder_tree(const std::string& folder_key, const FolderTree& t);

  // File cache.
  std::optional<CachedFile> find_file(const std::string& folder_key, const std::string& key);
  /// Stages a row for this run in a TEMP table; commit_files() replaces the cache.
  void stage_file(const std::string& folder_key, const std::string& key, const CachedFile& f);
  void begin_staging();
  void flush_staging();  // commits the staging transaction (call every few thousand rows)
  void end_staging();    // commits and closes the staging transaction
  void commit_files();   // atomically: files, folders := staged rows + carried folders' rows

  // Delta state (staged with the file cache, committed by commit_files(); the rows
  // of a carried folder stay, like its files).
  std::optional<DeltaState> find_delta(const std::string& folder_key, const std::string& key);
  void stage_delta(const std::string& folder_key, const std::string& key, const DeltaState& d);
  /// False when no committed run recorded any delta state (a new, rebuilt or lost
  /// catalog): the backup then looks for the vault's signatures instead.
  bool has_deltas();

  // Snapshots.
  void add_snapshot(const std::string& id, const Snapshot& s, const std::string& json);
  std::vector<std::pair<std::string, std::string>> snapshot_rows();  // (id, json) by time
  void remove_snapshots_not_in(const std::vector<std::string>& ids);

  // Message metadata (staged with the file cache, committed by commit_files()).
  /// True when committed runs recorded `sha256` (rows staged by this run are not seen).
  bool has_message(const Hash& sha256);
  void add_message(const Hash& sha256, const std::string& message_id, const std::string& date,
                   const std::string& from, const std::string& to, const std::string& subject);

  // Message locations (tree_messages).
  /// True when rows for `tree` are recorded (committed runs only).
  bool has_tree_messages(const Hash& tree);
  /// Stages a row per message entry of `tree` (heap append; sorted into
  /// tree_messages by commit_files()).
  void stage_tree_messages(const Hash& tree_id, const Tree& tree);
  /// Stages a tree blob's plaintext as written to the vault (a full tree or a patch,
  /// FORMAT.md §7.1) for tree_cache (committed by commit_files()).
  void stage_tree_blob(const Hash& tree_id, std::string_view text);
  /// The plaintext of tree blob `tree_id` as tree_cache holds it (a full tree or a
  /// patch, FORMAT.md §7.1), or nullopt when it holds none. Not checked here: the
  /// caller compares Repository::blob_id of the bytes with `tree_id` (a row can be
  /// damaged). Throws kIo when the catalog cannot be read.
  std::optional<Bytes> cached_tree(const Hash& tree_id);
  /// Records the message entries of `tree` at once (for trees read back from the vault).
  void add_tree_messages(const Hash& tree_id, const Tree& tree);
  /// The sha256 of every recorded message whose Message-ID is `message_id` (with or
  /// without its angle brackets).
  std::vector<Hash> messages_with_id(const std::string& message_id);

  struct MessageFilter {
    std::string message_id;         // exact, with or without <>; "" = any
    std::string from, to, subject;  // substring, case-insensitive for ASCII; "" = any
  };
  struct MessageRow {
    Hash tree{};
    std::string path;  // relative to the folder, e.g. "cur/1700000000.M1P2.mx,S=9:2,S"
    Hash sha256{};
    std::int64_t mtime_ns = 0;
    std::uint64_t size = 0;
    bool has_summary = false;  // false: no header row (fields empty; header filters never match)
    std::string message_id, date, from, to, subject;
  };
  /// Calls `row` for every recorded message of the given trees that passes `filter`.
  void find_messages(const MessageFilter& filter, const std::vector<Hash>& trees,
                     const std::function<void(const MessageRow&)>& row);

  // Agent job history.
  void add_job_run(const JobRun& r);
  /// The last `limit` attempts of `job` ("" = every job), oldest first.
  std::vector<JobRun> job_runs(const std::string& job, std::size_t limit);

  // Pack verification (pack_verified) and vault usage.
  /// Records that `pack` was read back and found intact at `time_ns` (ns since the
  /// epoch) by `how` ("drill", "check").
  void mark_pack_verified(const Hash& pack, std::int64_t time_ns, const std::string& how);
  struct PackVerified {
    Hash pack{};
    std::int64_t time_ns = 0;  // last verification, or when added when how == "added"
    std::string how;
  };
  struct PackUsage {
    std::uint64_t packs = 0, bytes = 0;           // the packs table: count and stored bytes
    std::optional<PackVerified> oldest_verified;  // the pack longest without verification
  };
  /// Usage and the least recently verified pack, from the packs table (nullopt
  /// oldest_verified when it is empty).
  PackUsage pack_usage();

  /// Empties the vault-derived tables and the file cache for catalog rebuild (job history stays:
  /// the vault does not hold it).
  void reset();

 private:
  std::string path_;
  std::unique_ptr<SQLite::Database> db_;
  std::unique_ptr<SQLite::Statement> q_find_indexed_blob_;  // prepared on first use
  std::unique_ptr<SQLite::Statement> q_has_blob_, q_find_file_, q_stage_file_, q_has_message_, q_add_message_,
      q_stage_tree_message_, q_stage_tree_blob_;
  std::unique_ptr<SQLite::Transaction> staging_;
  std::size_t staged_in_txn_ = 0;

  /// Runs `f` (which opens its own transaction) with the run's staging transaction
  /// committed first and opened again after, so `f`'s rows are durable on their own.
  template <typename F>
  void outside_staging(F&& f);
};

}  // namespace reduit
