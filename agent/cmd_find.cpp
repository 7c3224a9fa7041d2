// reduit find — search the catalog for messages across snapshots: by mailbox,
// folder, date range, From, To, Subject and Message-ID; prints where each message
// is (mailbox, folder, unique name) and which snapshots hold it, so an admin can
// restore it (reduit restore --unique-name / --message-id).
//
// Reads the local catalog only: header summaries (messages) and message locations
// (tree_messages, joined with the cached snapshots). Folder trees the catalog has
// not recorded (backups made before it kept locations, or a rebuilt catalog) are
// read from the vault once, with the agent key or --gnupghome, and recorded.
#include <algorithm>
#include <ctime>
#include <map>
#include <set>

#include "agent/cli.hpp"
#include "agent/headers.hpp"
#include "agent/scan.hpp"
#include "agent/session.hpp"
#include "restore/select.hpp"
#include "restore/snapshots.hpp"
#include "vault/error.hpp"

namespace reduit::cli {

namespace {

// "2026-10-01" (start of that day) or "2026-10-01T12:30[:00][Z]", UTC; seconds.
std::int64_t parse_time(const std::string& s, const char* what, bool end_of_day) {
  tm t{};
  int y, mo, d, h = 0, mi = 0, sec = 0;
  char tail[8] = {0};
  int n = std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%7s", &y, &mo, &d, &h, &mi, &sec, tail);
  bool date_only = n == 3 && s.size() == 10;
  bool ok = date_only || ((n == 5 || n == 6) && s.size() <= 20) || (n == 7 && std::string(tail) == "Z");
  if (!ok || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60) {
    throw Error(ErrorCode::kUsage,
                std::string(what) + " '" + s + "' is not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS], UTC)");
  }
  t.tm_year = y - 1900;
  t.tm_mon = mo - 1;
  t.tm_mday = d;
  t.tm_hour = h;
  t.tm_min = mi;
  t.tm_sec = sec;
  std::int64_t v = timegm(&t);
  return date_only && end_of_day ? v + 86400 : v;
}

std::string short_ids(const std::vector<std::string>& ids) {
  if (ids.empty()) return "";
  if (ids.size() == 1) return ids.front().substr(0, 8);
  return ids.front().substr(0, 8) + (ids.size() > 2 ? " … " : " ") + ids.back().substr(0, 8);
}

}  // namespace

void add_find(CLI::App& app, Globals& g, Runner& run) {
  auto* cmd =
      app.add_subcommand("find", "search the catalog for messages across snapshots (to restore them)");
  cmd->footer(
      "Filters combine (AND). --from/--to/--subject match a substring, case-insensitive for ASCII, of the "
      "decoded\n"
      "header; --message-id matches exactly, with or without <>; --since/--until compare the Date header "
      "(the\n"
      "INTERNALDATE when it has none), UTC, --until inclusive of its day. Exit 8 when nothing matches.");
  struct Opts {
    std::string mailbox, folder, snapshot, since, until, from, to, subject, message_id, home;
    std::size_t limit = 0;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--mailbox", o->mailbox, "only this mailbox (exact name)");
  cmd->add_option("--folder", o->folder,
                  "only this folder and its subfolders (e.g. .Archive; INBOX = the root only)");
  cmd->add_option("--snapshot", o->snapshot,
                  "only this snapshot (id prefix or 'latest'); default every snapshot");
  cmd->add_option("--since", o->since, "Date on or after (YYYY-MM-DD[THH:MM[:SS]], UTC)");
  cmd->add_option("--until", o->until, "Date on or before (YYYY-MM-DD = through that day)");
  cmd->add_option("--from", o->from, "From contains");
  cmd->add_option("--to", o->to, "To contains");
  cmd->add_option("--subject", o->subject, "Subject contains");
  cmd->add_option("--message-id", o->message_id, "Message-ID equals");
  cmd->add_option("--limit", o->limit, "print at most N messages (0 = all)")->default_val(0);
  cmd->add_option("--gnupghome", o->home, "GnuPG home to read trees from the vault with (default: config)");
  cmd->callback([&g, &run, o] {
    run = [&g, o] {
      const std::optional<std::int64_t> since =
          o->since.empty() ? std::nullopt : std::optional(parse_time(o->since, "--since", false));
      const std::optional<std::int64_t> until =
          o->until.empty() ? std::nullopt : std::optional(parse_time(o->until, "--until", true));
      Config cfg = load_config(g.config_path);
      Catalog catalog(cfg.state_dir);
      std::vector<std::string> warnings;
      std::unique_ptr<Repository> repo;
      auto vault = [&]() -> Repository& {
        if (!repo) repo = open_repository(cfg, &catalog, o->home);
        return *repo;
      };
      std::vector<SnapshotRef> snaps;
      for (auto& [id, json] : catalog.snapshot_rows()) {
        snaps.push_back({id, decode_snapshot(Bytes(json.begin(), json.end()))});
      }
      if (snaps.empty()) snaps = list_snapshots(vault(), &catalog, &warnings);  // a fresh catalog
      if (!o->snapshot.empty()) snaps = {find_snapshot(snaps, o->snapshot)};

      // Folder trees of the selection → where they are (snapshot, mailbox, folder).
      struct Place {
        std::size_t snap;
        const std::string* mailbox;
        const std::string* folder;
      };
      std::map<Hash, std::vector<Place>> places;
      std::vector<std::pair<Hash, const SnapshotFolder*>> unrecorded;
      bool mailbox_seen = o->mailbox.empty();
      const bool root_only = o->folder == "INBOX";
      const std::string folder = root_only ? "" : o->folder;
      for (std::size_t si = 0; si < snaps.size(); ++si) {
        for (const SnapshotMailbox& m : snaps[si].snap.mailboxes) {
          if (!o->mailbox.empty() && m.name != o->mailbox) continue;
          mailbox_seen = true;
          for (const SnapshotFolder& f : m.folders) {
            if (!folder_matches(f.name, folder, !root_only)) continue;
            auto [it, fresh] = places.try_emplace(f.tree);
            it->second.push_back({si, &m.name, &f.name});
            if (fresh && f.messages > 0 && !catalog.has_tree_messages(f.tree))
              unrecorded.emplace_back(f.tree, &f);
          }
        }
      }
      if (!mailbox_seen) {
        throw Error(ErrorCode::kNotFound,
                    "no snapshot holds a mailbox '" + o->mailbox + "' (see reduit ls latest)");
      }
      if (!unrecorded.empty()) {
        try {
          BlobIndex index(vault().load_indexes());
          TreeLoader trees(vault(), index, /*share_chains=*/true);
          for (const auto& [id, f] : unrecorded) catalog.add_tree_messages(id, trees.load(id));
        } catch (const Error& e) {
          warnings.push_back(
              std::to_string(unrecorded.size()) +
              " folder(s) of these snapshots are not in the catalog and could not be read from "
              "the vault (" +
              e.what() + "); their messages are not searched");
        }
      }

      struct Found {
        std::string mailbox, folder, unique, path, message_id, date, from, to, subject;
        std::int64_t mtime_ns = 0, when = 0;  // when: Date header (or INTERNALDATE), seconds
        std::uint64_t size = 0;
        Hash sha256{};
        std::set<std::size_t> snaps;
        std::size_t latest = 0;
        bool has_summary = false;
      };
      std::map<std::tuple<std::string, std::string, std::string, Hash>, Found> found;
      std::uint64_t no_summary = 0;
      std::vector<Hash> tree_ids;
      for (const auto& [id, p] : places) tree_ids.push_back(id);
      Catalog::MessageFilter filter{o->message_id, o->from, o->to, o->subject};
      catalog.find_messages(filter, tree_ids, [&](const Catalog::MessageRow& r) {
        std::int64_t when = r.mtime_ns / 1000000000;
        if (auto d = header_date_seconds(r.date)) when = *d;
        if ((since && when < *since) || (until && when >= *until)) return;
        std::string unique = maildir_unique_name(r.path.substr(r.path.rfind('/') + 1));
        for (const Place& p : places[r.tree]) {
          Found& f = found[{*p.mailbox, *p.folder, unique, r.sha256}];
          if (f.snaps.empty()) {
            f.mailbox = *p.mailbox;
            f.folder = *p.folder;
            f.unique = unique;
            f.message_id = r.message_id;
            f.date = r.date;
            f.from = r.from;
            f.to = r.to;
            f.subject = r.subject;
            f.mtime_ns = r.mtime_ns;
            f.when = when;
            f.size = r.size;
            f.sha256 = r.sha256;
            f.has_summary = r.has_summary;
            no_summary += !r.has_summary;
          }
          if (f.snaps.empty() || p.snap >= f.latest) {
            f.latest = p.snap;
            f.path = r.path;  // as named in the newest snapshot (flags change)
          }
          f.snaps.insert(p.snap);
        }
      });
      std::vector<const Found*> list;
      for (const auto& [k, f] : found) list.push_back(&f);
      std::stable_sort(list.begin(), list.end(),
                       [](const Found* a, const Found* b) { return a->when < b->when; });
      if (no_summary) {
        warnings.push_back(
            std::to_string(no_summary) +
            " message(s) have no header summary in this catalog (read from the vault, or backed "
            "up before a rebuild): only mailbox, folder and date filters apply to them");
      }
      for (const auto& w : warnings) std::fprintf(stderr, "reduit: warning: %s\n", w.c_str());
      if (list.empty()) throw Error(ErrorCode::kNotFound, "no message matches");
      const std::size_t shown = o->limit && o->limit < list.size() ? o->limit : list.size();
      if (g.json) {
        // Streamed, one object a line: a search may list millions of messages.
        std::fputs("[", stdout);
        for (std::size_t i = 0; i < shown; ++i) {
          const Found& f = *list[i];
          std::vector<std::string> ids;
          for (std::size_t s : f.snaps) ids.push_back(snaps[s].id);
          nlohmann::ordered_json item = {{"mailbox", f.mailbox},
                                         {"folder", f.folder},
                                         {"unique_name", f.unique},
                                         {"path", f.path},
                                         {"message_id", f.message_id},
                                         {"date", f.date},
                                         {"time", iso_time(f.when * 1000000000)},
                                         {"internal_date", iso_time(f.mtime_ns)},
                                         {"from", f.from},
                                         {"to", f.to},
                                         {"subject", f.subject},
                                         {"size", f.size},
                                         {"sha256", to_hex(f.sha256)},
                                         {"snapshots", ids}};
          std::fputs(i ? ",\n " : "\n ", stdout);
          std::fputs(item.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace).c_str(),
                     stdout);
        }
        std::fputs("\n]\n", stdout);
      } else {
        for (std::size_t i = 0; i < shown; ++i) {
          const Found& f = *list[i];
          std::vector<std::string> ids;
          for (std::size_t s : f.snaps) ids.push_back(snaps[s].id);
          std::printf("%s  %s  %s  %s  \"%s\"\n", iso_time(f.when * 1000000000).c_str(), f.mailbox.c_str(),
                      f.folder.empty() ? "INBOX" : f.folder.c_str(), f.from.c_str(), f.subject.c_str());
          std::printf("    unique name %s  %s  in %zu snapshot(s): %s\n", f.unique.c_str(),
                      f.message_id.empty() ? "(no Message-ID)" : f.message_id.c_str(), ids.size(),
                      short_ids(ids).c_str());
        }
        std::printf("%zu message(s)%s\n", list.size(),
                    shown < list.size() ? (", " + std::to_string(shown) + " shown").c_str() : "");
      }
      return warnings.empty() ? 0 : 1;
    };
  });
}

}  // namespace reduit::cli
