// agent/config.hpp — the reduit TOML configuration (docs/CONFIG.md lists every key).
//
// Parsed with toml++ (TOML 1.0). Values may use ${VAR} and ${VAR:-default}
// environment references. Validation is strict: an unknown key, a wrong type or a
// bad value is an Error(kUsage) "FILE:LINE: message". Without --config the
// built-in demo configuration is used (rooted at $REDUIT_HOME, default
// $HOME/reduit-demo).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "agent/schedule.hpp"
#include "vault/transport.hpp"

namespace reduit {

struct SourceConfig {
  std::string root;              // directory holding the mailboxes (or one mbox file)
  std::string layout = "%d/%n";  // see discover_mailboxes(); "mbox": agent/mbox.hpp
  std::string profile;           // a named layout profile (layout_profile()); "" = `layout`
  bool dovecot_index = false;    // also back up Dovecot's index files (else Dovecot rebuilds them)
  std::string mail_crypt_keys;   // directory of Dovecot mail_crypt key files, backed up too
};

/// Files that change in place (Dovecot control/index files, mbox files) are stored
/// as librsync deltas against their previous version (docs/FORMAT.md §4.1).
struct DeltaConfig {
  std::uint32_t max_chain = 8;         // links before a re-base to a full copy; 0 = never a delta
  double max_ratio = 0.5;              // a delta larger than this share of the file re-bases
  std::uint64_t min_size = 16u << 10;  // bytes; smaller files are always stored whole
};

/// [audit]: where the audit log's heads are time-stamped (docs/AUDIT.md).
struct AuditConfig {
  std::string tsa_url;      // RFC 3161 time-stamping authority over HTTP; "" = no time stamps
  std::string tsa_ca_file;  // PEM trust anchor(s) for the TSA's signature; "" = signature unchecked
};

/// [organisation]: who the compliance report (`reduit report`) is about. FADP
/// Art. 12(2)(a) asks the record of processing to name the controller.
struct OrganisationConfig {
  std::string name;     // "" = the report says "(not configured)"
  std::string country;  // ISO 3166-1 alpha-2 of the controller, e.g. "CH"; vaults elsewhere are
                        // disclosures abroad (FADP Art. 16)
  std::string purpose;  // purpose of the processing, for the report's processing record
};

struct Config {
  std::string origin;     // file path, or "<built-in demo config>"
  std::string state_dir;  // SQLite catalog lives here
  std::string vault_url;
  TransportOptions ssh;
  std::string gnupghome;                  // empty = $GNUPGHOME or ~/.gnupg
  std::vector<std::string> archive_keys;  // for init: recipients
  std::string agent_key;                  // for init: signer; pinned thereafter
  std::vector<SourceConfig> sources;
  std::uint64_t pack_size = 16u << 20;  // target plaintext bytes per pack (init)
  int zstd_level = 3;                   // (init)
  std::string host;                     // recorded in snapshots; default hostname
  DeltaConfig delta;
  std::string policy;               // retention policy file; "" = policies/default.toml
  ScheduleConfig schedule;          // [schedule]: the agent's jobs (agent/schedule.hpp)
  AlertConfig alerts;               // [alerts]
  OrganisationConfig organisation;  // [organisation] (reports)
  std::string vault_operator;       // [vault] operator: who runs the vault host (reports)
  std::string vault_jurisdiction;   // [vault] jurisdiction: ISO 3166-1 alpha-2, e.g. "CH"
  std::string vault_location;       // [vault] location: free text, e.g. "Zurich, Equinix ZH4"
  std::map<std::string, std::string> key_custodians;  // [keys] custodians: FPR (upper hex) → who holds it
  AuditConfig audit;                                  // [audit]
};

/// The built-in demo configuration text (before ${} expansion).
const char* builtin_config_text();

/// Parses TOML text. `origin` names it in error messages.
Config parse_config(const std::string& text, const std::string& origin);

/// Loads `path`, or the built-in config when `path` is empty.
Config load_config(const std::string& path);

/// Expands ${VAR} and ${VAR:-default}; an unset VAR without default is kUsage.
std::string expand_env(const std::string& s, const std::string& where);

}  // namespace reduit
