// Shared, immutable settings of a dialer: the config and one TLS context for all its connections.
#pragma once

#include <kws/dialer.hpp>

#include <boost/asio/ssl/context.hpp>

namespace kws::detail {

struct dialer_state {
  dialer_config config;
  forward_proxy_rules proxies;
  mutable boost::asio::ssl::context ssl{boost::asio::ssl::context::tls_client};
};

}  // namespace kws::detail
