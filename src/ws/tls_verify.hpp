// The client side's certificate checks for every TLS connection the library opens (the dialer's wss://, the
// relay's TLS over TCP), the sentence that says why a handshake failed, loading a certificate and its key,
// and reading the peer's certificate subject: one place, one wording.
#pragma once

#include <boost/system/error_code.hpp>

#include <openssl/ssl.h>

#include <string>

namespace kws::detail {

/// SNI for `host` (unless it is an IP address), and unless `insecure`, peer verification with OpenSSL
/// checking the host name (or IP address) as part of the chain, so that a mismatch is reported as such
/// ("hostname mismatch") rather than as an unspecified failure of a verify callback. Before the handshake.
boost::system::error_code verify_server(SSL* ssl, const std::string& host, bool insecure);

/// Why a TLS handshake with `who` ("the broker") at `host` failed, for people: the verification result when
/// the certificate was refused (expired, self-signed, another host's), which OpenSSL's error ("certificate
/// verify failed") does not say; a timeout; or the handshake's own error (an alert, a peer that does not
/// speak TLS).
/// `timeout_name`: the bound as the sentence names it.
std::string tls_failure(SSL* ssl, const boost::system::error_code& ec, const std::string& who,
                        const std::string& host, const std::string& timeout_name = "the handshake timeout");

/// Loads a PEM certificate chain and a PEM private key into `ctx` (each only when its path is not empty) and,
/// with both, checks that the key is the certificate's. Throws boost::system::system_error whose message
/// names the file ("TLS certificate FILE: ...", "TLS private key FILE: ...").
void use_certificate_files(SSL_CTX* ctx, const std::string& cert_file, const std::string& key_file);

/// The subject of the certificate the peer presented, RFC 2253 ("CN=client,O=Example"); empty when none.
std::string peer_subject(SSL* ssl);

}  // namespace kws::detail
