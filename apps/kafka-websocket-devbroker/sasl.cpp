#include "sasl.hpp"

#include <kws/frame.hpp>
#include <kws/kafka/api.hpp>
#include <kws/kafka/api_versions.hpp>

#include <fmt/format.h>

#include <openssl/rand.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace kws::devbroker::sasl {

namespace {

using kafka::sasl::as_bytes;
using kafka::sasl::as_text;
using kafka::sasl::base64;
using kafka::sasl::base64_decode;
using kafka::sasl::decode_saslname;
using kafka::sasl::digest;
using kafka::sasl::hmac;
using kafka::sasl::illegal_sasl_state;
using kafka::sasl::sasl_authentication_failed;
using kafka::sasl::split;
using kafka::sasl::unsupported_sasl_mechanism;

constexpr std::int16_t max_handshake_version = 1;
constexpr std::int16_t max_authenticate_version = 2;
constexpr int scram_iterations = 4096;
constexpr std::size_t salt_bytes = 16;

step failed(std::string client_message, std::string reason) {
  step s;
  s.what = step::status::failed;
  s.client_message = std::move(client_message);
  s.reason = std::move(reason);
  return s;
}

step with_token(step::status what, std::string_view token) {
  step s;
  s.what = what;
  s.token.assign(token.begin(), token.end());
  return s;
}

// PLAIN (RFC 4616): one message, authzid NUL authcid NUL passwd. The client messages are those of Kafka's
// PlainSaslServer.
step plain_step(const users& u, bytes_view token, std::string& user_out) {
  const auto parts = split(as_text(token), '\0');
  if (parts.size() != 3)
    return failed(fmt::format("Invalid SASL/PLAIN response: expected 3 tokens, got {}", parts.size()),
                  "malformed PLAIN message");
  const auto authzid = parts[0], user = parts[1], password = parts[2];
  if (user.empty())
    return failed("Authentication failed: username not specified", "PLAIN without a user name");
  if (password.empty())
    return failed("Authentication failed: password not specified",
                  fmt::format("no password for user '{}'", user));
  const users::user* known = u.find(user);
  // Hashes of equal length, compared in constant time: neither the password nor its length shows in timing.
  const auto sent = digest(scram_hash::sha256, as_bytes(password));
  const auto want =
      digest(scram_hash::sha256, as_bytes(known ? std::string_view(known->password) : std::string_view()));
  if (!known || !kafka::sasl::equal_in_constant_time(sent, want))
    return failed(
        "Authentication failed: Invalid username or password",
        known ? fmt::format("wrong password for user '{}'", user) : fmt::format("unknown user '{}'", user));
  if (!authzid.empty() && authzid != user)
    return failed(
        "Authentication failed: Client requested an authorization id that is different from username",
        fmt::format("user '{}' asked for authorization id '{}'", user, authzid));
  user_out = std::string(user);
  return with_token(step::status::done, {});
}

/// Response header v0 (correlation id), or v1 (plus empty tagged fields) for flexible versions.
std::size_t begin_response(kafka::writer& w, std::int32_t correlation_id, bool flexible) {
  const std::size_t at = w.placeholder_int32();
  w.int32(correlation_id);
  if (flexible) w.empty_tagged_fields();
  return at;
}

void end_response(kafka::writer& w, std::size_t size_at) {
  w.patch_int32(size_at, static_cast<std::int32_t>(w.size() - size_at - frame_header_bytes));
}

// SaslHandshake Response (Version: 0-1) => error_code [mechanisms]
byte_vector handshake_response(std::int32_t correlation_id, std::int16_t error, bool list_mechanisms) {
  byte_vector out;
  kafka::writer w(out);
  const auto at = begin_response(w, correlation_id, false);
  w.int16(error);
  if (list_mechanisms) {
    w.array_count(static_cast<std::int32_t>(std::size(enabled_mechanisms)));
    for (auto m : enabled_mechanisms) w.string(mechanism_name(m));
  } else {
    w.array_count(0);
  }
  end_response(w, at);
  return out;
}

// SaslAuthenticate Response (Version: 0) => error_code error_message auth_bytes
// (Version: 1) adds session_lifetime_ms; (Version: 2) is flexible: compact strings and bytes, tagged fields.
byte_vector authenticate_response(std::int16_t version, std::int32_t correlation_id, std::int16_t error,
                                  std::optional<std::string_view> message, bytes_view token) {
  byte_vector out;
  kafka::writer w(out);
  const bool flexible = version >= 2;
  const auto at = begin_response(w, correlation_id, flexible);
  w.int16(error);
  if (flexible) {
    w.compact_nullable_string(message);
    w.compact_nullable_bytes(token);
  } else {
    w.nullable_string(message);
    w.bytes(token);
  }
  // 0: the session never expires, so clients do not re-authenticate (KIP-368).
  if (version >= 1) w.int64(0);
  if (flexible) w.empty_tagged_fields();
  end_response(w, at);
  return out;
}

byte_vector size_prefixed(bytes_view token) {
  byte_vector out;
  kafka::writer w(out);
  w.int32(static_cast<std::int32_t>(token.size()));
  w.raw(token);
  return out;
}

gate_result close_with(std::string reason) {
  gate_result r;
  r.what = gate_result::action::close;
  r.reason = std::move(reason);
  return r;
}

gate_result respond(byte_vector response) {
  gate_result r;
  r.what = gate_result::action::respond;
  r.response = std::move(response);
  return r;
}

gate_result respond_and_close(byte_vector response, std::string reason) {
  gate_result r;
  r.what = gate_result::action::respond_and_close;
  r.response = std::move(response);
  r.reason = std::move(reason);
  return r;
}

gate_result pass() {
  return {};
}

std::string request_name(const kafka::request_header& h) {
  return fmt::format("{} v{} (correlation id {})", kafka::api_name(h.key), h.version, h.correlation_id);
}

}  // namespace

