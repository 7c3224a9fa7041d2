// The SMTP/LMTP state machine (mailserver/session.hpp) fed exact bytes: replies,
// DATA framing, smuggling inputs, limits. No network, no filesystem.
#include <gtest/gtest.h>

#include "mailserver/address.hpp"
#include "mailserver/session.hpp"

using namespace reduit::mail;

namespace {

Directory test_directory() {
  return Directory({"example.test", "example.org"},
                   {"alice@example.test", "bob@example.test", "carol@example.org", "dörte@example.test"},
                   {{"team@example.test", {"alice@example.test", "bob@example.test"}}});
}

// Drives a Session: feeds input, answers deliveries with `outcome`, collects output.
struct Driver {
  explicit Driver(Protocol p = Protocol::kSmtp, Limits limits = Limits{}, bool tls = false)
      : directory(test_directory()) {
    settings.protocol = p;
    settings.hostname = "mx.example.test";
    settings.tls_available = tls;
    settings.limits = limits;
    session = std::make_unique<Session>(settings, directory, ClientInfo{"192.0.2.7", 4242},
                                        [this](const std::string& l) { log.push_back(l); });
    session->greet();
    last = session->next();
    greeting = session->take_output();
  }
  // Feeds `in`, runs until input is needed or the session closes; returns the output.
  std::string feed(const std::string& in) {
    session->receive(in);
    std::string out;
    while (true) {
      last = session->next();
      out += session->take_output();
      if (last == Session::Action::kDeliver) {
        jobs.push_back(session->take_delivery());
        session->delivered(std::vector<DeliveryOutcome>(jobs.back().users.size(), outcome));
        continue;
      }
      return out;
    }
  }
  Directory directory;
  SessionSettings settings;
  std::unique_ptr<Session> session;
  std::string greeting;
  Session::Action last{};
  std::vector<DeliveryJob> jobs;
  std::vector<std::string> log;
  DeliveryOutcome outcome = DeliveryOutcome::kDelivered;
};

// The reply lines of `out` without the queue id ("delivered as X" → "delivered as ID").
std::vector<std::string> lines(const std::string& out) {
  std::vector<std::string> v;
  std::size_t start = 0;
  while (start < out.size()) {
    std::size_t e = out.find("\r\n", start);
    std::string l = out.substr(start, e - start);
    if (auto p = l.find("delivered as "); p != std::string::npos) l = l.substr(0, p) + "delivered as ID";
    v.push_back(l);
    start = e + 2;
  }
  return v;
}

using V = std::vector<std::string>;

}  // namespace

TEST(MailSession, GreetingAndEhloAdvertiseExactlyTheExtensions) {
  Driver d(Protocol::kSmtp, Limits{}, /*tls=*/true);
  EXPECT_EQ(d.greeting, "220 mx.example.test ESMTP reduit\r\n");
  EXPECT_EQ(d.feed("EHLO client.example\r\n"),
            "250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 10485760\r\n250-8BITMIME\r\n250-STARTTLS\r\n"
            "250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n");
  EXPECT_EQ(d.feed("HELO client.example\r\n"), "250 mx.example.test\r\n");
  Driver l(Protocol::kLmtp);
  EXPECT_EQ(l.greeting, "220 mx.example.test LMTP reduit\r\n");
  EXPECT_EQ(
      lines(l.feed("EHLO x\r\nLHLO x\r\n")),
      (V{"500 5.5.1 Error: this is LMTP, use LHLO (RFC 2033 §4.1)", "250-mx.example.test", "250-PIPELINING",
         "250-SIZE 10485760", "250-8BITMIME", "250-ENHANCEDSTATUSCODES", "250 SMTPUTF8"}));
}

