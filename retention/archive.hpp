// retention/archive.hpp — the message archive and legal holds as vault objects
// (docs/FORMAT.md §12), the catalog's retention log, and the fault seam.
//
// Archive objects (`archive/<h>`, sealed like snapshots: archive keys + agent key)
// hold one record per message that left every kept snapshot while its retention
// class still wants it: where it lived, its tree entry (blob ids, name, flags,
// mtime) and the times its retention counts from. Their blobs are live for prune,
// so such a message restores (`reduit restore --archive`) until its class maximum.
// An archive object may supersede earlier ones (prune consolidates); readers skip
// superseded objects, so a crash between writing and deleting changes nothing.
//
// Hold objects (`holds/<h>`) are append-only events: "add" (mailbox, folder, date
// range, reason) and "release" (naming the add by its object id, with a reason).
// A hold is active while no release names it.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "retention/policy.hpp"
#include "vault/catalog.hpp"
#include "vault/repository.hpp"

namespace reduit {

/// One archived message.
struct ArchiveRecord {
  std::string mailbox;           // "alice@example.ch"
  std::string folder;            // "" = the mailbox root (INBOX), else ".Sent" etc.
  TreeEntry entry;               // kind kMessage: path (cur/… or new/…), mode, mtime, size, sha256, blobs
  std::int64_t date_ns = 0;      // the Date header, 0 = none or unparseable
  std::int64_t captured_ns = 0;  // time of the oldest snapshot known to hold it
  /// Identity across snapshots: mailbox, folder, Maildir unique name, sha256.
  std::string key() const;
};

struct ArchiveState {
  std::vector<Hash> objects;                     // archive objects that are in force
  std::vector<Hash> superseded;                  // present but superseded (deleted by the next prune)
  std::map<std::string, ArchiveRecord> records;  // by ArchiveRecord::key()
};

/// Reads every archive object. Throws kVerify/kKey like get_object.
ArchiveState load_archive(Repository& repo);
/// Writes one archive object with `records`, superseding `supersedes`. Returns its id.
Hash write_archive(Repository& repo, const std::vector<ArchiveRecord>& records,
                   const std::vector<Hash>& supersedes, std::int64_t now_ns);

struct Hold {
  std::string id;                       // hex object id of the "add" event (12 digits shown)
  std::string mailbox, folder;          // folder "" = every folder; else it and its subfolders
  std::int64_t from_ns = 0, to_ns = 0;  // message date range, inclusive; 0 = open
  std::string reason, host;
  std::int64_t created_ns = 0;
  bool released = false;
  std::string release_reason;
  std::int64_t released_ns = 0;
  /// Whether a message of `mailbox`/`folder` dated `date_ns` falls under the hold.
  bool covers(const std::string& mailbox, const std::string& folder, std::int64_t date_ns) const;
};

/// Every hold event in the vault folded into holds (active and released), oldest first.
std::vector<Hold> load_holds(Repository& repo);
/// Writes an "add" event; returns the hold (its id = the object id).
Hold add_hold(Repository& repo, const std::string& mailbox, const std::string& folder, std::int64_t from_ns,
              std::int64_t to_ns, const std::string& reason, std::int64_t now_ns);
/// Writes a "release" event for the hold whose id starts with `id_prefix` (≥ 6 hex).
/// kNotFound when none, kUsage when ambiguous or already released.
Hold release_hold(Repository& repo, const std::string& id_prefix, const std::string& reason,
                  std::int64_t now_ns);
/// The first active hold covering a message, or nullptr.
const Hold* find_hold(const std::vector<Hold>& holds, const std::string& mailbox, const std::string& folder,
                      std::int64_t date_ns);

/// Parses an RFC 5322 §3.3 date-time (obsolete zone names of §4.3 too), e.g.
/// "Tue, 10 Mar 2024 09:00:00 +0100"; nullopt when it is not one.
std::optional<std::int64_t> parse_rfc5322_date(const std::string& text);

/// Date headers of messages the catalog has seen, by whole-file SHA-256 (from the
/// backup's header summary); 0 when unknown or unparseable.
class MessageDates {
 public:
  explicit MessageDates(Catalog& catalog);
  std::int64_t date_ns(const Hash& sha256);

 private:
  Catalog& catalog_;
  std::map<Hash, std::int64_t> cache_;
};

/// The catalog's retention log (tables `retention_runs`, `retention_events`): every
/// forget, prune and hold appends what it did and what it refused, for reports.
struct RetentionEvent {
  std::string action;  // "forget-snapshot", "keep-snapshot-hold", "archive-message",
                       // "delete-message", "refuse-delete-hold", "delete-pack", "repack-pack",
                       // "wait-repack", "hold-add", "hold-release", "rewrite-snapshot"
  std::string object;  // snapshot id, "mailbox/folder/unique name", pack id, hold id
  std::string klass;   // retention class ("" when none)
  std::string rule;    // e.g. "maximum 2y from date", "keep-daily 30", "hold 1a2b3c4d5e6f"
  std::int64_t bytes = 0;
  std::string detail;  // message sha256 or free text
};

class RetentionLog {
 public:
  explicit RetentionLog(Catalog& catalog);
  /// Starts a run ("forget", "prune", "hold"); returns its id.
  std::int64_t begin(const std::string& command, std::int64_t now_ns, const std::string& policy);
  void add(std::int64_t run, const RetentionEvent& e);
  void finish(std::int64_t run, const std::string& summary_json);

 private:
  Catalog& catalog_;
};

/// The fault seam: when REDUIT_FAULT names `point` ("prune:after-index-write", or
/// "prune:after-pack-delete#2" for its second pass), the process _exit(99)s there,
/// as a crash would, without unwinding or flushing anything.
void fault_point(const std::string& point);

/// Maildir unique name: a file name up to ":2," (the Maildir spec's info part).
std::string unique_name(const std::string& path);

}  // namespace reduit
