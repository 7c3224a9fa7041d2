// agent/cli.hpp — shared pieces of the thin CLI layer (one file per subcommand).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "agent/config.hpp"
#include "agent/text.hpp"

namespace reduit::cli {

struct Globals {
  std::string config_path;  // empty = built-in demo config
  bool json = false;
  bool quiet = false;
};

/// What the selected subcommand runs; returns the exit status (0 ok, 1 warnings).
using Runner = std::function<int()>;

void add_init(CLI::App& app, Globals& g, Runner& run);
void add_backup(CLI::App& app, Globals& g, Runner& run);
void add_snapshots(CLI::App& app, Globals& g, Runner& run);
void add_ls(CLI::App& app, Globals& g, Runner& run);
void add_restore(CLI::App& app, Globals& g, Runner& run);
void add_check(CLI::App& app, Globals& g, Runner& run);
void add_drill(CLI::App& app, Globals& g, Runner& run);
void add_catalog(CLI::App& app, Globals& g, Runner& run);
void add_find(CLI::App& app, Globals& g, Runner& run);
void add_export(CLI::App& app, Globals& g, Runner& run);
void add_mailserver(CLI::App& app, Globals& g, Runner& run);
void add_forget(CLI::App& app, Globals& g, Runner& run);
void add_prune(CLI::App& app, Globals& g, Runner& run);
void add_hold(CLI::App& app, Globals& g, Runner& run);
void add_archive(CLI::App& app, Globals& g, Runner& run);
void add_agent(CLI::App& app, Globals& g, Runner& run);
void add_status(CLI::App& app, Globals& g, Runner& run);
void add_report(CLI::App& app, Globals& g, Runner& run);
void add_audit(CLI::App& app, Globals& g, Runner& run);

/// Prints a JSON document (stable keys; --json output) to stdout.
void print_json(const nlohmann::ordered_json& j);
/// True when stderr is a terminal and progress output is wanted.
bool want_progress(const Globals& g);

}  // namespace reduit::cli
