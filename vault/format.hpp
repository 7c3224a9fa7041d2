// vault/format.hpp — the vault's object encodings (normative spec: docs/FORMAT.md).
//
// Plaintext shapes only: this file knows nothing about encryption or transport.
//   pack      = blobs back to back, then a table of entries, then a fixed footer
//   index     = binary list of packs and the blobs in each
//   tree      = JSON manifest of one Maildir folder (a blob of type kTree)
//   snapshot  = JSON: time, host, mailboxes → folders → tree ids
//   config    = JSON: vault id, id key, keys, pack parameters
// Every decoder validates bounds and throws Error(kVerify) on malformed input; none
// trusts a length or offset it read.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "vault/hash.hpp"
#include "vault/transport.hpp"

namespace reduit {

/// kDelta and kSignature: docs/FORMAT.md §4.1 and §4.2 (vault/delta.hpp).
enum class BlobType : std::uint8_t {
  kHeader = 1,
  kBody = 2,
  kFile = 3,
  kTree = 4,
  kDelta = 5,
  kSignature = 6
};
enum class PackKind : std::uint8_t { kData = 1, kMetadata = 2 };

// ---- packs -----------------------------------------------------------------

struct PackEntry {
  BlobType type;
  Hash id;               // HMAC-SHA256(id key, blob plaintext)
  std::uint64_t offset;  // within the pack plaintext
  std::uint64_t length;  // bytes
};

/// Accumulates blobs into one pack plaintext (FORMAT.md §5).
///
/// Header blobs (up to kGroupedHeaderMax bytes each) are laid out together after
/// all other blobs; entries keep the order of add(). Message headers resemble each
/// other far more than they resemble the bodies between them, so grouped, zstd
/// finds them within its window: the benchmark sets' vaults are 0.7% smaller
/// (docs/PERFORMANCE.md). Readers find blobs by their entries' offsets, so the
/// order is the writer's choice (FORMAT.md §5).
class PackWriter {
 public:
  /// A larger header blob (a file without an empty line is all header block, e.g.
  /// a broken 100 MB message) stays where it was added: it is held once, not
  /// copied again at finish().
  static constexpr std::size_t kGroupedHeaderMax = 64 * 1024;

  /// `reserve` = expected plaintext size (the pack target plus a message or so),
  /// allocated once so the buffer does not double past it.
  explicit PackWriter(PackKind kind, std::size_t reserve = 1 << 20) : kind_(kind), reserve_(reserve) {
    data_.reserve(reserve_);
  }
  void add(BlobType type, const Hash& id, const void* data, std::size_t size);
  /// Plaintext bytes of the blobs so far (the pack target is checked against it).
  std::size_t size() const { return data_.size() + headers_.size(); }
  std::size_t count() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }
  PackKind kind() const { return kind_; }
  /// The entries with the offsets that finish() will give them if nothing is
  /// added before it.
  std::vector<PackEntry> entries() const;
  /// Appends the header blobs, the entry table and the footer; returns the
  /// plaintext. The writer is left empty and fills `next` from now on (cleared; a
  /// buffer recycled from an earlier pack keeps its capacity, so its pages are not
  /// faulted in and zeroed again), or a new buffer of the reserved size.
  Bytes finish(Bytes next = {});

 private:
  PackKind kind_;
  std::size_t reserve_;
  Bytes data_;     // magic, then every blob but the grouped header blobs
  Bytes headers_;  // the grouped header blobs, back to back (their entries' offsets count from here)
  std::vector<PackEntry> entries_;
  std::vector<std::size_t> grouped_;  // indices into entries_ of the blobs in headers_
};

/// Parses a pack plaintext's table; every entry is bounds-checked against the
/// blob area. Throws kVerify when malformed.
std::vector<PackEntry> parse_pack(const Bytes& plaintext);

// ---- index -----------------------------------------------------------------

struct IndexPack {
  Hash id;                 // SHA-256 of the stored pack bytes = its name
  std::uint64_t size = 0;  // stored bytes
  PackKind kind = PackKind::kData;
  std::vector<PackEntry> blobs;
};

/// One index object: its id (SHA-256 of the stored object) and the packs it names.
struct IndexObject {
  Hash id;
  std::vector<IndexPack> packs;
};

Bytes encode_index(const std::vector<IndexPack>& packs);
std::vector<IndexPack> decode_index(const Bytes& data);

// ---- trees (one per Maildir folder) ----------------------------------------

enum class EntryKind { kMessage, kFile, kDir };

struct TreeEntry {
  EntryKind kind = EntryKind::kFile;
  std::string path;                       // relative to the folder, '/'-separated
  std::uint32_t mode = 0;                 // permission bits (07777)
  std::int64_t mtime_ns = 0;              // nanoseconds since the epoch
  std::uint64_t size = 0;                 // file bytes (0 for dirs)
  Hash sha256{};                          // of the whole file (messages and files)
  std::optional<Hash> header;             // message: header block blob (kHeader)
  std::optional<Hash> body;               // message: body blob (kBody), absent when empty
  std::optional<Hash> blob;               // file: content blob (kFile), absent when empty
  std::optional<std::uint32_t> uid, gid;  // numeric owner (absent in trees written before 0.2)
  std::string link;                       // hard-link group: entries of one snapshot with the same non-empty
                                          // value were one inode (FORMAT.md §7); "" = not linked
  // A file stored as a delta chain: its head (kDelta), instead of `blob`.
  std::optional<Hash> delta;
  // A delta-managed file: the kSignature blob of its chain's base (FORMAT.md §4.2).
  std::optional<Hash> signature;
  // With `delta`: the blobs it is patched from, base first (every blob a prune
  // must keep for it is thus named in metadata).
  std::vector<Hash> chain;
};

