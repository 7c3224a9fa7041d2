// retention/report.hpp — the compliance report (`reduit report`): what was kept,
// where, how it was protected, what was deleted and what was tested in a period.
//
// build_report() reads the catalog (audit log, retention log, snapshots, tree
// messages, drills, job runs), the vault (config, holds, archive objects; the agent
// key suffices) and the site facts the agent config holds, and computes one
// ReportData: pure computation over that state, no clock but `now_ns`. The three
// renderers (retention/report_render.cpp) print that same ReportData, so the JSON,
// Markdown and HTML numbers are equal; the JSON is the source of truth and follows
// docs/report-schema.json (prose in docs/COMPLIANCE.md).
//
// Sources per section (docs/COMPLIANCE.md "Where each figure comes from"):
//   backups   audit events `backup` (data.result "ok"/"failed"); when the audit log
//             has none at all, the agent's job_runs rows of job "backup"
//   drills    audit events `drill`; when it has none at all, the `drills` table
//   checks    audit events `check`
//   access    audit events restore, export, hold-set, hold-release, policy-change,
//             config-change, key-added, key-removed, vault-added, vault-removed
//   deletions retention_runs/retention_events (prune runs in the period)
//   state     the newest snapshot at the period's end (catalog), tree_messages for
//             the oldest/newest message, the vault's archive and hold objects
// Times are UTC instants, printed RFC 3339 ("2026-07-01T00:00:00Z"); periods are
// calendar days in the policy's time zone.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "retention/policy.hpp"
#include "vault/catalog.hpp"
#include "vault/repository.hpp"