scram_credential make_scram_credential(scram_hash h, std::string_view password, bytes_view salt,
                                       int iterations) {
  auto salted = kafka::sasl::salted_password(h, password, salt, iterations);
  scram_credential c;
  c.salt.assign(salt.begin(), salt.end());
  c.iterations = iterations;
  auto client_key = hmac(h, salted, as_bytes("Client Key"));
  c.stored_key = digest(h, client_key);
  c.server_key = hmac(h, salted, as_bytes("Server Key"));
  kafka::sasl::cleanse(salted);
  kafka::sasl::cleanse(client_key);
  return c;
}

// ---- users ----

users users::parse(std::string_view text) {
  users out;
  std::size_t line_no = 0;
  for (auto line : split(text, '\n')) {
    ++line_no;
    if (line.ends_with('\r')) line.remove_suffix(1);
    if (line.empty() || line.starts_with('#')) continue;
    const auto colon = line.find(':');
    if (colon == std::string_view::npos)
      throw std::invalid_argument(fmt::format("line {}: expected user:password", line_no));
    const auto name = line.substr(0, colon), password = line.substr(colon + 1);
    if (name.empty()) throw std::invalid_argument(fmt::format("line {}: empty user name", line_no));
    if (password.empty())
      throw std::invalid_argument(fmt::format("line {}: empty password for user '{}'", line_no, name));
    if (out.users_.count(name))
      throw std::invalid_argument(fmt::format("line {}: user '{}' given twice", line_no, name));
    user u;
    u.password = std::string(password);
    for (auto* c : {&u.sha256, &u.sha512}) {
      byte_vector salt(salt_bytes);
      if (RAND_bytes(salt.data(), static_cast<int>(salt.size())) != 1)
        throw std::runtime_error("RAND_bytes failed");
      *c = make_scram_credential(c == &u.sha256 ? scram_hash::sha256 : scram_hash::sha512, password, salt,
                                 scram_iterations);
    }
    out.users_.emplace(std::string(name), std::move(u));
  }
  return out;
}

users users::load(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw std::runtime_error(fmt::format("cannot read SASL users file {}", file));
  std::stringstream text;
  text << in.rdbuf();
  try {
    return parse(text.str());
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(fmt::format("SASL users file {}: {}", file, e.what()));
  }
}

const users::user* users::find(std::string_view name) const {
  auto it = users_.find(name);
  return it == users_.end() ? nullptr : &it->second;
}

// ---- SCRAM ----

