// kws::rdkafka in-process: the kws.* properties as pure functions, then the hook inside real librdkafka
// clients (C API) against test WebSocket servers on 127.0.0.1: which URL, TLS settings and headers each
// broker connection gets, configuration copies, misconfiguration, and teardown with the client.
#include "engine.hpp"
#include "test_env.hpp"
#include "ws_test_server.hpp"

#include <kws/rdkafka.hpp>

#include <librdkafka/rdkafka.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using kws::rdkafka::config;
using kws::rdkafka::property_result;
using kws::rdkafka::set_property;

// ---- properties -----------------------------------------------------------------------------------------

TEST(Properties, EachPropertySetsItsField) {
  config c;
  std::string e;
  EXPECT_EQ(set_property(c, "kws.url.template", "wss://gw.example/kafka/{node_id}", e), property_result::ok);
  EXPECT_EQ(c.url_template, "wss://gw.example/kafka/{node_id}");
  EXPECT_EQ(set_property(c, "kws.bootstrap.url.template", "wss://gw.example/kafka", e), property_result::ok);
  EXPECT_EQ(c.bootstrap_url_template, "wss://gw.example/kafka");
  EXPECT_EQ(set_property(c, "kws.tls", "true", e), property_result::ok);
  EXPECT_TRUE(c.dialer.tls);
  EXPECT_EQ(set_property(c, "kws.insecure", "1", e), property_result::ok);
  EXPECT_TRUE(c.dialer.insecure_skip_verify);
  EXPECT_EQ(set_property(c, "kws.header.Authorization", "Bearer abc", e), property_result::ok);
  ASSERT_EQ(c.dialer.headers.size(), 1u);
  EXPECT_EQ(c.dialer.headers[0], (std::pair<std::string, std::string>{"Authorization", "Bearer abc"}));
  EXPECT_EQ(set_property(c, "kws.broker.api", "0.8", e), property_result::ok);
  EXPECT_EQ(c.broker_api, kws::kafka::broker_api::kafka_0_8);
  EXPECT_EQ(set_property(c, "kws.api.versions.timeout.ms", "250", e), property_result::ok);
  EXPECT_EQ(c.api_versions_timeout, 250ms);
  EXPECT_EQ(set_property(c, "kws.api.versions.timeout.ms", "0", e), property_result::ok);
  EXPECT_EQ(c.api_versions_timeout, 0ms) << "never take a broker for Kafka 0.8";
  EXPECT_EQ(set_property(c, "kws.api.versions.timeout.ms", nullptr, e), property_result::ok);
  EXPECT_EQ(c.api_versions_timeout, 1000ms) << "reset to the default";
  EXPECT_EQ(set_property(c, "kws.handshake.timeout.ms", "2500", e), property_result::ok);
  EXPECT_EQ(c.dialer.handshake_timeout, 2500ms);
  EXPECT_EQ(set_property(c, "kws.ping.interval.ms", "1000", e), property_result::ok);
  EXPECT_EQ(c.dialer.idle_timeout, 2000ms);
  EXPECT_TRUE(c.dialer.keepalive_pings);
  EXPECT_EQ(set_property(c, "kws.ping.interval.ms", "0", e), property_result::ok);
  EXPECT_FALSE(c.dialer.keepalive_pings);
  EXPECT_EQ(c.dialer.idle_timeout, 0ms);
  EXPECT_EQ(set_property(c, "kws.max.frame.bytes", "1048576", e), property_result::ok);
  EXPECT_EQ(c.dialer.max_frame_bytes, 1048576u);
  EXPECT_EQ(set_property(c, "kws.max.in.flight", "7", e), property_result::ok);
  EXPECT_EQ(c.max_in_flight, 7u);
  EXPECT_FALSE(c.broker_max_in_flight) << "unset: the broker api's default";
  EXPECT_EQ(set_property(c, "kws.broker.max.in.flight", "3", e), property_result::ok);
  EXPECT_EQ(c.broker_max_in_flight, 3u);
  EXPECT_EQ(set_property(c, "kws.broker.max.in.flight", "0", e), property_result::ok);
  EXPECT_EQ(c.broker_max_in_flight, 0u);
  EXPECT_EQ(set_property(c, "kws.broker.max.in.flight", nullptr, e), property_result::ok);
  EXPECT_FALSE(c.broker_max_in_flight) << "reset to the broker api's default";
  EXPECT_EQ(set_property(c, "kws.log.level", "debug", e), property_result::ok);
  EXPECT_EQ(c.min_log_level, kws::log_level::debug);
  EXPECT_EQ(set_property(c, "kws.log.level", "off", e), property_result::ok);
  EXPECT_FALSE(c.log);
  EXPECT_EQ(set_property(c, "kws.log.level", "warn", e), property_result::ok);
  EXPECT_TRUE(c.log) << "a level after off logs to stderr again";
  EXPECT_EQ(e, "") << "no error text for good values";
}

