// mailserver/session.cpp — the SMTP/LMTP state machine (session.hpp).
//
// Replies carry RFC 3463 enhanced status codes (RFC 2034) except the greeting, the
// EHLO/LHLO lines and the 354 intermediate reply, as RFC 2034 §3 allows. Texts
// follow Postfix's wording where one exists, so that admins and tools recognise them.
#include "mailserver/session.hpp"

#include <algorithm>
#include <cstdio>
#include <ctime>

#include "mailserver/address.hpp"

namespace reduit::mail {

namespace {

constexpr std::size_t kMaxCommandLine = 512;    // with CRLF, RFC 5321 §4.5.3.1.4
constexpr std::size_t kMaxMailRcptLine = 1024;  // + parameters, RFC 1869 §4.1.2
constexpr std::size_t kMaxTextLine = 998;       // without CRLF, RFC 5321 §4.5.3.1.6

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return out;
}

bool starts_with_ci(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && upper(s.substr(0, prefix.size())) == prefix;
}

// Printable ASCII for logs and headers: anything else becomes '?'.
std::string printable(std::string_view s, std::size_t max = 255) {
  std::string out;
  for (char c : s.substr(0, max)) {
    unsigned char u = static_cast<unsigned char>(c);
    out += (u >= 32 && u < 127) ? c : '?';
  }
  return out;
}

std::string rfc5322_date(std::time_t t) {
  struct tm tm;
  localtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S %z", &tm);
  return buf;
}

std::vector<std::string_view> split_params(std::string_view s) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && s[i] == ' ') ++i;
    std::size_t j = i;
    while (j < s.size() && s[j] != ' ') ++j;
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

}  // namespace

std::string ClientInfo::text() const {
  return "[" + address + "]:" + std::to_string(port);
}

Session::Session(const SessionSettings& settings, const Directory& directory, ClientInfo client, LogFn log)
    : settings_(settings), directory_(directory), client_(std::move(client)), log_(std::move(log)) {}

void Session::log(const std::string& line) const {
  if (log_) log_(line);
}

void Session::greet() {
  out_ += "220 " + settings_.hostname +
          (settings_.protocol == Protocol::kLmtp ? " LMTP reduit\r\n" : " ESMTP reduit\r\n");
}

void Session::receive(std::string_view bytes) {
  if (closing_) return;
  if (discarding_long_line_) {
    // Keep only what follows the end of the over-long line; next() answers it.
    std::size_t nl = bytes.find('\n');
    if (nl == std::string_view::npos) return;
    discarding_long_line_ = false;
    long_line_ended_ = true;
    bytes.remove_prefix(nl + 1);
  }
  in_.append(bytes);
}

std::string Session::take_output() {
  std::string s;
  s.swap(out_);
  return s;
}

void Session::reply(const std::string& text, bool counts_as_error, std::string_view verb) {
  out_ += text;
  out_ += "\r\n";
  if (counts_as_error) {
    ++errors_;
    std::string v = verb.empty() ? last_verb_ : std::string(verb);
    log("reject: " + v + " from " + client_.text() + ": " + text + "; helo=<" + printable(helo_) + ">");
  }
}

void Session::reply_lines(int code, const std::vector<std::string>& lines) {
  for (std::size_t i = 0; i < lines.size(); ++i) {
    out_ += std::to_string(code) + (i + 1 < lines.size() ? "-" : " ") + lines[i] + "\r\n";
  }
}

bool Session::over_error_limit() {
  if (settings_.limits.error_limit == 0 || errors_ < settings_.limits.error_limit) return false;
  reply("421 4.7.0 " + settings_.hostname + " Error: too many errors");
  log("too many errors after " + last_verb_ + " from " + client_.text() + " (" + std::to_string(errors_) +
      " errors)");
  closing_ = true;
  return true;
}

void Session::reset_transaction() {
  in_mail_ = false;
  reverse_path_.clear();
  smtputf8_ = false;
  body_8bit_ = false;
  rcpts_.clear();
  rcpt_overshoot_ = 0;
  body_.clear();
  body_.shrink_to_fit();
}

