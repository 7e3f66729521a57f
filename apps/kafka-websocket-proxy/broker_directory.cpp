#include "broker_directory.hpp"

#include "cli.hpp"

#include <kws/host_port.hpp>

#include <spdlog/spdlog.h>
#include <boost/asio/error.hpp>
#include <boost/asio/ip/address.hpp>

#include <algorithm>
#include <cctype>
#include <shared_mutex>

namespace kws::proxy {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

std::string_view unbracket(std::string_view host) {
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') return host.substr(1, host.size() - 2);
  return host;
}

std::string host_port(std::string_view host, std::int32_t port) {
  return kws::join_host_port(host, static_cast<std::uint32_t>(port));
}

// For note_node's warning: when `url` could be a gateway's bootstrap path (`/`, or a path that ends in
// `/kafka`), the template that reaches each broker through that gateway; otherwise where a gateway serves
// them.
std::string gateway_hint(const std::string& url) {
  const auto scheme_end = url.find("://");
  const auto path_at = scheme_end == std::string::npos ? std::string::npos : url.find('/', scheme_end + 3);
  if (path_at != std::string::npos && url.find('?', path_at) == std::string::npos) {
    const std::string_view path = std::string_view(url).substr(path_at);
    if (path == "/") return " (behind kafka-websocket-gateway: '" + url + "kafka/{node_id}')";
    if (path.ends_with("/kafka")) return " (behind kafka-websocket-gateway: '" + url + "/{node_id}')";
  }
  return " (kafka-websocket-gateway serves each at /kafka/{node_id})";
}

}  // namespace

bool broker_directory::is_loopback(std::string_view host) {
  host = unbracket(host);
  if (iequals(host, "localhost") || iequals(host, "localhost.localdomain")) return true;
  boost::system::error_code ec;
  const auto a = boost::asio::ip::make_address(std::string(host), ec);
  return !ec && a.is_loopback();
}

broker_directory::broker_directory(directory_config config, listener_opener open)
    : config_(std::move(config)), open_(std::move(open)), next_port_(config_.first_port) {
  own_ports_.insert(config_.main_port);
}

bool broker_directory::is_self(std::string_view host) const {
  if (is_loopback(host) || iequals(unbracket(host), unbracket(config_.advertise_host))) return true;
  return std::any_of(config_.self_hosts.begin(), config_.self_hosts.end(),
                     [&](const std::string& s) { return iequals(unbracket(host), unbracket(s)); });
}

route_decision broker_directory::decide(const kafka::advertised_broker& b, bool own_port) const {
  using kind = route_decision::kind;
  // The original deployment: the broker was told to advertise this proxy. Already right; and a listener
  // for it would dial the proxy itself.
  if (own_port && is_self(b.host)) return {kind::keep, {}, {}};

  // Normalised (explicit port, path) so that it compares with the bootstrap URL; a host that makes no URL
  // (the broker advertised garbage) fails this response rather than opening a listener that cannot work.
  boost::system::error_code ec;
  const auto parsed = kws::parse_address(config_.url_template.expand(b.host, b.port, b.node_id), false, ec);
  if (ec) return {kind::invalid, {}, ec};
  std::string url = parsed.str();
  const bool same_endpoint =
      b.port == config_.bootstrap_port && (iequals(unbracket(b.host), unbracket(config_.bootstrap_host)) ||
                                           (is_loopback(b.host) && is_loopback(config_.bootstrap_host)));
  // The bootstrap broker: the same URL, or (unless the template tells nodes apart) the same host and port.
  if (url == config_.bootstrap_url || (same_endpoint && !config_.url_template.uses_node_id())) {
    return {kind::main, {}, {}};
  }
  return {kind::listener, std::move(url), {}};
}

std::optional<std::uint16_t> broker_directory::find(const std::string& url) const {
  std::shared_lock lock(mu_);
  if (auto it = by_url_.find(url); it != by_url_.end()) return it->second.port;
  return std::nullopt;
}

std::optional<kafka::broker_endpoint> broker_directory::map(const kafka::advertised_broker& b,
                                                            boost::system::error_code& ec) {
  bool own_port = false;
  {
    std::shared_lock lock(mu_);
    own_port = own_ports_.count(b.port) > 0;
  }
  auto d = decide(b, own_port);
  switch (d.what) {
    case route_decision::kind::keep:
      return std::nullopt;
    case route_decision::kind::invalid:
      // The broker's bytes, whatever they are: cut and escaped for the line.
      spdlog::error("broker {} advertises {}, which makes no WebSocket URL with the template", b.node_id,
                    app::printable(host_port(b.host, b.port)));
      ec = d.error;
      return std::nullopt;
    case route_decision::kind::main:
      note_node(config_.main_port, b, config_.bootstrap_url);
      return kafka::broker_endpoint{config_.advertise_host, config_.main_port};
    case route_decision::kind::listener:
      break;
  }
  auto port = find(d.url);
  if (!port) {
    port = open(route{d.url, b.node_id, host_port(b.host, b.port), 0}, ec);
    if (!port) return std::nullopt;
  }
  note_node(*port, b, d.url);
  return kafka::broker_endpoint{config_.advertise_host, *port};
}

