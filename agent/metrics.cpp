#include "agent/metrics.hpp"

#include <curl/curl.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>
#include <optional>

#include "agent/daemon.hpp"
#include "vault/clock.hpp"
#include "vault/crypto.hpp"
#include "vault/error.hpp"
#include "vault/format.hpp"

namespace reduit {

namespace {

void gauge(std::string& out, const std::string& name, const std::string& help) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " gauge\n";
}

std::string label(const std::string& job) {
  return "{job=\"" + job + "\"}";  // job names are [a-z0-9_-]: nothing to escape
}

bool ok_exit(int rc) {
  return rc == 0 || rc == 1;
}

}  // namespace

std::string render_metrics(const Config& cfg, Catalog& cat, std::int64_t now,
                           const std::vector<KeyExpiry>& keys) {
  struct Last {
    std::optional<JobRun> any, good;
  };
  std::vector<std::pair<std::string, Last>> jobs;
  for (const auto& j : cfg.schedule.jobs) {
    Last l;
    for (auto& r : cat.job_runs(j.name, 1000)) {
      if (r.summary == kInterrupted) continue;
      if (ok_exit(r.exit_code)) l.good = r;
      l.any = r;
    }
    jobs.emplace_back(j.name, std::move(l));
  }
  std::string out;
  auto series = [&](const std::string& name, const std::string& help, auto&& value, bool good) {
    gauge(out, name, help);
    for (const auto& [job, l] : jobs) {
      const auto& r = good ? l.good : l.any;
      if (r) out += name + label(job) + " " + std::to_string(value(*r)) + "\n";
    }
  };
  series(
      "reduit_job_last_run_timestamp_seconds", "End of the job's last attempt (Unix time).",
      [](const JobRun& r) { return r.ended; }, false);
  series(
      "reduit_job_last_exit_code", "Exit status of the job's last attempt (0 ok, 1 warnings).",
      [](const JobRun& r) { return static_cast<std::int64_t>(r.exit_code); }, false);
  series(
      "reduit_job_last_duration_seconds", "Duration of the job's last attempt.",
      [](const JobRun& r) { return r.ended - r.started; }, false);
  series(
      "reduit_job_last_success_timestamp_seconds", "End of the job's last successful attempt (Unix time).",
      [](const JobRun& r) { return r.ended; }, true);
  series(
      "reduit_job_last_success_duration_seconds", "Duration of the job's last successful attempt.",
      [](const JobRun& r) { return r.ended - r.started; }, true);
  for (const auto& [job, l] : jobs) {
    if (job != "backup" || !l.good) continue;
    auto j = nlohmann::json::parse(l.good->summary, nullptr, false);
    if (j.is_object() && j.contains("bytes_new") && j["bytes_new"].is_number_unsigned()) {
      gauge(out, "reduit_backup_last_bytes_added",
            "New bytes (after deduplication) of the last good backup.");
      out += "reduit_backup_last_bytes_added " + std::to_string(j["bytes_new"].get<std::uint64_t>()) + "\n";
    }
    if (j.is_object() && j.contains("messages") && j["messages"].is_number_unsigned()) {
      gauge(out, "reduit_backup_last_messages", "Messages in the last good backup's snapshot.");
      out += "reduit_backup_last_messages " + std::to_string(j["messages"].get<std::uint64_t>()) + "\n";
    }
  }
  gauge(out, "reduit_snapshots", "Snapshots in the local catalog.");
  out += "reduit_snapshots " + std::to_string(cat.snapshot_rows().size()) + "\n";
  gauge(out, "reduit_rpo_seconds", "Recovery point objective: the oldest acceptable last good backup age.");
  out += "reduit_rpo_seconds " + std::to_string(cfg.schedule.rpo) + "\n";

  SQLite::Database& db = cat.db();
  if (db.tableExists("drills")) {
    SQLite::Statement q(db,
                        "SELECT time_ns, passed, restore_seconds FROM drills ORDER BY time_ns DESC LIMIT 1");
    if (q.executeStep()) {
      gauge(out, "reduit_drill_last_passed", "1 when the last restore drill passed, else 0.");
      out += "reduit_drill_last_passed " + std::to_string(q.getColumn(1).getInt()) + "\n";
      gauge(out, "reduit_drill_last_rto_seconds",
            "Restore time of the last drill's mailbox (its recovery time objective).");
      out += "reduit_drill_last_rto_seconds " + prom_double(q.getColumn(2).getDouble()) + "\n";
      gauge(out, "reduit_drill_last_timestamp_seconds", "End of the last restore drill (Unix time).");
      out += "reduit_drill_last_timestamp_seconds " +
             prom_double(static_cast<double>(q.getColumn(0).getInt64()) / 1e9) + "\n";
    }
  }
  Catalog::PackUsage u = cat.pack_usage();
  gauge(out, "reduit_vault_bytes", "Stored bytes of the vault's packs (local catalog).");
  out += "reduit_vault_bytes " + std::to_string(u.bytes) + "\n";
  gauge(out, "reduit_vault_packs", "Packs in the vault (local catalog).");
  out += "reduit_vault_packs " + std::to_string(u.packs) + "\n";
  if (u.oldest_verified) {
    gauge(out, "reduit_oldest_unverified_pack_age_seconds",
          "Seconds since the least recently verified pack was last read back intact (or added).");
    out += "reduit_oldest_unverified_pack_age_seconds " +
           std::to_string(now - u.oldest_verified->time_ns / 1000000000) + "\n";
    gauge(out, "reduit_oldest_unverified_pack_timestamp_seconds",
          "When the least recently verified pack was last read back intact (or added; Unix time).");
    out += "reduit_oldest_unverified_pack_timestamp_seconds " +
           std::to_string(u.oldest_verified->time_ns / 1000000000) + "\n";
  }
  if (db.tableExists("audit_log") && db.tableExists("audit_heads") && db.tableExists("audit_state")) {
    // The audit log (docs/AUDIT.md): entries not yet covered by a signed head, or
    // not yet copied to the vault, are what a lost mail host would take with it.
    const std::int64_t last = db.execAndGet("SELECT coalesce(max(seq), 0) FROM audit_log").getInt64();
    gauge(out, "reduit_audit_entries", "Entries in the audit log.");
    out += "reduit_audit_entries " + std::to_string(last) + "\n";
    SQLite::Statement h(
        db, "SELECT seq, time_ns FROM audit_heads WHERE signature != '' ORDER BY seq DESC LIMIT 1");
    const bool sealed = h.executeStep();
    const std::int64_t sealed_seq = sealed ? h.getColumn(0).getInt64() : 0;
    gauge(out, "reduit_audit_unsealed_entries", "Audit entries after the last signed head.");
    out += "reduit_audit_unsealed_entries " + std::to_string(last - sealed_seq) + "\n";
    if (sealed) {
      gauge(out, "reduit_audit_last_sealed_timestamp_seconds",
            "When the last audit head was signed (Unix time).");
      out += "reduit_audit_last_sealed_timestamp_seconds " +
             std::to_string(h.getColumn(1).getInt64() / 1000000000) + "\n";
    }
    if (auto vault_id = cat.get_meta("vault_id")) {
      SQLite::Statement r(db, "SELECT value FROM audit_state WHERE key=?");
      r.bind(1, "replicated." + *vault_id);
      const std::int64_t copied = r.executeStep() ? std::stoll(r.getColumn(0).getString()) : 0;
      gauge(out, "reduit_audit_uncopied_entries", "Audit entries not yet copied to the vault.");
      out += "reduit_audit_uncopied_entries " + std::to_string(last - copied) + "\n";
    }
  }
  if (!keys.empty()) {
    gauge(out, "reduit_key_expiry_timestamp_seconds",
          "Expiry of each key of the vault config (Unix time; +Inf = never).");
    for (const auto& k : keys) {
      out += "reduit_key_expiry_timestamp_seconds{fingerprint=\"" + k.fingerprint + "\",role=\"" + k.role +
             "\"} " + (k.expires == 0 ? std::string("+Inf") : std::to_string(k.expires)) + "\n";
    }
  }
  return out;
}