Session::Action Session::next() {
  while (!closing_) {
    if (delivering_) return Action::kNeedInput;  // delivered() continues
    if (phase_ == Phase::kData) {
      if (!data_input()) break;  // needs more input
      if (delivering_) return Action::kDeliver;
      if (over_error_limit()) break;
      continue;
    }
    if (long_line_ended_) {
      long_line_ended_ = false;
      reply("500 5.5.2 Error: line too long (RFC 5321 §4.5.3.1.4: 512 octets)", true);
      if (over_error_limit()) break;
      continue;
    }
    if (shutting_down_ && !in_mail_) {
      reply("421 4.3.2 " + settings_.hostname + " Service shutting down, closing transmission channel");
      closing_ = true;
      break;
    }
    std::size_t nl = in_.find('\n', in_pos_);
    if (nl == std::string::npos) {
      if (in_.size() - in_pos_ > kMaxMailRcptLine) {
        // An over-long line: drop it as it arrives; answer when it ends.
        discarding_long_line_ = true;
        last_verb_ = "command";
      }
      in_.erase(0, in_pos_);
      in_pos_ = 0;
      if (discarding_long_line_) in_.clear();
      break;
    }
    std::string line = in_.substr(in_pos_, nl - in_pos_);
    in_pos_ = nl + 1;
    ++commands_;
    if (line.empty() || line.back() != '\r' || line.find('\r') != line.size() - 1) {
      last_verb_ = upper(line.substr(0, std::min<std::size_t>(line.find(' '), 16)));
      reply("500 5.5.2 Error: bare <CR> or <LF> in command (RFC 5321 §2.3.8)", true);
      if (over_error_limit()) break;
      continue;
    }
    line.pop_back();
    if (line.size() + 2 > kMaxMailRcptLine) {
      last_verb_ = "command";
      reply("500 5.5.2 Error: line too long (RFC 5321 §4.5.3.1.4: 512 octets)", true);
      if (over_error_limit()) break;
      continue;
    }
    Action a = command(line);
    if (closing_) break;
    if (a != Action::kNeedInput) return a;
    if (over_error_limit()) break;
  }
  return closing_ ? Action::kClose : Action::kNeedInput;
}

Session::Action Session::command(std::string_view line) {
  std::size_t sp = line.find(' ');
  std::string verb = upper(line.substr(0, sp));
  std::string_view arg = sp == std::string_view::npos ? std::string_view{} : line.substr(sp + 1);
  last_verb_ = printable(verb, 16);
  const bool lmtp = settings_.protocol == Protocol::kLmtp;
  if (line.size() + 2 > kMaxCommandLine && verb != "MAIL" && verb != "RCPT") {
    reply("500 5.5.2 Error: line too long (RFC 5321 §4.5.3.1.4: 512 octets)", true);
    return Action::kNeedInput;
  }
  if (verb == "EHLO" || verb == "HELO") {
    if (lmtp) {
      reply("500 5.5.1 Error: this is LMTP, use LHLO (RFC 2033 §4.1)", true);
      return Action::kNeedInput;
    }
    return cmd_helo(verb, arg, verb == "EHLO");
  }
  if (verb == "LHLO") {
    if (!lmtp) {
      reply("500 5.5.2 Error: command not recognized", true);
      return Action::kNeedInput;
    }
    return cmd_helo(verb, arg, true);
  }
  if (verb == "MAIL") return cmd_mail(arg);
  if (verb == "RCPT") return cmd_rcpt(arg);
  if (verb == "DATA") return cmd_data(arg);
  if (verb == "RSET") {
    if (!arg.empty()) {
      reply("501 5.5.4 Syntax: RSET", true);
    } else {
      reset_transaction();
      reply("250 2.0.0 Ok");
    }
    return Action::kNeedInput;
  }
  if (verb == "NOOP") {
    reply("250 2.0.0 Ok");
    return Action::kNeedInput;
  }
  if (verb == "QUIT") {
    reply("221 2.0.0 Bye");
    closing_ = true;
    return Action::kClose;
  }
  if (verb == "VRFY") {
    if (arg.empty()) {
      reply("501 5.5.4 Syntax: VRFY address", true);
    } else {
      // RFC 5321 §3.5.3: 252 when the server will not say whether a user exists.
      reply("252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery");
    }
    return Action::kNeedInput;
  }
  if (verb == "HELP") {
    reply_lines(
        214, {"2.0.0 reduit mail server: receive-only final delivery",
              std::string("2.0.0 Commands: ") + (lmtp ? "LHLO" : "HELO EHLO") +
                  " MAIL RCPT DATA RSET NOOP QUIT VRFY HELP" + (settings_.tls_available ? " STARTTLS" : ""),
              "2.0.0 See RFC 5321" + std::string(lmtp ? " and RFC 2033" : "")});
    return Action::kNeedInput;
  }
  if (verb == "STARTTLS") {
    if (!settings_.tls_available) {
      reply("502 5.5.1 Error: command not implemented", true);
    } else if (!arg.empty()) {
      reply("501 5.5.4 Syntax: STARTTLS", true);
    } else if (tls_active_) {
      reply("503 5.5.1 Error: TLS already active", true);
    } else if (in_mail_) {
      reply("503 5.5.1 Error: MAIL transaction in progress", true);
    } else {
      reply("220 2.0.0 Ready to start TLS");
      std::size_t pipelined = in_.size() - in_pos_;
      if (pipelined > 0) {
        // RFC 3207 §4.2 / CVE-2011-0411: nothing sent before the handshake is a command.
        log("reject: STARTTLS from " + client_.text() + ": discarded " + std::to_string(pipelined) +
            " octets pipelined after STARTTLS");
      }
      in_.clear();
      in_pos_ = 0;
      return Action::kStartTls;
    }
    return Action::kNeedInput;
  }
  if (verb == "EXPN" || verb == "BDAT" || verb == "ETRN" || verb == "TURN" || verb == "AUTH") {
    reply("502 5.5.1 Error: command not implemented", true);
    return Action::kNeedInput;
  }
  reply("500 5.5.2 Error: command not recognized", true);
  return Action::kNeedInput;
}

