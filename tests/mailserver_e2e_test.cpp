// `reduit mailserver` as a process on loopback, driven by real clients: swaks,
// Python's smtplib and ssl, Postfix's smtp-source, raw sockets for hostile input;
// judged by Dovecot's doveadm and Debian's fail2ban-regex (issue 4, "Must show").
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <regex>
#include <set>
#include <thread>

#include "support/harness.hpp"
#include "support/mailserver.hpp"

using namespace reduit::test;
namespace fs = std::filesystem;
using V = std::vector<std::string>;

namespace {

// A test CA and a server certificate for mx.example.test, 127.0.0.1 and ::1 (RSA, so
// that a static-RSA cipher could be offered and must be refused).
struct TestCa {
  TempDir dir;
  std::string ca, cert, key;
  // Destroyed at exit, which removes the directory (ctest runs each test in its own
  // process; each used to leave one behind in /tmp).
  static TestCa& get() {
    static std::unique_ptr<TestCa> t = [] {
      auto c = std::make_unique<TestCa>();
      std::string d = c->dir.path();
      c->ca = d + "/ca.pem";
      c->cert = d + "/server.pem";
      c->key = d + "/server.key";
      auto ssl = [](const V& args) {
        V argv{"/usr/bin/openssl"};
        argv.insert(argv.end(), args.begin(), args.end());
        RunResult r = run_command(argv);
        if (r.status != 0) throw std::runtime_error("openssl failed: " + r.err);
      };
      ssl({"req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", d + "/ca.key", "-out", c->ca, "-days",
           "2", "-subj", "/CN=reduit test CA"});
      ssl({"req", "-newkey", "rsa:2048", "-nodes", "-keyout", c->key, "-out", d + "/server.csr", "-subj",
           "/CN=mx.example.test"});
      write_file(d + "/ext",
                 "subjectAltName=DNS:mx.example.test,IP:127.0.0.1,IP:::1\nbasicConstraints=CA:FALSE\n"
                 "extendedKeyUsage=serverAuth\n");
      ssl({"x509", "-req", "-in", d + "/server.csr", "-CA", c->ca, "-CAkey", d + "/ca.key", "-CAcreateserial",
           "-out", c->cert, "-days", "2", "-extfile", d + "/ext"});
      return c;
    }();
    return *t;
  }
};

std::string tls_toml(bool require = false) {
  TestCa& ca = TestCa::get();
  return "[tls]\ncertificate = \"" + ca.cert + "\"\nprivate_key = \"" + ca.key +
         "\"\nrequire = " + (require ? "true" : "false") + "\n";
}

std::string no_queue_id(std::string s) {
  return std::regex_replace(s, std::regex("delivered as [0-9A-F]+"), "delivered as ID");
}

// Runs swaks; returns the server's reply lines of its transcript, queue ids elided.
V swaks(const V& args, int* status = nullptr) {
  V argv{"/usr/bin/swaks", "--hide-informational"};
  argv.insert(argv.end(), args.begin(), args.end());
  RunResult r = run_command(argv);
  if (status) *status = r.status;
  V out;
  std::regex server_line(R"(^<[-~*]{1,2} +(.*)$)");
  std::size_t start = 0;
  while (start < r.out.size()) {
    std::size_t e = r.out.find('\n', start);
    std::string line = r.out.substr(start, e == std::string::npos ? std::string::npos : e - start);
    std::smatch m;
    if (std::regex_match(line, m, server_line)) out.push_back(no_queue_id(m[1]));
    if (e == std::string::npos) break;
    start = e + 1;
  }
  return out;
}

nlohmann::json python_client(const std::string& scenario, int port) {
  RunResult r = run_command({"/usr/bin/python3", source_dir() + "/tests/mailserver/client.py", scenario,
                             "--port", std::to_string(port), "--ca", TestCa::get().ca});
  EXPECT_EQ(r.status, 0) << r.err;
  return r.json();
}

// Every file in new/ is complete: its size is the S= of its name. Returns how many.
std::size_t complete_files(const std::string& maildir) {
  std::size_t n = 0;
  if (!fs::is_directory(maildir + "/new")) return 0;
  for (const auto& e : fs::directory_iterator(maildir + "/new")) {
    std::string name = e.path().filename().string();
    std::size_t s = name.find(",S=");
    EXPECT_NE(s, std::string::npos) << name;
    if (s == std::string::npos) continue;
    EXPECT_EQ(std::stoull(name.substr(s + 3)), fs::file_size(e.path())) << "partial file in new/: " << name;
    ++n;
  }
  return n;
}

// The server still serves a polite client.
void expect_serves_next_client(MailServerProcess& s) {
  RawSmtp c(s.smtp_port());
  EXPECT_EQ(c.reply(), "220 mx.example.test ESMTP reduit");
  c.send("HELO next.example\r\nNOOP\r\nQUIT\r\n");
  EXPECT_EQ(c.replies(3), (V{"250 mx.example.test", "250 2.0.0 Ok", "221 2.0.0 Bye"}));
  EXPECT_TRUE(s.running());
}

const V kEhlo{"250-mx.example.test", "250-PIPELINING",          "250-SIZE 10485760",
              "250-8BITMIME",        "250-ENHANCEDSTATUSCODES", "250 SMTPUTF8"};

V tail(const V& v, std::size_t n) {
  return V(v.end() - static_cast<long>(std::min(n, v.size())), v.end());
}

V concat(std::initializer_list<V> parts) {
  V out;
  for (const V& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

}  // namespace

// ---- 1. swaks and smtplib: every verb, pipelining, STARTTLS, SMTPUTF8, limits ----

TEST(MailClients, SwaksOverSmtpAndLmtpOnIpv4AndIpv6WithAliasFanOut) {
  MailServerProcess s;
  std::string p = std::to_string(s.smtp_port()), l = std::to_string(s.lmtp_port());
  V common{"--from", "sender@remote.example", "--helo", "client.example", "--body", "hello from swaks"};
  auto with = [&](V v) {
    v.insert(v.end(), common.begin(), common.end());
    return v;
  };
  EXPECT_EQ(swaks(with({"--server", "127.0.0.1", "--port", p, "--to", "team@example.test"})),
            concat({{"220 mx.example.test ESMTP reduit"},
                    kEhlo,
                    {"250 2.1.0 Ok", "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>",
                     "250 2.0.0 Ok: delivered as ID", "221 2.0.0 Bye"}}));
  EXPECT_EQ(tail(swaks(with({"--server", "::1", "--port", p, "-6", "--to", "bob@example.test"})), 2),
            (V{"250 2.0.0 Ok: delivered as ID", "221 2.0.0 Bye"}));
  // swaks does not speak SMTPUTF8: a UTF-8 address is refused as RFC 6531 says.
  EXPECT_EQ(tail(swaks(with({"--server", "127.0.0.1", "--port", p, "--to", "dörte@example.test"})), 2),
            (V{"553 5.6.7 Non-ASCII recipient address needs SMTPUTF8 (RFC 6531)", "221 2.0.0 Bye"}));
  EXPECT_EQ(
      swaks(with({"--server", "127.0.0.1", "--port", l, "--protocol", "LMTP", "--to",
                  "alice@example.test,carol@example.org,team@example.test"})),
      concat({{"220 mx.example.test LMTP reduit"},
              kEhlo,
              {"250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok",
               "354 End data with <CR><LF>.<CR><LF>", "250 2.0.0 <alice@example.test> Ok: delivered as ID",
               "250 2.0.0 <carol@example.org> Ok: delivered as ID",
               "250 2.0.0 <team@example.test> Ok: delivered as ID", "221 2.0.0 Bye"}}));
  // team fans out to alice, bob and carol; LMTP's alice+team is one copy for alice.
  EXPECT_EQ(complete_files(s.maildir("alice@example.test")), 2u);
  EXPECT_EQ(complete_files(s.maildir("bob@example.test")), 3u);
  EXPECT_EQ(complete_files(s.maildir("carol@example.org")), 2u);
  EXPECT_EQ(count_entries(s.maildir("dörte@example.test")), 0u);
  for (const auto& [name, content] : maildir_new(s.maildir("bob@example.test"))) {
    EXPECT_EQ(content.substr(0, content.find("Received:")),
              "Return-Path: <sender@remote.example>\nDelivered-To: bob@example.test\n");
    EXPECT_NE(content.find("\n\nhello from swaks\n"), std::string::npos);
    EXPECT_EQ(content.find('\r'), std::string::npos);
  }
  EXPECT_EQ(s.terminate(), 0);
}

TEST(MailClients, SwaksPipeliningRelayRefusalUnknownUserAndSizeLimit) {
  MailServerProcess s("[limits]\nmessage_size_limit = \"16KiB\"\n");
  std::string p = std::to_string(s.smtp_port());
  V ehlo16k = kEhlo;
  ehlo16k[2] = "250-SIZE 16384";
  V base{"--server", "127.0.0.1", "--port", p, "--from", "sender@remote.example", "--helo", "client.example"};
  auto with = [&](V v) {
    v.insert(v.begin(), base.begin(), base.end());
    return v;
  };
  EXPECT_EQ(swaks(with({"--pipeline", "--to", "someone@remote.example"})),
            concat({{"220 mx.example.test ESMTP reduit"},
                    ehlo16k,
                    {"250 2.1.0 Ok", "550 5.7.1 <someone@remote.example>: Relay access denied",
                     "554 5.5.1 Error: no valid recipients", "221 2.0.0 Bye"}}));
  EXPECT_EQ(
      swaks(with({"--pipeline", "--to", "nobody@example.test"})),
      concat({{"220 mx.example.test ESMTP reduit"},
              ehlo16k,
              {"250 2.1.0 Ok", "550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown",
               "554 5.5.1 Error: no valid recipients", "221 2.0.0 Bye"}}));
  EXPECT_EQ(swaks(with({"--pipeline", "--to", "alice@example.test", "--body", "pipelined"})),
            concat({{"220 mx.example.test ESMTP reduit"},
                    ehlo16k,
                    {"250 2.1.0 Ok", "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>",
                     "250 2.0.0 Ok: delivered as ID", "221 2.0.0 Bye"}}));
  std::string big;
  for (int i = 0; i < 300; ++i) big += std::string(70, 'b') + "\n";  // 21,300 octets
  write_file(s.dir("big.txt"), big);
  EXPECT_EQ(swaks(with({"--to", "alice@example.test", "--body", "@" + s.dir("big.txt")})),
            concat({{"220 mx.example.test ESMTP reduit"},
                    ehlo16k,
                    {"250 2.1.0 Ok", "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>",
                     "552 5.3.4 Message size exceeds fixed limit", "221 2.0.0 Bye"}}));
  EXPECT_EQ(complete_files(s.maildir("alice@example.test")), 1u);
  EXPECT_EQ(count_entries(s.maildir("alice@example.test") + "/tmp"), 0u);
}

TEST(MailClients, SmtplibEveryVerbStartTlsWithTestCaAndSmtpUtf8) {
  MailServerProcess s(tls_toml());
  nlohmann::json r = python_client("verbs", s.smtp_port());
  V got;
  for (const auto& e : r) {
    got.push_back(e[0].get<std::string>() + " " + std::to_string(e[1].get<int>()) + " " +
                  no_queue_id(e[2].get<std::string>()));
  }
  EXPECT_EQ(
      got,
      (V{"connect 220 mx.example.test ESMTP reduit",
         "helo 250 mx.example.test",
         "ehlo 250 mx.example.test\nPIPELINING\nSIZE 10485760\n8BITMIME\nSTARTTLS\nENHANCEDSTATUSCODES\n"
         "SMTPUTF8",
         "noop 250 2.0.0 Ok",
         "vrfy 252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery",
         "help 214 2.0.0 reduit mail server: receive-only final delivery\n2.0.0 Commands: HELO EHLO MAIL "
         "RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS\n2.0.0 See RFC 5321",
         "mail 250 2.1.0 Ok",
         "rset 250 2.0.0 Ok",
         "mail 250 2.1.0 Ok",
         "rcpt-relay 550 5.7.1 <someone@remote.example>: Relay access denied",
         "rcpt-unknown 550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown",
         "rcpt-alias 250 2.1.5 Ok",
         "data 250 2.0.0 Ok: delivered as ID",
         "mail-size 552 5.3.4 Message size exceeds fixed limit",
         "starttls 220 2.0.0 Ready to start TLS",
         "tls-version 0 TLSv1.3",
         "ehlo-tls 250 mx.example.test\nPIPELINING\nSIZE 10485760\n8BITMIME\nENHANCEDSTATUSCODES\nSMTPUTF8",
         "mail-utf8 250 2.1.0 Ok",
         "rcpt-utf8 250 2.1.5 Ok",
         "data-utf8 250 2.0.0 Ok: delivered as ID",
         "quit 221 2.0.0 Bye"}));
  auto dorte = maildir_new(s.maildir("dörte@example.test"));
  ASSERT_EQ(dorte.size(), 1u);
  const std::string& m = dorte.begin()->second;
  EXPECT_EQ(m.substr(0, m.find("Received:")),
            "Return-Path: <jörg@remote.example>\nDelivered-To: dörte@example.test\n");
  EXPECT_NE(m.find("with UTF8SMTPS id"), std::string::npos) << m;  // RFC 6531 §4.3 + RFC 3848
  EXPECT_EQ(m.substr(m.find("Subject:")),
            "Subject: Grüße\nMessage-ID: <smtplib-2@client.example>\n\nÄpfel\n");
  EXPECT_EQ(complete_files(s.maildir("carol@example.org")), 1u);
}

TEST(MailClients, TlsOnly12And13WithForwardSecrecyAndRequireTls) {
  MailServerProcess s(tls_toml(/*require=*/true));
  nlohmann::json r = python_client("tls", s.smtp_port());
  EXPECT_EQ(r["tls1.3"], nlohmann::json::parse(R"(["TLSv1.3", "TLS_AES_256_GCM_SHA384"])"));
  EXPECT_EQ(r["tls1.2"], nlohmann::json::parse(R"(["TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384"])"));
  EXPECT_EQ(r["tls1.2-rsa-kx"][0], "refused");
  EXPECT_EQ(r["tls1.1"][0], "refused");
  std::string p = std::to_string(s.smtp_port());
  V args{"--server", "127.0.0.1", "--port", p, "--from", "a@remote.example", "--to", "alice@example.test"};
  EXPECT_EQ(swaks(args), concat({{"220 mx.example.test ESMTP reduit"},
                                 {kEhlo[0], kEhlo[1], kEhlo[2], kEhlo[3], "250-STARTTLS", kEhlo[4], kEhlo[5]},
                                 {"530 5.7.0 Must issue a STARTTLS command first", "221 2.0.0 Bye"}}));
  args.insert(args.end(),
              {"--tls", "--tls-verify", "--tls-ca-path", TestCa::get().ca, "--tls-sni", "mx.example.test"});
  V tls = swaks(args);
  EXPECT_EQ(tail(tls, 5), (V{"250 2.1.0 Ok", "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>",
                             "250 2.0.0 Ok: delivered as ID", "221 2.0.0 Bye"}));
  EXPECT_EQ(complete_files(s.maildir("alice@example.test")), 1u);
}

// ---- 2. Dovecot reads what the server delivered ----

TEST(MailDovecot, DoveadmReadsEveryDeliveredMessageWithItsHeaders) {
  TempDir src;
  generate_maildir(src / "in", 60, 3, 7);
  std::string users_toml = "users = [", domains;
  V users;
  for (const auto& d : fs::directory_iterator(src / "in")) {
    domains += (domains.empty() ? "\"" : ", \"") + d.path().filename().string() + "\"";
    for (const auto& u : fs::directory_iterator(d.path())) {
      users.push_back(u.path().filename().string() + "@" + d.path().filename().string());
      users_toml += (users.size() > 1 ? ", \"" : "\"") + users.back() + "\"";
    }
  }
  MailServerProcess s("", "", "domains = [" + domains + "]\n" + users_toml + "]\n");
  RunResult sub = run_command(
      {source_dir() + "/scripts/submit-maildir", "--port", std::to_string(s.smtp_port()), src / "in"});
  ASSERT_EQ(sub.status, 0) << sub.out << sub.err;
  nlohmann::json summary = sub.json();
  EXPECT_EQ(summary["accepted"], summary["sent"]);
  std::size_t total = 0;
  TempDir ctl;
  // doveadm refuses uid 0 and runs as nobody: let it read the Maildirs.
  run_command({"/bin/chmod", "-R", "a+rX", s.root(), ctl.path()});
  run_command({"/bin/chmod", "a+x", s.dir("")});
  for (const std::string& u : users) {
    SCOPED_TRACE(u);
    std::string box = s.maildir(u);
    auto files = maildir_new(box);
    total += files.size();
    std::string control = ctl / u;
    fs::create_directories(control);
    run_command({"/bin/chown", "nobody:nogroup", control});
    // The pager format gives the message bytes as Dovecot read them ("text" = the whole
    // message); records are separated by "\f\n".
    RunResult r = run_command({"/usr/bin/env", "USER=nobody", "HOME=" + control, "/usr/bin/doveadm", "-o",
                               "mail_location=maildir:" + box + ":INDEX=MEMORY:CONTROL=" + control, "-o",
                               "mail_uid=nobody", "-o", "mail_gid=nogroup", "-f", "pager", "fetch",
                               "size.physical text", "mailbox", "*", "ALL"});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.err, "");
    std::multiset<std::string> on_disk, read_by_dovecot;
    for (const auto& [name, content] : files) on_disk.insert(std::to_string(content.size()) + " " + content);
    std::size_t start = 0;
    while (start < r.out.size()) {
      std::size_t end = r.out.find("\f\nsize.physical: ", start);
      if (end == std::string::npos) end = r.out.size();  // the last record has no "\f\n"
      std::string rec = r.out.substr(start, end - start);
      start = end + 2;
      std::smatch m;
      ASSERT_TRUE(std::regex_search(rec, m, std::regex("^size.physical: (\\d+)\ntext:\n")))
          << rec.substr(0, 200);
      read_by_dovecot.insert(m[1].str() + " " + rec.substr(m[0].length()));
    }
    EXPECT_EQ(read_by_dovecot.size(), files.size());
    for (const std::string& m : read_by_dovecot) {
      if (on_disk.count(m) == read_by_dovecot.count(m)) continue;
      std::string near;  // the file of the same size, to show where the bytes differ
      for (const std::string& d : on_disk) {
        if (d.substr(0, d.find(' ')) == m.substr(0, m.find(' '))) near = d;
      }
      std::size_t at = 0;
      while (at < near.size() && at < m.size() && near[at] == m[at]) ++at;
      ADD_FAILURE() << "doveadm read bytes no file holds, from offset " << at << ": "
                    << testing::PrintToString(m.substr(at > 40 ? at - 40 : 0, 120))
                    << "\nthe file: " << testing::PrintToString(near.substr(at > 40 ? at - 40 : 0, 120));
    }
    // And every file is the submitted message, with only our three fields before it.
    for (const auto& [name, content] : files) {
      EXPECT_EQ(content.rfind("Return-Path: <archive-import@reduit-demo.invalid>\nDelivered-To: " + u +
                                  "\nReceived: from ",
                              0),
                0u)
          << name;
    }
  }
  EXPECT_EQ(total, summary["sent"].get<std::size_t>());
  // Byte for byte, each delivered file is a submitted message (LF line ends, the old
  // Return-Path/Delivered-To gone) behind our Return-Path, Delivered-To and Received.
  std::multiset<std::string> submitted, delivered;
  for (const auto& e : fs::recursive_directory_iterator(src / "in")) {
    std::string parent = e.path().parent_path().filename().string();
    if (!e.is_regular_file() || (parent != "cur" && parent != "new")) continue;
    std::string m = std::regex_replace(read_file(e.path().string()), std::regex("\r\n"), "\n");
    while (m.rfind("Return-Path:", 0) == 0 || m.rfind("Delivered-To:", 0) == 0) m.erase(0, m.find('\n') + 1);
    if (m.empty() || m.back() != '\n') m += '\n';  // smtplib ends the DATA with CRLF
    submitted.insert(m);
  }
  for (const std::string& u : users) {
    for (auto [name, m] : maildir_new(s.maildir(u))) {
      m.erase(0, m.find('\n') + 1);  // Return-Path
      m.erase(0, m.find('\n') + 1);  // Delivered-To
      do {
        m.erase(0, m.find('\n') + 1);  // Received and its continuation lines
      } while (!m.empty() && m[0] == '\t');
      delivered.insert(m);
    }
  }
  EXPECT_EQ(submitted.size(), 60u);
  EXPECT_TRUE(submitted == delivered) << "a delivered message differs from what was submitted";
  EXPECT_EQ(total, 60u) << "gen-maildir writes exactly --messages message files";
}

// ---- 3. Smuggling and abuse: refused as the RFCs say; the server stays up ----

TEST(MailAbuse, BareLineEndsAndFakeDataEndsNeverEndData) {
  MailServerProcess s;
  for (const std::string& fake :
       {std::string("\n.\n"), std::string("\r.\r"), std::string("\r\n.\n"), std::string("\n.\r\n")}) {
    SCOPED_TRACE(testing::PrintToString(fake));
    RawSmtp c(s.smtp_port());
    c.reply();
    c.send(
        "EHLO attacker.example\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n");
    EXPECT_EQ(c.replies(4).back(), "354 End data with <CR><LF>.<CR><LF>");
    c.send("Subject: one\r\n\r\nfirst" + fake +
           "MAIL FROM:<evil@remote.example>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nSubject: "
           "smuggled\r\n\r\nx\r\n"
           ".\r\nQUIT\r\n");
    EXPECT_EQ(c.replies(3),
              (V{"550 5.6.0 Message refused: bare <CR> or <LF> in message content (RFC 5321 §2.3.8)",
                 "221 2.0.0 Bye", ""}));
  }
  {
    RawSmtp c(s.smtp_port());
    c.reply();
    c.send("NOOP\nHELO x\rNOOP\r\nQUIT\r\n");
    EXPECT_EQ(c.replies(3),
              (V{"500 5.5.2 Error: bare <CR> or <LF> in command (RFC 5321 §2.3.8)",
                 "500 5.5.2 Error: bare <CR> or <LF> in command (RFC 5321 §2.3.8)", "221 2.0.0 Bye"}));
  }
  EXPECT_EQ(count_entries(s.maildir("alice@example.test") + "/new"), 0u);
  EXPECT_EQ(count_entries(s.maildir("bob@example.test") + "/new"), 0u);
  expect_serves_next_client(s);
}

TEST(MailAbuse, TenMegabyteLinesAreRefusedWithoutBuffering) {
  MailServerProcess s("[limits]\nmessage_size_limit = \"20MiB\"\n");
  std::string chunk(1 << 20, 'x');
  {
    RawSmtp c(s.smtp_port());
    c.reply();
    c.send("EHLO big.example\r\n");
    c.reply();
    std::thread t([&] {
      c.send("NOOP ");
      for (int i = 0; i < 10; ++i) c.send(chunk);
      c.send("\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n");
      for (int i = 0; i < 10; ++i) c.send(chunk);
      c.send("\r\n.\r\nQUIT\r\n");
    });
    EXPECT_EQ(c.replies(6, 60000),
              (V{"500 5.5.2 Error: line too long (RFC 5321 §4.5.3.1.4: 512 octets)", "250 2.1.0 Ok",
                 "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>",
                 "500 5.5.2 Error: line too long (RFC 5321 §4.5.3.1.6: 1000 octets)", "221 2.0.0 Bye"}));
    t.join();
  }
  // The server never held the line: its peak resident size stays far below 10 MB + buffers.
  std::string status = read_file("/proc/" + std::to_string(s.pid()) + "/status");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(status, m, std::regex(R"(VmHWM:\s+(\d+) kB)")));
  EXPECT_LT(std::stoul(m[1]), 24u * 1024) << "peak RSS in kB";
  EXPECT_EQ(count_entries(s.maildir("alice@example.test") + "/new"), 0u);
  expect_serves_next_client(s);
}

