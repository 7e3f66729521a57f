// Process-level tests of the dev broker's TCP listener with TLS (--tcp-tls-cert/--tcp-tls-key) and SASL
// (--sasl-users): real clients (kcat, kafka-python, confluent-kafka) and raw Kafka frames over 127.0.0.1,
// with certificates made at test time.
#include "devbroker_fixture.hpp"
#include "ws_test_server.hpp"

#include <kws/kafka/api_versions.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

using namespace kws::devbroker::test;
using kws::test::read_file;
using kws::test::write_file;

namespace {

/// Lines of `key:value` for kcat -K:, distinct per index.
std::string keyed_lines(int count, const std::string& prefix) {
  std::string out;
  for (int i = 0; i < count; ++i)
    out += prefix + "-key-" + std::to_string(i) + ":value-" + std::to_string(i * 7919) + "\n";
  return out;
}

/// `text` sorted by line, so that messages consumed from several partitions compare with what was produced.
std::string sorted_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::stringstream s(text);
  for (std::string line; std::getline(s, line);) lines.push_back(line);
  std::sort(lines.begin(), lines.end());
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

class DevbrokerSecurity : public DevbrokerProcess {
 protected:
  void SetUp() override {
    tls_ = kws::test::make_test_certificates();
    // A user name with ',' and '=' (escaped as =2C and =3D in SCRAM) and a password with ':'.
    write_file(path("users.txt"), "# dev broker users\nalice:s3cret\nsvc=a,b:p:w=x\n");
  }

  std::vector<std::string> sasl_flags() const { return {"--sasl-users", path("users.txt")}; }
  /// kcat's settings for SASL with `mechanism`, as `user`.
  static std::vector<std::string> kcat_sasl(const std::string& mechanism, const std::string& user = "alice",
                                            const std::string& password = "s3cret",
                                            const std::string& protocol = "sasl_plaintext") {
    return {"-X", "security.protocol=" + protocol, "-X", "sasl.mechanisms=" + mechanism,
            "-X", "sasl.username=" + user,         "-X", "sasl.password=" + password};
  }

  /// Runs tests/devbroker/sasl_clients.py (kafka-python or confluent-kafka) against the TCP listener.
  kws::test::run_result python_client(const std::string& client, const std::string& mechanism,
                                      const std::string& password, const std::string& topic,
                                      const std::string& protocol = "SASL_PLAINTEXT") {
    std::vector<std::string> argv{"/usr/bin/python3", KWS_SASL_CLIENTS_PY,
                                  "--client",         client,
                                  "--bootstrap",      tcp_bootstrap(),
                                  "--protocol",       protocol,
                                  "--mechanism",      mechanism,
                                  "--user",           "alice",
                                  "--password",       password,
                                  "--topic",          topic};
    if (protocol == "SASL_SSL") argv.insert(argv.end(), {"--ca", tls_.ca_pem});
    return kws::test::run(argv, {.stderr_to = spawn_options::stderr_target::captured}, 50s);
  }

  std::vector<std::string> tls_flags() const {
    return {"--tcp-tls-cert", tls_.cert_pem, "--tcp-tls-key", tls_.key_pem};
  }
  /// kcat's settings for the TLS listener, trusting the test CA.
  std::vector<std::string> kcat_tls(const std::string& protocol = "ssl") const {
    return {"-X", "security.protocol=" + protocol, "-X", "ssl.ca.location=" + tls_.ca_pem};
  }

