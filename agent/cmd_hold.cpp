// reduit hold add|list|release — legal holds (retention/archive.hpp). A held
// message, and every snapshot holding it, is never deleted by forget or prune.
#include "agent/audit_record.hpp"
#include "agent/cli.hpp"
#include "agent/session.hpp"
#include "retention/archive.hpp"
#include "vault/clock.hpp"
#include "vault/error.hpp"

namespace reduit::cli {

namespace {

// "YYYY-MM-DD" (a whole UTC day: from its start, to its end) or an RFC 3339 instant.
std::int64_t parse_day(const std::string& s, bool end_of_day, const char* opt) {
  if (s.empty()) return 0;
  if (s.size() == 10) {
    if (auto t = parse_instant(s + "T00:00:00Z")) return end_of_day ? *t + 86400LL * 1000000000 - 1 : *t;
  } else if (auto t = parse_instant(s)) {
    return *t;
  }
  throw Error(ErrorCode::kUsage, std::string(opt) + " '" + s + "' is not YYYY-MM-DD or an RFC 3339 time");
}

nlohmann::ordered_json hold_json(const Hold& h) {
  return {{"id", h.id.substr(0, 12)},
          {"object", h.id},
          {"mailbox", h.mailbox},
          {"folder", h.folder},
          {"from", h.from_ns ? iso_time(h.from_ns) : ""},
          {"to", h.to_ns ? iso_time(h.to_ns) : ""},
          {"reason", h.reason},
          {"created", iso_time(h.created_ns)},
          {"host", h.host},
          {"released", h.released},
          {"release_reason", h.release_reason},
          {"released_at", h.released_ns ? iso_time(h.released_ns) : ""}};
}

void log_hold(Catalog& catalog, const char* action, const Hold& h, const std::string& reason) {
  RetentionLog log(catalog);
  std::int64_t run = log.begin("hold", clock_now_ns(), "");
  log.add(run,
          {action, h.id.substr(0, 12), "", h.mailbox + (h.folder.empty() ? "" : "/" + h.folder), 0, reason});
  log.finish(run, "{}");
}

}  // namespace

void add_hold(CLI::App& app, Globals& g, Runner& run) {
  auto* cmd = app.add_subcommand("hold", "legal holds: messages that no rule may delete");
  cmd->require_subcommand(1);
  struct Opts {
    std::string mailbox, folder, from, to, reason, id;
  };
  auto o = std::make_shared<Opts>();
  auto* add = cmd->add_subcommand("add", "place a hold on a mailbox (or a folder of it, or a date range)");
  add->add_option("--mailbox", o->mailbox, "mailbox name, e.g. alice@example.ch")->required();
  add->add_option("--folder", o->folder, "folder (and its subfolders), e.g. .Archive; default: all");
  add->add_option("--from", o->from, "first message date held (YYYY-MM-DD, UTC)");
  add->add_option("--to", o->to, "last message date held (YYYY-MM-DD, UTC, inclusive)");
  add->add_option("--reason", o->reason, "why (recorded for auditors)")->required();
  add->callback([&g, &run, o] {
    run = [&g, o] {
      Config cfg = load_config(g.config_path);
      Catalog catalog(cfg.state_dir);
      auto repo = open_repository(cfg, &catalog);
      Hold h = add_hold(*repo, o->mailbox, o->folder, parse_day(o->from, false, "--from"),
                        parse_day(o->to, true, "--to"), o->reason, clock_now_ns());
      log_hold(catalog, "hold-add", h, o->reason);
      for (const auto& w :
           audit_record(cfg, catalog, repo.get(), "hold-set", hold_json(h), repo->config().agent_key))
        std::fprintf(stderr, "reduit: warning: %s\n", w.c_str());
      if (g.json)
        print_json(hold_json(h));
      else
        std::printf("hold %s placed on %s\n", h.id.substr(0, 12).c_str(), h.mailbox.c_str());
      return 0;
    };
  });
  auto* list = cmd->add_subcommand("list", "list holds, active and released");
  list->callback([&g, &run] {
    run = [&g] {
      Config cfg = load_config(g.config_path);
      Catalog catalog(cfg.state_dir);
      auto repo = open_repository(cfg, &catalog);
      std::vector<Hold> holds = load_holds(*repo);
      if (g.json) {
        nlohmann::ordered_json arr = nlohmann::ordered_json::array();
        for (const auto& h : holds) arr.push_back(hold_json(h));
        print_json(arr);
      } else {
        for (const auto& h : holds) {
          std::printf("%s %-8s %s%s%s  %s\n", h.id.substr(0, 12).c_str(), h.released ? "released" : "active",
                      h.mailbox.c_str(), h.folder.empty() ? "" : "/", h.folder.c_str(), h.reason.c_str());
        }
        std::printf("%zu hold(s)\n", holds.size());
      }
      return 0;
    };
  });
  auto* rel = cmd->add_subcommand("release", "release a hold (the next prune may delete what it kept)");
  rel->add_option("id", o->id, "hold id (at least 6 hex digits)")->required();
  rel->add_option("--reason", o->reason, "why (recorded for auditors)")->required();
  rel->callback([&g, &run, o] {
    run = [&g, o] {
      Config cfg = load_config(g.config_path);
      Catalog catalog(cfg.state_dir);
      auto repo = open_repository(cfg, &catalog);
      Hold h = release_hold(*repo, o->id, o->reason, clock_now_ns());
      log_hold(catalog, "hold-release", h, o->reason);
      for (const auto& w :
           audit_record(cfg, catalog, repo.get(), "hold-release", hold_json(h), repo->config().agent_key))
        std::fprintf(stderr, "reduit: warning: %s\n", w.c_str());
      if (g.json)
        print_json(hold_json(h));
      else
        std::printf("hold %s released\n", h.id.substr(0, 12).c_str());
      return 0;
    };
  });
}

}  // namespace reduit::cli
