#include "agent/config.hpp"

#include "agent/scan.hpp"
#include "agent/schedule_toml.hpp"

#include <toml++/toml.h>
#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "vault/error.hpp"
#include "vault/repository.hpp"
#include "vault/toml_read.hpp"

namespace reduit {

const char* builtin_config_text() {
  return R"toml(# reduit built-in demo configuration (used when --config is not given).
state_dir = "${REDUIT_HOME:-${HOME}/reduit-demo}/state"

[vault]
url = "file://${REDUIT_HOME:-${HOME}/reduit-demo}/vault"

[keys]
gnupghome = "${REDUIT_HOME:-${HOME}/reduit-demo}/gnupg-agent"

[[source]]
root = "${REDUIT_HOME:-${HOME}/reduit-demo}/mail"
layout = "%d/%n"
)toml";
}

std::string expand_env(const std::string& s, const std::string& where) {
  return toml_read::expand_env(s, where);
}

namespace {

using toml_read::at;
using toml_read::bad;
using toml_read::each_key;
using toml_read::get_bool;
using toml_read::get_int;
using toml_read::get_size;

std::string get_string(const std::string& origin, const toml::node& n, const std::string& key) {
  return toml_read::expanded_string(origin, n, key);
}

// An ISO 3166-1 alpha-2 country code ("CH"), upper case.
std::string country_code(const std::string& origin, const toml::node& n, const std::string& key) {
  std::string s = get_string(origin, n, key);
  if (s.size() != 2 || !std::isupper(static_cast<unsigned char>(s[0])) ||
      !std::isupper(static_cast<unsigned char>(s[1])))
    bad(at(origin, n),
        "'" + key + "' must be an ISO 3166-1 alpha-2 country code such as \"CH\", not \"" + s + "\"");
  return s;
}

}  // namespace

