#include "ws_test_client.hpp"

#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>

namespace kws::test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using boost::system::error_code;
using tcp = asio::ip::tcp;

struct ws_test_client::impl {
  asio::io_context ioc;
  websocket::stream<beast::tcp_stream> ws{ioc};
  tcp::socket& sock() { return beast::get_lowest_layer(ws).socket(); }
};

ws_test_client::ws_test_client() : impl_(std::make_unique<impl>()) {}
ws_test_client::~ws_test_client() = default;

error_code ws_test_client::connect(std::uint16_t port, std::chrono::milliseconds timeout,
                                   const std::string& target,
                                   const std::vector<std::pair<std::string, std::string>>& headers) {
  auto& i = *impl_;
  const tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), port);
  if (auto ec = run_op(i.ioc, i.sock(), timeout,
                       [&](auto done) { beast::get_lowest_layer(i.ws).async_connect(ep, done); }))
    return ec;
  i.ws.binary(true);
  i.ws.read_message_max(200u << 20);
  i.ws.set_option(websocket::stream_base::decorator([headers](websocket::request_type& req) {
    for (const auto& [name, value] : headers) req.set(name, value);
  }));
  return run_op(i.ioc, i.sock(), timeout,
                [&](auto done) { i.ws.async_handshake("127.0.0.1:" + std::to_string(port), target, done); });
}

error_code ws_test_client::send(const bytes& b, bool text, std::chrono::milliseconds timeout) {
  auto& i = *impl_;
  i.ws.text(text);
  return run_op(i.ioc, i.sock(), timeout, [&](auto done) {
    i.ws.async_write(asio::buffer(b), [done](error_code ec, std::size_t) { done(ec); });
  });
}

error_code ws_test_client::read(bytes& out, std::chrono::milliseconds timeout) {
  auto& i = *impl_;
  beast::flat_buffer buf;
  auto ec = run_op(i.ioc, i.sock(), timeout,
                   [&](auto done) { i.ws.async_read(buf, [done](error_code e, std::size_t) { done(e); }); });
  const auto* p = static_cast<const unsigned char*>(buf.data().data());
  out.assign(p, p + buf.size());
  return ec;
}

int ws_test_client::close_code() const {
  return impl_->ws.reason().code;
}

}  // namespace kws::test