scram_server::scram_server(scram_hash h, std::string mechanism_name, credential_lookup lookup,
                           std::string server_nonce)
    : hash_(h),
      mechanism_name_(std::move(mechanism_name)),
      lookup_(std::move(lookup)),
      server_nonce_(std::move(server_nonce)) {}

step scram_server::fail(std::string reason) {
  state_ = state::failed;
  // Kafka's words for every SaslException of its SCRAM server: nothing about which part failed.
  return failed(
      fmt::format("Authentication failed during authentication due to invalid credentials with SASL "
                  "mechanism {}",
                  mechanism_name_),
      std::move(reason));
}

step scram_server::next(bytes_view client_message) {
  switch (state_) {
    case state::expect_first:
      return first(as_text(client_message));
    case state::expect_final:
      return final(as_text(client_message));
    case state::done:
    case state::failed:
      break;
  }
  return fail("SCRAM message after the exchange ended");
}

// client-first-message = gs2-header client-first-message-bare
// gs2-header = gs2-cbind-flag "," [ authzid ] ","
// client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
step scram_server::first(std::string_view message) {
  const auto c1 = message.find(',');
  const auto c2 = c1 == std::string_view::npos ? c1 : message.find(',', c1 + 1);
  if (c2 == std::string_view::npos) return fail("malformed SCRAM client-first-message");
  const auto cbind = message.substr(0, c1);
  if (cbind != "n" && cbind != "y") return fail("SCRAM channel binding requested; none is offered");
  const auto authz = message.substr(c1 + 1, c2 - c1 - 1);
  std::string authzid;
  if (!authz.empty()) {
    auto decoded = authz.starts_with("a=") ? decode_saslname(authz.substr(2)) : std::nullopt;
    if (!decoded) return fail("malformed SCRAM authzid");
    authzid = std::move(*decoded);
  }
  gs2_header_ = std::string(message.substr(0, c2 + 1));
  client_first_bare_ = std::string(message.substr(c2 + 1));
  const auto attrs = split(client_first_bare_, ',');
  if (attrs.size() < 2 || !attrs[0].starts_with("n=") || !attrs[1].starts_with("r="))
    return fail("malformed SCRAM client-first-message-bare");
  auto user = decode_saslname(attrs[0].substr(2));
  const auto client_nonce = attrs[1].substr(2);
  if (!user || user->empty() || !kafka::sasl::is_nonce(client_nonce))
    return fail("malformed SCRAM user name or nonce");
  credential_ = lookup_(*user);
  if (!credential_) return fail(fmt::format("unknown user '{}'", *user));
  if (!authzid.empty() && authzid != *user) {
    state_ = state::failed;
    return failed(
        "Authentication failed: Client requested an authorization id that is different from username",
        fmt::format("user '{}' asked for authorization id '{}'", *user, authzid));
  }
  user_ = std::move(*user);
  nonce_ = std::string(client_nonce) + server_nonce_;
  server_first_ = fmt::format("r={},s={},i={}", nonce_, base64(credential_->salt), credential_->iterations);
  state_ = state::expect_final;
  return with_token(step::status::challenge, server_first_);
}

// client-final-message = channel-binding "," nonce ["," extensions] "," proof
step scram_server::final(std::string_view message) {
  const auto proof_at = message.rfind(",p=");
  if (proof_at == std::string_view::npos) return fail("SCRAM client-final-message without a proof");
  const auto without_proof = message.substr(0, proof_at);
  const auto proof = base64_decode(message.substr(proof_at + 3));
  const auto attrs = split(without_proof, ',');
  if (attrs.size() < 2 || !attrs[0].starts_with("c=") || !attrs[1].starts_with("r=") || !proof)
    return fail("malformed SCRAM client-final-message");
  const auto binding = base64_decode(attrs[0].substr(2));
  if (!binding || as_text(*binding) != gs2_header_)
    return fail("SCRAM channel binding differs from the gs2 header");
  // The nonce must end with the one the server sent (client's + server's), as Kafka 3's ScramSaslServer
  // checks it: librdkafka 2.0 puts its own nonce in front of that again. The server's random part is still
  // required, so an old exchange cannot be replayed.
  if (!attrs[1].substr(2).ends_with(nonce_)) return fail("SCRAM nonce differs from the one the server sent");

  const std::string auth_message =
      client_first_bare_ + "," + server_first_ + "," + std::string(without_proof);
  const auto client_signature = hmac(hash_, credential_->stored_key, as_bytes(auth_message));
  if (proof->size() != client_signature.size())
    return fail(fmt::format("wrong password for user '{}'", user_));
  // ClientKey = ClientProof XOR ClientSignature; the proof holds when H(ClientKey) is the stored key.
  byte_vector client_key(proof->size());
  for (std::size_t i = 0; i < client_key.size(); ++i) client_key[i] = (*proof)[i] ^ client_signature[i];
  const auto stored = digest(hash_, client_key);
  kafka::sasl::cleanse(client_key);
  if (!kafka::sasl::equal_in_constant_time(stored, credential_->stored_key))
    return fail(fmt::format("wrong password for user '{}'", user_));
  const auto server_signature = hmac(hash_, credential_->server_key, as_bytes(auth_message));
  state_ = state::done;
  return with_token(step::status::done, "v=" + base64(server_signature));
}