  /// Produces `input` (key:value lines) to `topic` and consumes it back with `extra` kcat settings; the
  /// consumed lines, sorted.
  std::string kcat_round_trip(const std::string& topic, const std::string& input,
                              const std::vector<std::string>& extra) {
    write_file(path("in.txt"), input);
    std::vector<std::string> produce{"-P", "-t", topic, "-K:"};
    produce.insert(produce.end(), extra.begin(), extra.end());
    EXPECT_EQ(kcat(produce, path("in.txt"), "/dev/null"), 0) << read_file(path("kcat.err"));
    std::vector<std::string> consume{"-C", "-t", topic, "-o", "beginning", "-e", "-f", "%k:%s\\n"};
    consume.insert(consume.end(), extra.begin(), extra.end());
    EXPECT_EQ(kcat(consume, "/dev/null", path("out.txt")), 0) << read_file(path("kcat.err"));
    return sorted_lines(read_file(path("out.txt")));
  }

  kws::test::tls_files tls_;
};

}  // namespace

TEST_F(DevbrokerSecurity, KcatOverTlsProducesAndConsumesByteExactOnThreeNodes) {
  ASSERT_TRUE(have("/usr/bin/kcat")) << "kcat is missing: scripts/deps.sh installs it";
  auto flags = tls_flags();
  flags.insert(flags.end(), {"--nodes", "3", "--topic", "secure:3"});
  ASSERT_NO_FATAL_FAILURE(start(flags));
  // Metadata advertises the TLS listeners' own addresses; kcat reaches every partition's leader through them.
  write_file(path("meta.in"), "");
  auto list = kcat_tls();
  list.insert(list.begin(), {"-L", "-t", "secure"});
  ASSERT_EQ(kcat(list, path("meta.in"), path("meta.txt")), 0) << read_file(path("kcat.err"));
  const std::string meta = read_file(path("meta.txt"));
  for (auto port : tcp_ports_)
    EXPECT_NE(meta.find("127.0.0.1:" + std::to_string(port)), std::string::npos) << meta;

  const std::string input = keyed_lines(3000, "tls");
  EXPECT_EQ(kcat_round_trip("secure", input, kcat_tls()), sorted_lines(input));
  // Every partition got messages, so every node's TLS listener carried traffic.
  for (int p = 0; p < 3; ++p) {
    auto one = kcat_tls();
    one.insert(one.begin(),
               {"-C", "-t", "secure", "-p", std::to_string(p), "-o", "beginning", "-e", "-c", "1"});
    EXPECT_EQ(kcat(one, "/dev/null", path("one.txt")), 0) << read_file(path("kcat.err"));
    EXPECT_FALSE(read_file(path("one.txt")).empty()) << "partition " << p;
  }
}

TEST_F(DevbrokerSecurity, FailedTlsHandshakesEndOnlyTheirConnectionWithOneLineEach) {
  ASSERT_TRUE(have("/usr/bin/kcat")) << "kcat is missing: scripts/deps.sh installs it";
  ASSERT_NO_FATAL_FAILURE(start(tls_flags()));

  // A plain-text Kafka client: its ApiVersions request is no TLS record, and the connection just ends.
  tcp_client plain;
  ASSERT_FALSE(plain.connect(tcp_ports_.at(0)));
  ASSERT_FALSE(plain.send(api_versions_request(1, 0)));
  std::string got;
  EXPECT_TRUE(plain.read_until_close(got)) << "the connection stayed open";
  EXPECT_TRUE(got.empty() || got[0] == 0x15) << "only a TLS alert may come back";
  ASSERT_TRUE(wait_protocol_error("^TLS handshake failed: ")) << log();

  // A client that does not trust the certificate (another CA) refuses it: its alert is the reason logged.
  const auto other = kws::test::make_test_certificates();
  write_file(path("in.txt"), "k:v\n");
  EXPECT_NE(kcat({"-P", "-t", "test-topic", "-K:", "-X", "security.protocol=ssl", "-X",
                  "ssl.ca.location=" + other.ca_pem, "-X", "message.timeout.ms=3000"},
                 path("in.txt"), "/dev/null", 15s),
            0);
  ASSERT_TRUE(wait_protocol_error("^TLS handshake failed: .*unknown ca")) << log();

  // Each failed connection has its one close line naming the cause; other clients still work.
  const std::string input = keyed_lines(100, "after");
  EXPECT_EQ(kcat_round_trip("test-topic", input, kcat_tls()), sorted_lines(input));
  EXPECT_GE(logged({field_matching("cause", "^TLS handshake failed: ")}).size(), 2u) << log();
}