TEST(MailSession, EveryVerbAnsweredExactly) {
  Driver d;
  EXPECT_EQ(
      lines(d.feed("MAIL FROM:<a@b.example>\r\nNOOP\r\nVRFY alice\r\nVRFY\r\nEXPN team\r\nHELP\r\n"
                   "FOO bar\r\nRSET\r\nRSET x\r\nHELO\r\nEHLO c.example\r\nRCPT TO:<alice@example.test>\r\n"
                   "DATA\r\nMAIL FROM:<a@b.example>\r\nMAIL FROM:<a@b.example>\r\nDATA\r\n"
                   "RCPT TO:alice@example.test\r\nMAIL FROM:<>\r\nSTARTTLS\r\nQUIT\r\n")),
      (V{"503 5.5.1 Error: send HELO/EHLO first",
         "250 2.0.0 Ok",
         "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery",
         "501 5.5.4 Syntax: VRFY address",
         "502 5.5.1 Error: command not implemented",
         "214-2.0.0 reduit mail server: receive-only final delivery",
         "214-2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP",
         "214 2.0.0 See RFC 5321",
         "500 5.5.2 Error: command not recognized",
         "250 2.0.0 Ok",
         "501 5.5.4 Syntax: RSET",
         "501 5.5.4 Syntax: HELO hostname",
         "250-mx.example.test",
         "250-PIPELINING",
         "250-SIZE 10485760",
         "250-8BITMIME",
         "250-ENHANCEDSTATUSCODES",
         "250 SMTPUTF8",
         "503 5.5.1 Error: need MAIL command",
         "503 5.5.1 Error: need MAIL command",
         "250 2.1.0 Ok",
         "503 5.5.1 Error: nested MAIL command",
         "554 5.5.1 Error: no valid recipients",
         "501 5.1.3 Bad recipient address syntax",
         "503 5.5.1 Error: nested MAIL command",
         "502 5.5.1 Error: command not implemented",
         "221 2.0.0 Bye"}));
  EXPECT_EQ(d.last, Session::Action::kClose);
  EXPECT_EQ(d.session->errors(), 13u);
}

TEST(MailSession, RecipientsResolveRelayUnknownAliasAndPostmaster) {
  Driver d;
  EXPECT_EQ(
      lines(d.feed("EHLO c\r\nMAIL FROM:<x@remote.example>\r\nRCPT TO:<someone@remote.example>\r\n"
                   "RCPT TO:<nobody@example.test>\r\nRCPT TO:<ALICE@Example.TEST>\r\n"
                   "RCPT TO:<team@example.test>\r\nRCPT TO:<x@[192.0.2.1]>\r\nRCPT TO:<Postmaster>\r\n")),
      (V{"250-mx.example.test", "250-PIPELINING", "250-SIZE 10485760", "250-8BITMIME",
         "250-ENHANCEDSTATUSCODES", "250 SMTPUTF8", "250 2.1.0 Ok",
         "550 5.7.1 <someone@remote.example>: Relay access denied",
         "550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown", "250 2.1.5 Ok",
         "250 2.1.5 Ok", "550 5.7.1 <x@[192.0.2.1]>: Relay access denied",
         "550 5.1.1 <Postmaster>: Recipient address rejected: User unknown"}));
  EXPECT_EQ(lines(d.feed("DATA\r\nSubject: t\r\n\r\nhi\r\n.\r\n")),
            (V{"354 End data with <CR><LF>.<CR><LF>", "250 2.0.0 Ok: delivered as ID"}));
  ASSERT_EQ(d.jobs.size(), 1u);
  EXPECT_EQ(d.jobs[0].users, (V{"alice@example.test", "bob@example.test"}));  // alias fan-out, deduplicated
  EXPECT_EQ(d.jobs[0].return_path, "x@remote.example");
  EXPECT_TRUE(d.jobs[0].all_or_nothing);
  EXPECT_EQ(d.log[0],
            "reject: RCPT from [192.0.2.7]:4242: 550 5.7.1 <someone@remote.example>: Relay access denied; "
            "helo=<c>");
}

TEST(MailSession, DataIsUnstuffedAndStoredWithLfLineEnds) {
  Driver d;
  d.feed("EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.test>\r\n");
  // Split across reads at awkward places: inside CRLF, after the dot.
  std::string out = d.feed("DATA\r\nSubject: dots\r\n\r\n..leading dot\r");
  out += d.feed("\n...two\r\n.");
  out += d.feed("\r\n");
  EXPECT_EQ(lines(out), (V{"354 End data with <CR><LF>.<CR><LF>", "250 2.0.0 Ok: delivered as ID"}));
  ASSERT_EQ(d.jobs.size(), 1u);
  EXPECT_EQ(d.jobs[0].body, "Subject: dots\n\n.leading dot\n..two\n");
  EXPECT_EQ(d.jobs[0].return_path, "");
  const std::string& r = d.jobs[0].received;
  EXPECT_EQ(r.substr(0, r.find(';')),
            "Received: from c ([192.0.2.7])\n\tby mx.example.test (reduit) with ESMTP id " + d.jobs[0].id +
                "\n\tfor <bob@example.test>");
  // An empty message is legal.
  d.feed("MAIL FROM:<>\r\nRCPT TO:<bob@example.test>\r\n");
  EXPECT_EQ(lines(d.feed("DATA\r\n.\r\n")),
            (V{"354 End data with <CR><LF>.<CR><LF>", "250 2.0.0 Ok: delivered as ID"}));
  EXPECT_EQ(d.jobs[1].body, "");
}

