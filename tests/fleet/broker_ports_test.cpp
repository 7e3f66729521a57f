// The proxy's deterministic broker ports (--ports-by-node-id) in front of the fleet: two proxies give each
// broker the same port, a restarted proxy serves a client that kept its metadata, and a node id outside
// the range fails cleanly. Everything on 127.0.0.1 (and 127.0.0.2 for a second proxy), bounded in time.
#include "client_tools.hpp"
#include "fleet.hpp"
#include "kafka_load.hpp"
#include "log_events.hpp"

#include <gtest/gtest.h>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <csignal>
#include <iostream>
#include <regex>
#include <thread>

namespace {

using namespace kws::test;
using namespace kws::test::fleet;
using namespace std::chrono_literals;
using fleet_type = kws::test::fleet::fleet;

std::vector<std::string> operator+(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// "broker N at HOST:PORT" lines of `kcat -L`.
std::map<int, std::string> brokers_of(const std::string& metadata) {
  std::map<int, std::string> out;
  const std::regex line(R"(broker (\d+) at (\S+))");
  for (std::sregex_iterator it(metadata.begin(), metadata.end(), line), end; it != end; ++it)
    out[std::stoi((*it)[1].str())] = (*it)[2].str();
  return out;
}

class BrokerPorts : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NO_THROW(fleet_ = std::make_unique<fleet_type>(wss_at_haproxy(), 3));
    first_ = free_port_run(9);
  }
  void TearDown() override {
    if (HasFailure()) {
      std::cerr << fleet_->logs();
      for (const auto& p : proxies_) std::cerr << "---- proxy ----\n" << p->output();
    }
  }

  // A proxy listening on `address`, main port first_, node id N on first_ + 1 + N, up to node id `last_node`.
  child_process& start_proxy(const std::string& address, const std::vector<std::string>& extra = {},
                             int last_node = 7) {
    proxies_.push_back(std::make_unique<child_process>(
        std::vector<std::string>{KWS_PROXY_PATH, "--listen", address, "--port", std::to_string(first_),
                                 "--broker", fleet_->bootstrap_url(), "--broker-url-template",
                                 fleet_->node_url_template(), "--ca-file", fleet_->ca_file(),
                                 "--ports-by-node-id", "--broker-ports",
                                 std::to_string(first_ + 1) + "-" + std::to_string(first_ + 1 + last_node),
                                 "--threads", "2", "--log-format", "json"} +
        extra));
    auto& p = *proxies_.back();
    if (!p.wait_for_output(std::regex("listening on " +
                                      std::regex_replace(address, std::regex("\\."), "\\.") + ":" +
                                      std::to_string(first_))))
      throw std::runtime_error("the proxy did not start:\n" + p.output());
    return p;
  }

  std::string metadata(const std::string& address) {
    const auto r = run({KWS_KCAT_PATH, "-b", address + ":" + std::to_string(first_), "-L", "-m", "10"},
                       {.stderr_to = spawn_options::stderr_target::captured}, 30s);
    EXPECT_EQ(r.exit_code, std::optional<int>(0)) << describe(r.exit_code, r.err);
    return r.out;
  }

  std::unique_ptr<fleet_type> fleet_;
  std::vector<std::unique_ptr<child_process>> proxies_;
  unsigned short first_ = 0;
};

TEST_F(BrokerPorts, TwoProxiesGiveEveryBrokerThePortOfItsNodeId) {
  ASSERT_NO_THROW(start_proxy("127.0.0.1"));
  ASSERT_NO_THROW(start_proxy("127.0.0.2"));
  for (const std::string address : {"127.0.0.1", "127.0.0.2"}) {
    const auto brokers = brokers_of(metadata(address));
    ASSERT_EQ(brokers.size(), 3u) << address;
    for (int node = 1; node <= 3; ++node)
      EXPECT_EQ(brokers.at(node), address + ":" + std::to_string(first_ + 1 + node)) << address;
  }
}

TEST_F(BrokerPorts, ARestartedProxyServesAProducerThatKeptItsMetadata) {
  const std::vector<std::string> at_start{"--bind-broker-ports-at-start"};
  ASSERT_NO_THROW(start_proxy("127.0.0.1", at_start));
  constexpr long n = 20000;
  producer p({{"bootstrap.servers", "127.0.0.1:" + std::to_string(first_)},
              {"enable.idempotence", "true"},
              {"acks", "all"},
              {"message.timeout.ms", "60000"}},
             fleet_type::topic, 3, n);
  p.allow(n / 2);
  std::string restart_error;
  // Half the messages delivered, so the producer knows every broker's port; then a new proxy process.
  std::thread restarting([&] {
    try {
      if (!p.wait_delivered(n / 2, 60s)) throw std::runtime_error("the first half was not delivered");
      auto& old = *proxies_.back();
      old.signal(SIGTERM);
      if (old.wait(15s) != std::optional<int>(0)) throw std::runtime_error("the proxy did not drain");
      auto& fresh = start_proxy("127.0.0.1", at_start);
      // Every broker's port listens before any response has named a broker.
      if (!wait_for_event(fresh, {field_containing("msg", "for node ids 0-7")}))
        throw std::runtime_error("no line for the ports bound at start");
      boost::asio::io_context ioc;
      boost::asio::ip::tcp::socket s(ioc);
      s.connect({boost::asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(first_ + 1 + 3)});
    } catch (const std::exception& e) {
      restart_error = e.what();
    }
    p.allow(n);
  });
  p.run(90s);
  restarting.join();
  ASSERT_EQ(restart_error, "");
  EXPECT_EQ(p.error_count(), 0) << ::testing::PrintToString(p.errors());
  EXPECT_EQ(p.delivered(), n);
}

TEST_F(BrokerPorts, ANodeIdBeyondTheRangeIsOneLineAndAClosedConnectionNotAHang) {
  // Ports for node ids 0 and 1 only; the cluster's brokers are 1, 2 and 3.
  child_process* proxy = nullptr;
  ASSERT_NO_THROW(proxy = &start_proxy("127.0.0.1", {}, 1));
  const auto started = clock_type::now();
  const auto r = run({KWS_KCAT_PATH, "-b", "127.0.0.1:" + std::to_string(first_), "-L", "-m", "5"},
                     {.stderr_to = spawn_options::stderr_target::captured}, 30s);
  ASSERT_TRUE(r.exit_code.has_value()) << "kcat hung";
  EXPECT_NE(*r.exit_code, 0) << r.out;
  EXPECT_LT(ms_since(started), 20000);
  const event_filter no_port{field("level", "error"), field_containing("msg", "broker 2 at "),
                             field_containing("msg", "outside --broker-ports")};
  ASSERT_TRUE(wait_for_event(*proxy, no_port)) << proxy->output();
  EXPECT_EQ(events(*proxy, no_port).size(), 1u) << "one line however often the broker is named";
  EXPECT_TRUE(wait_for_event(*proxy, {field("event", "closed"), field("end", "unusable_response")}))
      << proxy->output();
}

}  // namespace