// ---- SASL ----

TEST_F(DevbrokerSecurity, KcatWithEveryMechanismProducesAndConsumesByteExactOnThreeNodes) {
  ASSERT_TRUE(have("/usr/bin/kcat")) << "kcat is missing: scripts/deps.sh installs it";
  auto flags = sasl_flags();
  flags.insert(flags.end(), {"--nodes", "3", "--default-partitions", "3"});
  ASSERT_NO_FATAL_FAILURE(start(flags));
  for (const std::string mechanism : {"SCRAM-SHA-512", "PLAIN", "SCRAM-SHA-256"}) {
    SCOPED_TRACE(mechanism);
    const std::string input = keyed_lines(1500, mechanism);
    EXPECT_EQ(kcat_round_trip("sasl-" + mechanism, input, kcat_sasl(mechanism)), sorted_lines(input));
    EXPECT_TRUE(log_contains("authenticated user=alice mechanism=" + mechanism + " framing=SaslAuthenticate"))
        << log();
  }
  // SCRAM's escaped user names: ',' and '=' travel as =2C and =3D.
  const std::string input = keyed_lines(10, "escaped");
  EXPECT_EQ(kcat_round_trip("escaped", input, kcat_sasl("SCRAM-SHA-512", "svc=a,b", "p:w=x")),
            sorted_lines(input));
  EXPECT_TRUE(log_contains("authenticated user=svc=a,b mechanism=SCRAM-SHA-512")) << log();
  EXPECT_EQ(log().find("s3cret"), std::string::npos) << "a password reached the log";
}

TEST_F(DevbrokerSecurity, KcatWithSaslSslScramSha512ProducesAndConsumesByteExact) {
  ASSERT_TRUE(have("/usr/bin/kcat")) << "kcat is missing: scripts/deps.sh installs it";
  auto flags = sasl_flags();
  const auto tls = tls_flags();
  flags.insert(flags.end(), tls.begin(), tls.end());
  ASSERT_NO_FATAL_FAILURE(start(flags));
  auto settings = kcat_sasl("SCRAM-SHA-512", "alice", "s3cret", "sasl_ssl");
  settings.insert(settings.end(), {"-X", "ssl.ca.location=" + tls_.ca_pem});
  const std::string input = keyed_lines(2000, "sasl-ssl");
  EXPECT_EQ(kcat_round_trip("sasl-ssl", input, settings), sorted_lines(input));
  EXPECT_TRUE(log_contains("authenticated user=alice mechanism=SCRAM-SHA-512")) << log();
}