TEST(Properties, DefaultsMatchTheProxy) {
  const config c;
  EXPECT_TRUE(c.url_template.empty());
  EXPECT_FALSE(c.dialer.tls);
  EXPECT_EQ(c.dialer.idle_timeout, 60s) << "pings every 30 s, as kafka-websocket-proxy's --ping-interval";
  EXPECT_TRUE(c.dialer.keepalive_pings);
  EXPECT_EQ(c.broker_api, kws::kafka::broker_api::negotiate);
  EXPECT_EQ(c.api_versions_timeout, 1000ms) << "as kafka-websocket-proxy's --api-versions-timeout";
  EXPECT_EQ(c.min_log_level, kws::log_level::warn);
}

TEST(Properties, HttpProxyTakesNoneEnvOrAUrlAndNeverEchoesCredentials) {
  config cfg;
  std::string e;
  ASSERT_EQ(set_property(cfg, "kws.http.proxy", "http://alice:s3cret@proxy.example:3128", e),
            property_result::ok)
      << e;
  EXPECT_EQ(cfg.dialer.forward_proxy.https_proxy, "http://alice:s3cret@proxy.example:3128");
  EXPECT_EQ(cfg.dialer.forward_proxy.http_proxy, cfg.dialer.forward_proxy.https_proxy);
  EXPECT_FALSE(cfg.dialer.forward_proxy.direct_loopback) << "an explicit proxy carries loopback brokers too";
  ASSERT_EQ(set_property(cfg, "kws.http.proxy", "none", e), property_result::ok);
  EXPECT_TRUE(cfg.dialer.forward_proxy.empty());
  // env reads this process's variables now, as the proxy does at start-up.
  ::setenv("HTTPS_PROXY", "http://env-proxy.example:8080", 1);
  ::setenv("NO_PROXY", "internal.example", 1);
  ASSERT_EQ(set_property(cfg, "kws.http.proxy", "env", e), property_result::ok);
  ::unsetenv("HTTPS_PROXY");
  ::unsetenv("NO_PROXY");
  EXPECT_EQ(cfg.dialer.forward_proxy.https_proxy, "http://env-proxy.example:8080");
  EXPECT_EQ(cfg.dialer.forward_proxy.no_proxy, "internal.example");
  EXPECT_TRUE(cfg.dialer.forward_proxy.direct_loopback);
  ASSERT_EQ(set_property(cfg, "kws.http.proxy", nullptr, e), property_result::ok);
  EXPECT_TRUE(cfg.dialer.forward_proxy.empty()) << "reset: none";

  const auto before = cfg.dialer.forward_proxy.https_proxy;
  EXPECT_EQ(set_property(cfg, "kws.http.proxy", "socks5://bob:hunter2@proxy.example:1080", e),
            property_result::invalid);
  EXPECT_NE(e.find("configuration property \"kws.http.proxy\""), std::string::npos) << e;
  EXPECT_EQ(e.find("hunter2"), std::string::npos) << e;
  EXPECT_EQ(cfg.dialer.forward_proxy.https_proxy, before) << "a bad value changes nothing";
}

