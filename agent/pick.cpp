#include "agent/pick.hpp"

#include <memory>
#include <set>

#include "agent/scan.hpp"
#include "vault/catalog.hpp"
#include "vault/error.hpp"

namespace reduit {

MessagePick pick_messages(const Config& cfg, const std::string& message_id, const std::string& unique_name) {
  MessagePick out;
  if (!message_id.empty() && !unique_name.empty()) {
    throw Error(ErrorCode::kUsage, "give --message-id or --unique-name, not both");
  }
  if (!unique_name.empty()) {
    if (unique_name.find('/') != std::string::npos) {
      throw Error(ErrorCode::kUsage,
                  "--unique-name takes a file name without directory, e.g. "
                  "1700000000.M1P2.mx,S=1234 (see reduit ls or reduit find)");
    }
    std::string want = maildir_unique_name(unique_name);
    out.what = "unique name " + want;
    out.pred = [want](const std::string&, const TreeEntry& e) {
      return maildir_unique_name(e.path.substr(e.path.rfind('/') + 1)) == want;
    };
  } else if (!message_id.empty()) {
    std::string bare = message_id;
    if (bare.size() >= 2 && bare.front() == '<' && bare.back() == '>') bare = bare.substr(1, bare.size() - 2);
    if (bare.empty()) throw Error(ErrorCode::kUsage, "--message-id is empty");
    out.what = "Message-ID <" + bare + ">";
    Catalog catalog(cfg.state_dir);
    std::vector<Hash> shas = catalog.messages_with_id(bare);
    if (shas.empty()) {
      throw Error(ErrorCode::kNotFound, "no message with Message-ID <" + bare +
                                            "> is recorded in the catalog " + catalog.path() +
                                            " (it knows the messages backed up from this host; reduit find "
                                            "searches it, reduit ls lists a snapshot's unique names)");
    }
    auto set = std::make_shared<std::set<Hash>>(shas.begin(), shas.end());
    out.pred = [set](const std::string&, const TreeEntry& e) { return set->count(e.sha256) > 0; };
  }
  return out;
}

}  // namespace reduit
