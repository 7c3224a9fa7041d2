#include "retention/archive_restore.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <set>

#include "restore/snapshots.hpp"
#include "retention/archive.hpp"
#include "vault/error.hpp"

namespace reduit {

namespace fs = std::filesystem;

namespace {

struct Wanted {
  std::string folder;
  TreeEntry entry;
  std::int64_t seen_ns = 0;  // newest sighting (snapshot time; archive = its capture)
  bool in_snapshot = false;
};

void write_file(const std::string& path, const std::string& data, std::uint32_t mode, std::int64_t mtime_ns) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) throw_errno("create " + path, errno);
  std::size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(fd);
      throw_errno("write " + path, e);
    }
    off += static_cast<std::size_t>(n);
  }
  fchmod(fd, mode ? mode : 0600);
  timespec ts[2] = {{mtime_ns / 1000000000, mtime_ns % 1000000000},
                    {mtime_ns / 1000000000, mtime_ns % 1000000000}};
  futimens(fd, ts);
  if (::close(fd) != 0) throw_errno("close " + path, errno);
}

}  // namespace

ArchiveRestoreStats restore_archive(Repository& repo, const std::string& mailbox, const std::string& folder,
                                    std::int64_t from_ns, std::int64_t to_ns, const std::string& dest) {
  if (dest.empty()) throw Error(ErrorCode::kUsage, "restore needs --to DIR");
  if (fs::exists(dest) && !(fs::is_directory(dest) && fs::is_empty(dest)))
    throw Error(ErrorCode::kUsage, "restore target " + dest + " exists and is not an empty directory");
  auto selected = [&](const std::string& f, const TreeEntry& e) {
    if (!folder.empty() && f != folder && f.rfind(folder + ".", 0) != 0) return false;
    if (from_ns && e.mtime_ns < from_ns) return false;
    if (to_ns && e.mtime_ns > to_ns) return false;
    return true;
  };
  std::map<std::string, Wanted> wanted;  // folder \n unique name \n sha256
  bool mailbox_known = false;
  std::vector<std::string> problems;
  std::vector<SnapshotRef> snaps = list_snapshots(repo, nullptr, &problems);
  BlobIndex index(repo.load_indexes());
  TreeLoader trees(repo, index);
  for (const SnapshotRef& s : snaps) {
    for (const SnapshotMailbox& mb : s.snap.mailboxes) {
      if (mb.name != mailbox) continue;
      mailbox_known = true;
      for (const SnapshotFolder& f : mb.folders) {
        check_relative_path(f.name.empty() ? "x" : f.name, "folder name");
        for (const TreeEntry& e : trees.load(f.tree).entries) {
          if (e.kind != EntryKind::kMessage || !selected(f.name, e)) continue;
          std::string k = f.name + "\n" + unique_name(e.path) + "\n" + to_hex(e.sha256);
          Wanted& w = wanted[k];
          if (w.seen_ns <= s.snap.time_ns) w = Wanted{f.name, e, s.snap.time_ns, true};
        }
      }
    }
  }
  ArchiveRestoreStats st;
  for (const auto& [k, r] : load_archive(repo).records) {
    if (r.mailbox != mailbox) continue;
    mailbox_known = true;
    if (!selected(r.folder, r.entry)) continue;
    std::string key = r.folder + "\n" + unique_name(r.entry.path) + "\n" + to_hex(r.entry.sha256);
    if (!wanted.count(key)) {
      wanted[key] = Wanted{r.folder, r.entry, r.captured_ns, false};
      ++st.from_archive_only;
    }
  }
  if (!mailbox_known)
    throw Error(ErrorCode::kNotFound, "mailbox '" + mailbox + "' is in no snapshot and not in the archive");

  // Group blobs by pack so each pack is fetched once.
  std::map<Hash, std::vector<Hash>> by_pack;
  std::map<Hash, std::string> blobs;
  for (const auto& [k, w] : wanted) {
    check_relative_path((w.folder.empty() ? "" : w.folder + "/") + w.entry.path, "message path");
    for (const auto& b : {w.entry.header, w.entry.body}) {
      if (!b || blobs.count(*b)) continue;
      auto locs = index.find(*b);
      if (locs.empty())
        throw Error(ErrorCode::kVerify, "blob " + to_hex(*b) + " is in no index of the vault");
      blobs[*b];
      by_pack[locs.front().pack].push_back(*b);
    }
  }
  for (const auto& [pack, ids] : by_pack) {
    LoadedPack lp = repo.load_pack(pack);
    ++st.packs_fetched;
    std::set<Hash> need(ids.begin(), ids.end());
    for (const PackEntry& e : lp.entries) {
      if (need.count(e.id)) blobs[e.id] = std::string(repo.blob_bytes(lp, e));
    }
  }
  fs::create_directories(dest);
  std::set<std::string> folders;
  for (const auto& [k, w] : wanted) {
    std::string dir = dest + (w.folder.empty() ? "" : "/" + w.folder);
    if (folders.insert(w.folder).second) {
      for (const char* sub : {"cur", "new", "tmp"}) fs::create_directories(dir + "/" + sub);
    }
    std::string data =
        (w.entry.header ? blobs[*w.entry.header] : "") + (w.entry.body ? blobs[*w.entry.body] : "");
    if (sha256(data) != w.entry.sha256)
      throw Error(ErrorCode::kVerify, "archived message " + w.entry.path + " does not match its SHA-256");
    std::string path = dir + "/" + w.entry.path;
    if (fs::exists(path)) path += "." + to_hex(w.entry.sha256).substr(0, 8);  // same name, other content
    write_file(path, data, w.entry.mode, w.entry.mtime_ns);
    ++st.messages;
    st.bytes += data.size();
  }
  st.folders = folders.size();
  return st;
}

}  // namespace reduit