TEST(Properties, BadValuesAreInvalidWithLibrdkafkasWordingNamingTheProperty) {
  struct bad {
    const char* name;
    const char* value;
  };
  const bad cases[] = {{"kws.tls", "maybe"},
                       {"kws.insecure", "yes please"},
                       {"kws.url.template", "http://{host}:{port}/"},
                       {"kws.url.template", "ws://{host}:{port}/{topic}"},
                       {"kws.bootstrap.url.template", "{host}:{port}"},
                       {"kws.ca.file", "/nonexistent/ca.pem"},
                       {"kws.ca.file", "/"},
                       {"kws.broker.api", "0.9"},
                       {"kws.api.versions.timeout.ms", "-1"},
                       {"kws.api.versions.timeout.ms", "60001"},
                       {"kws.api.versions.timeout.ms", "1s"},
                       {"kws.handshake.timeout.ms", "0"},
                       {"kws.handshake.timeout.ms", "10s"},
                       {"kws.ping.interval.ms", "-1"},
                       {"kws.max.frame.bytes", "12"},
                       {"kws.max.in.flight", "0"},
                       {"kws.broker.max.in.flight", "-1"},
                       {"kws.broker.max.in.flight", "one"},
                       {"kws.log.level", "loud"},
                       {"kws.header.X-Token", "a\r\nInjected: yes"}};
  for (const auto& c : cases) {
    config cfg;
    const config before;
    std::string e;
    EXPECT_EQ(set_property(cfg, c.name, c.value, e), property_result::invalid) << c.name << "=" << c.value;
    EXPECT_NE(e.find(std::string("configuration property \"") + c.name + "\""), std::string::npos) << e;
    EXPECT_EQ(cfg.url_template, before.url_template) << "a bad value changes nothing";
    EXPECT_EQ(cfg.dialer.tls, before.dialer.tls);
  }
  config cfg;
  std::string e;
  EXPECT_EQ(set_property(cfg, "kws.header.Bad Name", "x", e), property_result::invalid);
  EXPECT_NE(e.find("\"kws.header.Bad Name\""), std::string::npos) << e;
}

TEST(Properties, UnreadableOrEmptyCaFilesAreRejectedWhenSet) {
  kws::test::temp_dir dir("kws-rdkafka-ca");
  kws::test::write_file(dir / "garbage.pem", "not a certificate\n");
  config cfg;
  std::string e;
  EXPECT_EQ(set_property(cfg, "kws.ca.file", (dir / "garbage.pem").c_str(), e), property_result::invalid);
  EXPECT_NE(e.find("cannot load CA certificates"), std::string::npos) << e;
  const auto certs = kws::test::make_test_certificates();
  EXPECT_EQ(set_property(cfg, "kws.ca.file", certs.ca_pem.c_str(), e), property_result::ok) << e;
  EXPECT_EQ(cfg.dialer.ca_file, certs.ca_pem);
  std::filesystem::remove_all(certs.dir);
}

// kws.cert.file and kws.key.file: each file is loaded as it is set, and the pair is checked once both are;
// validate() wants both or neither.
TEST(Properties, AClientCertificateAndItsKeyAreCheckedWhenSet) {
  const auto certs = kws::test::make_test_certificates();
  const auto other = kws::test::make_test_certificates();
  config cfg;
  std::string e;
  EXPECT_EQ(set_property(cfg, "kws.cert.file", certs.key_pem.c_str(), e), property_result::invalid);
  EXPECT_NE(e.find("cannot load the client certificate: TLS certificate " + certs.key_pem), std::string::npos)
      << e;
  EXPECT_EQ(set_property(cfg, "kws.cert.file", certs.cert_pem.c_str(), e), property_result::ok) << e;
  EXPECT_FALSE(validate(cfg, e)) << "a certificate without its key";
  EXPECT_NE(e.find("\"kws.cert.file\" needs \"kws.key.file\""), std::string::npos) << e;
  EXPECT_EQ(set_property(cfg, "kws.key.file", other.key_pem.c_str(), e), property_result::invalid);
  EXPECT_NE(e.find("configuration property \"kws.key.file\": cannot load the client certificate: TLS "
                   "private key " +
                   other.key_pem),
            std::string::npos)
      << e;
  EXPECT_TRUE(cfg.dialer.key_file.empty()) << "a bad value changes nothing";
  EXPECT_EQ(set_property(cfg, "kws.key.file", certs.key_pem.c_str(), e), property_result::ok) << e;
  EXPECT_EQ(cfg.dialer.cert_file, certs.cert_pem);
  EXPECT_EQ(cfg.dialer.key_file, certs.key_pem);
  EXPECT_TRUE(validate(cfg, e)) << e;
  std::filesystem::remove_all(certs.dir);
  std::filesystem::remove_all(other.dir);
}

