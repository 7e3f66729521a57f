#include <kws/forward_proxy.hpp>
#include <kws/kafka/api.hpp>
#include <kws/kafka/sasl.hpp>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <stdexcept>

namespace kws::kafka::sasl {

namespace {

constexpr std::int16_t handshake_version = 1;
constexpr std::int16_t authenticate_version = 1;
// RFC 5802 asks for at least 4096; the upper bound keeps what a server can make one lookup compute small.
constexpr int min_iterations = 4096;
constexpr int max_iterations = 16384;

const EVP_MD* md_of(scram_hash h) noexcept {
  switch (h) {
    case scram_hash::sha1:
      return EVP_sha1();
    case scram_hash::sha256:
      return EVP_sha256();
    case scram_hash::sha512:
      break;
  }
  return EVP_sha512();
}

std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// A request frame: size, request header v1 (api key, version, correlation id, client id), then the body.
template <class Body>
byte_vector request(api_key key, std::int16_t version, std::int32_t correlation_id,
                    std::string_view client_id, Body&& body) {
  byte_vector frame;
  writer w(frame);
  const auto size_at = w.placeholder_int32();
  w.int16(static_cast<std::int16_t>(key));
  w.int16(version);
  w.int32(correlation_id);
  w.nullable_string(client_id);
  body(w);
  w.patch_int32(size_at, static_cast<std::int32_t>(frame.size() - 4));
  return frame;
}

std::string printable(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 200)) out += (c >= 0x20 && c <= 0x7e) ? c : '?';
  return out;
}

}  // namespace

std::string_view mechanism_name(mechanism m) noexcept {
  switch (m) {
    case mechanism::plain:
      return "PLAIN";
    case mechanism::scram_sha_256:
      return "SCRAM-SHA-256";
    case mechanism::scram_sha_512:
      break;
  }
  return "SCRAM-SHA-512";
}

std::optional<mechanism> parse_mechanism(std::string_view name) noexcept {
  for (auto m : {mechanism::plain, mechanism::scram_sha_256, mechanism::scram_sha_512})
    if (mechanism_name(m) == name) return m;
  return std::nullopt;
}

scram_hash hash_of(mechanism m) noexcept {
  return m == mechanism::scram_sha_512 ? scram_hash::sha512 : scram_hash::sha256;
}

// ---- primitives ----

byte_vector digest(scram_hash h, bytes_view data) {
  byte_vector out(EVP_MAX_MD_SIZE);
  unsigned len = 0;
  if (!EVP_Digest(data.data(), data.size(), out.data(), &len, md_of(h), nullptr))
    throw std::runtime_error("digest failed");
  out.resize(len);
  return out;
}

byte_vector hmac(scram_hash h, bytes_view key, bytes_view data) {
  byte_vector out(EVP_MAX_MD_SIZE);
  unsigned len = 0;
  if (!HMAC(md_of(h), key.data(), static_cast<int>(key.size()), data.data(), data.size(), out.data(), &len))
    throw std::runtime_error("HMAC failed");
  out.resize(len);
  return out;
}

byte_vector salted_password(scram_hash h, std::string_view password, bytes_view salt, int iterations) {
  const EVP_MD* md = md_of(h);
  byte_vector out(static_cast<std::size_t>(EVP_MD_get_size(md)));
  if (!PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()), salt.data(),
                         static_cast<int>(salt.size()), iterations, md, static_cast<int>(out.size()),
                         out.data()))
    throw std::runtime_error("PBKDF2 failed");
  return out;
}

