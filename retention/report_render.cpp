// retention/report_render.cpp — the compliance report as JSON (the source of
// truth, docs/report-schema.json), Markdown and one self-contained HTML file.
//
// Markdown and HTML print the same ReportData fields with the same number
// formatting as the JSON (integers as integers, shares with 4 decimals), so a
// figure read in one is the figure in the others. The HTML has no script and no
// external resource: a CSP meta tag forbids everything but inline styles and
// data: images; charts are inline SVG.
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <ctime>

#include "retention/report.hpp"
#include "vault/clock.hpp"

namespace reduit {

namespace {

using J = nlohmann::ordered_json;

std::string share(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4f", v);
  return buf;
}

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", v);
  return buf;
}

J strings(const std::vector<std::string>& v) {
  J a = J::array();
  for (const auto& s : v) a.push_back(s);
  return a;
}

template <typename T, typename F>
J rows(const std::vector<T>& v, F&& f) {
  J a = J::array();
  for (const auto& e : v) a.push_back(f(e));
  return a;
}

J gap_json(const ReportGap& g) {
  return {{"from", g.from}, {"to", g.to}, {"seconds", g.seconds}};
}

}  // namespace

J report_json(const ReportData& r) {
  const ReportHeader& h = r.header;
  J out;
  out["schema"] = "https://reduit.example/report-schema/v1";
  out["header"] = {
      {"organisation", h.organisation},
      {"country", h.country},
      {"host", h.host},
      {"scope", {{"domains", strings(h.domains)}, {"mailboxes", strings(h.mailboxes)}}},
      {"period",
       {{"spec", h.period.spec},
        {"first_day", h.period.first_day},
        {"last_day", h.period.last_day},
        {"time_zone", h.period.time_zone}}},
      {"reduit_version", h.reduit_version},
      {"generated_at", h.generated_at},
      {"config", {{"path", h.config_path}, {"sha256", h.config_digest}}},
      {"policy", {{"path", h.policy_path}, {"name", h.policy_name}, {"sha256", h.policy_digest}}},
      {"vault_id", h.vault_id},
      {"signer", h.signer},
      {"time_stamp_tsa", h.time_stamp_tsa}};
  const ReportProcessing& p = r.processing;
  out["processing"] = {{"purpose", p.purpose},
                       {"legal_basis", p.legal_basis},
                       {"classes", rows(p.classes,
                                        [](const ReportClass& c) {
                                          return J{{"name", c.name},
                                                   {"label", c.label},
                                                   {"legal_basis", c.legal_basis},
                                                   {"basis", c.basis},
                                                   {"minimum", c.minimum},
                                                   {"maximum", c.maximum},
                                                   {"mailboxes", strings(c.mailboxes)},
                                                   {"folders", strings(c.folders)}};
                                        })},
                       {"storage", rows(p.storage,
                                        [](const ReportStorage& s) {
                                          return J{{"url", s.url},
                                                   {"vault_id", s.vault_id},
                                                   {"operator", s.operator_name},
                                                   {"jurisdiction", s.jurisdiction},
                                                   {"location", s.location},
                                                   {"abroad", s.abroad}};
                                        })},
                       {"disclosures_abroad", strings(p.disclosures_abroad)},
                       {"security",
                        {{"encryption", strings(p.encryption)},
                         {"keys", rows(p.keys,
                                       [](const ReportKey& k) {
                                         return J{{"role", k.role},
                                                  {"fingerprint", k.fingerprint},
                                                  {"algorithms", strings(k.algorithms)},
                                                  {"custodian", k.custodian},
                                                  {"expires", k.expires}};
                                       })},
                         {"host_key_pinning", p.host_key_pinning}}}};
  const ReportRetention& rt = r.retention;
  out["retention"] = {{"snapshot_rules", strings(rt.snapshot_rules)},
                      {"changes", rows(rt.changes,
                                       [](const ReportChange& c) {
                                         return J{{"time", c.time},
                                                  {"event", c.event},
                                                  {"path", c.path},
                                                  {"old_digest", c.old_digest},
                                                  {"new_digest", c.new_digest},
                                                  {"actor", c.actor}};
                                       })},
                      {"state_snapshot", {{"id", rt.snapshot_id}, {"time", rt.snapshot_time}}},
                      {"snapshots_kept", rt.snapshots_kept},
                      {"mailboxes", rows(rt.mailboxes,
                                         [](const ReportMailboxClass& m) {
                                           return J{{"mailbox", m.mailbox},
                                                    {"class", m.klass},
                                                    {"messages", m.messages},
                                                    {"bytes", m.bytes},
                                                    {"archived_messages", m.archived_messages},
                                                    {"archived_bytes", m.archived_bytes},
                                                    {"oldest", m.oldest},
                                                    {"newest", m.newest}};
                                         })},
                      {"holds", rows(rt.holds, [](const ReportHold& x) {
                         return J{{"id", x.id},
                                  {"mailbox", x.mailbox},
                                  {"folder", x.folder},
                                  {"from", x.from},
                                  {"to", x.to},
                                  {"reason", x.reason},
                                  {"created", x.created},
                                  {"active", x.active},
                                  {"released_at", x.released_at},
                                  {"release_reason", x.release_reason}};
                       })}};
  const ReportDeletions& d = r.deletions;
  out["deletions"] = {
      {"prune_runs", d.prune_runs},
      {"forget_runs", d.forget_runs},
      {"snapshots_forgotten", d.snapshots_forgotten},
      {"messages_destroyed", d.messages_destroyed},
      {"message_bytes_destroyed", d.message_bytes_destroyed},
      {"packs_deleted", d.packs_deleted},
      {"pack_bytes_deleted", d.pack_bytes_deleted},
      {"merkle_root", d.merkle_root},
      {"by_rule",
       rows(d.by_rule,
            [](const ReportDeletionRule& x) {
              return J{
                  {"class", x.klass}, {"rule", x.rule}, {"messages", x.messages},      {"bytes", x.bytes},
                  {"first", x.first}, {"last", x.last}, {"merkle_root", x.merkle_root}};
            })},
      {"refused", rows(d.refused, [](const ReportRefusal& x) {
         return J{{"time", x.time},
                  {"object", x.object},
                  {"class", x.klass},
                  {"rule", x.rule},
                  {"sha256", x.sha256}};
       })}};
  const ReportIntegrity& ig = r.integrity;
  out["integrity"] = {{"checks", ig.checks},
                      {"checks_failed", ig.checks_failed},
                      {"packs_read", ig.packs_read},
                      {"packs_total", ig.packs_total},
                      {"packs_read_share", std::stod(share(ig.packs_read_share))},
                      {"runs", rows(ig.runs,
                                    [](const ReportCheck& c) {
                                      return J{{"time", c.time},
                                               {"result", c.result},
                                               {"read_data", c.read_data},
                                               {"packs_total", c.packs_total},
                                               {"packs_read", c.packs_read},
                                               {"problems", c.problems},
                                               {"first_problem", c.first_problem},
                                               {"followed_by", c.followed_by}};
                                    })},
                      {"audit_entries", r.audit_entries},
                      {"audit_head", r.audit_head},
                      {"audit_chain_ok", r.audit_chain_ok},
                      {"audit_chain_problem", r.audit_chain_problem}};
  const ReportAvailability& a = r.availability;
  out["availability"] = {{"backups",
                          {{"source", a.backups_source},
                           {"runs", a.backups},
                           {"ok", a.backups_ok},
                           {"failed", a.backups_failed},
                           {"success_rate", std::stod(share(a.success_rate))},
                           {"rpo_seconds", a.rpo_seconds},
                           {"worst_gap", gap_json(a.worst_gap)},
                           {"gaps", rows(a.gaps, gap_json)},
                           {"list", rows(a.runs,
                                         [](const ReportBackup& b) {
                                           return J{{"time", b.time},
                                                    {"result", b.result},
                                                    {"snapshot", b.snapshot},
                                                    {"error", b.error},
                                                    {"messages", b.messages},
                                                    {"bytes_added", b.bytes_added},
                                                    {"vault_bytes", b.vault_bytes}};
                                         })}}},
                         {"drills",
                          {{"source", a.drills_source},
                           {"runs", a.drills},
                           {"passed", a.drills_passed},
                           {"failed", a.drills_failed},
                           {"list", rows(a.drill_runs, [](const ReportDrill& x) {
                              return J{
                                  {"time", x.time},         {"mailbox", x.mailbox},
                                  {"snapshot", x.snapshot}, {"result", x.result},
                                  {"failure", x.failure},   {"rto_seconds", std::stod(num(x.rto_seconds))},
                                  {"messages", x.messages}};
                            })}}}};
  out["access"] = rows(r.access, [](const ReportAccess& x) {
    return J{{"time", x.time},           {"event", x.event},   {"actor", x.actor},  {"key", x.key},
             {"mailboxes", x.mailboxes}, {"target", x.target}, {"detail", x.detail}};
  });
  std::uint64_t met = 0;
  for (const auto& f : r.findings) met += f.status == "met";
  out["findings"] = {{"met", met},
                     {"not_met", r.findings.size() - met},
                     {"list", rows(r.findings, [](const ReportFinding& f) {
                        return J{
                            {"id", f.id},         {"rule", f.rule},     {"requirement", f.requirement},
                            {"actual", f.actual}, {"status", f.status}, {"evidence", strings(f.evidence)}};
                      })}};
  return out;
}

