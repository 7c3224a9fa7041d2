// reduit report — the compliance report for a period (retention/report.hpp): HTML,
// JSON or Markdown from the same figures, optionally signed (detached OpenPGP
// signature by the vault's agent key, FILE.asc). Exit 0 when every finding is met,
// 1 when one is not (docs/CLI.md).
#include <date/tz.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "agent/audit_record.hpp"
#include "agent/cli.hpp"
#include "agent/session.hpp"
#include "agent/timestamp.hpp"
#include "retention/report.hpp"
#include "vault/clock.hpp"
#include "vault/error.hpp"

#ifndef REDUIT_VERSION
#define REDUIT_VERSION "dev"
#endif

namespace reduit::cli {

namespace {

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::kUsage, "cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_all(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
  out.close();
  if (!out) throw Error(ErrorCode::kIo, "cannot write " + path);
}

}  // namespace

void add_report(CLI::App& app, Globals& g, Runner& run) {
  auto* cmd = app.add_subcommand("report",
                                 "compliance report for a period: processing record, retention state, "
                                 "deletions, integrity, availability "
                                 "(backups, RPO, drills), access, findings per policy rule");
  struct Opts {
    std::string period, format = "html", out, policy, gnupghome;
    bool sign = false;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option(
      "--period", o->period,
      "2026, 2026-Q3, 2026-07, 2026-07-01 or FROM..TO (inclusive days); default: the previous month");
  cmd->add_option("--format", o->format, "html (default), json or md")
      ->check(CLI::IsMember({"html", "json", "md"}));
  cmd->add_option("--out", o->out,
                  "write the report to FILE (default: stdout; with --json: "
                  "STATE_DIR/reports/report-PERIOD.FORMAT, signed)");
  cmd->add_flag("--sign", o->sign,
                "also write FILE.asc, a detached OpenPGP signature by the agent key (needs --out)");
  cmd->add_option("--policy", o->policy,
                  "policy file (default: the config's 'policy', else the shipped default)");
  cmd->add_option("--gnupghome", o->gnupghome, "GnuPG home holding the agent key (default: the config's)");
  cmd->callback([&g, &run, o] {
    run = [&g, o] {
      if (o->sign && o->out.empty() && !g.json)
        throw Error(ErrorCode::kUsage, "--sign needs --out FILE (the signature is FILE.asc)");
      Config cfg = load_config(g.config_path);
      const std::string policy_path = o->policy.empty() ? cfg.policy : o->policy;
      Policy policy = load_policy(policy_path);
      const std::string policy_text = read_policy_text(policy_path);
      const std::string config_text =
          g.config_path.empty() ? std::string(builtin_config_text()) : read_all(g.config_path);
      Catalog catalog(cfg.state_dir);
      auto repo = open_repository(cfg, &catalog, o->gnupghome);

      ReportInputs in;
      ReportSite& s = in.site;
      s.organisation = cfg.organisation.name;
      s.country = cfg.organisation.country;
      s.purpose = cfg.organisation.purpose;
      s.host = cfg.host;
      s.config_path = cfg.origin;
      s.config_digest = to_hex(sha256(config_text));
      s.policy_path = policy.origin;
      s.policy_digest = to_hex(sha256(policy_text));
      s.vault_url = cfg.vault_url;
      s.vault_operator = cfg.vault_operator;
      s.vault_jurisdiction = cfg.vault_jurisdiction;
      s.vault_location = cfg.vault_location;
      s.ssh_host_key = cfg.ssh.host_key_fingerprint;
      s.ssh_known_hosts = cfg.ssh.known_hosts;
      s.custodians = cfg.key_custodians;
      s.config_rpo_seconds = cfg.schedule.rpo;
      s.reduit_version = REDUIT_VERSION;
      in.policy = &policy;
      in.now_ns = clock_now_ns();
      const date::time_zone* tz = find_time_zone(policy.time_zone);
      if (o->period.empty()) {
        // The agent's scheduled `report` job: the last complete calendar month.
        using Ns = std::chrono::nanoseconds;
        auto local = tz->to_local(date::sys_time<Ns>{Ns{in.now_ns}});
        date::year_month ym{date::year_month_day{date::floor<date::days>(local)}.year(),
                            date::year_month_day{date::floor<date::days>(local)}.month()};
        ym -= date::months{1};
        char spec[16];
        std::snprintf(spec, sizeof spec, "%04d-%02u", static_cast<int>(ym.year()),
                      static_cast<unsigned>(ym.month()));
        o->period = spec;
      }
      in.period = parse_period(o->period, tz);
      if (g.json && o->out.empty()) {
        // --json prints a summary, so the report goes to the state directory, signed.
        std::filesystem::create_directories(cfg.state_dir + "/reports");
        o->out = cfg.state_dir + "/reports/report-" + in.period.spec + "." + o->format;
        o->sign = true;
      }
      if (o->sign) s.tsa_url = cfg.audit.tsa_url;  // the header names the TSA that stamps FILE.tsr
      ReportData r = build_report(catalog, *repo, in);

      std::string text = o->format == "json" ? report_json(r).dump(2) + "\n"
                         : o->format == "md" ? render_markdown(r)
                                             : render_html(r);
      std::string sig_path, tsr_path;
      if (o->out.empty()) {
        std::cout << text << std::flush;
      } else {
        write_all(o->out, text);
        if (o->sign) {
          sig_path = o->out + ".asc";
          write_all(sig_path, repo->crypto().sign_detached(text, repo->config().agent_key));
          if (!cfg.audit.tsa_url.empty()) {
            // GeBüV Art. 9: a provable time of storage. `openssl ts -verify -data FILE -in FILE.tsr`.
            tsr_path = o->out + ".tsr";
            write_all(tsr_path, request_timestamp(cfg.audit.tsa_url, text, cfg.audit.tsa_ca_file));
          }
        }
      }
      std::vector<std::string> not_met;
      for (const auto& f : r.findings)
        if (f.status != "met") not_met.push_back(f.id);
      // A report is a disclosure of what the log holds: who made which, for when.
      for (const auto& w : audit_record(cfg, catalog, repo.get(), "report",
                                        {{"period", in.period.spec},
                                         {"format", o->format},
                                         {"out", o->out.empty() ? std::string("<stdout>")
                                                                : std::filesystem::absolute(o->out).string()},
                                         {"sha256", to_hex(sha256(text))},
                                         {"signed", !sig_path.empty()},
                                         {"time_stamped", !tsr_path.empty()},
                                         {"audit_head", r.audit_head},
                                         {"not_met", not_met}},
                                        sig_path.empty() ? "" : repo->config().agent_key))
        std::fprintf(stderr, "reduit: warning: %s\n", w.c_str());
      if (g.json) {
        print_json({{"period", in.period.spec},
                    {"first_day", in.period.first_day},
                    {"last_day", in.period.last_day},
                    {"format", o->format},
                    {"out", o->out},
                    {"signature", sig_path},
                    {"signer", sig_path.empty() ? "" : repo->config().agent_key},
                    {"time_stamp", tsr_path},
                    {"sha256", to_hex(sha256(text))},
                    {"findings", r.findings.size()},
                    {"not_met", not_met}});
      } else if (!o->out.empty()) {
        std::fprintf(stderr, "report %s written to %s%s; %zu finding(s), %zu not met\n",
                     in.period.spec.c_str(), o->out.c_str(),
                     sig_path.empty() ? "" : (", signature " + sig_path).c_str(), r.findings.size(),
                     not_met.size());
      }
      for (const auto& id : not_met)
        std::fprintf(stderr, "reduit: warning: finding not met: %s\n", id.c_str());
      return not_met.empty() ? 0 : 1;
    };
  });
}

}  // namespace reduit::cli
