// --broker-api auto telling a Kafka 0.8 broker by its silence: the built proxy between raw Kafka clients and
// a WebSocket broker (the library's own server side) that leaves ApiVersions unanswered, answers it late, or
// answers it at once. The broker records what reaches it, so that the tests assert what the proxy sent, not
// how long anything took. Everything on 127.0.0.1, bounded in time.
#include "http_client.hpp"
#include "log_events.hpp"
#include "proxy_support.hpp"

#include <kws/accept.hpp>
#include <kws/frame.hpp>
#include <kws/kafka/api_versions.hpp>
#include <kws/kafka/tracker.hpp>

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
using kws::test::field;
using kws::test::proxy_process;
using kws::test::read_frame;
using kws::test::request;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

constexpr std::int16_t api_versions = 18;
constexpr std::int16_t list_offsets = 2;

// ApiVersions v3 (request header v2: an empty tagged field after the client id), as librdkafka 2.0 sends it.
std::string api_versions_v3(std::int32_t id) {
  return request(api_versions, 3, id, std::string("\x00\x02x\x02y\x00", 6));
}

std::string answer_to(std::int32_t id, const std::string& text) {
  std::string body(4, '\0');
  kws::store_be32(reinterpret_cast<unsigned char*>(body.data()), id);
  return kws::test::frame(body + text);
}

std::string as_string(const std::vector<unsigned char>& v) {
  return {v.begin(), v.end()};
}

// What the 0.8 profile answers to ApiVersions v3 (the bytes --broker-api 0.8 gives).
std::string profile_answer(std::int32_t id) {
  return as_string(kws::kafka::encode_api_versions_response(3, id, kws::kafka::kafka_0_8_api_versions()));
}

// What the answering broker says: nothing in it is clamped by the proxy.
std::string broker_answer(std::int32_t id) {
  using kws::kafka::api_key;
  const kws::kafka::api_version_range ranges[] = {{api_key::list_offsets, 0, 1},
                                                  {api_key::api_versions, 0, 3}};
  return as_string(kws::kafka::encode_api_versions_response(3, id, ranges));
}

// A WebSocket broker for any number of connections. Each request is answered in order, each one `delay`
// after the one before, except ApiVersions: `silent` leaves it unanswered for good, `late` answers it just
// before the next request's answer, `answering` at once. Records, per connection, the requests that reached
// it and the most (other than ApiVersions) it held unanswered at once.
class scripted_broker {
 public:
  enum class mode { silent, late, answering };
  struct seen {
    std::int16_t key;
    std::int32_t id;
    friend bool operator==(const seen&, const seen&) = default;
  };

  explicit scripted_broker(mode m, std::chrono::milliseconds delay = 20ms) : mode_(m), delay_(delay) {
    acceptor_.open(tcp::v4());
    acceptor_.bind({asio::ip::make_address("127.0.0.1"), 0});
    acceptor_.listen();
    accept();
    thread_ = std::thread([this] { ioc_.run_for(60s); });
  }
  ~scripted_broker() {
    asio::post(ioc_, [this] { ioc_.stop(); });
    thread_.join();
  }

