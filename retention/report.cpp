// retention/report.cpp — builds ReportData (retention/report.hpp) from the catalog,
// the vault and the site facts. Definitions of every figure: docs/COMPLIANCE.md.
#include "retention/report.hpp"

#include <date/date.h>
#include <date/tz.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <ctime>
#include <set>

#include "retention/archive.hpp"
#include "vault/audit.hpp"
#include "vault/error.hpp"

namespace reduit {

namespace {

constexpr std::int64_t kNs = 1000000000;

std::string rfc3339(std::int64_t ns) {
  std::time_t t = static_cast<std::time_t>(ns >= 0 ? ns / kNs : (ns - kNs + 1) / kNs);
  std::tm tmv{};
  gmtime_r(&t, &tmv);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tmv);
  return buf;
}

// 00:00 local time of `d` in `tz`, as UTC ns.
std::int64_t local_midnight(const date::year_month_day& d, const date::time_zone* tz) {
  using Ns = std::chrono::nanoseconds;
  auto lt = date::local_time<Ns>{date::local_days{d}.time_since_epoch()};
  return tz->to_sys(lt, date::choose::earliest).time_since_epoch().count();
}

std::string day_text(const date::year_month_day& d) {
  return date::format("%F", date::sys_days{d});
}

// "YYYY-MM-DD" → ymd, or nullopt.
std::optional<date::year_month_day> parse_day(const std::string& s) {
  int y = 0;
  unsigned m = 0, d = 0;
  int used = 0;
  if (s.size() != 10 || std::sscanf(s.c_str(), "%4d-%2u-%2u%n", &y, &m, &d, &used) != 3 || used != 10)
    return std::nullopt;
  date::year_month_day ymd{date::year{y}, date::month{m}, date::day{d}};
  if (!ymd.ok()) return std::nullopt;
  return ymd;
}

// The seconds `d` adds to `from_ns` in `tz` (calendar arithmetic, add_duration).
std::int64_t duration_seconds(const KeepDuration& d, std::int64_t from_ns, const date::time_zone* tz) {
  return (add_duration(from_ns, d, tz) - from_ns) / kNs;
}

std::string json_string(const nlohmann::ordered_json& j, const char* key) {
  if (!j.is_object() || !j.contains(key)) return "";
  const auto& v = j[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "";
  if (v.is_array()) {
    std::string out;
    for (const auto& e : v)
      out += (out.empty() ? "" : ", ") + (e.is_string() ? e.get<std::string>() : e.dump());
    return out;
  }
  return v.dump();
}

std::uint64_t json_u64(const nlohmann::ordered_json& j, const char* key) {
  if (!j.is_object() || !j.contains(key)) return 0;
  const auto& v = j[key];
  if (v.is_number_unsigned()) return v.get<std::uint64_t>();
  if (v.is_number_integer())
    return static_cast<std::uint64_t>(std::max<std::int64_t>(0, v.get<std::int64_t>()));
  if (v.is_number_float()) return static_cast<std::uint64_t>(std::max(0.0, v.get<double>()));
  return 0;
}

double json_double(const nlohmann::ordered_json& j, const char* key) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_number()) return 0;
  return j[key].get<double>();
}

bool json_bool(const nlohmann::ordered_json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_boolean() && j[key].get<bool>();
}

bool good_result(const std::string& r) {
  return r == "ok" || r == "passed";
}

bool table_exists(SQLite::Database& db, const char* name) {
  SQLite::Statement q(db, "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?");
  q.bind(1, name);
  return q.executeStep();
}

// Gaps between consecutive instants of `points` (sorted) bounded by `start`
// (or the last instant before the period) and `end`.
std::vector<ReportGap> gaps_between(std::vector<std::int64_t> points, std::int64_t start, std::int64_t end) {
  std::vector<ReportGap> out;
  std::sort(points.begin(), points.end());
  std::int64_t prev = start;
  auto add = [&](std::int64_t t) {
    if (t < prev) return;
    out.push_back({rfc3339(prev), rfc3339(t), (t - prev) / kNs});
    prev = t;
  };
  for (std::int64_t t : points) add(t);
  if (end > prev) add(end);
  return out;
}

// True when no two consecutive instants of start, points…, end are further apart
// than `every` (calendar arithmetic in `tz`). `late` gets the first window missed.
bool every_window_met(std::vector<std::int64_t> points, std::int64_t start, std::int64_t end,
                      const KeepDuration& every, const date::time_zone* tz, std::string* late) {
  std::sort(points.begin(), points.end());
  points.push_back(end);
  std::int64_t prev = start;
  for (std::int64_t t : points) {
    if (t < prev) continue;
    if (add_duration(prev, every, tz) < t) {
      *late = "nothing between " + rfc3339(prev) + " and " + rfc3339(t);
      return false;
    }
    prev = t;
  }
  return true;
}

