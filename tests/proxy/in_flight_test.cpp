// --broker-max-in-flight: the built proxy between a TCP client that pipelines its requests and a WebSocket
// broker (the library's own server side) that answers each request a short while after the previous answer
// and records the most requests it held unanswered at once. Everything on 127.0.0.1, bounded in time.
#include "proxy_support.hpp"

#include <kws/accept.hpp>
#include <kws/frame.hpp>

#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>

#include <gtest/gtest.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

namespace {

namespace asio = boost::asio;
using boost::system::error_code;
using kws::test::client;
using kws::test::proxy_process;
using kws::test::read_frame;
using kws::test::request;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

// ListOffsets v0: an API the proxy passes untouched either way.
constexpr std::int16_t list_offsets = 2;

std::string list_offsets_request(std::int32_t correlation_id) {
  return request(list_offsets, 0, correlation_id, "request " + std::to_string(correlation_id));
}

// Produce v0 with `acks` and no topics.
std::string produce_request(std::int16_t acks, std::int32_t correlation_id) {
  std::string body;
  body += static_cast<char>((acks >> 8) & 0xff);
  body += static_cast<char>(acks & 0xff);
  body += std::string("\x00\x00\x03\xe8\x00\x00\x00\x00", 8);  // timeout 1000 ms, no topics
  return request(0, 0, correlation_id, body);
}

std::string answer_to(std::int32_t correlation_id) {
  std::string body(4, '\0');
  kws::store_be32(reinterpret_cast<unsigned char*>(body.data()), correlation_id);
  return kws::test::frame(body + "answer " + std::to_string(correlation_id));
}

// A WebSocket broker that reads every request as it comes and answers them in order, each `delay` after the
// previous answer (or after its arrival, when nothing was waiting): whatever the proxy lets through in the
// meantime piles up, and the broker records the largest pile. Produce with acks=0 gets no answer.
class pipelining_broker {
 public:
  explicit pipelining_broker(std::chrono::milliseconds delay) : delay_(delay) {
    acceptor_.open(tcp::v4());
    acceptor_.bind({asio::ip::make_address("127.0.0.1"), 0});
    acceptor_.listen();
    acceptor_.async_accept([this](error_code ec, tcp::socket s) {
      if (ec) return;
      kws::async_accept(
          std::move(s), kws::accept_config{},
          [](const kws::http_request_info&, std::function<void(kws::accept_decision)> done) {
            done(kws::accept_decision::upgrade());
          },
          [this](error_code ec, kws::connection c, kws::http_request_info) {
            if (ec) return;
            conn_.emplace(std::move(c));
            read();
          });
    });
    thread_ = std::thread([this] { ioc_.run_for(60s); });
  }
  ~pipelining_broker() {
    asio::post(ioc_, [this] { ioc_.stop(); });
    thread_.join();
  }

  std::string address() const { return "127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port()); }

  // Once `n` requests have arrived (bounded wait): their correlation ids in arrival order.
  std::vector<std::int32_t> wait_received(std::size_t n, std::chrono::milliseconds limit = 20s) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, limit, [&] { return received_.size() >= n; });
    return received_;
  }
  std::size_t most_unanswered() {
    std::lock_guard lock(mu_);
    return most_unanswered_;
  }

 private:
  void read() {
    conn_->async_read_frame(in_, [this](error_code ec, std::size_t) {
      if (ec) return;
      const auto* d = static_cast<const unsigned char*>(in_.data().data());
      const auto key = static_cast<std::int16_t>((d[4] << 8) | d[5]);
      const auto id = kws::load_be32(d + 8);
      const auto client_id_len = static_cast<std::size_t>((d[12] << 8) | d[13]);
      const auto* acks = d + 14 + client_id_len;
      const bool answered = !(key == 0 && acks[0] == 0 && acks[1] == 0);
      in_.consume(in_.size());
      {
        std::lock_guard lock(mu_);
        received_.push_back(id);
        if (answered) {
          waiting_.push_back(id);
          most_unanswered_ = std::max(most_unanswered_, waiting_.size());
        }
        cv_.notify_all();
      }
      if (answered && !timer_armed_) arm();
      read();
    });
  }

  void arm() {
    timer_armed_ = true;
    timer_.expires_after(delay_);
    timer_.async_wait([this](error_code ec) {
      timer_armed_ = false;
      if (ec) return;
      std::int32_t id = 0;
      {
        std::lock_guard lock(mu_);
        id = waiting_.front();
        waiting_.pop_front();
      }
      outbox_.push_back(answer_to(id));
      if (outbox_.size() == 1) write();
      std::lock_guard lock(mu_);
      if (!waiting_.empty()) arm();
    });
  }

