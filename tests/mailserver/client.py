#!/usr/bin/env python3
"""tests/mailserver/client.py -- Python smtplib and ssl against `reduit mailserver`.

Each scenario prints one JSON document on stdout with what the server answered;
the GoogleTest side (tests/mailserver_e2e_test.cpp) asserts the exact values.

  verbs  --port P --ca CA.pem   every verb, alias fan-out, relay/unknown, SIZE,
                                STARTTLS (verified against the test CA), SMTPUTF8
  tls    --port P --ca CA.pem   protocol versions and ciphers the server accepts
  inject --port P --ca CA.pem   STARTTLS with a command pipelined behind it
"""
import argparse
import json
import smtplib
import socket
import ssl


def verbs(a):
    out = []

    def rec(label, resp):
        code, msg = resp
        out.append([label, code, msg.decode("utf-8", "replace") if isinstance(msg, bytes) else msg])

    ctx = ssl.create_default_context(cafile=a.ca)
    s = smtplib.SMTP()
    rec("connect", s.connect("127.0.0.1", a.port))
    s._host = "127.0.0.1"  # what starttls() checks the certificate against (its IP SAN)
    rec("helo", s.helo("client.example"))
    rec("ehlo", s.ehlo("client.example"))
    rec("noop", s.noop())
    rec("vrfy", s.verify("alice"))
    rec("help", s.docmd("HELP"))
    rec("mail", s.mail("sender@remote.example"))
    rec("rset", s.rset())
    rec("mail", s.mail("sender@remote.example"))
    rec("rcpt-relay", s.rcpt("someone@remote.example"))
    rec("rcpt-unknown", s.rcpt("nobody@example.test"))
    rec("rcpt-alias", s.rcpt("team@example.test"))
    rec("data", s.data(b"Subject: via smtplib\r\nMessage-ID: <smtplib-1@client.example>\r\n\r\nhello\r\n"))
    rec("mail-size", s.mail("sender@remote.example", ["SIZE=999999999"]))
    rec("starttls", s.starttls(context=ctx))
    out.append(["tls-version", 0, s.sock.version()])
    rec("ehlo-tls", s.ehlo("client.example"))
    rec("mail-utf8", s.mail("jörg@remote.example", ["SMTPUTF8", "BODY=8BITMIME"]))
    rec("rcpt-utf8", s.rcpt("dörte@example.test"))
    rec("data-utf8", s.data("Subject: Grüße\r\nMessage-ID: <smtplib-2@client.example>\r\n\r\nÄpfel\r\n".encode()))
    rec("quit", s.quit())
    print(json.dumps(out, ensure_ascii=False))


def tls(a):
    out = {}

    def attempt(name, configure):
        ctx = ssl.create_default_context(cafile=a.ca)
        configure(ctx)
        s = smtplib.SMTP("127.0.0.1", a.port)
        try:
            s.starttls(context=ctx)
            out[name] = [s.sock.version(), s.sock.cipher()[0]]
            s.quit()
        except (ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError) as e:
            out[name] = ["refused", type(e).__name__]

    def v13(ctx):
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3

    def v12(ctx):
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2

    def rsa_kx(ctx):  # static RSA key exchange: no forward secrecy
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("AES128-GCM-SHA256:AES256-SHA256:AES128-SHA")

    def v11(ctx):
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("ALL:@SECLEVEL=0")

    attempt("tls1.3", v13)
    attempt("tls1.2", v12)
    attempt("tls1.2-rsa-kx", rsa_kx)
    attempt("tls1.1", v11)
    print(json.dumps(out))


def inject(a):
    """CVE-2011-0411: plaintext sent with STARTTLS must not be answered after TLS."""
    out = {}
    sock = socket.create_connection(("127.0.0.1", a.port), timeout=10)
    f = sock.makefile("rb")

    def reply(stream):
        lines = []
        while True:
            line = stream.readline().decode().rstrip("\r\n")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return lines

    out["greeting"] = reply(f)[0]
    sock.sendall(b"EHLO client.example\r\n")
    reply(f)
    sock.sendall(b"STARTTLS\r\nRSET\r\nMAIL FROM:<evil@remote.example>\r\n")
    out["starttls"] = reply(f)[0]
    ctx = ssl.create_default_context(cafile=a.ca)
    tls_sock = ctx.wrap_socket(sock, server_hostname="mx.example.test")
    tls_sock.settimeout(1.0)
    try:
        data = tls_sock.recv(4096)
        out["after_handshake"] = data.decode()
    except socket.timeout:
        out["after_handshake"] = "<nothing>"
    tls_sock.settimeout(10)
    tf = tls_sock.makefile("rb")
    tls_sock.sendall(b"MAIL FROM:<a@remote.example>\r\n")
    out["mail_before_ehlo"] = reply(tf)[0]
    tls_sock.sendall(b"EHLO client.example\r\n")
    out["ehlo"] = reply(tf)
    tls_sock.sendall(b"QUIT\r\n")
    out["quit"] = reply(tf)[0]
    print(json.dumps(out))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("scenario", choices=["verbs", "tls", "inject"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca", required=True)
    a = p.parse_args()
    {"verbs": verbs, "tls": tls, "inject": inject}[a.scenario](a)


if __name__ == "__main__":
    main()
