// reduit mailserver — run the receive-only SMTP/LMTP server that delivers into the
// Maildirs the agent backs up (mailserver/, docs/MAILSERVER.md).
#include <cstdio>

#include "agent/cli.hpp"
#include "mailserver/config.hpp"
#include "mailserver/server.hpp"
#include "vault/error.hpp"

namespace reduit::cli {

void add_mailserver(CLI::App& app, Globals& g, Runner& run) {
  auto* cmd = app.add_subcommand(
      "mailserver",
      "receive mail over SMTP and/or LMTP and deliver it into Maildir (needs --config FILE; "
      "docs/MAILSERVER.md). Stops gracefully on SIGTERM.");
  auto check = std::make_shared<bool>(false);
  cmd->add_flag("--check-config", *check,
                "validate the config (keys, addresses, users, aliases, TLS files) and exit: 0 valid, 2 not");
  cmd->callback([&g, &run, check] {
    run = [&g, check] {
      if (g.config_path.empty()) {
        throw Error(ErrorCode::kUsage, "mailserver needs --config FILE (docs/MAILSERVER.md has an example)");
      }
      mail::MailServerConfig cfg = mail::load_mailserver_config(g.config_path);
      mail::check_tls_files(cfg.tls);
      if (*check) {
        std::size_t listeners = cfg.smtp_listen.size() + cfg.lmtp_listen.size();
        if (g.json) {
          print_json({{"ok", true},
                      {"config", cfg.origin},
                      {"hostname", cfg.hostname},
                      {"listeners", listeners},
                      {"domains", cfg.domains.size()},
                      {"users", cfg.users.size()},
                      {"aliases", cfg.aliases.size()},
                      {"tls", !cfg.tls.certificate.empty()}});
        } else {
          std::printf("%s: ok (%zu listener(s), %zu domain(s), %zu user(s), %zu alias(es), STARTTLS %s)\n",
                      cfg.origin.c_str(), listeners, cfg.domains.size(), cfg.users.size(), cfg.aliases.size(),
                      cfg.tls.certificate.empty() ? "off" : (cfg.tls.require ? "required" : "offered"));
        }
        return 0;
      }
      mail::MailServer server(cfg, mail::make_mail_logger(cfg.log_file));
      server.run();
      return 0;
    };
  });
}

}  // namespace reduit::cli