TEST_F(DevbrokerSecurity, WrongPasswordGivesKcatTheBrokersAuthenticationErrorAndNothingElseBreaks) {
  ASSERT_TRUE(have("/usr/bin/kcat")) << "kcat is missing: scripts/deps.sh installs it";
  ASSERT_NO_FATAL_FAILURE(start(sasl_flags()));
  struct wrong {
    std::string mechanism, user, password, client_sees, broker_logs;
  };
  const std::vector<wrong> cases{
      {"SCRAM-SHA-512", "alice", "not-it",
       "SASL authentication error: Authentication failed during authentication due to invalid credentials "
       "with "
       "SASL mechanism SCRAM-SHA-512",
       R"(^SASL authentication failed \(SCRAM-SHA-512\): wrong password for user 'alice'$)"},
      {"SCRAM-SHA-256", "mallory", "s3cret",
       "SASL authentication error: Authentication failed during authentication due to invalid credentials "
       "with "
       "SASL mechanism SCRAM-SHA-256",
       R"(^SASL authentication failed \(SCRAM-SHA-256\): unknown user 'mallory'$)"},
      {"PLAIN", "alice", "not-it",
       "SASL authentication error: Authentication failed: Invalid username or password",
       R"(^SASL authentication failed \(PLAIN\): wrong password for user 'alice'$)"},
  };
  write_file(path("in.txt"), "k:v\n");
  for (const auto& c : cases) {
    SCOPED_TRACE(c.mechanism);
    auto args = kcat_sasl(c.mechanism, c.user, c.password);
    args.insert(args.begin(), {"-P", "-t", "test-topic", "-K:"});
    EXPECT_NE(kcat(args, path("in.txt"), "/dev/null", 15s), 0);
    const std::string err = read_file(path("kcat.err"));
    EXPECT_NE(err.find(c.client_sees), std::string::npos) << err;
    EXPECT_TRUE(wait_protocol_error(c.broker_logs)) << log();
  }
  // The right password still works, and nothing of the failed attempts was stored.
  const std::string input = keyed_lines(50, "after");
  EXPECT_EQ(kcat_round_trip("test-topic", input, kcat_sasl("SCRAM-SHA-512")), sorted_lines(input));
  EXPECT_EQ(log().find("not-it"), std::string::npos) << "a password reached the log";
}

TEST_F(DevbrokerSecurity, KafkaPythonAuthenticatesWithRawTokensForEveryMechanism) {
  ASSERT_EQ(std::system("/usr/bin/python3 -c 'import kafka' >/dev/null 2>&1"), 0)
      << "python3-kafka is missing: scripts/deps.sh installs it";
  ASSERT_NO_FATAL_FAILURE(start(sasl_flags()));
  // kafka-python 2.0.2 sends SaslHandshake v0, then the SASL tokens as raw size-prefixed frames.
  for (const std::string mechanism : {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}) {
    SCOPED_TRACE(mechanism);
    const auto py = python_client("kafka-python", mechanism, "s3cret", "py-" + mechanism);
    EXPECT_EQ(exit_code(py), 0) << py.out << py.err;
    EXPECT_NE(py.out.find("OK: 500 messages"), std::string::npos) << py.out;
    EXPECT_TRUE(log_contains("authenticated user=alice mechanism=" + mechanism + " framing=raw tokens"))
        << log();
  }
  // A wrong password in that framing gets no answer (as from Kafka): the connection ends, and kafka-python
  // gives up on the broker.
  const auto py = python_client("kafka-python", "SCRAM-SHA-512", "not-it", "py-wrong");
  EXPECT_EQ(exit_code(py), 4) << py.out << py.err;
  EXPECT_NE(py.out.find("AUTH ERROR: NoBrokersAvailable"), std::string::npos) << py.out;
  EXPECT_NE(py.err.find("<authenticating>"), std::string::npos) << py.err;
  EXPECT_NE(py.err.find("Error receiving reply from server"), std::string::npos) << py.err;
  EXPECT_TRUE(wait_protocol_error(
      R"(^SASL authentication failed \(SCRAM-SHA-512, raw tokens\): wrong password for user 'alice'$)"))
      << log();
}

TEST_F(DevbrokerSecurity, ConfluentKafkaOverSaslSslAndItsAuthenticationError) {
  ASSERT_EQ(std::system("/usr/bin/python3 -c 'import confluent_kafka' >/dev/null 2>&1"), 0)
      << "python3-confluent-kafka is missing: scripts/deps.sh installs it";
  auto flags = sasl_flags();
  const auto tls = tls_flags();
  flags.insert(flags.end(), tls.begin(), tls.end());
  ASSERT_NO_FATAL_FAILURE(start(flags));
  for (const std::string mechanism : {"SCRAM-SHA-256", "PLAIN"}) {
    SCOPED_TRACE(mechanism);
    const auto py = python_client("confluent-kafka", mechanism, "s3cret", "ck-" + mechanism, "SASL_SSL");
    EXPECT_EQ(exit_code(py), 0) << py.out << py.err;
    EXPECT_NE(py.out.find("OK: 500 messages"), std::string::npos) << py.out;
  }
  const auto py = python_client("confluent-kafka", "SCRAM-SHA-512", "not-it", "ck-wrong", "SASL_SSL");
  EXPECT_EQ(exit_code(py), 4) << py.out << py.err;
  EXPECT_NE(
      py.out.find("AUTH ERROR: sasl_ssl://127.0.0.1:" + std::to_string(tcp_ports_.at(0)) +
                  "/bootstrap: SASL authentication error: Authentication failed during authentication due "
                  "to invalid credentials with SASL mechanism SCRAM-SHA-512"),
      std::string::npos)
      << py.out;
}