TEST(MailAbuse, TenThousandRecipients) {
  MailServerProcess s;  // defaults: recipient_limit 100, overshoot 1000, error_limit 20
  RawSmtp c(s.smtp_port());
  c.reply();
  std::string in = "EHLO many.example\r\nMAIL FROM:<a@remote.example>\r\n";
  for (int i = 0; i < 10000; ++i) in += "RCPT TO:<alice@example.test>\r\n";
  std::thread t([&] { c.send(in); });
  std::map<std::string, int> counts;
  std::string last;
  c.reply();  // EHLO
  for (std::string r = c.reply(); !r.empty(); r = c.reply()) {
    ++counts[r];
    last = r;
  }
  t.join();
  EXPECT_EQ(counts, (std::map<std::string, int>{{"250 2.1.0 Ok", 1},
                                                {"250 2.1.5 Ok", 100},
                                                {"452 4.5.3 Error: too many recipients", 1020},
                                                {"421 4.7.0 mx.example.test Error: too many errors", 1}}));
  EXPECT_EQ(last, "421 4.7.0 mx.example.test Error: too many errors");
  expect_serves_next_client(s);
}

TEST(MailAbuse, SlowClientsTimeOut) {
  MailServerProcess s("[limits]\ncommand_timeout = 1\ndata_timeout = 2\n");
  auto t0 = std::chrono::steady_clock::now();
  RawSmtp idle(s.smtp_port());
  EXPECT_EQ(idle.reply(), "220 mx.example.test ESMTP reduit");
  EXPECT_EQ(idle.reply(5000), "421 4.4.2 mx.example.test Error: timeout exceeded");
  EXPECT_TRUE(idle.closed_by_server());
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(900));
  RawSmtp slow(s.smtp_port());
  slow.reply();
  slow.send("EHLO slow.example\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n");
  slow.replies(4);
  slow.send("Subject: never finished\r\n\r\nfirst line\r\n");
  EXPECT_EQ(slow.reply(6000), "421 4.4.2 mx.example.test Error: timeout exceeded");
  EXPECT_TRUE(slow.closed_by_server());
  std::string log = s.log();
  EXPECT_NE(log.find("timeout after CONNECT from [127.0.0.1]:"), std::string::npos) << log;
  EXPECT_NE(log.find("timeout after DATA from [127.0.0.1]:"), std::string::npos) << log;
  EXPECT_EQ(count_entries(s.maildir("alice@example.test") + "/new"), 0u);
  expect_serves_next_client(s);
}