// ---- authenticator ----

authenticator::authenticator(const users& u, mechanism m) : users_(u), mechanism_(m) {
  if (m == mechanism::plain) return;
  const bool sha256 = m == mechanism::scram_sha_256;
  scram_.emplace(
      sha256 ? scram_hash::sha256 : scram_hash::sha512, std::string(mechanism_name(m)),
      [&u, sha256](std::string_view name) -> const scram_credential* {
        const auto* user = u.find(name);
        if (!user) return nullptr;
        return sha256 ? &user->sha256 : &user->sha512;
      },
      make_nonce());
}

step authenticator::next(bytes_view client_token) {
  if (scram_) return scram_->next(client_token);
  if (used_)
    return failed("Authentication failed: Invalid username or password", "PLAIN message after the exchange");
  used_ = true;
  return plain_step(users_, client_token, plain_user_);
}

const std::string& authenticator::user() const noexcept {
  return scram_ ? scram_->user() : plain_user_;
}

// ---- gate ----

struct gate::request {
  kafka::request_header header;
  bytes_view body;  ///< after the header
};

gate_result gate::handle(bytes_view frame) {
  if (frame.size() < frame_header_bytes) return close_with("frame shorter than its size header");
  const bytes_view body = frame.subspan(frame_header_bytes);
  if (state_ == state::failed) return close_with("request after a failed SASL authentication");
  if (state_ == state::authenticate && raw_tokens_) return raw_token(body);

  boost::system::error_code ec;
  request r{kafka::peek_request_header(body, ec), {}};
  if (ec || r.header.header_bytes == 0) {
    if (state_ == state::authenticated) return pass();  // the broker closes it with its own line
    return close_with(
        "not a Kafka request before SASL authentication (a client with another security protocol, or no "
        "Kafka client?)");
  }
  r.body = body.subspan(r.header.header_bytes);
  const auto key = r.header.key;
  switch (state_) {
    case state::handshake_or_versions:
    case state::handshake:
      if (key == kafka::api_key::sasl_handshake) return handle_handshake(r);
      if (key == kafka::api_key::api_versions && state_ == state::handshake_or_versions) {
        // A version the broker does not know gets its KIP-511 answer, and the client asks again.
        if (r.header.version >= 0 && r.header.version <= kafka::max_api_versions_version)
          state_ = state::handshake;
        return pass();
      }
      // Kafka's SaslServerAuthenticator: anything else ends the connection without an answer.
      state_ = state::failed;
      return close_with(
          fmt::format("{} request before SASL authentication: closed without an answer, as Kafka does",
                      request_name(r.header)));
    case state::authenticate:
      if (key == kafka::api_key::sasl_authenticate) return handle_authenticate(r);
      // Kafka answers this with ILLEGAL_SASL_STATE in that API's error response before it closes; this broker
      // closes without one.
      state_ = state::failed;
      return close_with(fmt::format("{} request during SASL authentication", request_name(r.header)));
    case state::authenticated:
      return after_authentication(r);
    case state::failed:
      break;
  }
  return close_with("request after a failed SASL authentication");
}