  std::string url() const {
    return "ws://127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port()) + "/";
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port()); }

  // Once connection `conn` (from 0) has brought `n` requests (bounded wait): what it brought.
  std::vector<seen> wait_received(std::size_t conn, std::size_t n, std::chrono::milliseconds limit = 20s) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, limit, [&] { return conn < conns_.size() && conns_[conn]->received.size() >= n; });
    return conn < conns_.size() ? conns_[conn]->received : std::vector<seen>{};
  }
  std::size_t most_unanswered(std::size_t conn) {
    std::lock_guard lock(mu_);
    return conn < conns_.size() ? conns_[conn]->most : 0;
  }

 private:
  struct connection_state {
    explicit connection_state(asio::io_context& ioc) : timer(ioc) {}
    std::optional<kws::connection> ws;
    boost::beast::flat_buffer in;
    std::deque<std::string> answers;  // due, in order
    std::deque<std::string> outbox;   // being written
    std::optional<std::int32_t> held_api_versions;
    asio::steady_timer timer;
    bool timer_armed = false;
    std::vector<seen> received;
    std::size_t most = 0;
  };

  void accept() {
    acceptor_.async_accept([this](error_code ec, tcp::socket s) {
      if (ec) return;
      kws::async_accept(
          std::move(s), kws::accept_config{},
          [](const kws::http_request_info&, std::function<void(kws::accept_decision)> done) {
            done(kws::accept_decision::upgrade());
          },
          [this](error_code ec, kws::connection c, kws::http_request_info) {
            if (ec) return;
            auto st = std::make_shared<connection_state>(ioc_);
            st->ws.emplace(std::move(c));
            {
              std::lock_guard lock(mu_);
              conns_.push_back(st);
            }
            read(st);
          });
      accept();
    });
  }

  void read(const std::shared_ptr<connection_state>& st) {
    st->ws->async_read_frame(st->in, [this, st](error_code ec, std::size_t) {
      if (ec) return;
      const auto* d = static_cast<const unsigned char*>(st->in.data().data());
      const auto key = static_cast<std::int16_t>((d[4] << 8) | d[5]);
      const auto id = kws::load_be32(d + 8);
      st->in.consume(st->in.size());
      {
        std::lock_guard lock(mu_);
        st->received.push_back({key, id});
        cv_.notify_all();
      }
      if (key == api_versions && mode_ != mode::answering) {
        st->held_api_versions = id;
      } else {
        if (st->held_api_versions && mode_ == mode::late) {
          st->answers.push_back(answer_to(*st->held_api_versions, "late ApiVersions answer"));
        }
        st->held_api_versions.reset();
        st->answers.push_back(key == api_versions ? broker_answer(id)
                                                  : answer_to(id, "answer " + std::to_string(id)));
        std::lock_guard lock(mu_);
        st->most =
            std::max(st->most, st->answers.size() - (st->answers.front().find("late") != std::string::npos));
      }
      if (!st->answers.empty() && !st->timer_armed) arm(st);
      read(st);
    });
  }

  void arm(const std::shared_ptr<connection_state>& st) {
    st->timer_armed = true;
    st->timer.expires_after(delay_);
    st->timer.async_wait([this, st](error_code ec) {
      st->timer_armed = false;
      if (ec || st->answers.empty()) return;
      // A late answer goes out together with the answer after it.
      const bool late = st->answers.front().find("late ApiVersions") != std::string::npos;
      for (int i = late ? 2 : 1; i > 0 && !st->answers.empty(); --i) {
        st->outbox.push_back(std::move(st->answers.front()));
        st->answers.pop_front();
        if (st->outbox.size() == 1) write(st);
      }
      if (!st->answers.empty()) arm(st);
    });
  }

  // One write at a time on a connection.
  void write(const std::shared_ptr<connection_state>& st) {
    st->ws->async_write_frame(asio::buffer(st->outbox.front()), [this, st](error_code ec, std::size_t) {
      if (ec) return;
      st->outbox.pop_front();
      if (!st->outbox.empty()) write(st);
    });
  }

  mode mode_;
  std::chrono::milliseconds delay_;
  asio::io_context ioc_;
  tcp::acceptor acceptor_{ioc_};
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::shared_ptr<connection_state>> conns_;
};

using seen = scripted_broker::seen;

std::string pipeline(std::int32_t first, std::int32_t last) {
  std::string out;
  for (auto id = first; id <= last; ++id)
    out += request(list_offsets, 0, id, "request " + std::to_string(id));
  return out;
}

std::vector<seen> list_offsets_ids(std::int32_t first, std::int32_t last) {
  std::vector<seen> out;
  for (auto id = first; id <= last; ++id) out.push_back({list_offsets, id});
  return out;
}

void expect_answers(client& c, std::int32_t first, std::int32_t last) {
  for (auto id = first; id <= last; ++id) {
    error_code ec;
    EXPECT_EQ(read_frame(c, ec), answer_to(id, "answer " + std::to_string(id)))
        << "answer " << id << " " << ec.message();
  }
}

std::vector<std::string> detecting_proxy_args(const scripted_broker& b) {
  return {"--broker", b.address(), "--log-format", "json", "--api-versions-timeout", "300ms"};
}

TEST(ProxyApiDetection, ABrokerSilentOnApiVersionsIsTakenForKafka08OnceAndRemembered) {
  scripted_broker broker(scripted_broker::mode::late);
  proxy_process proxy(detecting_proxy_args(broker));
  {
    client c(proxy.port);
    // The requests pipelined behind the ApiVersions wait in the proxy for the verdict.
    c.send(api_versions_v3(1) + pipeline(2, 11));
    error_code ec;
    EXPECT_EQ(read_frame(c, ec), profile_answer(1)) << ec.message();
    ASSERT_NO_FATAL_FAILURE(expect_answers(c, 2, 11));
    std::vector<seen> want{{api_versions, 1}};
    for (const auto& s : list_offsets_ids(2, 11)) want.push_back(s);
    EXPECT_EQ(broker.wait_received(0, 11), want);
    EXPECT_EQ(broker.most_unanswered(0), 1u) << "one request in flight once taken for Kafka 0.8";
  }
  const auto detected =
      kws::test::wait_for_event(proxy.proc, {field("event", "broker_api"), field("verdict", "detected"),
                                             field("broker", broker.url()), field("api", "0.8")});
  ASSERT_TRUE(detected) << proxy.proc.output();
  EXPECT_EQ(kws::test::field_text(*detected, "level"), "info");
  EXPECT_NE(kws::test::field_text(*detected, "cause").find("--broker-api 0.8"), std::string::npos);

  // A second connection starts in the profile: its ApiVersions never reaches the broker.
  client c(proxy.port);
  c.send(api_versions_v3(1) + pipeline(2, 4));
  error_code ec;
  EXPECT_EQ(read_frame(c, ec), profile_answer(1)) << ec.message();
  ASSERT_NO_FATAL_FAILURE(expect_answers(c, 2, 4));
  EXPECT_EQ(broker.wait_received(1, 3), list_offsets_ids(2, 4));
  EXPECT_TRUE(
      kws::test::wait_for_event(proxy.proc, {field("event", "broker_api"), field("verdict", "remembered")}))
      << proxy.proc.output();
  EXPECT_EQ(
      kws::test::events(proxy.proc, {field("event", "broker_api"), field("verdict", "detected")}).size(), 1u);
}