// ---- Markdown ----------------------------------------------------------------

namespace {

std::string md_cell(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '|')
      out += "\\|";
    else if (c == '\n')
      out += ' ';
    else
      out += c;
  }
  return out.empty() ? "—" : out;
}

// A table from JSON rows: the header row is the keys of the first row.
std::string md_table(const J& list, const std::vector<std::string>& keys) {
  if (list.empty()) return "_none_\n\n";
  std::string out = "|";
  for (const auto& k : keys) out += " " + k + " |";
  out += "\n|";
  for (std::size_t i = 0; i < keys.size(); ++i) out += " --- |";
  out += "\n";
  for (const auto& row : list) {
    out += "|";
    for (const auto& k : keys) {
      const J& v = row[k];
      std::string text;
      if (v.is_string())
        text = v.get<std::string>();
      else if (v.is_array()) {
        for (const auto& e : v)
          text += (text.empty() ? "" : ", ") + (e.is_string() ? e.get<std::string>() : e.dump());
      } else
        text = v.dump();
      out += " " + md_cell(text) + " |";
    }
    out += "\n";
  }
  return out + "\n";
}

std::string scalar(const J& v) {
  return v.is_string() ? v.get<std::string>() : v.dump();
}

}  // namespace

std::string render_markdown(const ReportData& r) {
  J j = report_json(r);
  const J& h = j["header"];
  std::string o;
  o += "# Compliance report " + scalar(h["period"]["spec"]) + " — " +
       (r.header.organisation.empty() ? "(organisation not configured)" : r.header.organisation) + "\n\n";
  o += "## 1. Header\n\n";
  o += "| field | value |\n| --- | --- |\n";
  auto kv = [&](const std::string& k, const std::string& v) { o += "| " + k + " | " + md_cell(v) + " |\n"; };
  kv("organisation", r.header.organisation);
  kv("country", r.header.country);
  kv("host", r.header.host);
  std::string doms, mbs;
  for (const auto& d : r.header.domains) doms += (doms.empty() ? "" : ", ") + d;
  for (const auto& m : r.header.mailboxes) mbs += (mbs.empty() ? "" : ", ") + m;
  kv("scope: domains", doms);
  kv("scope: mailboxes", mbs);
  kv("period", r.header.period.spec + " (" + r.header.period.first_day + " .. " + r.header.period.last_day +
                   ", " + r.header.period.time_zone + ")");
  kv("reduit version", r.header.reduit_version);
  kv("generated at", r.header.generated_at);
  kv("config", r.header.config_path + " sha256 " + r.header.config_digest);
  kv("policy", r.header.policy_name + " " + r.header.policy_path + " sha256 " + r.header.policy_digest);
  kv("vault id", r.header.vault_id);
  kv("signed by", r.header.signer);
  kv("time-stamped by (RFC 3161, FILE.tsr)", r.header.time_stamp_tsa);
  o += "\n## 2. Processing record excerpt\n\n";
  o += "Purpose: " + md_cell(r.processing.purpose) + "\n\nLegal basis: " + md_cell(r.processing.legal_basis) +
       "\n\n";
  o += "### Retention classes\n\n" +
       md_table(j["processing"]["classes"],
                {"name", "label", "legal_basis", "basis", "minimum", "maximum", "mailboxes", "folders"});
  o += "### Storage locations\n\n" +
       md_table(j["processing"]["storage"],
                {"url", "vault_id", "operator", "jurisdiction", "location", "abroad"});
  o += "### Disclosures abroad\n\n";
  if (r.processing.disclosures_abroad.empty()) o += "none\n\n";
  for (const auto& s : r.processing.disclosures_abroad) o += "- " + s + "\n";
  o += "### Security measures\n\n";
  for (const auto& s : r.processing.encryption) o += "- " + s + "\n";
  o += "- SSH host key: " + r.processing.host_key_pinning + "\n\n";
  o += md_table(j["processing"]["security"]["keys"],
                {"role", "fingerprint", "algorithms", "custodian", "expires"});
  o += "## 3. Retention state\n\nRules in force: ";
  for (std::size_t i = 0; i < r.retention.snapshot_rules.size(); ++i)
    o += (i ? ", " : "") + r.retention.snapshot_rules[i];
  o += "\n\n### Changes\n\n" +
       md_table(j["retention"]["changes"], {"time", "event", "path", "old_digest", "new_digest", "actor"});
  o += "### Mailboxes (snapshot " + r.retention.snapshot_id.substr(0, 12) + " of " +
       r.retention.snapshot_time + ")\n\n" +
       md_table(j["retention"]["mailboxes"], {"mailbox", "class", "messages", "bytes", "archived_messages",
                                              "archived_bytes", "oldest", "newest"});
  o += "### Legal holds\n\n" +
       md_table(j["retention"]["holds"], {"id", "mailbox", "folder", "from", "to", "reason", "created",
                                          "active", "released_at", "release_reason"});
  const J& d = j["deletions"];
  o += "## 4. Deletion evidence\n\n";
  o += "| prune runs | forget runs | snapshots forgotten | messages destroyed | message bytes destroyed | "
       "packs deleted | "
       "pack bytes deleted | Merkle root |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n| " +
       scalar(d["prune_runs"]) + " | " + scalar(d["forget_runs"]) + " | " + scalar(d["snapshots_forgotten"]) +
       " | " + scalar(d["messages_destroyed"]) + " | " + scalar(d["message_bytes_destroyed"]) + " | " +
       scalar(d["packs_deleted"]) + " | " + scalar(d["pack_bytes_deleted"]) + " | " +
       scalar(d["merkle_root"]) + " |\n\n";
  o += "### Per rule\n\n" +
       md_table(d["by_rule"], {"class", "rule", "messages", "bytes", "first", "last", "merkle_root"});
  o += "### Refused\n\n" + md_table(d["refused"], {"time", "object", "class", "rule", "sha256"});
  const J& ig = j["integrity"];
  o += "## 5. Integrity\n\nChecks: " + scalar(ig["checks"]) + ", failed: " + scalar(ig["checks_failed"]) +
       ", packs read: " + scalar(ig["packs_read"]) + " of " + scalar(ig["packs_total"]) + " (share " +
       share(r.integrity.packs_read_share) + "). Audit log: " + scalar(ig["audit_entries"]) +
       " entries, chain " + (r.audit_chain_ok ? "verified" : "BROKEN: " + r.audit_chain_problem) +
       ", head `" + r.audit_head + "` (check it later with `reduit audit verify --anchor " + r.audit_head +
       "`).\n\n";
  o += md_table(ig["runs"], {"time", "result", "read_data", "packs_total", "packs_read", "problems",
                             "first_problem", "followed_by"});
  const J& b = j["availability"]["backups"];
  o += "## 6. Availability\n\nBackups (" + scalar(b["source"]) + "): " + scalar(b["runs"]) + " runs, " +
       scalar(b["ok"]) + " ok, " + scalar(b["failed"]) + " failed, success rate " +
       share(r.availability.success_rate) +
       ". Worst gap between good backups: " + scalar(b["worst_gap"]["seconds"]) + " s (" +
       scalar(b["worst_gap"]["from"]) + " .. " + scalar(b["worst_gap"]["to"]) + "); RPO " +
       scalar(b["rpo_seconds"]) + " s.\n\n";
  J failed = J::array();
  for (const auto& x : b["list"])
    if (x["result"] != "ok") failed.push_back(x);
  o += "### Failed backups\n\n" + md_table(failed, {"time", "result", "error"});
  const J& dr = j["availability"]["drills"];
  o += "### Drills (" + scalar(dr["source"]) + "): " + scalar(dr["runs"]) + " runs, " + scalar(dr["passed"]) +
       " passed, " + scalar(dr["failed"]) + " failed\n\n" +
       md_table(dr["list"], {"time", "mailbox", "snapshot", "result", "rto_seconds", "messages", "failure"});
  o += "## 7. Access\n\n" +
       md_table(j["access"], {"time", "event", "actor", "key", "mailboxes", "target", "detail"});
  o += "## 8. Findings\n\n" + scalar(j["findings"]["met"]) + " met, " + scalar(j["findings"]["not_met"]) +
       " not met.\n\n" +
       md_table(j["findings"]["list"], {"id", "status", "rule", "requirement", "actual", "evidence"});
  return o;
}

