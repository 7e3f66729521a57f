#include <kws/kws.hpp>

#include <boost/asio/io_context.hpp>

#include <iostream>

int main() {
  boost::asio::io_context ioc;
  kws::dialer d{ioc.get_executor(), kws::dialer_config{.tls = true}};
  boost::system::error_code ec;
  auto url = kws::parse_address("mybroker.workers.dev:443", d.config().tls, ec);
  if (ec) return 1;
  d.dial("not an address", ec);
  if (ec != kws::errc::invalid_address) return 1;
  std::cout << url.str() << '\n';
  return 0;
}
