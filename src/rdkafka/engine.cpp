#include "engine.hpp"

#include "io/cloexec.hpp"

#include <kws/host_port.hpp>
#include <kws/kafka/tracker.hpp>

#include <boost/asio/post.hpp>
#include <boost/asio/socket_base.hpp>
#include <boost/system/system_error.hpp>

#include <cerrno>
#include <cstring>
#include <map>
#include <string_view>
#include <utility>

#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/socket.h>

namespace kws::rdkafka::detail {
namespace {

namespace asio = boost::asio;
using boost::system::error_code;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

// A connection librdkafka announced but that never reached the listener is forgotten after this long.
constexpr auto pending_limit = 30s;
// How long shutdown lets WebSocket close handshakes run before it stops the loop regardless.
constexpr auto shutdown_limit = 100ms;

std::string human_duration(std::chrono::steady_clock::duration d) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  return ms < 10000 ? std::to_string(ms) + "ms" : std::to_string(ms / 1000) + "s";
}

std::string describe(const broker_target& t) {
  return (t.node_id < 0 ? std::string("bootstrap server ") : "broker " + std::to_string(t.node_id) + " ") +
         join_host_port(t.host, static_cast<std::uint32_t>(t.port));
}

// What the hook finds out about brokers holds for every client of the process.
std::shared_ptr<kafka::api_verdicts> process_verdicts() {
  static const auto verdicts = std::make_shared<kafka::api_verdicts>();
  return verdicts;
}

}  // namespace

bool parse_broker_name(std::string_view name, std::string& host, std::int32_t& port) {
  // librdkafka's names are not URLs: "host:port", "proto://host:port" or either with "/node-id" after it.
  if (const auto scheme = name.find("://"); scheme != std::string_view::npos) name.remove_prefix(scheme + 3);
  const auto hp = split_host_port(name.substr(0, name.find('/')));
  if (!hp || hp->host.empty() || !hp->has_port || hp->port == 0) return false;
  host = hp->host;
  port = hp->port;
  return true;
}

std::shared_ptr<engine> engine::start(config cfg, std::string client_name) {
  return std::shared_ptr<engine>(new engine(std::move(cfg), std::move(client_name)));
}

engine::engine(config cfg, std::string client_name)
    : cfg_(std::move(cfg)),
      name_(std::move(client_name)),
      brokers_(cfg_.url_template.empty() ? url_template::default_for(cfg_.dialer.tls)
                                         : url_template::parse(cfg_.url_template)),
      bootstrap_(cfg_.bootstrap_url_template.empty() ? brokers_
                                                     : url_template::parse(cfg_.bootstrap_url_template)),
      acceptor_(ioc_),
      dialer_(ioc_.get_executor(), cfg_.dialer) {
  auto tracking = std::make_shared<kafka::tracker_config>();
  // librdkafka keeps the names brokers advertise and connect_cb maps each one: nothing to rewrite.
  tracking->rewrite = false;
  tracking->api = cfg_.broker_api;
  tracking->max_in_flight = cfg_.max_in_flight;
  tracking->broker_max_in_flight = cfg_.broker_max_in_flight;
  tracking->api_versions_timeout = cfg_.api_versions_timeout;
  tracking->verdicts = process_verdicts();
  tracking->on_metadata_brokers = [this](const std::vector<kafka::advertised_broker>& brokers) {
    note_shared_addresses(brokers);
  };
  tracking_ = std::move(tracking);

  const tcp::endpoint loopback(asio::ip::address_v4::loopback(), 0);
  // Closed on exec, as every socket of the plugin: see io/cloexec.hpp.
  error_code opened;
  kws::detail::open_cloexec(acceptor_, loopback.protocol(), opened);
  if (opened) throw boost::system::system_error(opened, "opening the loopback listener");
  acceptor_.bind(loopback);
  acceptor_.listen(asio::socket_base::max_listen_connections);
  listener_.sin_family = AF_INET;
  listener_.sin_port = htons(acceptor_.local_endpoint().port());
  listener_.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

  guard_.emplace(ioc_.get_executor());
  // Out of descriptors, the loop pauses instead of spinning (and flooding the host's log).
  accepting_.emplace(
      acceptor_, [this](tcp::socket s) { on_accepted(std::move(s)); },
      accept_loop_options{.name = "loopback listener", .log = [this](log_level level, std::string_view text) {
                            note(level, [&] { return std::string(text); });
                          }});
  accepting_->start();
  thread_ = std::thread([this] {
    // An exception escaping a handler must not end the host process: note it and go on.
    for (;;) {
      try {
        ioc_.run();
        break;
      } catch (const std::exception& e) {
        note(log_level::error, [&] { return std::string("relay thread: ") + e.what(); });
      }
    }
    finished_.set_value();
  });
  pthread_setname_np(thread_.native_handle(), "kws-websocket");
}