std::string seconds_text(std::int64_t s) {
  char buf[64];
  if (s % 86400 == 0 && s >= 86400)
    std::snprintf(buf, sizeof buf, "%" PRId64 "d", s / 86400);
  else if (s % 3600 == 0 && s >= 3600)
    std::snprintf(buf, sizeof buf, "%" PRId64 "h", s / 3600);
  else
    std::snprintf(buf, sizeof buf, "%" PRId64 "s", s);
  return buf;
}

std::string actor_text(const AuditActor& a) {
  return a.user + (a.uid >= 0 ? "(" + std::to_string(a.uid) + ")" : "") + "@" + a.host;
}

}  // namespace

bool ReportData::all_met() const {
  return std::all_of(findings.begin(), findings.end(),
                     [](const ReportFinding& f) { return f.status == "met"; });
}

std::string pseudonymise_mailbox(const Hash& id_key, const std::string& mailbox) {
  return "mailbox-" + to_hex(hmac_sha256(id_key, mailbox.data(), mailbox.size())).substr(0, 8);
}

ReportPeriod parse_period(const std::string& spec, const date::time_zone* tz) {
  using namespace date;
  auto bad = [&]() -> Error {
    return Error(ErrorCode::kUsage, "period '" + spec +
                                        "' is not YYYY, YYYY-Qn, YYYY-MM, YYYY-MM-DD or FROM..TO "
                                        "(e.g. 2026, 2026-Q3, 2026-07, 2026-01-01..2026-03-31)");
  };
  year_month_day first_d{}, last_d{};
  int y = 0;
  unsigned n = 0;
  int used = 0;
  if (auto dots = spec.find(".."); dots != std::string::npos) {
    auto a = parse_day(spec.substr(0, dots)), b = parse_day(spec.substr(dots + 2));
    if (!a || !b) throw bad();
    if (sys_days{*b} < sys_days{*a})
      throw Error(ErrorCode::kUsage, "period '" + spec + "' ends before it starts");
    first_d = *a;
    last_d = *b;
  } else if (auto d = parse_day(spec)) {
    first_d = last_d = *d;
  } else if (spec.size() == 4 && std::sscanf(spec.c_str(), "%4d%n", &y, &used) == 1 && used == 4) {
    first_d = year{y} / January / 1;
    last_d = year{y} / December / 31;
  } else if (spec.size() == 7 && std::sscanf(spec.c_str(), "%4d-Q%1u%n", &y, &n, &used) == 2 && used == 7) {
    if (n < 1 || n > 4) throw bad();
    first_d = year{y} / month{3 * n - 2} / 1;
    last_d = year_month_day{year{y} / month{3 * n} / date::last};
  } else if (spec.size() == 7 && std::sscanf(spec.c_str(), "%4d-%2u%n", &y, &n, &used) == 2 && used == 7) {
    if (n < 1 || n > 12) throw bad();
    first_d = year{y} / month{n} / 1;
    last_d = year_month_day{year{y} / month{n} / date::last};
  } else {
    throw bad();
  }
  ReportPeriod p;
  p.spec = spec;
  p.first_day = day_text(first_d);
  p.last_day = day_text(last_d);
  p.time_zone = tz->name();
  p.from_ns = local_midnight(first_d, tz);
  p.to_ns = local_midnight(year_month_day{sys_days{last_d} + days{1}}, tz);
  return p;
}