// ---- HTML --------------------------------------------------------------------

namespace {

std::string esc(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string cell_text(const J& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_array()) {
    std::string t;
    for (const auto& e : v) t += (t.empty() ? "" : "; ") + (e.is_string() ? e.get<std::string>() : e.dump());
    return t;
  }
  return v.dump();
}

std::string html_table(const J& list, const std::vector<std::string>& keys, const char* cls = "") {
  if (list.empty()) return "<p class=\"none\">none</p>\n";
  std::string o = std::string("<table class=\"") + cls + "\"><thead><tr>";
  for (const auto& k : keys) o += "<th>" + esc(k) + "</th>";
  o += "</tr></thead><tbody>\n";
  for (const auto& row : list) {
    std::string rc;
    if (row.contains("status")) rc = row["status"] == "met" ? " class=\"met\"" : " class=\"notmet\"";
    if (row.contains("result") && row["result"].is_string() && row["result"] != "ok" &&
        row["result"] != "passed")
      rc = " class=\"notmet\"";
    o += "<tr" + rc + ">";
    for (const auto& k : keys) {
      bool n = row[k].is_number();
      o += std::string(n ? "<td class=\"n\">" : "<td>") + esc(cell_text(row[k])) + "</td>";
    }
    o += "</tr>\n";
  }
  return o + "</tbody></table>\n";
}

// One object as a two-column table (label, value): summaries stay inside the page.
std::string html_kv(const J& obj, const std::vector<std::string>& keys) {
  std::string o = "<table class=\"kv\"><tbody>";
  for (const auto& k : keys) {
    bool n = obj[k].is_number();
    o += "<tr><th>" + esc(k) + "</th>" + (n ? "<td class=\"n\">" : "<td>") + esc(cell_text(obj[k])) +
         "</td></tr>";
  }
  return o + "</tbody></table>\n";
}

std::int64_t parse_time(const std::string& s) {
  auto t = parse_instant(s);
  return t ? *t : 0;
}

// Axis box of all charts (SVG user units).
constexpr double kW = 720, kH = 180, kL = 60, kR = 10, kT = 10, kB = 30;

std::string svg_open(const std::string& title) {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %.0f %.0f\" role=\"img\" "
                "aria-label=\"%s\" class=\"chart\">",
                kW, kH, esc(title).c_str());
  return buf;
}