Session::Action Session::cmd_helo(std::string_view verb, std::string_view arg, bool extended) {
  while (!arg.empty() && arg.back() == ' ') arg.remove_suffix(1);
  if (arg.empty() || arg.find(' ') != std::string_view::npos) {
    reply("501 5.5.4 Syntax: " + std::string(verb) + " hostname", true);
    return Action::kNeedInput;
  }
  reset_transaction();
  helo_ = printable(arg);
  extended_ = extended;
  if (!extended) {
    reply("250 " + settings_.hostname);
    return Action::kNeedInput;
  }
  std::vector<std::string> lines{settings_.hostname, "PIPELINING",
                                 "SIZE " + std::to_string(settings_.limits.message_size_limit), "8BITMIME"};
  if (settings_.tls_available && !tls_active_) lines.push_back("STARTTLS");
  lines.push_back("ENHANCEDSTATUSCODES");
  lines.push_back("SMTPUTF8");
  reply_lines(250, lines);
  return Action::kNeedInput;
}

Session::Action Session::cmd_mail(std::string_view arg) {
  const bool lmtp = settings_.protocol == Protocol::kLmtp;
  if (helo_.empty()) {
    reply(std::string("503 5.5.1 Error: send ") + (lmtp ? "LHLO" : "HELO/EHLO") + " first", true);
    return Action::kNeedInput;
  }
  if (settings_.tls_required && !tls_active_ && !lmtp) {
    reply("530 5.7.0 Must issue a STARTTLS command first", true);
    return Action::kNeedInput;
  }
  if (in_mail_) {
    reply("503 5.5.1 Error: nested MAIL command", true);
    return Action::kNeedInput;
  }
  if (!starts_with_ci(arg, "FROM:")) {
    reply("501 5.5.4 Syntax: MAIL FROM:<address>", true);
    return Action::kNeedInput;
  }
  arg.remove_prefix(5);
  while (!arg.empty() && arg.front() == ' ') arg.remove_prefix(1);
  Mailbox from;
  std::string_view rest;
  PathError pe = parse_path(arg, true, &from, &rest);
  if (pe != PathError::kNone) {
    reply(pe == PathError::kTooLong ? "501 5.1.7 Bad sender address syntax: path too long (RFC 5321 §4.5.3.1)"
                                    : "501 5.1.7 Bad sender address syntax",
          true);
    return Action::kNeedInput;
  }
  if (!rest.empty() && rest.front() != ' ') {
    reply("501 5.1.7 Bad sender address syntax", true);
    return Action::kNeedInput;
  }
  bool utf8 = false, body8 = false;
  for (std::string_view p : split_params(rest)) {
    if (!extended_) {
      reply("555 5.5.4 Error: MAIL parameters need EHLO", true);
      return Action::kNeedInput;
    }
    std::size_t eq = p.find('=');
    std::string key = upper(p.substr(0, eq));
    std::string_view value = eq == std::string_view::npos ? std::string_view{} : p.substr(eq + 1);
    if (key == "SIZE" && eq != std::string_view::npos) {
      if (value.empty() || value.size() > 19 ||
          value.find_first_not_of("0123456789") != std::string_view::npos) {
        reply("501 5.5.4 Bad SIZE parameter (RFC 1870)", true);
        return Action::kNeedInput;
      }
      if (std::stoull(std::string(value)) > settings_.limits.message_size_limit) {
        reply("552 5.3.4 Message size exceeds fixed limit", true);
        return Action::kNeedInput;
      }
    } else if (key == "BODY" && eq != std::string_view::npos) {
      std::string v = upper(value);
      if (v == "8BITMIME") {
        body8 = true;
      } else if (v != "7BIT") {
        reply("501 5.5.4 Unsupported BODY parameter (7BIT or 8BITMIME)", true);
        return Action::kNeedInput;
      }
    } else if (key == "SMTPUTF8" && eq == std::string_view::npos) {
      utf8 = true;
    } else {
      reply("555 5.5.4 Unsupported option: " + printable(p, 64), true);
      return Action::kNeedInput;
    }
  }
  if (from.non_ascii && !utf8) {
    reply("553 5.6.7 Non-ASCII sender address needs SMTPUTF8 (RFC 6531)", true);
    return Action::kNeedInput;
  }
  in_mail_ = true;
  reverse_path_ = from.text();
  smtputf8_ = utf8;
  body_8bit_ = body8;
  ++transactions_;
  reply("250 2.1.0 Ok");
  return Action::kNeedInput;
}