TEST(MailAbuse, CommandsPipelinedBehindStartTlsAreDiscarded) {
  MailServerProcess s(tls_toml());
  nlohmann::json r = python_client("inject", s.smtp_port());
  EXPECT_EQ(r["greeting"], "220 mx.example.test ESMTP reduit");
  EXPECT_EQ(r["starttls"], "220 2.0.0 Ready to start TLS");
  EXPECT_EQ(r["after_handshake"], "<nothing>");
  EXPECT_EQ(r["mail_before_ehlo"], "503 5.5.1 Error: send HELO/EHLO first");
  EXPECT_EQ(r["ehlo"], nlohmann::json(kEhlo));
  EXPECT_EQ(r["quit"], "221 2.0.0 Bye");
  EXPECT_NE(s.log().find("discarded 39 octets pipelined after STARTTLS"), std::string::npos) << s.log();
  expect_serves_next_client(s);
}

TEST(MailAbuse, ErrorLimitConnectionRateAndMaxConnections) {
  MailServerProcess s("[limits]\nerror_limit = 3\nclient_connection_rate_limit = 4\nmax_connections = 3\n");
  {
    RawSmtp c(s.smtp_port());
    c.reply();
    c.send("FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n");
    EXPECT_EQ(c.replies(5),
              (V{"500 5.5.2 Error: command not recognized", "500 5.5.2 Error: command not recognized",
                 "500 5.5.2 Error: command not recognized",
                 "421 4.7.0 mx.example.test Error: too many errors", ""}));
  }
  {
    RawSmtp a(s.smtp_port()), b(s.smtp_port()), c(s.smtp_port());  // connections 2-4 from 127.0.0.1
    EXPECT_EQ(a.reply(), "220 mx.example.test ESMTP reduit");
    EXPECT_EQ(b.reply(), "220 mx.example.test ESMTP reduit");
    EXPECT_EQ(c.reply(), "220 mx.example.test ESMTP reduit");
    RawSmtp full(s.lmtp_port());  // LMTP has no rate limit, but max_connections counts every listener
    EXPECT_EQ(full.replies(2), (V{"421 4.7.0 mx.example.test Error: too many connections", ""}));
  }
  RawSmtp fifth(s.smtp_port());
  EXPECT_EQ(fifth.replies(2),
            (V{"421 4.7.0 mx.example.test Error: too many connections from 127.0.0.1", ""}));
  RawSmtp v6(s.smtp_port(), "::1");  // another client address, its own budget
  EXPECT_EQ(v6.reply(), "220 mx.example.test ESMTP reduit");
  std::string log = s.log();
  EXPECT_NE(log.find("too many errors after BAZ from [127.0.0.1]:"), std::string::npos) << log;
  EXPECT_NE(log.find("connection rate limit exceeded: 5 from [127.0.0.1]:"), std::string::npos) << log;
}