namespace {

// SaslHandshake v1 and SaslAuthenticate v1/v2 frames around kafka-python's SCRAM client (an implementation of
// its own), then a Metadata request once authenticated. Exits 0 when the server's signature checked out.
constexpr const char* framed_scram_py = R"(import socket, struct, sys
from kafka.scram import ScramClient
port, version, user, password = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.create_connection(("127.0.0.1", port), timeout=10)
def recv_exact(n):
    d = b""
    while len(d) < n:
        chunk = s.recv(n - len(d))
        if not chunk: raise SystemExit("connection closed")
        d += chunk
    return d
def roundtrip(key, ver, corr, body, flexible=False):
    header = struct.pack(">hhih", key, ver, corr, 2) + b"py" + (b"\x00" if flexible else b"")
    s.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
    data = recv_exact(struct.unpack(">i", recv_exact(4))[0])
    assert struct.unpack(">i", data[:4])[0] == corr, "correlation id"
    return data[5:] if flexible else data[4:]
def uvarint(n):
    out = b""
    while True:
        b = n & 0x7f; n >>= 7
        if n: out += bytes([b | 0x80])
        else: return out + bytes([b])
def authenticate(token, corr):
    if version >= 2:
        body = roundtrip(36, version, corr, uvarint(len(token) + 1) + token + b"\x00", flexible=True)
        err = struct.unpack(">h", body[:2])[0]
        if err: raise SystemExit("error %d" % err)
        assert body[2] == 0, "null error message"
        n = body[3] - 1  # a one-byte uvarint: the tokens here are short
        return body[4:4 + n]
    body = roundtrip(36, version, corr, struct.pack(">i", len(token)) + token)
    err, msglen = struct.unpack(">hh", body[:4])
    if err: raise SystemExit("error %d" % err)
    n = struct.unpack(">i", body[4:8])[0]
    return body[8:8 + n]
mech = b"SCRAM-SHA-256"
hs = roundtrip(17, 1, 1, struct.pack(">h", len(mech)) + mech)
assert hs[:2] == b"\x00\x00", hs
c = ScramClient(user, password, "SCRAM-SHA-256")
server_first = authenticate(c.first_message().encode(), 2)
c.process_server_first_message(server_first.decode())
server_final = authenticate(c.final_message().encode(), 3)
c.process_server_final_message(server_final.decode())  # raises when the server's signature is wrong
md = roundtrip(3, 1, 4, struct.pack(">i", -1))
print("OK authenticated, metadata %d bytes" % len(md))
)";

}  // namespace

