// A librdkafka++ client that talks to a WebSocket-only Kafka broker directly, with no proxy process: one
// call, kws::rdkafka::enable, makes every broker connection of the client go over WebSocket. It produces N
// keyed messages to partition 0 of a topic, then reads partition 0 back from the beginning and checks every
// key and value.
//
//   kafka-websocket-devbroker --listen 127.0.0.1:8787 &
//   kws-example-librdkafka-websocket --bootstrap 127.0.0.1:8787 --topic test-topic --count 100
//   kws-example-librdkafka-websocket --bootstrap mybroker.workers.dev:443 --tls --broker-api 0.8
#include <kws/rdkafka.hpp>

#include <librdkafka/rdkafkacpp.h>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <optional>
#include <string>

namespace {

struct options {
  std::string bootstrap = "127.0.0.1:8787";
  std::string topic = "test-topic";
  int count = 100;
  int timeout_ms = 20000;  ///< bound on producing and on consuming
  kws::rdkafka::config ws;
};

void usage(std::ostream& os) {
  os << "usage: kws-example-librdkafka-websocket [--bootstrap HOST:PORT] [--topic T] [--count N]\n"
        "         [--timeout-ms MS] [--tls] [--ca-file FILE] [--url-template URL] [--broker-api auto|0.8]\n"
        "         [--header 'Name: value']...\n";
}

std::optional<options> parse_args(int argc, char** argv) {
  options o;
  o.ws.min_log_level = kws::log_level::info;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      usage(std::cout);
      std::exit(0);
    }
    if (arg == "--tls") {
      o.ws.dialer.tls = true;
      continue;
    }
    if (i + 1 >= argc) return std::nullopt;
    const std::string value = argv[++i];
    try {
      if (arg == "--bootstrap") {
        o.bootstrap = value;
      } else if (arg == "--topic") {
        o.topic = value;
      } else if (arg == "--count") {
        o.count = std::stoi(value);
      } else if (arg == "--timeout-ms") {
        o.timeout_ms = std::stoi(value);
      } else if (arg == "--ca-file") {
        o.ws.dialer.ca_file = value;
      } else if (arg == "--url-template") {
        o.ws.url_template = value;
      } else if (arg == "--broker-api" && (value == "auto" || value == "0.8")) {
        o.ws.broker_api =
            value == "0.8" ? kws::kafka::broker_api::kafka_0_8 : kws::kafka::broker_api::negotiate;
      } else if (arg == "--header" && value.find(':') != std::string::npos) {
        const auto colon = value.find(':');
        o.ws.dialer.headers.emplace_back(value.substr(0, colon),
                                         value.substr(value.find_first_not_of(' ', colon + 1)));
      } else {
        return std::nullopt;
      }
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }
  if (o.count < 0 || o.timeout_ms <= 0) return std::nullopt;
  return o;
}

std::string key_of(int i) {
  return "key-" + std::to_string(i);
}
std::string value_of(int i) {
  return "value-" + std::to_string(i) + "-" + std::string(i % 64, 'x');
}

// The bootstrap server, then the one line that matters here: every connection goes over WebSocket.
std::unique_ptr<RdKafka::Conf> make_conf(const options& o) {
  std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  std::string err;
  if (conf->set("bootstrap.servers", o.bootstrap, err) != RdKafka::Conf::CONF_OK) {
    std::cerr << "bootstrap.servers: " << err << "\n";
    return nullptr;
  }
  if (!kws::rdkafka::enable(conf.get(), o.ws, err)) {
    std::cerr << err << "\n";
    return nullptr;
  }
  return conf;
}

class delivery_counter : public RdKafka::DeliveryReportCb {
 public:
  void dr_cb(RdKafka::Message& m) override {
    if (m.err() == RdKafka::ERR_NO_ERROR) {
      ++delivered;
    } else if (failed++ == 0) {
      std::cerr << "delivery failed: " << m.errstr() << "\n";
    }
  }
  int delivered = 0;
  int failed = 0;
};