// Two brokers behind one listener: what a client sends to either reaches the one URL, and a broker there
// that is not the partition's leader answers NOT_LEADER for ever, with nothing logged. The usual cause is a
// gateway (or any broker side that serves each broker at a path of its own) reached with the default
// template, which makes the same URL of every broker the gateway advertises at its own address.
void broker_directory::note_node(std::uint16_t port, const kafka::advertised_broker& b,
                                 const std::string& url) {
  std::int32_t first = 0;
  {
    std::lock_guard lock(nodes_mu_);
    const auto [it, inserted] = node_at_port_.emplace(port, b.node_id);
    if (inserted || it->second == b.node_id || !reported_shared_.insert(port).second) return;
    first = it->second;
  }
  spdlog::warn(
      "brokers {} and {} both map to {}, so clients find both at {} and send what they mean for either to "
      "that "
      "one URL; if it leads to one broker only, give --broker-url-template a {{node_id}}{}",
      first, b.node_id, url, host_port(config_.advertise_host, port), gateway_hint(url));
}

// First sight of a broker: one worker binds its listener, outside every lock that a lookup takes; a worker
// that sees the same broker meanwhile waits for that bind rather than hand out a port that is not listening.
std::optional<std::uint16_t> broker_directory::open(route r, boost::system::error_code& ec) {
  {
    std::unique_lock lock(opening_mu_);
    for (;;) {
      if (const auto port = find(r.url)) return port;
      if (opening_.insert(r.url).second) break;
      opened_.wait(lock);
    }
  }
  const auto port = bind_next(r, ec);
  if (port) {
    std::unique_lock lock(mu_);
    own_ports_.insert(*port);
    by_url_.emplace(r.url, r);
  }
  {
    std::lock_guard lock(opening_mu_);
    opening_.erase(r.url);
  }
  // After a failure the waiters try for themselves, as the next response naming the broker would.
  opened_.notify_all();
  if (port) {
    spdlog::info("broker {} at {} is reachable through {} ({})", r.node_id, r.advertised,
                 host_port(config_.advertise_host, *port), r.url);
  }
  return port;
}

std::optional<std::uint16_t> broker_directory::bind_next(route& r, boost::system::error_code& ec) {
  if (config_.ports_by_node_id) return bind_by_node_id(r, ec);
  const bool any_port = config_.first_port == 0;
  for (;;) {
    std::uint32_t next = next_port_.load();
    if (!any_port && next > config_.last_port) break;
    const auto want = any_port ? std::uint16_t{0} : static_cast<std::uint16_t>(next);
    boost::system::error_code open_ec;
    r.port = open_(r, want, open_ec);
    // Taken or in use: the range moves on, unless another worker moved it already.
    if (!any_port && (!open_ec || open_ec == boost::asio::error::address_in_use))
      next_port_.compare_exchange_strong(next, next + 1);
    if (!open_ec) return r.port;
    if (any_port || open_ec != boost::asio::error::address_in_use) {
      spdlog::error("cannot open a listener for broker {} at {} ({}): {}", r.node_id, r.advertised, r.url,
                    open_ec.message());
      ec = open_ec;
      return std::nullopt;
    }
  }
  spdlog::error("no free port left in --broker-ports {}-{} for broker {} at {} ({})", config_.first_port,
                config_.last_port, r.node_id, r.advertised, r.url);
  ec = boost::asio::error::address_in_use;
  return std::nullopt;
}

// No other port will do: a client, or another proxy, expects this broker at first_port + node id.
std::optional<std::uint16_t> broker_directory::bind_by_node_id(route& r, boost::system::error_code& ec) {
  const std::int64_t port = std::int64_t{config_.first_port} + r.node_id;
  if (r.node_id < 0 || port > config_.last_port) {
    bool first_time = false;
    {
      std::lock_guard lock(opening_mu_);
      first_time = out_of_range_.insert(r.node_id).second;
    }
    // Every Metadata response names the broker again: the line once, the failed responses at debug.
    const auto level = first_time ? spdlog::level::err : spdlog::level::debug;
    spdlog::log(level,
                "broker {} at {} has no port: with --ports-by-node-id its port is {} + {}, outside "
                "--broker-ports {}-{}; responses naming it fail (widen the range to cover node id {})",
                r.node_id, r.advertised, config_.first_port, r.node_id, config_.first_port, config_.last_port,
                r.node_id);
    ec = make_error_code(boost::system::errc::result_out_of_range);
    return std::nullopt;
  }
  boost::system::error_code open_ec;
  r.port = open_(r, static_cast<std::uint16_t>(port), open_ec);
  if (open_ec) {
    spdlog::error("cannot open port {} for broker {} at {} ({}) with --ports-by-node-id: {}", port, r.node_id,
                  r.advertised, r.url, open_ec.message());
    ec = open_ec;
    return std::nullopt;
  }
  return r.port;
}

bool broker_directory::names_brokers_by_node_id_alone(const kws::url_template& t) {
  const auto& s = t.str();
  return t.uses_node_id() && s.find("{host}") == std::string::npos && s.find("{port}") == std::string::npos;
}

void broker_directory::open_all(boost::system::error_code& ec) {
  for (std::int32_t id = 0; id <= config_.last_port - config_.first_port; ++id) {
    auto d = decide(kafka::advertised_broker{id, "", 0}, false);
    if (d.what == route_decision::kind::invalid) {
      ec = d.error;
      return;
    }
    if (d.what != route_decision::kind::listener) continue;
    route r{std::move(d.url), id, {}, 0};
    const auto port = bind_by_node_id(r, ec);
    if (!port) return;
    std::unique_lock lock(mu_);
    own_ports_.insert(*port);
    by_url_.emplace(r.url, r);
  }
}

std::vector<route> broker_directory::routes() const {
  std::shared_lock lock(mu_);
  std::vector<route> out;
  for (const auto& [url, r] : by_url_) out.push_back(r);
  return out;
}

}  // namespace kws::proxy
