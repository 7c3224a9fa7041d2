// vault/audit.hpp — the tamper-evident audit log (docs/AUDIT.md is normative).
//
// Every event that matters to an auditor (backup, forget, prune, restore, export,
// drill, check, legal hold, policy/config/key/vault change) is appended to the
// catalog table `audit_log` as one canonical JSON text. Entries form a hash chain:
// entry N holds "prev" = SHA-256 of entry N-1's text (32 zero bytes for entry 1),
// and its own hash is SHA-256 of its text, so editing, deleting, reordering or
// truncating entries breaks the chain at the first bad one.
//
// The head of the chain is sealed after each run (`audit_heads`): a statement
// naming the vault, the head's sequence number, hash and time is signed with the
// agent key (a detached OpenPGP signature, RFC 4880 §5.2.4 type 0x00) and, when a
// time-stamping authority is configured, stamped per RFC 3161. New entries and the
// sealed head are replicated to the vault as append-only sealed objects
// (`audit/<sha256>`), so the log survives the mail host.
//
// Entry text (keys in this order, no spaces, UTF-8; nlohmann::ordered_json dump()):
//   {"v":1,"seq":N,"time":"2026-11-30T10:24:10.123456789Z","time_ns":T,
//    "event":"backup","actor":{"user":"root","uid":0,"host":"mx1","key":"FPR"},
//    "data":{...},"prev":"<64 hex>"}
// Event names and their "data" are listed in docs/AUDIT.md ("Events").
//
// Not thread-safe; one AuditLog per catalog connection.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "vault/hash.hpp"

namespace SQLite {
class Database;
}

namespace reduit {

/// Who did it: the OS user (name and uid), the host, and the OpenPGP key used
/// (agent key fingerprint for writes; the archive key that decrypted for reads;
/// empty when none was involved).
struct AuditActor {
  std::string user;
  std::int64_t uid = -1;
  std::string host;
  std::string key;
  /// The calling process's user (getpwuid(geteuid())) and host name; key empty.
  static AuditActor current();
};

struct AuditEntry {
  std::uint64_t seq = 0;     // 1, 2, 3, … without gaps
  std::int64_t time_ns = 0;  // Unix time in nanoseconds (vault/clock.hpp)
  std::string event;         // "backup", "prune", … (docs/AUDIT.md)
  AuditActor actor;
  nlohmann::ordered_json data;
  Hash prev{};       // hash of entry seq-1 (zeros for seq 1)
  Hash hash{};       // SHA-256 of `text`
  std::string text;  // the canonical JSON text, exactly as hashed
};

/// A sealed head: the statement signed (and time-stamped) after a run.
struct AuditHead {
  std::uint64_t seq = 0;
  Hash hash{};
  std::int64_t time_ns = 0;
  std::string statement;  // "reduit audit head v1\nvault ID\nseq N\nhash HEX\ntime ISO\n"
  std::string signature;  // ASCII-armored detached signature by the agent key ("" = unsigned)
  std::string signer;     // its fingerprint
  std::string tsr;        // DER RFC 3161 TimeStampResp ("" = not stamped)
};

class AuditLog {
 public:
  /// Creates the tables `audit_log` and `audit_heads` when missing.
  explicit AuditLog(SQLite::Database& db);

  /// Appends one entry at `time_ns` (later than or equal to the head's time is not
  /// required: the clock is the caller's). Returns the entry as stored.
  AuditEntry append(const std::string& event, const nlohmann::ordered_json& data, const AuditActor& actor,
                    std::int64_t time_ns);

  /// Entries with since_ns <= time_ns < until_ns, in seq order. Rows are parsed
  /// from their text; a row whose text does not parse is returned with event ""
  /// (verify() reports it).
  std::vector<AuditEntry> entries(std::int64_t since_ns = INT64_MIN, std::int64_t until_ns = INT64_MAX) const;
  /// Stores an entry taken from another copy of the log (the vault's) as it is:
  /// `text` and `seq` as given, time and event read from the text. The caller has
  /// checked the chain.
  void insert_copy(const AuditEntry& e);
  /// The last entry, if any.
  std::optional<AuditEntry> last() const;

  void add_head(const AuditHead& head);
  std::vector<AuditHead> heads() const;

  /// The log's own state (table `audit_state`, kept apart from the catalog's meta,
  /// which a catalog reset clears): digests last logged, replication cursors.
  std::optional<std::string> state(const std::string& key) const;
  void set_state(const std::string& key, const std::string& value);

 private:
  SQLite::Database& db_;
};

/// The statement that a head's signature and time stamp cover.
std::string audit_head_statement(const std::string& vault_id, std::uint64_t seq, const Hash& hash,
                                 std::int64_t time_ns);

/// SHA-256 of `text` as the chain uses it.
Hash audit_entry_hash(const std::string& text);

/// RFC 6962 §2.1 Merkle Tree Hash over `ids` sorted bytewise (the input order does
/// not matter; duplicates count). Empty input: SHA-256 of the empty string.
Hash merkle_root(std::vector<Hash> ids);

}  // namespace reduit