Config parse_config(const std::string& text, const std::string& origin) {
  toml::table root;
  try {
    root = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    throw Error(ErrorCode::kUsage,
                origin + ":" + std::to_string(e.source().begin.line) + ": " + std::string(e.description()));
  }
  Config c;
  c.origin = origin;
  each_key(
      origin, root, "",
      {"state_dir", "host", "policy", "vault", "keys", "source", "pack", "delta", "schedule", "alerts",
       "audit", "organisation"},
      [&](const std::string& key, const toml::node& v) {
        if (key == "state_dir")
          c.state_dir = get_string(origin, v, key);
        else if (key == "host")
          c.host = get_string(origin, v, key);
        else if (key == "policy")
          c.policy = get_string(origin, v, key);
        else if (key == "schedule" || key == "alerts") {
          const toml::table* t = v.as_table();
          if (!t) bad(at(origin, v), "[" + key + "] must be a table");
          if (key == "schedule")
            c.schedule = parse_schedule_section(origin, *t);
          else
            c.alerts = parse_alerts_section(origin, *t);
        } else if (key == "vault") {
          const toml::table* t = v.as_table();
          if (!t) bad(at(origin, v), "[vault] must be a table");
          each_key(origin, *t, "vault",
                   {"url", "ssh_key", "known_hosts", "host_key", "accept_new_host_key", "connect_timeout",
                    "operator", "jurisdiction", "location"},
                   [&](const std::string& k, const toml::node& n) {
                     if (k == "url") {
                       c.vault_url = get_string(origin, n, k);
                       if (c.vault_url.rfind("file:///", 0) != 0 && c.vault_url.rfind("sftp://", 0) != 0) {
                         bad(at(origin, n),
                             "'vault.url' = \"" + c.vault_url +
                                 "\" is not file:///abs/path or sftp://user@host[:port]/abs/path");
                       }
                     } else if (k == "ssh_key")
                       c.ssh.ssh_identity = get_string(origin, n, k);
                     else if (k == "known_hosts")
                       c.ssh.known_hosts = get_string(origin, n, k);
                     else if (k == "host_key") {
                       c.ssh.host_key_fingerprint = get_string(origin, n, k);
                       if (c.ssh.host_key_fingerprint.rfind("SHA256:", 0) != 0) {
                         bad(at(origin, n),
                             "'vault.host_key' must look like \"SHA256:...\" "
                             "(as printed by ssh-keygen -lf)");
                       }
                     } else if (k == "accept_new_host_key") {
                       c.ssh.accept_new_host_key = get_bool(origin, n, k);
                     } else if (k == "connect_timeout") {
                       c.ssh.connect_timeout_seconds = static_cast<int>(get_int(origin, n, k, 1, 600));
                     } else if (k == "operator") {
                       c.vault_operator = get_string(origin, n, k);
                     } else if (k == "jurisdiction") {
                       c.vault_jurisdiction = country_code(origin, n, "vault.jurisdiction");
                     } else if (k == "location") {
                       c.vault_location = get_string(origin, n, k);
                     }
                   });
        } else if (key == "keys") {
          const toml::table* t = v.as_table();
          if (!t) bad(at(origin, v), "[keys] must be a table");
          each_key(
              origin, *t, "keys", {"gnupghome", "archive_keys", "agent_key", "custodians"},
              [&](const std::string& k, const toml::node& n) {
                if (k == "custodians") {
                  const toml::table* ct = n.as_table();
                  if (!ct) bad(at(origin, n), "'keys.custodians' must be a table { \"<FPR>\" = \"who\" }");
                  for (const auto& [fk, fv] : *ct) {
                    std::string fpr(fk.str());
                    bool hex = fpr.size() == 40 && std::all_of(fpr.begin(), fpr.end(), [](char ch) {
                                 return std::isxdigit(static_cast<unsigned char>(ch));
                               });
                    if (!hex)
                      bad(at(origin, fv),
                          "'keys.custodians' keys are 40-hex-digit key fingerprints, not \"" + fpr + "\"");
                    std::transform(fpr.begin(), fpr.end(), fpr.begin(),
                                   [](unsigned char ch) { return static_cast<char>(std::toupper(ch)); });
                    c.key_custodians[fpr] = get_string(origin, fv, "keys.custodians." + fpr);
                  }
                } else if (k == "gnupghome")
                  c.gnupghome = get_string(origin, n, k);
                else if (k == "agent_key")
                  c.agent_key = get_string(origin, n, k);
                else if (k == "archive_keys") {
                  const toml::array* a = n.as_array();
                  if (!a) bad(at(origin, n), "'keys.archive_keys' must be an array of strings");
                  for (const auto& e : *a) c.archive_keys.push_back(get_string(origin, e, k));
                }
              });
        } else if (key == "organisation") {
          const toml::table* t = v.as_table();
          if (!t) bad(at(origin, v), "[organisation] must be a table");
          each_key(origin, *t, "organisation", {"name", "country", "purpose"},
                   [&](const std::string& k, const toml::node& n) {
                     if (k == "name")
                       c.organisation.name = get_string(origin, n, k);
                     else if (k == "country")
                       c.organisation.country = country_code(origin, n, "organisation.country");
                     else
                       c.organisation.purpose = get_string(origin, n, k);
                   });
        } else if (key == "pack") {
          const toml::table* t = v.as_table();
          if (!t) bad(at(origin, v), "[pack] must be a table");
          each_key(origin, *t, "pack", {"size", "zstd_level"},
                   [&](const std::string& k, const toml::node& n) {
                     if (k == "size") {
                       c.pack_size = get_size(origin, n, k);
                       if (c.pack_size < 4096 || c.pack_size > (1u << 30)) {
                         bad(at(origin, n), "'pack.size' must be between 4KiB and 1GiB");
                       }
                     } else if (k == "zstd_level") {
                       c.zstd_level = static_cast<int>(get_int(origin, n, k, 1, 19));
                     }
                   });
        } else if (key == "audit") {
          const toml::table* t = v.as_table();
          if (!t) bad(at(origin, v), "[audit] must be a table");
          each_key(
              origin, *t, "audit", {"tsa_url", "tsa_ca_file"},
              [&](const std::string& k, const toml::node& n) {
                if (k == "tsa_url") {
                  c.audit.tsa_url = get_string(origin, n, k);
                  if (c.audit.tsa_url.rfind("http://", 0) != 0 && c.audit.tsa_url.rfind("https://", 0) != 0)
                    bad(at(origin, n), "'audit.tsa_url' must be an http:// or https:// URL (RFC 3161 §3.4)");
                } else {
                  c.audit.tsa_ca_file = get_string(origin, n, k);
                }
              });
        } else if (key == "delta") {
          const toml::table* t = v.as_table();
          if (!t) bad(at(origin, v), "[delta] must be a table");
          each_key(origin, *t, "delta", {"max_chain", "max_ratio", "min_size"},
                   [&](const std::string& k, const toml::node& n) {
                     if (k == "max_chain") {
                       c.delta.max_chain = static_cast<std::uint32_t>(get_int(origin, n, k, 0, 1000));
                     } else if (k == "max_ratio") {
                       auto r = n.value<double>();
                       if (!r || *r <= 0 || *r > 1) {
                         bad(at(origin, n), "'delta.max_ratio' must be a number in (0, 1], e.g. 0.5");
                       }
                       c.delta.max_ratio = *r;
                     } else {
                       c.delta.min_size = get_size(origin, n, k);
                     }
                   });
        } else if (key == "source") {
          const toml::array* a = v.as_array();
          if (!a) bad(at(origin, v), "sources are written [[source]] (an array of tables)");
          for (const auto& e : *a) {
            const toml::table* t = e.as_table();
            if (!t) bad(at(origin, e), "[[source]] must be a table");
            SourceConfig s;
            bool has_layout = false;
            each_key(origin, *t, "source", {"root", "layout", "profile", "dovecot_index", "mail_crypt_keys"},
                     [&](const std::string& k, const toml::node& n) {
                       if (k == "root") {
                         s.root = get_string(origin, n, k);
                       } else if (k == "dovecot_index") {
                         s.dovecot_index = get_bool(origin, n, k);
                       } else if (k == "mail_crypt_keys") {
                         s.mail_crypt_keys = get_string(origin, n, k);
                         if (s.mail_crypt_keys.empty() || s.mail_crypt_keys.front() != '/')
                           bad(at(origin, n), "'source.mail_crypt_keys' must be an absolute path");
                       } else if (k == "layout") {
                         s.layout = get_string(origin, n, k);
                         has_layout = true;
                       } else {
                         s.profile = get_string(origin, n, k);
                         const auto& known = layout_profile_names();
                         if (std::find(known.begin(), known.end(), s.profile) == known.end()) {
                           std::string list;
                           for (const auto& p : known) list += (list.empty() ? "" : ", ") + p;
                           bad(at(origin, n),
                               "unknown 'source.profile' \"" + s.profile + "\" (known: " + list + ")");
                         }
                       }
                     });
            if (has_layout && !s.profile.empty()) {
              bad(at(origin, e), "[[source]] takes 'layout' or 'profile', not both");
            }
            if (s.root.empty()) bad(at(origin, e), "[[source]] needs 'root'");
            if (s.root.front() != '/') bad(at(origin, e), "'source.root' must be an absolute path");
            while (s.root.size() > 1 && s.root.back() == '/') s.root.pop_back();
            c.sources.push_back(std::move(s));
          }
        }
      });
  if (c.state_dir.empty()) throw Error(ErrorCode::kUsage, origin + ": 'state_dir' is required");
  if (c.state_dir.front() != '/') {
    bad(at(origin, *root.get("state_dir")), "'state_dir' must be an absolute path");
  }
  if (c.vault_url.empty()) throw Error(ErrorCode::kUsage, origin + ": [vault] 'url' is required");
  if (c.host.empty()) c.host = local_hostname();
  return c;
}

Config load_config(const std::string& path) {
  if (path.empty()) return parse_config(builtin_config_text(), "<built-in demo config>");
  std::ifstream in(path);
  if (!in) throw Error(ErrorCode::kUsage, "cannot read config file " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_config(ss.str(), path);
}

}  // namespace reduit
