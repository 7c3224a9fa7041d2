#include "agent/headers.hpp"

#include <gmime/gmime.h>
#include <strings.h>

#include <cstring>

#include <mutex>

namespace reduit {

namespace {

std::string decode(const std::string& raw) {
  static std::once_flag once;
  std::call_once(once, [] { g_mime_init(); });
  char* s = g_mime_utils_header_decode_text(nullptr, raw.c_str());
  if (!s) return raw;
  std::string out(s);
  g_free(s);
  return out;
}

std::string trim(std::string s) {
  std::size_t b = s.find_first_not_of(" \t\r\n");
  std::size_t e = s.find_last_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, e - b + 1);
}

}  // namespace

HeaderSummary summarize_headers(std::string_view h) {
  HeaderSummary out;
  std::string* target = nullptr;
  bool filled[5] = {false, false, false, false, false};
  std::string* fields[5] = {&out.message_id, &out.date, &out.from, &out.to, &out.subject};
  const char* names[5] = {"message-id", "date", "from", "to", "subject"};
  std::size_t pos = 0;
  while (pos < h.size()) {
    std::size_t nl = h.find('\n', pos);
    std::string_view line = h.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    pos = nl == std::string_view::npos ? h.size() : nl + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) break;
    if (line[0] == ' ' || line[0] == '\t') {
      if (target) target->append(" ").append(trim(std::string(line)));
      continue;
    }
    target = nullptr;
    std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view name = line.substr(0, colon);
    for (int i = 0; i < 5; ++i) {
      if (!filled[i] && name.size() == std::strlen(names[i]) &&
          strncasecmp(name.data(), names[i], name.size()) == 0) {
        filled[i] = true;
        *fields[i] = trim(std::string(line.substr(colon + 1)));
        target = fields[i];
      }
    }
  }
  out.subject = decode(out.subject);
  out.from = decode(out.from);
  out.to = decode(out.to);
  return out;
}

}  // namespace reduit

namespace reduit {

std::optional<std::int64_t> header_date_seconds(const std::string& date) {
  if (date.empty()) return std::nullopt;
  static std::once_flag once;
  std::call_once(once, [] { g_mime_init(); });
  GDateTime* dt = g_mime_utils_header_decode_date(date.c_str());
  if (!dt) return std::nullopt;
  std::int64_t s = g_date_time_to_unix(dt);
  g_date_time_unref(dt);
  return s;
}

}  // namespace reduit
