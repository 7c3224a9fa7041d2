// agent/metrics.hpp — the agent's Prometheus metrics (text exposition format 0.0.4)
// and its alert e-mail.
//
// Metrics, all gauges, computed from the catalog (job_runs, snapshots):
//   reduit_job_last_run_timestamp_seconds{job}      end of the last attempt (Unix s)
//   reduit_job_last_exit_code{job}                  its exit status (0 ok, 1 warnings)
//   reduit_job_last_duration_seconds{job}           its duration
//   reduit_job_last_success_timestamp_seconds{job}  end of the last attempt exiting 0 or 1
//   reduit_job_last_success_duration_seconds{job}   its duration
//   reduit_backup_last_bytes_added                  "bytes_new" of the last good backup's summary
//   reduit_backup_last_messages                     "messages" of the same summary
//   reduit_snapshots                                snapshots in the catalog
//   reduit_rpo_seconds                              the configured RPO
//   reduit_drill_last_passed                        1/0, the last drill (table drills)
//   reduit_drill_last_rto_seconds                   its restore_seconds (the RTO)
//   reduit_drill_last_timestamp_seconds             when it ended (Unix s, fractional)
//   reduit_vault_bytes, reduit_vault_packs          stored bytes and count of the packs table
//   reduit_oldest_unverified_pack_age_seconds       now - the oldest pack_verified time of a
//                                                   pack in the packs table (a pack never
//                                                   verified counts from when it was added)
//   reduit_oldest_unverified_pack_timestamp_seconds that time (Unix s, whole seconds)
//   reduit_audit_entries                            entries of the audit log (docs/AUDIT.md)
//   reduit_audit_unsealed_entries                   entries after the last signed head
//   reduit_audit_last_sealed_timestamp_seconds      when that head was signed (Unix s)
//   reduit_audit_uncopied_entries                   entries not yet copied to the vault
//   reduit_key_expiry_timestamp_seconds{fingerprint,role}  expiry of each archive key
//                                                   (role "archive") and the agent key
//                                                   ("agent") of the vault config; +Inf = never
// A job without history has no series; no drill, no drill series; an empty packs
// table, no oldest-unverified series. The file is written to a temporary name and
// renamed (node_exporter's textfile collector never reads half a file).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "agent/config.hpp"
#include "vault/catalog.hpp"

namespace reduit {

/// One key of the vault config and its expiry.
struct KeyExpiry {
  std::string fingerprint;   // primary key, uppercase hex
  std::string role;          // "archive" | "agent"
  std::int64_t expires = 0;  // Unix seconds; 0 = never
};

/// The archive keys and the agent key of the vault config cached in `cat` (meta
/// "vault_config", written by every command that opens the vault), with their
/// expiry from the keyring `gnupghome` (Crypto::key_expires). A key missing from the
/// keyring is left out and named in `problems`. Empty when no vault config is cached.
std::vector<KeyExpiry> vault_key_expiries(const std::string& gnupghome, Catalog& cat,
                                          std::vector<std::string>* problems);

/// The metrics text for `cfg`'s jobs from `cat`; `now` (Unix s) for ages, `keys` for
/// the key-expiry series.
std::string render_metrics(const Config& cfg, Catalog& cat, std::int64_t now,
                           const std::vector<KeyExpiry>& keys);

/// A double as Prometheus text: the shortest decimal that reads back as the same
/// double (so a parser sees exactly the catalog's value); "+Inf", "-Inf", "NaN".
std::string prom_double(double v);

/// Writes `text` to `path` atomically (path.tmp, fsync, rename). Throws Error(kIo).
void write_file_atomically(const std::string& path, const std::string& text);

/// Sends one plain-text e-mail through cfg.smtp_url with libcurl (RFC 5321 envelope
/// from `from` to each `to`). Returns "" on success, else curl's error message.
/// A no-op returning "" when smtp_url is empty.
std::string send_alert_mail(const AlertConfig& cfg, const std::string& subject, const std::string& body);

}  // namespace reduit
