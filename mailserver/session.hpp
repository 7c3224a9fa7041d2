// mailserver/session.hpp — one SMTP (RFC 5321) or LMTP (RFC 2033) session as a
// state machine over bytes. It never touches the network or the filesystem.
//
// The network layer (server.cpp) feeds received octets with receive(), calls next()
// until it returns kNeedInput, and writes take_output() to the client. next() says
// what the session needs from outside:
//   kNeedInput  read more and call receive() (arm command_timeout or data_timeout,
//               as phase() says)
//   kDeliver    hand take_delivery() to the delivery unit; call delivered() with one
//               outcome per user; then next() again. Nothing is replied before that:
//               250 means every copy is durable (SMTP: all; LMTP: per recipient).
//   kStartTls   write the output (220), start TLS, then call tls_started(). The
//               input received so far was discarded (RFC 3207 §4.2, CVE-2011-0411).
//   kClose      write the output, then close the connection.
//
// Rules it enforces, with their sources:
//  - Lines end with CRLF only. A bare LF or bare CR in a command is a 500 5.5.2; in
//    DATA it taints the message, which is refused with 550 5.6.0 once the real end
//    "CRLF.CRLF" arrives: "\n.\n" or "\r.\r" never end DATA (RFC 5321 §2.3.8, §4.1.1.4;
//    SMTP smuggling, CVE-2023-51764 class).
//  - Command lines of at most 512 octets, MAIL/RCPT with parameters 1024 (§4.5.3.1.4,
//    RFC 1869 §4.1.2); text lines of at most 1000 octets with CRLF, the stuffed dot
//    not counted (§4.5.3.1.6). Longer lines are discarded, never buffered, and
//    answered "500 5.5.2 Line too long" (§4.5.3.1.10).
//  - Dot-unstuffing (§4.5.2). The stored message has LF line ends (the Maildir
//    convention); its size for SIZE checks counts CRLF (RFC 1870).
//  - Every 4xx/5xx reply the client caused counts as an error; at error_limit the
//    session answers "421 4.7.0" and closes. RCPTs over recipient_limit get
//    "452 4.5.3" (§4.5.3.1.10) and count as errors only past recipient_overshoot_limit.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "mailserver/config.hpp"
#include "mailserver/directory.hpp"

namespace reduit::mail {

enum class Protocol { kSmtp, kLmtp };

/// What the delivery unit is asked to do: store `body` once per user, each copy
/// with "Return-Path: <return_path>", "Delivered-To: <user>" and then `received`
/// prepended. With `all_or_nothing` (SMTP) either every copy is committed or none.
struct DeliveryJob {
  std::string id;                  // queue id, for logs and the Received header
  std::string return_path;         // envelope sender, "" for <>
  std::string received;            // the Received header field, LF line ends, with final LF
  std::string body;                // the message as received, LF line ends
  std::vector<std::string> users;  // distinct, "local@domain"
  bool all_or_nothing = true;
};

enum class DeliveryOutcome {
  kDelivered,  // in new/, file and directory fsync'd
  kNoSpace,    // ENOSPC/EDQUOT: 452 4.3.1 (RFC 3463 "mail system full")
  kIoError,    // any other failure: 451 4.3.0
};

/// Who is connected, for logs and the Received header.
struct ClientInfo {
  std::string address;  // numeric, no brackets
  std::uint16_t port = 0;
  std::string text() const;  // "[192.0.2.1]:1234", "[::1]:1234"
};

/// Settings a session needs (from MailServerConfig).
struct SessionSettings {
  Protocol protocol = Protocol::kSmtp;
  std::string hostname = "localhost";
  bool tls_available = false;  // STARTTLS offered
  bool tls_required = false;   // 530 5.7.0 to MAIL before STARTTLS
  Limits limits;
};

class Session {
 public:
  enum class Action { kNeedInput, kDeliver, kStartTls, kClose };
  enum class Phase { kCommand, kData };
  /// One log line (without timestamp); see docs/MAILSERVER.md "Log lines".
  using LogFn = std::function<void(const std::string&)>;

  Session(const SessionSettings& settings, const Directory& directory, ClientInfo client, LogFn log);
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  /// Queues the 220 greeting (RFC 5321 §4.2, §3.1).
  void greet();
  /// Appends octets read from the client.
  void receive(std::string_view bytes);
  /// Processes buffered input as far as possible (see the file comment).
  Action next();
  /// Replies produced so far (CRLF line ends); empties the buffer.
  std::string take_output();
  /// The transaction to deliver, after next() returned kDeliver.
  DeliveryJob take_delivery();
  /// Outcome per user of take_delivery().users, in that order; queues the replies.
  void delivered(const std::vector<DeliveryOutcome>& outcomes);
  /// TLS is up (after kStartTls): back to the initial state (RFC 3207 §4.2).
  void tls_started(const std::string& description);
  /// The read timeout fired: queues "421 4.4.2" and logs. Then close.
  void timed_out();
  /// The server is stopping: a session between transactions gets "421 4.3.2" and
  /// returns true (write, then close); a transaction in flight is finished first and
  /// the 421 follows its reply. Returns false then.
  bool shutdown();

  Phase phase() const { return phase_; }
  bool in_transaction() const { return in_mail_; }
  bool tls_active() const { return tls_active_; }
  unsigned errors() const { return errors_; }
  unsigned commands() const { return commands_; }

 private:
  struct Rcpt {
    std::string address;             // as given (for logs, Received "for")
    std::vector<std::string> users;  // resolved
  };

  Action command(std::string_view line);
  bool data_input();
  void finish_data();
  void reply(const std::string& text, bool counts_as_error = false, std::string_view verb = {});
  void reply_lines(int code, const std::vector<std::string>& lines);
  void reset_transaction();
  bool over_error_limit();
  std::string received_header() const;
  void log(const std::string& line) const;

  Action cmd_helo(std::string_view verb, std::string_view arg, bool extended);
  Action cmd_mail(std::string_view arg);
  Action cmd_rcpt(std::string_view arg);
  Action cmd_data(std::string_view arg);

  const SessionSettings& settings_;
  const Directory& directory_;
  ClientInfo client_;
  LogFn log_;

  std::string in_;  // received; in_[in_pos_..] is not yet processed
  std::size_t in_pos_ = 0;
  std::string out_;  // replies to send
  Phase phase_ = Phase::kCommand;
  bool discarding_long_line_ = false;
  bool long_line_ended_ = false;
  std::string last_verb_ = "CONNECT";  // for logs
  bool closing_ = false;
  bool shutting_down_ = false;
  bool delivering_ = false;

  // Session state.
  std::string helo_;
  bool extended_ = false;  // EHLO/LHLO (not HELO)
  bool tls_active_ = false;
  std::string tls_description_;
  unsigned errors_ = 0, commands_ = 0;
  std::uint64_t transactions_ = 0;

  // Transaction state (RFC 5321 §3.3).
  bool in_mail_ = false;
  std::string reverse_path_;
  bool smtputf8_ = false;
  bool body_8bit_ = false;
  std::vector<Rcpt> rcpts_;
  unsigned rcpt_overshoot_ = 0;

  // DATA parser state.
  std::string body_;
  std::uint64_t data_size_ = 0;  // octets with CRLF, unstuffed
  bool at_line_start_ = true;
  bool dot_line_ = false;
  bool cr_pending_ = false;
  std::size_t line_len_ = 0;
  bool bare_eol_ = false, line_too_long_ = false, too_big_ = false;
  std::string queue_id_;
  std::vector<std::string> job_users_;  // of the delivery in flight
  std::size_t job_size_ = 0;
};

}  // namespace reduit::mail