Session::Action Session::cmd_rcpt(std::string_view arg) {
  if (!in_mail_) {
    reply("503 5.5.1 Error: need MAIL command", true);
    return Action::kNeedInput;
  }
  if (!starts_with_ci(arg, "TO:")) {
    reply("501 5.5.4 Syntax: RCPT TO:<address>", true);
    return Action::kNeedInput;
  }
  arg.remove_prefix(3);
  while (!arg.empty() && arg.front() == ' ') arg.remove_prefix(1);
  Mailbox to;
  std::string_view rest;
  PathError pe = parse_path(arg, false, &to, &rest);
  if (pe != PathError::kNone || (!rest.empty() && rest.front() != ' ')) {
    reply(pe == PathError::kTooLong
              ? "501 5.1.3 Bad recipient address syntax: path too long (RFC 5321 §4.5.3.1)"
              : "501 5.1.3 Bad recipient address syntax",
          true);
    return Action::kNeedInput;
  }
  if (!split_params(rest).empty()) {
    reply("555 5.5.4 Unsupported option: " + printable(split_params(rest).front(), 64), true);
    return Action::kNeedInput;
  }
  std::string addr = printable(to.text());
  if (to.non_ascii && !smtputf8_) {
    reply("553 5.6.7 Non-ASCII recipient address needs SMTPUTF8 (RFC 6531)", true);
    return Action::kNeedInput;
  }
  if (rcpts_.size() >= settings_.limits.recipient_limit) {
    ++rcpt_overshoot_;
    reply("452 4.5.3 Error: too many recipients",
          rcpt_overshoot_ > settings_.limits.recipient_overshoot_limit);
    return Action::kNeedInput;
  }
  Directory::Lookup l = directory_.resolve(to.local, to.domain);
  switch (l.verdict) {
    case Directory::Verdict::kNotOurDomain:
      reply("550 5.7.1 <" + addr + ">: Relay access denied", true);
      return Action::kNeedInput;
    case Directory::Verdict::kUnknownUser:
      reply("550 5.1.1 <" + addr + ">: Recipient address rejected: User unknown", true);
      return Action::kNeedInput;
    case Directory::Verdict::kLocal:
      break;
  }
  rcpts_.push_back({to.text(), std::move(l.users)});
  reply("250 2.1.5 Ok");
  return Action::kNeedInput;
}

