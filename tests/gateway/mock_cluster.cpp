// kws-mock-cluster: a Kafka cluster for tests that is not ours, librdkafka's mock cluster (rdkafka_mock.h):
// N brokers on 127.0.0.1, modern API versions, consumer groups. Prints "bootstrap=HOST:PORT,..." once the
// brokers listen, then takes commands on stdin, one per line, and answers each with "ok" on stdout:
//   down N   take broker N down (connections refused and closed)
//   up N     bring it back
// It exits at the end of stdin (or on SIGTERM).
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

int main(int argc, char** argv) {
  int brokers = 3;
  std::vector<std::pair<std::string, int>> topics;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--brokers" && i + 1 < argc) {
      brokers = std::atoi(argv[++i]);
    } else if (a == "--topic" && i + 1 < argc) {
      const std::string t = argv[++i];
      const auto colon = t.rfind(':');
      topics.emplace_back(t.substr(0, colon),
                          colon == std::string::npos ? 1 : std::atoi(t.c_str() + colon + 1));
    } else {
      std::fprintf(stderr, "usage: kws-mock-cluster [--brokers N] [--topic NAME:PARTITIONS]...\n");
      return 2;
    }
  }
  char errstr[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  // The handle only hosts the mock cluster; it connects nowhere itself.
  rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof errstr);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
  if (!rk) {
    std::fprintf(stderr, "kws-mock-cluster: %s\n", errstr);
    return 1;
  }
  rd_kafka_mock_cluster_t* mc = rd_kafka_mock_cluster_new(rk, brokers);
  if (!mc) {
    std::fprintf(stderr, "kws-mock-cluster: cannot create the mock cluster\n");
    return 1;
  }
  for (const auto& [name, partitions] : topics) {
    if (rd_kafka_mock_topic_create(mc, name.c_str(), partitions, brokers < 3 ? brokers : 3)) {
      std::fprintf(stderr, "kws-mock-cluster: cannot create topic %s\n", name.c_str());
      return 1;
    }
  }
  // The mock picks each partition's leader at random among its replicas, so a broker may lead none of a
  // topic's partitions and a test that expects every broker to be reached fails now and then. So each
  // topic's first partitions go one to each broker, p on broker p + 1 (with up to three brokers, each is a
  // replica of all); the rest keep the mock's choice. A move can wait up to a second for the mock's thread,
  // so the moves are asked for at once, one thread each.
  std::atomic<bool> moved{true};
  {
    std::vector<std::jthread> moves;
    for (const auto& [name, partitions] : topics) {
      for (int p = 0; brokers <= 3 && p < partitions && p < brokers; ++p) {
        moves.emplace_back([mc, &moved, topic = name.c_str(), p] {
          if (rd_kafka_mock_partition_set_leader(mc, topic, p, p + 1)) {
            std::fprintf(stderr, "kws-mock-cluster: cannot set the leader of %s [%d]\n", topic, p);
            moved = false;
          }
        });
      }
    }
  }
  if (!moved) return 1;
  std::printf("bootstrap=%s\n", rd_kafka_mock_cluster_bootstraps(mc));
  std::fflush(stdout);
  for (std::string line; std::getline(std::cin, line);) {
    std::istringstream in(line);
    std::string cmd;
    int id = -1;
    in >> cmd >> id;
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR__INVALID_ARG;
    if (cmd == "down") err = rd_kafka_mock_broker_set_down(mc, id);
    if (cmd == "up") err = rd_kafka_mock_broker_set_up(mc, id);
    std::printf("%s %s %d%s%s\n", err ? "error" : "ok", cmd.c_str(), id, err ? ": " : "",
                err ? rd_kafka_err2str(err) : "");
    std::fflush(stdout);
  }
  rd_kafka_mock_cluster_destroy(mc);
  rd_kafka_destroy(rk);
  return 0;
}