  void write() {
    conn_->async_write_frame(asio::buffer(outbox_.front()), [this](error_code ec, std::size_t) {
      if (ec) return;
      outbox_.pop_front();
      if (!outbox_.empty()) write();
    });
  }

  std::chrono::milliseconds delay_;
  asio::io_context ioc_;
  tcp::acceptor acceptor_{ioc_};
  asio::steady_timer timer_{ioc_};
  bool timer_armed_ = false;
  std::optional<kws::connection> conn_;
  boost::beast::flat_buffer in_;
  std::deque<std::string> outbox_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::int32_t> received_;
  std::deque<std::int32_t> waiting_;
  std::size_t most_unanswered_ = 0;
};

// Sends `count` ListOffsets requests in one write, reads their answers, and checks that each is the
// broker's answer to the request at its place, in order.
void pipeline(client& c, int count) {
  std::string all;
  for (int id = 1; id <= count; ++id) all += list_offsets_request(id);
  c.send(all);
  for (int id = 1; id <= count; ++id) {
    error_code ec;
    const auto got = read_frame(c, ec);
    ASSERT_FALSE(ec) << "answer " << id << ": " << ec.message();
    EXPECT_EQ(got, answer_to(id)) << "answer " << id;
  }
}

std::vector<std::int32_t> one_to(int n) {
  std::vector<std::int32_t> v;
  for (int i = 1; i <= n; ++i) v.push_back(i);
  return v;
}

TEST(ProxyInFlight, Kafka08ProfileSendsOneRequestAtATime) {
  pipelining_broker broker(30ms);
  proxy_process proxy({"--broker", broker.address(), "--broker-api", "0.8"});
  EXPECT_TRUE(proxy.proc.wait_for_output(std::regex("at most 1 request\\(s\\) in flight to the broker")))
      << proxy.proc.output();
  client c(proxy.port);
  ASSERT_NO_FATAL_FAILURE(pipeline(c, 20));
  EXPECT_EQ(broker.wait_received(20), one_to(20));
  EXPECT_EQ(broker.most_unanswered(), 1u);
}

TEST(ProxyInFlight, BrokerMaxInFlightThreeLetsThreeThrough) {
  pipelining_broker broker(30ms);
  proxy_process proxy({"--broker", broker.address(), "--broker-max-in-flight", "3"});
  client c(proxy.port);
  ASSERT_NO_FATAL_FAILURE(pipeline(c, 20));
  EXPECT_EQ(broker.wait_received(20), one_to(20));
  EXPECT_EQ(broker.most_unanswered(), 3u);
}

TEST(ProxyInFlight, DefaultProfileKeepsPipelining) {
  pipelining_broker broker(30ms);
  proxy_process proxy({"--broker", broker.address()});
  client c(proxy.port);
  ASSERT_NO_FATAL_FAILURE(pipeline(c, 20));
  EXPECT_EQ(broker.wait_received(20), one_to(20));
  EXPECT_GT(broker.most_unanswered(), 1u);
}

TEST(ProxyInFlight, ZeroLiftsTheKafka08Bound) {
  pipelining_broker broker(30ms);
  proxy_process proxy({"--broker", broker.address(), "--broker-api", "0.8", "--broker-max-in-flight", "0"});
  client c(proxy.port);
  ASSERT_NO_FATAL_FAILURE(pipeline(c, 20));
  EXPECT_GT(broker.most_unanswered(), 1u);
}

TEST(ProxyInFlight, AcksZeroProduceGoesInOrderAndHoldsNoPlace) {
  pipelining_broker broker(30ms);
  proxy_process proxy({"--broker", broker.address(), "--broker-api", "0.8"});
  client c(proxy.port);
  c.send(list_offsets_request(1) + produce_request(0, 2) + list_offsets_request(3) + produce_request(0, 4) +
         produce_request(1, 5));
  error_code ec;
  EXPECT_EQ(read_frame(c, ec), answer_to(1)) << ec.message();
  EXPECT_EQ(read_frame(c, ec), answer_to(3)) << ec.message();
  EXPECT_EQ(read_frame(c, ec), answer_to(5)) << ec.message();
  EXPECT_EQ(broker.wait_received(5), one_to(5));
  EXPECT_EQ(broker.most_unanswered(), 1u);
}

}  // namespace