std::string svg_axes(const std::string& y_label, const std::string& x_first, const std::string& x_last) {
  char buf[1024];
  std::snprintf(buf, sizeof buf,
                "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" class=\"axis\"/>"
                "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" class=\"axis\"/>"
                "<text x=\"%.0f\" y=\"%.0f\" class=\"lbl\">%s</text>"
                "<text x=\"%.0f\" y=\"%.0f\" class=\"lbl\">%s</text>"
                "<text x=\"%.0f\" y=\"%.0f\" class=\"lbl\" text-anchor=\"end\">%s</text>",
                kL, kT, kL, kH - kB, kL, kH - kB, kW - kR, kH - kB, 2.0, kT + 10, esc(y_label).c_str(), kL,
                kH - kB + 15, esc(x_first).c_str(), kW - kR, kH - kB + 15, esc(x_last).c_str());
  return buf;
}

}  // namespace

std::string render_html(const ReportData& r) {
  J j = report_json(r);
  const ReportHeader& h = r.header;
  std::string o;
  o +=
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
      "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
      "img-src data:\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
  o += "<title>Compliance report " + esc(h.period.spec) + " — " + esc(h.organisation) + "</title>\n";
  o += R"(<style>
body{font-family:"DejaVu Sans",Helvetica,Arial,sans-serif;font-size:10pt;margin:1.5cm;color:#111}
h1{font-size:17pt;margin:0 0 .3em}h2{font-size:13pt;border-bottom:1px solid #888;margin-top:1.4em}
h3{font-size:11pt}table{border-collapse:collapse;width:100%;margin:.4em 0 1em}
th,td{border:1px solid #bbb;padding:2px 4px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#eee;overflow-wrap:normal}td:first-child{overflow-wrap:normal}.kv td.n{text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.notmet td{background:#fde2e2}tr.met td{background:#e5f5e5}.none{color:#666;font-style:italic}
.chart{width:100%;max-width:18cm;height:auto;border:1px solid #ddd;margin:.3em 0}
.axis{stroke:#333;stroke-width:1}.lbl{font-size:10px;fill:#333}.ok{fill:#2a8a2a}.bad{fill:#c62828}
.line{fill:none;stroke:#1f5fbf;stroke-width:1.5}.rpo{stroke:#c62828;stroke-dasharray:4 3}
.kv th{width:28%}.mono{font-family:"DejaVu Sans Mono",monospace;font-size:9pt}
@media print{body{margin:0}h2{break-after:avoid}table,svg{break-inside:avoid}@page{size:A4;margin:1.5cm}}
</style></head><body>
)";
  o += "<h1>Compliance report " + esc(h.period.spec) + "</h1>\n";
  // 1. Header
  o += "<section id=\"header\"><h2>1. Header</h2><table class=\"kv\"><tbody>\n";
  auto kv = [&](const std::string& k, const std::string& v, bool mono = false) {
    o += "<tr><th>" + esc(k) + "</th><td" + (mono ? " class=\"mono\"" : "") + ">" + esc(v) + "</td></tr>\n";
  };
  std::string doms, mbs;
  for (const auto& d : h.domains) doms += (doms.empty() ? "" : ", ") + d;
  for (const auto& m : h.mailboxes) mbs += (mbs.empty() ? "" : ", ") + m;
  kv("organisation", h.organisation.empty() ? "(not configured)" : h.organisation);
  kv("country", h.country);
  kv("host", h.host);
  kv("scope: domains", doms);
  kv("scope: mailboxes", mbs);
  kv("period", h.period.spec + " (" + h.period.first_day + " .. " + h.period.last_day + ", " +
                   h.period.time_zone + ")");
  kv("reduit version", h.reduit_version);
  kv("generated at", h.generated_at);
  kv("config", h.config_path);
  kv("config sha256", h.config_digest, true);
  kv("policy", h.policy_name + " (" + h.policy_path + ")");
  kv("policy sha256", h.policy_digest, true);
  kv("vault id", h.vault_id, true);
  kv("signed by (detached OpenPGP signature, FILE.asc)", h.signer, true);
  kv("time-stamped by (RFC 3161 response over the file, FILE.tsr)",
     h.time_stamp_tsa.empty() ? "(no time-stamping authority configured)" : h.time_stamp_tsa);
  o += "</tbody></table></section>\n";
  // 2. Processing record
  const J& p = j["processing"];
  o += "<section id=\"processing\"><h2>2. Processing record excerpt</h2>\n<p><b>Purpose:</b> " +
       esc(r.processing.purpose) + "</p><p><b>Legal basis:</b> " + esc(r.processing.legal_basis) + "</p>\n";
  o += "<h3>Retention classes</h3>" +
       html_table(p["classes"],
                  {"name", "label", "legal_basis", "basis", "minimum", "maximum", "mailboxes", "folders"});
  o += "<h3>Storage locations</h3>" +
       html_table(p["storage"], {"url", "vault_id", "operator", "jurisdiction", "location", "abroad"});
  o += "<h3>Disclosures abroad</h3>";
  if (r.processing.disclosures_abroad.empty())
    o += "<p>none</p>";
  else {
    o += "<ul>";
    for (const auto& s : r.processing.disclosures_abroad) o += "<li>" + esc(s) + "</li>";
    o += "</ul>";
  }
  o += "\n<h3>Security measures</h3><ul>";
  for (const auto& s : r.processing.encryption) o += "<li>" + esc(s) + "</li>";
  o += "<li>SSH host key: " + esc(r.processing.host_key_pinning) + "</li></ul>\n";
  o += html_table(p["security"]["keys"], {"role", "fingerprint", "algorithms", "custodian", "expires"});
  o += "</section>\n";
  // 3. Retention state
  const J& rt = j["retention"];
  o += "<section id=\"retention\"><h2>3. Retention state</h2><p><b>Rules in force:</b> ";
  for (std::size_t i = 0; i < r.retention.snapshot_rules.size(); ++i)
    o += (i ? ", " : "") + esc(r.retention.snapshot_rules[i]);
  o += "</p>\n<h3>Changes</h3>" +
       html_table(rt["changes"], {"time", "event", "path", "old_digest", "new_digest", "actor"});
  o += "<h3>Mailboxes (snapshot " + esc(r.retention.snapshot_id.substr(0, 12)) + " of " +
       esc(r.retention.snapshot_time) + ")</h3>" +
       html_table(rt["mailboxes"], {"mailbox", "class", "messages", "bytes", "archived_messages",
                                    "archived_bytes", "oldest", "newest"});
  o += "<h3>Legal holds</h3>" +
       html_table(rt["holds"], {"id", "mailbox", "folder", "from", "to", "reason", "created", "active",
                                "released_at", "release_reason"});
  o += "</section>\n";
  // 4. Deletions
  const J& d = j["deletions"];
  o += "<section id=\"deletions\"><h2>4. Deletion evidence</h2>";
  o += html_kv(d, {"prune_runs", "forget_runs", "snapshots_forgotten", "messages_destroyed",
                   "message_bytes_destroyed", "packs_deleted", "pack_bytes_deleted", "merkle_root"});
  o += "<h3>Per rule</h3>" +
       html_table(d["by_rule"], {"class", "rule", "messages", "bytes", "first", "last", "merkle_root"});
  o += "<h3>Deletions refused</h3>" + html_table(d["refused"], {"time", "object", "class", "rule", "sha256"});
  o += "</section>\n";
  // 5. Integrity
  const J& ig = j["integrity"];
  o += "<section id=\"integrity\"><h2>5. Integrity</h2>";
  o += html_kv(ig, {"checks", "checks_failed", "packs_read", "packs_total", "packs_read_share",
                    "audit_entries", "audit_head", "audit_chain_ok", "audit_chain_problem"});
  o += html_table(ig["runs"], {"time", "result", "read_data", "packs_total", "packs_read", "problems",
                               "first_problem", "followed_by"});
  o += "</section>\n";
  // 6. Availability, with the charts.
  const J& b = j["availability"]["backups"];
  const ReportAvailability& av = r.availability;
  o += "<section id=\"availability\"><h2>6. Availability</h2>";
  J summary = {{"source", b["source"]},
               {"runs", b["runs"]},
               {"ok", b["ok"]},
               {"failed", b["failed"]},
               {"success_rate", b["success_rate"]},
               {"rpo_seconds", b["rpo_seconds"]},
               {"worst_gap_seconds", b["worst_gap"]["seconds"]},
               {"worst_gap_from", b["worst_gap"]["from"]},
               {"worst_gap_to", b["worst_gap"]["to"]}};
  o += "<h3>Backups</h3>" + html_kv(summary, {"source", "runs", "ok", "failed", "success_rate", "rpo_seconds",
                                              "worst_gap_seconds", "worst_gap_from", "worst_gap_to"});
  {
    // Chart: one tick per backup (green ok, red failed) and the vault size line.
    const double x0 = static_cast<double>(h.period.from_ns), x1 = static_cast<double>(h.period.to_ns);
    auto X = [&](std::int64_t t) {
      return kL + (kW - kL - kR) * (static_cast<double>(t) - x0) / std::max(1.0, x1 - x0);
    };
    std::int64_t max_bytes = 1;
    for (const auto& x : av.runs) max_bytes = std::max(max_bytes, x.vault_bytes);
    auto Y = [&](double v) { return kH - kB - (kH - kB - kT) * v / static_cast<double>(max_bytes); };
    o += "<h3>Backups and vault size over time</h3>" + svg_open("backups and vault size over time") +
         svg_axes("vault bytes (max " + std::to_string(max_bytes) + ")", h.period.first_day,
                  h.period.last_day);
    std::string line;
    char buf[160];
    for (const auto& x : av.runs) {
      double xx = X(parse_time(x.time));
      bool ok = x.result == "ok" || x.result == "passed";
      std::snprintf(buf, sizeof buf,
                    "<rect x=\"%.2f\" y=\"%.2f\" width=\"1.2\" height=\"%.2f\" class=\"%s\"/>", xx,
                    ok ? kH - kB - 6 : kT, ok ? 6.0 : kH - kB - kT, ok ? "ok" : "bad");
      o += buf;
      std::snprintf(buf, sizeof buf, "%.2f,%.2f ", xx, Y(static_cast<double>(x.vault_bytes)));
      line += buf;
    }
    if (!line.empty()) o += "<polyline class=\"line\" points=\"" + line + "\"/>";
    o += "</svg>\n";
    // Chart: the gaps between good backups against the RPO.
    std::int64_t max_gap =
        std::max<std::int64_t>(av.rpo_seconds, std::max<std::int64_t>(1, av.worst_gap.seconds));
    auto GY = [&](double v) { return kH - kB - (kH - kB - kT) * v / static_cast<double>(max_gap); };
    o += "<h3>Gaps between good backups (RPO " + std::to_string(av.rpo_seconds) + " s, dashed)</h3>" +
         svg_open("gaps between good backups") +
         svg_axes("gap s (max " + std::to_string(max_gap) + ")", h.period.first_day, h.period.last_day);
    for (const auto& g : av.gaps) {
      double xa = X(parse_time(g.from)), xb = X(parse_time(g.to));
      std::snprintf(buf, sizeof buf,
                    "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" class=\"%s\"/>", xa,
                    GY(static_cast<double>(g.seconds)), std::max(0.8, xb - xa - 0.2),
                    kH - kB - GY(static_cast<double>(g.seconds)), g.seconds > av.rpo_seconds ? "bad" : "ok");
      o += buf;
    }
    std::snprintf(buf, sizeof buf, "<line x1=\"%.0f\" y1=\"%.2f\" x2=\"%.0f\" y2=\"%.2f\" class=\"rpo\"/>",
                  kL, GY(static_cast<double>(av.rpo_seconds)), kW - kR,
                  GY(static_cast<double>(av.rpo_seconds)));
    o += buf;
    o += "</svg>\n";
  }
  J failed = J::array();
  for (const auto& x : b["list"])
    if (x["result"] != "ok") failed.push_back(x);
  o += "<h3>Failed backups</h3>" + html_table(failed, {"time", "result", "snapshot", "error"});
  o += "<h3>Gaps between good backups longer than the RPO</h3>";
  J long_gaps = J::array();
  for (const auto& g : b["gaps"])
    if (g["seconds"].get<std::int64_t>() > av.rpo_seconds) long_gaps.push_back(g);
  o += html_table(long_gaps, {"from", "to", "seconds"});
  const J& dr = j["availability"]["drills"];
  o += "<h3>Restore drills</h3>" + html_kv(J{{"source", dr["source"]},
                                             {"runs", dr["runs"]},
                                             {"passed", dr["passed"]},
                                             {"failed", dr["failed"]}},
                                           {"source", "runs", "passed", "failed"});
  {
    double max_rto = 1;
    for (const auto& x : av.drill_runs) max_rto = std::max(max_rto, x.rto_seconds);
    o += svg_open("drill RTOs") + svg_axes("RTO s (max " + num(max_rto) + ")", "", "");
    const double n = static_cast<double>(std::max<std::size_t>(1, av.drill_runs.size()));
    const double w = (kW - kL - kR) / n;
    char buf[200];
    for (std::size_t i = 0; i < av.drill_runs.size(); ++i) {
      const auto& x = av.drill_runs[i];
      double hgt = (kH - kB - kT) * x.rto_seconds / max_rto;
      bool ok = x.result == "passed" || x.result == "ok";
      std::snprintf(buf, sizeof buf,
                    "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" class=\"%s\"/>",
                    kL + w * static_cast<double>(i) + w * 0.15, kH - kB - std::max(1.0, hgt), w * 0.7,
                    std::max(1.0, hgt), ok ? "ok" : "bad");
      o += buf;
      o += "<text x=\"" + std::to_string(static_cast<int>(kL + w * static_cast<double>(i) + w * 0.5)) +
           "\" y=\"" + std::to_string(static_cast<int>(kH - kB + 15)) +
           "\" class=\"lbl\" text-anchor=\"middle\">" + esc(x.time.substr(0, 10)) + "</text>";
    }
    o += "</svg>\n";
  }
  o +=
      html_table(dr["list"], {"time", "mailbox", "snapshot", "result", "rto_seconds", "messages", "failure"});
  o += "</section>\n";
  // 7. Access
  o += "<section id=\"access\"><h2>7. Access</h2>" +
       html_table(j["access"], {"time", "event", "actor", "key", "mailboxes", "target", "detail"}) +
       "</section>\n";
  // 8. Findings
  o += "<section id=\"findings\"><h2>8. Findings</h2><p>" + cell_text(j["findings"]["met"]) + " met, " +
       cell_text(j["findings"]["not_met"]) + " not met.</p>" +
       html_table(j["findings"]["list"], {"id", "status", "rule", "requirement", "actual", "evidence"}) +
       "</section>\n";
  o += "</body></html>\n";
  return o;
}

}  // namespace reduit