// ---- 4. Postfix's smtp-source: 10,000 messages over 20 sessions; SIGKILL part-way ----

namespace {
RunResult smtp_source(bool lmtp, int port, const std::string& to, int messages) {
  V argv{"/usr/sbin/smtp-source",
         "-d",
         "-s",
         "20",
         "-m",
         std::to_string(messages),
         "-l",
         "1024",
         "-M",
         "client.example",
         "-f",
         "sender@remote.example",
         "-t",
         to};
  if (lmtp) argv.push_back("-L");
  argv.push_back("127.0.0.1:" + std::to_string(port));
  return run_command(argv);
}
}  // namespace

TEST(MailLoad, SmtpSourceTenThousandMessagesOverTwentySessionsSmtpAndLmtp) {
  MailServerProcess s("[limits]\nclient_connection_rate_limit = 0\n");
  RunResult smtp = smtp_source(false, s.smtp_port(), "alice@example.test", 10000);
  EXPECT_EQ(smtp.status, 0) << smtp.err;
  RunResult lmtp = smtp_source(true, s.lmtp_port(), "bob@example.test", 10000);
  EXPECT_EQ(lmtp.status, 0) << lmtp.err;
  EXPECT_EQ(complete_files(s.maildir("alice@example.test")), 10000u);
  EXPECT_EQ(complete_files(s.maildir("bob@example.test")), 10000u);
  EXPECT_EQ(count_entries(s.maildir("alice@example.test") + "/tmp"), 0u);
  EXPECT_EQ(count_entries(s.maildir("bob@example.test") + "/tmp"), 0u);
  EXPECT_EQ(s.terminate(), 0);
}