TEST_F(DevbrokerSecurity, SaslAuthenticateV1AndV2FramesCarryScram) {
  ASSERT_EQ(std::system("/usr/bin/python3 -c 'import kafka.scram' >/dev/null 2>&1"), 0)
      << "python3-kafka is missing: scripts/deps.sh installs it";
  ASSERT_NO_FATAL_FAILURE(start(sasl_flags()));
  write_file(path("framed.py"), framed_scram_py);
  for (const char* version : {"1", "2"}) {
    SCOPED_TRACE(version);
    const auto py = kws::test::run(
        {"/usr/bin/python3", path("framed.py"), std::to_string(tcp_ports_.at(0)), version, "alice", "s3cret"},
        {.stderr_to = spawn_options::stderr_target::captured}, 30s);
    EXPECT_EQ(exit_code(py), 0) << py.out << py.err;
    EXPECT_NE(py.out.find("OK authenticated"), std::string::npos) << py.out << py.err;
    EXPECT_TRUE(log_contains(std::string("framing=SaslAuthenticate v") + version)) << log();
  }
  const auto wrong = kws::test::run(
      {"/usr/bin/python3", path("framed.py"), std::to_string(tcp_ports_.at(0)), "2", "alice", "not-it"},
      {.stderr_to = spawn_options::stderr_target::captured}, 30s);
  EXPECT_NE(wrong.err.find("error 58"), std::string::npos) << wrong.out << wrong.err;
}

TEST_F(DevbrokerSecurity, BeforeAuthenticationOnlyApiVersionsAndSaslAreAnswered) {
  ASSERT_NO_FATAL_FAILURE(start(sasl_flags()));
  {
    // ApiVersions is answered, and lists the SASL APIs.
    tcp_client c;
    ASSERT_FALSE(c.connect(tcp_ports_.at(0)));
    const auto res = c.roundtrip(api_versions_request(1, 0));
    error_code ec;
    const auto av = kws::kafka::decode_api_versions_response(0, res, ec);
    ASSERT_FALSE(ec) << ec.message();
    const auto has = [&](api_key key, std::int16_t min, std::int16_t max) {
      return std::find(av.ranges.begin(), av.ranges.end(), kws::kafka::api_version_range{key, min, max}) !=
             av.ranges.end();
    };
    EXPECT_TRUE(has(api_key::sasl_handshake, 0, 1));
    EXPECT_TRUE(has(api_key::sasl_authenticate, 0, 2));
    // Any other request ends the connection without an answer, as Kafka's SaslServerAuthenticator does.
    ASSERT_FALSE(c.send(metadata_request(2, {"test-topic"})));
    std::string rest;
    EXPECT_TRUE(c.read_until_close(rest));
    EXPECT_EQ(rest, "");
    EXPECT_TRUE(
        wait_protocol_error(R"(^metadata v0 \(correlation id 2\) request before SASL authentication: )"
                            R"(closed without an answer, as Kafka does$)"))
        << log();
  }
  {
    // A mechanism the broker does not enable: UNSUPPORTED_SASL_MECHANISM (33) with the enabled list, then
    // close.
    tcp_client c;
    ASSERT_FALSE(c.connect(tcp_ports_.at(0)));
    const auto res = c.roundtrip(
        request(api_key::sasl_handshake, 1, 7, [](kws::kafka::writer& w) { w.string("GSSAPI"); }));
    kws::kafka::reader r(res);
    (void)r.int32();
    EXPECT_EQ(r.int32(), 7);
    EXPECT_EQ(r.int16(), 33);
    std::vector<std::string> mechanisms;
    for (auto n = r.array_count(); n > 0; --n) mechanisms.emplace_back(r.string());
    EXPECT_EQ(mechanisms, (std::vector<std::string>{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}));
    std::string rest;
    EXPECT_TRUE(c.read_until_close(rest));
    EXPECT_TRUE(wait_protocol_error("unsupported SASL mechanism 'GSSAPI'")) << log();
  }
  {
    // Before authentication a frame may hold 512 KiB, Kafka's sasl.server.max.receive.size: a larger size
    // header ends the connection before anything is allocated for it.
    tcp_client c;
    ASSERT_FALSE(c.connect(tcp_ports_.at(0)));
    ASSERT_FALSE(c.send_raw(std::string("\x00\x08\x00\x01", 4)));
    std::string rest;
    EXPECT_TRUE(c.read_until_close(rest));
    EXPECT_TRUE(
        wait_protocol_error("^size header 524289 before SASL authentication: larger than 524288 bytes"))
        << log();
  }
}
