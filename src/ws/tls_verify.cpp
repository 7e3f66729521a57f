#include "ws/tls_verify.hpp"

#include <boost/asio/error.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/beast/core/error.hpp>

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
                        const std::string& host) {
  const auto result = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
  if (result != X509_V_OK) {
    return who + "'s TLS certificate was refused: " + X509_verify_cert_error_string(result) + " (" + host +
           ")";
  }
  if (ec == boost::beast::error::timeout || ec == boost::asio::error::timed_out)
    return who + " did not finish the TLS handshake within the handshake timeout (" + host + ")";
  return "the TLS handshake with " + who + " failed: " + ec.message() + " (" + host + ")";
}

}  // namespace kws::detail
