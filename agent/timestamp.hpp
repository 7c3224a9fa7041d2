// agent/timestamp.hpp — RFC 3161 time stamps for the audit log and reports.
//
// A time-stamp request (RFC 3161 §2.4.1: version 1, SHA-256 message imprint, a
// random 64-bit nonce, certReq = true) is POSTed over HTTP (§3.4,
// application/timestamp-query) to the configured TSA; the TimeStampResp is checked
// (status granted, imprint and nonce as sent, signature chaining to the configured
// CA) and kept as DER. `openssl ts -verify -data FILE -in TSR -CAfile CA` accepts
// what is kept. OpenSSL's TS API does the ASN.1 and CMS work, libcurl the HTTP.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace reduit {

struct TimestampInfo {
  std::int64_t time_ns = 0;  // genTime (§2.4.2), Unix ns
  std::string serial;        // serialNumber, decimal
  std::string tsa;           // the TSA's certificate subject (one line)
};

/// Asks `url` for a time stamp over SHA-256(`data`); `ca_file` (PEM) is the trust
/// anchor its signature must chain to ("" = check the response's structure, imprint
/// and nonce only, not the signature). Returns the DER TimeStampResp.
/// Throws Error(kUnreachable) when the TSA cannot be reached or answers with an
/// HTTP error, kVerify when the response is not granted, malformed, for another
/// imprint or nonce, or not signed by a certificate chaining to `ca_file`.
std::string request_timestamp(const std::string& url, std::string_view data, const std::string& ca_file,
                              long timeout_s = 30);

/// Verifies a DER TimeStampResp over SHA-256(`data`) against `ca_file` (PEM);
/// returns its time, serial and TSA. Throws Error(kVerify) naming what failed.
TimestampInfo verify_timestamp(std::string_view tsr, std::string_view data, const std::string& ca_file);

}  // namespace reduit
