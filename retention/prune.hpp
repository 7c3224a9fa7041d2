// retention/prune.hpp — `reduit prune`: enforce archive maximums and collect garbage.
//
// Steps, in this order (each a fault point "prune:<step>" for crash tests):
//  1. Expiry. Every message in a snapshot or the archive whose class has a maximum
//     that has passed (counted from its basis) is expired, unless an active legal
//     hold covers it ("refuse-delete-hold" is recorded instead). Expired archive
//     records leave the archive: one consolidated archive object supersedes the old
//     ones (after-archive-write), which are then deleted. Snapshots holding an
//     expired message are rewritten without it: new trees go to a new metadata pack
//     and index first, then the new snapshot (after-snapshot-write), then the old
//     snapshot object is deleted.
//  2. Live blobs = trees and message blobs of every snapshot ∪ archive records.
//  3. Pack plan: a pack with no live blob is deleted; a pack holding an expired
//     blob, or whose live share of plaintext bytes is below `repack-below`, is
//     repacked (live blobs copied into new packs). Data packs can only be opened
//     with an archive secret key (`reader`); without one they are left in place and
//     reported as waiting for a repack. Packs in no index (from interrupted runs)
//     are deleted.
//  4. New packs are uploaded (after-repack-upload); when the set of packs changed,
//     new index objects are written (after-index-write) naming the new packs and
//     the remaining packs of every index object that is replaced (plan_indexes);
//     the replaced index objects are deleted (after-index-delete); then the old
//     packs (after-pack-delete, once per pack: "#N" in REDUIT_FAULT picks the Nth).
//  5. The catalog forgets the deleted packs (which drops its stat cache: the next
//     backup reads every file once), learns the new packs and index objects; the
//     retention log gets every deletion and refusal.
// A prune killed anywhere leaves every kept snapshot and archived message readable
// (old objects are deleted only after their replacements are in the vault), and
// the next prune finishes the job.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "retention/archive.hpp"
#include "retention/policy.hpp"
#include "vault/format.hpp"

namespace reduit {

struct PruneResult {
  std::uint64_t snapshots = 0, snapshots_rewritten = 0;
  std::uint64_t archive_records = 0;  // in force after the run
  std::uint64_t messages_expired = 0, messages_held_past_maximum = 0;
  std::map<std::string, std::uint64_t> expired_by_class;
  std::uint64_t packs_before = 0, packs_after = 0;
  std::uint64_t packs_deleted = 0, packs_repacked = 0, packs_written = 0, packs_unindexed_deleted = 0;
  std::uint64_t packs_waiting = 0;          // data packs that need a repack but no archive key was given
  std::uint64_t waiting_expired_blobs = 0;  // expired message blobs still stored in waiting packs
  std::uint64_t bytes_before = 0, bytes_after = 0, bytes_deleted = 0, bytes_written = 0;  // stored bytes
  std::uint64_t blobs_live = 0;
  // Index objects in the vault when the pack plan starts, left as they were, and written.
  std::uint64_t index_objects_before = 0, index_objects_kept = 0, index_objects_written = 0;
  std::vector<std::string> waiting;  // pack ids (hex)
  std::vector<std::string> warnings;
  std::int64_t run = 0;
};

/// Packs named by one index object that prune writes (FORMAT.md §6: at most 64).
inline constexpr std::size_t kPacksPerIndex = 64;

/// Which index objects a prune that changed the set of packs keeps as they are
/// (FORMAT.md §12.4 step 4).
struct IndexPlan {
  std::vector<Hash> keep;     // index objects left in the vault as they are
  std::vector<Hash> replace;  // index objects deleted once the new ones are written
  std::vector<Hash> carry;    // packs that stay, to be named again by the new objects (in order)
};

/// `objects`: the vault's index objects in listing order (Repository::
/// load_index_objects); `stays`: the packs that stay in the vault as they are.
/// A pack's first listing (objects in order, packs in order) is the one that
/// counts. An object is kept when it is the first listing of every pack it names,
/// names none twice, every one of them stays, and it names at least
/// kPacksPerIndex / 2 packs; every other object is replaced, and its first
/// listings of packs that stay are carried (once each) into the new objects. So
/// a prune rewrites only the objects it touches plus the small ones (one per
/// nightly backup), which it merges: a vault of P packs keeps at most P / 32 + 1
/// index objects after a prune.
IndexPlan plan_indexes(const std::vector<IndexObject>& objects, const std::set<Hash>& stays);

/// `repo` opens metadata and seals new objects (the agent key); `reader` (may be
/// null) opens data packs for repacking (a keyring with an archive secret key).
/// A dry run writes nothing and takes no lease.
PruneResult run_prune(Repository& repo, Repository* reader, Catalog& catalog, const Policy& policy,
                      std::int64_t now_ns, bool dry_run);

}  // namespace reduit