// SMTP smuggling (CVE-2023-51764 class): only CRLF.CRLF ends DATA; a message with a
// bare LF or CR is refused as a whole, and what looked like commands inside it never runs.
TEST(MailSession, OnlyCrlfDotCrlfEndsDataAndBareLineEndsAreRefused) {
  for (const std::string& fake_end : {std::string("\n.\n"), std::string("\r.\r"), std::string("\r\n.\n"),
                                      std::string("\n.\r\n"), std::string("\r.\r\n")}) {
    SCOPED_TRACE(testing::PrintToString(fake_end));
    Driver d;
    d.feed("EHLO c\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\n");
    std::string out = d.feed("DATA\r\nSubject: x\r\n\r\nbody" + fake_end +
                             "MAIL FROM:<evil@remote.example>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
                             "Subject: smuggled\r\n\r\nx\r\n.\r\nNOOP\r\n");
    EXPECT_EQ(lines(out),
              (V{"354 End data with <CR><LF>.<CR><LF>",
                 "550 5.6.0 Message refused: bare <CR> or <LF> in message content (RFC 5321 §2.3.8)",
                 "250 2.0.0 Ok"}));
    EXPECT_TRUE(d.jobs.empty());
    EXPECT_FALSE(d.session->in_transaction());
  }
  Driver d;
  EXPECT_EQ(lines(d.feed("NOOP\n")), (V{"500 5.5.2 Error: bare <CR> or <LF> in command (RFC 5321 §2.3.8)"}));
  EXPECT_EQ(lines(d.feed("NO\rOP\r\n")),
            (V{"500 5.5.2 Error: bare <CR> or <LF> in command (RFC 5321 §2.3.8)"}));
}

TEST(MailSession, LineLimitsOfRfc5321) {
  Driver d;
  // A command line of 512 octets with CRLF is fine, 513 is not.
  EXPECT_EQ(lines(d.feed("NOOP " + std::string(505, 'x') + "\r\n")), (V{"250 2.0.0 Ok"}));
  EXPECT_EQ(lines(d.feed("NOOP " + std::string(506, 'x') + "\r\n")),
            (V{"500 5.5.2 Error: line too long (RFC 5321 §4.5.3.1.4: 512 octets)"}));
  // A 10 MB command line arrives in pieces and is never buffered.
  std::string out;
  for (int i = 0; i < 160; ++i) out += d.feed(std::string(65536, 'A'));
  EXPECT_EQ(out, "");
  EXPECT_EQ(lines(d.feed("AAAA\r\nNOOP\r\n")),
            (V{"500 5.5.2 Error: line too long (RFC 5321 §4.5.3.1.4: 512 octets)", "250 2.0.0 Ok"}));
  // Text lines: 998 octets + CRLF pass (the stuffed dot not counted), 999 do not.
  d.feed("EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.test>\r\n");
  EXPECT_EQ(lines(d.feed("DATA\r\n." + std::string(997, 'y') + "\r\n" + std::string(998, 'z') + "\r\n.\r\n")),
            (V{"354 End data with <CR><LF>.<CR><LF>", "250 2.0.0 Ok: delivered as ID"}));
  EXPECT_EQ(d.jobs.back().body.size(), 997u + 1 + 998 + 1);
  d.feed("MAIL FROM:<>\r\nRCPT TO:<bob@example.test>\r\n");
  EXPECT_EQ(lines(d.feed("DATA\r\n" + std::string(999, 'z') + "\r\n.\r\n")),
            (V{"354 End data with <CR><LF>.<CR><LF>",
               "500 5.5.2 Error: line too long (RFC 5321 §4.5.3.1.6: 1000 octets)"}));
  EXPECT_EQ(d.jobs.size(), 1u);
}

