#include "monitoring.hpp"

#include "cli.hpp"
#include "runtime.hpp"

#include <kws/accept_loop.hpp>

#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <optional>
#include <unordered_set>

namespace kws::app {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using boost::system::error_code;
using tcp = asio::ip::tcp;

std::optional<listen_address> parse_listen_address(const std::string& s) {
  const auto hp = parse_host_port(s, true);
  if (!hp) return std::nullopt;
  if (!hp->host.empty()) {
    error_code ec;
    asio::ip::make_address(hp->host, ec);
    if (ec) return std::nullopt;  // an address, not a name: the listener binds it as it is
  }
  return listen_address{.host = hp->host, .port = hp->port};
}

CLI::Option* add_metrics_listen(CLI::App& app, std::string& value) {
  return app
      .add_option("--metrics-listen", value,
                  "HOST:PORT for GET /metrics (Prometheus), /healthz and /readyz (default: none)")
      ->check([](const std::string& v) -> std::string {
        return parse_listen_address(v)
                   ? std::string()
                   : "expected ADDRESS:PORT (an IP address, or empty for every interface), got '" + v + "'";
      });
}

namespace {

constexpr auto io_timeout = std::chrono::seconds(10);
constexpr std::size_t max_header_bytes = 8 * 1024;
constexpr std::size_t max_body_bytes = 8 * 1024;
constexpr std::size_t max_sessions = 64;

}  // namespace

class monitoring_endpoint::impl : public std::enable_shared_from_this<impl> {
 public:
  impl(asio::io_context& ioc, handlers h) : ioc_(ioc), acceptor_(ioc), h_(std::move(h)) {}

  class session;

  void start_accepting() {
    loop_.emplace(
        acceptor_,
        [this](tcp::socket s) {
          if (sessions_.size() >= max_sessions) {
            // Scrapers and probes need a few; more would only hold memory.
            spdlog::debug("metrics: {} connections open; closing another at once", max_sessions);
            error_code ignored;
            s.close(ignored);
            return;
          }
          start_session(std::move(s));
        },
        // Out of descriptors or similar: the Kafka side matters more; the loop pauses and tries again.
        kws::accept_loop_options{.name = "metrics listener", .log = log_to_spdlog()});
    loop_->start();
  }

  void start_session(tcp::socket s);
  void stop();

  asio::io_context& ioc_;
  tcp::acceptor acceptor_;
  std::optional<kws::accept_loop> loop_;  // after the acceptor: stopped before it goes
  handlers h_;
  std::unordered_set<std::shared_ptr<session>> sessions_;
  bool stopped_ = false;
};

// One HTTP connection: requests in turn (keep-alive), each answered before the next is read.
class monitoring_endpoint::impl::session : public std::enable_shared_from_this<session> {
 public:
  session(std::shared_ptr<impl> owner, tcp::socket s) : owner_(std::move(owner)), stream_(std::move(s)) {}

  void read() {
    parser_.emplace();
    parser_->header_limit(max_header_bytes);
    parser_->body_limit(max_body_bytes);
    stream_.expires_after(io_timeout);
    http::async_read(stream_, buffer_, *parser_, [self = shared_from_this()](error_code ec, std::size_t) {
      if (ec) return self->close();
      self->handle(self->parser_->release());
    });
  }

  void close() {
    error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
    owner_->sessions_.erase(shared_from_this());
  }

