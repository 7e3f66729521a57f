// SASL on the dev broker's TCP listener, with no I/O: the users file, the server side of PLAIN (RFC 4616) and
// SCRAM-SHA-256/512 (RFC 5802, RFC 7677), and the gate that stands in front of the broker on one connection
// until its client has authenticated, as Kafka's SaslServerAuthenticator does (KIP-43 SaslHandshake, KIP-152
// SaslAuthenticate, and the raw token framing that follows SaslHandshake v0). Crypto is OpenSSL's.
#pragma once

#include <kws/kafka/sasl.hpp>
#include <kws/kafka/wire.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kws::devbroker::sasl {

using bytes_view = kafka::bytes_view;
using byte_vector = std::vector<unsigned char>;

// The mechanisms' names and the SCRAM primitives are the library's (kws/kafka/sasl.hpp), shared with the
// gateway's client side.
using kafka::sasl::mechanism;
using kafka::sasl::mechanism_name;
using kafka::sasl::parse_mechanism;
using kafka::sasl::scram_hash;
/// The mechanisms the broker enables, in the order SaslHandshake lists them.
inline constexpr mechanism enabled_mechanisms[] = {mechanism::plain, mechanism::scram_sha_256,
                                                   mechanism::scram_sha_512};

/// What a SCRAM server stores per user (RFC 5802 section 3): never the password itself.
struct scram_credential {
  byte_vector salt;
  int iterations = 4096;
  byte_vector stored_key;  ///< H(HMAC(SaltedPassword, "Client Key"))
  byte_vector server_key;  ///< HMAC(SaltedPassword, "Server Key")
};

/// SaltedPassword = PBKDF2-HMAC(password, salt, iterations), then the two keys.
scram_credential make_scram_credential(scram_hash h, std::string_view password, bytes_view salt,
                                       int iterations);

/// The users of --sasl-users: name and password per user, with SCRAM credentials derived at load (a random
/// 16-byte salt per user and hash, 4096 iterations, Kafka's minimum for SCRAM-SHA-256/512).
class users {
 public:
  struct user {
    std::string password;
    scram_credential sha256;
    scram_credential sha512;
  };

  /// `user:password` per line (the first ':' separates them, so a password may contain ':'); blank lines and
  /// lines starting with '#' are skipped, a trailing '\r' is dropped. Throws std::invalid_argument naming the
  /// line for a line without ':', an empty user name or password, or a user given twice.
  static users parse(std::string_view text);
  /// parse() of a file's contents; throws std::runtime_error when it cannot be read.
  static users load(const std::string& file);

  const user* find(std::string_view name) const;
  std::size_t size() const noexcept { return users_.size(); }

 private:
  std::map<std::string, user, std::less<>> users_;
};

/// One step of a mechanism's exchange.
struct step {
  enum class status {
    challenge,  ///< send `token`, the exchange goes on
    done,       ///< authenticated; send `token` (the final server message, empty for PLAIN)
    failed,     ///< authentication failed
  };
  status what = status::failed;
  byte_vector token;
  /// failed: what the client is told (SaslAuthenticate's error message, in Kafka's words).
  std::string client_message;
  /// failed: the cause for the broker's log (a user name at most, never a password).
  std::string reason;
};

/// The server side of one SCRAM exchange (RFC 5802 section 5): client-first-message, answered with the
/// server-first-message; client-final-message, answered with the server-final-message once the proof checks
/// out (compared in constant time). Channel binding is not offered (gs2 flag "n" or "y"); extensions in the
/// client's messages are ignored; user names are compared as sent (no SASLprep).
class scram_server {
 public:
  /// nullptr: no such user.
  using credential_lookup = std::function<const scram_credential*(std::string_view user)>;

  /// `server_nonce`: printable characters other than ',' (see make_nonce()).
  scram_server(scram_hash h, std::string mechanism_name, credential_lookup lookup, std::string server_nonce);

  step next(bytes_view client_message);
  /// The authenticated user once next() has returned done.
  const std::string& user() const noexcept { return user_; }

 private:
  step fail(std::string reason);
  step first(std::string_view message);
  step final(std::string_view message);

  enum class state { expect_first, expect_final, done, failed };
  scram_hash hash_;
  std::string mechanism_name_;
  credential_lookup lookup_;
  std::string server_nonce_;
  state state_ = state::expect_first;
  std::string user_;
  std::string gs2_header_;
  std::string client_first_bare_;
  std::string server_first_;
  std::string nonce_;
  const scram_credential* credential_ = nullptr;
};

using kafka::sasl::make_nonce;

/// The server side of one exchange of any enabled mechanism against `u` (which must outlive it).
class authenticator {
 public:
  authenticator(const users& u, mechanism m);
  step next(bytes_view client_token);
  const std::string& user() const noexcept;
  mechanism which() const noexcept { return mechanism_; }

 private:
  const users& users_;
  mechanism mechanism_;
  std::optional<scram_server> scram_;
  std::string plain_user_;
  bool used_ = false;
};

/// The largest frame a connection may send before it has authenticated: Kafka's default
/// sasl.server.max.receive.size (512 KiB).
inline constexpr std::size_t max_unauthenticated_frame_bytes = 512u * 1024u;

/// What the connection does with a frame the gate has seen.
struct gate_result {
  enum class action {
    pass,               ///< hand the frame to the broker
    respond,            ///< write `response` (a whole frame, size header included), read the next
    respond_and_close,  ///< write `response`, then close; `reason` says why
    close,              ///< close without an answer; `reason` says why
  };
  action what = action::pass;
  byte_vector response;
  std::string reason;
  /// A line worth logging at info level when the frame went through (a client authenticated).
  std::string note;
};

/// One TCP connection's SASL state, as Kafka's SaslServerAuthenticator keeps it. Before authentication, only
/// ApiVersions (once, handed to the broker), SaslHandshake and then SaslAuthenticate requests (or, after
/// SaslHandshake v0, raw size-prefixed tokens) are accepted; any other request ends the connection without an
/// answer. A failed authentication is answered (SaslAuthenticate with SASL_AUTHENTICATION_FAILED; nothing in
/// the raw framing) and ends the connection. Once authenticated, frames pass to the broker, except
/// SaslHandshake and SaslAuthenticate, which get ILLEGAL_SASL_STATE (re-authentication, KIP-368, is not
/// offered: session lifetimes are 0).
class gate {
 public:
  explicit gate(const users& u) : users_(u) {}

  /// `frame`: a whole frame as received, size header included.
  gate_result handle(bytes_view frame);
  bool authenticated() const noexcept { return state_ == state::authenticated; }
  /// True when the next frame is a raw SASL token (after SaslHandshake v0), not a Kafka request.
  bool expects_raw_token() const noexcept { return state_ == state::authenticate && raw_tokens_; }

 private:
  struct request;  // a parsed request header and the body after it
  gate_result handle_handshake(const request& r);
  gate_result handle_authenticate(const request& r);
  gate_result raw_token(bytes_view token);
  gate_result after_authentication(const request& r);

  enum class state {
    handshake_or_versions,  ///< nothing yet, or only requests that failed to parse
    handshake,              ///< ApiVersions answered; SaslHandshake next
    authenticate,           ///< SaslAuthenticate requests (or raw tokens) until done
    authenticated,
    failed,
  };
  const users& users_;
  state state_ = state::handshake_or_versions;
  bool raw_tokens_ = false;
  std::optional<authenticator> auth_;
};

}  // namespace kws::devbroker::sasl