std::string prom_double(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return ec == std::errc() ? std::string(buf, end) : std::to_string(v);
}

std::vector<KeyExpiry> vault_key_expiries(const std::string& gnupghome, Catalog& cat,
                                          std::vector<std::string>* problems) {
  std::vector<KeyExpiry> out;
  auto cached = cat.get_meta("vault_config");
  if (!cached) return out;
  VaultConfig vc = decode_config(Bytes(cached->begin(), cached->end()));
  Crypto crypto(gnupghome);
  auto add = [&](const std::string& fpr, const char* role) {
    if (fpr.empty()) return;
    for (const auto& k : out)
      if (k.fingerprint == fpr) return;
    try {
      out.push_back({fpr, role, crypto.key_expires(fpr)});
    } catch (const Error& e) {
      if (e.code() != ErrorCode::kKey) throw;
      if (problems) problems->push_back(std::string(role) + " key " + fpr + ": " + e.what());
    }
  };
  for (const auto& f : vc.archive_keys) add(f, "archive");
  add(vc.agent_key, "agent");
  return out;
}

void write_file_atomically(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw_errno("cannot create " + tmp, errno);
  std::size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      throw_errno("cannot write " + tmp, e);
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) throw_errno("cannot write " + tmp, errno);
  if (::rename(tmp.c_str(), path.c_str()) != 0) throw_errno("cannot rename " + tmp + " to " + path, errno);
}

