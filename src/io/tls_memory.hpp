// Per-connection TLS memory, set on every context the library makes (server and client).
#pragma once

#include <boost/asio/ssl/context.hpp>

#include <openssl/ssl.h>

namespace kws::detail {

// OpenSSL gives a connection's record buffers (about 34 KiB, read and write) back while nothing is buffered
// in them and takes them again for the next record: an idle connection holds none.
inline void release_idle_tls_buffers(boost::asio::ssl::context& ctx) {
  SSL_CTX_set_mode(ctx.native_handle(), SSL_MODE_RELEASE_BUFFERS);
}

}  // namespace kws::detail