bool equal_in_constant_time(bytes_view a, bytes_view b) noexcept {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

void cleanse(byte_vector& b) noexcept {
  if (!b.empty()) OPENSSL_cleanse(b.data(), b.size());
}

std::string base64(bytes_view b) {
  return base64_encode(as_text(b));
}

std::optional<byte_vector> base64_decode(std::string_view s) {
  if (s.size() % 4 != 0) return std::nullopt;
  const std::size_t pad = s.ends_with("==") ? 2 : s.ends_with('=') ? 1 : 0;
  for (std::size_t i = 0; i < s.size() - pad; ++i) {
    const char c = s[i];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/'))
      return std::nullopt;
  }
  byte_vector out(s.size() / 4 * 3);
  if (s.empty()) return out;
  const int n = EVP_DecodeBlock(out.data(), as_bytes(s).data(), static_cast<int>(s.size()));
  if (n < 0) return std::nullopt;
  out.resize(static_cast<std::size_t>(n) - pad);
  return out;
}

std::string encode_saslname(std::string_view name) {
  std::string out;
  for (char c : name) {
    if (c == ',')
      out += "=2C";
    else if (c == '=')
      out += "=3D";
    else
      out += c;
  }
  return out;
}

std::optional<std::string> decode_saslname(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == ',') return std::nullopt;
    if (s[i] != '=') {
      out += s[i];
      continue;
    }
    const auto code = s.substr(i + 1, 2);
    if (code == "2C")
      out += ',';
    else if (code == "3D")
      out += '=';
    else
      return std::nullopt;
    i += 2;
  }
  return out;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  for (;;) {
    const auto at = s.find(sep);
    parts.push_back(s.substr(0, at));
    if (at == std::string_view::npos) return parts;
    s.remove_prefix(at + 1);
  }
}

bool is_nonce(std::string_view s) noexcept {
  return !s.empty() &&
         std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x21 && c <= 0x7e && c != ','; });
}

std::string make_nonce() {
  std::array<unsigned char, 24> raw{};
  if (RAND_bytes(raw.data(), static_cast<int>(raw.size())) != 1)
    throw std::runtime_error("RAND_bytes failed");
  return base64(raw);
}

// ---- scram_client ----

scram_client::scram_client(scram_hash h, std::string username, std::string password, std::string client_nonce)
    : hash_(h),
      username_(std::move(username)),
      password_(std::move(password)),
      client_nonce_(std::move(client_nonce)) {}

scram_client::~scram_client() {
  if (!password_.empty()) OPENSSL_cleanse(password_.data(), password_.size());
}

std::string scram_client::first_message() {
  client_first_bare_ = "n=" + encode_saslname(username_) + ",r=" + client_nonce_;
  return "n,," + client_first_bare_;
}

// server-first-message = [reserved-mext ","] nonce "," salt "," iteration-count ["," extensions]
std::optional<std::string> scram_client::final_message(std::string_view server_first, std::string& why) {
  const auto attrs = split(server_first, ',');
  if (attrs.size() < 3 || !attrs[0].starts_with("r=") || !attrs[1].starts_with("s=") ||
      !attrs[2].starts_with("i=")) {
    why = "malformed SCRAM server-first-message";
    return std::nullopt;
  }
  const auto nonce = attrs[0].substr(2);
  if (!nonce.starts_with(client_nonce_) || nonce.size() == client_nonce_.size() || !is_nonce(nonce)) {
    why = "the SCRAM server's nonce does not extend the client's";
    return std::nullopt;
  }
  const auto salt = base64_decode(attrs[1].substr(2));
  if (!salt || salt->empty()) {
    why = "malformed SCRAM salt";
    return std::nullopt;
  }
  const auto count = attrs[2].substr(2);
  int iterations = 0;
  for (char c : count) {
    if (c < '0' || c > '9' || iterations > max_iterations) {
      iterations = -1;
      break;
    }
    iterations = iterations * 10 + (c - '0');
  }
  if (count.empty() || iterations < min_iterations || iterations > max_iterations) {
    why = "SCRAM iteration count '" + printable(count) + "' outside 4096..16384";
    return std::nullopt;
  }
  auto salted = salted_password(hash_, password_, *salt, iterations);
  auto client_key = hmac(hash_, salted, as_bytes("Client Key"));
  const auto stored_key = digest(hash_, client_key);
  const std::string without_proof = "c=biws,r=" + std::string(nonce);  // biws: base64 of "n,,"
  const std::string auth_message = client_first_bare_ + "," + std::string(server_first) + "," + without_proof;
  const auto client_signature = hmac(hash_, stored_key, as_bytes(auth_message));
  byte_vector proof(client_key.size());
  for (std::size_t i = 0; i < proof.size(); ++i) proof[i] = client_key[i] ^ client_signature[i];
  const auto server_key = hmac(hash_, salted, as_bytes("Server Key"));
  server_signature_ = hmac(hash_, server_key, as_bytes(auth_message));
  cleanse(salted);
  cleanse(client_key);
  return without_proof + ",p=" + base64(proof);
}

