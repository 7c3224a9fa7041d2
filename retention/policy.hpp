// retention/policy.hpp — the retention policy file (TOML; docs/CLI.md "Policy
// file"): snapshot rules, archive classes with minimum and maximum, the time zone
// and the legal basis text. The shipped default is policies/default.toml.
//
// Validation is strict, as for the config: an unknown key, a wrong type, a bad
// duration, an empty rule set, or a maximum shorter than its minimum is
// Error(kUsage) "FILE:LINE: message".
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "retention/keep_policy.hpp"

namespace reduit {

/// Where an archive class counts its minimum and maximum from.
enum class RetentionBasis {
  kDate,              // the message's Date header (capture time when it has none)
  kCapture,           // the time of the first snapshot that held it
  kFinancialYearEnd,  // the end of the financial year holding the Date (CO Art. 958f)
};
const char* basis_name(RetentionBasis b);

struct ArchiveClass {
  std::string name, label, legal_basis;
  std::vector<std::string> mailboxes{"*"}, folders{"*"};  // fnmatch(3) globs; root folder = "INBOX"
  std::optional<KeepDuration> minimum, maximum;           // absent = none
  RetentionBasis basis = RetentionBasis::kDate;
};

/// [compliance]: the targets `reduit report` judges the period against (each one a
/// finding "met" / "not met"). Absent keys are not judged.
struct ComplianceRules {
  std::optional<KeepDuration> rpo;          // worst gap between good backups (DPO Art. 3: availability)
  std::optional<double> backup_success;     // minimum share of backup runs that succeeded, 0..1
  std::optional<KeepDuration> drill_every;  // a passed restore drill at least this often (GeBüV Art. 6)
  std::optional<KeepDuration> check_every;  // a passed `check` at least this often (GeBüV Art. 10)
  std::vector<std::string> jurisdictions;   // ISO 3166-1 alpha-2 codes vaults may be in (FADP Art. 16)
};

struct Policy {
  std::string origin;       // file path or "<built-in policies/default.toml>"
  std::string name;         // e.g. "default"
  std::string time_zone;    // IANA name; "" = the system's
  std::string legal_basis;  // free text for reports
  KeepPolicy snapshots;
  std::vector<std::string> group_by{"host", "source"};  // subset of host, source, tags
  std::vector<ArchiveClass> classes;
  unsigned fy_end_month = 12, fy_end_day = 31;
  double repack_below = 0.5;  // packs with a smaller live share are repacked
  ComplianceRules compliance;

  /// The first class whose patterns match; nullptr when none does.
  const ArchiveClass* classify(const std::string& mailbox, const std::string& folder) const;
};

Policy parse_policy(const std::string& text, const std::string& origin);
/// Loads `path`, or the shipped default policy when `path` is empty.
Policy load_policy(const std::string& path);
/// The bytes of the policy file `path` ("" = the built-in policies/default.toml),
/// as load_policy parses them (digests in the audit log and reports). kUsage when
/// unreadable.
std::string read_policy_text(const std::string& path);

/// When a message's retention starts under `basis`: `date_ns` (0 = unknown Date
/// header) or `captured_ns`, or the end (24:00 local time) of the financial year
/// holding the date. Nanoseconds since the epoch.
std::int64_t retention_start(const Policy& p, RetentionBasis basis, std::int64_t date_ns,
                             std::int64_t captured_ns);

/// `from_ns` plus a duration as calendar fields in zone `tz` (the inverse of a
/// keep-within window): 2016-02-29 + 1y = 2017-03-01, as time.AddDate does.
std::int64_t add_duration(std::int64_t from_ns, const KeepDuration& d, const date::time_zone* tz);

}  // namespace reduit
