// The fleet under faults: an idempotent producer writes numbered messages through HAProxy to three gateway
// replicas (through the built proxy, or with the librdkafka plugin in this process) while one replica is
// killed and restarted and another drained and restarted; then a consumer group reads the topic back.
// Nothing may be lost, each partition keeps its order, and nothing is duplicated but what the mock cluster
// stores twice of a batch the producer re-sent (see the check). How long deliveries stalled around
// each fault is printed as a report, not asserted. Everything on 127.0.0.1, bounded in time.
// KWS_FLEET_LOGS=1 prints every process's log after a passing run too.
#include "fleet.hpp"
#include "kafka_load.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <functional>
#include <iostream>
#include <regex>
#include <thread>

namespace {

using namespace kws::test;
using namespace kws::test::fleet;
using namespace std::chrono_literals;
using fleet_type = kws::test::fleet::fleet;

constexpr int partitions = 6;

// 200,000 as the issue asks; KWS_FLEET_MESSAGES changes it for a run by hand.
long message_count() {
  const char* v = std::getenv("KWS_FLEET_MESSAGES");
  return v ? std::atol(v) : 200000;
}

// The replicas the faults hit, chosen as they happen: each the one holding the most connections to brokers
// then, so that every fault cuts connections that carry the producer's requests.
struct targets {
  int killed = -1;
  int drained = -1;
};

struct fault_step {
  double at;  // when this share of the messages is delivered
  std::string what;
  std::function<std::string(fleet_type&, targets&)> act;  // returns what it did, for the report
};

std::string replica(int i) {
  return "gateway " + std::to_string(i + 1);
}

std::vector<fault_step> faults() {
  const auto cut = [](const char* how, fleet_type& f, int i) {
    const auto open = f.open_broker_connections(i);
    if (open == 0) throw std::runtime_error(replica(i) + " carries no broker connection to cut");
    return std::string(how) + " to " + replica(i) + " (" + std::to_string(open) +
           " broker connection(s) open)";
  };
  return {{0.15, "kill",
           [cut](fleet_type& f, targets& t) {
             t.killed = f.busiest();
             auto what = cut("SIGKILL", f, t.killed);
             f.kill(t.killed);
             return what;
           }},
          {0.35, "restart",
           [](fleet_type& f, targets& t) {
             f.restart(t.killed);
             return replica(t.killed) + " started again";
           }},
          {0.50, "drain",
           [cut](fleet_type& f, targets& t) {
             t.drained = f.busiest();
             auto what = cut("SIGTERM (drain)", f, t.drained);
             f.drain(t.drained);
             return what;
           }},
          {0.70, "restart", [](fleet_type& f, targets& t) {
             f.restart(t.drained);
             return replica(t.drained) + " started again";
           }}};
}

// How long deliveries stood still while a message waited: for each delivery, the time since the later of
// the previous delivery and its own produce call. The longest such wait from `from` to `to`.
double longest_stall_ms(const producer& p, const std::vector<long>& by_time, clock_type::time_point from,
                        clock_type::time_point to) {
  const auto& produced = p.produced_at();
  const auto& delivered = p.delivered_at();
  double worst = 0;
  for (std::size_t k = 1; k < by_time.size(); ++k) {
    const auto id = static_cast<std::size_t>(by_time[k]);
    if (delivered[id] < from || delivered[id] >= to) continue;
    const auto waited_since = std::max(delivered[static_cast<std::size_t>(by_time[k - 1])], produced[id]);
    worst = std::max(worst, std::chrono::duration<double, std::milli>(delivered[id] - waited_since).count());
  }
  return worst;
}

class Fleet : public ::testing::Test {
 protected:
  void TearDown() override {
    if ((HasFailure() || std::getenv("KWS_FLEET_LOGS")) && fleet_) {
      std::cerr << fleet_->logs();
      if (proxy_) std::cerr << "---- proxy ----\n" << proxy_->output();
    }
  }

  void start_fleet(shape s = wss_at_haproxy()) {
    fleet_ = std::make_unique<fleet_type>(std::move(s), partitions);
  }

