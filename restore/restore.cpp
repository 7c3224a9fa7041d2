#include "restore/restore.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <unordered_set>

#include "restore/blobs.hpp"
#include "restore/prefetch.hpp"
#include "restore/snapshots.hpp"
#include "vault/error.hpp"

namespace reduit {

namespace {

std::string join(const std::string& a, const std::string& b) {
  if (a.empty()) return b;
  if (b.empty()) return a;
  return a + "/" + b;
}

// Makes directories below `root`, each component checked to be a directory (not a
// link planted there), and remembers the ones it made or checked: every file of a
// folder names the same cur/ and tmp/, which would otherwise cost a mkdir and an
// lstat per component per file (4,352 mkdir calls, 4,320 of them EEXIST, for a
// mailbox of 1,503 files).
class DirMaker {
 public:
  explicit DirMaker(const std::string& root) : root_(root) {}

  /// Makes root/rel and its parents (rel relative, '/'-separated; "" is root).
  /// Errors: kIo when mkdir fails for another reason than EEXIST; kVerify when a
  /// component exists and is not a directory.
  void make(const std::string& rel) {
    if (rel.empty() || made_.count(rel)) return;
    std::size_t start = 0;
    while (start < rel.size()) {
      std::size_t slash = rel.find('/', start);
      if (slash == std::string::npos) slash = rel.size();
      std::string prefix = rel.substr(0, slash);
      start = slash + 1;
      if (made_.count(prefix)) continue;
      const std::string p = root_ + "/" + prefix;
      if (mkdir(p.c_str(), 0700) != 0 && errno != EEXIST) throw_errno("mkdir " + p, errno);
      struct stat st;
      if (lstat(p.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
        throw Error(ErrorCode::kVerify, "refusing to restore through " + p + ": not a directory");
      }
      made_.insert(std::move(prefix));
    }
  }

 private:
  const std::string& root_;
  std::unordered_set<std::string> made_;
};

void write_all(int fd, const char* data, std::size_t size, std::uint64_t offset, const std::string& path) {
  while (size > 0) {
    ssize_t n = pwrite(fd, data, size, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("write " + path, errno);
    }
    data += n;
    size -= static_cast<std::size_t>(n);
    offset += static_cast<std::uint64_t>(n);
  }
}

// The whole content of a file restore wrote itself (a stashed blob).
std::string read_stash(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) throw_errno("open " + path, errno);
  std::string out;
  char buf[1 << 16];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      throw_errno("read " + path, err);
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

struct Part {
  std::size_t file;      // index into files
  std::uint64_t offset;  // where the blob goes in the file
};

struct PendingFile {
  std::string final_path;  // absolute
  std::string temp_path;   // absolute
  const TreeEntry* entry;
  int parts_left = 0;
  bool chained = false;  // a delta chain, rebuilt after the plain blobs are written
  bool on_disk = false;  // some of its parts are in temp_path already
  // Parts that came with the pack being written out (views into it, with their
  // offsets in the file): a file whose parts all sit in one pack is written once,
  // from memory, and hashed without reading it back.
  std::vector<std::pair<std::uint64_t, std::string_view>> held;
};

// Who owns what is restored (RestoreRequest::owner).
struct OwnerPolicy {
  enum Kind { kNone, kKeep, kMap } kind = kNone;
  uid_t uid = 0;
  gid_t gid = 0;