TEST(MailSession, SizeLimitFromSizeParameterAndFromData) {
  Limits l;
  l.message_size_limit = 2048;
  Driver d(Protocol::kSmtp, l);
  EXPECT_EQ(lines(d.feed("EHLO c\r\nMAIL FROM:<a@b.example> SIZE=2049\r\nMAIL FROM:<a@b.example> SIZE=2048 "
                         "BODY=8BITMIME\r\nRCPT TO:<alice@example.test>\r\n"))
                .back(),
            "250 2.1.5 Ok");
  EXPECT_EQ(lines(d.feed("")).size(), 0u);
  Driver e(Protocol::kSmtp, l);
  e.feed("EHLO c\r\n");
  EXPECT_EQ(lines(e.feed("MAIL FROM:<a@b.example> SIZE=2049\r\n")),
            (V{"552 5.3.4 Message size exceeds fixed limit"}));
  e.feed("MAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.test>\r\n");
  std::string big;
  for (int i = 0; i < 30; ++i) big += std::string(70, 'q') + "\r\n";  // 2160 octets
  EXPECT_EQ(lines(e.feed("DATA\r\n" + big + ".\r\n")),
            (V{"354 End data with <CR><LF>.<CR><LF>", "552 5.3.4 Message size exceeds fixed limit"}));
  // Exactly at the limit (with CRLF counted) is accepted.
  e.feed("MAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.test>\r\n");
  EXPECT_EQ(lines(e.feed("DATA\r\n" + std::string(998, 'q') + "\r\n" + std::string(998, 'q') + "\r\n" +
                         std::string(46, 'q') + "\r\n.\r\n"))[1],
            "250 2.0.0 Ok: delivered as ID");
  ASSERT_EQ(e.jobs.size(), 1u);
  EXPECT_EQ(e.jobs[0].body.size(), 998u + 1 + 998 + 1 + 46 + 1);
}

TEST(MailSession, PipelinedCommandsAnsweredInOrderInOneWrite) {
  Driver d;
  std::string out = d.feed(
      "EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<x@remote.example>\r\n"
      "RCPT TO:<carol@example.org>\r\nDATA\r\nSubject: p\r\n\r\nbody\r\n.\r\nMAIL FROM:<>\r\n"
      "RCPT TO:<bob@example.test>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n");
  V l = lines(out);
  EXPECT_EQ(V(l.begin() + 6, l.end()),
            (V{"250 2.1.0 Ok", "250 2.1.5 Ok", "550 5.7.1 <x@remote.example>: Relay access denied",
               "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>", "250 2.0.0 Ok: delivered as ID",
               "250 2.1.0 Ok", "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>",
               "250 2.0.0 Ok: delivered as ID", "221 2.0.0 Bye"}));
  ASSERT_EQ(d.jobs.size(), 2u);
  EXPECT_EQ(d.jobs[0].users, (V{"alice@example.test", "carol@example.org"}));
  EXPECT_EQ(d.jobs[1].body, "hi\n");
}

TEST(MailSession, SmtpUtf8AddressesNeedTheParameter) {
  Driver d;
  EXPECT_EQ(
      lines(d.feed("EHLO c\r\nMAIL FROM:<jörg@remote.example>\r\nMAIL FROM:<jörg@remote.example> SMTPUTF8\r\n"
                   "RCPT TO:<DÖRTE@example.test>\r\nRCPT TO:<dörte@example.test>\r\n"))
          .back(),
      "250 2.1.5 Ok");
  Driver e;
  e.feed("EHLO c\r\n");
  EXPECT_EQ(
      lines(e.feed(
          "MAIL FROM:<jörg@remote.example>\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<dörte@example.test>\r\n"
          "MAIL FROM:<a\xff@b.example> SMTPUTF8\r\n")),
      (V{"553 5.6.7 Non-ASCII sender address needs SMTPUTF8 (RFC 6531)", "250 2.1.0 Ok",
         "553 5.6.7 Non-ASCII recipient address needs SMTPUTF8 (RFC 6531)",
         "503 5.5.1 Error: nested MAIL command"}));
  Driver h;  // HELO: no ESMTP parameters at all
  EXPECT_EQ(lines(h.feed("HELO c\r\nMAIL FROM:<a@b.example> SMTPUTF8\r\nMAIL FROM:<a@b.example> FOO=1\r\n")),
            (V{"250 mx.example.test", "555 5.5.4 Error: MAIL parameters need EHLO",
               "555 5.5.4 Error: MAIL parameters need EHLO"}));
}