// Every message a client saw 250 for survives SIGKILL, complete; nothing partial is in
// new/. Four tracking sessions know exactly which Message-IDs were answered 250;
// smtp-source runs its 20 sessions of the same load beside them.
TEST(MailLoad, SigkillPartWayLosesNoMessageAnswered250) {
  MailServerProcess s("[limits]\nclient_connection_rate_limit = 0\n");
  std::mutex mu;
  std::vector<std::string> acked;
  std::atomic<bool> stop{false};
  std::string body_crlf, body_lf;  // 20 lines of 99 octets
  for (int i = 0; i < 20; ++i) {
    body_crlf += std::string(99, static_cast<char>('a' + i)) + "\r\n";
    body_lf += std::string(99, static_cast<char>('a' + i)) + "\n";
  }
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&, t] {
      try {
        RawSmtp c(t % 2 ? s.lmtp_port() : s.smtp_port());
        if (c.reply().empty()) return;
        c.send(t % 2 ? "LHLO tracker.example\r\n" : "EHLO tracker.example\r\n");
        c.reply();
        for (int i = 0; !stop; ++i) {
          std::string id = "<t" + std::to_string(t) + "-" + std::to_string(i) + "@tracker.example>";
          c.send("MAIL FROM:<a@remote.example>\r\nRCPT TO:<carol@example.org>\r\nDATA\r\n");
          V r = c.replies(3);
          if (r.size() < 3 || r[2] != "354 End data with <CR><LF>.<CR><LF>") return;
          c.send("Message-ID: " + id + "\r\nSubject: tracked\r\n\r\n" + body_crlf + ".\r\n");
          std::string done = c.reply();
          if (done.rfind("250 ", 0) != 0) return;
          std::lock_guard<std::mutex> lock(mu);
          acked.push_back(id);
        }
      } catch (const std::exception&) {
        // the server died mid-reply: this message was not acknowledged
      }
    });
  }
  pid_t source = spawn_command(
      {"/usr/sbin/smtp-source", "-d", "-s", "20", "-m", "10000", "-l", "1024", "-f", "sender@remote.example",
       "-t", "alice@example.test", "127.0.0.1:" + std::to_string(s.smtp_port())},
      s.dir("source.out"), s.dir("source.err"));
  for (int i = 0; i < 3000 && count_entries(s.maildir("alice@example.test") + "/new") < 1500; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  s.kill9();
  stop = true;
  for (auto& t : clients) t.join();
  int st;
  waitpid(source, &st, 0);
  EXPECT_NE(st, 0) << "smtp-source should have seen the server die";
  // Exactly-once for every acknowledged message, all complete.
  std::map<std::string, int> found;
  std::size_t carol = complete_files(s.maildir("carol@example.org"));
  for (const auto& [name, content] : maildir_new(s.maildir("carol@example.org"))) {
    std::string id = content.substr(content.find("Message-ID: ") + 12);
    id = id.substr(0, id.find('\n'));
    ++found[id];
    EXPECT_EQ(content.substr(content.find("\n\n") + 2), body_lf) << name;
  }
  ASSERT_GT(acked.size(), 50u);
  for (const std::string& id : acked) EXPECT_EQ(found[id], 1) << id;
  EXPECT_LE(acked.size(), carol);
  EXPECT_LE(carol, acked.size() + 4) << "at most one unacknowledged message per session in flight";
  std::size_t alice = complete_files(s.maildir("alice@example.test"));
  EXPECT_GE(alice, 1500u);
  EXPECT_LT(alice, 10000u);
}

