// retention/forget.hpp — `reduit forget`: apply the policy's snapshot rules.
//
// Snapshots are grouped (by host and source by default, as restic groups by host
// and paths), the rules run on each group (retention/keep_policy.hpp), and a
// snapshot that holds a message under an active legal hold is kept whatever the
// rules say. Before any snapshot object is deleted, every message in it whose
// archive class still wants it (now before its minimum, or its maximum when one
// is set) and that the archive does not hold yet is written to a new archive
// object, so it stays restorable when no kept snapshot holds it. Deleting snapshot
// objects frees no data; `reduit prune` does that.
//
// Crash safety: the archive object is written before the first snapshot is
// deleted; a rerun archives nothing twice (records are keyed by mailbox, folder,
// unique name and SHA-256) and deletes what is left.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "retention/archive.hpp"
#include "retention/policy.hpp"

namespace reduit {

struct ForgetSnapshot {
  std::string id;  // 64 hex
  std::int64_t time_ns = 0;
  bool keep = false;
  std::vector<std::string> reasons;  // restic's reason strings, plus "legal hold <id>"
};

struct ForgetGroup {
  std::string host;
  std::vector<std::string> sources, tags;  // tags only when grouping by tags
  std::vector<ForgetSnapshot> snapshots;   // newest first (evaluation order)
};

struct ForgetResult {
  std::vector<ForgetGroup> groups;
  std::uint64_t kept = 0, removed = 0;
  std::uint64_t archived_messages = 0;  // new archive records written
  std::uint64_t messages_deleted = 0;   // messages leaving the vault with the forgotten snapshots
  std::string archive_object;           // hex id, "" when none was written
  std::vector<std::string> warnings;
  std::int64_t run = 0;  // retention log run id (0 for a dry run)
};

/// Applies `policy` at instant `now_ns`. A dry run reads only. Takes the vault lease
/// unless `dry_run`. Errors: kLockHeld, kUsage (a group would keep nothing), kVerify.
ForgetResult run_forget(Repository& repo, Catalog& catalog, const Policy& policy, std::int64_t now_ns,
                        bool dry_run);

}  // namespace reduit
