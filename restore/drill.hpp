// restore/drill.hpp — restore drills (`reduit drill`): prove that a mailbox comes
// back from the vault, message by message, and measure what it costs (its RTO).
//
// A drill reads the vault only (never the local catalog's stat cache): it picks a
// snapshot and a mailbox (given, or drawn with a recorded seed), restores it with
// an archive key into scratch space, and checks the result independently of the
// restore code: every file of the manifest is there with its SHA-256 (hashed
// again), size, mtime (ns) and mode; every folder and directory exists; nothing
// else was written; and each folder's dovecot-uidlist names its messages. When
// the restore fails, every pack the mailbox needs is verified in turn and the
// first message of a failing pack is named. It also verifies a rolling share of
// all packs (default 1/30 per drill, continuing where the last drill stopped, so a
// month of daily drills reads every pack): SHA-256 name, signature, and with the
// archive key every blob's HMAC id; each pack found intact is recorded in the
// catalog's pack_verified ("drill"). When doveadm is on PATH it then judges the
// restored mailbox as an IMAP server would see it (UIDs, flags, sizes against the
// manifest; restore/imap_judge.hpp); a disagreement fails the drill naming the
// message. The scratch space is removed afterwards.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "vault/catalog.hpp"
#include "vault/repository.hpp"

namespace reduit {

struct DrillRequest {
  std::string mailbox;                // "" = drawn at random
  std::string snapshot = "latest";    // latest | oldest | random | id prefix
  std::optional<std::uint64_t> seed;  // for the random draws; default from the clock
  std::string scratch;                // parent of the scratch dir; "" = $TMPDIR or /tmp
  unsigned pack_share = 30;           // verify ceil(packs / pack_share) packs; 0 = none
  bool progress = false;
};

struct DrillResult {
  bool passed = false;
  std::uint64_t seed = 0;
  std::string snapshot_id, mailbox;
  std::uint64_t folders = 0, messages = 0, files = 0, bytes = 0;
  std::uint64_t packs_fetched = 0, bytes_fetched = 0;  // by the restore (its RTO cost)
  double restore_seconds = 0, seconds = 0;
  std::uint64_t packs_verified = 0, packs_total = 0;
  // The independent IMAP judge (restore/imap_judge.hpp): doveadm, when on PATH.
  bool judge_ran = false;
  std::string judge;                                    // "doveadm" when it ran, else ""
  std::string judge_reason;                             // why it did not run
  std::uint64_t judge_folders = 0, judge_messages = 0;  // what it listed
  std::vector<std::string> failures;                    // first the failing message, with why
  std::vector<std::string> warnings;
};

/// Runs one drill. Throws only for problems that are not the vault's fault
/// (kUsage, kKey: no archive secret key, kUnreachable); a vault that does not
/// restore gives passed = false with the reasons. `catalog` (optional) keeps the
/// rolling pack cursor and records the result (table `drills`).
DrillResult run_drill(Repository& repo, Catalog* catalog, const DrillRequest& req);

}  // namespace reduit
