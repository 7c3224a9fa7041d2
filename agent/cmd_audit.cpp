// reduit audit — show and verify the tamper-evident audit log (docs/AUDIT.md).
#include "agent/audit_record.hpp"
#include "agent/cli.hpp"
#include "agent/session.hpp"
#include "vault/clock.hpp"
#include "vault/error.hpp"

namespace reduit::cli {

namespace {

std::int64_t instant_or_usage(const std::string& text, const char* option) {
  if (text.empty()) return 0;
  auto t = parse_instant(text);
  if (!t)
    throw Error(ErrorCode::kUsage,
                std::string(option) + " \"" + text +
                    "\" is not a time: use 2026-07-01T00:00:00Z (RFC 3339) or Unix seconds");
  return *t;
}

}  // namespace

void add_audit(CLI::App& app, Globals& g, Runner& run) {
  auto* cmd = app.add_subcommand("audit", "show or verify the tamper-evident audit log");
  cmd->require_subcommand(1);

  struct ShowOpts {
    std::string since, until, event;
    bool heads = false;
  };
  auto so = std::make_shared<ShowOpts>();
  auto* show = cmd->add_subcommand("show", "list audit entries (oldest first)");
  show->add_option("--since", so->since, "only entries at or after this time (RFC 3339 or Unix seconds)");
  show->add_option("--until", so->until, "only entries before this time");
  show->add_option("--event", so->event, "only this event (backup, prune, restore, …)");
  show->add_flag("--heads", so->heads, "list the sealed heads (signature, RFC 3161 token) instead");
  show->callback([&g, &run, so] {
    run = [&g, so] {
      Config cfg = load_config(g.config_path);
      Catalog catalog(cfg.state_dir);
      AuditLog log(catalog.db());
      if (so->heads) {
        nlohmann::ordered_json out = nlohmann::ordered_json::array();
        for (const AuditHead& h : log.heads()) {
          if (g.json) {
            out.push_back({{"seq", h.seq},
                           {"hash", to_hex(h.hash)},
                           {"time_ns", h.time_ns},
                           {"statement", h.statement},
                           {"signature", h.signature},
                           {"signer", h.signer},
                           {"tsr", to_base64(h.tsr)}});
          } else {
            std::printf("%6llu  %s  %s…  %s%s\n", static_cast<unsigned long long>(h.seq),
                        iso_time(h.time_ns).c_str(), to_hex(h.hash).substr(0, 16).c_str(),
                        h.signature.empty() ? "unsigned" : "signed", h.tsr.empty() ? "" : ", time-stamped");
          }
        }
        if (g.json) print_json(out);
        return 0;
      }
      std::int64_t since = so->since.empty() ? INT64_MIN : instant_or_usage(so->since, "--since");
      std::int64_t until = so->until.empty() ? INT64_MAX : instant_or_usage(so->until, "--until");
      nlohmann::ordered_json out = nlohmann::ordered_json::array();
      for (const AuditEntry& e : log.entries(since, until)) {
        if (!so->event.empty() && e.event != so->event) continue;
        if (g.json) {
          auto j = nlohmann::ordered_json::parse(e.text, nullptr, false);
          out.push_back(j.is_discarded() ? nlohmann::ordered_json{{"seq", e.seq}, {"text", e.text}} : j);
        } else {
          std::printf("%6llu  %s  %-14s %s@%s  %s\n", static_cast<unsigned long long>(e.seq),
                      iso_time(e.time_ns).c_str(), e.event.c_str(), e.actor.user.c_str(),
                      e.actor.host.c_str(), e.data.dump().c_str());
        }
      }
      if (g.json) print_json(out);
      return 0;
    };
  });

  struct VerifyOpts {
    bool local = false;
    std::string anchor, home;
  };
  auto vo = std::make_shared<VerifyOpts>();
  auto* verify = cmd->add_subcommand(
      "verify",
      "check the hash chain, the signed heads and time stamps, and the copy in the vault (exit 6 when "
      "anything is wrong, naming the first bad entry)");
  verify->add_flag("--local", vo->local, "check the catalog's log only, not the vault copy");
  verify->add_option("--anchor", vo->anchor,
                     "SEQ:HASH of a head printed in an earlier report; must still match");
  verify->add_option("--gnupghome", vo->home, "GnuPG home that can read the vault's audit objects");
  verify->callback([&g, &run, vo] {
    run = [&g, vo] {
      Config cfg = load_config(g.config_path);
      Catalog catalog(cfg.state_dir);
      std::unique_ptr<Repository> repo;
      if (!vo->local) repo = open_repository(cfg, &catalog, vo->home);
      AuditVerifyResult r = audit_verify(cfg, catalog, repo.get(), vo->anchor);
      if (g.json) {
        nlohmann::ordered_json probs = nlohmann::ordered_json::array();
        for (const auto& p : r.problems)
          probs.push_back({{"seq", p.seq}, {"where", p.where}, {"problem", p.what}});
        print_json({{"ok", r.problems.empty()},
                    {"entries", r.entries},
                    {"heads", r.heads},
                    {"heads_signed", r.heads_signed},
                    {"heads_time_stamped", r.heads_stamped},
                    {"vault_checked", r.vault_checked},
                    {"vault_objects", r.vault_objects},
                    {"vault_entries", r.vault_entries},
                    {"first_bad_entry", r.first_bad()},
                    {"problems", probs}});
      } else {
        for (const auto& p : r.problems)
          std::fprintf(stderr, "reduit: audit: %s: %s\n", p.where.c_str(), p.what.c_str());
        if (r.problems.empty()) {
          std::printf("ok: %llu entries, %llu heads (%llu signed, %llu time-stamped)%s\n",
                      static_cast<unsigned long long>(r.entries), static_cast<unsigned long long>(r.heads),
                      static_cast<unsigned long long>(r.heads_signed),
                      static_cast<unsigned long long>(r.heads_stamped),
                      r.vault_checked ? (", vault copy " + std::to_string(r.vault_entries) + " entries in " +
                                         std::to_string(r.vault_objects) + " objects")
                                            .c_str()
                                      : "");
        } else if (r.first_bad()) {
          std::printf("FAILED: first bad entry %llu; %zu problem(s)\n",
                      static_cast<unsigned long long>(r.first_bad()), r.problems.size());
        } else {
          std::printf("FAILED: %zu problem(s)\n", r.problems.size());
        }
      }
      return r.problems.empty() ? 0 : exit_status(ErrorCode::kVerify);
    };
  });
}

}  // namespace reduit::cli