Session::Action Session::cmd_data(std::string_view arg) {
  const bool lmtp = settings_.protocol == Protocol::kLmtp;
  if (!arg.empty()) {
    reply("501 5.5.4 Syntax: DATA", true);
  } else if (!in_mail_) {
    reply("503 5.5.1 Error: need MAIL command", true);
  } else if (rcpts_.empty()) {
    // RFC 2033 §4.2 requires 503 for LMTP; RFC 5321 §3.3 allows 554 for SMTP.
    reply(lmtp ? "503 5.5.1 Error: need RCPT command" : "554 5.5.1 Error: no valid recipients", true);
  } else {
    reply("354 End data with <CR><LF>.<CR><LF>");
    phase_ = Phase::kData;
    body_.clear();
    data_size_ = 0;
    at_line_start_ = true;
    dot_line_ = cr_pending_ = false;
    line_len_ = 0;
    bare_eol_ = line_too_long_ = too_big_ = false;
    static std::uint64_t counter = 0;  // the event loop is single-threaded
    char id[48];
    std::snprintf(id, sizeof id, "%lX%04llX", static_cast<unsigned long>(std::time(nullptr)),
                  static_cast<unsigned long long>(++counter & 0xFFFF));
    queue_id_ = id;
  }
  return Action::kNeedInput;
}

// Consumes DATA octets. Returns true when the end "CRLF.CRLF" was seen (the message
// is then either handed to delivery or refused), false when more input is needed.
bool Session::data_input() {
  const char* const base = in_.data();
  const char* p = base + in_pos_;
  const char* const end = base + in_.size();
  const std::uint64_t limit = settings_.limits.message_size_limit;
  auto keep = [&] { return !bare_eol_ && !line_too_long_ && !too_big_; };
  while (p < end) {
    char c = *p;
    if (cr_pending_) {
      cr_pending_ = false;
      if (c == '\n') {
        ++p;
        if (dot_line_ && line_len_ == 0) {
          in_pos_ = static_cast<std::size_t>(p - base);
          finish_data();
          return true;
        }
        data_size_ += 2;
        if (data_size_ > limit) too_big_ = true;
        if (keep()) body_ += '\n';
        at_line_start_ = true;
        dot_line_ = false;
        line_len_ = 0;
        continue;
      }
      bare_eol_ = true;  // a CR not followed by LF
      ++line_len_;
      ++data_size_;
    }
    if (c == '\r') {
      cr_pending_ = true;
      ++p;
      continue;
    }
    if (c == '\n') {
      // A bare LF: never a line end, so "\n.\n" cannot end DATA.
      bare_eol_ = true;
      at_line_start_ = dot_line_ = false;
      ++line_len_;
      ++data_size_;
      ++p;
      continue;
    }
    if (at_line_start_) {
      at_line_start_ = false;
      if (c == '.') {  // a stuffed dot or the end marker; not counted (§4.5.3.1.6)
        dot_line_ = true;
        ++p;
        continue;
      }
    }
    const char* q = p;
    while (q < end && *q != '\r' && *q != '\n') ++q;
    std::size_t n = static_cast<std::size_t>(q - p);
    dot_line_ = false;
    line_len_ += n;
    data_size_ += n;
    if (line_len_ > kMaxTextLine) line_too_long_ = true;
    if (data_size_ > limit) too_big_ = true;
    if (keep()) {
      body_.append(p, n);
    } else if (!body_.empty()) {
      body_.clear();
      body_.shrink_to_fit();
    }
    p = q;
  }
  in_.clear();
  in_pos_ = 0;
  return false;
}

void Session::finish_data() {
  phase_ = Phase::kCommand;
  last_verb_ = "DATA";
  std::string refusal;
  if (bare_eol_) {
    refusal = "550 5.6.0 Message refused: bare <CR> or <LF> in message content (RFC 5321 §2.3.8)";
  } else if (line_too_long_) {
    refusal = "500 5.5.2 Error: line too long (RFC 5321 §4.5.3.1.6: 1000 octets)";
  } else if (too_big_) {
    refusal = "552 5.3.4 Message size exceeds fixed limit";
  }
  if (!refusal.empty()) {
    std::size_t replies = settings_.protocol == Protocol::kLmtp ? rcpts_.size() : 1;
    for (std::size_t i = 0; i < replies; ++i) reply(refusal, i == 0);
    reset_transaction();
    return;
  }
  delivering_ = true;
}

std::string Session::received_header() const {
  const bool lmtp = settings_.protocol == Protocol::kLmtp;
  std::string proto = lmtp ? "LMTP" : (extended_ ? "ESMTP" : "SMTP");
  if (smtputf8_) proto = lmtp ? "UTF8LMTP" : "UTF8SMTP";  // RFC 6531 §4.3
  if (tls_active_) proto += "S";                          // RFC 3848
  std::string ip =
      client_.address.find(':') != std::string::npos ? "IPv6:" + client_.address : client_.address;
  std::string h = "Received: from " + helo_ + " ([" + ip + "])\n\tby " + settings_.hostname +
                  " (reduit) with " + proto + " id " + queue_id_;
  if (rcpts_.size() == 1) h += "\n\tfor <" + printable(rcpts_.front().address) + ">";
  h += "; " + rfc5322_date(std::time(nullptr)) + "\n";
  return h;
}

