// Certificate rotation for the servers' TLS contexts: a context made by make_server_tls_context hands each
// handshake, at its ClientHello, to the context most recently loaded by reload_server_tls_context. OpenSSL
// copies a context's certificate, key and CA settings into a connection when it switches (SSL_set_SSL_CTX, as
// SNI-based servers do), so connections already open keep what they started with, and a context stays alive
// while a connection uses it.
#include <kws/accept.hpp>
#include <kws/detail/shared_slot.hpp>
#include <kws/tls_socket.hpp>

#include <boost/asio/ssl/context.hpp>
#include <boost/system/system_error.hpp>

#include <openssl/ssl.h>

#include <memory>

namespace kws {
namespace {

namespace ssl = boost::asio::ssl;

/// What a served context hands its handshakes to: null until the first reload.
struct reload_slot {
  detail::shared_slot<ssl::context> current;
};

void free_slot(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
  delete static_cast<reload_slot*>(ptr);
}

int slot_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, free_slot);
  return index;
}

reload_slot* slot_of(SSL_CTX* ctx) {
  return static_cast<reload_slot*>(SSL_CTX_get_ex_data(ctx, slot_index()));
}

// At the ClientHello, before a certificate is chosen; the callback's documented place for SSL_set_SSL_CTX.
int on_client_hello(SSL* s, int* alert, void* arg) {
  const auto current = static_cast<reload_slot*>(arg)->current.load();
  if (current && !SSL_set_SSL_CTX(s, current->native_handle())) {
    *alert = SSL_AD_INTERNAL_ERROR;
    return SSL_CLIENT_HELLO_ERROR;
  }
  return SSL_CLIENT_HELLO_SUCCESS;
}

}  // namespace

namespace detail {

void make_reloadable(ssl::context& server) {
  auto* slot = new reload_slot;
  if (slot_index() < 0 || !SSL_CTX_set_ex_data(server.native_handle(), slot_index(), slot)) {
    delete slot;
    throw boost::system::system_error(make_error_code(boost::system::errc::not_enough_memory),
                                      "TLS context for reloading");
  }
  SSL_CTX_set_client_hello_cb(server.native_handle(), on_client_hello, slot);
}

}  // namespace detail

void reload_server_tls_context(ssl::context& server, const std::string& cert_chain_file,
                               const std::string& private_key_file, const std::string& client_ca_file) {
  auto* slot = slot_of(server.native_handle());
  if (!slot) {
    throw boost::system::system_error(make_error_code(boost::system::errc::invalid_argument),
                                      "TLS context not made by make_server_tls_context");
  }
  // Loaded whole before anything changes: a file that fails leaves the served material as it was.
  auto fresh = detail::load_server_tls_context(cert_chain_file, private_key_file);
  if (!client_ca_file.empty()) require_client_certificates(*fresh, client_ca_file);
  slot->current.store(std::move(fresh));
}

}  // namespace kws
