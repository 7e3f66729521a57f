// Shared settings of a dialer and of every rebind of it: the config, the TLS context for all its connections
// and the upgrade request's extra headers. The last two can be replaced while dials run (reload_tls_files,
// set_headers); each dial takes what is current when it starts.
#pragma once

#include <kws/detail/shared_slot.hpp>
#include <kws/dialer.hpp>
#include <kws/tls_socket.hpp>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kws::detail {

using header_list = std::vector<std::pair<std::string, std::string>>;

struct dialer_state {
  dialer_config config;
  forward_proxy_rules proxies;
  mutable std::optional<reloadable_client_tls> tls;  // always engaged once made
  mutable shared_slot<const header_list> headers;
};

}  // namespace kws::detail