TEST(Properties, NamesOutsideTheListAreUnknownAndLeaveTheErrorAlone) {
  config cfg;
  std::string e = "untouched";
  EXPECT_EQ(set_property(cfg, "kws.bogus", "1", e), property_result::unknown);
  EXPECT_EQ(set_property(cfg, "kws.tls.extra", "1", e), property_result::unknown);
  EXPECT_EQ(set_property(cfg, "bootstrap.servers", "x:1", e), property_result::unknown);
  EXPECT_EQ(e, "untouched");
}

TEST(Properties, NullResetsToTheDefaultAndHeadersReplaceByName) {
  config cfg;
  std::string e;
  set_property(cfg, "kws.tls", "true", e);
  set_property(cfg, "kws.handshake.timeout.ms", "5", e);
  EXPECT_EQ(set_property(cfg, "kws.tls", nullptr, e), property_result::ok);
  EXPECT_EQ(set_property(cfg, "kws.handshake.timeout.ms", nullptr, e), property_result::ok);
  EXPECT_FALSE(cfg.dialer.tls);
  EXPECT_EQ(cfg.dialer.handshake_timeout, config{}.dialer.handshake_timeout);
  set_property(cfg, "kws.header.X-Token", "one", e);
  set_property(cfg, "kws.header.Other", "o", e);
  set_property(cfg, "kws.header.x-token", "two", e);
  ASSERT_EQ(cfg.dialer.headers.size(), 2u);
  EXPECT_EQ(cfg.dialer.headers[1], (std::pair<std::string, std::string>{"x-token", "two"}));
  set_property(cfg, "kws.header.X-TOKEN", nullptr, e);
  ASSERT_EQ(cfg.dialer.headers.size(), 1u);
  EXPECT_EQ(cfg.dialer.headers[0].first, "Other");
}

TEST(Properties, ValidateChecksAConfigMadeInCode) {
  std::string e;
  EXPECT_TRUE(kws::rdkafka::validate(config{}, e)) << e;
  config bad;
  bad.url_template = "tcp://{host}:{port}";
  EXPECT_FALSE(kws::rdkafka::validate(bad, e));
  EXPECT_NE(e.find("\"kws.url.template\""), std::string::npos) << e;
  config bad_ca;
  bad_ca.dialer.ca_file = "/nonexistent.pem";
  EXPECT_FALSE(kws::rdkafka::validate(bad_ca, e));
  EXPECT_NE(e.find("\"kws.ca.file\""), std::string::npos) << e;
  config bad_header;
  bad_header.dialer.headers = {{"Bad:Name", "x"}};
  EXPECT_FALSE(kws::rdkafka::validate(bad_header, e));
}

