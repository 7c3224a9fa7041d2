#include "agent/timestamp.hpp"

#include <curl/curl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ts.h>
#include <openssl/x509.h>

#include <ctime>
#include <memory>

#include "vault/error.hpp"

namespace reduit {

namespace {

template <typename T, void (*F)(T*)>
struct Free {
  void operator()(T* p) const { F(p); }
};
using ReqPtr = std::unique_ptr<TS_REQ, Free<TS_REQ, TS_REQ_free>>;
using RespPtr = std::unique_ptr<TS_RESP, Free<TS_RESP, TS_RESP_free>>;
using CtxPtr = std::unique_ptr<TS_VERIFY_CTX, Free<TS_VERIFY_CTX, TS_VERIFY_CTX_free>>;
using ImprintPtr = std::unique_ptr<TS_MSG_IMPRINT, Free<TS_MSG_IMPRINT, TS_MSG_IMPRINT_free>>;
using IntPtr = std::unique_ptr<ASN1_INTEGER, Free<ASN1_INTEGER, ASN1_INTEGER_free>>;

std::string openssl_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    out += (out.empty() ? "" : "; ") + std::string(buf);
  }
  return out.empty() ? "no detail" : out;
}

std::string digest_of(std::string_view data) {
  std::string d(SHA256_DIGEST_LENGTH, '\0');
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(),
         reinterpret_cast<unsigned char*>(d.data()));
  return d;
}

RespPtr parse_response(std::string_view der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  RespPtr resp(d2i_TS_RESP(nullptr, &p, static_cast<long>(der.size())));
  if (!resp)
    throw Error(ErrorCode::kVerify, "the time stamp is not an RFC 3161 TimeStampResp: " + openssl_errors());
  TS_STATUS_INFO* si = TS_RESP_get_status_info(resp.get());
  long status = ASN1_INTEGER_get(TS_STATUS_INFO_get0_status(si));
  if (status != 0 && status != 1)  // granted, grantedWithMods (§2.4.2)
    throw Error(ErrorCode::kVerify,
                "the TSA refused the time stamp (PKIStatus " + std::to_string(status) + ")");
  if (!TS_RESP_get_token(resp.get()))
    throw Error(ErrorCode::kVerify, "the time-stamp response holds no token");
  return resp;
}

// Checks signature (against ca_file when given), version and imprint; the nonce too
// when `nonce` is set.
void verify_response(TS_RESP* resp, const std::string& digest, const std::string& ca_file,
                     const ASN1_INTEGER* nonce) {
  CtxPtr ctx(TS_VERIFY_CTX_new());
  int flags = TS_VFY_VERSION | TS_VFY_IMPRINT;
  if (nonce) {
    // OpenSSL 3.0 has no public setter for the context's nonce: compare it here.
    const ASN1_INTEGER* got = TS_TST_INFO_get_nonce(TS_RESP_get_tst_info(resp));
    if (!got || ASN1_INTEGER_cmp(got, nonce) != 0)
      throw Error(ErrorCode::kVerify,
                  "the time stamp does not carry the request's nonce (a replayed response?)");
  }
  if (!ca_file.empty()) {
    flags |= TS_VFY_SIGNATURE;
    X509_STORE* store = X509_STORE_new();
    if (X509_STORE_load_file(store, ca_file.c_str()) != 1) {
      X509_STORE_free(store);
      throw Error(ErrorCode::kUsage,
                  "cannot read the TSA CA certificates from " + ca_file + ": " + openssl_errors());
    }
    TS_VERIFY_CTX_set_store(ctx.get(), store);  // the context owns it
  }
  auto* imprint = static_cast<unsigned char*>(OPENSSL_malloc(digest.size()));
  std::copy(digest.begin(), digest.end(), imprint);
  TS_VERIFY_CTX_set_imprint(ctx.get(), imprint, static_cast<long>(digest.size()));  // owns it
  TS_VERIFY_CTX_set_flags(ctx.get(), flags);
  if (TS_RESP_verify_response(ctx.get(), resp) != 1)
    throw Error(ErrorCode::kVerify, "the time stamp does not verify: " + openssl_errors());
}

size_t collect(char* p, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(p, size * n);
  return size * n;
}

}  // namespace

