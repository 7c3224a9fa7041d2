// restore/select.hpp — choosing what a live restore or an export takes from a
// snapshot: one mailbox, all of it or one folder (and its subfolders), all
// messages or those a predicate picks.
//
// Every folder name and entry path chosen is checked (check_relative_path; message
// paths directly in cur/ or new/) before the caller writes anything, as restore.hpp
// does. Errors: kNotFound (snapshot, mailbox, folder, or no message matched),
// kVerify (hostile or corrupt manifest), kKey.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "restore/snapshots.hpp"

namespace reduit {

struct SelectRequest {
  std::string snapshot = "latest";
  std::string mailbox;
  std::string folder;      // with subfolders: "" = every folder; without: "" = the root only
  bool subfolders = true;  // also the folder's subfolders (".A" → ".A.B", "A/B")
  /// Picks messages; empty = every message. Called with the folder name and entry.
  std::function<bool(const std::string&, const TreeEntry&)> message;
  /// Describes the predicate for the kNotFound message ("Message-ID <x@y>").
  std::string what;
};

struct SelectedFolder {
  SnapshotFolder folder;
  Tree tree;
  std::vector<std::size_t> messages;  // indexes into tree.entries, in path order
};

struct Selection {
  SnapshotRef snapshot;
  SnapshotMailbox mailbox;              // folders emptied (see `folders`)
  std::vector<SelectedFolder> folders;  // only folders with a chosen message, unless no predicate
  std::uint64_t messages = 0, bytes = 0;
};

/// Loads the snapshot list, the mailbox and its trees. `index` must outlive the
/// returned trees' use; `trees` is the loader to use (its statistics grow).
Selection select_messages(Repository& repo, TreeLoader& trees, const SelectRequest& req,
                          std::vector<std::string>* warnings);

/// True when folder `name` is `folder` itself or, with `subfolders`, one of its
/// subfolders (Maildir++ ".A" → ".A.B"; fs layout "A" → "A/B"; "" → every folder).
bool folder_matches(const std::string& name, const std::string& folder, bool subfolders);

}  // namespace reduit