TEST(ProxyApiDetection, ABrokerThatAnswersApiVersionsKeepsItsAnswerAndPipelining) {
  scripted_broker broker(scripted_broker::mode::answering);
  proxy_process proxy(detecting_proxy_args(broker));
  client c(proxy.port);
  c.send(api_versions_v3(1));
  error_code ec;
  EXPECT_EQ(read_frame(c, ec), broker_answer(1)) << ec.message();
  c.send(pipeline(2, 21));
  ASSERT_NO_FATAL_FAILURE(expect_answers(c, 2, 21));
  EXPECT_GT(broker.most_unanswered(0), 1u) << "pipelining kept";
  EXPECT_EQ(broker.wait_received(0, 1).front(), (seen{api_versions, 1}));
  EXPECT_TRUE(kws::test::events(proxy.proc, {field("event", "broker_api")}).empty()) << proxy.proc.output();
}

TEST(ProxyApiDetection, AClientThatLeavesDuringTheWaitLeavesNoVerdict) {
  scripted_broker broker(scripted_broker::mode::silent);
  proxy_process proxy(detecting_proxy_args(broker));
  {
    client c(proxy.port);
    c.send(api_versions_v3(1));
    EXPECT_EQ(broker.wait_received(0, 1), (std::vector<seen>{{api_versions, 1}}));
  }
  EXPECT_TRUE(kws::test::wait_for_event(proxy.proc, {field("event", "closed"), field("side", "client")}))
      << proxy.proc.output();
  EXPECT_TRUE(kws::test::events(proxy.proc, {field("event", "broker_api")}).empty()) << proxy.proc.output();
  // The next connection's ApiVersions goes to the broker again, and is timed again.
  client c(proxy.port);
  c.send(api_versions_v3(5));
  error_code ec;
  EXPECT_EQ(read_frame(c, ec), profile_answer(5)) << ec.message();
  EXPECT_EQ(broker.wait_received(1, 1), (std::vector<seen>{{api_versions, 5}}));
}

TEST(ProxyApiDetection, TheGaugeCountsBrokersTakenForKafka08) {
  scripted_broker broker(scripted_broker::mode::silent);
  auto args = detecting_proxy_args(broker);
  args.insert(args.end(), {"--metrics-listen", "127.0.0.1:0"});
  proxy_process proxy(args);
  const auto port = proxy.proc.wait_for_output(std::regex(R"(metrics listening on 127\.0\.0\.1:(\d+))"));
  ASSERT_TRUE(port) << proxy.proc.output();
  const auto metrics_port = static_cast<unsigned short>(std::stoi(*port));
  const auto gauge = [&] {
    return kws::test::sample(
        kws::test::parse_samples(kws::test::http_request(metrics_port, "GET", "/metrics").body),
        "kws_brokers_detected_kafka_0_8");
  };
  EXPECT_EQ(gauge(), 0);
  client c(proxy.port);
  c.send(api_versions_v3(1));
  error_code ec;
  EXPECT_EQ(read_frame(c, ec), profile_answer(1)) << ec.message();
  EXPECT_EQ(gauge(), 1);
}

TEST(ProxyApiDetection, TheTimeoutIsCheckedAndGoesOnlyWithBrokerApiAuto) {
  const auto run_proxy = [](const std::vector<std::string>& args) {
    std::vector<std::string> argv{KWS_PROXY_PATH, "--port", "0"};
    argv.insert(argv.end(), args.begin(), args.end());
    return kws::test::run(argv, {}, 10s);
  };
  for (const auto& bad :
       std::vector<std::vector<std::string>>{{"--broker-api", "0.8", "--api-versions-timeout", "2s"},
                                             {"--api-versions-timeout", "2m"},
                                             {"--api-versions-timeout", "soon"}}) {
    const auto r = run_proxy(bad);
    EXPECT_EQ(r.exit_code, std::optional<int>(2)) << r.out;
    EXPECT_NE(r.out.find("--api-versions-timeout"), std::string::npos) << r.out;
  }
  // proxy_process throws unless the proxy starts listening.
  EXPECT_NO_THROW(proxy_process({"--broker-api", "auto", "--api-versions-timeout", "0"}));
  EXPECT_NO_THROW(proxy_process({"--api-versions-timeout", "1500ms"}));
}

}  // namespace