// SaslHandshake Request (Version: 0-1) => mechanism. v0: the SASL tokens follow as raw size-prefixed frames;
// v1: in SaslAuthenticate requests.
gate_result gate::handle_handshake(const request& r) {
  const auto& h = r.header;
  if (h.version < 0 || h.version > max_handshake_version) {
    state_ = state::failed;
    return close_with(fmt::format("unsupported SaslHandshake version {}", h.version));
  }
  kafka::reader in(r.body);
  const auto name = in.string();
  in.expect_end();
  if (!in.ok()) {
    state_ = state::failed;
    return close_with(fmt::format("malformed SaslHandshake request: {}", in.error().message()));
  }
  const auto m = parse_mechanism(name);
  if (!m) {
    state_ = state::failed;
    return respond_and_close(handshake_response(h.correlation_id, unsupported_sasl_mechanism, true),
                             fmt::format("unsupported SASL mechanism '{}' (enabled: PLAIN, SCRAM-SHA-256, "
                                         "SCRAM-SHA-512), answered UNSUPPORTED_SASL_MECHANISM",
                                         name.substr(0, 100)));
  }
  raw_tokens_ = h.version == 0;
  auth_.emplace(users_, *m);
  state_ = state::authenticate;
  return respond(handshake_response(h.correlation_id, 0, true));
}

// SaslAuthenticate Request (Version: 0-1) => auth_bytes; (Version: 2) => compact auth_bytes, tagged fields.
gate_result gate::handle_authenticate(const request& r) {
  const auto& h = r.header;
  if (h.version < 0 || h.version > max_authenticate_version) {
    state_ = state::failed;
    return close_with(fmt::format("unsupported SaslAuthenticate version {}", h.version));
  }
  kafka::reader in(r.body);
  std::optional<bytes_view> token;
  if (h.version >= 2) {
    token = in.compact_nullable_bytes();
    in.skip_tagged_fields();
  } else {
    token = in.bytes();
  }
  in.expect_end();
  if (!in.ok() || !token) {
    state_ = state::failed;
    return close_with(fmt::format("malformed SaslAuthenticate request: {}",
                                  in.ok() ? std::string("null auth_bytes") : in.error().message()));
  }
  step s = auth_->next(*token);
  if (s.what == step::status::failed) {
    state_ = state::failed;
    return respond_and_close(
        authenticate_response(h.version, h.correlation_id, sasl_authentication_failed, s.client_message, {}),
        fmt::format("SASL authentication failed ({}): {}", mechanism_name(auth_->which()), s.reason));
  }
  gate_result out = respond(authenticate_response(h.version, h.correlation_id, 0, std::nullopt, s.token));
  if (s.what == step::status::done) {
    state_ = state::authenticated;
    out.note = fmt::format("authenticated user={} mechanism={} framing=SaslAuthenticate v{}", auth_->user(),
                           mechanism_name(auth_->which()), h.version);
  }
  return out;
}

// After SaslHandshake v0: the tokens travel as size-prefixed frames with no Kafka header, both ways. A
// failure gets no answer in this framing: the connection ends, as Kafka ends it.
gate_result gate::raw_token(bytes_view token) {
  step s = auth_->next(token);
  if (s.what == step::status::failed) {
    state_ = state::failed;
    return close_with(fmt::format("SASL authentication failed ({}, raw tokens): {}",
                                  mechanism_name(auth_->which()), s.reason));
  }
  gate_result out = respond(size_prefixed(s.token));
  if (s.what == step::status::done) {
    state_ = state::authenticated;
    out.note = fmt::format("authenticated user={} mechanism={} framing=raw tokens", auth_->user(),
                           mechanism_name(auth_->which()));
  }
  return out;
}

// What Kafka's request handlers answer once the connection is authenticated.
gate_result gate::after_authentication(const request& r) {
  const auto& h = r.header;
  if (h.key == kafka::api_key::sasl_handshake && h.version >= 0 && h.version <= max_handshake_version)
    return respond(handshake_response(h.correlation_id, illegal_sasl_state, false));
  if (h.key == kafka::api_key::sasl_authenticate && h.version >= 0 && h.version <= max_authenticate_version)
    return respond(authenticate_response(h.version, h.correlation_id, illegal_sasl_state,
                                         "SaslAuthenticate request received after successful authentication",
                                         {}));
  return pass();
}

}  // namespace kws::devbroker::sasl
