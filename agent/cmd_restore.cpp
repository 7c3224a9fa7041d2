// reduit restore — one mailbox (or folder, or message) from a snapshot into a new
// directory, or into the live mailbox under a new folder (--into-live).
#include <filesystem>

#include "agent/audit_record.hpp"
#include "agent/cli.hpp"
#include "agent/pick.hpp"
#include "agent/session.hpp"
#include "restore/live.hpp"
#include "restore/restore.hpp"
#include "vault/error.hpp"

#include <sstream>

namespace reduit::cli {

namespace {

template <typename Opts>
int run_live(const Globals& g, const Config& cfg, const Opts& o, const MessagePick& pick, Repository& repo) {
  LiveRestoreRequest lr;
  lr.select.snapshot = o.req.snapshot;
  lr.select.mailbox = o.req.mailbox;
  lr.select.folder = o.req.folder;
  lr.select.message = pick.pred;
  lr.select.what = pick.what;
  lr.live_dir = o.req.dest;
  lr.folder_name = o.folder_name;
  if (o.doveadm != "none") {
    std::istringstream words(o.doveadm);
    for (std::string w; words >> w;) lr.doveadm.push_back(w);
  }
  lr.progress = want_progress(g);
  LiveRestoreStats s = restore_into_live(repo, lr);
  auto audit_warnings = audit_record_best_effort(cfg, &repo, "restore",
                                                 {{"result", "ok"},
                                                  {"snapshot", s.snapshot_id},
                                                  {"mailboxes", {s.mailbox}},
                                                  {"target", s.live_dir + "/" + s.folder},
                                                  {"messages", s.messages},
                                                  {"bytes", s.bytes},
                                                  {"into_live", true}},
                                                 reading_key(repo));
  s.warnings.insert(s.warnings.end(), audit_warnings.begin(), audit_warnings.end());
  for (const auto& w : s.warnings) std::fprintf(stderr, "reduit: warning: %s\n", w.c_str());
  if (g.json) {
    print_json({{"snapshot", s.snapshot_id},
                {"mailbox", s.mailbox},
                {"live_mailbox", s.live_dir},
                {"folder", s.folder},
                {"imap_name", s.imap_name},
                {"folders_created", s.folders_created},
                {"messages", s.messages},
                {"bytes", s.bytes},
                {"subscribed", s.subscribed},
                {"doveadm", s.doveadm_ran},
                {"doveadm_note", s.doveadm_note},
                {"packs_fetched", s.packs_fetched},
                {"bytes_fetched", s.bytes_fetched},
                {"seconds", s.seconds},
                {"warnings", s.warnings}});
  } else {
    std::printf(
        "restored %llu message(s) (%s) of %s from snapshot %s into %s/%s (IMAP folder \"%s\") in %.1f s\n",
        static_cast<unsigned long long>(s.messages), human_bytes(s.bytes).c_str(), s.mailbox.c_str(),
        s.snapshot_id.substr(0, 8).c_str(), s.live_dir.c_str(), s.folder.c_str(), s.imap_name.c_str(),
        s.seconds);
    for (const auto& c : s.doveadm_ran) std::printf("ran: %s\n", c.c_str());
    if (!s.doveadm_note.empty()) std::printf("note: %s\n", s.doveadm_note.c_str());
  }
  return s.warnings.empty() ? 0 : 1;
}

}  // namespace

void add_restore(CLI::App& app, Globals& g, Runner& run) {
  auto* cmd = app.add_subcommand(
      "restore", "restore a mailbox (or one folder) from a snapshot into a new, empty directory");
  struct Opts {
    RestoreRequest req;
    std::string home;
    bool into_live = false;
    std::string folder_name, message_id, unique_name, doveadm = "doveadm %c -u %u";
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--snapshot", o->req.snapshot, "snapshot id (prefix) or 'latest'")->default_val("latest");
  auto* mailbox =
      cmd->add_option("--mailbox", o->req.mailbox, "mailbox name as shown by 'reduit ls SNAPSHOT'");
  auto* all = cmd->add_flag("--all", o->req.all,
                            "every mailbox, each at its path below the source root (disaster recovery)");
  mailbox->excludes(all);
  cmd->add_option("--folder", o->req.folder, "only this folder (e.g. .Archive) and its subfolders");
  cmd->add_option("--message-id", o->message_id,
                  "only the message(s) with this Message-ID (from the catalog)");
  cmd->add_option("--unique-name", o->unique_name, "only the message with this Maildir unique name");
  cmd->add_option("--to", o->req.dest,
                  "destination directory (must not exist or be empty); with --into-live: the live "
                  "mailbox directory (default: where the snapshot found it)");
  auto* live = cmd->add_flag("--into-live", o->into_live,
                             "restore into the live mailbox under a new folder .Restored-<date>, touching "
                             "nothing else (fresh names, keywords remapped, doveadm force-resync)");
  live->excludes(all);
  auto* folder_name = cmd->add_option("--folder-name", o->folder_name,
                                      "with --into-live: the new folder's name (default Restored-<date>)")
                          ->needs(live);
  cmd->add_option("--doveadm", o->doveadm,
                  "with --into-live: how to run doveadm: %c = its command (force-resync, quota recalc), %u = "
                  "the mailbox name; 'none' skips it")
      ->default_str("doveadm %c -u %u")
      ->needs(live);
  cmd->add_option("--owner", o->req.owner,
                  "owner of restored files: keep (as backed up; root only), none (yours), or USER:GROUP "
                  "(e.g. vmail:vmail); default keep as root, else none");
  cmd->add_option("--gnupghome", o->home,
                  "GnuPG home holding an archive secret key (default: config's, or $GNUPGHOME)");
  cmd->add_option("--batch-entries", o->req.batch_entries,
                  "entries planned and written at once (whole folders; memory ~1 kB each); each pack is "
                  "still fetched once: what later batches need from it waits in a stash inside --to")
      ->default_val(o->req.batch_entries)
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 30));
  cmd->callback([&g, &run, o, folder_name] {
    const bool folder_name_given = folder_name->count() > 0;
    run = [&g, o, folder_name_given] {
      if (folder_name_given && o->folder_name.empty())
        throw Error(ErrorCode::kUsage, "--folder-name is empty");
      if (o->req.mailbox.empty() && !o->req.all) {
        throw Error(ErrorCode::kUsage, "restore needs --mailbox M (see 'reduit ls latest') or --all");
      }
      if (o->req.dest.empty() && !o->into_live)
        throw Error(ErrorCode::kUsage, "restore needs --to DIR or --into-live");
      Config cfg = load_config(g.config_path);
      auto repo = open_repository(cfg, nullptr, o->home);
      SelectRequest where;
      where.snapshot = o->req.snapshot;
      where.mailbox = o->req.mailbox;
      where.folder = o->req.folder;
      std::string note;
      MessagePick pick = pick_messages(cfg, o->message_id, o->unique_name, repo.get(), &where, &note);
      if (!note.empty() && !g.quiet) std::fprintf(stderr, "reduit: note: %s\n", note.c_str());
      if (o->into_live)
        return run_with_pick(pick, g.quiet, [&](MessagePick& p) { return run_live(g, cfg, *o, p, *repo); });
      o->req.progress = want_progress(g);
      o->req.select = pick.pred;
      o->req.select_what = pick.what;
      // Blob locations from this host's catalog when it names the vault's index
      // objects (restore/snapshots.hpp BlobIndex). Not needed: a host that never ran
      // a backup, or whose catalog cannot be opened, reads the vault's index objects,
      // and so does --all (it needs nearly every location).
      std::unique_ptr<Catalog> catalog;
      if (!o->req.all && std::filesystem::exists(std::filesystem::path(cfg.state_dir) / "catalog.sqlite")) {
        try {
          catalog = std::make_unique<Catalog>(cfg.state_dir);
        } catch (const std::exception& e) {
          if (!g.quiet)
            std::fprintf(
                stderr,
                "reduit: note: the catalog could not be opened (%s); reading the vault's index objects\n",
                e.what());
        }
      }
      o->req.catalog = catalog.get();
      RestoreStats s = run_with_pick(pick, g.quiet, [&](MessagePick& p) {
        o->req.select = p.pred;
        o->req.select_what = p.what;
        return restore_mailbox(*repo, o->req);
      });
      std::error_code ec;
      std::filesystem::path target = std::filesystem::absolute(o->req.dest, ec);
      auto audit_warnings =
          audit_record_best_effort(cfg, repo.get(), "restore",
                                   {{"result", "ok"},
                                    {"snapshot", s.snapshot_id},
                                    {"mailboxes", o->req.all ? nlohmann::ordered_json::array({"*"})
                                                             : nlohmann::ordered_json::array({s.mailbox})},
                                    {"folder", o->req.folder},
                                    {"selection", pick.what},
                                    {"target", target.lexically_normal().string()},
                                    {"messages", s.messages},
                                    {"bytes", s.bytes}},
                                   reading_key(*repo));
      s.warnings.insert(s.warnings.end(), audit_warnings.begin(), audit_warnings.end());
      for (const auto& w : s.warnings) std::fprintf(stderr, "reduit: warning: %s\n", w.c_str());
      if (g.json) {
        print_json({{"snapshot", s.snapshot_id},
                    {"mailbox", s.mailbox},
                    {"to", o->req.dest},
                    {"folders", s.folders},
                    {"messages", s.messages},
                    {"files", s.files},
                    {"dirs", s.dirs},
                    {"hard_links", s.hard_links},
                    {"bytes", s.bytes},
                    {"packs_fetched", s.packs_fetched},
                    {"bytes_fetched", s.bytes_fetched},
                    {"batches", s.batches},
                    {"stashed_blobs", s.stashed_blobs},
                    {"locations", s.locations},
                    {"seconds", s.seconds},
                    {"warnings", s.warnings}});
      } else {
        std::printf(
            "restored %s from snapshot %s to %s: %llu messages, %llu other files (%s) in %.1f s, fetched "
            "%llu packs (%s)\n",
            s.mailbox.c_str(), s.snapshot_id.substr(0, 8).c_str(), o->req.dest.c_str(),
            static_cast<unsigned long long>(s.messages), static_cast<unsigned long long>(s.files),
            human_bytes(s.bytes).c_str(), s.seconds, static_cast<unsigned long long>(s.packs_fetched),
            human_bytes(s.bytes_fetched).c_str());
      }
      return s.warnings.empty() ? 0 : 1;
    };
  });
}

}  // namespace reduit::cli
