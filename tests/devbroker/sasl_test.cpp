// Unit tests of the dev broker's SASL core: the SCRAM server against the test vectors of RFC 5802 (section 5,
// SCRAM-SHA-1) and RFC 7677 (section 3, SCRAM-SHA-256), PLAIN, the users file, and the connection gate's
// answers to SaslHandshake / SaslAuthenticate frames and raw tokens.
#include "sasl.hpp"
#include "kafka_test_util.hpp"

#include <kws/frame.hpp>
#include <kws/kafka/api.hpp>
#include <kws/kafka/wire.hpp>

#include <gtest/gtest.h>

#include <openssl/evp.h>

#include <string>

using namespace kws::devbroker;
using kws::devbroker::test::bytes;
using kws::devbroker::test::request;
using kws::devbroker::test::to_bytes;
using kws::kafka::api_key;

namespace {

bytes decode64(const std::string& s) {
  bytes out(s.size());
  const int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(s.data()),
                                static_cast<int>(s.size()));
  EXPECT_GE(n, 0);
  out.resize(static_cast<std::size_t>(n) - (s.ends_with("==") ? 2 : s.ends_with('=') ? 1 : 0));
  return out;
}

std::string text(const sasl::step& s) {
  return std::string(s.token.begin(), s.token.end());
}

// One RFC test vector: user "user", password "pencil", 4096 iterations.
struct vector_case {
  sasl::scram_hash hash;
  std::string salt_b64, client_first, server_nonce, server_first, client_final, server_final;
};

// RFC 5802 section 5 (SCRAM-SHA-1).
const vector_case rfc5802{
    sasl::scram_hash::sha1,
    "QSXCR+Q6sek8bf92",
    "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
    "3rfcNHYJY1ZVvWVs7j",
    "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
    "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
    "v=rmF9pqV8S7suAoZWja4dJRkFsKQ="};

// RFC 7677 section 3 (SCRAM-SHA-256).
const vector_case rfc7677{
    sasl::scram_hash::sha256,
    "W22ZaJ0SNY7soEsUEjb6gQ==",
    "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
    "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+"
    "Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="};

class ScramVector : public ::testing::TestWithParam<vector_case> {
 protected:
  void SetUp() override {
    credential_ = sasl::make_scram_credential(GetParam().hash, "pencil", decode64(GetParam().salt_b64), 4096);
  }
  sasl::scram_server server() {
    return sasl::scram_server(
        GetParam().hash, "SCRAM-TEST",
        [this](std::string_view user) { return user == "user" ? &credential_ : nullptr; },
        GetParam().server_nonce);
  }
  sasl::scram_credential credential_;
};

}  // namespace

TEST_P(ScramVector, ServerAnswersTheRfcExchangeByteForByte) {
  const auto& v = GetParam();
  auto s = server();
  const auto first = s.next(to_bytes(v.client_first));
  ASSERT_EQ(first.what, sasl::step::status::challenge) << first.reason;
  EXPECT_EQ(text(first), v.server_first);
  const auto last = s.next(to_bytes(v.client_final));
  ASSERT_EQ(last.what, sasl::step::status::done) << last.reason;
  EXPECT_EQ(text(last), v.server_final);
  EXPECT_EQ(s.user(), "user");
}

TEST_P(ScramVector, AnyChangedProofByteFails) {
  const auto& v = GetParam();
  // The proof's first base64 character changed: another proof of the same length.
  std::string wrong = v.client_final;
  const auto at = wrong.find(",p=") + 3;
  wrong[at] = wrong[at] == 'A' ? 'B' : 'A';
  auto s = server();
  ASSERT_EQ(s.next(to_bytes(v.client_first)).what, sasl::step::status::challenge);
  const auto last = s.next(to_bytes(wrong));
  EXPECT_EQ(last.what, sasl::step::status::failed);
  EXPECT_EQ(last.client_message,
            "Authentication failed during authentication due to invalid credentials with SASL mechanism "
            "SCRAM-TEST");
  EXPECT_EQ(last.reason, "wrong password for user 'user'");
  EXPECT_TRUE(last.token.empty());
  // The exchange is over.
  EXPECT_EQ(s.next(to_bytes(v.client_final)).what, sasl::step::status::failed);
}