 private:
  void handle(http::request<http::string_body> req) {
    const auto target = std::string(req.target());
    const auto path = target.substr(0, target.find('?'));
    const bool head = req.method() == http::verb::head;
    const auto version = req.version();
    const bool keep_alive = req.keep_alive();
    if (req.method() != http::verb::get && !head) {
      return respond(version, keep_alive, head, http::status::method_not_allowed, "only GET and HEAD\n",
                     "text/plain; charset=utf-8");
    }
    if (path == "/metrics") {
      return respond(version, keep_alive, head, http::status::ok, owner_->h_.metrics(),
                     "text/plain; version=0.0.4; charset=utf-8");
    }
    if (path == "/healthz") {
      return respond(version, keep_alive, head, http::status::ok, "ok\n", "text/plain; charset=utf-8");
    }
    if (path == "/readyz") {
      if (!owner_->h_.ready) {
        return respond(version, keep_alive, head, http::status::ok, "ready\n", "text/plain; charset=utf-8");
      }
      return owner_->h_.ready([self = shared_from_this(), version, keep_alive, head](check_result r) {
        // The check may end on another thread; the answer is written from the endpoint's own.
        asio::post(self->owner_->ioc_, [self, version, keep_alive, head, r = std::move(r)] {
          if (self->owner_->stopped_) return;
          self->respond(
              version, keep_alive, head, r.ok ? http::status::ok : http::status::service_unavailable,
              r.ok ? std::string("ready\n") : "not ready: " + r.detail + "\n", "text/plain; charset=utf-8");
        });
      });
    }
    respond(version, keep_alive, head, http::status::not_found,
            "not found; try /metrics, /healthz or /readyz\n", "text/plain; charset=utf-8");
  }

  void respond(unsigned version, bool keep_alive, bool head, http::status status, std::string body,
               const char* content_type) {
    auto res = std::make_shared<http::response<http::string_body>>(status, version);
    res->set(http::field::server, "kws-metrics");
    res->set(http::field::content_type, content_type);
    if (status == http::status::method_not_allowed) res->set(http::field::allow, "GET, HEAD");
    res->keep_alive(keep_alive);
    res->body() = std::move(body);
    res->prepare_payload();  // Content-Length of the body, also for HEAD
    if (head) res->body().clear();
    stream_.expires_after(io_timeout);
    // HEAD: the header (with the GET's Content-Length) and no body.
    auto& ref = *res;
    if (head) {
      auto sr = std::make_shared<http::response_serializer<http::string_body>>(ref);
      return http::async_write_header(stream_, *sr,
                                      [self = shared_from_this(), res, sr](error_code ec, std::size_t) {
                                        self->after_write(ec, res->keep_alive());
                                      });
    }
    http::async_write(stream_, ref, [self = shared_from_this(), res](error_code ec, std::size_t) {
      self->after_write(ec, res->keep_alive());
    });
  }

  void after_write(error_code ec, bool keep_alive) {
    if (ec || !keep_alive || owner_->stopped_) return close();
    read();
  }

  std::shared_ptr<impl> owner_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
};

void monitoring_endpoint::impl::start_session(tcp::socket s) {
  auto sess = std::make_shared<session>(shared_from_this(), std::move(s));
  sessions_.insert(sess);
  sess->read();
}

void monitoring_endpoint::impl::stop() {
  if (stopped_) return;
  stopped_ = true;
  error_code ignored;
  acceptor_.close(ignored);
  if (loop_) loop_->stop();
  auto all = std::vector<std::shared_ptr<session>>(sessions_.begin(), sessions_.end());
  for (auto& s : all) s->close();
}

monitoring_endpoint::monitoring_endpoint(asio::io_context& ioc, const listen_address& where, handlers h)
    : impl_(std::make_shared<impl>(ioc, std::move(h))) {
  open_listener(impl_->acceptor_, where.host, where.port);
}

monitoring_endpoint::~monitoring_endpoint() {
  // Pending handlers hold the impl; closing here makes them complete (as operation_aborted) and let it go.
  error_code ignored;
  impl_->acceptor_.close(ignored);
}

tcp::endpoint monitoring_endpoint::local_endpoint() const {
  return impl_->acceptor_.local_endpoint();
}

void monitoring_endpoint::start() {
  spdlog::info("metrics listening on {} (GET /metrics, /healthz, /readyz)",
               endpoint_string(local_endpoint()));
  impl_->start_accepting();
}

void monitoring_endpoint::stop() {
  asio::post(impl_->ioc_, [i = impl_] { i->stop(); });
}

}  // namespace kws::app
