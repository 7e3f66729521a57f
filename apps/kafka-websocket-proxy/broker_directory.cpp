#include "broker_directory.hpp"

#include "cli.hpp"

#include <kws/host_port.hpp>

#include <spdlog/spdlog.h>
#include <boost/asio/error.hpp>
#include <boost/asio/ip/address.hpp>

#include <algorithm>
#include <cctype>

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

bool broker_directory::is_self(std::string_view host, std::int32_t port) const {
  if (!own_ports_.count(port)) return false;
  if (is_loopback(host) || iequals(unbracket(host), unbracket(config_.advertise_host))) return true;
  return std::any_of(config_.self_hosts.begin(), config_.self_hosts.end(),
                     [&](const std::string& s) { return iequals(unbracket(host), unbracket(s)); });
}

std::optional<kafka::broker_endpoint> broker_directory::map(const kafka::advertised_broker& b,
                                                            boost::system::error_code& ec) {
  std::lock_guard lock(mu_);
  // The original deployment: the broker was told to advertise this proxy. Already right; and a listener
  // for it would dial the proxy itself.
  if (is_self(b.host, b.port)) return std::nullopt;

  // Normalised (explicit port, path) so that it compares with the bootstrap URL; a host that makes no URL
  // (the broker advertised garbage) fails this response rather than opening a listener that cannot work.
  const auto parsed = kws::parse_address(config_.url_template.expand(b.host, b.port, b.node_id), false, ec);
  if (ec) {
    // The broker's bytes, whatever they are: cut and escaped for the line.
    spdlog::error("broker {} advertises {}, which makes no WebSocket URL with the template", b.node_id,
                  app::printable(host_port(b.host, b.port)));
    return std::nullopt;
  }
  const std::string url = parsed.str();
  const bool same_endpoint =
      b.port == config_.bootstrap_port && (iequals(unbracket(b.host), unbracket(config_.bootstrap_host)) ||
                                           (is_loopback(b.host) && is_loopback(config_.bootstrap_host)));
  // The bootstrap broker: the same URL, or (unless the template tells nodes apart) the same host and port.
  if (url == config_.bootstrap_url || (same_endpoint && !config_.url_template.uses_node_id())) {
    return kafka::broker_endpoint{config_.advertise_host, config_.main_port};
  }
  if (auto it = by_url_.find(url); it != by_url_.end()) {
    return kafka::broker_endpoint{config_.advertise_host, it->second.port};
  }

  route r{url, b.node_id, host_port(b.host, b.port), 0};
  const bool any_port = config_.first_port == 0;
  bool opened = false;
  for (; !opened && (any_port || next_port_ <= config_.last_port); ++next_port_) {
    const auto want = any_port ? std::uint16_t{0} : static_cast<std::uint16_t>(next_port_);
    boost::system::error_code open_ec;
    r.port = open_(r, want, open_ec);
    opened = !open_ec;
    if (opened) continue;
    if (any_port || open_ec != boost::asio::error::address_in_use) {
      spdlog::error("cannot open a listener for broker {} at {} ({}): {}", b.node_id, r.advertised, url,
                    open_ec.message());
      ec = open_ec;
      return std::nullopt;
    }
  }
  if (!opened) {
    spdlog::error("no free port left in --broker-ports {}-{} for broker {} at {} ({})", config_.first_port,
                  config_.last_port, b.node_id, r.advertised, url);
    ec = boost::asio::error::address_in_use;
    return std::nullopt;
  }
  own_ports_.insert(r.port);
  spdlog::info("broker {} at {} is reachable through {} ({})", b.node_id, r.advertised,
               host_port(config_.advertise_host, r.port), url);
  by_url_.emplace(url, r);
  return kafka::broker_endpoint{config_.advertise_host, r.port};
}

std::vector<route> broker_directory::routes() const {
  std::lock_guard lock(mu_);
  std::vector<route> out;
  for (const auto& [url, r] : by_url_) out.push_back(r);
  return out;
}

}  // namespace kws::proxy