  // The owner for an entry, or nullopt to leave the restoring user's.
  std::optional<std::pair<uid_t, gid_t>> of(const std::optional<std::uint32_t>& u,
                                            const std::optional<std::uint32_t>& g) const {
    if (kind == kMap) return std::make_pair(uid, gid);
    if (kind == kKeep && u && g) return std::make_pair(static_cast<uid_t>(*u), static_cast<gid_t>(*g));
    return std::nullopt;
  }
};

OwnerPolicy parse_owner(const std::string& spec) {
  OwnerPolicy p;
  if (spec.empty()) {
    p.kind = geteuid() == 0 ? OwnerPolicy::kKeep : OwnerPolicy::kNone;
    return p;
  }
  if (spec == "keep" || spec == "none") {
    p.kind = spec == "keep" ? OwnerPolicy::kKeep : OwnerPolicy::kNone;
    if (p.kind == OwnerPolicy::kKeep && geteuid() != 0) {
      throw Error(ErrorCode::kUsage, "--owner keep needs root (only root may give files to another user)");
    }
    return p;
  }
  std::size_t colon = spec.find(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == spec.size()) {
    throw Error(ErrorCode::kUsage,
                "--owner must be keep, none or USER:GROUP (names or numbers), not '" + spec + "'");
  }
  const std::string u = spec.substr(0, colon), g = spec.substr(colon + 1);
  auto number = [](const std::string& s) { return s.find_first_not_of("0123456789") == std::string::npos; };
  if (number(u)) {
    p.uid = static_cast<uid_t>(std::stoul(u));
  } else if (const passwd* pw = getpwnam(u.c_str())) {
    p.uid = pw->pw_uid;
  } else {
    throw Error(ErrorCode::kUsage, "--owner: no user '" + u + "' on this host");
  }
  if (number(g)) {
    p.gid = static_cast<gid_t>(std::stoul(g));
  } else if (const group* gr = getgrnam(g.c_str())) {
    p.gid = gr->gr_gid;
  } else {
    throw Error(ErrorCode::kUsage, "--owner: no group '" + g + "' on this host");
  }
  if (geteuid() != 0 && (p.uid != geteuid() || p.gid != getegid())) {
    throw Error(ErrorCode::kUsage, "--owner " + spec + " needs root (only root may give files away)");
  }
  p.kind = OwnerPolicy::kMap;
  return p;
}

// One restore; `*used_catalog` says, also when it throws, whether any blob location
// came from the catalog.
RestoreStats restore_once(Repository& repo, const RestoreRequest& req, bool* used_catalog) {
  auto t0 = std::chrono::steady_clock::now();
  RestoreStats stats;
  if (req.dest.empty()) throw Error(ErrorCode::kUsage, "restore needs --to DIR");
  const OwnerPolicy owner = parse_owner(req.owner);

  // The catalog's copies of the snapshot objects it has seen (decrypted and
  // verified when they were added, keyed by their SHA-256 names): one gpg run saved
  // per snapshot the vault keeps. A catalog that cannot be read or written (kIo: a
  // damaged file, a backup holding its lock) is not used.
  std::vector<DamagedSnapshot> damaged;
  std::vector<SnapshotRef> all;
  try {
    all = list_snapshots(repo, req.catalog, &stats.warnings, &damaged);
  } catch (const Error& e) {
    if (!req.catalog || e.code() != ErrorCode::kIo) throw;
    stats.warnings.clear();
    damaged.clear();
    all = list_snapshots(repo, nullptr, &stats.warnings, &damaged);
  }
  SnapshotRef snap = find_snapshot(all, req.snapshot, &damaged);
  stats.snapshot_id = snap.id;

  // The selection: (folder directory relative to the destination, folder).
  std::vector<std::pair<std::string, const SnapshotFolder*>> folders;
  if (req.all) {
    // Disaster recovery: every mailbox, at its path below the source root.
    stats.mailbox = "*";
    for (const SnapshotMailbox& mb : snap.snap.mailboxes) {
      if (!mb.path.empty()) check_relative_path(mb.path, "mailbox path in the manifest");
      for (const auto& f : mb.folders) {
        if (!f.name.empty()) check_relative_path(f.name, "folder name in the manifest");
        folders.emplace_back(join(mb.path, f.name), &f);
      }
    }
  } else {
    const SnapshotMailbox& mb = find_mailbox(snap, req.mailbox);
    stats.mailbox = mb.name;
    for (const auto& f : mb.folders) {
      if (req.folder.empty() || f.name == req.folder || f.name.rfind(req.folder + ".", 0) == 0 ||
          f.name.rfind(req.folder + "/", 0) == 0) {
        if (!f.name.empty()) check_relative_path(f.name, "folder name in the manifest");
        folders.emplace_back(f.name, &f);
      }
    }
    if (folders.empty()) {
      std::string names;
      for (const auto& f : mb.folders)
        names += (names.empty() ? "" : ", ") + (f.name.empty() ? "\"\"" : f.name);
      throw Error(ErrorCode::kNotFound, "mailbox " + mb.name + " has no folder '" + req.folder +
                                            "' in snapshot " + snap.id.substr(0, 8) + " (it has: " + names +
                                            ")");
    }
  }

  // Load and check the whole selection before writing a byte. Trees are kept for the
  // first batch's entries only; the others are loaded again when their
  // batch comes, so restoring a million messages holds one batch's plan at a time.
  // --all needs nearly every location: the index objects are cheaper than a lookup
  // for each of them.
  // The catalog's locations for one mailbox when it is the vault's copy; --all
  // reads the index objects (faster for everything, docs/PERFORMANCE.md).
  BlobIndex index = open_blob_index(repo, req.all ? nullptr : req.catalog);
  struct NoteCatalogUse {
    const BlobIndex& index;
    bool* out;
    ~NoteCatalogUse() { *out = index.used_catalog(); }
  } note_catalog_use{index, used_catalog};
  TreeLoader trees(repo, index);
  // On the backup host the catalog holds the patches of recent backups (and the
  // trees forget walked): those need no metadata pack.
  trees.use_tree_cache(req.catalog);
  struct LoadedFolder {
    std::string rel;  // folder directory relative to the destination
    const SnapshotFolder* f;
    std::optional<Tree> tree;  // nullopt until its batch when not kept
    std::size_t entries = 0;   // after the selection
  };
  // Checks a folder's tree and applies the selection; false = it picks nothing.
  auto prepare = [&](const SnapshotFolder* f, Tree& t) {
    for (const TreeEntry& e : t.entries) {
      check_relative_path(e.path, "path in the manifest");
      if (e.kind == EntryKind::kMessage) {
        std::string dir = e.path.substr(0, e.path.find('/'));
        if ((dir != "cur" && dir != "new") || e.path.find('/', 4) != std::string::npos) {
          throw Error(ErrorCode::kVerify,
                      "refusing manifest: message path '" + e.path + "' is not directly in cur/ or new/");
        }
      }
    }
    if (!req.select) return true;
    bool picked = false;
    std::erase_if(t.entries, [&](const TreeEntry& e) {
      if (e.kind == EntryKind::kMessage) {
        bool keep = req.select(f->name, e);
        picked = picked || keep;
        return !keep;
      }
      return e.kind == EntryKind::kFile &&
             (e.path.rfind("dovecot.index", 0) == 0 || e.path.rfind("dovecot.list.index", 0) == 0);
    });
    return picked;
  };
  std::vector<LoadedFolder> loaded;
  // Batches of whole folders, each up to req.batch_entries entries (a bigger folder
  // is a batch of its own): [first folder, end) per batch.
  std::vector<std::pair<std::size_t, std::size_t>> batches;
  std::size_t batch_fill = 0;
  // Every content blob the restore needs, with the last batch that needs it (sorted
  // by id after the pass): a pack is fetched once, and the blobs in it that a later
  // batch needs wait in a stash inside the destination.
  std::vector<std::pair<Hash, std::uint32_t>> wanted_by;
  for (const auto& [rel, f] : folders) {
    Tree t = trees.load(f->tree);
    if (!prepare(f, t)) continue;
    if (batches.empty() || (batch_fill > 0 && batch_fill + t.entries.size() > req.batch_entries)) {
      batches.emplace_back(loaded.size(), loaded.size());
      batch_fill = 0;
    }
    batch_fill += t.entries.size();
    ++batches.back().second;
    const auto batch = static_cast<std::uint32_t>(batches.size() - 1);
    for (const TreeEntry& e : t.entries) {
      for (const std::optional<Hash>* id : {&e.header, &e.body, &e.blob})
        if (*id) wanted_by.emplace_back(**id, batch);
    }
    LoadedFolder lf{rel, f, std::nullopt, t.entries.size()};
    if (batch == 0) lf.tree = std::move(t);  // the first batch's trees are not loaded twice
    loaded.push_back(std::move(lf));
  }
  if (req.select && loaded.empty()) {
    throw Error(ErrorCode::kNotFound,
                "no message with " + req.select_what + " in mailbox " + stats.mailbox + " of snapshot " +
                    snap.id.substr(0, 8) + (req.folder.empty() ? "" : " folder " + req.folder) +
                    " (reduit find lists the snapshots and folders that hold a message)");
  }
  stats.batches = batches.size();
  if (batches.size() == 1) wanted_by = {};  // nothing to keep for later
  std::sort(wanted_by.begin(), wanted_by.end());
  {
    // One row per blob: the last batch that needs it.
    std::size_t out = 0;
    for (std::size_t i = 0; i < wanted_by.size(); ++i) {
      if (out > 0 && wanted_by[out - 1].first == wanted_by[i].first)
        wanted_by[out - 1].second = wanted_by[i].second;
      else
        wanted_by[out++] = wanted_by[i];
    }
    wanted_by.resize(out);
    wanted_by.shrink_to_fit();
  }
  auto last_batch_of = [&](const Hash& id) -> std::optional<std::uint32_t> {
    auto it = std::lower_bound(wanted_by.begin(), wanted_by.end(), std::make_pair(id, std::uint32_t{0}));
    if (it == wanted_by.end() || it->first != id) return std::nullopt;
    return it->second;
  };

  // Destination: absent or empty.
  struct stat st;
  if (lstat(req.dest.c_str(), &st) == 0) {
    if (S_ISLNK(st.st_mode)) {
      throw Error(ErrorCode::kUsage, "restore target " + req.dest +
                                         " is a symbolic link; give the directory it points to, or a new one "
                                         "(restore never writes through a link)");
    }
    if (!S_ISDIR(st.st_mode))
      throw Error(ErrorCode::kUsage, "restore target " + req.dest + " exists and is not a directory");
    DIR* d = opendir(req.dest.c_str());
    bool empty = true;
    if (d) {
      while (dirent* e = readdir(d)) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) empty = false;
      }
      closedir(d);
    }
    if (!empty) {
      throw Error(ErrorCode::kUsage,
                  "restore target " + req.dest +
                      " is not empty; give a new or empty directory (restore never overwrites)");
    }
  }
  // Data packs are encrypted to the archive keys only: without one of their secret
  // halves nothing could be restored, so say so before writing anything.
  bool can_decrypt = false;
  std::string archive_keys;
  for (const std::string& k : repo.config().archive_keys) {
    can_decrypt = can_decrypt || repo.crypto().has_secret_key(k);
    archive_keys += (archive_keys.empty() ? "" : ", ") + k;
  }
  if (!can_decrypt) {
    throw Error(ErrorCode::kKey, "cannot decrypt mail: no archive secret key (" + archive_keys +
                                     ") in this GnuPG home; give the one that holds it with --gnupghome");
  }
  bool created_dest = false;
  if (lstat(req.dest.c_str(), &st) != 0) {
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(req.dest).parent_path(), ec);
    if (mkdir(req.dest.c_str(), 0700) != 0) throw_errno("cannot create restore target " + req.dest, errno);
    created_dest = true;
  }
  char real[PATH_MAX];
  if (!realpath(req.dest.c_str(), real)) throw_errno("realpath " + req.dest, errno);
  const std::string root = real;
  // A failed restore leaves the destination as it found it (absent or empty), so a
  // retry with the fault fixed can use the same path.
  auto undo = [&] {
    std::error_code ec;
    if (created_dest) {
      std::filesystem::remove_all(root, ec);
    } else {
      for (const auto& e : std::filesystem::directory_iterator(root, ec))
        std::filesystem::remove_all(e.path(), ec);
    }
  };
  try {
    DirMaker dirs(root);
    std::vector<std::tuple<std::string, std::uint32_t, std::int64_t>> dir_times;
    std::map<std::string, std::optional<std::pair<uid_t, gid_t>>> dir_owner;  // absolute dir → owner
    struct LinkFirst {
      std::string final_path;  // the first file restored for a link group
      Hash sha256;
      std::uint64_t size;
    };
    std::map<std::string, LinkFirst> link_first;  // link group → its first file (earlier batches too)
    std::uint64_t tmp_counter = 0;

    // Owner, mode and mtime of a complete temp file, then its final name. Closes fd.
    auto install = [&](int fd, PendingFile& pf) {
      const TreeEntry& e = *pf.entry;
      if (auto o = owner.of(e.uid, e.gid); o && fchown(fd, o->first, o->second) != 0) {
        int err = errno;
        ::close(fd);
        throw_errno("set owner of " + pf.temp_path, err);
      }
      fchmod(fd, e.mode & 07777);
      timespec times[2];
      times[0].tv_sec = times[1].tv_sec = e.mtime_ns / 1000000000;
      times[0].tv_nsec = times[1].tv_nsec = e.mtime_ns % 1000000000;
      if (futimens(fd, times) != 0) {
        int err = errno;
        ::close(fd);
        throw_errno("set mtime of " + pf.temp_path, err);
      }
      ::close(fd);
      if (rename(pf.temp_path.c_str(), pf.final_path.c_str()) != 0)
        throw_errno("rename to " + pf.final_path, errno);
    };
    auto mismatch = [](const PendingFile& pf) {
      return Error(ErrorCode::kVerify,
                   "restored " + pf.final_path + " does not match the manifest's SHA-256");
    };
    // A file whose parts are all on disk (temp_path): read back, checked, installed.
    auto finalize = [&](PendingFile& pf) {
      const TreeEntry& e = *pf.entry;
      int fd = ::open(pf.temp_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
      if (fd < 0) throw_errno("open " + pf.temp_path, errno);
      // Verify the assembled file against the manifest's SHA-256.
      Sha256Stream h;
      std::vector<char> buf(1 << 16);
      std::uint64_t total = 0;
      while (true) {
        ssize_t n = pread(fd, buf.data(), buf.size(), static_cast<off_t>(total));
        if (n < 0) {
          if (errno == EINTR) continue;
          int err = errno;
          ::close(fd);
          throw_errno("read back " + pf.temp_path, err);
        }
        if (n == 0) break;
        h.update(buf.data(), static_cast<std::size_t>(n));
        total += static_cast<std::uint64_t>(n);
      }
      if (total != e.size || h.finish() != e.sha256) {
        ::close(fd);
        unlink(pf.temp_path.c_str());
        throw mismatch(pf);
      }
      install(fd, pf);
    };
    // A file whose parts are all held in memory: checked, written once, installed.
    auto finalize_held = [&](PendingFile& pf) {
      const TreeEntry& e = *pf.entry;
      std::sort(pf.held.begin(), pf.held.end());
      Sha256Stream h;
      std::uint64_t total = 0;
      for (const auto& [offset, bytes] : pf.held) {
        if (offset != total) throw mismatch(pf);  // a gap or an overlap: blobs that do not fit together
        h.update(bytes.data(), bytes.size());
        total += bytes.size();
      }
      if (total != e.size || h.finish() != e.sha256) throw mismatch(pf);
      int fd = ::open(pf.temp_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
      if (fd < 0) throw_errno("create " + pf.temp_path, errno);
      try {
        for (const auto& [offset, bytes] : pf.held)
          write_all(fd, bytes.data(), bytes.size(), offset, pf.temp_path);
      } catch (...) {
        ::close(fd);
        throw;
      }
      pf.held.clear();
      install(fd, pf);
    };
    auto complete = [&](PendingFile& pf) { pf.on_disk ? finalize(pf) : finalize_held(pf); };
    // Writes the parts a file holds in memory to its temp file (before the bytes they
    // view go: the pack, or a blob read from the stash).
    auto spill = [&](PendingFile& pf) {
      if (pf.held.empty()) return;
      int fd = ::open(pf.temp_path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
      if (fd < 0) throw_errno("create " + pf.temp_path, errno);
      try {
        for (const auto& [offset, bytes] : pf.held)
          write_all(fd, bytes.data(), bytes.size(), offset, pf.temp_path);
      } catch (...) {
        ::close(fd);
        throw;
      }
      ::close(fd);
      pf.held.clear();
      pf.on_disk = true;
    };

    // A blob may be indexed in several packs (re-uploaded after a pack went missing):
    // take a pack that is still in the vault.
    const std::map<Hash, std::uint64_t> present = repo.list_packs();
    BlobFetcher chains(repo, index, &present);
    std::vector<std::size_t> holding;  // files holding parts of the current pack
    // Gives a blob to the parts of pending files that take it; completes them.
    // `bytes` outlives the call when `from_pack` (the current pack): the parts are
    // then held in memory until their file is complete or the pack is done.
    auto write_parts = [&](std::vector<PendingFile>& files, const std::vector<Part>& parts,
                           std::string_view bytes, bool from_pack) {
      for (const Part& part : parts) {
        PendingFile& pf = files[part.file];
        if (from_pack && !pf.on_disk) {
          if (pf.held.empty()) holding.push_back(part.file);
          pf.held.emplace_back(part.offset, bytes);
        } else {  // `bytes` goes away after the call: to the temp file now
          pf.held.emplace_back(part.offset, bytes);
          spill(pf);
        }
        if (--pf.parts_left == 0) complete(pf);
      }
    };
    // Blobs of a fetched pack that a later batch needs (inside the destination, gone
    // when the restore ends; restored files are checked against their SHA-256 anyway).
    std::string stash_dir;
    std::set<Hash> stashed;
    auto stash_path = [&](const Hash& id) { return stash_dir + "/" + to_hex(id); };
    for (std::size_t b = 0; b < batches.size(); ++b) {
      const auto [first_folder, end_folder] = batches[b];
      // Plan: every blob → the files and offsets it fills; group blobs by pack.
      std::vector<PendingFile> files;
      std::map<Hash, std::vector<Part>> need;                  // blob id → parts
      std::vector<std::pair<std::string, std::string>> links;  // (first file, link path), both absolute
      for (std::size_t i = first_folder; i < end_folder; ++i) {
        LoadedFolder& lf = loaded[i];
        if (!lf.tree) {
          Tree t = trees.load(lf.f->tree);
          prepare(lf.f, t);
          lf.tree = std::move(t);
        }
        const std::string& frel = lf.rel;
        const SnapshotFolder* f = lf.f;
        ++stats.folders;
        dirs.make(frel);
        if (f->mtime_ns != 0) dir_times.emplace_back(join(root, frel), f->mode, f->mtime_ns);
        std::string fdir = join(root, frel);
        // The folder directory itself is no entry: it gets its cur/ directory's owner.
        for (const TreeEntry& e : lf.tree->entries) {
          if (e.kind == EntryKind::kDir && e.path == "cur") dir_owner[fdir] = owner.of(e.uid, e.gid);
        }
        for (const TreeEntry& e : lf.tree->entries) {
          std::string rel = join(frel, e.path);
          if (e.kind == EntryKind::kDir) {
            dirs.make(rel);
            dir_times.emplace_back(join(root, rel), e.mode, e.mtime_ns);
            dir_owner[join(root, rel)] = owner.of(e.uid, e.gid);
            ++stats.dirs;
            continue;
          }
          std::string parent = rel.substr(0, rel.rfind('/') == std::string::npos ? 0 : rel.rfind('/'));
          dirs.make(parent);
          if (!e.link.empty()) {
            // A second name of one inode (same content): a link, made once the first
            // name is complete. Different content under one group is not trusted as a link.
            auto [it, first] = link_first.emplace(e.link, LinkFirst{join(root, rel), e.sha256, e.size});
            if (!first && it->second.sha256 == e.sha256 && it->second.size == e.size) {
              links.emplace_back(it->second.final_path, join(root, rel));
              if (e.kind == EntryKind::kMessage)
                ++stats.messages;
              else
                ++stats.files;
              ++stats.hard_links;
              continue;
            }
          }
          PendingFile pf;
          pf.final_path = join(root, rel);
          pf.entry = &e;
          if (e.kind == EntryKind::kMessage) {
            dirs.make(join(frel, "tmp"));
            pf.temp_path = join(fdir, "tmp") + "/.reduit-restore." + std::to_string(tmp_counter++);
          } else {
            pf.temp_path = join(root, parent) + "/.reduit-restore." + std::to_string(tmp_counter++);
          }
          std::size_t idx = files.size();
          if (e.kind == EntryKind::kMessage) {
            need[*e.header].push_back({idx, 0});
            pf.parts_left = 1;
            if (e.body) {
              auto hl = index.find(*e.header);
              if (hl.empty())
                throw Error(ErrorCode::kVerify,
                            "blob " + to_hex(*e.header) + " of " + rel + " is not in any index");
              need[*e.body].push_back({idx, hl.front().length});
              pf.parts_left = 2;
            }
          } else if (e.blob) {
            need[*e.blob].push_back({idx, 0});
            pf.parts_left = 1;
          } else if (e.delta) {
            pf.chained = true;
          }
          files.push_back(std::move(pf));
          if (e.kind == EntryKind::kMessage)
            ++stats.messages;
          else
            ++stats.files;
          stats.bytes += e.size;
        }
      }

      // Files with no content (empty) are complete already.
      for (PendingFile& pf : files) {
        if (pf.parts_left == 0 && !pf.chained) finalize_held(pf);
      }
      // Blobs an earlier batch's packs held: from the stash.
      for (auto it = need.begin(); it != need.end();) {
        if (!stashed.count(it->first)) {
          ++it;
          continue;
        }
        const std::string path = stash_path(it->first);
        std::string data = read_stash(path);
        write_parts(files, it->second, data, /*from_pack=*/false);
        if (last_batch_of(it->first) == b) {
          unlink(path.c_str());
          stashed.erase(it->first);
        }
        it = need.erase(it);
      }

      std::vector<PackRequest> plan;  // pack → blobs wanted from it
      {
        std::map<Hash, std::vector<Hash>> by_pack;
        for (const auto& [id, parts] : need) by_pack[index.locate(id, &present).pack].push_back(id);
        for (auto& [pack_id, wanted] : by_pack) plan.push_back({pack_id, std::move(wanted)});
      }

      std::uint64_t packs_done = 0;
      {
        // Fetched, decrypted and checked on other threads while this one writes files;
        // the repository is theirs until the end of this block (restore/prefetch.hpp).
        PackPrefetcher prefetch(repo, plan);
        for (const PackRequest& wanted : plan) {
          const FetchedPack fetched = prefetch.next();
          const LoadedPack& pack = fetched.pack;
          ++stats.packs_fetched;
          if (auto it = index.packs().find(wanted.pack); it != index.packs().end())
            stats.bytes_fetched += it->second.size;
          for (const PackEntry& e : pack.entries) {
            // Needed by a later batch: kept, so that batch does not fetch this pack again.
            auto last = last_batch_of(e.id);
            if (!last || *last <= b || stashed.count(e.id)) continue;
            if (stash_dir.empty()) {
              std::string tmpl = root + "/.reduit-restore-stash.XXXXXX";
              if (!mkdtemp(tmpl.data())) throw_errno("create a stash directory in " + root, errno);
              stash_dir = tmpl;
            }
            std::string_view bytes = repo.blob_bytes(pack, e);
            const std::string path = stash_path(e.id);
            int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
            if (fd < 0) throw_errno("create " + path, errno);
            write_all(fd, bytes.data(), bytes.size(), 0, path);
            ::close(fd);
            stashed.insert(e.id);
            ++stats.stashed_blobs;
          }
          for (std::size_t i = 0; i < wanted.blobs.size(); ++i)
            write_parts(files, need[wanted.blobs[i]], fetched.blobs[i], /*from_pack=*/true);
          // Files still waiting for a part from another pack keep what they have on disk.
          for (std::size_t i : holding) spill(files[i]);
          holding.clear();
          ++packs_done;
          if (req.progress) {
            if (batches.size() > 1)
              fprintf(stderr, "\r\033[Krestoring: batch %zu/%zu, %llu/%zu packs", b + 1, batches.size(),
                      static_cast<unsigned long long>(packs_done), plan.size());
            else
              fprintf(stderr, "\r\033[Krestoring: %llu/%zu packs",
                      static_cast<unsigned long long>(packs_done), plan.size());
          }
        }
      }  // the prefetcher's threads are joined: the repository is this thread's again
      // Files stored as delta chains: patched link by link through scratch files
      // beside them (inside the destination), each link's result checked.
      for (PendingFile& pf : files) {
        if (!pf.chained) continue;
        int fd = ::open(pf.temp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) throw_errno("create " + pf.temp_path, errno);
        try {
          ChainInfo info = rebuild_delta_chain(*pf.entry->delta, chains.as_function(), fd,
                                               pf.temp_path.substr(0, pf.temp_path.rfind('/')));
          if (info.chain != pf.entry->chain) {
            throw Error(ErrorCode::kVerify, "its delta chain differs from the one the manifest names");
          }
        } catch (const Error& err) {
          ::close(fd);
          throw Error(err.code(), pf.final_path + ": " + err.what());
        }
        ::close(fd);
        finalize(pf);
      }
      for (const PendingFile& pf : files) {
        if (pf.parts_left != 0)
          throw Error(ErrorCode::kInternal, "restore left " + pf.final_path + " incomplete");
      }
      for (const auto& [first, path] : links) {
        if (link(first.c_str(), path.c_str()) != 0) throw_errno("hard link " + path + " to " + first, errno);
      }
      for (std::size_t i = first_folder; i < end_folder; ++i) loaded[i].tree.reset();
    }
    if (req.progress) fprintf(stderr, "\r\033[K");
    if (!stash_dir.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(stash_dir, ec);
      if (ec)
        throw Error(ErrorCode::kIo, "cannot remove the restore's stash " + stash_dir + ": " + ec.message());
    }
    stats.packs_fetched += chains.packs_fetched();
    stats.bytes_fetched += chains.bytes_fetched();
    // Directory modes and mtimes last (writing into a directory changes its mtime).
    std::sort(dir_times.begin(), dir_times.end(),
              [](const auto& a, const auto& b) { return std::get<0>(a).size() > std::get<0>(b).size(); });
    for (const auto& [path, mode, mtime] : dir_times) {
      timespec times[2];
      times[0].tv_sec = times[1].tv_sec = mtime / 1000000000;
      times[0].tv_nsec = times[1].tv_nsec = mtime % 1000000000;
      if (auto it = dir_owner.find(path); it != dir_owner.end() && it->second) {
        if (lchown(path.c_str(), it->second->first, it->second->second) != 0)
          throw_errno("set owner of " + path, errno);
      }
      chmod(path.c_str(), mode & 07777);
      utimensat(AT_FDCWD, path.c_str(), times, AT_SYMLINK_NOFOLLOW);
    }
  } catch (...) {
    undo();
    throw;
  }
  stats.packs_fetched += trees.packs_fetched();
  stats.bytes_fetched += trees.bytes_fetched();
  stats.locations = index.from_catalog() ? "catalog" : "vault";
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return stats;
}

}  // namespace

RestoreStats restore_mailbox(Repository& repo, const RestoreRequest& req) {
  bool used_catalog = false;
  try {
    return restore_once(repo, req, &used_catalog);
  } catch (const Error& e) {
    if (!used_catalog || e.code() != ErrorCode::kVerify) throw;
    // Wrong locations in the catalog (blob ids and file hashes are checked, so
    // never wrong mail). The failed restore left `dest` as it found it: again, with
    // the vault's index objects alone.
    RestoreRequest again = req;
    again.catalog = nullptr;
    RestoreStats stats = restore_once(repo, again, &used_catalog);
    stats.warnings.insert(stats.warnings.begin(),
                          std::string("restoring with the catalog's blob locations failed (") + e.what() +
                              "); restored with the vault's index objects instead ('reduit catalog "
                              "rebuild' recreates the catalog from the vault)");
    return stats;
  }
}

}  // namespace reduit
