// restore/restore.hpp — restore one mailbox (or one folder of it) from a snapshot.
//
// Reads the vault only (works on a fresh host with the vault URL and an archive
// secret key). Fetches only the packs the selection needs, each once; verifies
// every pack's SHA-256 name, its OpenPGP signature (the vault's agent key), every
// blob's HMAC id and every file's SHA-256; writes Maildir with the original file
// names (info flags included), folder structure, modes and mtimes (to the
// nanosecond), owners (or one mapped owner) and hard links (entries of one link
// group become links to one inode). Messages are written into their folder's tmp/ and renamed into
// cur/ or new/; other files through a temporary name beside them. Packs are fetched
// and decrypted on a thread of their own, up to two ahead of the files being
// written (restore/prefetch.hpp); a file whose blobs sit in one pack is written
// once, from memory.
//
// Safety: every folder name and entry path of the selection is checked before
// anything is written (check_relative_path); the destination must not exist or be
// an empty directory, and nothing is ever written outside it.
// Errors: kNotFound (snapshot/mailbox/folder), kUsage (destination not empty),
// kVerify (corrupt or hostile data), kKey (no key can decrypt), kIo.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "vault/catalog.hpp"
#include "vault/repository.hpp"

namespace reduit {

struct RestoreRequest {
  std::string snapshot = "latest";
  std::string mailbox;
  std::string folder;  // "" = the whole mailbox; else this folder and its subfolders
  bool all = false;    // every mailbox, each at its path below the source root
  std::string dest;
  bool progress = false;
  /// Owner of restored files and directories: "keep" = the uid/gid recorded in the
  /// snapshot; "none" = the restoring user's; "UID:GID" (numbers or names, e.g.
  /// "vmail:vmail") = all of them mapped to one owner. "" = keep when run as root,
  /// else none (only root may give files away).
  std::string owner;
  /// Only the messages this picks (folder name, entry), with the other files of
  /// their folders except Dovecot index files (dovecot.index*, dovecot.list.index*:
  /// they would describe messages not restored); empty = everything. kNotFound when
  /// it picks nothing; `select_what` describes it in that message.
  std::function<bool(const std::string&, const TreeEntry&)> select;
  std::string select_what;
  /// Entries (files, messages, directories) planned and written at once, in whole
  /// folders (a bigger folder is a batch of its own). Memory grows ~1 kB per entry.
  /// Each pack is still fetched once: its blobs that a later batch needs are kept in
  /// a stash directory inside `dest` (disk: up to what is not yet restored) until then.
  std::size_t batch_entries = 50000;
  /// The backup host's catalog, or null. Its copies of the snapshot objects are read
  /// instead of decrypting each (list_snapshots' cache; one that cannot be read is
  /// not used). When it names exactly the vault's index
  /// objects (catalog_matches_vault), a restore of one mailbox reads its blob
  /// locations from it instead of from every index object in the vault
  /// (restore/snapshots.hpp BlobIndex); `all` needs nearly every location and
  /// loads the index objects. A catalog that cannot be read is not used; when a
  /// restore with its locations fails a check (kVerify: wrong offsets or lengths;
  /// the mail is still checked against its blob ids and SHA-256), the restore runs
  /// again from the index objects alone and says so in its first warning. Tree
  /// blobs its tree_cache holds (checked against their ids) are read from there,
  /// not from their metadata packs (TreeLoader::use_tree_cache). Drills
  /// leave it null: they prove what a fresh host could restore.
  Catalog* catalog = nullptr;
};

struct RestoreStats {
  std::string snapshot_id;
  std::string mailbox;
  std::uint64_t folders = 0, messages = 0, files = 0, dirs = 0, bytes = 0;
  std::uint64_t hard_links = 0;  // entries restored as a link to an earlier one (same inode)
  std::uint64_t packs_fetched = 0, bytes_fetched = 0;
  std::uint64_t batches = 0;        // batches planned and written (RestoreRequest::batch_entries)
  std::uint64_t stashed_blobs = 0;  // blobs kept for a later batch instead of fetching their pack again
  /// Where the blob locations came from: "catalog" (RestoreRequest::catalog, every
  /// lookup answered) or "vault" (its index objects).
  std::string locations = "vault";
  double seconds = 0;
  std::vector<std::string> warnings;  // e.g. damaged snapshots that were skipped
};

RestoreStats restore_mailbox(Repository& repo, const RestoreRequest& req);

}  // namespace reduit