DeliveryJob Session::take_delivery() {
  DeliveryJob job;
  job.id = queue_id_;
  job.return_path = reverse_path_;
  job.received = received_header();
  job.body.swap(body_);
  for (const Rcpt& r : rcpts_) job.users.insert(job.users.end(), r.users.begin(), r.users.end());
  std::sort(job.users.begin(), job.users.end());
  job.users.erase(std::unique(job.users.begin(), job.users.end()), job.users.end());
  job.all_or_nothing = settings_.protocol == Protocol::kSmtp;
  job_users_ = job.users;
  job_size_ = job.body.size();
  return job;
}

void Session::delivered(const std::vector<DeliveryOutcome>& outcomes) {
  auto outcome_of = [&](const std::string& user) {
    for (std::size_t i = 0; i < job_users_.size() && i < outcomes.size(); ++i) {
      if (job_users_[i] == user) return outcomes[i];
    }
    return DeliveryOutcome::kIoError;
  };
  auto text_of = [&](DeliveryOutcome o, const std::string& who) -> std::string {
    switch (o) {
      case DeliveryOutcome::kDelivered:
        return "250 2.0.0 " + who + "Ok: delivered as " + queue_id_;
      case DeliveryOutcome::kNoSpace:
        return "452 4.3.1 " + who + "Insufficient system storage";
      case DeliveryOutcome::kIoError:
        break;
    }
    return "451 4.3.0 " + who + "Error: local delivery failed";
  };
  for (std::size_t i = 0; i < job_users_.size() && i < outcomes.size(); ++i) {
    log(std::string(outcomes[i] == DeliveryOutcome::kDelivered ? "delivered" : "delivery failed") +
        ": id=" + queue_id_ + " client=" + client_.text() + " from=<" + printable(reverse_path_) + "> to=<" +
        job_users_[i] + "> size=" + std::to_string(job_size_) +
        (outcomes[i] == DeliveryOutcome::kDelivered ? ""
                                                    : " status=" + text_of(outcomes[i], "").substr(0, 9)));
  }
  if (settings_.protocol == Protocol::kLmtp) {
    // RFC 2033 §4.2: one reply per successful RCPT, in order.
    for (const Rcpt& r : rcpts_) {
      DeliveryOutcome o = DeliveryOutcome::kDelivered;
      for (const std::string& u : r.users) {
        DeliveryOutcome x = outcome_of(u);
        if (x != DeliveryOutcome::kDelivered && o == DeliveryOutcome::kDelivered) o = x;
      }
      reply(text_of(o, "<" + printable(r.address) + "> "));
    }
  } else {
    DeliveryOutcome o = DeliveryOutcome::kDelivered;
    for (std::size_t i = 0; i < job_users_.size() && i < outcomes.size(); ++i) {
      if (outcomes[i] != DeliveryOutcome::kDelivered && o == DeliveryOutcome::kDelivered) o = outcomes[i];
    }
    if (outcomes.size() != job_users_.size()) o = DeliveryOutcome::kIoError;
    reply(text_of(o, ""));
  }
  delivering_ = false;
  job_users_.clear();
  reset_transaction();
}

void Session::tls_started(const std::string& description) {
  tls_active_ = true;
  helo_.clear();
  extended_ = false;
  reset_transaction();
  in_.clear();
  in_pos_ = 0;
  log("starttls: " + client_.text() + " " + description);
}

void Session::timed_out() {
  reply("421 4.4.2 " + settings_.hostname + " Error: timeout exceeded");
  log("timeout after " + (phase_ == Phase::kData ? std::string("DATA") : last_verb_) + " from " +
      client_.text());
  closing_ = true;
}

bool Session::shutdown() {
  shutting_down_ = true;
  if (closing_ || phase_ != Phase::kCommand || in_mail_ || delivering_) return false;
  reply("421 4.3.2 " + settings_.hostname + " Service shutting down, closing transmission channel");
  closing_ = true;
  return true;
}

}  // namespace reduit::mail