  // The proxy in front: every broker's listener on its node id's port.
  settings through_proxy() {
    const auto first = free_port_run(9);
    proxy_ = std::make_unique<child_process>(std::vector<std::string>{
        KWS_PROXY_PATH, "--listen", "127.0.0.1", "--port", std::to_string(first), "--broker",
        fleet_->bootstrap_url(), "--broker-url-template", fleet_->node_url_template(), "--ca-file",
        fleet_->ca_file(), "--ports-by-node-id", "--broker-ports",
        std::to_string(first + 1) + "-" + std::to_string(first + 8), "--threads", "2", "--log-format",
        "json"});
    if (!proxy_->wait_for_output(std::regex("listening on 127\\.0\\.0\\.1:" + std::to_string(first))))
      throw std::runtime_error("the proxy did not start:\n" + proxy_->output());
    return {{"bootstrap.servers", "127.0.0.1:" + std::to_string(first)}};
  }

  // The proxy dialling each broker by its name (wss://kafka-N.fleet.invalid:PORT/), all of them at HAProxy.
  settings through_proxy_by_name() {
    const auto first = free_port_run(9);
    proxy_ = std::make_unique<child_process>(
        std::vector<std::string>{KWS_PROXY_PATH,
                                 "--listen",
                                 "127.0.0.1",
                                 "--port",
                                 std::to_string(first),
                                 "--broker",
                                 fleet_->bootstrap_url(),
                                 "--broker-url-template",
                                 fleet_->node_name_template(),
                                 "--connect-to",
                                 fleet_->connect_to(),
                                 "--ca-file",
                                 fleet_->ca_file(),
                                 "--ports-by-node-id",
                                 "--broker-ports",
                                 std::to_string(first + 1) + "-" + std::to_string(first + 8),
                                 "--threads",
                                 "2",
                                 "--log-format",
                                 "json"});
    if (!proxy_->wait_for_output(std::regex("listening on 127\\.0\\.0\\.1:" + std::to_string(first))))
      throw std::runtime_error("the proxy did not start:\n" + proxy_->output());
    return {{"bootstrap.servers", "127.0.0.1:" + std::to_string(first)}};
  }

  // The librdkafka plugin in this process, straight to HAProxy.
  settings through_plugin() {
    return {{"bootstrap.servers", fleet_->public_host_port()},
            {"plugin.library.paths", KWS_PLUGIN_PATH},
            {"kws.bootstrap.url.template", fleet_->bootstrap_url()},
            {"kws.url.template", fleet_->node_url_template()},
            {"kws.ca.file", fleet_->ca_file()}};
  }