TEST_P(ScramVector, ANonceOrChannelBindingOtherThanTheServersFails) {
  const auto& v = GetParam();
  const std::string nonce_changed =
      std::string(v.client_final).replace(v.client_final.find(",p=") - 1, 1, "X");
  std::string binding_changed = v.client_final;
  binding_changed.replace(0, 6, "c=eSws");  // "y,," instead of "n,,"
  for (const auto& bad : {nonce_changed, binding_changed}) {
    auto s = server();
    ASSERT_EQ(s.next(to_bytes(v.client_first)).what, sasl::step::status::challenge);
    EXPECT_EQ(s.next(to_bytes(bad)).what, sasl::step::status::failed) << bad;
  }
}

INSTANTIATE_TEST_SUITE_P(Rfc, ScramVector, ::testing::Values(rfc5802, rfc7677),
                         [](const auto& info) { return info.index == 0 ? "Rfc5802Sha1" : "Rfc7677Sha256"; });

TEST(ScramServer, RefusesUnknownUsersChannelBindingAndMalformedFirstMessages) {
  const auto credential = sasl::make_scram_credential(sasl::scram_hash::sha512, "pw", to_bytes("salt"), 4096);
  auto make = [&] {
    return sasl::scram_server(
        sasl::scram_hash::sha512, "SCRAM-SHA-512",
        [&](std::string_view user) { return user == "a,b=c" ? &credential : nullptr; }, "srv");
  };
  {
    auto s = make();
    const auto r = s.next(to_bytes("n,,n=bob,r=abc"));
    EXPECT_EQ(r.what, sasl::step::status::failed);
    EXPECT_EQ(r.reason, "unknown user 'bob'");
    EXPECT_EQ(r.client_message,
              "Authentication failed during authentication due to invalid credentials with SASL mechanism "
              "SCRAM-SHA-512");
  }
  for (const char* bad : {"p=tls-unique,,n=a=2Cb=3Dc,r=abc", "n,,r=abc", "n,n=x,r=abc",
                          "n,,n=a=2Cb=3Dc,r=", "n,,n=a=2Xb,r=abc", "", "n"}) {
    auto s = make();
    EXPECT_EQ(s.next(to_bytes(bad)).what, sasl::step::status::failed) << bad;
  }
  // An escaped name (RFC 5802 5.1: "=2C" is ',' and "=3D" is '='), and an authorization id other than the
  // user.
  {
    auto s = make();
    const auto r = s.next(to_bytes("n,,n=a=2Cb=3Dc,r=abc"));
    EXPECT_EQ(r.what, sasl::step::status::challenge) << r.reason;
    EXPECT_TRUE(text(r).starts_with("r=abcsrv,s=c2FsdA==,i=4096")) << text(r);
  }
  {
    auto s = make();
    const auto r = s.next(to_bytes("n,a=admin,n=a=2Cb=3Dc,r=abc"));
    EXPECT_EQ(r.what, sasl::step::status::failed);
    EXPECT_EQ(r.client_message,
              "Authentication failed: Client requested an authorization id that is different from username");
  }
}

TEST(ScramServer, NoncesAreDistinctPrintableBase64) {
  const auto a = sasl::make_nonce(), b = sasl::make_nonce();
  EXPECT_EQ(a.size(), 32u);
  EXPECT_NE(a, b);
  EXPECT_EQ(a.find(','), std::string::npos);
}

