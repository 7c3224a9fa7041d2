#include "restore/select.hpp"

#include "vault/error.hpp"

namespace reduit {

bool folder_matches(const std::string& name, const std::string& folder, bool subfolders) {
  if (!subfolders) return name == folder;
  if (folder.empty() || name == folder) return true;
  return name.rfind(folder + ".", 0) == 0 || name.rfind(folder + "/", 0) == 0;
}

Selection select_messages(Repository& repo, TreeLoader& trees, const SelectRequest& req,
                          std::vector<std::string>* warnings) {
  Selection sel;
  std::vector<std::string> problems;
  std::vector<DamagedSnapshot> damaged;
  sel.snapshot = find_snapshot(list_snapshots(repo, nullptr, &problems, &damaged), req.snapshot, &damaged);
  if (warnings) warnings->insert(warnings->end(), problems.begin(), problems.end());
  sel.mailbox = find_mailbox(sel.snapshot, req.mailbox);
  std::vector<SnapshotFolder> folders;
  folders.swap(sel.mailbox.folders);
  bool any_folder = false;
  for (const SnapshotFolder& f : folders) {
    if (!folder_matches(f.name, req.folder, req.subfolders)) continue;
    any_folder = true;
    if (!f.name.empty()) check_relative_path(f.name, "folder name in the manifest");
    SelectedFolder sf{f, trees.load(f.tree), {}};
    for (std::size_t i = 0; i < sf.tree.entries.size(); ++i) {
      const TreeEntry& e = sf.tree.entries[i];
      check_relative_path(e.path, "path in the manifest");
      if (e.kind != EntryKind::kMessage) continue;
      std::string dir = e.path.substr(0, e.path.find('/'));
      if ((dir != "cur" && dir != "new") || e.path.find('/', 4) != std::string::npos) {
        throw Error(ErrorCode::kVerify,
                    "refusing manifest: message path '" + e.path + "' is not directly in cur/ or new/");
      }
      if (req.message && !req.message(f.name, e)) continue;
      sf.messages.push_back(i);
      ++sel.messages;
      sel.bytes += e.size;
    }
    if (!req.message || !sf.messages.empty()) sel.folders.push_back(std::move(sf));
  }
  const std::string where = "mailbox " + sel.mailbox.name + " of snapshot " + sel.snapshot.id.substr(0, 8);
  if (!any_folder) {
    std::string names;
    for (const auto& f : folders) names += (names.empty() ? "" : ", ") + (f.name.empty() ? "\"\"" : f.name);
    throw Error(ErrorCode::kNotFound, where + " has no folder '" + req.folder + "' (it has: " + names + ")");
  }
  if (req.message && sel.folders.empty()) {
    throw Error(ErrorCode::kNotFound,
                "no message with " + req.what + " in " + where +
                    (req.folder.empty() ? "" : " folder " + req.folder) +
                    " (reduit find lists the snapshots and folders that hold a message)");
  }
  return sel;
}

}  // namespace reduit
