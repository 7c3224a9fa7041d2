// agent/backup.hpp — one backup run: scan → detect changes → split/hash/dedup →
// pack → zstd → OpenPGP → upload → index → snapshot (the commit point).
//
// Resumable: every uploaded pack is journaled in the catalog (packs.indexed=0) by
// the upload thread right after its rename in the vault, so a run killed at any
// point re-sends at most the pack that was in flight. Packs missing from the vault
// (deleted behind our back) are noticed at start: their blobs are forgotten and the
// stat cache dropped, so their content is read and uploaded again.
//
// Errors: throws reduit::Error; no snapshot is written unless the run completes.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "agent/config.hpp"

namespace reduit {

struct BackupOptions {
  bool progress = false;  // live progress line on stderr (a terminal)
  std::vector<std::string> tags;
  bool full_scan = false;  // list and stat every message even in unchanged folders
};

struct BackupStats {
  std::string snapshot_id;  // hex SHA-256 of the stored snapshot object
  std::uint64_t mailboxes = 0, folders = 0, messages = 0, files = 0;
  std::uint64_t bytes = 0;       // size of every file in the snapshot
  std::uint64_t files_read = 0;  // files whose content was read (stat cache miss)
  std::uint64_t bytes_read = 0;
  std::uint64_t files_uncached = 0;    // of files_read: not (all) in the page cache when first read
  std::uint64_t files_read_ahead = 0;  // of files_read: opened ahead, the kernel asked to read them in
  std::uint64_t blobs_new = 0;          // blobs added to the vault by this run
  std::uint64_t content_blobs_new = 0;  // header/body/file blobs (not trees)
  std::uint64_t bytes_new = 0;          // plaintext bytes of those blobs
  std::uint64_t content_bytes_new = 0;  // plaintext bytes of the header/body/file blobs
  std::uint64_t trees_new = 0, trees_reused = 0;
  std::uint64_t tree_patches = 0;  // of trees_new: patches against the folder's last tree (FORMAT.md §7.1)
  std::uint64_t folders_unchanged = 0;  // taken whole from the folder cache (no message stat)
  std::uint64_t data_packs = 0, metadata_packs = 0;
  std::uint64_t data_bytes_uploaded = 0;      // stored bytes of data packs
  std::uint64_t metadata_bytes_uploaded = 0;  // metadata packs + index + snapshot
  std::uint64_t packs_forgotten = 0;          // missing from the vault, content re-sent
  std::uint64_t vanished = 0;                 // files gone between scan and read (churn)
  std::uint64_t folder_rescans = 0;           // folders scanned again: uidlist changed meanwhile
  std::uint64_t mail_crypt_messages = 0;      // read this run, encrypted by Dovecot's mail_crypt
  std::uint64_t delta_files = 0;              // files stored as a new delta (FORMAT.md §4.1)
  std::uint64_t delta_bytes = 0;              // plaintext bytes of those delta blobs
  std::uint64_t rebased = 0;                  // delta-managed files stored whole again (chain re-based)
  std::uint64_t signatures_from_vault = 0;    // previous versions known only from the vault (catalog lost)
  double seconds = 0;
  std::vector<std::string> warnings;
};

BackupStats run_backup(const Config& cfg, const BackupOptions& opts);

}  // namespace reduit
