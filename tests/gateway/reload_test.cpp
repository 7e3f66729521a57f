// Live reload, with real processes: the gateway's certificate and token file replaced while a producer runs
// through proxy -> wss -> gateway -> dev broker, and the proxy's client certificate; SIGHUP and a changed
// file both reload; a broken file keeps what was in use.
#include "client_tools.hpp"
#include "http_client.hpp"
#include "log_events.hpp"
#include "process.hpp"
#include "test_env.hpp"
#include "ws_test_server.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef KWS_GATEWAY_PATH
#error "KWS_GATEWAY_PATH must name the built kafka-websocket-gateway"
#endif

namespace {

using namespace kws::test;
using namespace std::chrono_literals;

std::vector<std::string> operator+(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Replaces `to` with `content` at once (write aside, then rename), as secret managers and `mv` do.
void replace_file(const std::filesystem::path& to, const std::string& content) {
  const auto aside = to.string() + ".new";
  write_file(aside, content);
  std::filesystem::rename(aside, to);
}

class Reload : public ::testing::Test {
 protected:
  void SetUp() override {
    first_ = make_test_certificates();
    second_ = make_test_certificates();
    write_file(dir_ / "both-cas.pem", read_file(first_.ca_pem) + read_file(second_.ca_pem));
    write_file(dir_ / "server.pem", read_file(first_.cert_pem));
    write_file(dir_ / "server.key", read_file(first_.key_pem));
  }

  void TearDown() override {
    for (auto* p : {&proxy_, &gateway_, &devbroker_}) {
      if (*p) (*p)->signal(SIGTERM);
    }
    for (auto* p : {&proxy_, &gateway_, &devbroker_}) {
      if (*p) (*p)->wait(10s);
    }
    if (HasFailure()) {
      for (auto [name, p] : {std::pair{"proxy", proxy_.get()}, {"gateway", gateway_.get()}}) {
        if (p) std::cerr << "---- " << name << " log ----\n" << p->output();
      }
    }
  }

  void start_devbroker(const std::vector<std::string>& more = {}) {
    devbroker_ = std::make_unique<child_process>(std::vector<std::string>{KWS_DEVBROKER_PATH, "--listen",
                                                                          "127.0.0.1:0", "--tcp-listen",
                                                                          "127.0.0.1:0", "--topic", "rot:1"} +
                                                 more);
    const auto port = devbroker_->wait_for_output(std::regex(R"(tcp=127\.0\.0\.1:(\d+))"));
    ASSERT_TRUE(port) << devbroker_->output();
    upstream_ = "127.0.0.1:" + *port;
    const auto ws = devbroker_->wait_for_output(std::regex(R"(ws=127\.0\.0\.1:(\d+))"));
    ASSERT_TRUE(ws) << devbroker_->output();
    ws_broker_ = "127.0.0.1:" + *ws;
  }

  void start_gateway(const std::vector<std::string>& args) {
    gateway_ = std::make_unique<child_process>(
        std::vector<std::string>{KWS_GATEWAY_PATH, "--listen", "127.0.0.1:0", "--upstream", upstream_,
                                 "--threads", "2", "--drain-timeout", "2s", "--log-format", "json",
                                 "--metrics-listen", "127.0.0.1:0"} +
        args);
    const auto port = gateway_->wait_for_output(std::regex(R"("listening on 127\.0\.0\.1:(\d+))"));
    ASSERT_TRUE(port) << gateway_->output();
    gateway_port_ = static_cast<unsigned short>(std::stoi(*port));
    const auto mport = gateway_->wait_for_output(std::regex(R"(metrics listening on 127\.0\.0\.1:(\d+))"));
    ASSERT_TRUE(mport) << gateway_->output();
    metrics_port_ = static_cast<unsigned short>(std::stoi(*mport));
  }

  // A proxy to the wss gateway that trusts both CAs and sends `token`.
  std::unique_ptr<child_process> make_proxy(const std::string& token, std::string& bootstrap) {
    return make_proxy_with(
        {"--ca-file", (dir_ / "both-cas.pem").string(), "--header", "Authorization: Bearer " + token},
        bootstrap);
  }

  // A proxy to the gateway (wss:// unless `scheme` says otherwise) with `args`.
  std::unique_ptr<child_process> make_proxy_with(const std::vector<std::string>& args, std::string& bootstrap,
                                                 const std::string& scheme = "wss") {
    const auto gw = scheme + "://localhost:" + std::to_string(gateway_port_);
    auto p = std::make_unique<child_process>(
        std::vector<std::string>{KWS_PROXY_PATH, "--listen", "127.0.0.1", "--port", "0", "--broker",
                                 gw + "/kafka", "--broker-url-template", gw + "/kafka/{node_id}",
                                 "--log-format", "json"} +
        args);
    const auto port = p->wait_for_output(std::regex(R"("listening on 127\.0\.0\.1:(\d+))"));
    EXPECT_TRUE(port) << p->output();
    bootstrap = "127.0.0.1:" + port.value_or("0");
    return p;
  }

  // kcat to `bootstrap`, ending within `limit`; its exit code.
  int kcat(const std::string& bootstrap, const std::vector<std::string>& args, const std::string& out,
           std::chrono::milliseconds limit = 30s) {
    const auto r = run(std::vector<std::string>{KWS_KCAT_PATH, "-b", bootstrap} + args,
                       tool_io("/dev/null", dir_ / out), limit);
    return r.exit_code.value_or(-1);
  }

  // Which of the two CAs vouches for the certificate the gateway serves now, by openssl s_client.
  bool served_by(const tls_files& issuer) {
    const auto r =
        run({"/usr/bin/openssl", "s_client", "-connect", "127.0.0.1:" + std::to_string(gateway_port_),
             "-servername", "localhost", "-CAfile", issuer.ca_pem, "-verify_return_error", "-brief"},
            spawn_options{.stderr_to = spawn_options::stderr_target::with_stdout}, 10s);
    return r.exit_code == 0 && r.out.find("Verification: OK") != std::string::npos;
  }

  double reloads(const std::string& result) {
    const auto a = http_request(metrics_port_, "GET", "/metrics");
    return sample(parse_samples(a.body), "kws_reloads_total{result=\"" + result + "\"}");
  }

  temp_dir dir_{"kws-reload"};
  tls_files first_, second_;
  std::unique_ptr<child_process> devbroker_, gateway_, proxy_;
  std::string upstream_, ws_broker_;
  unsigned short gateway_port_ = 0, metrics_port_ = 0;
};

TEST_F(Reload, CertificateAndTokenFileReplacedUnderAProducerDropNothingAndServeTheNextConnection) {
  ASSERT_NO_FATAL_FAILURE(start_devbroker());
  write_file(dir_ / "tokens", "old-token\n");
  ASSERT_NO_FATAL_FAILURE(
      start_gateway({"--tls-cert", (dir_ / "server.pem").string(), "--tls-key",
                     (dir_ / "server.key").string(), "--auth-token-file", (dir_ / "tokens").string()}));
  EXPECT_TRUE(served_by(first_));
  std::string bootstrap;
  proxy_ = make_proxy("old-token", bootstrap);

  // A producer that stays connected: kcat reading its messages from a FIFO.
  const auto fifo = dir_ / "produce.in";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const int writer = ::open(fifo.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(writer, 0);
  auto producer = std::make_unique<child_process>(
      std::vector<std::string>{KWS_KCAT_PATH, "-b", bootstrap, "-P", "-t", "rot", "-K:"},
      tool_io(fifo, dir_ / "produce.out"));
  const auto send = [&](const std::string& text) {
    ASSERT_EQ(::write(writer, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  };
  send(keyed_lines(200, "before-"));
  // Every connection the producer needs is open once a consumer sees one of its messages (the rest may still
  // wait in the producer's queue).
  bool delivered = false;
  for (int attempt = 0; attempt < 20 && !delivered; ++attempt) {
    kcat(bootstrap, {"-C", "-t", "rot", "-o", "beginning", "-e", "-f", "%k:%s\\n"}, "early.out");
    const auto got = lines_of(read_file(dir_ / "early.out"));
    delivered = std::any_of(got.begin(), got.end(), [](const auto& l) { return l.starts_with("before-"); });
  }
  ASSERT_TRUE(delivered) << lines_of(read_file(dir_ / "early.out")).size() << " lines:\n"
                         << read_file(dir_ / "early.out");
  const auto open_before = events(*gateway_, {field("event", "open")}).size();

  // Both files replaced: each is reloaded once it is seen to have changed.
  replace_file(dir_ / "server.pem", read_file(second_.cert_pem));
  replace_file(dir_ / "server.key", read_file(second_.key_pem));
  replace_file(dir_ / "tokens", "new-token\n");
  ASSERT_TRUE(wait_for_event(
      *gateway_, {field("level", "info"), field_matching("msg", "^reloaded --tls-cert/--tls-key ")}));
  ASSERT_TRUE(wait_for_event(
      *gateway_, {field("level", "info"), field_matching("msg", "^reloaded --auth-token-file ")}));

  send(keyed_lines(200, "after-"));
  ::close(writer);  // EOF: kcat flushes and exits
  const auto rc = producer->wait(60s);
  ASSERT_EQ(rc, std::optional<int>(0)) << describe(rc, read_file(dir_ / "produce.out"));
  EXPECT_EQ(events(*gateway_, {field("event", "open")}).size(), open_before)
      << "the producer needed a new connection: one was dropped";
  EXPECT_TRUE(events(*gateway_, {field("event", "refused")}).empty()) << "the producer was refused";

  // The next connection gets the new certificate; the old token is refused, the new one let in.
  EXPECT_TRUE(served_by(second_));
  EXPECT_FALSE(served_by(first_));
  std::string old_bootstrap, new_bootstrap;
  auto old_proxy = make_proxy("old-token", old_bootstrap);
  EXPECT_NE(kcat(old_bootstrap, {"-L", "-m", "3"}, "old.out", 20s), 0);
  EXPECT_TRUE(wait_for_event(*gateway_, {field("event", "refused"), field("status", "401")}));
  auto new_proxy = make_proxy("new-token", new_bootstrap);
  ASSERT_EQ(kcat(new_bootstrap, {"-C", "-t", "rot", "-o", "beginning", "-e", "-f", "%k:%s\\n"}, "all.out"),
            0);
  auto got = lines_of(read_file(dir_ / "all.out"));
  auto sent = lines_of(keyed_lines(200, "before-") + keyed_lines(200, "after-"));
  std::sort(got.begin(), got.end());
  std::sort(sent.begin(), sent.end());
  EXPECT_TRUE(got == sent) << got.size() << " of " << sent.size() << " messages";
  EXPECT_EQ(reloads("ok"), 2);
  EXPECT_EQ(reloads("failed"), 0);
  EXPECT_EQ(gateway_->output().find("new-token"), std::string::npos) << "a token in the log";
}

TEST_F(Reload, ABrokenFileKeepsWhatWasInUseAndSighupReloadsTheFixedOne) {
  ASSERT_NO_FATAL_FAILURE(start_devbroker());
  ASSERT_NO_FATAL_FAILURE(start_gateway(
      {"--tls-cert", (dir_ / "server.pem").string(), "--tls-key", (dir_ / "server.key").string()}));
  // A certificate cut in the middle: the reload fails, one line names the file, the old one is served.
  const auto pem = read_file(second_.cert_pem);
  replace_file(dir_ / "server.pem", pem.substr(0, pem.size() / 2));
  const auto failed = wait_for_event(
      *gateway_,
      {field("level", "warning"), field_matching("msg", "^reload of --tls-cert/--tls-key failed")});
  ASSERT_TRUE(failed) << gateway_->output();
  EXPECT_NE(field_text(*failed, "msg").find((dir_ / "server.pem").string()), std::string::npos)
      << field_text(*failed, "msg");
  EXPECT_EQ(events(*gateway_, {field_matching("msg", "^reload of ")}).size(), 1u);
  EXPECT_TRUE(served_by(first_));
  EXPECT_EQ(reloads("failed"), 1);

  // A key that does not belong to the certificate fails the same way.
  replace_file(dir_ / "server.pem", pem);
  ASSERT_TRUE(
      wait_for_event(*gateway_, {field("level", "warning"), field_containing("msg", "does not belong")}))
      << gateway_->output();
  EXPECT_TRUE(served_by(first_));

  // Fixed, and told by SIGHUP rather than seen: both files are loaded again.
  write_file(dir_ / "server.key", read_file(second_.key_pem));
  gateway_->signal(SIGHUP);
  ASSERT_TRUE(wait_for_event(
      *gateway_, {field("level", "info"), field_matching("msg", "^reloaded --tls-cert/--tls-key ")}));
  EXPECT_TRUE(served_by(second_));
  EXPECT_GE(reloads("ok"), 1);
}

// The proxy's TLS port for Kafka clients: its certificate replaced while it runs, a kcat over SSL served
// before and after.
TEST_F(Reload, TheProxysClientCertificateIsReplacedWhileItRuns) {
  ASSERT_NO_FATAL_FAILURE(start_devbroker());
  proxy_ = std::make_unique<child_process>(
      std::vector<std::string>{KWS_PROXY_PATH, "--listen", "127.0.0.1", "--port", "0", "--broker", upstream_,
                               "--log-format", "json", "--client-tls-cert", (dir_ / "server.pem").string(),
                               "--client-tls-key", (dir_ / "server.key").string()});
  const auto port = proxy_->wait_for_output(std::regex(R"("listening on 127\.0\.0\.1:(\d+))"));
  ASSERT_TRUE(port) << proxy_->output();
  const auto verified_by = [&](const tls_files& issuer) {
    const auto r = run({"/usr/bin/openssl", "s_client", "-connect", "127.0.0.1:" + *port, "-servername",
                        "localhost", "-CAfile", issuer.ca_pem, "-verify_return_error", "-brief"},
                       spawn_options{.stderr_to = spawn_options::stderr_target::with_stdout}, 10s);
    return r.exit_code == 0 && r.out.find("Verification: OK") != std::string::npos;
  };
  EXPECT_TRUE(verified_by(first_));
  replace_file(dir_ / "server.pem", read_file(second_.cert_pem));
  replace_file(dir_ / "server.key", read_file(second_.key_pem));
  ASSERT_TRUE(wait_for_event(
      *proxy_,
      {field("level", "info"), field_matching("msg", "^reloaded --client-tls-cert/--client-tls-key ")}))
      << proxy_->output();
  EXPECT_TRUE(verified_by(second_));
  EXPECT_FALSE(verified_by(first_));
}

TEST_F(Reload, SighupWithNothingToReloadIsLoggedAndTheServersKeepRunning) {
  ASSERT_NO_FATAL_FAILURE(start_devbroker());
  ASSERT_NO_FATAL_FAILURE(start_gateway({}));
  gateway_->signal(SIGHUP);
  EXPECT_TRUE(wait_for_event(*gateway_, {field_containing("msg", "SIGHUP: nothing to reload")}));
  std::string bootstrap;
  proxy_ = std::make_unique<child_process>(std::vector<std::string>{
      KWS_PROXY_PATH, "--listen", "127.0.0.1", "--port", "0", "--broker",
      "ws://127.0.0.1:" + std::to_string(gateway_port_) + "/kafka", "--log-format", "json"});
  const auto port = proxy_->wait_for_output(std::regex(R"("listening on 127\.0\.0\.1:(\d+))"));
  ASSERT_TRUE(port) << proxy_->output();
  proxy_->signal(SIGHUP);
  EXPECT_TRUE(wait_for_event(*proxy_, {field_containing("msg", "SIGHUP: nothing to reload")}));
  EXPECT_EQ(kcat("127.0.0.1:" + *port, {"-L"}, "meta.out"), 0) << read_file(dir_ / "meta.out");
}

// What the proxy reads to dial the broker: its CA file and its header file, each replaced while it runs;
// the next dial uses the new one, and a broken header file keeps the headers in use.
TEST_F(Reload, TheProxysCaFileAndHeaderFileAreReadAgainForTheNextDial) {
  ASSERT_NO_FATAL_FAILURE(start_devbroker());
  write_file(dir_ / "tokens", "old-token\n");
  ASSERT_NO_FATAL_FAILURE(
      start_gateway({"--tls-cert", (dir_ / "server.pem").string(), "--tls-key",
                     (dir_ / "server.key").string(), "--auth-token-file", (dir_ / "tokens").string()}));
  write_file(dir_ / "proxy-ca.pem", read_file(first_.ca_pem));
  write_file(dir_ / "headers", "# the gateway's token\nAuthorization: Bearer old-token\n");
  std::string bootstrap;
  proxy_ = make_proxy_with({"--ca-file", (dir_ / "proxy-ca.pem").string(), "--header-file",
                            (dir_ / "headers").string(), "--dial-retries", "0"},
                           bootstrap);
  ASSERT_EQ(kcat(bootstrap, {"-L"}, "first.out"), 0) << read_file(dir_ / "first.out");

  // The gateway moves to a certificate of the second CA, which the proxy does not trust yet.
  replace_file(dir_ / "server.pem", read_file(second_.cert_pem));
  replace_file(dir_ / "server.key", read_file(second_.key_pem));
  ASSERT_TRUE(wait_for_event(
      *gateway_, {field("level", "info"), field_matching("msg", "^reloaded --tls-cert/--tls-key ")}));
  EXPECT_NE(kcat(bootstrap, {"-L", "-m", "3"}, "refused.out", 20s), 0);
  EXPECT_TRUE(wait_for_event(*proxy_, {field_containing("msg", "certificate was refused")}))
      << proxy_->output();

  replace_file(dir_ / "proxy-ca.pem", read_file(second_.ca_pem));
  ASSERT_TRUE(
      wait_for_event(*proxy_, {field("level", "info"), field_matching("msg", "^reloaded --ca-file ")}))
      << proxy_->output();
  EXPECT_EQ(kcat(bootstrap, {"-L"}, "second.out"), 0) << read_file(dir_ / "second.out");

  // The token changes at both ends: the gateway refuses the old one from now on, so only a proxy that read
  // its header file again gets in.
  replace_file(dir_ / "tokens", "new-token\n");
  ASSERT_TRUE(wait_for_event(
      *gateway_, {field("level", "info"), field_matching("msg", "^reloaded --auth-token-file ")}));
  replace_file(dir_ / "headers", "Authorization: Bearer new-token\n");
  ASSERT_TRUE(
      wait_for_event(*proxy_, {field("level", "info"), field_matching("msg", "^reloaded --header-file ")}))
      << proxy_->output();
  EXPECT_EQ(kcat(bootstrap, {"-L"}, "third.out"), 0) << read_file(dir_ / "third.out");
  EXPECT_TRUE(events(*gateway_, {field("event", "refused"), field("status", "401")}).empty())
      << gateway_->output();

  // A header file that does not parse: one line naming the file and the line, never the value; the proxy
  // keeps sending the headers it had.
  replace_file(dir_ / "headers", "Authorization Bearer secret-in-a-broken-line\n");
  const auto failed = wait_for_event(
      *proxy_, {field("level", "warning"), field_matching("msg", "^reload of --header-file failed")});
  ASSERT_TRUE(failed) << proxy_->output();
  EXPECT_NE(field_text(*failed, "msg").find((dir_ / "headers").string() + " line 1"), std::string::npos)
      << field_text(*failed, "msg");
  EXPECT_EQ(kcat(bootstrap, {"-L"}, "fourth.out"), 0) << read_file(dir_ / "fourth.out");
  const auto log = proxy_->output();
  EXPECT_EQ(log.find("new-token"), std::string::npos) << "a token in the log";
  EXPECT_EQ(log.find("secret-in-a-broken-line"), std::string::npos) << "a header value in the log";
}

// The gateway's CA file for the cluster: the dev broker's certificate comes from a CA the gateway does not
// trust until its --upstream-ca-file is replaced.
TEST_F(Reload, TheGatewaysUpstreamCaFileIsReadAgainForTheNextDial) {
  ASSERT_NO_FATAL_FAILURE(
      start_devbroker({"--tcp-tls-cert", second_.cert_pem, "--tcp-tls-key", second_.key_pem}));
  write_file(dir_ / "upstream-ca.pem", read_file(first_.ca_pem));
  ASSERT_NO_FATAL_FAILURE(
      start_gateway({"--upstream-tls", "--upstream-ca-file", (dir_ / "upstream-ca.pem").string()}));
  std::string bootstrap;
  proxy_ = make_proxy_with({"--dial-retries", "0"}, bootstrap, "ws");
  EXPECT_NE(kcat(bootstrap, {"-L", "-m", "3"}, "refused.out", 20s), 0);
  EXPECT_TRUE(wait_for_event(*gateway_, {field("event", "closed"), field("end", "cluster_unreachable"),
                                         field_containing("cause", "certificate was refused")}))
      << gateway_->output();

  replace_file(dir_ / "upstream-ca.pem", read_file(second_.ca_pem));
  ASSERT_TRUE(wait_for_event(
      *gateway_, {field("level", "info"), field_matching("msg", "^reloaded --upstream-ca-file ")}))
      << gateway_->output();
  EXPECT_EQ(kcat(bootstrap, {"-L"}, "after.out"), 0) << read_file(dir_ / "after.out");
  EXPECT_EQ(reloads("ok"), 1);
}

}  // namespace
