// reduit export — a mailbox, folder or message of a snapshot as mbox (mboxrd,
// RFC 4155) or as a directory of .eml files (restore/export.hpp).
#include <filesystem>

#include "agent/audit_record.hpp"
#include "agent/cli.hpp"
#include "agent/pick.hpp"
#include "agent/session.hpp"
#include "restore/export.hpp"
#include "vault/error.hpp"

namespace reduit::cli {

void add_export(CLI::App& app, Globals& g, Runner& run) {
  auto* cmd = app.add_subcommand(
      "export", "write a mailbox, folder or message of a snapshot as mbox (mboxrd) or .eml files");
  cmd->footer(
      "With --folder, mbox is one file and eml one flat directory; without, PATH is a directory holding one\n"
      "<folder>.mbox (or <folder>/ of .eml files) per folder, INBOX for the mailbox root. PATH must not "
      "exist\n"
      "(mbox file) or be an empty directory. mboxrd quoting: a line matching ^>*From  gets one more '>'.");
  struct Opts {
    ExportRequest req;
    std::string format, home, message_id, unique_name;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--snapshot", o->req.select.snapshot, "snapshot id (prefix) or 'latest'")
      ->default_val("latest");
  cmd->add_option("--mailbox", o->req.select.mailbox, "mailbox name as shown by 'reduit ls SNAPSHOT'")
      ->required();
  auto* folder =
      cmd->add_option("--folder", o->req.select.folder,
                      "only this folder, without its subfolders (e.g. .Archive; INBOX = the root)");
  cmd->add_option("--format", o->format, "mbox or eml")->required()->check(CLI::IsMember({"mbox", "eml"}));
  cmd->add_option("--to", o->req.dest, "destination file (mbox with --folder) or directory")->required();
  cmd->add_option("--message-id", o->message_id,
                  "only the message(s) with this Message-ID (from the catalog)");
  cmd->add_option("--unique-name", o->unique_name, "only the message with this Maildir unique name");
  cmd->add_option("--gnupghome", o->home,
                  "GnuPG home holding an archive secret key (default: config's, or $GNUPGHOME)");
  cmd->callback([&g, &run, o, folder] {
    o->req.one_folder = folder->count() > 0;
    run = [&g, o] {
      Config cfg = load_config(g.config_path);
      // INBOX names the mailbox root (an empty --folder would mean "every folder").
      if (o->req.select.folder == "INBOX") o->req.select.folder = "";
      auto repo = open_repository(cfg, nullptr, o->home);
      SelectRequest where = o->req.select;
      where.subfolders = !o->req.one_folder;
      std::string note;
      MessagePick pick = pick_messages(cfg, o->message_id, o->unique_name, repo.get(), &where, &note);
      if (!note.empty() && !g.quiet) std::fprintf(stderr, "reduit: note: %s\n", note.c_str());
      o->req.select.message = pick.pred;
      o->req.select.what = pick.what;
      o->req.format = o->format == "eml" ? ExportFormat::kEml : ExportFormat::kMbox;
      o->req.progress = want_progress(g);
      ExportStats s = run_with_pick(pick, g.quiet, [&](MessagePick& p) {
        o->req.select.message = p.pred;
        o->req.select.what = p.what;
        return export_messages(*repo, o->req);
      });
      std::error_code ec;
      auto audit_warnings = audit_record_best_effort(
          cfg, repo.get(), "export",
          {{"result", "ok"},
           {"snapshot", s.snapshot_id},
           {"mailboxes", {s.mailbox}},
           {"folder", o->req.select.folder},
           {"selection", pick.what},
           {"format", o->format},
           {"target", std::filesystem::absolute(o->req.dest, ec).lexically_normal().string()},
           {"messages", s.messages},
           {"bytes", s.bytes}},
          reading_key(*repo));
      s.warnings.insert(s.warnings.end(), audit_warnings.begin(), audit_warnings.end());
      for (const auto& w : s.warnings) std::fprintf(stderr, "reduit: warning: %s\n", w.c_str());
      if (g.json) {
        print_json({{"snapshot", s.snapshot_id},
                    {"mailbox", s.mailbox},
                    {"format", o->format},
                    {"to", o->req.dest},
                    {"messages", s.messages},
                    {"bytes", s.bytes},
                    {"files", s.files},
                    {"packs_fetched", s.packs_fetched},
                    {"bytes_fetched", s.bytes_fetched},
                    {"seconds", s.seconds},
                    {"warnings", s.warnings}});
      } else {
        std::printf("exported %llu message(s) (%s) of %s from snapshot %s to %s as %s in %.1f s\n",
                    static_cast<unsigned long long>(s.messages), human_bytes(s.bytes).c_str(),
                    s.mailbox.c_str(), s.snapshot_id.substr(0, 8).c_str(), o->req.dest.c_str(),
                    o->format.c_str(), s.seconds);
      }
      return s.warnings.empty() ? 0 : 1;
    };
  });
}

}  // namespace reduit::cli