// ---- 5. Disk full: 452, nothing partial, service resumes when space returns ----

TEST(MailDiskFull, TmpfsFullAnswers452ThenResumesWhenSpaceReturns) {
  TempDir t;
  std::string root = t / "mail";
  fs::create_directories(root);
  if (mount("tmpfs", root.c_str(), "tmpfs", 0, "size=256k,mode=0700") != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs at " << root << ": " << std::strerror(errno)
                 << " (needs root with CAP_SYS_ADMIN)";
  }
  struct Unmount {
    std::string p;
    ~Unmount() { umount2(p.c_str(), MNT_DETACH); }
  } unmount{root};
  MailServerProcess s("", root);
  const std::string body(40 * 1024, 'f');
  auto send_one = [&](RawSmtp& c, bool lmtp) {
    c.send("MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\n" +
           std::string(lmtp ? "RCPT TO:<bob@example.test>\r\n" : "") + "DATA\r\n");
    c.replies(lmtp ? 4 : 3);
    std::string data;
    for (std::size_t i = 0; i < body.size(); i += 998) data += body.substr(i, 998) + "\r\n";
    c.send("Subject: fill\r\n\r\n" + data + ".\r\n");
    V r{c.reply()};
    if (lmtp) r.push_back(c.reply());
    return r;
  };
  RawSmtp c(s.smtp_port());
  c.reply();
  c.send("EHLO filler.example\r\n");
  c.reply();
  V replies;
  for (int i = 0; i < 20; ++i) {
    replies.push_back(no_queue_id(send_one(c, false)[0]));
    if (replies.back()[0] != '2') break;
  }
  ASSERT_GE(replies.size(), 2u);
  EXPECT_EQ(replies.back(), "452 4.3.1 Insufficient system storage");
  EXPECT_EQ(V(replies.begin(), replies.end() - 1), V(replies.size() - 1, "250 2.0.0 Ok: delivered as ID"));
  EXPECT_EQ(complete_files(s.maildir("alice@example.test")), replies.size() - 1);
  EXPECT_EQ(count_entries(s.maildir("alice@example.test") + "/tmp"), 0u);
  // LMTP says it per recipient.
  RawSmtp l(s.lmtp_port());
  l.reply();
  l.send("LHLO filler.example\r\n");
  l.reply();
  EXPECT_EQ(send_one(l, true), (V{"452 4.3.1 <alice@example.test> Insufficient system storage",
                                  "452 4.3.1 <bob@example.test> Insufficient system storage"}));
  EXPECT_EQ(count_entries(s.maildir("alice@example.test") + "/tmp"), 0u);
  EXPECT_EQ(count_entries(s.maildir("bob@example.test") + "/tmp"), 0u);
  // Space returns: the same session delivers again.
  ASSERT_EQ(mount("tmpfs", root.c_str(), "tmpfs", MS_REMOUNT, "size=4m,mode=0700"), 0)
      << std::strerror(errno);
  EXPECT_EQ(no_queue_id(send_one(c, false)[0]), "250 2.0.0 Ok: delivered as ID");
  EXPECT_EQ(complete_files(s.maildir("alice@example.test")), replies.size());
  EXPECT_EQ(s.terminate(), 0);
}

