// tests/support/harness.hpp — running the real `reduit` binary against real keys,
// real vaults (file:// and sftp:// on a test sshd) and real Maildirs.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/gpg_home.hpp"
#include "vault/error.hpp"

namespace reduit::test {

struct RunResult {
  int status = -1;  // exit status, or 128+signal
  std::string out, err;
  nlohmann::json json() const;  // parses `out`
};

/// Runs argv (argv[0] is a path), waits, captures stdout and stderr.
RunResult run_command(const std::vector<std::string>& argv);

/// Starts argv in the background with stdout/stderr to files; returns the pid.
pid_t spawn_command(const std::vector<std::string>& argv, const std::string& out_path,
                    const std::string& err_path);

/// A fresh temporary directory, removed recursively at destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  std::string path_;
};

/// The two key roles of a site: the agent home (agent secret key + archive public
/// key: what the mail host holds) and the archive home (archive secret key + agent
/// public key: what a restorer holds). Created once per test process, removed at its
/// exit (GpgHome's destructor stops the homes' gpg-agents).
struct SiteKeys {
  std::unique_ptr<GpgHome> agent_home, archive_home, empty_home;
  std::string agent_fpr, archive_fpr;
  static SiteKeys& get();
};

struct FileFacts {
  std::uint64_t size;
  std::int64_t mtime_ns;
  unsigned mode;
  std::string sha256;
};

/// Every regular file below `root` (relative path → facts), leaving out the contents
/// of Maildir tmp/ directories (a tmp/ beside cur/ and new/).
std::map<std::string, FileFacts> tree_facts(const std::string& root);

/// Writes dir/reduit.toml (state in dir/state) and returns its path. `vault_extra`
/// is appended to [vault] (ssh settings), `top_extra` to the top level.
/// `layout` "profile:NAME" writes `profile = "NAME"` instead; `source_extra` is
/// appended to every [[source]] table.
std::string write_config(const std::string& dir, const std::string& vault_url, const std::string& gnupghome,
                         const std::vector<std::string>& roots, const std::string& layout,
                         const std::string& vault_extra = "", const std::string& top_extra = "",
                         const std::string& source_extra = "");

/// Path of a reduit binary and the source dir (for scripts/gen-maildir).
std::string reduit_binary();
std::string source_dir();
/// The shared corpus, or "" when it is not beside the project.
std::string corpus_dir();

/// Copies a directory tree preserving modes and mtimes (cp -a).
void copy_tree(const std::string& from, const std::string& to);
/// Runs scripts/gen-maildir; returns its JSON summary.
nlohmann::json generate_maildir(const std::string& out, int messages, int mailboxes, int seed);

std::string read_file(const std::string& path);

/// The ErrorCode that `f` throws, or kInternal when it throws nothing.
template <typename F>
ErrorCode error_code_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.code();
  }
  return ErrorCode::kInternal;
}
void write_file(const std::string& path, const std::string& data);

}  // namespace reduit::test