TEST(BrokerName, ParsesTheFormsLibrdkafkaUses) {
  std::string host;
  std::int32_t port = 0;
  ASSERT_TRUE(kws::rdkafka::detail::parse_broker_name("mybroker.workers.dev:443", host, port));
  EXPECT_EQ(host, "mybroker.workers.dev");
  EXPECT_EQ(port, 443);
  ASSERT_TRUE(kws::rdkafka::detail::parse_broker_name("[::1]:9092", host, port));
  EXPECT_EQ(host, "::1");
  EXPECT_EQ(port, 9092);
  ASSERT_TRUE(kws::rdkafka::detail::parse_broker_name("sasl_plaintext://b-1.internal:9096/3", host, port));
  EXPECT_EQ(host, "b-1.internal");
  EXPECT_EQ(port, 9096);
  ASSERT_TRUE(kws::rdkafka::detail::parse_broker_name("127.0.0.1:8787/bootstrap", host, port));
  EXPECT_EQ(port, 8787);
  EXPECT_FALSE(kws::rdkafka::detail::parse_broker_name("no-port", host, port));
  EXPECT_FALSE(kws::rdkafka::detail::parse_broker_name("host:0", host, port));
  EXPECT_FALSE(kws::rdkafka::detail::parse_broker_name("host:99999", host, port));
  EXPECT_FALSE(kws::rdkafka::detail::parse_broker_name("[::1]9092", host, port));
  ASSERT_TRUE(kws::rdkafka::detail::parse_broker_name("ssl://[fd00::2]:9093/7", host, port));
  EXPECT_EQ(host, "fd00::2");
  EXPECT_EQ(port, 9093);
  for (const char* bad : {"::1:9092", "h:", ":9092", "[::1]:0", "[v1.x]:1", "a:b:9092/1"})
    EXPECT_FALSE(kws::rdkafka::detail::parse_broker_name(bad, host, port)) << bad;
}

// ---- the hook in librdkafka clients -----------------------------------------------------------------------

// What a test WebSocket server saw of each connection.
struct seen_connection {
  std::string target;
  std::map<std::string, std::string> headers;
  std::string server_name;
};

class recorder {
 public:
  // The script: note the upgrade request, then close (librdkafka sees a disconnect and retries).
  kws::test::ws_script script() {
    return [this](kws::test::ws_peer& p) {
      {
        std::lock_guard lock(mu_);
        seen_.push_back({p.request_target(), p.request_headers(), p.server_name()});
      }
      changed_.notify_all();
      p.close();
    };
  }
  std::optional<seen_connection> first(std::chrono::milliseconds limit = 10s) {
    std::unique_lock lock(mu_);
    if (!changed_.wait_for(lock, limit, [&] { return !seen_.empty(); })) return std::nullopt;
    return seen_.front();
  }

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  std::vector<seen_connection> seen_;
};

// Notes the hook logged, for checks (the hook calls it from its own thread and librdkafka's).
class log_capture {
 public:
  kws::rdkafka::log_function function() {
    return [this](kws::log_level level, std::string_view client, std::string_view text) {
      std::lock_guard lock(mu_);
      lines_.push_back(std::to_string(static_cast<int>(level)) + "|" + std::string(client) + "| " +
                       std::string(text));
      changed_.notify_all();
    };
  }
  bool wait_for(const std::string& part, std::chrono::milliseconds limit = 10s) {
    std::unique_lock lock(mu_);
    return changed_.wait_for(lock, limit, [&] {
      for (const auto& l : lines_)
        if (l.find(part) != std::string::npos) return true;
      return false;
    });
  }
  std::string all() {
    std::lock_guard lock(mu_);
    std::string s;
    for (const auto& l : lines_) s += l + "\n";
    return s;
  }

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  std::vector<std::string> lines_;
};

rd_kafka_conf_t* conf_with(const std::string& bootstrap) {
  auto* conf = rd_kafka_conf_new();
  char err[512];
  EXPECT_EQ(rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap.c_str(), err, sizeof err),
            RD_KAFKA_CONF_OK);
  // Quiet: the test servers close every connection, which librdkafka would report on stderr.
  rd_kafka_conf_set(conf, "log_level", "0", err, sizeof err);
  return conf;
}

rd_kafka_t* producer_from(rd_kafka_conf_t* conf) {
  char err[512];
  auto* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  EXPECT_NE(rk, nullptr) << err;
  return rk;
}