std::string request_timestamp(const std::string& url, std::string_view data, const std::string& ca_file,
                              long timeout_s) {
  std::string digest = digest_of(data);
  ReqPtr req(TS_REQ_new());
  TS_REQ_set_version(req.get(), 1);
  ImprintPtr mi(TS_MSG_IMPRINT_new());
  X509_ALGOR* alg = X509_ALGOR_new();
  X509_ALGOR_set0(alg, OBJ_nid2obj(NID_sha256), V_ASN1_NULL, nullptr);
  TS_MSG_IMPRINT_set_algo(mi.get(), alg);
  X509_ALGOR_free(alg);  // set_algo copies
  TS_MSG_IMPRINT_set_msg(mi.get(), reinterpret_cast<unsigned char*>(digest.data()),
                         static_cast<int>(digest.size()));
  TS_REQ_set_msg_imprint(req.get(), mi.get());  // copies
  unsigned char nonce_bytes[8];
  RAND_bytes(nonce_bytes, sizeof nonce_bytes);
  nonce_bytes[0] &= 0x7f;  // a positive INTEGER
  BIGNUM* bn = BN_bin2bn(nonce_bytes, sizeof nonce_bytes, nullptr);
  IntPtr nonce(BN_to_ASN1_INTEGER(bn, nullptr));
  BN_free(bn);
  TS_REQ_set_nonce(req.get(), nonce.get());  // copies
  TS_REQ_set_cert_req(req.get(), 1);
  unsigned char* der = nullptr;
  int der_len = i2d_TS_REQ(req.get(), &der);
  if (der_len <= 0)
    throw Error(ErrorCode::kInternal, "cannot encode the time-stamp request: " + openssl_errors());
  std::string query(reinterpret_cast<char*>(der), static_cast<std::size_t>(der_len));
  OPENSSL_free(der);

  CURL* curl = curl_easy_init();
  if (!curl) throw Error(ErrorCode::kInternal, "curl_easy_init failed");
  std::string reply;
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/timestamp-query");
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, query.data());
  curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(query.size()));
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &reply);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, timeout_s);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_FAILONERROR, 1L);
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  CURLcode rc = curl_easy_perform(curl);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  if (rc != CURLE_OK)
    throw Error(ErrorCode::kUnreachable,
                "time-stamping authority " + url + " did not answer: " + curl_easy_strerror(rc));
  RespPtr resp = parse_response(reply);
  verify_response(resp.get(), digest, ca_file, nonce.get());
  return reply;
}

TimestampInfo verify_timestamp(std::string_view tsr, std::string_view data, const std::string& ca_file) {
  RespPtr resp = parse_response(tsr);
  verify_response(resp.get(), digest_of(data), ca_file, nullptr);
  TimestampInfo info;
  TS_TST_INFO* tst = TS_RESP_get_tst_info(resp.get());
  const ASN1_GENERALIZEDTIME* gt = TS_TST_INFO_get_time(tst);
  tm t{};
  if (gt && ASN1_TIME_to_tm(gt, &t) == 1) info.time_ns = static_cast<std::int64_t>(timegm(&t)) * 1000000000;
  if (const ASN1_INTEGER* serial = TS_TST_INFO_get_serial(tst)) {
    BIGNUM* bn = ASN1_INTEGER_to_BN(serial, nullptr);
    char* dec = BN_bn2dec(bn);
    info.serial = dec;
    OPENSSL_free(dec);
    BN_free(bn);
  }
  if (PKCS7* token = TS_RESP_get_token(resp.get())) {
    STACK_OF(PKCS7_SIGNER_INFO)* sinfos = PKCS7_get_signer_info(token);
    STACK_OF(X509)* certs = token->d.sign ? token->d.sign->cert : nullptr;
    if (sinfos && sk_PKCS7_SIGNER_INFO_num(sinfos) == 1 && certs) {
      PKCS7_SIGNER_INFO* si = sk_PKCS7_SIGNER_INFO_value(sinfos, 0);
      X509* signer =
          X509_find_by_issuer_and_serial(certs, si->issuer_and_serial->issuer, si->issuer_and_serial->serial);
      if (signer) {
        char buf[512];
        X509_NAME_oneline(X509_get_subject_name(signer), buf, sizeof buf);
        info.tsa = buf;
      }
    }
  }
  return info;
}

}  // namespace reduit