namespace reduit {

/// A report period: whole calendar days [first_day, last_day] in a time zone.
struct ReportPeriod {
  std::string spec;                 // as given: "2026-Q3", "2026", "2026-07", "2026-01-01..2026-03-31"
  std::string first_day, last_day;  // "YYYY-MM-DD", inclusive
  std::string time_zone;            // IANA name
  std::int64_t from_ns = 0;         // 00:00 local of first_day (UTC ns)
  std::int64_t to_ns = 0;           // 00:00 local of the day after last_day: exclusive
};

/// Parses "YYYY" (a year), "YYYY-Qn" (quarter 1–4), "YYYY-MM" (a month),
/// "YYYY-MM-DD" (a day) or "FROM..TO" (two such dates, inclusive days, FROM ≤ TO)
/// in zone `tz`. Throws Error(kUsage) naming the spec otherwise.
ReportPeriod parse_period(const std::string& spec, const date::time_zone* tz);

/// Facts from the agent config (agent/config.hpp) the report prints. retention/
/// does not depend on agent/, so the caller copies them.
struct ReportSite {
  std::string organisation, country, purpose;  // [organisation]
  std::string host;                            // config `host`
  std::string config_path, config_digest;      // SHA-256 hex of the config file's bytes ("" = built-in)
  std::string policy_path, policy_digest;      // likewise for the policy file
  std::string vault_url, vault_operator, vault_jurisdiction, vault_location;
  std::string ssh_host_key, ssh_known_hosts;      // [vault] host_key / known_hosts (sftp only)
  std::map<std::string, std::string> custodians;  // key fingerprint → who holds it
  std::int64_t config_rpo_seconds = 26 * 3600;    // [schedule] rpo, used when the policy sets none
  std::string reduit_version;
  std::string tsa_url;  // [audit] tsa_url: a signed report is also time-stamped there (RFC 3161)
};

struct ReportHeader {
  std::string organisation, country, purpose, host;
  std::vector<std::string> domains, mailboxes;  // scope: every mailbox a snapshot of the period held
  ReportPeriod period;
  std::string reduit_version, generated_at;
  std::string config_path, config_digest, policy_path, policy_name, policy_digest;
  std::string vault_id;
  std::string signer;          // the agent key fingerprint the report is signed with
  std::string time_stamp_tsa;  // the TSA that stamps a signed report (FILE.tsr); "" = none configured
};

struct ReportClass {
  std::string name, label, legal_basis, basis;
  std::string minimum, maximum;  // KeepDuration::str(), "" = none
  std::vector<std::string> mailboxes, folders;
};

struct ReportKey {
  std::string role;  // "archive" / "agent"
  std::string fingerprint;
  std::vector<std::string> algorithms;  // Crypto::key_algorithms; empty when the key is not in the keyring
  std::string custodian;                // "" = not configured
  std::string expires;                  // RFC 3339, "" = never or unknown
};

struct ReportStorage {
  std::string url, vault_id, operator_name, jurisdiction, location;
  bool abroad = false;  // jurisdiction differs from the organisation's country
};

struct ReportProcessing {
  std::string purpose, legal_basis;
  std::vector<ReportClass> classes;
  std::vector<ReportStorage> storage;
  std::vector<std::string> disclosures_abroad;  // one line per vault abroad; empty = none
  std::vector<std::string> encryption;          // algorithm statements
  std::vector<ReportKey> keys;
  std::string host_key_pinning;  // "pinned SHA256:…", "known_hosts FILE", "not applicable (file:// vault)"
};

struct ReportChange {
  std::string time, event, path, old_digest, new_digest, actor;
};

struct ReportMailboxClass {
  std::string mailbox, klass;  // klass "" = no class matches
  std::uint64_t messages = 0, bytes = 0;
  std::uint64_t archived_messages = 0, archived_bytes = 0;  // kept only by the archive
  std::string oldest, newest;  // INTERNALDATE (mtime) of the oldest/newest message; "" = none
};

struct ReportHold {
  std::string id, mailbox, folder, from, to, reason, created, released_at, release_reason;
  bool active = false;
};

struct ReportRetention {
  std::vector<std::string> snapshot_rules;  // "keep-daily 30", …
  std::vector<ReportChange> changes;        // policy-change / config-change events in the period
  std::string snapshot_id, snapshot_time;   // the state's snapshot (newest at the period's end)
  std::uint64_t snapshots_kept = 0;         // snapshots in the catalog at report time
  std::vector<ReportMailboxClass> mailboxes;
  std::vector<ReportHold> holds;
};

struct ReportDeletionRule {
  std::string klass, rule;
  std::uint64_t messages = 0, bytes = 0;
  std::string first, last;  // time of the first and last prune run that deleted under it
  std::string merkle_root;  // vault/audit.hpp merkle_root() of the destroyed messages' SHA-256s
};

struct ReportRefusal {
  std::string time, object, klass, rule, sha256;
};

struct ReportDeletions {
  std::uint64_t prune_runs = 0, forget_runs = 0;
  std::uint64_t snapshots_forgotten = 0;
  std::uint64_t messages_destroyed = 0, message_bytes_destroyed = 0;
  std::uint64_t packs_deleted = 0, pack_bytes_deleted = 0;
  std::string merkle_root;  // over every message destroyed in the period
  std::vector<ReportDeletionRule> by_rule;
  std::vector<ReportRefusal> refused;
};

struct ReportCheck {
  std::string time, result;
  bool read_data = false;
  std::uint64_t packs_total = 0, packs_read = 0, problems = 0;
  std::string first_problem, followed_by;  // failed checks: the next check after it ("" = none yet)
};

struct ReportIntegrity {
  std::uint64_t checks = 0, checks_failed = 0;
  std::uint64_t packs_read = 0;   // by checks and drills in the period
  std::uint64_t packs_total = 0;  // the vault's packs at the last check or drill
  double packs_read_share = 0;    // min(1, packs_read / packs_total); 0 when unknown
  std::vector<ReportCheck> runs;
};

struct ReportBackup {
  std::string time, result, snapshot, error;
  std::uint64_t messages = 0, bytes_added = 0;
  std::int64_t vault_bytes = 0;  // cumulative bytes added minus bytes freed by prunes, after this run
};

struct ReportGap {
  std::string from, to;
  std::int64_t seconds = 0;
};

struct ReportDrill {
  std::string time, mailbox, snapshot, result, failure;  // mailbox pseudonymised
  double rto_seconds = 0;
  std::uint64_t messages = 0;
};

struct ReportAvailability {
  std::string backups_source;  // "audit_log" / "job_runs"
  std::uint64_t backups = 0, backups_ok = 0, backups_failed = 0;
  double success_rate = 0;  // backups_ok / backups; 0 when there is none
  std::vector<ReportBackup> runs;
  std::vector<ReportGap> gaps;  // between consecutive good backups (and the period's bounds)
  ReportGap worst_gap;
  std::int64_t rpo_seconds = 0;  // the target
  std::string drills_source;     // "audit_log" / "drills_table"
  std::uint64_t drills = 0, drills_passed = 0, drills_failed = 0;
  std::vector<ReportDrill> drill_runs;
};

struct ReportAccess {
  std::string time, event, actor, key, mailboxes, target, detail;
};

struct ReportFinding {
  std::string id, rule, requirement, actual;
  std::string status;                 // "met" / "not met"
  std::vector<std::string> evidence;  // "section: row" references
};

struct ReportData {
  ReportHeader header;
  ReportProcessing processing;
  ReportRetention retention;
  ReportDeletions deletions;
  ReportIntegrity integrity;
  ReportAvailability availability;
  std::vector<ReportAccess> access;
  std::vector<ReportFinding> findings;
  std::uint64_t audit_entries = 0;  // entries of the whole log
  std::string audit_head;           // "SEQ:HASH" of the last entry: `reduit audit verify --anchor` later
  bool audit_chain_ok = true;       // seq and prev of every entry verified
  std::string audit_chain_problem;
  /// True when every finding is met.
  bool all_met() const;
};

struct ReportInputs {
  ReportSite site;
  const Policy* policy = nullptr;
  ReportPeriod period;
  std::int64_t now_ns = 0;  // "generated at"; also the end of the last gap when inside the period
};

/// Builds the report. Reads only; throws Error(kIo) on catalog failures, kKey/kVerify
/// when the vault's hold or archive objects cannot be opened.
ReportData build_report(Catalog& catalog, Repository& repo, const ReportInputs& in);

/// "mailbox-" + the first 8 hex digits of HMAC-SHA256(vault id key, mailbox): the
/// same mailbox always gets the same pseudonym in one vault, and it cannot be
/// reversed without the id key (FADP Art. 7, data minimisation in the report).
std::string pseudonymise_mailbox(const Hash& id_key, const std::string& mailbox);

// Renderers (retention/report_render.cpp).
/// The report as JSON (docs/report-schema.json).
nlohmann::ordered_json report_json(const ReportData& r);
/// GitHub-flavoured Markdown, the same figures.
std::string render_markdown(const ReportData& r);
/// One self-contained, printable HTML file: inline CSS and SVG charts, no script,
/// CSP "default-src 'none'; style-src 'unsafe-inline'; img-src data:".
std::string render_html(const ReportData& r);

}  // namespace reduit
