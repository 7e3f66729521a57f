// The proxy's directory of listeners per broker, with a recording opener instead of sockets.
#include "broker_directory.hpp"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <boost/asio/error.hpp>

#include <future>
#include <latch>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

namespace {

using kws::kafka::advertised_broker;
using kws::kafka::broker_endpoint;
using kws::proxy::broker_directory;
using kws::proxy::directory_config;
using kws::proxy::route;
using kws::proxy::route_decision;

struct recording_opener {
  std::vector<route> opened;
  std::set<std::uint16_t> busy;  // ports that fail with address_in_use
  std::uint16_t operator()(const route& r, std::uint16_t port, boost::system::error_code& ec) {
    if (busy.count(port)) {
      ec = boost::asio::error::address_in_use;
      return 0;
    }
    // Port 0: the system picks one, as it would for a real listener.
    const auto bound = port != 0 ? port : static_cast<std::uint16_t>(40000 + opened.size());
    opened.push_back(r);
    opened.back().port = bound;
    return bound;
  }
};

directory_config proxy_at_8080() {
  directory_config c;
  c.advertise_host = "proxy.example";
  c.main_port = 8080;
  c.bootstrap_url = "ws://localhost:8787/";
  c.bootstrap_host = "localhost";
  c.bootstrap_port = 8787;
  c.first_port = 8081;
  c.last_port = 8083;
  c.self_hosts = {"proxyhost", "10.1.2.3"};
  return c;
}

// The proxy at 8080 in front of a gateway at `host`:`port`, bootstrapping at its /kafka path.
directory_config behind_gateway(const std::string& scheme, const std::string& host, std::uint16_t port,
                                const std::string& url_template = {}) {
  auto c = proxy_at_8080();
  c.bootstrap_url = scheme + "://" + host + ":" + std::to_string(port) + "/kafka";
  c.bootstrap_host = host;
  c.bootstrap_port = port;
  if (!url_template.empty()) c.url_template = kws::url_template::parse(url_template);
  return c;
}

std::optional<broker_endpoint> map(broker_directory& d, std::int32_t node, const char* host,
                                   std::int32_t port) {
  boost::system::error_code ec;
  auto r = d.map(advertised_broker{node, host, port}, ec);
  EXPECT_FALSE(ec) << ec.message();
  return r;
}

TEST(BrokerDirectory, TheBootstrapBrokerIsTheMainListenerWhateverLoopbackNameItUses) {
  recording_opener opener;
  broker_directory d(proxy_at_8080(), std::ref(opener));
  for (const char* host : {"localhost", "127.0.0.1", "::1", "LOCALHOST"}) {
    const auto e = map(d, 0, host, 8787);
    ASSERT_TRUE(e) << host;
    EXPECT_EQ(e->host, "proxy.example");
    EXPECT_EQ(e->port, 8080);
  }
  EXPECT_TRUE(opener.opened.empty());
}

TEST(BrokerDirectory, EachFurtherBrokerGetsOneStableListenerFromTheRange) {
  recording_opener opener;
  opener.busy = {8082};
  broker_directory d(proxy_at_8080(), std::ref(opener));
  EXPECT_EQ(map(d, 1, "127.0.0.1", 8788)->port, 8081);
  EXPECT_EQ(map(d, 2, "127.0.0.1", 8789)->port, 8083) << "8082 is taken by someone else";
  EXPECT_EQ(map(d, 1, "127.0.0.1", 8788)->port, 8081) << "stable on second sight";
  ASSERT_EQ(opener.opened.size(), 2u);
  EXPECT_EQ(opener.opened[0].url, "ws://127.0.0.1:8788/");
  EXPECT_EQ(opener.opened[0].node_id, 1);
  EXPECT_EQ(opener.opened[1].url, "ws://127.0.0.1:8789/");
  // The range is spent: the next broker cannot be given a listener, and says so.
  boost::system::error_code ec;
  EXPECT_FALSE(d.map(advertised_broker{3, "127.0.0.1", 8790}, ec));
  EXPECT_EQ(ec, boost::asio::error::address_in_use);
}

TEST(BrokerDirectory, ABrokerAdvertisingThisProxyIsLeftAlone) {
  recording_opener opener;
  broker_directory d(proxy_at_8080(), std::ref(opener));
  for (const char* host : {"127.0.0.1", "localhost", "proxy.example", "proxyhost", "10.1.2.3"}) {
    EXPECT_FALSE(map(d, 0, host, 8080)) << host;
  }
  // Another machine's port 8080 is a broker like any other.
  EXPECT_EQ(map(d, 0, "elsewhere", 8080)->port, 8081);
  // So is one of this proxy's own listener ports once it exists: it is left alone too.
  EXPECT_FALSE(map(d, 5, "localhost", 8081));
  EXPECT_EQ(opener.opened.size(), 1u);
}

TEST(BrokerDirectory, ANodeIdTemplateTellsApartBrokersThatShareAnAddress) {
  // Behind a gateway every broker is advertised at the gateway's address; the node id picks the route.
  auto c = behind_gateway("wss", "gw.example.com", 443, "wss://gw.example.com/kafka/{node_id}");
  recording_opener opener;
  broker_directory d(std::move(c), std::ref(opener));
  EXPECT_EQ(map(d, 0, "gw.example.com", 443)->port, 8081);
  EXPECT_EQ(map(d, 1, "gw.example.com", 443)->port, 8082);
  EXPECT_EQ(map(d, 0, "gw.example.com", 443)->port, 8081);
  ASSERT_EQ(opener.opened.size(), 2u);
  EXPECT_EQ(opener.opened[1].url, "wss://gw.example.com:443/kafka/1");
  // The bootstrap URL itself, however the template spells it, is the main listener.
  auto c2 = proxy_at_8080();
  c2.bootstrap_url = "wss://gw.example.com:443/kafka/0";
  c2.url_template = kws::url_template::parse("wss://gw.example.com/kafka/{node_id}");
  broker_directory d2(std::move(c2), std::ref(opener));
  EXPECT_EQ(map(d2, 0, "gw.example.com", 443)->port, 8080);
}

// The default logger's lines while it lives.
class captured_log {
 public:
  captured_log() : previous_(spdlog::default_logger()) {
    auto logger =
        std::make_shared<spdlog::logger>("captured", std::make_shared<spdlog::sinks::ostream_sink_mt>(out_));
    logger->set_pattern("%l %v");
    spdlog::set_default_logger(std::move(logger));
  }
  ~captured_log() { spdlog::set_default_logger(previous_); }
  std::string text() const { return out_.str(); }

