#include "ws/tls_verify.hpp"

#include <boost/asio/error.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/beast/core/error.hpp>

#include <boost/system/system_error.hpp>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

namespace kws::detail {

namespace {

bool is_ip_literal(const std::string& host) {
  boost::system::error_code ec;
  boost::asio::ip::make_address(host, ec);
  return !ec;
}

boost::system::error_code last_ssl_error() {
  return {static_cast<int>(::ERR_get_error()), boost::asio::error::get_ssl_category()};
}

}  // namespace

boost::system::error_code verify_server(SSL* ssl, const std::string& host, bool insecure) {
  const bool ip = is_ip_literal(host);
  if (!ip && !SSL_set_tlsext_host_name(ssl, host.c_str())) return last_ssl_error();
  if (insecure) {
    SSL_set_verify(ssl, SSL_VERIFY_NONE, SSL_get_verify_callback(ssl));
    return {};
  }
  SSL_set_verify(ssl, SSL_VERIFY_PEER, SSL_get_verify_callback(ssl));
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  const int named = ip ? X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str())
                       : X509_VERIFY_PARAM_set1_host(param, host.c_str(), 0);
  if (named != 1) return last_ssl_error();
  return {};
}

std::string tls_failure(SSL* ssl, const boost::system::error_code& ec, const std::string& who,
                        const std::string& host, const std::string& timeout_name) {
  const auto result = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
  if (result != X509_V_OK) {
    return who + "'s TLS certificate was refused: " + X509_verify_cert_error_string(result) + " (" + host +
           ")";
  }
  if (ec == boost::beast::error::timeout || ec == boost::asio::error::timed_out)
    return who + " did not finish the TLS handshake within " + timeout_name + " (" + host + ")";
  return "the TLS handshake with " + who + " failed: " + ec.message() + " (" + host + ")";
}

void use_certificate_files(SSL_CTX* ctx, const std::string& cert_file, const std::string& key_file) {
  // The first queued error is the reason; the queue is left empty for the next TLS operation.
  const auto fail = [](const std::string& what) {
    boost::system::error_code ec = last_ssl_error();
    if (!ec) ec = boost::asio::error::invalid_argument;
    ::ERR_clear_error();
    throw boost::system::system_error(ec, what);
  };
  ::ERR_clear_error();
  if (!cert_file.empty() && SSL_CTX_use_certificate_chain_file(ctx, cert_file.c_str()) != 1)
    fail("TLS certificate " + cert_file);
  const std::string mismatch =
      "TLS private key " + key_file + " does not belong to the certificate in " + cert_file;
  if (!key_file.empty() && SSL_CTX_use_PrivateKey_file(ctx, key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    // OpenSSL 3 refuses a key that is not the certificate's as it loads it.
    fail(ERR_GET_REASON(::ERR_peek_error()) == X509_R_KEY_VALUES_MISMATCH && !cert_file.empty()
             ? mismatch
             : "TLS private key " + key_file);
  }
  // Checked again in case it did not.
  if (!cert_file.empty() && !key_file.empty() && SSL_CTX_check_private_key(ctx) != 1) fail(mismatch);
}

std::string peer_subject(SSL* ssl) {
  X509* cert = ssl ? SSL_get1_peer_certificate(ssl) : nullptr;
  if (!cert) return {};
  std::string out;
  if (BIO* bio = BIO_new(BIO_s_mem())) {
    if (X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) >= 0) {
      char* data = nullptr;
      const long n = BIO_get_mem_data(bio, &data);
      if (n > 0) out.assign(data, static_cast<std::size_t>(n));
    }
    BIO_free(bio);
  }
  X509_free(cert);
  return out;
}

}  // namespace kws::detail