TEST(SaslUsers, ParsesUserPasswordLinesAndNamesTheBadLine) {
  const auto u = sasl::users::parse("# test users\nalice:secret\r\n\nbob:pa:ss:word\n");
  EXPECT_EQ(u.size(), 2u);
  ASSERT_NE(u.find("alice"), nullptr);
  EXPECT_EQ(u.find("alice")->password, "secret");
  EXPECT_EQ(u.find("bob")->password, "pa:ss:word");
  EXPECT_EQ(u.find("carol"), nullptr);
  // Each hash has its own salt, of 16 random bytes, at 4096 iterations.
  EXPECT_EQ(u.find("alice")->sha256.salt.size(), 16u);
  EXPECT_NE(u.find("alice")->sha256.salt, u.find("alice")->sha512.salt);
  EXPECT_EQ(u.find("alice")->sha512.iterations, 4096);
  EXPECT_EQ(u.find("alice")->sha512.stored_key.size(), 64u);

  auto error_of = [](const char* text) {
    try {
      sasl::users::parse(text);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(error_of("a:b\nnocolon\n"), "line 2: expected user:password");
  EXPECT_EQ(error_of(":pw"), "line 1: empty user name");
  EXPECT_EQ(error_of("a:"), "line 1: empty password for user 'a'");
  EXPECT_EQ(error_of("a:1\na:2"), "line 2: user 'a' given twice");
}

TEST(SaslPlain, ChecksUserAndPasswordWithKafkasMessages) {
  const auto u = sasl::users::parse("alice:secret\n");
  auto one = [&](std::string_view token) {
    sasl::authenticator a(u, sasl::mechanism::plain);
    auto s = a.next(to_bytes(token));
    if (s.what == sasl::step::status::done) {
      EXPECT_EQ(a.user(), "alice");
    }
    return s;
  };
  using namespace std::string_literals;
  EXPECT_EQ(one("\0alice\0secret"s).what, sasl::step::status::done);
  EXPECT_EQ(one("alice\0alice\0secret"s).what, sasl::step::status::done);
  EXPECT_EQ(one("\0alice\0secret"s).token.size(), 0u);
  EXPECT_EQ(one("\0alice\0wrong"s).client_message, "Authentication failed: Invalid username or password");
  EXPECT_EQ(one("\0alice\0wrong"s).reason, "wrong password for user 'alice'");
  EXPECT_EQ(one("\0alice\0secre"s).what, sasl::step::status::failed);
  EXPECT_EQ(one("\0mallory\0secret"s).reason, "unknown user 'mallory'");
  EXPECT_EQ(one("\0alice"s).client_message, "Invalid SASL/PLAIN response: expected 3 tokens, got 2");
  EXPECT_EQ(one("\0\0secret"s).client_message, "Authentication failed: username not specified");
  EXPECT_EQ(one("bob\0alice\0secret"s).client_message,
            "Authentication failed: Client requested an authorization id that is different from username");
}

// ---- the gate ----

namespace {

bytes handshake(std::int16_t version, const std::string& mechanism, std::int32_t corr = 1) {
  return request(api_key::sasl_handshake, version, corr, [&](kws::kafka::writer& w) { w.string(mechanism); });
}

bytes authenticate(std::int16_t version, std::string_view token, std::int32_t corr = 2) {
  return request(
      api_key::sasl_authenticate, version, corr,
      [&](kws::kafka::writer& w) {
        if (version >= 2) {
          w.compact_nullable_bytes(to_bytes(token));
          w.empty_tagged_fields();
        } else {
          w.bytes(to_bytes(token));
        }
      },
      version >= 2);
}

struct handshake_answer {
  std::int32_t correlation_id = 0;
  std::int16_t error = -1;
  std::vector<std::string> mechanisms;
};

handshake_answer parse_handshake(const bytes& frame) {
  kws::kafka::reader r(frame);
  EXPECT_EQ(static_cast<std::size_t>(r.int32()), frame.size() - 4);
  handshake_answer a;
  a.correlation_id = r.int32();
  a.error = r.int16();
  for (auto n = r.array_count(); n > 0; --n) a.mechanisms.emplace_back(r.string());
  r.expect_end();
  EXPECT_TRUE(r.ok());
  return a;
}

struct authenticate_answer {
  std::int32_t correlation_id = 0;
  std::int16_t error = -1;
  std::optional<std::string> message;
  std::string token;
  std::int64_t session_lifetime_ms = -1;
};

authenticate_answer parse_authenticate(std::int16_t version, const bytes& frame) {
  kws::kafka::reader r(frame);
  EXPECT_EQ(static_cast<std::size_t>(r.int32()), frame.size() - 4);
  authenticate_answer a;
  a.correlation_id = r.int32();
  if (version >= 2) r.skip_tagged_fields();
  a.error = r.int16();
  if (version >= 2) {
    a.message = r.compact_nullable_string();
    const auto t = r.compact_nullable_bytes();
    if (t) a.token = std::string(t->begin(), t->end());
  } else {
    a.message = r.nullable_string();
    const auto t = r.bytes();
    a.token = std::string(t.begin(), t.end());
  }
  if (version >= 1) a.session_lifetime_ms = r.int64();
  if (version >= 2) r.skip_tagged_fields();
  r.expect_end();
  EXPECT_TRUE(r.ok()) << r.error().message();
  return a;
}

bytes raw(std::string_view token) {
  bytes out;
  kws::kafka::writer w(out);
  w.int32(static_cast<std::int32_t>(token.size()));
  w.raw(to_bytes(token));
  return out;
}

}  // namespace

TEST(SaslGate, ApiVersionsThenHandshakeV1ThenSaslAuthenticateV2Plain) {
  const auto u = sasl::users::parse("alice:secret\n");
  sasl::gate g(u);
  EXPECT_EQ(g.handle(test::api_versions_request(7, 3)).what, sasl::gate_result::action::pass);

  const auto hs = g.handle(handshake(1, "PLAIN", 8));
  ASSERT_EQ(hs.what, sasl::gate_result::action::respond);
  const auto ha = parse_handshake(hs.response);
  EXPECT_EQ(ha.correlation_id, 8);
  EXPECT_EQ(ha.error, 0);
  EXPECT_EQ(ha.mechanisms, (std::vector<std::string>{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}));

  using namespace std::string_literals;
  const auto au = g.handle(authenticate(2, "\0alice\0secret"s, 9));
  ASSERT_EQ(au.what, sasl::gate_result::action::respond);
  EXPECT_EQ(au.note, "authenticated user=alice mechanism=PLAIN framing=SaslAuthenticate v2");
  const auto aa = parse_authenticate(2, au.response);
  EXPECT_EQ(aa.correlation_id, 9);
  EXPECT_EQ(aa.error, 0);
  EXPECT_EQ(aa.message, std::nullopt);
  EXPECT_EQ(aa.token, "");
  EXPECT_EQ(aa.session_lifetime_ms, 0);
  EXPECT_TRUE(g.authenticated());

  // Authenticated: requests pass; the SASL APIs get ILLEGAL_SASL_STATE (34), as Kafka's request handlers
  // answer.
  EXPECT_EQ(g.handle(test::metadata_request(10, {})).what, sasl::gate_result::action::pass);
  const auto again = g.handle(handshake(1, "PLAIN", 11));
  ASSERT_EQ(again.what, sasl::gate_result::action::respond);
  EXPECT_EQ(parse_handshake(again.response).error, 34);
  const auto late = g.handle(authenticate(1, "x", 12));
  ASSERT_EQ(late.what, sasl::gate_result::action::respond);
  EXPECT_EQ(parse_authenticate(1, late.response).error, 34);
}

TEST(SaslGate, WrongPasswordIsAnsweredWithSaslAuthenticationFailedThenClosed) {
  const auto u = sasl::users::parse("alice:secret\n");
  for (std::int16_t version : {0, 1, 2}) {
    sasl::gate g(u);
    ASSERT_EQ(g.handle(handshake(1, "PLAIN")).what, sasl::gate_result::action::respond);
    using namespace std::string_literals;
    const auto r = g.handle(authenticate(version, "\0alice\0wrong"s, 5));
    ASSERT_EQ(r.what, sasl::gate_result::action::respond_and_close);
    EXPECT_EQ(r.reason, "SASL authentication failed (PLAIN): wrong password for user 'alice'");
    const auto a = parse_authenticate(version, r.response);
    EXPECT_EQ(a.correlation_id, 5);
    EXPECT_EQ(a.error, 58);
    EXPECT_EQ(a.message, "Authentication failed: Invalid username or password");
    EXPECT_FALSE(g.authenticated());
    EXPECT_EQ(g.handle(test::metadata_request(6, {})).what, sasl::gate_result::action::close);
  }
}

TEST(SaslGate, RequestsOtherThanApiVersionsAndSaslBeforeAuthenticationCloseWithoutAnswer) {
  const auto u = sasl::users::parse("alice:secret\n");
  {
    sasl::gate g(u);
    const auto r = g.handle(test::metadata_request(3, {"t"}));
    EXPECT_EQ(r.what, sasl::gate_result::action::close);
    EXPECT_EQ(
        r.reason,
        "metadata v0 (correlation id 3) request before SASL authentication: closed without an answer, as "
        "Kafka does");
  }
  {
    // Once ApiVersions is answered, a second one is out of place too.
    sasl::gate g(u);
    EXPECT_EQ(g.handle(test::api_versions_request(1, 0)).what, sasl::gate_result::action::pass);
    EXPECT_EQ(g.handle(test::api_versions_request(2, 0)).what, sasl::gate_result::action::close);
  }
  {
    // SaslAuthenticate before SaslHandshake.
    sasl::gate g(u);
    EXPECT_EQ(g.handle(authenticate(1, "x")).what, sasl::gate_result::action::close);
  }
  {
    // After SaslHandshake v1, only SaslAuthenticate.
    sasl::gate g(u);
    ASSERT_EQ(g.handle(handshake(1, "SCRAM-SHA-256")).what, sasl::gate_result::action::respond);
    EXPECT_EQ(g.handle(test::produce_request(4, 1, "t", 0, {})).what, sasl::gate_result::action::close);
  }
}

TEST(SaslGate, UnsupportedMechanismIsAnsweredWithTheEnabledListThenClosed) {
  const auto u = sasl::users::parse("alice:secret\n");
  sasl::gate g(u);
  const auto r = g.handle(handshake(0, "GSSAPI", 4));
  ASSERT_EQ(r.what, sasl::gate_result::action::respond_and_close);
  const auto a = parse_handshake(r.response);
  EXPECT_EQ(a.error, 33);
  EXPECT_EQ(a.mechanisms, (std::vector<std::string>{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}));
}

TEST(SaslGate, HandshakeV0IsFollowedByRawTokensBothWays) {
  const auto u = sasl::users::parse("alice:secret\n");
  using namespace std::string_literals;
  {
    sasl::gate g(u);
    ASSERT_EQ(g.handle(handshake(0, "PLAIN")).what, sasl::gate_result::action::respond);
    // The raw token is no Kafka request: PLAIN's empty answer is a 4-byte zero size, as Kafka sends it.
    const auto r = g.handle(raw("\0alice\0secret"s));
    ASSERT_EQ(r.what, sasl::gate_result::action::respond);
    EXPECT_EQ(r.response, (bytes{0, 0, 0, 0}));
    EXPECT_EQ(r.note, "authenticated user=alice mechanism=PLAIN framing=raw tokens");
    EXPECT_EQ(g.handle(test::metadata_request(3, {})).what, sasl::gate_result::action::pass);
  }
  {
    // A failure in this framing gets no answer: the connection ends.
    sasl::gate g(u);
    ASSERT_EQ(g.handle(handshake(0, "PLAIN")).what, sasl::gate_result::action::respond);
    const auto r = g.handle(raw("\0alice\0nope"s));
    EXPECT_EQ(r.what, sasl::gate_result::action::close);
    EXPECT_EQ(r.reason, "SASL authentication failed (PLAIN, raw tokens): wrong password for user 'alice'");
  }
  {
    // SCRAM: the server-first-message comes back size-prefixed, echoing the client nonce.
    sasl::gate g(u);
    ASSERT_EQ(g.handle(handshake(0, "SCRAM-SHA-512")).what, sasl::gate_result::action::respond);
    const auto r = g.handle(raw("n,,n=alice,r=clientnonce"));
    ASSERT_EQ(r.what, sasl::gate_result::action::respond);
    const std::string token(r.response.begin() + 4, r.response.end());
    EXPECT_EQ(kws::load_be32(r.response.data()), static_cast<std::int32_t>(token.size()));
    EXPECT_TRUE(token.starts_with("r=clientnonce")) << token;
    EXPECT_NE(token.find(",i=4096"), std::string::npos) << token;
  }
}

// The library's client side (kws::kafka::sasl::client_exchange, which the gateway's lookup uses) against the
// dev broker's gate: two implementations written apart, each also checked against the RFC vectors and, for
// the gate, against librdkafka, kafka-python and confluent-kafka.
TEST(SaslGate, TheLibrarysClientExchangeAuthenticatesWithEachMechanism) {
  const auto u = sasl::users::parse("alice:alice-secret\n");
  using kws::kafka::sasl::client_exchange;
  for (auto m : sasl::enabled_mechanisms) {
    SCOPED_TRACE(std::string(sasl::mechanism_name(m)));
    for (const std::string password : {"alice-secret", "wrong"}) {
      sasl::gate g(u);
      client_exchange x({m, "alice", password}, "gw", sasl::make_nonce());
      auto step = x.start();
      int rounds = 0;
      sasl::gate_result last;
      while (step.what == client_exchange::step::status::send && rounds++ < 5) {
        last = g.handle(step.frame);
        ASSERT_NE(last.what, sasl::gate_result::action::pass);
        ASSERT_NE(last.what, sasl::gate_result::action::close) << last.reason;
        step = x.on_response(last.response);
      }
      if (password == "wrong") {
        EXPECT_EQ(step.what, client_exchange::step::status::failed);
        EXPECT_EQ(last.what, sasl::gate_result::action::respond_and_close);
        EXPECT_NE(step.failure.find("authentication failed for user 'alice' with " +
                                    std::string(sasl::mechanism_name(m)) + ": Authentication failed"),
                  std::string::npos)
            << step.failure;
        EXPECT_FALSE(g.authenticated());
      } else {
        EXPECT_EQ(step.what, client_exchange::step::status::done) << step.failure;
        EXPECT_TRUE(g.authenticated());
        EXPECT_EQ(rounds, m == sasl::mechanism::plain ? 2 : 3);
        // The request after it uses the next correlation id, and goes to the broker.
        EXPECT_EQ(x.next_correlation_id(), rounds + 1);
        EXPECT_EQ(g.handle(test::metadata_request(x.next_correlation_id(), {})).what,
                  sasl::gate_result::action::pass);
      }
    }
  }
}