// Threads of this process named `name` (the hook names its relay thread kws-websocket; threads started from
// it inherit the name).
int threads_named(const std::string& name) {
  int n = 0;
  for (const auto& t : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(t.path() / "comm");
    std::string s;
    std::getline(comm, s);
    if (s == name) ++n;
  }
  return n;
}

TEST(Hook, EveryConnectionDialsTheTemplateUrlWithTlsTheCaFileAndTheHeaders) {
  const auto certs = kws::test::make_test_certificates();
  recorder rec;
  kws::test::ws_test_server server(rec.script(), {.tls = &certs});
  config cfg;
  cfg.dialer.tls = true;
  cfg.dialer.ca_file = certs.ca_pem;
  cfg.dialer.headers = {{"Authorization", "Bearer t0ken"}, {"X-Client", "hook-test"}};
  cfg.url_template = "wss://{host}:{port}/kafka/{node_id}";
  cfg.bootstrap_url_template = "wss://{host}:{port}/kafka/bootstrap";
  log_capture logs;
  cfg.log = logs.function();
  cfg.min_log_level = kws::log_level::debug;
  // librdkafka dials its bootstrap server at once; "localhost" is what the test certificate names.
  auto* conf = conf_with("localhost:" + std::to_string(server.port()));
  kws::rdkafka::enable(conf, cfg);
  auto* rk = producer_from(conf);
  const auto seen = rec.first();
  rd_kafka_destroy(rk);
  ASSERT_TRUE(seen) << "no connection reached the server\n" << logs.all();
  EXPECT_EQ(seen->target, "/kafka/bootstrap");
  EXPECT_EQ(seen->headers.at("authorization"), "Bearer t0ken");
  EXPECT_EQ(seen->headers.at("x-client"), "hook-test");
  EXPECT_EQ(seen->server_name, "localhost") << "SNI from the URL's host";
  EXPECT_TRUE(logs.wait_for("rdkafka#producer-")) << "notes name the client\n" << logs.all();
  EXPECT_EQ(logs.all().find("t0ken"), std::string::npos) << "header values are never logged";
  std::filesystem::remove_all(certs.dir);
}

TEST(Hook, KwsPropertiesWorkOnTheConfigurationOnceTheHookIsOn) {
  recorder rec;
  kws::test::ws_test_server server(rec.script());
  auto* conf = conf_with(server.address());
  char err[512] = "";
  EXPECT_EQ(rd_kafka_conf_set(conf, "kws.url.template", "ws://{host}:{port}/x", err, sizeof err),
            RD_KAFKA_CONF_UNKNOWN)
      << "without the hook librdkafka knows no kws.* property";
  EXPECT_STREQ(err, "No such configuration property: \"kws.url.template\"");
  kws::rdkafka::enable(conf, config{});
  EXPECT_EQ(rd_kafka_conf_set(conf, "kws.bootstrap.url.template", "ws://{host}:{port}/by-property", err,
                              sizeof err),
            RD_KAFKA_CONF_OK)
      << err;
  EXPECT_EQ(rd_kafka_conf_set(conf, "kws.bogus", "1", err, sizeof err), RD_KAFKA_CONF_UNKNOWN);
  EXPECT_STREQ(err, "No such configuration property: \"kws.bogus\"");
  EXPECT_EQ(rd_kafka_conf_set(conf, "kws.url.template", "ftp://{host}/", err, sizeof err),
            RD_KAFKA_CONF_INVALID);
  EXPECT_NE(std::string(err).find("configuration property \"kws.url.template\""), std::string::npos) << err;
  auto* rk = producer_from(conf);
  const auto seen = rec.first();
  rd_kafka_destroy(rk);
  ASSERT_TRUE(seen);
  EXPECT_EQ(seen->target, "/by-property");
}

