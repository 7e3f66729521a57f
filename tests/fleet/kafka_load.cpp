#include "kafka_load.hpp"

#include <librdkafka/rdkafka.h>

#include <set>
#include <stdexcept>

namespace kws::test::fleet {
namespace {

rd_kafka_conf_t* make_conf(const settings& s) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char err[512];
  for (const auto& [k, v] : s) {
    if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
      rd_kafka_conf_destroy(conf);
      throw std::runtime_error(k + ": " + err);
    }
  }
  return conf;
}

}  // namespace

producer::producer(const settings& s, std::string topic, int partitions, long n)
    : partitions_(partitions),
      n_(n),
      produced_at_(static_cast<std::size_t>(n)),
      delivered_at_(static_cast<std::size_t>(n)) {
  rd_kafka_conf_t* conf = make_conf(s);
  rd_kafka_conf_set_opaque(conf, this);
  rd_kafka_conf_set_dr_msg_cb(conf, &producer::on_delivery);
  char err[512];
  rk_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (!rk_) {
    rd_kafka_conf_destroy(conf);
    throw std::runtime_error(std::string("producer: ") + err);
  }
  topic_ = rd_kafka_topic_new(rk_, topic.c_str(), nullptr);
}

producer::~producer() {
  rd_kafka_topic_destroy(topic_);
  rd_kafka_destroy(rk_);
}

void producer::allow(long upto) {
  allowed_.store(std::min(upto, n_));
}

bool producer::wait_delivered(long count, std::chrono::milliseconds limit) {
  std::unique_lock lock(mu_);
  return progress_.wait_for(lock, limit, [&] { return delivered_.load() >= count || ended_.load(); }) &&
         delivered_.load() >= count;
}

void producer::record_error(std::string what) {
  ++error_count_;
  std::lock_guard lock(mu_);
  if (errors_.size() < 10) errors_.push_back(std::move(what));
}

std::vector<std::string> producer::errors() const {
  std::lock_guard lock(mu_);
  return errors_;
}

void producer::on_delivery(rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
  auto* self = static_cast<producer*>(opaque);
  const auto id = reinterpret_cast<std::intptr_t>(m->_private);
  if (m->err) {
    self->record_error("message " + std::to_string(id) + ": " + rd_kafka_err2str(m->err));
  } else {
    self->delivered_at_[static_cast<std::size_t>(id)] = clock_type::now();
    ++self->delivered_;
  }
  const auto reported = ++self->reported_;
  // Waiters look for a count: every 256th report, and each one once the producer is held at its limit.
  if (reported % 256 == 0 || reported >= self->allowed_.load()) {
    std::lock_guard lock(self->mu_);
    self->progress_.notify_all();
  }
}

void producer::run(std::chrono::milliseconds limit) {
  const auto until = clock_type::now() + limit;
  long next = 0;
  char err[512];
  while (reported_.load() < n_ && clock_type::now() < until) {
    if (rd_kafka_fatal_error(rk_, err, sizeof err)) {
      record_error(std::string("fatal: ") + err);
      break;
    }
    if (next >= allowed_.load()) {
      rd_kafka_poll(rk_, 20);
      continue;
    }
    const auto id = next;
    const auto text = std::to_string(id);
    const auto value = "message " + text + " of " + std::to_string(n_);
    produced_at_[static_cast<std::size_t>(id)] = clock_type::now();
    if (rd_kafka_produce(topic_, static_cast<std::int32_t>(id % partitions_), RD_KAFKA_MSG_F_COPY,
                         const_cast<char*>(value.data()), value.size(), text.data(), text.size(),
                         reinterpret_cast<void*>(static_cast<std::intptr_t>(id))) == -1) {
      const auto e = rd_kafka_last_error();
      if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
        record_error("produce " + text + ": " + rd_kafka_err2str(e));
        break;
      }
      rd_kafka_poll(rk_, 20);  // a full queue: serve delivery reports, then try the same message again
      continue;
    }
    ++next;
    rd_kafka_poll(rk_, 0);
  }
  rd_kafka_flush(rk_, 10000);
  ended_ = true;
  std::lock_guard lock(mu_);
  progress_.notify_all();
}

long producer::messages_in_log(const std::string& topic) const {
  long total = 0;
  for (int p = 0; p < partitions_; ++p) {
    std::int64_t low = 0, high = 0;
    if (rd_kafka_query_watermark_offsets(rk_, topic.c_str(), p, &low, &high, 10000)) return -1;
    total += static_cast<long>(high - low);
  }
  return total;
}

consumed consume_all(const settings& s, const std::string& topic, int partitions, const std::string& group,
                     std::chrono::milliseconds limit) {
  auto all = s;
  all.insert(all.end(), {{"group.id", group},
                         {"auto.offset.reset", "earliest"},
                         {"enable.partition.eof", "true"},
                         {"enable.auto.commit", "false"}});
  rd_kafka_conf_t* conf = make_conf(all);
  char err[512];
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
  if (!rk) {
    rd_kafka_conf_destroy(conf);
    throw std::runtime_error(std::string("consumer: ") + err);
  }
  rd_kafka_poll_set_consumer(rk);
  rd_kafka_topic_partition_list_t* subscription = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(subscription, topic.c_str(), RD_KAFKA_PARTITION_UA);
  rd_kafka_subscribe(rk, subscription);
  rd_kafka_topic_partition_list_destroy(subscription);

  consumed out;
  std::set<int> at_end;
  const auto until = clock_type::now() + limit;
  while (static_cast<int>(at_end.size()) < partitions && clock_type::now() < until) {
    rd_kafka_message_t* m = rd_kafka_consumer_poll(rk, 200);
    if (!m) continue;
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      at_end.insert(m->partition);
    } else if (m->err) {
      if (out.errors.size() < 10) out.errors.push_back(rd_kafka_message_errstr(m));
    } else {
      at_end.erase(m->partition);
      out.by_partition[m->partition].push_back(
          std::stol(std::string(static_cast<const char*>(m->key), m->key_len)));
      ++out.total;
    }
    rd_kafka_message_destroy(m);
  }
  out.reached_end = static_cast<int>(at_end.size()) == partitions;
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  return out;
}

}  // namespace kws::test::fleet
