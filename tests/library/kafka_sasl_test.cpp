// The client side of SASL in kws/kafka/sasl.hpp: SCRAM against the RFC 5802 and RFC 7677 exchanges, what
// it refuses from a server, the credentials file, and the frames of a client's exchange (checked against
// Kafka's layouts byte by byte). The exchange against the dev broker's server side is in
// tests/devbroker/sasl_test.cpp.
#include <kws/kafka/sasl.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <stdexcept>
#include <string>

namespace {

namespace sasl = kws::kafka::sasl;
using bytes = std::vector<unsigned char>;

struct rfc_case {
  sasl::scram_hash hash;
  std::string client_nonce, client_first, server_first, client_final, server_final;
};

// RFC 5802 section 5 (SCRAM-SHA-1) and RFC 7677 section 3 (SCRAM-SHA-256): user "user", password "pencil".
const rfc_case rfc5802{sasl::scram_hash::sha1,
                       "fyko+d2lbbFgONRv9qkxdawL",
                       "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
                       "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
                       "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
                       "v=rmF9pqV8S7suAoZWja4dJRkFsKQ="};
const rfc_case rfc7677{
    sasl::scram_hash::sha256,
    "rOprNGfwEbeRWgbNEkqO",
    "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+"
    "Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="};

class ScramClientVector : public ::testing::TestWithParam<rfc_case> {};

TEST_P(ScramClientVector, SendsTheRfcMessagesByteForByteAndChecksTheServersSignature) {
  const auto& v = GetParam();
  sasl::scram_client c(v.hash, "user", "pencil", v.client_nonce);
  EXPECT_EQ(c.first_message(), v.client_first);
  std::string why;
  const auto final = c.final_message(v.server_first, why);
  ASSERT_TRUE(final.has_value()) << why;
  EXPECT_EQ(*final, v.client_final);
  EXPECT_TRUE(c.check_server_final(v.server_final, why)) << why;
}

TEST_P(ScramClientVector, AServerSignatureOtherThanTheExpectedOneOrAnErrorFails) {
  const auto& v = GetParam();
  sasl::scram_client c(v.hash, "user", "pencil", v.client_nonce);
  c.first_message();
  std::string why;
  ASSERT_TRUE(c.final_message(v.server_first, why).has_value()) << why;
  std::string changed = v.server_final;
  changed[2] = changed[2] == 'A' ? 'B' : 'A';
  EXPECT_FALSE(c.check_server_final(changed, why));
  EXPECT_NE(why.find("signature is wrong"), std::string::npos) << why;
  EXPECT_FALSE(c.check_server_final("e=invalid-proof", why));
  EXPECT_NE(why.find("error 'invalid-proof'"), std::string::npos) << why;
  EXPECT_FALSE(c.check_server_final("", why));
}

TEST_P(ScramClientVector, AnotherPasswordMakesAnotherProof) {
  const auto& v = GetParam();
  sasl::scram_client c(v.hash, "user", "pencil2", v.client_nonce);
  c.first_message();
  std::string why;
  const auto final = c.final_message(v.server_first, why);
  ASSERT_TRUE(final.has_value()) << why;
  EXPECT_NE(*final, v.client_final);
  // Nor does the real server's signature check out against it.
  EXPECT_FALSE(c.check_server_final(v.server_final, why));
}

INSTANTIATE_TEST_SUITE_P(Rfc, ScramClientVector, ::testing::Values(rfc5802, rfc7677),
                         [](const auto& info) { return info.index == 0 ? "Rfc5802Sha1" : "Rfc7677Sha256"; });

TEST(ScramClient, RefusesServerFirstMessagesItCannotTrust) {
  const std::vector<std::pair<std::string, std::string>> cases{
      {"r=abc,s=QSXCR+Q6sek8bf92,i=4096", "nonce"},        // not the client's nonce
      {"r=nonce,s=QSXCR+Q6sek8bf92,i=4096", "nonce"},      // the client's alone: no server part
      {"r=nonceX,s=***,i=4096", "salt"},                   // salt not base64
      {"r=nonceX,s=QSXCR+Q6sek8bf92,i=4095", "4096"},      // too few iterations
      {"r=nonceX,s=QSXCR+Q6sek8bf92,i=99999999", "4096"},  // too many
      {"r=nonceX,s=QSXCR+Q6sek8bf92,i=12a", "4096"},
      {"m=ext,r=nonceX,s=QSXCR+Q6sek8bf92,i=4096", "malformed"},
      {"garbage", "malformed"},
  };
  for (const auto& [server_first, expect] : cases) {
    sasl::scram_client c(sasl::scram_hash::sha256, "user", "pencil", "nonce");
    c.first_message();
    std::string why;
    EXPECT_FALSE(c.final_message(server_first, why).has_value()) << server_first;
    EXPECT_NE(why.find(expect), std::string::npos) << server_first << ": " << why;
    // Before a final message was made, no signature is accepted.
    EXPECT_FALSE(c.check_server_final("v=rmF9pqV8S7suAoZWja4dJRkFsKQ=", why));
  }
}

TEST(ScramClient, EncodesCommasAndEqualsInTheUserName) {
  sasl::scram_client c(sasl::scram_hash::sha256, "a,b=c", "p", "n");
  EXPECT_EQ(c.first_message(), "n,,n=a=2Cb=3Dc,r=n");
  EXPECT_EQ(sasl::decode_saslname("a=2Cb=3Dc"), std::optional<std::string>("a,b=c"));
  EXPECT_FALSE(sasl::decode_saslname("a=2Xb").has_value());
}

TEST(SaslCredentials, ParsesKeyValueLines) {
  const auto c = sasl::parse_credentials(
      "# the gateway's lookup\r\n"
      "mechanism = SCRAM-SHA-512\r\n"
      "\n"
      "username=alice\n"
      "  password = s3=cr:et  \n");
  EXPECT_EQ(c.which, sasl::mechanism::scram_sha_512);
  EXPECT_EQ(c.username, "alice");
  EXPECT_EQ(c.password, "s3=cr:et");
  EXPECT_EQ(sasl::parse_credentials("mechanism=PLAIN\nusername=u\npassword=p").which, sasl::mechanism::plain);
}

TEST(SaslCredentials, NamesTheLineAndTheProblemButNeverThePassword) {
  const std::vector<std::pair<std::string, std::string>> cases{
      {"mechanism=PLAIN\nusername=u\n", "no password= line"},
      {"mechanism=PLAIN\nusername=u\npassword=hunter2\npassword=hunter3\n", "line 4: password given twice"},
      {"mechanism=GSSAPI\nusername=u\npassword=hunter2\n", "line 1: unknown mechanism 'GSSAPI'"},
      {"mechanism=scram-sha-512\nusername=u\npassword=hunter2\n", "unknown mechanism"},
      {"mechanism=PLAIN\nuser=u\npassword=hunter2\n", "line 2: unknown key 'user'"},
      {"mechanism=PLAIN\nusername=u\nhunter2\n", "line 3: expected key=value"},
      {"mechanism=PLAIN\nusername=\npassword=hunter2\n", "line 2: empty username"},
      {"", "no mechanism= line"},
  };
  for (const auto& [text, expect] : cases) {
    try {
      sasl::parse_credentials(text);
      ADD_FAILURE() << "accepted: " << text;
    } catch (const std::invalid_argument& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(expect), std::string::npos) << what;
      EXPECT_EQ(what.find("hunter"), std::string::npos) << what;
    }
  }
}

