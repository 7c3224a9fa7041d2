// vault/toml_read.hpp — reading TOML config files (toml++) with errors that name
// FILE:LINE: the agent config, the mail server config, retention policy files and
// the agent's [schedule]. Every error is Error(kUsage) "FILE:LINE: message".
// Header-only: include it only where toml++ is linked.
#pragma once

#include <toml++/toml.h>

#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <string>
#include <vector>

#include "vault/error.hpp"

namespace reduit::toml_read {

/// "FILE:LINE" of a node.
inline std::string at(const std::string& origin, const toml::node& n) {
  return origin + ":" + std::to_string(n.source().begin.line);
}

[[noreturn]] inline void bad(const std::string& where, const std::string& msg) {
  throw Error(ErrorCode::kUsage, where + ": " + msg);
}

/// Expands ${VAR} and ${VAR:-default} (nested defaults allowed); an unset or
/// empty VAR without a default is an error at `where`.
inline std::string expand_env(const std::string& s, const std::string& where) {
  std::string out;
  std::size_t i = 0;
  while (i < s.size()) {
    if (s[i] == '$' && i + 1 < s.size() && s[i + 1] == '{') {
      int depth = 0;
      std::size_t j = i + 1;
      for (; j < s.size(); ++j) {
        if (s[j] == '{')
          ++depth;
        else if (s[j] == '}' && --depth == 0)
          break;
      }
      if (j >= s.size()) bad(where, "unterminated ${ in '" + s + "'");
      std::string body = s.substr(i + 2, j - i - 2), name = body, def;
      bool has_default = false;
      if (auto p = body.find(":-"); p != std::string::npos) {
        name = body.substr(0, p);
        def = body.substr(p + 2);
        has_default = true;
      }
      const char* v = std::getenv(name.c_str());
      if (v && *v)
        out += v;
      else if (has_default)
        out += expand_env(def, where);
      else
        bad(where, "environment variable " + name + " is not set");
      i = j + 1;
    } else {
      out += s[i++];
    }
  }
  return out;
}

/// A string value as written (no ${} expansion).
inline std::string raw_string(const std::string& origin, const toml::node& n, const std::string& key) {
  auto v = n.value<std::string>();
  if (!v) bad(at(origin, n), "'" + key + "' must be a string");
  return *v;
}

/// A string value with ${VAR} / ${VAR:-default} expanded.
inline std::string expanded_string(const std::string& origin, const toml::node& n, const std::string& key) {
  return expand_env(raw_string(origin, n, key), at(origin, n));
}

/// An array of strings, each ${} expanded when `expand`.
inline std::vector<std::string> string_array(const std::string& origin, const toml::node& n,
                                             const std::string& key, bool expand) {
  const toml::array* a = n.as_array();
  if (!a) bad(at(origin, n), "'" + key + "' must be an array of strings");
  std::vector<std::string> out;
  for (const auto& e : *a)
    out.push_back(expand ? expanded_string(origin, e, key) : raw_string(origin, e, key));
  return out;
}

inline bool get_bool(const std::string& origin, const toml::node& n, const std::string& key) {
  auto v = n.value<bool>();
  if (!v) bad(at(origin, n), "'" + key + "' must be true or false");
  return *v;
}

/// An integer in [lo, hi].
inline std::int64_t get_int(const std::string& origin, const toml::node& n, const std::string& key,
                            std::int64_t lo, std::int64_t hi) {
  auto v = n.value<std::int64_t>();
  if (!v) bad(at(origin, n), "'" + key + "' must be an integer");
  if (*v < lo || *v > hi) {
    bad(at(origin, n), "'" + key + "' = " + std::to_string(*v) + " is out of range " + std::to_string(lo) +
                           ".." + std::to_string(hi));
  }
  return *v;
}

/// A size in bytes: a positive integer, or "16MiB", "512KiB", "1GiB", "100B"
/// (binary units; ${} expanded).
inline std::uint64_t get_size(const std::string& origin, const toml::node& n, const std::string& key) {
  if (auto i = n.value<std::int64_t>()) {
    if (*i <= 0) bad(at(origin, n), "'" + key + "' must be positive");
    return static_cast<std::uint64_t>(*i);
  }
  std::string s = expanded_string(origin, n, key);
  std::size_t pos = 0;
  unsigned long long v = 0;
  try {
    v = std::stoull(s, &pos);
  } catch (...) {
    bad(at(origin, n), "'" + key + "' = \"" + s + "\" is not a size like \"16MiB\"");
  }
  std::string unit = s.substr(pos);
  if (unit == "" || unit == "B") return v;
  if (unit == "KiB") return v << 10;
  if (unit == "MiB") return v << 20;
  if (unit == "GiB") return v << 30;
  bad(at(origin, n), "'" + key + "': unknown unit '" + unit + "' (use B, KiB, MiB, GiB)");
}

/// Calls f(key, node) for each key of `t`; a key not in `known` is an error that
/// lists the known ones ("unknown key 'section.key' (known: …)").
template <typename F>
void each_key(const std::string& origin, const toml::table& t, const std::string& section,
              std::initializer_list<const char*> known, F&& f) {
  for (const auto& [k, v] : t) {
    std::string key(k.str());
    bool ok = false;
    for (const char* kn : known) ok = ok || key == kn;
    if (!ok) {
      std::string list;
      for (const char* kn : known) list += std::string(list.empty() ? "" : ", ") + kn;
      bad(at(origin, v),
          "unknown key '" + (section.empty() ? key : section + "." + key) + "' (known: " + list + ")");
    }
    f(key, v);
  }
}

/// The node as a table; else "`what` must be a table".
inline const toml::table& table_of(const std::string& origin, const toml::node& n, const std::string& what) {
  const toml::table* t = n.as_table();
  if (!t) bad(at(origin, n), what + " must be a table");
  return *t;
}

}  // namespace reduit::toml_read
