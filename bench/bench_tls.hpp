// The byte transport of kws_loadgen and kws_tcp_echo: a non-blocking socket, plain or under OpenSSL. Both
// programs are one thread around epoll; this only maps send/recv and SSL_write/SSL_read onto one contract, so
// that their loops stay the same with and without TLS. The TLS handshake happens inside the first
// SSL_read/SSL_write (the connect or accept state is set when the connection is made).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <string>

namespace kws_bench {

// The last OpenSSL errors of this thread, for a message.
inline std::string tls_errors() {
  std::string out;
  while (const unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "no OpenSSL error queued" : out;
}

// A client context that trusts ca_file (empty: no verification, the benchmark's own certificate is the only
// one on the path) or a server context that presents cert_file/key_file. nullptr with `error` set on failure.
inline SSL_CTX* make_tls_context(bool server, const std::string& ca_file, const std::string& cert_file,
                                 const std::string& key_file, std::string& error) {
  SSL_CTX* ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (!ctx) {
    error = "SSL_CTX_new: " + tls_errors();
    return nullptr;
  }
  // Partial writes as with send(): a write may take part of the buffer, and the rest goes later from the same
  // buffer, which may have moved by then (a std::vector that grew).
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  // Read what the socket holds, several records at once, instead of two reads (header, body) per record. The
  // callers read until SSL_read wants more, so nothing waits in OpenSSL's buffer unseen by epoll.
  SSL_CTX_set_read_ahead(ctx, 1);
  SSL_CTX_set_default_read_buffer_len(ctx, 64 * 1024);
  if (server) {
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
      error = "cannot load " + cert_file + " / " + key_file + ": " + tls_errors();
      SSL_CTX_free(ctx);
      return nullptr;
    }
  } else if (!ca_file.empty()) {
    if (SSL_CTX_load_verify_locations(ctx, ca_file.c_str(), nullptr) != 1) {
      error = "cannot load " + ca_file + ": " + tls_errors();
      SSL_CTX_free(ctx);
      return nullptr;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  }
  return ctx;
}

// One connection's transport. `ssl` is null for plain TCP.
struct transport {
  int fd = -1;
  SSL* ssl = nullptr;
  // TLS needs the socket writable before the last read or write can go on (a handshake message, a
  // renegotiation): the caller keeps EPOLLOUT registered while this is set and retries both directions.
  bool tls_wants_write = false;

  // Starts TLS on a connected socket; `host` (may be empty) is sent as SNI and checked against the
  // certificate when the context verifies.
  bool start_tls(SSL_CTX* ctx, bool server, const std::string& host, std::string& error) {
    ssl = SSL_new(ctx);
    if (!ssl || SSL_set_fd(ssl, fd) != 1) {
      error = "SSL_new: " + tls_errors();
      return false;
    }
    if (server) {
      SSL_set_accept_state(ssl);
    } else {
      SSL_set_connect_state(ssl);
      in6_addr ip{};
      const bool literal =
          ::inet_pton(AF_INET, host.c_str(), &ip) == 1 || ::inet_pton(AF_INET6, host.c_str(), &ip) == 1;
      if (literal) {
        // No SNI for an address (RFC 6066, 3); the certificate must name it as an IP address.
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host.c_str());
      } else if (!host.empty()) {
        SSL_set_tlsext_host_name(ssl, host.c_str());
        SSL_set1_host(ssl, host.c_str());
      }
    }
    return true;
  }

  // As send()/recv(): bytes moved (> 0), 0 when the peer closed (recv only), -1 with errno. EAGAIN means
  // "wait for the socket" (tls_wants_write says which way for TLS); EPROTO means a TLS error, see
  // tls_errors().
  ssize_t send(const void* p, std::size_t n) {
    if (!ssl) return ::send(fd, p, n, MSG_NOSIGNAL);
    tls_wants_write = false;
    std::size_t done = 0;
    const int r = SSL_write_ex(ssl, p, n, &done);
    return r == 1 ? static_cast<ssize_t>(done) : fail(r);
  }

  ssize_t recv(void* p, std::size_t n) {
    if (!ssl) return ::recv(fd, p, n, 0);
    tls_wants_write = false;
    std::size_t done = 0;
    const int r = SSL_read_ex(ssl, p, n, &done);
    return r == 1 ? static_cast<ssize_t>(done) : fail(r);
  }

  void close() {
    if (ssl) SSL_free(ssl);
    ssl = nullptr;
    if (fd >= 0) ::close(fd);
    fd = -1;
  }

 private:
  ssize_t fail(int r) {
    switch (SSL_get_error(ssl, r)) {
      case SSL_ERROR_WANT_READ:
        errno = EAGAIN;
        return -1;
      case SSL_ERROR_WANT_WRITE:
        tls_wants_write = true;
        errno = EAGAIN;
        return -1;
      case SSL_ERROR_ZERO_RETURN:
        return 0;
      case SSL_ERROR_SYSCALL:
        if (errno == 0) errno = ECONNRESET;
        return -1;
      default:
        errno = EPROTO;
        return -1;
    }
  }
};

}  // namespace kws_bench