// ---- the frames of a client's exchange ----

bytes frame_of(const std::string& body) {
  bytes out(4 + body.size());
  out[3] = static_cast<unsigned char>(body.size());
  std::copy(body.begin(), body.end(), out.begin() + 4);
  return out;
}
std::string text_of(const bytes& b) {
  return std::string(b.begin(), b.end());
}
using status = sasl::client_exchange::step::status;

TEST(SaslClientExchange, PlainIsAHandshakeV1ThenOneAuthenticateV1) {
  sasl::client_exchange x({sasl::mechanism::plain, "bob", "pw"}, "c", "unused");
  const auto hs = x.start();
  ASSERT_EQ(hs.what, status::send);
  // size, api key 17, version 1, correlation id 1, client id "c", mechanism "PLAIN".
  EXPECT_EQ(text_of(hs.frame), std::string("\0\0\0\x12\0\x11\0\x01\0\0\0\x01\0\x01"
                                           "c\0\x05PLAIN",
                                           22));
  // error 0, mechanisms [PLAIN].
  const auto auth = x.on_response(frame_of(std::string("\0\0\0\x01\0\0\0\0\0\x01\0\x05PLAIN", 17)));
  ASSERT_EQ(auth.what, status::send) << auth.failure;
  // api key 36, version 1, correlation id 2, client id "c", auth_bytes "\0bob\0pw".
  EXPECT_EQ(text_of(auth.frame), std::string("\0\0\0\x16\0\x24\0\x01\0\0\0\x02\0\x01"
                                             "c\0\0\0\x07\0bob\0pw",
                                             26));
  // error 0, message null, auth_bytes empty, session_lifetime_ms 0.
  const auto done =
      x.on_response(frame_of(std::string("\0\0\0\x02\0\0\xff\xff\0\0\0\0\0\0\0\0\0\0\0\0", 20)));
  EXPECT_EQ(done.what, status::done) << done.failure;
  EXPECT_EQ(x.next_correlation_id(), 3);
}

TEST(SaslClientExchange, SaysWhatTheClusterRefused) {
  {
    sasl::client_exchange x({sasl::mechanism::scram_sha_512, "bob", "pw"}, "c", "n");
    x.start();
    // UNSUPPORTED_SASL_MECHANISM (33), the cluster offers PLAIN.
    const auto s = x.on_response(frame_of(std::string("\0\0\0\x01\0\x21\0\0\0\x01\0\x05PLAIN", 17)));
    EXPECT_EQ(s.what, status::failed);
    EXPECT_EQ(s.failure, "the cluster does not enable SASL mechanism SCRAM-SHA-512 (it offers: PLAIN)");
  }
  {
    sasl::client_exchange x({sasl::mechanism::plain, "bob", "pw"}, "c", "n");
    x.start();
    ASSERT_EQ(x.on_response(frame_of(std::string("\0\0\0\x01\0\0\0\0\0\0", 10))).what, status::send);
    // SASL_AUTHENTICATION_FAILED (58) with the broker's message.
    const auto s =
        x.on_response(frame_of(std::string("\0\0\0\x02\0\x3a\0\x03"
                                           "bad\0\0\0\0\0\0\0\0\0\0\0\0",
                                           23)));
    EXPECT_EQ(s.what, status::failed);
    EXPECT_EQ(s.failure, "authentication failed for user 'bob' with PLAIN: bad");
  }
  {
    sasl::client_exchange x({sasl::mechanism::plain, "bob", "pw"}, "c", "n");
    x.start();
    const auto s = x.on_response(frame_of(std::string("\0\0\0\x07\0\0\0\0\0\0", 10)));
    EXPECT_EQ(s.what, status::failed);
    EXPECT_EQ(s.failure, "SASL answer with correlation id 7, not 1");
  }
}

}  // namespace
