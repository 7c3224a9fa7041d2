// agent/audit_record.hpp — writing, sealing, replicating and verifying the audit log
// (vault/audit.hpp holds the chain itself; docs/AUDIT.md is normative).
//
// Commands call audit_record() once per run with their event. Appending to the
// catalog is the part that must succeed; sealing the head (detached signature by
// the agent key, RFC 3161 time stamp when [audit] tsa_url is set) and copying the
// new entries to the vault (sealed objects `audit/<sha256>`) are best effort: what
// fails is returned as a warning and done by the next run, so an unreachable TSA
// never fails a backup.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "agent/config.hpp"
#include "vault/audit.hpp"
#include "vault/catalog.hpp"
#include "vault/repository.hpp"

namespace reduit {

/// Appends `event` with `data` (docs/AUDIT.md "Events"), by the current OS user
/// with `key` (a fingerprint, "" = none). Before it, appends the change events the
/// run finds: config or policy digest differs from the last logged (`config-change`,
/// `policy-change`), another vault (`vault-removed`, `vault-added`), other keys in
/// the vault config (`key-added`, `key-removed`), a key expiring within
/// `[alerts] key_expiry_days` (0 = never; keys are looked up once a day) (`key-expiring`,
/// once per expiry date). Then seals and,
/// when `repo` is given and the agent secret key is in its keyring, replicates.
/// `repo` = nullptr: the vault id and keys come from the catalog's cached vault
/// config and nothing is replicated. Returns warnings (seal/replication failures).
/// Throws only when the catalog cannot be written.
std::vector<std::string> audit_record(const Config& cfg, Catalog& catalog, Repository* repo,
                                      const std::string& event, const nlohmann::ordered_json& data,
                                      const std::string& key = "");

/// Like audit_record() for commands that do not otherwise need the catalog
/// (restore, export, drill, check, hold) or that failed (a failed backup): opens the
/// catalog itself and never throws, so a restore on a fresh host is never refused
/// for want of an audit log and the caller's own error stays the one reported.
/// Returns the warnings for the caller to report with its own (restore and export:
/// exit 1): a catalog that could not be written ("this run is not in the audit
/// log"), seal or replication failures. `repo` may be null.
[[nodiscard]] std::vector<std::string> audit_record_best_effort(const Config& cfg, Repository* repo,
                                                                const std::string& event,
                                                                const nlohmann::ordered_json& data,
                                                                const std::string& key = "");

/// After `catalog rebuild`: when the catalog holds no audit entries, takes the
/// vault's copy (every `audit/` object; heads included) so the chain continues
/// where the lost host left it. Entries up to the first gap or bad link are taken;
/// what is left out is reported in `problems`. Returns the entries imported.
std::uint64_t import_audit_log(Repository& repo, Catalog& catalog, std::vector<std::string>* problems);

/// The deletion evidence of one retention run (forget or prune) from its
/// `retention_events`: `messages_destroyed`, `destroyed_root` (RFC 6962 Merkle root
/// of their SHA-256s, vault/audit.hpp merkle_root), `by_rule` (rule → count) and
/// `refused` (deletions a legal hold refused). Run 0 (a dry run) gives zeros.
nlohmann::ordered_json retention_run_evidence(Catalog& catalog, std::int64_t run);

/// The key a reading command used: the first archive key of the vault whose secret
/// key is in `repo`'s keyring ("" when none is).
std::string reading_key(Repository& repo);

struct AuditProblem {
  std::uint64_t seq = 0;  // the first entry the problem concerns (0 = not one entry)
  std::string where;      // "catalog", "vault", "head", "anchor"
  std::string what;       // one line: what is wrong
};

struct AuditVerifyResult {
  std::uint64_t entries = 0;        // in the catalog
  std::uint64_t vault_entries = 0;  // in the vault copy (when read)
  std::uint64_t vault_objects = 0;  // audit/ objects read
  std::uint64_t heads = 0, heads_signed = 0, heads_stamped = 0;
  bool vault_checked = false;
  std::vector<AuditProblem> problems;  // sorted by seq; empty = the log is intact
  /// The first bad entry's seq (0 = none).
  std::uint64_t first_bad() const;
};

/// Checks the catalog's chain (seq without gaps, each prev = hash of the one
/// before, each stored hash = SHA-256 of its text), every sealed head (statement,
/// signature by the vault's agent key, RFC 3161 token against [audit] tsa_ca_file,
/// head hash = the entry's hash, head within the log), the vault copy when `repo`
/// is given (each object must open; the copy's chain is checked the same way and
/// every entry must equal the catalog's), and `anchor` ("SEQ:HASH" from a report;
/// "" = none). Throws only for usage errors (malformed anchor); what is found
/// goes into problems.
AuditVerifyResult audit_verify(const Config& cfg, Catalog& catalog, Repository* repo,
                               const std::string& anchor);

}  // namespace reduit