// ---- The process: graceful SIGTERM, --check-config, exit codes, fail2ban ----

TEST(MailServer, SigtermFinishesTheTransactionInFlightAndRefusesNewOnes) {
  MailServerProcess s;
  RawSmtp busy(s.smtp_port()), idle(s.smtp_port());
  busy.reply();
  idle.reply();
  idle.send("EHLO idle.example\r\n");
  idle.reply();
  busy.send("EHLO busy.example\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n");
  busy.replies(4);
  busy.send("Subject: in flight\r\n\r\npart one\r\n");
  kill(s.pid(), SIGTERM);
  EXPECT_EQ(idle.replies(2),
            (V{"421 4.3.2 mx.example.test Service shutting down, closing transmission channel", ""}));
  EXPECT_THROW(RawSmtp(s.smtp_port()), std::runtime_error);  // listener closed: connection refused
  busy.send("part two\r\n.\r\nNOOP\r\n");
  EXPECT_EQ(no_queue_id(busy.reply()), "250 2.0.0 Ok: delivered as ID");
  EXPECT_EQ(busy.replies(2),
            (V{"421 4.3.2 mx.example.test Service shutting down, closing transmission channel", ""}));
  // It stops by itself (a second SIGTERM here raced the end of its teardown: exit 143).
  EXPECT_EQ(s.wait(), 0);
  auto files = maildir_new(s.maildir("alice@example.test"));
  ASSERT_EQ(files.size(), 1u);
  EXPECT_NE(files.begin()->second.find("\n\npart one\npart two\n"), std::string::npos);
  EXPECT_NE(s.log().find("stopping (SIGTERM): 2 session(s) open"), std::string::npos) << s.log();
}