// server-final-message = (server-error / verifier) ["," extensions]
bool scram_client::check_server_final(std::string_view server_final, std::string& why) const {
  const auto first = split(server_final, ',').front();
  if (first.starts_with("e=")) {
    why = "the SCRAM server answered error '" + printable(first.substr(2)) + "'";
    return false;
  }
  const auto signature = first.starts_with("v=") ? base64_decode(first.substr(2)) : std::nullopt;
  if (server_signature_.empty() || !signature || !equal_in_constant_time(*signature, server_signature_)) {
    why = "the SCRAM server's signature is wrong (it does not hold this user's credential)";
    return false;
  }
  return true;
}

// ---- credentials ----

credentials parse_credentials(std::string_view text) {
  credentials out;
  bool seen[3] = {false, false, false};
  static constexpr std::string_view keys[3] = {"mechanism", "username", "password"};
  std::size_t line_no = 0;
  for (auto line : split(text, '\n')) {
    ++line_no;
    if (line.ends_with('\r')) line.remove_suffix(1);
    line = trim(line);
    if (line.empty() || line.starts_with('#')) continue;
    const auto eq = line.find('=');
    const auto where = "line " + std::to_string(line_no) + ": ";
    if (eq == std::string_view::npos)
      throw std::invalid_argument(where + "expected key=value (keys: mechanism, username, password)");
    const auto key = trim(line.substr(0, eq));
    const auto value = trim(line.substr(eq + 1));
    const auto k = std::find(std::begin(keys), std::end(keys), key) - std::begin(keys);
    if (k == 3)
      throw std::invalid_argument(where + "unknown key '" + printable(key) +
                                  "' (keys: mechanism, username, password)");
    if (seen[k]) throw std::invalid_argument(where + std::string(key) + " given twice");
    seen[k] = true;
    if (value.empty()) throw std::invalid_argument(where + "empty " + std::string(key));
    if (k == 0) {
      const auto m = parse_mechanism(value);
      if (!m)
        throw std::invalid_argument(where + "unknown mechanism '" + printable(value) +
                                    "' (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)");
      out.which = *m;
    } else if (k == 1) {
      out.username = std::string(value);
    } else {
      out.password = std::string(value);
    }
  }
  for (int k = 0; k < 3; ++k)
    if (!seen[k]) throw std::invalid_argument("no " + std::string(keys[k]) + "= line");
  return out;
}

// ---- client_exchange ----

client_exchange::client_exchange(credentials c, std::string client_id, std::string scram_nonce)
    : credentials_(std::move(c)), client_id_(std::move(client_id)) {
  if (credentials_.which != mechanism::plain)
    scram_.emplace(hash_of(credentials_.which), credentials_.username, credentials_.password,
                   std::move(scram_nonce));
}

client_exchange::step client_exchange::fail(std::string why) {
  state_ = state::failed;
  step s;
  s.what = step::status::failed;
  s.failure = std::move(why);
  return s;
}

// SaslHandshake Request (Version: 1) => mechanism
client_exchange::step client_exchange::start() {
  if (state_ != state::start) return fail("SASL exchange started twice");
  state_ = state::handshake;
  step s;
  s.what = step::status::send;
  s.frame = request(api_key::sasl_handshake, handshake_version, ++correlation_id_, client_id_,
                    [&](writer& w) { w.string(mechanism_name(credentials_.which)); });
  return s;
}

