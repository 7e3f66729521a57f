// SASL for Kafka with no I/O: the mechanisms' names, the SCRAM primitives (RFC 5802, RFC 7677) on OpenSSL's
// digests, HMAC and PBKDF2, the client side of SCRAM, a credentials file, and a client's whole exchange
// (SaslHandshake v1, then SaslAuthenticate v1 requests, KIP-152) as frames in and frames out. The dev
// broker's server side and the gateway's own lookups use these; the caller does the I/O.
#pragma once

#include <kws/kafka/wire.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kws::kafka::sasl {

using byte_vector = std::vector<unsigned char>;

enum class mechanism { plain, scram_sha_256, scram_sha_512 };
/// "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512".
std::string_view mechanism_name(mechanism m) noexcept;
/// The mechanism of that exact (case-sensitive, as Kafka's) name, or std::nullopt.
std::optional<mechanism> parse_mechanism(std::string_view name) noexcept;

/// Kafka error codes of the SASL APIs (https://kafka.apache.org/protocol#protocol_error_codes).
inline constexpr std::int16_t unsupported_sasl_mechanism = 33;
inline constexpr std::int16_t illegal_sasl_state = 34;
inline constexpr std::int16_t sasl_authentication_failed = 58;

/// SCRAM's hash. SHA-1 is here for RFC 5802's test vector only: Kafka offers no SCRAM-SHA-1.
enum class scram_hash { sha1, sha256, sha512 };
/// The hash of a SCRAM mechanism (PLAIN: sha256, unused).
scram_hash hash_of(mechanism m) noexcept;

// ---- primitives ----

/// H(data).
byte_vector digest(scram_hash h, bytes_view data);
/// HMAC(key, data).
byte_vector hmac(scram_hash h, bytes_view key, bytes_view data);
/// SaltedPassword = Hi(password, salt, iterations): PBKDF2 with HMAC of `h`, one hash's length of output.
byte_vector salted_password(scram_hash h, std::string_view password, bytes_view salt, int iterations);
/// Whether two byte strings are equal, in time that depends on their lengths only.
bool equal_in_constant_time(bytes_view a, bytes_view b) noexcept;
/// Overwrites `b` with zeros in a way the compiler keeps.
void cleanse(byte_vector& b) noexcept;

/// Base64 with padding (RFC 4648).
std::string base64(bytes_view b);
/// Strict base64 (RFC 4648 with padding); std::nullopt for anything else.
std::optional<byte_vector> base64_decode(std::string_view s);
/// SCRAM's saslname: ',' as "=2C" and '=' as "=3D".
std::string encode_saslname(std::string_view name);
/// The reverse; std::nullopt for a ',' or an '=' that starts neither code.
std::optional<std::string> decode_saslname(std::string_view s);
/// The parts of `s` between `sep` characters (SCRAM's attributes, PLAIN's NUL-separated fields); views into
/// `s`, at least one.
std::vector<std::string_view> split(std::string_view s, char sep);
/// Whether `s` can be a SCRAM nonce: not empty, printable ASCII other than ','.
bool is_nonce(std::string_view s) noexcept;
/// 24 random bytes (RAND_bytes) in base64: a SCRAM nonce (printable, no ',').
std::string make_nonce();

inline bytes_view as_bytes(std::string_view s) noexcept {
  return {reinterpret_cast<const unsigned char*>(s.data()), s.size()};
}
inline std::string_view as_text(bytes_view b) noexcept {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

// ---- the client side of SCRAM ----

/// One SCRAM exchange as a client (RFC 5802 section 3): client-first-message; the server-first-message
/// answered with the client-final-message; the server-final-message checked (the server's signature, so the
/// client knows the server holds its credential). No channel binding (gs2 flag "n"), no authzid, user names
/// sent as given (no SASLprep).
class scram_client {
 public:
  /// `client_nonce`: printable characters other than ',' (make_nonce()).
  scram_client(scram_hash h, std::string username, std::string password, std::string client_nonce);
  ~scram_client();
  scram_client(const scram_client&) = delete;
  scram_client& operator=(const scram_client&) = delete;
  scram_client(scram_client&&) noexcept = default;
  scram_client& operator=(scram_client&&) noexcept = default;

  /// "n,,n=USER,r=NONCE".
  std::string first_message();
  /// The client-final-message for `server_first`; std::nullopt with `why` set when it is malformed, its nonce
  /// does not start with the client's, or its iteration count is below 4096 or above 1,000,000 (a server
  /// could otherwise make the client spin).
  std::optional<std::string> final_message(std::string_view server_first, std::string& why);
  /// Whether `server_final` carries the expected server signature; `why` says what it carried otherwise
  /// (the server's "e=" error, or a wrong signature).
  bool check_server_final(std::string_view server_final, std::string& why) const;

 private:
  scram_hash hash_;
  std::string username_;
  std::string password_;
  std::string client_nonce_;
  std::string client_first_bare_;
  byte_vector server_signature_;  // expected, once final_message() has run
};

// ---- credentials ----

/// Who a client authenticates as.
struct credentials {
  mechanism which = mechanism::plain;
  std::string username;
  std::string password;
};

/// A credentials file: `key=value` lines with the keys mechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512),
/// username and password, each once. Blank lines and lines starting with '#' are skipped; spaces and tabs
/// around a key and around a value are dropped, and a trailing '\r'; a value ends at the end of its line and
/// may contain '='. Throws std::invalid_argument naming the line (never a password) for anything else, or
/// naming a key that is missing.
credentials parse_credentials(std::string_view text);

// ---- a client's exchange ----

/// The frames of one client's SASL exchange on a fresh connection: SaslHandshake v1 naming the mechanism,
/// then SaslAuthenticate v1 requests carrying the mechanism's tokens (one for PLAIN, two for SCRAM), each
/// answer checked (correlation id, error code, and for SCRAM the server's signature). Request headers are v1
/// with `client_id`; correlation ids count from 1, so the caller's next request can use
/// next_correlation_id().
class client_exchange {
 public:
  struct step {
    enum class status {
      send,    ///< send `frame` (size header included), then give the answer to on_response()
      done,    ///< authenticated
      failed,  ///< `failure` says why, in a sentence with no password in it
    };
    status what = status::failed;
    byte_vector frame;
    std::string failure;
  };

  /// `scram_nonce`: the SCRAM client nonce (make_nonce(); unused with PLAIN).
  client_exchange(credentials c, std::string client_id, std::string scram_nonce);

  /// The SaslHandshake request.
  step start();
  /// `frame`: the answer to the last request sent, size header included.
  step on_response(bytes_view frame);
  std::int32_t next_correlation_id() const noexcept { return correlation_id_ + 1; }

 private:
  step handshake_answered(reader& in);
  step authenticate_answered(reader& in);
  step authenticate(bytes_view token);
  step fail(std::string why);

  enum class state { start, handshake, first_token, second_token, done, failed };
  credentials credentials_;
  std::string client_id_;
  std::optional<scram_client> scram_;
  state state_ = state::start;
  std::int32_t correlation_id_ = 0;
};

}  // namespace kws::kafka::sasl