engine::~engine() {
  shutdown();
}

int engine::connect(int sockfd, broker_target target) {
  if (stopping_.load()) return ECONNREFUSED;
  // Bound to a port of its own first, so that the listener can tell which broker the connection is for
  // before librdkafka sends a byte.
  sockaddr_in local{};
  local.sin_family = AF_INET;
  local.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(sockfd, reinterpret_cast<const sockaddr*>(&local), sizeof local) != 0) return errno;
  socklen_t len = sizeof local;
  if (::getsockname(sockfd, reinterpret_cast<sockaddr*>(&local), &len) != 0) return errno;
  const auto port = ntohs(local.sin_port);
  // Loopback only: Nagle's algorithm would merely delay small requests against delayed ACKs.
  const int one = 1;
  ::setsockopt(sockfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  {
    std::lock_guard lock(mu_);
    const auto now = std::chrono::steady_clock::now();
    std::erase_if(pending_, [&](const auto& p) { return now - p.second.since > pending_limit; });
    pending_[port] = pending{std::move(target), now};
  }
  if (::connect(sockfd, reinterpret_cast<const sockaddr*>(&listener_), sizeof listener_) != 0 &&
      errno != EINPROGRESS) {
    const int e = errno;
    std::lock_guard lock(mu_);
    pending_.erase(port);
    return e;
  }
  return 0;
}

void engine::on_accepted(tcp::socket s) {
  error_code ec;
  const auto peer = s.remote_endpoint(ec);
  std::optional<broker_target> target;
  if (!ec) {
    std::lock_guard lock(mu_);
    if (auto it = pending_.find(peer.port()); it != pending_.end() && peer.address().is_loopback()) {
      target = std::move(it->second.target);
      pending_.erase(it);
    }
  }
  if (!target) {
    // Another local process, or a connection librdkafka gave up on: it gets nothing.
    note(log_level::debug,
         [&] { return "closed a loopback connection that no broker connection announced"; });
    return;
  }
  s.set_option(tcp::no_delay(true), ec);
  const auto id = ++next_id_;
  auto url =
      (target->node_id < 0 ? bootstrap_ : brokers_).expand(target->host, target->port, target->node_id);
  dialer_.async_dial(
      url, [this, id, url, t = std::move(*target), s = std::move(s)](error_code ec, connection ws) mutable {
        if (!ec && stopped_on_loop_) ec = asio::error::operation_aborted;
        if (ec) {
          if (ec != asio::error::operation_aborted) {
            note(log_level::warn, [&] {
              return "conn " + std::to_string(id) + " " + describe(t) + ": cannot open " + url + ": " +
                     ec.message() + " (librdkafka reconnects)";
            });
          }
          // A reset rather than an orderly close: librdkafka reports a failed connection, not a quiet broker.
          error_code ignored;
          s.set_option(asio::socket_base::linger(true, 0), ignored);
          s.close(ignored);
          ws.abort();
          return;
        }
        start_relay(id, std::move(s), std::move(ws), std::move(url), std::move(t));
      });
}

// Several brokers advertised at one address: librdkafka keeps one broker handle per address (its node id
// changes with each Metadata answer), so it reaches one of them and waits for the partitions of the
// others, with nothing in its log at its default level. A gateway's default --advertise does this: one
// warning per address says so.
void engine::note_shared_addresses(const std::vector<kafka::advertised_broker>& brokers) {
  std::map<std::pair<std::string_view, std::int32_t>, std::set<std::int32_t>> at;
  for (const auto& b : brokers) at[{b.host, b.port}].insert(b.node_id);
  for (const auto& entry : at) {
    const auto& nodes = entry.second;
    if (nodes.size() < 2) continue;
    auto where = join_host_port(entry.first.first, static_cast<std::uint32_t>(entry.first.second));
    {
      std::lock_guard lock(shared_mu_);
      if (!shared_addresses_.insert(where).second) continue;
    }
    note(log_level::warn, [&] {
      std::string ids;
      for (const auto id : nodes) ids += (ids.empty() ? "" : ", ") + std::to_string(id);
      return "brokers " + ids + " are all advertised at " + where +
             ": librdkafka keeps one connection per address, so it reaches one of them and waits for the "
             "partitions of the others; the broker side must advertise a name per broker (for "
             "kafka-websocket-gateway, --advertise 'kafka-{node_id}.HOST:PORT')";
    });
  }
}