TEST(MailSession, TooManyRecipientsThenTooManyErrors) {
  Limits l;
  l.recipient_limit = 3;
  l.recipient_overshoot_limit = 2;
  l.error_limit = 2;
  Driver d(Protocol::kSmtp, l);
  std::string in = "EHLO c\r\nMAIL FROM:<>\r\n";
  for (int i = 0; i < 10; ++i) in += "RCPT TO:<alice@example.test>\r\n";
  V out = lines(d.feed(in));
  EXPECT_EQ(V(out.begin() + 6, out.end()),
            (V{"250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok",
               "452 4.5.3 Error: too many recipients", "452 4.5.3 Error: too many recipients",
               "452 4.5.3 Error: too many recipients", "452 4.5.3 Error: too many recipients",
               "421 4.7.0 mx.example.test Error: too many errors"}));
  EXPECT_EQ(d.last, Session::Action::kClose);
  EXPECT_EQ(d.log.back(), "too many errors after RCPT from [192.0.2.7]:4242 (2 errors)");
}

TEST(MailSession, LmtpPerRecipientOutcomes) {
  Driver d(Protocol::kLmtp);
  d.feed(
      "LHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<carol@example.org>\r\nRCPT TO:<team@example.test>\r\n"
      "RCPT TO:<alice@example.test>\r\n");
  d.session->receive("DATA\r\nSubject: l\r\n\r\nx\r\n.\r\n");
  ASSERT_EQ(d.session->next(), Session::Action::kDeliver);
  EXPECT_EQ(lines(d.session->take_output()), (V{"354 End data with <CR><LF>.<CR><LF>"}));
  DeliveryJob job = d.session->take_delivery();
  EXPECT_FALSE(job.all_or_nothing);
  ASSERT_EQ(job.users, (V{"alice@example.test", "bob@example.test", "carol@example.org"}));
  d.session->delivered({DeliveryOutcome::kNoSpace, DeliveryOutcome::kDelivered, DeliveryOutcome::kDelivered});
  EXPECT_EQ(lines(d.session->take_output()),
            (V{"250 2.0.0 <carol@example.org> Ok: delivered as ID",
               "452 4.3.1 <team@example.test> Insufficient system storage",
               "452 4.3.1 <alice@example.test> Insufficient system storage"}));
  // SMTP: one reply, the failure wins.
  Driver s;
  s.outcome = DeliveryOutcome::kIoError;
  EXPECT_EQ(
      lines(s.feed("EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nx\r\n.\r\n")).back(),
      "451 4.3.0 Error: local delivery failed");
}

TEST(MailSession, StartTlsDiscardsPipelinedCommandsAndResetsState) {
  Driver d(Protocol::kSmtp, Limits{}, /*tls=*/true);
  d.session->receive(
      "EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@remote.example>\r\nRCPT TO:<alice@example.test>\r\n");
  EXPECT_EQ(d.session->next(), Session::Action::kStartTls);
  V out = lines(d.session->take_output());
  EXPECT_EQ(out.back(), "220 2.0.0 Ready to start TLS");
  d.session->tls_started("TLSv1.3 TLS_AES_256_GCM_SHA384");
  EXPECT_EQ(d.session->next(), Session::Action::kNeedInput);
  EXPECT_EQ(d.session->take_output(), "");  // the injected MAIL/RCPT were never answered
  EXPECT_EQ(lines(d.feed("MAIL FROM:<a@b.example>\r\nEHLO c\r\nSTARTTLS\r\n")),
            (V{"503 5.5.1 Error: send HELO/EHLO first", "250-mx.example.test", "250-PIPELINING",
               "250-SIZE 10485760", "250-8BITMIME", "250-ENHANCEDSTATUSCODES", "250 SMTPUTF8",
               "503 5.5.1 Error: TLS already active"}));
  EXPECT_EQ(d.log[0], "reject: STARTTLS from [192.0.2.7]:4242: discarded 63 octets pipelined after STARTTLS");
  // tls.require: no MAIL before STARTTLS.
  Driver r(Protocol::kSmtp, Limits{}, true);
  r.settings.tls_required = true;
  EXPECT_EQ(lines(r.feed("EHLO c\r\nMAIL FROM:<a@b.example>\r\n")).back(),
            "530 5.7.0 Must issue a STARTTLS command first");
}