/// A folder's tree (FORMAT.md §7), or a tree patch (§7.1): the changes from the
/// folder's previous tree, `base`, so that a night's flag changes send a few entries
/// instead of every entry of the folder again.
struct Tree {
  std::vector<TreeEntry> entries;    // sorted by path; of a patch: the added and changed entries only
  std::optional<Hash> base;          // a patch: the id of the tree it changes
  std::uint32_t depth = 0;           // patches from a full tree to this one (0 = a full tree)
  std::vector<std::string> removed;  // a patch: paths of the base that are gone, sorted
  /// Of a resolved tree (resolve_tree): the tree blobs it was built from, nearest
  /// first — retention must keep each as long as this tree is used. Not encoded.
  std::vector<Hash> bases;
};

/// Readers refuse a patch deeper than this (the writer rebases well before).
constexpr std::uint32_t kMaxTreeDepth = 64;

/// Deterministic JSON (same tree → same bytes → same id); a patch (`base` set) is
/// encoded as version 2.
std::string encode_tree(const Tree& tree);
/// Parses a tree or a tree patch (not resolved). Throws kVerify when malformed.
Tree decode_tree(const Bytes& data);

/// The patch that turns `prev` (a resolved tree whose id is `prev_id`) into `next`
/// (a full tree). Entries equal in both are left out.
Tree make_tree_patch(const Tree& prev, const Hash& prev_id, const Tree& next);

/// The tree `id`, with patches applied: `raw` returns the plaintext of a tree blob.
/// Throws kVerify for a malformed blob, a chain deeper than kMaxTreeDepth or than a
/// patch says, a removed path its base lacks, or a patch entry that is out of order.
Tree resolve_tree(const Hash& id, const std::function<Bytes(const Hash&)>& raw);
/// The same through `memo` (resolved trees by id, reused and filled, bases too);
/// returns a reference into `memo`.
const Tree& resolve_tree(const Hash& id, const std::function<Bytes(const Hash&)>& raw,
                         std::map<Hash, Tree>& memo, std::uint32_t max_depth = kMaxTreeDepth);

// ---- snapshots -------------------------------------------------------------

struct SnapshotFolder {
  std::string name;  // relative to the mailbox root; "" = the root (INBOX)
  Hash tree;
  std::uint32_t mode = 0;     // the folder directory's permission bits
  std::int64_t mtime_ns = 0;  // and mtime (0 = unknown)
  std::uint64_t messages = 0;
  std::uint64_t bytes = 0;
};

struct SnapshotMailbox {
  std::string name;    // e.g. "alice@example.ch"
  std::string source;  // the configured root it was found under
  std::string path;    // relative to that root
  std::vector<SnapshotFolder> folders;
};

struct Snapshot {
  std::int64_t time_ns = 0;  // start of the backup, UTC
  std::string host;
  std::string reduit_version;
  std::vector<std::string> tags;
  std::vector<SnapshotMailbox> mailboxes;
  std::uint64_t messages = 0;
  std::uint64_t bytes = 0;
};

std::string encode_snapshot(const Snapshot& s);
Snapshot decode_snapshot(const Bytes& data);

// ---- vault config ----------------------------------------------------------

struct VaultConfig {
  int version = 1;
  std::string vault_id;                   // 32 hex
  Hash id_key{};                          // secret HMAC key for blob ids
  std::vector<std::string> archive_keys;  // fingerprints (recipients of everything)
  std::string agent_key;                  // fingerprint (signer; recipient of metadata)
  std::string agent_public_key;           // armored, so a fresh host can verify
  std::uint64_t pack_size = 16u << 20;    // target plaintext bytes per pack
  int zstd_level = 3;
  std::int64_t created_ns = 0;
};

std::string encode_config(const VaultConfig& c);
VaultConfig decode_config(const Bytes& data);

/// Metadata packs (trees, signatures) close at this many plaintext bytes, or at
/// `pack_size` when that is smaller (FORMAT.md §5). A mailbox's trees lie together,
/// so a restore of one mailbox opens the one or two metadata packs holding them:
/// about 1 MB stored each, not the 7 MB of a 16 MiB pack (docs/PERFORMANCE.md).
inline constexpr std::uint64_t kMetadataPackSize = std::uint64_t{2} << 20;

/// The plaintext bytes at which a writer closes a pack of `kind` (FORMAT.md §5).
inline std::uint64_t pack_target(const VaultConfig& c, PackKind kind) {
  return kind == PackKind::kData ? c.pack_size : std::min(c.pack_size, kMetadataPackSize);
}

// ---- messages --------------------------------------------------------------

/// Length of a message's header block including the empty line that ends it
/// (RFC 5322 §2.1; LF or CRLF); the whole message when there is no empty line.
/// A message is stored as two blobs split here (FORMAT.md §4).
std::size_t header_block_length(std::string_view message);

// ---- object names ----------------------------------------------------------

std::string pack_name(const Hash& id);      // "packs/ab/ab12…"
std::string index_name(const Hash& id);     // "index/ab12…"
std::string snapshot_name(const Hash& id);  // "snapshots/ab12…"
inline constexpr const char* kConfigName = "config";
inline constexpr const char* kLeaseName = "locks/lease";

/// Throws kVerify unless `p` is a safe relative path: no leading '/', no empty,
/// "." or ".." component, no NUL or backslash. `what` names it in the message.
void check_relative_path(const std::string& p, const char* what);

}  // namespace reduit