  void produce_through_faults_then_read_back(const settings& client) {
    const long n = message_count();
    auto producing = client;
    producing.insert(producing.end(), {{"enable.idempotence", "true"},
                                       {"acks", "all"},
                                       {"linger.ms", "5"},
                                       {"message.timeout.ms", "120000"}});
    producer p(producing, fleet_type::topic, partitions, n);
    const auto steps = faults();
    std::vector<clock_type::time_point> fault_at;
    std::vector<std::string> fault_done;
    std::string fault_error;
    targets hit;
    // The faults on their own thread, each when its share is delivered; the producer may run a tenth of the
    // messages ahead of the next fault, so that every fault finds messages in flight.
    const auto began = clock_type::now();
    std::thread faulting([&] {
      try {
        for (const auto& s : steps) {
          p.allow(static_cast<long>((s.at + 0.1) * static_cast<double>(n)));
          if (!p.wait_delivered(static_cast<long>(s.at * static_cast<double>(n)), 120s))
            throw std::runtime_error("the producer did not get to " + s.what);
          fault_at.push_back(clock_type::now());
          fault_done.push_back(s.act(*fleet_, hit));
        }
      } catch (const std::exception& e) {
        fault_error = e.what();
      }
      p.allow(n);
    });
    p.run(150s);
    faulting.join();
    const auto produced_in = std::chrono::duration<double>(clock_type::now() - began).count();
    ASSERT_EQ(fault_error, "");
    EXPECT_EQ(p.error_count(), 0) << ::testing::PrintToString(p.errors());
    ASSERT_EQ(p.delivered(), n) << ::testing::PrintToString(p.errors());

    std::vector<long> by_time(static_cast<std::size_t>(n));
    for (long i = 0; i < n; ++i) by_time[static_cast<std::size_t>(i)] = i;
    std::sort(by_time.begin(), by_time.end(), [&](long a, long b) {
      return p.delivered_at()[static_cast<std::size_t>(a)] < p.delivered_at()[static_cast<std::size_t>(b)];
    });
    std::cout << "fleet report: " << n << " messages delivered in " << produced_in << " s\n";
    if (!fault_at.empty()) {
      std::cout << "  before any fault: deliveries stood still for at most "
                << longest_stall_ms(p, by_time, began, fault_at.front()) << " ms while messages waited\n";
    }
    for (std::size_t k = 0; k < fault_done.size(); ++k) {
      const auto to = k + 1 < fault_at.size() ? fault_at[k + 1] : clock_type::time_point::max();
      std::cout << "  " << fault_done[k] << ": deliveries stood still for at most "
                << longest_stall_ms(p, by_time, fault_at[k], to) << " ms while messages waited\n";
    }

    const auto got = consume_all(client, fleet_type::topic, partitions, "fleet-check", 120s);
    ASSERT_TRUE(got.reached_end) << got.total << " read; " << ::testing::PrintToString(got.errors);
    // librdkafka's mock cluster (2.0.2) appends a Produce without checking the idempotent producer's sequence
    // numbers, so a batch the producer sends again after a replica died under it (MsgPossiblyPersisted, same
    // producer id and base sequence) is stored twice, where a real broker drops the resend. Such a copy is a
    // run of messages that repeats, in order, a run already in the partition; it is counted and reported, not
    // taken for a loss or a reordering. Anything else that appears twice fails the test. (This check cannot
    // tell such a resend from a relay that wrote one Produce frame twice; the relay tests cover that.)
    std::vector<int> seen(static_cast<std::size_t>(n), 0);
    long out_of_range = 0, resent = 0, resent_runs = 0, stray = 0;
    for (const auto& [partition, ids] : got.by_partition) {
      long last_new = -1;
      std::size_t k = 0;
      while (k < ids.size()) {
        const auto id = ids[k];
        if (id < 0 || id >= n || id % partitions != partition) {
          ++out_of_range;
          ++k;
          continue;
        }
        if (seen[static_cast<std::size_t>(id)] == 0) {
          EXPECT_LT(last_new, id) << "partition " << partition << " out of order at " << k;
          last_new = id;
          ++seen[static_cast<std::size_t>(id)];
          ++k;
          continue;
        }
        // A repeat: it must be the start of a copy of an earlier run, message after message.
        const auto first = std::find(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k), id);
        std::size_t len = 0;
        while (k + len < ids.size() &&
               first + static_cast<std::ptrdiff_t>(len) < ids.begin() + static_cast<std::ptrdiff_t>(k) &&
               ids[k + len] == *(first + static_cast<std::ptrdiff_t>(len)))
          ++len;
        if (len == 0) {
          ++stray;
          ++k;
          continue;
        }
        for (std::size_t j = 0; j < len; ++j) ++seen[static_cast<std::size_t>(ids[k + j])];
        resent += static_cast<long>(len);
        ++resent_runs;
        k += len;
      }
    }
    const auto lost = std::count(seen.begin(), seen.end(), 0);
    if (resent > 0) {
      std::cout << "  the mock cluster stored " << resent_runs << " re-sent batch(es) twice: " << resent
                << " message(s) (it does not de-duplicate idempotent resends; a real broker does)\n";
    }
    EXPECT_EQ(out_of_range, 0);
    EXPECT_EQ(lost, 0) << "messages lost";
    EXPECT_EQ(stray, 0) << "messages that appear twice outside a re-sent batch";
    EXPECT_EQ(got.total, n + resent);
    // What the cluster holds, apart from what a consumer read of it.
    EXPECT_EQ(p.messages_in_log(fleet_type::topic), n + resent)
        << "the partitions hold another count than was produced";
  }

  std::unique_ptr<fleet_type> fleet_;
  std::unique_ptr<child_process> proxy_;
};

TEST_F(Fleet, ThroughTheProxyNothingIsLostOrReorderedWhileReplicasAreKilledAndDrained) {
  ASSERT_NO_THROW(start_fleet());
  settings client;
  ASSERT_NO_THROW(client = through_proxy());
  produce_through_faults_then_read_back(client);
}

TEST_F(Fleet, ThroughThePluginNothingIsLostOrReorderedWhileReplicasAreKilledAndDrained) {
  ASSERT_NO_THROW(start_fleet());
  produce_through_faults_then_read_back(through_plugin());
}

// HAProxy in TCP mode: TLS passes through to the replicas, each connection behind a PROXY protocol v2
// header, and the replicas route each broker's connection by its name.
TEST_F(Fleet, PassedThroughByNameNothingIsLostOrReorderedWhileReplicasAreKilledAndDrained) {
  ASSERT_NO_THROW(start_fleet(wss_passed_through()));
  settings client;
  ASSERT_NO_THROW(client = through_proxy_by_name());
  produce_through_faults_then_read_back(client);
  EXPECT_GT(fleet_->broker_connections_by_name_through_lb(), 0u) << fleet_->logs();
}

}  // namespace