TEST(MailServer, CheckConfigAndExitCodes) {
  TempDir t;
  std::string good = t / "good.toml";
  write_file(good, "smtp_listen = [\"127.0.0.1:2525\"]\nmail_root = \"" + t.path() + "\"\n" +
                       mail_test_directory_toml());
  RunResult r = run_command({reduit_binary(), "mailserver", "--config", good, "--check-config"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, good + ": ok (1 listener(s), 2 domain(s), 4 user(s), 0 alias(es), STARTTLS off)\n");
  std::string bad = t / "bad.toml";
  write_file(bad, "smtp_listen = [\"127.0.0.1:2525\"]\nmail_root = \"/m\"\n" + mail_test_directory_toml() +
                      "[limits]\nerror_limt = 3\n");
  r = run_command({reduit_binary(), "mailserver", "--config", bad, "--check-config"});
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.err, "reduit: error: " + bad +
                       ":6: unknown key 'limits.error_limt' (known: message_size_limit, recipient_limit, "
                       "recipient_overshoot_limit, max_connections, client_connection_rate_limit, "
                       "client_connection_rate_time_unit, command_timeout, data_timeout, error_limit, "
                       "delivery_threads, shutdown_timeout)\n");
  r = run_command({reduit_binary(), "mailserver"});
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.err, "reduit: error: mailserver needs --config FILE (docs/MAILSERVER.md has an example)\n");
  std::string tls = t / "tls.toml";
  write_file(tls, "smtp_listen = [\"127.0.0.1:2525\"]\nmail_root = \"/m\"\n" + mail_test_directory_toml() +
                      "[tls]\ncertificate = \"" + (t / "missing.pem") + "\"\nprivate_key = \"" +
                      TestCa::get().key + "\"\n");
  r = run_command({reduit_binary(), "mailserver", "--config", tls, "--check-config"});
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.err.rfind("reduit: error: tls.certificate " + (t / "missing.pem") + ": ", 0), 0u) << r.err;
  // A port in use: exit 9 (local I/O); a missing mail_root: exit 7.
  MailServerProcess s;
  std::string busy = t / "busy.toml";
  write_file(busy, "smtp_listen = [\"127.0.0.1:" + std::to_string(s.smtp_port()) + "\"]\nmail_root = \"" +
                       t.path() + "\"\n" + mail_test_directory_toml());
  r = run_command({reduit_binary(), "mailserver", "--config", busy});
  EXPECT_EQ(r.status, 9);
  EXPECT_EQ(r.err, "reduit: error: cannot listen on smtp 127.0.0.1:" + std::to_string(s.smtp_port()) +
                       ": Address already in use\n");
  std::string noroot = t / "noroot.toml";
  write_file(noroot, "smtp_listen = [\"127.0.0.1:0\"]\nmail_root = \"" + (t / "absent") + "\"\n" +
                         mail_test_directory_toml());
  r = run_command({reduit_binary(), "mailserver", "--config", noroot});
  EXPECT_EQ(r.status, 7);
  EXPECT_EQ(r.err, "reduit: error: mail_root " + (t / "absent") + " does not exist or is not a directory\n");
  r = run_command({reduit_binary(), "mailserver", "--help"});
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("--check-config"), std::string::npos);
}

TEST(MailFail2ban, ShippedFilterMatchesEveryAbuseEventInARealLog) {
  MailServerProcess s("[limits]\ncommand_timeout = 1\n");
  {
    RawSmtp c(s.smtp_port());
    c.reply();
    c.send(
        "EHLO a\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<x@relay.example>\r\nRCPT "
        "TO:<alice@example.test>\r\n"
        "QUIT\r\n");
    EXPECT_EQ(c.replies(5).back(), "221 2.0.0 Bye");
  }
  {
    RawSmtp c(s.smtp_port(), "::1");
    c.reply();
    c.send("EHLO b\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<nobody@example.test>\r\nWHAT\r\nQUIT\r\n");
    EXPECT_EQ(c.replies(5).back(), "221 2.0.0 Bye");
  }
  {
    RawSmtp c(s.smtp_port(), "::1");
    c.reply();
    EXPECT_EQ(c.reply(), "421 4.4.2 mx.example.test Error: timeout exceeded");
  }
  EXPECT_EQ(s.terminate(), 0);
  RunResult r = run_command({"/usr/bin/fail2ban-regex", "-v", s.dir("server.log"),
                             source_dir() + "/docs/fail2ban/reduit-mailserver.conf"});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m,
                                std::regex(R"(Lines: (\d+) lines, 0 ignored, (\d+) matched, (\d+) missed)")))
      << r.out;
  EXPECT_EQ(m[2], "4") << r.out;  // relay, unknown user, unknown command, timeout
  EXPECT_NE(r.out.find("|      127.0.0.1  "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("|      ::1  "), std::string::npos) << r.out;
  // Polite traffic never matches.
  EXPECT_EQ(std::stoi(m[1]) - 4, std::stoi(m[3]));
}
