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
// A job without history has no series. The file is written to a temporary name and
// renamed (node_exporter's textfile collector never reads half a file).
#pragma once

#include <string>

#include "agent/config.hpp"
#include "vault/catalog.hpp"

namespace reduit {

/// The metrics text for `cfg`'s jobs from `cat`.
std::string render_metrics(const Config& cfg, Catalog& cat);

/// Writes `text` to `path` atomically (path.tmp, fsync, rename). Throws Error(kIo).
void write_file_atomically(const std::string& path, const std::string& text);

/// Sends one plain-text e-mail through cfg.smtp_url with libcurl (RFC 5321 envelope
/// from `from` to each `to`). Returns "" on success, else curl's error message.
/// A no-op returning "" when smtp_url is empty.
std::string send_alert_mail(const AlertConfig& cfg, const std::string& subject, const std::string& body);

}  // namespace reduit