TEST(Hook, CopiesOfTheConfigurationKeepTheHookAndItsSettings) {
  recorder rec;
  kws::test::ws_test_server server(rec.script());
  auto* conf = conf_with(server.address());
  config cfg;
  cfg.bootstrap_url_template = "ws://{host}:{port}/from-code";
  kws::rdkafka::enable(conf, cfg);
  char err[512];
  ASSERT_EQ(rd_kafka_conf_set(conf, "kws.header.X-Set-By", "property", err, sizeof err), RD_KAFKA_CONF_OK);
  // librdkafka++ copies the configuration for every client it creates; the original may go first.
  auto* copy = rd_kafka_conf_dup(conf);
  rd_kafka_conf_destroy(conf);
  EXPECT_EQ(rd_kafka_conf_set(copy, "kws.tls", "false", err, sizeof err), RD_KAFKA_CONF_OK) << err;
  auto* rk = producer_from(copy);
  const auto seen = rec.first();
  rd_kafka_destroy(rk);
  ASSERT_TRUE(seen);
  EXPECT_EQ(seen->target, "/from-code") << "settings made in code survive the copy";
  EXPECT_EQ(seen->headers.at("x-set-by"), "property") << "and so do properties";
}

TEST(Hook, EnableAgainReplacesTheSettingsAndBadSettingsThrowNamingTheProperty) {
  recorder rec;
  kws::test::ws_test_server server(rec.script());
  auto* conf = conf_with(server.address());
  config first;
  first.bootstrap_url_template = "ws://{host}:{port}/first";
  kws::rdkafka::enable(conf, first);
  config bad;
  bad.url_template = "http://{host}:{port}/";
  try {
    kws::rdkafka::enable(conf, bad);
    ADD_FAILURE() << "a bad template was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("\"kws.url.template\""), std::string::npos) << e.what();
  }
  config second;
  second.bootstrap_url_template = "ws://{host}:{port}/second";
  std::string error;
  ASSERT_TRUE(kws::rdkafka::enable(conf, second, error)) << error;
  auto* rk = producer_from(conf);
  const auto seen = rec.first();
  rd_kafka_destroy(rk);
  ASSERT_TRUE(seen);
  EXPECT_EQ(seen->target, "/second");
}

TEST(Hook, UnreachableBrokerIsLoggedWithItsUrlAndLibrdkafkaKeepsRetrying) {
  const auto port = kws::test::free_port();
  auto* conf = conf_with("127.0.0.1:" + std::to_string(port));
  char err[512];
  rd_kafka_conf_set(conf, "reconnect.backoff.ms", "10", err, sizeof err);
  rd_kafka_conf_set(conf, "reconnect.backoff.max.ms", "50", err, sizeof err);
  config cfg;
  log_capture logs;
  cfg.log = logs.function();
  kws::rdkafka::enable(conf, cfg);
  auto* rk = producer_from(conf);
  const auto url = "ws://127.0.0.1:" + std::to_string(port) + "/";
  // Two failed dials: the first, and librdkafka's reconnect after it.
  EXPECT_TRUE(
      logs.wait_for("conn 2 bootstrap server 127.0.0.1:" + std::to_string(port) + ": cannot open " + url))
      << logs.all();
  rd_kafka_destroy(rk);
  EXPECT_NE(logs.all().find("Connection refused"), std::string::npos) << logs.all();
}

TEST(Hook, TheRelayThreadEndsWithTheClient) {
  recorder rec;
  kws::test::ws_test_server server(rec.script());
  const int before = threads_named("kws-websocket");
  for (int i = 0; i < 5; ++i) {
    auto* conf = conf_with(server.address());
    kws::rdkafka::enable(conf, config{});
    auto* rk = producer_from(conf);
    // The relay thread, and once it has dialled, Asio's resolver thread (which inherits its name).
    EXPECT_GE(threads_named("kws-websocket"), before + 1) << "a relay thread per client";
    const auto t = std::chrono::steady_clock::now();
    rd_kafka_destroy(rk);
    EXPECT_LT(std::chrono::steady_clock::now() - t, 3s) << "destroying a client stays quick";
    EXPECT_EQ(threads_named("kws-websocket"), before) << "rd_kafka_destroy joined the relay thread";
  }
  EXPECT_TRUE(rec.first()) << "the clients did connect";
}

}  // namespace
