// The relay over plain TCP: relay_impl (relay_impl.hpp) between a TCP socket and a WebSocket connection.
#include "relay/relay_impl.hpp"

namespace kws {

using detail::relay_impl;
using tcp = boost::asio::ip::tcp;

// A relay is the largest block an idle connection holds. Within 1008 bytes, it and make_shared's 16 take
// jemalloc's 1024-byte class; past that, the 1280-byte one (256 bytes more for every connection).
static_assert(sizeof(relay_impl<tcp::socket, connection>) <= 1008);
static_assert(sizeof(relay_impl<connection, tcp::socket>) <= 1008);

std::shared_ptr<relay> relay::create(tcp::socket client, connection broker, relay_options options,
                                     std::shared_ptr<frame_hook> hook, done_handler on_done,
                                     reconnect_function<connection> reconnect) {
  return std::make_shared<relay_impl<tcp::socket, connection>>(std::move(client), std::move(broker),
                                                               std::move(options), std::move(hook),
                                                               std::move(on_done), std::move(reconnect));
}

std::shared_ptr<relay> relay::create(connection client, tcp::socket broker, relay_options options,
                                     std::shared_ptr<frame_hook> hook, done_handler on_done,
                                     reconnect_function<tcp::socket> reconnect) {
  return std::make_shared<relay_impl<connection, tcp::socket>>(std::move(client), std::move(broker),
                                                               std::move(options), std::move(hook),
                                                               std::move(on_done), std::move(reconnect));
}

}  // namespace kws