TEST(MailSession, ShutdownWaitsForTheTransactionInFlight) {
  Driver idle;
  EXPECT_TRUE(idle.session->shutdown());
  EXPECT_EQ(idle.session->take_output(),
            "421 4.3.2 mx.example.test Service shutting down, closing transmission channel\r\n");
  Driver busy;
  busy.feed("EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\n");
  EXPECT_FALSE(busy.session->shutdown());
  EXPECT_EQ(lines(busy.feed("DATA\r\nx\r\n.\r\nNOOP\r\n")),
            (V{"354 End data with <CR><LF>.<CR><LF>", "250 2.0.0 Ok: delivered as ID",
               "421 4.3.2 mx.example.test Service shutting down, closing transmission channel"}));
  EXPECT_EQ(busy.last, Session::Action::kClose);
  EXPECT_EQ(busy.jobs.size(), 1u);
}

TEST(MailSession, TimeoutAnswers421) {
  Driver d;
  d.feed("EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\npartial");
  EXPECT_EQ(d.session->phase(), Session::Phase::kData);
  d.session->timed_out();
  EXPECT_EQ(d.session->take_output(), "421 4.4.2 mx.example.test Error: timeout exceeded\r\n");
  EXPECT_EQ(d.session->next(), Session::Action::kClose);
  EXPECT_EQ(d.log.back(), "timeout after DATA from [192.0.2.7]:4242");
}

TEST(MailAddress, PathSyntaxOfRfc5321) {
  auto parse = [](const std::string& s, bool null_ok = false) {
    Mailbox m;
    std::string_view rest;
    PathError e = parse_path(s, null_ok, &m, &rest);
    if (e == PathError::kSyntax) return std::string("syntax");
    if (e == PathError::kTooLong) return std::string("too long");
    return m.text() + "|" + std::string(rest);
  };
  EXPECT_EQ(parse("<alice@example.test>"), "alice@example.test|");
  EXPECT_EQ(parse("<alice@example.test> SIZE=10"), "alice@example.test| SIZE=10");
  EXPECT_EQ(parse("<@relay.example,@other.example:alice@example.test>"), "alice@example.test|");
  EXPECT_EQ(parse("<\"john doe\"@example.test>"), "john doe@example.test|");
  EXPECT_EQ(parse("<\"a>b\"@example.test>"), "a>b@example.test|");
  EXPECT_EQ(parse("<>", true), "|");
  EXPECT_EQ(parse("<>"), "syntax");
  EXPECT_EQ(parse("<Postmaster>"), "Postmaster|");
  EXPECT_EQ(parse("<postmaster>", true), "syntax");
  EXPECT_EQ(parse("alice@example.test"), "syntax");
  EXPECT_EQ(parse("<alice@example.test"), "syntax");
  EXPECT_EQ(parse("<.alice@example.test>"), "syntax");
  EXPECT_EQ(parse("<al..ice@example.test>"), "syntax");
  EXPECT_EQ(parse("<alice@-example.test>"), "syntax");
  EXPECT_EQ(parse("<alice@example..test>"), "syntax");
  EXPECT_EQ(parse("<al ice@example.test>"), "syntax");
  EXPECT_EQ(parse("<alice@[192.0.2.1]>"), "alice@[192.0.2.1]|");
  EXPECT_EQ(parse("<" + std::string(64, 'a') + "@example.test>"), std::string(64, 'a') + "@example.test|");
  EXPECT_EQ(parse("<" + std::string(65, 'a') + "@example.test>"), "too long");
  EXPECT_EQ(parse("<a@" + std::string(250, 'b') + ".test>"), "too long");
  EXPECT_EQ(parse("<dörte@bücher.example>"), "dörte@bücher.example|");
  EXPECT_EQ(parse("<d\xc3@example.test>"), "syntax");          // truncated UTF-8
  EXPECT_EQ(parse("<d\xc0\xaf@example.test>"), "syntax");      // overlong
  EXPECT_EQ(parse("<d\xed\xa0\x80@example.test>"), "syntax");  // surrogate
  EXPECT_TRUE(valid_utf8("\xf0\x9f\x93\xa7"));
  EXPECT_FALSE(valid_utf8("\xf4\x90\x80\x80"));  // beyond U+10FFFF
}