void engine::start_relay(std::uint64_t id, tcp::socket s, connection ws, std::string url,
                         broker_target target) {
  note(log_level::debug,
       [&] { return "conn " + std::to_string(id) + " open " + describe(target) + " at " + url; });
  relay_options options;
  options.max_frame_bytes = cfg_.dialer.max_frame_bytes;
  if (cfg_.log) {
    options.log = [this, id](log_level level, std::string_view text) {
      note(level, [&] { return "conn " + std::to_string(id) + " " + std::string(text); });
    };
    options.min_log_level = cfg_.min_log_level;
  }
  auto r = relay::create(
      std::move(s), std::move(ws), std::move(options),
      std::make_shared<kafka::tracker>(tracking_, url, verdict_note(id, url)),
      [this, id, url, target](const relay_report& rep) {
        note(rep.error ? log_level::warn : log_level::debug, [&] {
          return "conn " + std::to_string(id) + " closed " + describe(target) + " at " + url +
                 " up=" + std::to_string(rep.up_bytes) + "B/" + std::to_string(rep.up_frames) +
                 "f down=" + std::to_string(rep.down_bytes) + "B/" + std::to_string(rep.down_frames) +
                 "f local_answers=" + std::to_string(rep.local_answers) +
                 " reconnects=" + std::to_string(rep.reconnects) +
                 " duration=" + human_duration(rep.duration) + " cause=" + rep.cause;
        });
        // Posted: the relay is still inside its own handler here.
        asio::post(ioc_, [this, id] { relays_.erase(id); });
      },
      // The broker closed the WebSocket between requests (edge platforms recycle them): dial again when
      // librdkafka sends its next request. A failure there closes librdkafka's connection.
      [this, url](std::function<void(error_code, connection)> done) {
        if (stopped_on_loop_) return done(asio::error::operation_aborted, connection{});
        dialer_.async_dial(url, std::move(done));
      });
  relays_.emplace(id, r);
  r->start();
}

// A warning, shown at the default kws.log.level, for the first verdict on a broker in this process: every
// process that does not pin the broker api waits once per broker.
kafka::api_verdict_handler engine::verdict_note(std::uint64_t id, const std::string& url) {
  return [this, id, url](kafka::api_verdict v) {
    const auto level = v == kafka::api_verdict::detected ? log_level::warn : log_level::debug;
    note(level, [&] {
      if (v == kafka::api_verdict::remembered)
        return "conn " + std::to_string(id) + " " + url +
               " was taken for Kafka 0.8 earlier: ApiVersions answered by the hook from the start";
      return "conn " + std::to_string(id) + " " + url + " left ApiVersions unanswered for " +
             std::to_string(cfg_.api_versions_timeout.count()) +
             "ms: taken for a Kafka 0.8 broker for the rest of this process (ApiVersions answered by the "
             "hook); kws.broker.api=0.8 skips the wait";
    });
  };
}

void engine::set_client_name(std::string_view name) {
  {
    std::lock_guard lock(name_mu_);
    if (name_ == name) return;
    name_ = std::string(name);
  }
  note(log_level::debug, [&] {
    return "WebSocket hook: loopback listener 127.0.0.1:" + std::to_string(ntohs(listener_.sin_port)) +
           ", brokers at " + brokers_.str() + ", bootstrap servers at " + bootstrap_.str();
  });
}

std::string engine::client_name() const {
  std::lock_guard lock(name_mu_);
  return name_;
}

void engine::shutdown() {
  std::call_once(shutdown_once_, [this] {
    stop_connecting();
    {
      std::lock_guard lock(mu_);
      pending_.clear();
    }
    asio::post(ioc_, [this] { stop_on_loop(); });
    if (finished_.get_future().wait_for(shutdown_limit) != std::future_status::ready) {
      note(log_level::debug, [] { return std::string("connections still closing at the end: cut off"); });
      ioc_.stop();
    }
    if (thread_.joinable()) thread_.join();
  });
}

void engine::stop_on_loop() {
  stopped_on_loop_ = true;
  error_code ignored;
  acceptor_.close(ignored);
  accepting_->stop();
  // Copy: a relay may end (and be erased) inside drain.
  std::vector<std::shared_ptr<relay>> all;
  for (auto& [id, r] : relays_) all.push_back(r);
  for (auto& r : all) r->drain(0ms);
  // The loop ends by itself once the last relay and dial are done.
  guard_.reset();
}

}  // namespace kws::rdkafka::detail
