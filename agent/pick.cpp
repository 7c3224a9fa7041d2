#include "agent/pick.hpp"

#include <memory>
#include <set>

#include "agent/headers.hpp"
#include "agent/scan.hpp"
#include "restore/fetch.hpp"
#include "restore/snapshots.hpp"
#include "vault/catalog.hpp"
#include "vault/error.hpp"

namespace reduit {

namespace {

// The SHA-256 of every message of `where` whose header carries Message-ID <bare>,
// read from the vault.
std::vector<Hash> scan_vault(Repository& repo, const SelectRequest& where, const std::string& bare) {
  BlobIndex index(repo.load_indexes());
  TreeLoader trees(repo, index);
  SelectRequest all = where;
  all.message = nullptr;
  Selection sel = select_messages(repo, trees, all, nullptr);
  require_archive_key(repo);
  std::vector<const TreeEntry*> entries;
  for (const SelectedFolder& f : sel.folders) {
    for (std::size_t i : f.messages) entries.push_back(&f.tree.entries[i]);
  }
  std::vector<Hash> out;
  fetch_entries(
      repo, index, entries,
      [&](std::size_t i, std::string_view bytes) {
        std::string id = summarize_headers(bytes.substr(0, header_block_length(bytes))).message_id;
        if (id == bare || id == "<" + bare + ">") out.push_back(entries[i]->sha256);
      },
      nullptr);
  return out;
}

// The messages of `where` whose header carries Message-ID <bare>, read from the
// vault; `why` ends the not-found error.
MessagePick pick_from_vault(Repository& repo, const SelectRequest& where, const std::string& bare,
                            const std::string& why) {
  std::vector<Hash> shas = scan_vault(repo, where, bare);
  if (shas.empty()) {
    throw Error(ErrorCode::kNotFound,
                "no message with Message-ID <" + bare + "> in mailbox " + where.mailbox +
                    (where.folder.empty() ? "" : " folder " + where.folder) + " of snapshot " +
                    where.snapshot + " (read from the vault: " + why + ")");
  }
  MessagePick p;
  p.what = "Message-ID <" + bare + ">";
  auto set = std::make_shared<std::set<Hash>>(shas.begin(), shas.end());
  p.pred = [set](const std::string&, const TreeEntry& e) { return set->count(e.sha256) > 0; };
  return p;
}

}  // namespace

MessagePick pick_messages(const Config& cfg, const std::string& message_id, const std::string& unique_name,
                          Repository* repo, const SelectRequest* where, std::string* note) {
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
    // A catalog that cannot be read (damaged file, state directory not writable)
    // knows nothing: the vault's headers answer when a mailbox is named.
    const bool vault_readable = repo && where && !where->mailbox.empty();
    std::unique_ptr<Catalog> catalog;
    std::string unknown_why;
    std::vector<Hash> shas;
    try {
      catalog = std::make_unique<Catalog>(cfg.state_dir);
      shas = catalog->messages_with_id(bare);
      unknown_why = "the catalog " + catalog->path() + " does not know Message-ID <" + bare + ">";
    } catch (const std::exception& e) {
      if (!vault_readable) {
        const auto* err = dynamic_cast<const Error*>(&e);
        throw Error(err ? err->code() : ErrorCode::kIo,
                    std::string(e.what()) +
                        " (--message-id is looked up in the catalog; with --mailbox the vault is read "
                        "instead; 'reduit catalog rebuild' recreates the catalog)");
      }
      unknown_why = std::string("the catalog could not be read (") + e.what() + ")";
    }
    if (shas.empty() && vault_readable) {
      if (note) *note = unknown_why + ": read the headers of mailbox " + where->mailbox + " from the vault";
      return pick_from_vault(*repo, *where, bare, "the catalog on this host did not know it");
    }
    if (shas.empty()) {
      throw Error(ErrorCode::kNotFound, "no message with Message-ID <" + bare +
                                            "> is recorded in the catalog " + catalog->path() +
                                            " (it knows the messages backed up from this host; reduit find "
                                            "searches it, reduit ls lists a snapshot's unique names)");
    }
    auto set = std::make_shared<std::set<Hash>>(shas.begin(), shas.end());
    out.pred = [set](const std::string&, const TreeEntry& e) { return set->count(e.sha256) > 0; };
    if (vault_readable) {
      out.from_vault = [repo, w = *where, bare] {
        return pick_from_vault(*repo, w, bare, "none of the catalog's copies of it is in this mailbox");
      };
      // Asked only when the catalog's pick finds nothing in the mailbox.
      out.catalog_behind_vault = [repo, state_dir = cfg.state_dir] {
        try {
          Catalog again(state_dir);
          return !catalog_matches_vault(again, *repo);
        } catch (const Error&) {
          return true;  // a catalog error: do not trust what it does not know
        }
      };
    }
  }
  return out;
}

}  // namespace reduit