bool produce(const options& o) {
  delivery_counter reports;
  auto conf = make_conf(o);
  std::string err;
  if (!conf || conf->set("dr_cb", &reports, err) != RdKafka::Conf::CONF_OK) return false;
  std::unique_ptr<RdKafka::Producer> producer(RdKafka::Producer::create(conf.get(), err));
  if (!producer) {
    std::cerr << "producer: " << err << "\n";
    return false;
  }
  for (int i = 0; i < o.count; ++i) {
    std::string key = key_of(i), value = value_of(i);
    for (;;) {
      const auto rc = producer->produce(o.topic, 0, RdKafka::Producer::RK_MSG_COPY, value.data(),
                                        value.size(), key.data(), key.size(), 0, nullptr);
      if (rc == RdKafka::ERR_NO_ERROR) break;
      if (rc != RdKafka::ERR__QUEUE_FULL) {
        std::cerr << "produce: " << RdKafka::err2str(rc) << "\n";
        return false;
      }
      producer->poll(100);
    }
    producer->poll(0);
  }
  if (const auto rc = producer->flush(o.timeout_ms); rc != RdKafka::ERR_NO_ERROR) {
    std::cerr << "flush: " << RdKafka::err2str(rc) << " (" << producer->outq_len() << " messages left)\n";
    return false;
  }
  std::cout << "produced " << reports.delivered << "/" << o.count << " messages to " << o.topic << " [0]\n";
  return reports.delivered == o.count && reports.failed == 0;
}

bool consume_and_verify(const options& o) {
  // The legacy consumer on partition 0 from the first offset: no consumer group, no group coordinator.
  auto conf = make_conf(o);
  std::string err;
  if (!conf || conf->set("enable.partition.eof", "true", err) != RdKafka::Conf::CONF_OK) return false;
  std::unique_ptr<RdKafka::Consumer> consumer(RdKafka::Consumer::create(conf.get(), err));
  if (!consumer) {
    std::cerr << "consumer: " << err << "\n";
    return false;
  }
  std::unique_ptr<RdKafka::Topic> topic(RdKafka::Topic::create(consumer.get(), o.topic, nullptr, err));
  if (!topic || consumer->start(topic.get(), 0, RdKafka::Topic::OFFSET_BEGINNING) != RdKafka::ERR_NO_ERROR) {
    std::cerr << "cannot start consuming " << o.topic << ": " << err << "\n";
    return false;
  }
  int received = 0, mismatches = 0;
  bool at_end = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(o.timeout_ms);
  while (received < o.count && !at_end && std::chrono::steady_clock::now() < deadline) {
    std::unique_ptr<RdKafka::Message> m(consumer->consume(topic.get(), 0, 200));
    switch (m->err()) {
      case RdKafka::ERR__TIMED_OUT:
        break;
      case RdKafka::ERR__PARTITION_EOF:
        at_end = true;
        break;
      case RdKafka::ERR_NO_ERROR: {
        const int i = received++;
        const std::string key = m->key() ? *m->key() : "<null>";
        const std::string value(static_cast<const char*>(m->payload()), m->len());
        if ((m->offset() != i || key != key_of(i) || value != value_of(i)) && mismatches++ < 5)
          std::cerr << "mismatch at offset " << m->offset() << ": key '" << key << "'\n";
        break;
      }
      default:
        std::cerr << "consume: " << m->errstr() << "\n";
        consumer->stop(topic.get(), 0);
        return false;
    }
  }
  consumer->stop(topic.get(), 0);
  std::cout << "consumed " << received << "/" << o.count << " messages from " << o.topic << " [0], "
            << mismatches << " mismatches\n";
  return received == o.count && mismatches == 0;
}

}  // namespace

int main(int argc, char** argv) {
  const auto o = parse_args(argc, argv);
  if (!o) {
    usage(std::cerr);
    return 2;
  }
  std::cout << "librdkafka " << RdKafka::version_str() << ", brokers over WebSocket in-process\n";
  const auto start = std::chrono::steady_clock::now();
  const bool ok = produce(*o) && consume_and_verify(*o);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
  RdKafka::wait_destroyed(5000);
  if (ok) {
    std::cout << "OK: " << o->count << " messages round-tripped over WebSocket to " << o->bootstrap << " in "
              << ms << " ms\n";
  } else {
    std::cout << "FAILED after " << ms << " ms (see the messages above)\n";
  }
  return ok ? 0 : 1;
}
