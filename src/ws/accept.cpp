#include <kws/accept.hpp>

#include <boost/asio/ssl/context.hpp>
#include <boost/system/system_error.hpp>

namespace kws {

const std::string* http_request_info::header(std::string_view name) const {
  for (const auto& [n, v] : headers)
    if (n == name) return &v;
  return nullptr;
}

std::shared_ptr<boost::asio::ssl::context> make_server_tls_context(const std::string& cert_chain_file,
                                                                   const std::string& private_key_file) {
  namespace ssl = boost::asio::ssl;
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                   ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
  boost::system::error_code ec;
  ctx->use_certificate_chain_file(cert_chain_file, ec);
  if (ec) throw boost::system::system_error(ec, "TLS certificate " + cert_chain_file);
  ctx->use_private_key_file(private_key_file, ssl::context::pem, ec);
  if (ec) throw boost::system::system_error(ec, "TLS private key " + private_key_file);
  return ctx;
}

}  // namespace kws
