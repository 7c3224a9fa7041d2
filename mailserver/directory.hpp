// mailserver/directory.hpp — who receives mail here: domains, users, aliases, and
// where each user's Maildir is.
//
// Built once from the config and read-only afterwards (safe to share between
// threads). A recipient resolves to the users whose mailboxes get a copy: a user
// to itself, an alias to its users (one level; aliases name users only, which the
// config checks). Lookups ignore ASCII case. Mailbox paths come from the same
// layout template the agent's discovery reads (agent/scan.hpp), so the Maildir
// the server writes is the mailbox the agent backs up, under the same name.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

namespace reduit::mail {

class Directory {
 public:
  enum class Verdict {
    kLocal,         // deliver to `users`
    kNotOurDomain,  // 550 5.7.1 relay access denied (we are never a relay)
    kUnknownUser,   // 550 5.1.1 in one of our domains, but nobody by that name
  };
  struct Lookup {
    Verdict verdict = Verdict::kUnknownUser;
    std::vector<std::string> users;  // "local@domain", sorted, distinct
  };

  /// `domains` and `users` lower case; `aliases` maps an address to users.
  Directory(std::vector<std::string> domains, std::vector<std::string> users,
            std::map<std::string, std::vector<std::string>> aliases);

  /// Resolves `local`@`domain` (any case). An empty domain (RFC 5321's bare
  /// <Postmaster>) is read as postmaster at the first configured domain.
  Lookup resolve(const std::string& local, const std::string& domain) const;

 private:
  std::set<std::string> domains_;
  std::string first_domain_;
  std::set<std::string> users_;
  std::map<std::string, std::vector<std::string>> aliases_;
};

/// The Maildir directory of `user` ("local@domain") under `root` with `layout`:
/// %d → domain, %n → local part, %u → the whole user name, literals as they are
/// ("%d/%n/Maildir" → root/example.ch/alice/Maildir). The agent's
/// discover_mailboxes(root, layout) names that directory `user`.
std::string mailbox_path(const std::string& root, const std::string& layout, const std::string& user);

/// Empty when `layout` can place every user in a directory of its own (it has %u,
/// or both %d and %n, and nothing but literals and those); else why not.
std::string check_delivery_layout(const std::string& layout);

/// Empty when `segment` may be used as a directory name (not empty, no '/', no NUL,
/// does not start with '.'); else why not.
std::string check_path_segment(const std::string& segment);

}  // namespace reduit::mail
