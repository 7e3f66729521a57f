#include "proxy_header.hpp"

#include "runtime.hpp"

#include <kws/proxy_protocol.hpp>

#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>

#include <memory>
#include <utility>
#include <vector>

namespace kws::app {
namespace {

namespace asio = boost::asio;
using boost::system::error_code;
using tcp = asio::ip::tcp;
using status = proxy_protocol::result::status;

class reading : public std::enable_shared_from_this<reading> {
 public:
  reading(tcp::socket& s, std::chrono::milliseconds timeout, std::function<void(proxy_header_read)> done)
      : socket_(s), timer_(s.get_executor()), timeout_(timeout), done_(std::move(done)) {}

  void start() {
    timer_.expires_after(timeout_);
    timer_.async_wait([self = shared_from_this()](error_code ec) {
      // A wait that ended with the header read already: the socket may be in other hands by now.
      if (ec || !self->done_) return;
      self->timed_out_ = true;
      error_code ignored;
      self->socket_.cancel(ignored);
    });
    next();
  }

 private:
  void next() {
    const auto r = proxy_protocol::parse(bytes_);
    if (r.what == status::invalid) return finish({r.error});
    if (r.what == status::done) {
      proxy_header_read out;
      out.local = r.parsed.local;
      error_code ec;
      out.client = r.parsed.source ? *r.parsed.source : socket_.remote_endpoint(ec);
      return finish(std::move(out));
    }
    // Exactly what the parser asks for, so that the first byte after the header stays in the socket.
    const auto have = bytes_.size();
    bytes_.resize(r.needed);
    asio::async_read(socket_, asio::buffer(bytes_.data() + have, r.needed - have),
                     [self = shared_from_this(), have](error_code ec, std::size_t n) {
                       if (!ec) return self->next();
                       self->bytes_.resize(have + n);
                       self->failed(ec);
                     });
  }

  void failed(const error_code& ec) {
    const auto got = std::to_string(bytes_.size()) + " byte(s)";
    if (timed_out_) {
      return finish({"no complete PROXY protocol header within " + human_duration(timeout_) + " (" + got +
                     " came; --proxy-protocol is on)"});
    }
    if (ec == asio::error::eof) {
      proxy_header_read out{"the connection closed after " + got +
                            ", before a complete PROXY protocol header (--proxy-protocol is on)"};
      out.silent = bytes_.empty();
      return finish(std::move(out));
    }
    finish({"reading the PROXY protocol header: " + ec.message()});
  }

  void finish(proxy_header_read r) {
    timer_.cancel();
    auto done = std::exchange(done_, nullptr);
    done(std::move(r));
  }

  tcp::socket& socket_;
  asio::steady_timer timer_;
  std::chrono::milliseconds timeout_;
  std::function<void(proxy_header_read)> done_;
  std::vector<unsigned char> bytes_;
  bool timed_out_ = false;
};

}  // namespace

void async_read_proxy_header(tcp::socket& socket, std::chrono::milliseconds timeout,
                             std::function<void(proxy_header_read)> done) {
  std::make_shared<reading>(socket, timeout, std::move(done))->start();
}

}  // namespace kws::app