// SaslAuthenticate Request (Version: 1) => auth_bytes
client_exchange::step client_exchange::authenticate(bytes_view token) {
  step s;
  s.what = step::status::send;
  s.frame = request(api_key::sasl_authenticate, authenticate_version, ++correlation_id_, client_id_,
                    [&](writer& w) { w.bytes(token); });
  return s;
}

client_exchange::step client_exchange::on_response(bytes_view frame) {
  if (state_ == state::start || state_ == state::done || state_ == state::failed)
    return fail("SASL answer without a request");
  reader in(frame);
  in.skip(4);  // the size, checked by whoever read the frame
  const auto correlation_id = in.int32();
  if (!in.ok()) return fail("SASL answer shorter than a response header");
  if (correlation_id != correlation_id_)
    return fail("SASL answer with correlation id " + std::to_string(correlation_id) + ", not " +
                std::to_string(correlation_id_));
  return state_ == state::handshake ? handshake_answered(in) : authenticate_answered(in);
}

// SaslHandshake Response (Version: 1) => error_code [mechanisms]
client_exchange::step client_exchange::handshake_answered(reader& in) {
  const auto error = in.int16();
  std::string offered;
  const auto n = in.array_count(2);
  for (std::int32_t i = 0; i < n && in.ok(); ++i)
    offered += (offered.empty() ? "" : ", ") + printable(in.string());
  in.expect_end();
  if (!in.ok()) return fail("malformed SaslHandshake answer: " + in.error().message());
  const std::string name(mechanism_name(credentials_.which));
  if (error == unsupported_sasl_mechanism)
    return fail("the cluster does not enable SASL mechanism " + name +
                " (it offers: " + (offered.empty() ? std::string("none") : offered) + ")");
  if (error == illegal_sasl_state)
    return fail("the cluster's listener takes no SASL (SaslHandshake answered ILLEGAL_SASL_STATE)");
  if (error != 0) return fail("SaslHandshake answered error code " + std::to_string(error));
  state_ = state::first_token;
  if (!scram_) {
    // PLAIN (RFC 4616): authzid (empty) NUL authcid NUL passwd.
    std::string token;
    token.reserve(credentials_.username.size() + credentials_.password.size() + 2);
    token += '\0';
    token += credentials_.username;
    token += '\0';
    token += credentials_.password;
    auto s = authenticate(as_bytes(token));
    OPENSSL_cleanse(token.data(), token.size());
    return s;
  }
  return authenticate(as_bytes(scram_->first_message()));
}

// SaslAuthenticate Response (Version: 1) => error_code error_message auth_bytes session_lifetime_ms
client_exchange::step client_exchange::authenticate_answered(reader& in) {
  const auto error = in.int16();
  const auto message = in.nullable_string();
  const auto token = in.bytes();
  (void)in.int64();  // session_lifetime_ms: a lookup's connection is closed long before
  in.expect_end();
  if (!in.ok()) return fail("malformed SaslAuthenticate answer: " + in.error().message());
  if (error != 0) {
    const auto what = error == sasl_authentication_failed
                          ? std::string("authentication failed")
                          : "SaslAuthenticate error code " + std::to_string(error);
    return fail(what + " for user '" + printable(credentials_.username) + "' with " +
                std::string(mechanism_name(credentials_.which)) +
                (message ? ": " + printable(*message) : std::string()));
  }
  if (!scram_) {
    state_ = state::done;
    return step{step::status::done, {}, {}};
  }
  std::string why;
  if (state_ == state::first_token) {
    const auto final = scram_->final_message(as_text(token), why);
    if (!final) return fail(why);
    state_ = state::second_token;
    return authenticate(as_bytes(*final));
  }
  if (!scram_->check_server_final(as_text(token), why)) return fail(why);
  state_ = state::done;
  return step{step::status::done, {}, {}};
}

}  // namespace kws::kafka::sasl