 private:
  std::ostringstream out_;
  std::shared_ptr<spdlog::logger> previous_;
};

std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

TEST(BrokerDirectory, TwoNodeIdsBehindOneListenerAreReportedOnceForThatListener) {
  // A gateway reached with the default template: every broker is advertised at the gateway's address, so
  // the template makes one URL of all of them.
  auto c = behind_gateway("ws", "gw.example.com", 8443);
  recording_opener opener;
  broker_directory d(std::move(c), std::ref(opener));
  captured_log log;
  for (int round = 0; round < 3; ++round) {
    for (int node = 1; node <= 3; ++node) EXPECT_EQ(map(d, node, "gw.example.com", 8443)->port, 8080);
  }
  EXPECT_EQ(
      count_of(log.text(),
               "warning brokers 1 and 2 both map to ws://gw.example.com:8443/kafka, so clients find both "
               "at proxy.example:8080 and send what they mean for either to that one URL; if it leads to "
               "one broker only, give --broker-url-template a {node_id} (behind kafka-websocket-gateway: "
               "'ws://gw.example.com:8443/kafka/{node_id}')\n"),
      1u)
      << log.text();
  EXPECT_EQ(count_of(log.text(), "warning "), 1u) << log.text();
  // The same for a further listener: two brokers advertised at one other address.
  EXPECT_EQ(map(d, 4, "other.example", 9092)->port, 8081);
  EXPECT_EQ(map(d, 4, "other.example", 9092)->port, 8081);
  EXPECT_EQ(count_of(log.text(), "warning "), 1u) << log.text();
  EXPECT_EQ(map(d, 5, "other.example", 9092)->port, 8081);
  EXPECT_EQ(map(d, 6, "other.example", 9092)->port, 8081);
  EXPECT_EQ(count_of(log.text(), "warning brokers 4 and 5 both map to ws://other.example:9092/"), 1u)
      << log.text();
  EXPECT_EQ(
      count_of(log.text(), "(behind kafka-websocket-gateway: 'ws://other.example:9092/kafka/{node_id}')\n"),
      1u)
      << log.text();
  EXPECT_EQ(count_of(log.text(), "warning "), 2u) << log.text();

  // A URL that no gateway's bootstrap path makes: the hint says only where a gateway serves each broker.
  auto edge = behind_gateway("wss", "gw.example.com", 443, "wss://{host}:{port}/edge");
  recording_opener edge_opener;
  broker_directory e(std::move(edge), std::ref(edge_opener));
  EXPECT_EQ(map(e, 1, "edge.example", 443)->port, 8081);
  EXPECT_EQ(map(e, 2, "edge.example", 443)->port, 8081);
  EXPECT_EQ(count_of(log.text(), "warning brokers 1 and 2 both map to wss://edge.example:443/edge, so"), 1u)
      << log.text();
  EXPECT_EQ(count_of(log.text(), "(kafka-websocket-gateway serves each at /kafka/{node_id})\n"), 1u)
      << log.text();
}

TEST(BrokerDirectory, BrokersOnListenersOfTheirOwnAreNotReported) {
  auto c = behind_gateway("ws", "gw.example.com", 8443, "ws://gw.example.com:8443/kafka/{node_id}");
  recording_opener opener;
  broker_directory d(std::move(c), std::ref(opener));
  captured_log log;
  for (int round = 0; round < 2; ++round) {
    for (int node = 1; node <= 3; ++node) EXPECT_EQ(map(d, node, "gw.example.com", 8443)->port, 8080 + node);
  }
  EXPECT_EQ(count_of(log.text(), "warning "), 0u) << log.text();
}

TEST(BrokerDirectory, WithoutARangeEveryListenerTakesAnyFreePort) {
  auto c = proxy_at_8080();
  c.first_port = c.last_port = 0;
  recording_opener opener;
  broker_directory d(std::move(c), std::ref(opener));
  map(d, 1, "b1", 9092);
  map(d, 2, "b2", 9092);
  EXPECT_EQ(map(d, 1, "b1", 9092)->port, 40000);
  ASSERT_EQ(opener.opened.size(), 2u);
  EXPECT_EQ(opener.opened[0].port, 40000);
  EXPECT_EQ(opener.opened[1].port, 40001);
}

TEST(BrokerDirectory, TheDecisionComesFromTheConfigurationAloneAndOpensNothing) {
  bool opened = false;
  broker_directory d(proxy_at_8080(), [&](const route&, std::uint16_t, boost::system::error_code&) {
    opened = true;
    return std::uint16_t{0};
  });
  using kind = route_decision::kind;
  EXPECT_EQ(d.decide({0, "127.0.0.1", 8787}, false).what, kind::main);
  EXPECT_EQ(d.decide({0, "proxyhost", 8080}, true).what, kind::keep);
  // The same address on a port that is not the proxy's is a broker like any other.
  const auto further = d.decide({0, "proxyhost", 8080}, false);
  EXPECT_EQ(further.what, kind::listener);
  EXPECT_EQ(further.url, "ws://proxyhost:8080/");
  const auto garbage = d.decide({2, "bad host/", 9092}, false);
  EXPECT_EQ(garbage.what, kind::invalid);
  EXPECT_TRUE(garbage.error);
  EXPECT_FALSE(opened);
  EXPECT_TRUE(d.routes().empty());
}

TEST(BrokerDirectory, WorkersThatSeeANewBrokerAtOnceShareOneListener) {
  std::mutex mu;
  std::vector<std::uint16_t> binds;
  broker_directory d(proxy_at_8080(), [&](const route&, std::uint16_t port, boost::system::error_code&) {
    std::lock_guard lock(mu);
    binds.push_back(port);
    return port;
  });
  constexpr int workers = 8;
  std::latch start(workers);
  std::vector<std::future<std::int32_t>> ports;
  for (int i = 0; i < workers; ++i) {
    ports.push_back(std::async(std::launch::async, [&] {
      start.arrive_and_wait();
      boost::system::error_code ec;
      const auto e = d.map(advertised_broker{1, "b1", 9092}, ec);
      return e && !ec ? e->port : -1;
    }));
  }
  for (auto& p : ports) EXPECT_EQ(p.get(), 8081);
  EXPECT_EQ(binds, std::vector<std::uint16_t>{8081});
  ASSERT_EQ(d.routes().size(), 1u);
}

TEST(BrokerDirectory, ABindUnderWayHoldsUpNoOtherBroker) {
  // The opener of broker 1 stops in the middle of its bind until the test lets it go.
  std::promise<void> binding, release;
  auto released = release.get_future().share();
  std::mutex mu;
  std::uint16_t next = 8081;
  broker_directory d(proxy_at_8080(), [&](const route& r, std::uint16_t, boost::system::error_code&) {
    if (r.node_id == 1) {
      binding.set_value();
      released.wait();
    }
    std::lock_guard lock(mu);
    return next++;
  });
  EXPECT_EQ(map(d, 2, "b2", 9092)->port, 8081);
  auto first_sight = std::async(std::launch::async, [&] { return map(d, 1, "b1", 9092); });
  binding.get_future().wait();
  // Meanwhile: the bootstrap broker, a broker seen before and another new one are all answered.
  auto others = std::async(std::launch::async, [&] {
    return std::vector{map(d, 0, "localhost", 8787)->port, map(d, 2, "b2", 9092)->port,
                       map(d, 3, "b3", 9092)->port};
  });
  const auto answered = others.wait_for(std::chrono::seconds(10));
  release.set_value();  // before any assertion returns: the futures' destructors wait for their threads
  ASSERT_EQ(answered, std::future_status::ready) << "a lookup waited for another broker's bind";
  EXPECT_EQ(others.get(), (std::vector<std::int32_t>{8080, 8081, 8082}));
  EXPECT_EQ(first_sight.get()->port, 8083);
}

directory_config behind_gateway_by_node_id() {
  auto c = proxy_at_8080();
  c.bootstrap_url = "wss://gw.example.com:443/kafka";
  c.bootstrap_host = "gw.example.com";
  c.bootstrap_port = 443;
  c.url_template = kws::url_template::parse("wss://gw.example.com/kafka/{node_id}");
  c.first_port = 9100;
  c.last_port = 9103;
  c.ports_by_node_id = true;
  return c;
}

TEST(BrokerDirectory, ByNodeIdEachBrokerGetsFirstPortPlusItsNodeIdInWhateverOrderItIsSeen) {
  recording_opener a_opener, b_opener;
  broker_directory a(behind_gateway_by_node_id(), std::ref(a_opener));
  broker_directory b(behind_gateway_by_node_id(), std::ref(b_opener));
  EXPECT_EQ(map(a, 3, "gw.example.com", 443)->port, 9103);
  EXPECT_EQ(map(a, 1, "gw.example.com", 443)->port, 9101);
  // Another proxy (or this one restarted) that sees the brokers in another order.
  EXPECT_EQ(map(b, 1, "gw.example.com", 443)->port, 9101);
  EXPECT_EQ(map(b, 3, "gw.example.com", 443)->port, 9103);
  EXPECT_EQ(map(b, 0, "gw.example.com", 443)->port, 9100);
}

TEST(BrokerDirectory, ByNodeIdAPortInUseIsAnErrorNotAnotherPort) {
  recording_opener opener;
  opener.busy = {9102};
  broker_directory d(behind_gateway_by_node_id(), std::ref(opener));
  boost::system::error_code ec;
  EXPECT_FALSE(d.map(advertised_broker{2, "gw.example.com", 443}, ec));
  EXPECT_EQ(ec, boost::asio::error::address_in_use);
  EXPECT_TRUE(opener.opened.empty());
}

TEST(BrokerDirectory, ByNodeIdANodeOutsideTheRangeFailsTheResponseAndOpensNothing) {
  recording_opener opener;
  broker_directory d(behind_gateway_by_node_id(), std::ref(opener));
  for (const std::int32_t node : {4, 70000, -2}) {
    boost::system::error_code ec;
    EXPECT_FALSE(d.map(advertised_broker{node, "gw.example.com", 443}, ec)) << node;
    EXPECT_EQ(ec, boost::system::errc::result_out_of_range) << node;
  }
  EXPECT_TRUE(opener.opened.empty());
  EXPECT_EQ(map(d, 2, "gw.example.com", 443)->port, 9102) << "the nodes in range still work";
}

TEST(BrokerDirectory, OpenAllBindsTheWholeRangeAndLaterResponsesFindIt) {
  recording_opener opener;
  broker_directory d(behind_gateway_by_node_id(), std::ref(opener));
  boost::system::error_code ec;
  d.open_all(ec);
  ASSERT_FALSE(ec) << ec.message();
  ASSERT_EQ(opener.opened.size(), 4u);
  EXPECT_EQ(opener.opened[2].url, "wss://gw.example.com:443/kafka/2");
  EXPECT_EQ(opener.opened[2].port, 9102);
  EXPECT_EQ(map(d, 2, "gw.example.com", 443)->port, 9102);
  EXPECT_EQ(opener.opened.size(), 4u) << "nothing bound twice";
}

TEST(BrokerDirectory, OnlyATemplateOfTheNodeIdAloneCanBeBoundAtStart) {
  using kws::url_template;
  EXPECT_TRUE(
      broker_directory::names_brokers_by_node_id_alone(url_template::parse("wss://gw/kafka/{node_id}")));
  EXPECT_FALSE(
      broker_directory::names_brokers_by_node_id_alone(url_template::parse("ws://{host}:{port}/{node_id}")));
  EXPECT_FALSE(broker_directory::names_brokers_by_node_id_alone(url_template::default_for(true)));
}

}  // namespace