ReportData build_report(Catalog& catalog, Repository& repo, const ReportInputs& in) {
  const Policy& policy = *in.policy;
  const ReportSite& site = in.site;
  const ReportPeriod& period = in.period;
  const date::time_zone* tz = find_time_zone(policy.time_zone);
  const std::int64_t from = period.from_ns, to = period.to_ns;
  const std::int64_t end = std::min(to, std::max(from, in.now_ns));
  auto in_period = [&](std::int64_t t) { return t >= from && t < to; };
  const VaultConfig& vc = repo.config();
  SQLite::Database& db = catalog.db();
  ReportData r;

  // ---- the audit log: every entry, verified as a chain --------------------
  AuditLog audit(db);
  std::vector<AuditEntry> entries = audit.entries();
  r.audit_entries = entries.size();
  if (!entries.empty()) r.audit_head = std::to_string(entries.back().seq) + ":" + to_hex(entries.back().hash);
  {
    Hash prev{};
    for (std::size_t i = 0; i < entries.size(); ++i) {
      const AuditEntry& e = entries[i];
      std::string why;
      if (e.event.empty())
        why = "entry " + std::to_string(i + 1) + " does not parse";
      else if (e.seq != i + 1)
        why = "entry " + std::to_string(i + 1) + " has seq " + std::to_string(e.seq);
      else if (e.prev != prev)
        why = "entry " + std::to_string(e.seq) + ": prev does not match the hash of entry " +
              std::to_string(e.seq - 1);
      else if (audit_entry_hash(e.text) != e.hash)
        why = "entry " + std::to_string(e.seq) + ": stored hash does not match its text";
      if (!why.empty()) {
        r.audit_chain_ok = false;
        r.audit_chain_problem = why;
        break;
      }
      prev = e.hash;
    }
  }
  auto events = [&](std::initializer_list<const char*> names, bool period_only) {
    std::vector<const AuditEntry*> out;
    for (const auto& e : entries) {
      if (period_only && !in_period(e.time_ns)) continue;
      for (const char* n : names)
        if (e.event == n) out.push_back(&e);
    }
    return out;
  };

  // ---- header -------------------------------------------------------------
  ReportHeader& h = r.header;
  h.organisation = site.organisation;
  h.country = site.country;
  h.purpose = site.purpose;
  h.host = site.host;
  h.period = period;
  h.reduit_version = site.reduit_version;
  h.generated_at = rfc3339(in.now_ns);
  h.config_path = site.config_path;
  h.config_digest = site.config_digest;
  h.policy_path = site.policy_path;
  h.policy_name = policy.name;
  h.policy_digest = site.policy_digest;
  h.vault_id = vc.vault_id;
  h.signer = vc.agent_key;
  h.time_stamp_tsa = site.tsa_url;

  // Snapshots in the catalog (forget removes the forgotten ones).
  struct Snap {
    std::string id;
    Snapshot s;
  };
  std::vector<Snap> snaps;
  for (const auto& [id, json] : catalog.snapshot_rows())
    snaps.push_back({id, decode_snapshot(Bytes(json.begin(), json.end()))});
  r.retention.snapshots_kept = snaps.size();
  const Snap* state = nullptr;
  std::set<std::string> scope;
  for (const Snap& s : snaps) {
    if (s.s.time_ns < to) state = &s;
    if (in_period(s.s.time_ns))
      for (const auto& m : s.s.mailboxes) scope.insert(m.name);
  }
  if (state)
    for (const auto& m : state->s.mailboxes) scope.insert(m.name);
  std::set<std::string> domains;
  for (const auto& m : scope) {
    h.mailboxes.push_back(m);
    if (auto at = m.rfind('@'); at != std::string::npos) domains.insert(m.substr(at + 1));
  }
  h.domains.assign(domains.begin(), domains.end());

  // ---- processing record --------------------------------------------------
  ReportProcessing& pr = r.processing;
  pr.purpose = site.purpose;
  pr.legal_basis = policy.legal_basis;
  for (const ArchiveClass& c : policy.classes) {
    pr.classes.push_back({c.name, c.label, c.legal_basis, basis_name(c.basis),
                          c.minimum ? c.minimum->str() : "", c.maximum ? c.maximum->str() : "", c.mailboxes,
                          c.folders});
  }
  ReportStorage st{site.vault_url,          vc.vault_id,         site.vault_operator,
                   site.vault_jurisdiction, site.vault_location, false};
  st.abroad = !st.jurisdiction.empty() && !site.country.empty() && st.jurisdiction != site.country;
  if (st.abroad)
    pr.disclosures_abroad.push_back("vault " + vc.vault_id + " in " + st.jurisdiction + " (operator " +
                                    (st.operator_name.empty() ? "not configured" : st.operator_name) +
                                    "): encrypted before it leaves the host; the operator holds no key");
  pr.storage.push_back(st);
  pr.encryption = {
      "packs: zstd, then one OpenPGP message per pack (RFC 4880) encrypted to every archive key and signed "
      "by the agent key (GnuPG through GPGME); metadata also encrypted to the agent key",
      "blob ids: HMAC-SHA256 (RFC 2104) under the vault's secret id key, so the vault cannot test for a "
      "known "
      "message",
      "pack and object names: SHA-256 (FIPS 180-4) of the stored bytes",
      "audit log: SHA-256 hash chain, heads signed with the agent key (detached OpenPGP signature)"};
  auto key_row = [&](const std::string& role, const std::string& fpr) {
    ReportKey k{role, fpr, {}, "", ""};
    try {
      k.algorithms = repo.crypto().key_algorithms(fpr);
      if (std::int64_t ex = repo.crypto().key_expires(fpr)) k.expires = rfc3339(ex * kNs);
    } catch (const Error&) {
      // Not in this keyring: the report says so by an empty algorithm list.
    }
    if (auto it = site.custodians.find(fpr); it != site.custodians.end()) k.custodian = it->second;
    pr.keys.push_back(k);
  };
  for (const auto& fpr : vc.archive_keys) key_row("archive", fpr);
  key_row("agent", vc.agent_key);
  if (site.vault_url.rfind("sftp://", 0) == 0 || site.vault_url.rfind("ssh://", 0) == 0) {
    pr.host_key_pinning =
        !site.ssh_host_key.empty()
            ? "pinned " + site.ssh_host_key
            : "known_hosts " +
                  (site.ssh_known_hosts.empty() ? std::string("~/.ssh/known_hosts") : site.ssh_known_hosts) +
                  " (unknown host keys are refused)";
  } else {
    pr.host_key_pinning = "not applicable (file:// vault: no network transport)";
  }

  // ---- retention state ----------------------------------------------------
  ReportRetention& rt = r.retention;
  {
    const KeepPolicy& k = policy.snapshots;
    auto count = [&](const char* name, int v) {
      if (v) rt.snapshot_rules.push_back(std::string(name) + " " + (v < 0 ? "unlimited" : std::to_string(v)));
    };
    count("keep-last", k.last);
    count("keep-hourly", k.hourly);
    count("keep-daily", k.daily);
    count("keep-weekly", k.weekly);
    count("keep-monthly", k.monthly);
    count("keep-yearly", k.yearly);
    auto within = [&](const char* name, const std::optional<KeepDuration>& d) {
      if (d) rt.snapshot_rules.push_back(std::string(name) + " " + d->str());
    };
    within("keep-within", k.within);
    within("keep-within-hourly", k.within_hourly);
    within("keep-within-daily", k.within_daily);
    within("keep-within-weekly", k.within_weekly);
    within("keep-within-monthly", k.within_monthly);
    within("keep-within-yearly", k.within_yearly);
  }
  for (const AuditEntry* e : events({"policy-change", "config-change"}, true)) {
    rt.changes.push_back({rfc3339(e->time_ns), e->event, json_string(e->data, "path"),
                          json_string(e->data, "old_digest"), json_string(e->data, "new_digest"),
                          actor_text(e->actor)});
  }
  std::map<std::pair<std::string, std::string>, ReportMailboxClass> per;
  if (state) {
    rt.snapshot_id = state->id;
    rt.snapshot_time = rfc3339(state->s.time_ns);
    SQLite::Statement q(db, "SELECT min(mtime_ns), max(mtime_ns), count(*) FROM tree_messages WHERE tree=?");
    std::map<std::pair<std::string, std::string>, std::pair<std::int64_t, std::int64_t>> span;
    for (const auto& m : state->s.mailboxes) {
      for (const auto& f : m.folders) {
        const ArchiveClass* c = policy.classify(m.name, f.name);
        auto key = std::make_pair(m.name, c ? c->name : std::string());
        ReportMailboxClass& row = per[key];
        row.mailbox = m.name;
        row.klass = key.second;
        row.messages += f.messages;
        row.bytes += f.bytes;
        q.reset();
        q.bind(1, f.tree.data(), static_cast<int>(f.tree.size()));
        if (q.executeStep() && q.getColumn(2).getInt64() > 0) {
          auto& s = span.try_emplace(key, INT64_MAX, INT64_MIN).first->second;
          s.first = std::min(s.first, q.getColumn(0).getInt64());
          s.second = std::max(s.second, q.getColumn(1).getInt64());
        }
      }
    }
    for (auto& [key, s] : span) {
      per[key].oldest = rfc3339(s.first);
      per[key].newest = rfc3339(s.second);
    }
  }
  for (const auto& [key, rec] : load_archive(repo).records) {
    const ArchiveClass* c = policy.classify(rec.mailbox, rec.folder);
    auto k = std::make_pair(rec.mailbox, c ? c->name : std::string());
    ReportMailboxClass& row = per[k];
    row.mailbox = rec.mailbox;
    row.klass = k.second;
    row.archived_messages += 1;
    row.archived_bytes += rec.entry.size;
  }
  for (auto& [k, row] : per) rt.mailboxes.push_back(row);
  for (const Hold& hd : load_holds(repo)) {
    if (hd.created_ns >= to || (hd.released && hd.released_ns < from)) continue;
    rt.holds.push_back({hd.id.substr(0, 12), hd.mailbox, hd.folder, hd.from_ns ? rfc3339(hd.from_ns) : "",
                        hd.to_ns ? rfc3339(hd.to_ns) : "", hd.reason, rfc3339(hd.created_ns),
                        hd.released && hd.released_ns < to ? rfc3339(hd.released_ns) : "",
                        hd.released && hd.released_ns < to ? hd.release_reason : "",
                        !(hd.released && hd.released_ns < to)});
  }

  // ---- deletion evidence --------------------------------------------------
  ReportDeletions& del = r.deletions;
  {
    RetentionLog ensure_tables(catalog);
    SQLite::Statement runs(
        db, "SELECT command, count(*) FROM retention_runs WHERE time_ns>=? AND time_ns<? GROUP BY command");
    runs.bind(1, from);
    runs.bind(2, to);
    while (runs.executeStep()) {
      std::string cmd = runs.getColumn(0).getString();
      if (cmd == "prune") del.prune_runs = static_cast<std::uint64_t>(runs.getColumn(1).getInt64());
      if (cmd == "forget") del.forget_runs = static_cast<std::uint64_t>(runs.getColumn(1).getInt64());
    }
    SQLite::Statement q(db,
                        "SELECT r.time_ns, e.action, e.object, e.class, e.rule, e.bytes, e.detail "
                        "FROM retention_events e JOIN retention_runs r ON e.run = r.id "
                        "WHERE r.time_ns>=? AND r.time_ns<? ORDER BY r.time_ns, e.rowid");
    q.bind(1, from);
    q.bind(2, to);
    std::map<std::pair<std::string, std::string>, std::pair<ReportDeletionRule, std::vector<Hash>>> rules;
    std::vector<Hash> all;
    while (q.executeStep()) {
      std::int64_t t = q.getColumn(0).getInt64();
      std::string action = q.getColumn(1).getString(), object = q.getColumn(2).getString(),
                  klass = q.getColumn(3).getString(), rule = q.getColumn(4).getString(),
                  detail = q.getColumn(6).getString();
      auto bytes = static_cast<std::uint64_t>(std::max<std::int64_t>(0, q.getColumn(5).getInt64()));
      if (action == "forget-snapshot") {
        ++del.snapshots_forgotten;
      } else if (action == "delete-pack") {
        ++del.packs_deleted;
        del.pack_bytes_deleted += bytes;
      } else if (action == "delete-message") {
        Hash id = hash_from_hex(detail, "destroyed message sha256");
        auto& [row, ids] = rules[{klass, rule}];
        if (row.messages == 0) {
          row.klass = klass;
          row.rule = rule;
          row.first = rfc3339(t);
        }
        row.last = rfc3339(t);
        ++row.messages;
        row.bytes += bytes;
        ids.push_back(id);
        all.push_back(id);
        ++del.messages_destroyed;
        del.message_bytes_destroyed += bytes;
      } else if (action == "refuse-delete-hold") {
        del.refused.push_back({rfc3339(t), object, klass, rule, detail});
      }
    }
    for (auto& [k, v] : rules) {
      v.first.merkle_root = to_hex(merkle_root(v.second));
      del.by_rule.push_back(v.first);
    }
    del.merkle_root = to_hex(merkle_root(all));
  }

  // ---- integrity ----------------------------------------------------------
  ReportIntegrity& ig = r.integrity;
  std::vector<const AuditEntry*> checks = events({"check"}, true);
  std::vector<std::int64_t> good_checks;
  for (std::size_t i = 0; i < checks.size(); ++i) {
    const auto& d = checks[i]->data;
    ReportCheck c{rfc3339(checks[i]->time_ns),     json_string(d, "result"),
                  json_bool(d, "read_data"),       json_u64(d, "packs_total"),
                  json_u64(d, "packs_read"),       json_u64(d, "problems"),
                  json_string(d, "first_problem"), ""};
    bool ok = good_result(c.result) && c.problems == 0;
    if (ok) good_checks.push_back(checks[i]->time_ns);
    if (!ok) {
      ++ig.checks_failed;
      if (i + 1 < checks.size())
        c.followed_by = rfc3339(checks[i + 1]->time_ns) + " " + json_string(checks[i + 1]->data, "result");
    }
    ig.packs_read += c.packs_read;
    ig.packs_total = c.packs_total;
    ig.runs.push_back(c);
  }
  ig.checks = checks.size();

  // ---- availability: backups ---------------------------------------------
  ReportAvailability& av = r.availability;
  av.rpo_seconds =
      policy.compliance.rpo ? duration_seconds(*policy.compliance.rpo, from, tz) : site.config_rpo_seconds;
  std::vector<std::int64_t> good_backups;
  std::optional<std::int64_t> good_before;
  if (!events({"backup"}, false).empty()) {
    av.backups_source = "audit_log";
    std::int64_t vault_bytes = 0;
    for (const auto& e : entries) {
      if (e.event == "prune") vault_bytes -= static_cast<std::int64_t>(json_u64(e.data, "bytes_freed"));
      if (e.event != "backup") continue;
      std::string result = json_string(e.data, "result");
      bool ok = good_result(result);
      if (ok) vault_bytes += static_cast<std::int64_t>(json_u64(e.data, "bytes_added"));
      if (e.time_ns < from && ok) good_before = e.time_ns;
      if (!in_period(e.time_ns)) continue;
      av.runs.push_back({rfc3339(e.time_ns), result, json_string(e.data, "snapshot"),
                         json_string(e.data, "error"), json_u64(e.data, "messages"),
                         json_u64(e.data, "bytes_added"), vault_bytes});
      if (ok) good_backups.push_back(e.time_ns);
    }
  } else {
    av.backups_source = "job_runs";
    std::int64_t vault_bytes = 0;
    for (const JobRun& j : catalog.job_runs("backup", 1000000)) {
      std::int64_t t = j.ended * kNs;
      bool ok = j.exit_code == 0 || j.exit_code == 1;
      auto s = nlohmann::ordered_json::parse(j.summary, nullptr, false);
      if (ok) vault_bytes += static_cast<std::int64_t>(json_u64(s, "bytes_new"));
      if (t < from && ok) good_before = t;
      if (!in_period(t)) continue;
      av.runs.push_back({rfc3339(t), ok ? "ok" : "failed", json_string(s, "snapshot"),
                         ok ? "" : "exit " + std::to_string(j.exit_code), json_u64(s, "messages"),
                         json_u64(s, "bytes_new"), vault_bytes});
      if (ok) good_backups.push_back(t);
    }
  }
  av.backups = av.runs.size();
  av.backups_ok = good_backups.size();
  av.backups_failed = av.backups - av.backups_ok;
  av.success_rate = av.backups ? static_cast<double>(av.backups_ok) / static_cast<double>(av.backups) : 0;
  av.gaps = gaps_between(good_backups, good_before.value_or(from), end);
  for (const auto& g : av.gaps)
    if (g.seconds > av.worst_gap.seconds) av.worst_gap = g;

  // ---- availability: drills ----------------------------------------------
  std::vector<std::int64_t> good_drills;
  std::optional<std::int64_t> drill_before;
  if (!events({"drill"}, false).empty()) {
    av.drills_source = "audit_log";
    for (const auto& e : entries) {
      if (e.event != "drill") continue;
      bool ok = good_result(json_string(e.data, "result"));
      if (ok && e.time_ns < from) drill_before = e.time_ns;
      if (!in_period(e.time_ns)) continue;
      const auto& d = e.data;
      av.drill_runs.push_back({rfc3339(e.time_ns), pseudonymise_mailbox(vc.id_key, json_string(d, "mailbox")),
                               json_string(d, "snapshot"), json_string(d, "result"),
                               json_string(d, "failure"), json_double(d, "rto_s"), json_u64(d, "messages")});
      ig.packs_read += json_u64(d, "packs_verified");
      if (ok) good_drills.push_back(e.time_ns);
    }
  } else if (table_exists(db, "drills")) {
    av.drills_source = "drills_table";
    SQLite::Statement q(db,
                        "SELECT time_ns, mailbox, snapshot, passed, restore_seconds, messages, failures, "
                        "packs_verified, packs_total FROM drills ORDER BY time_ns, rowid");
    while (q.executeStep()) {
      std::int64_t t = q.getColumn(0).getInt64();
      bool ok = q.getColumn(3).getInt() != 0;
      if (ok && t < from) drill_before = t;
      if (!in_period(t)) continue;
      std::string failure = q.getColumn(6).getString();
      if (auto nl = failure.find('\n'); nl != std::string::npos) failure.resize(nl);
      av.drill_runs.push_back({rfc3339(t), pseudonymise_mailbox(vc.id_key, q.getColumn(1).getString()),
                               q.getColumn(2).getString(), ok ? "passed" : "failed", failure,
                               q.getColumn(4).getDouble(),
                               static_cast<std::uint64_t>(q.getColumn(5).getInt64())});
      ig.packs_read += static_cast<std::uint64_t>(q.getColumn(7).getInt64());
      if (!ig.packs_total) ig.packs_total = static_cast<std::uint64_t>(q.getColumn(8).getInt64());
      if (ok) good_drills.push_back(t);
    }
  } else {
    av.drills_source = "none";
  }
  av.drills = av.drill_runs.size();
  av.drills_passed = good_drills.size();
  av.drills_failed = av.drills - av.drills_passed;
  ig.packs_read_share =
      ig.packs_total ? std::min(1.0, static_cast<double>(ig.packs_read) / static_cast<double>(ig.packs_total))
                     : 0;

  // ---- access -------------------------------------------------------------
  for (const AuditEntry* e :
       events({"restore", "export", "hold-set", "hold-release", "policy-change", "config-change", "key-added",
               "key-removed", "vault-added", "vault-removed"},
              true)) {
    const auto& d = e->data;
    std::string detail;
    if (e->event == "restore" || e->event == "export")
      detail = "snapshot " + json_string(d, "snapshot").substr(0, 12) + ", " +
               std::to_string(json_u64(d, "messages")) + " messages, " +
               std::to_string(json_u64(d, "bytes")) + " bytes, " + json_string(d, "result");
    else if (e->event == "hold-set" || e->event == "hold-release")
      detail = "hold " + json_string(d, "id").substr(0, 12) + ": " + json_string(d, "reason");
    else if (e->event == "policy-change" || e->event == "config-change")
      detail = json_string(d, "path") + ": " + json_string(d, "old_digest").substr(0, 12) + " -> " +
               json_string(d, "new_digest").substr(0, 12);
    else if (e->event == "key-added" || e->event == "key-removed")
      detail = json_string(d, "role") + " key " + json_string(d, "fingerprint");
    else
      detail = json_string(d, "url");
    r.access.push_back({rfc3339(e->time_ns), e->event, actor_text(e->actor), e->actor.key,
                        json_string(d, "mailboxes"), json_string(d, "target"), detail});
  }

  // ---- findings -----------------------------------------------------------
  auto finding = [&](std::string id, std::string rule, std::string requirement, std::string actual, bool met,
                     std::vector<std::string> evidence) {
    r.findings.push_back({std::move(id), std::move(rule), std::move(requirement), std::move(actual),
                          met ? "met" : "not met", std::move(evidence)});
  };
  const ComplianceRules& cr = policy.compliance;
  {
    std::vector<std::string> ev;
    if (av.worst_gap.seconds > 0)
      ev.push_back("availability.gaps: " + av.worst_gap.from + " .. " + av.worst_gap.to + " (" +
                   std::to_string(av.worst_gap.seconds) + " s)");
    finding("backup-rpo", "RPO " + seconds_text(av.rpo_seconds) + " (DPO Art. 3: availability)",
            "no gap between good backups longer than " + std::to_string(av.rpo_seconds) + " s",
            "worst gap " + std::to_string(av.worst_gap.seconds) + " s",
            av.worst_gap.seconds <= av.rpo_seconds, ev);
  }
  {
    std::vector<std::string> ev;
    for (const auto& b : av.runs)
      if (!good_result(b.result))
        ev.push_back("availability.backups: " + b.time + " " + b.result + ": " + b.error);
    finding("backup-failures", "every backup run succeeds (DPO Art. 3: availability)", "0 failed backup runs",
            std::to_string(av.backups_failed) + " of " + std::to_string(av.backups) + " backup runs failed",
            av.backups_failed == 0 && av.backups > 0, ev);
    if (cr.backup_success) {
      char req[64], act[64];
      std::snprintf(req, sizeof req, "at least %.4f of backup runs succeed", *cr.backup_success);
      std::snprintf(act, sizeof act, "%.4f", av.success_rate);
      finding("backup-success", "backup-success (policy [compliance])", req, act,
              av.backups > 0 && av.success_rate >= *cr.backup_success, ev);
    }
  }
  {
    std::vector<std::string> ev;
    for (const auto& d : av.drill_runs)
      if (!good_result(d.result))
        ev.push_back("availability.drills: " + d.time + " " + d.mailbox + " " + d.result + ": " + d.failure);
    finding("drill-failures", "every restore drill passes (GeBüV Art. 6; DPO Art. 3)", "0 failed drills",
            std::to_string(av.drills_failed) + " of " + std::to_string(av.drills) + " drills failed",
            av.drills_failed == 0 && av.drills > 0, ev);
    if (cr.drill_every) {
      std::string late;
      bool met = every_window_met(good_drills, drill_before.value_or(from), end, *cr.drill_every, tz, &late);
      std::vector<std::string> dev;
      for (const auto& d : av.drill_runs)
        if (good_result(d.result))
          dev.push_back("availability.drills: " + d.time + " " + d.mailbox + " passed");
      if (!met) dev.insert(dev.begin(), late);
      finding("drill-every", "drill-every " + cr.drill_every->str() + " (policy [compliance])",
              "a passed drill at least every " + cr.drill_every->str(),
              std::to_string(av.drills_passed) + " passed drills" + (met ? "" : "; " + late), met, dev);
    }
  }
  {
    std::vector<std::string> ev;
    for (const auto& c : ig.runs)
      if (!good_result(c.result) || c.problems)
        ev.push_back("integrity.checks: " + c.time + " " + c.result + ": " + c.first_problem);
    if (!ig.runs.empty() || cr.check_every)
      finding("check-failures", "every integrity check passes (GeBüV Art. 10)", "0 failed checks",
              std::to_string(ig.checks_failed) + " of " + std::to_string(ig.checks) + " checks failed",
              ig.checks_failed == 0 && ig.checks > 0, ev);
    if (cr.check_every) {
      std::string late;
      bool met = every_window_met(good_checks, from, end, *cr.check_every, tz, &late);
      finding("check-every", "check-every " + cr.check_every->str() + " (policy [compliance])",
              "a passed check at least every " + cr.check_every->str(),
              std::to_string(good_checks.size()) + " passed checks" + (met ? "" : "; " + late), met,
              met ? std::vector<std::string>{} : std::vector<std::string>{late});
    }
  }
  if (!cr.jurisdictions.empty()) {
    std::string allowed;
    for (const auto& j : cr.jurisdictions) allowed += (allowed.empty() ? "" : ", ") + j;
    bool met = std::find(cr.jurisdictions.begin(), cr.jurisdictions.end(), st.jurisdiction) !=
               cr.jurisdictions.end();
    finding("vault-jurisdiction", "vaults in " + allowed + " (FADP Art. 16)",
            "every vault's jurisdiction in " + allowed,
            "vault " + vc.vault_id + ": " + (st.jurisdiction.empty() ? "not declared" : st.jurisdiction), met,
            {"processing.storage: " + st.url});
  }
  {
    std::vector<std::string> missing;
    for (const auto& k : pr.keys)
      if (k.role == "archive" && k.custodian.empty()) missing.push_back("processing.keys: " + k.fingerprint);
    finding("key-custodians", "every archive key has a named custodian (DPO Art. 3: confidentiality)",
            "[keys] custodians names each archive key",
            std::to_string(missing.size()) + " archive key(s) without a custodian", missing.empty(), missing);
  }
  if (std::any_of(policy.classes.begin(), policy.classes.end(),
                  [](const ArchiveClass& c) { return c.maximum.has_value(); })) {
    std::vector<std::string> ev;
    for (const auto& d : del.by_rule)
      ev.push_back("deletions.by_rule: " + d.klass + " / " + d.rule + ": " + std::to_string(d.messages) +
                   " messages");
    for (const auto& f : del.refused) ev.push_back("deletions.refused: " + f.object + " (" + f.rule + ")");
    finding("retention-maximum",
            "messages past their class maximum are destroyed unless held (FADP Art. 6(4))",
            "at least one prune run in the period",
            std::to_string(del.prune_runs) + " prune run(s), " + std::to_string(del.messages_destroyed) +
                " messages destroyed, " + std::to_string(del.refused.size()) + " refused under a hold",
            del.prune_runs > 0, ev);
  }
  {
    // The snapshot rules are applied when forget runs (the audit log has every run,
    // the retention log only those that removed a snapshot).
    std::uint64_t forgets = events({"forget"}, true).size();
    std::string rules;
    for (const auto& x : rt.snapshot_rules) rules += (rules.empty() ? "" : ", ") + x;
    finding("snapshot-rules",
            "snapshot rules " + rules + " applied (FADP Art. 6(4); restic forget semantics)",
            "at least one forget run in the period",
            std::to_string(forgets) + " forget run(s), " + std::to_string(del.snapshots_forgotten) +
                " snapshots forgotten",
            forgets > 0, {"deletions: " + std::to_string(del.snapshots_forgotten) + " snapshots forgotten"});
  }
  finding("audit-chain", "the audit log is complete and unaltered (GeBüV Art. 3; DPO Art. 4)",
          "every entry's seq and prev hash verify",
          r.audit_chain_ok ? std::to_string(r.audit_entries) + " entries verified" : r.audit_chain_problem,
          r.audit_chain_ok,
          r.audit_chain_ok ? std::vector<std::string>{} : std::vector<std::string>{r.audit_chain_problem});
  return r;
}

}  // namespace reduit