std::string send_alert_mail(const AlertConfig& cfg, const std::string& subject, const std::string& body) {
  if (cfg.smtp_url.empty()) return "";
  char date[64];
  std::time_t now = static_cast<std::time_t>(clock_now_ns() / 1000000000);  // REDUIT_NOW in tests
  std::tm tm{};
  gmtime_r(&now, &tm);
  std::strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
  std::string to_hdr;
  for (const auto& t : cfg.to) to_hdr += (to_hdr.empty() ? "" : ", ") + t;
  std::string msg = "Date: " + std::string(date) + "\r\nFrom: " + cfg.from + "\r\nTo: " + to_hdr +
                    "\r\nSubject: " + cfg.subject_prefix + " " + subject +
                    "\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n";
  for (char ch : body) {
    if (ch == '\n')
      msg += "\r\n";
    else
      msg += ch;
  }
  msg += "\r\n";
  struct Reader {
    const std::string* s;
    std::size_t pos = 0;
  } reader{&msg};
  CURL* curl = curl_easy_init();
  if (!curl) return "curl_easy_init failed";
  struct curl_slist* rcpt = nullptr;
  for (const auto& t : cfg.to) rcpt = curl_slist_append(rcpt, ("<" + t + ">").c_str());
  curl_easy_setopt(curl, CURLOPT_URL, cfg.smtp_url.c_str());
  curl_easy_setopt(curl, CURLOPT_MAIL_FROM, ("<" + cfg.from + ">").c_str());
  curl_easy_setopt(curl, CURLOPT_MAIL_RCPT, rcpt);
  curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 30L);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, 120L);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_READDATA, &reader);
  curl_easy_setopt(
      curl, CURLOPT_READFUNCTION, +[](char* buf, size_t size, size_t n, void* p) -> size_t {
        auto* r = static_cast<Reader*>(p);
        size_t k = std::min(size * n, r->s->size() - r->pos);
        std::memcpy(buf, r->s->data() + r->pos, k);
        r->pos += k;
        return k;
      });
  CURLcode rc = curl_easy_perform(curl);
  curl_slist_free_all(rcpt);
  curl_easy_cleanup(curl);
  return rc == CURLE_OK ? "" : curl_easy_strerror(rc);
}

}  // namespace reduit
