// The text parsers of the ws layer, over arbitrary bytes:
//  - kws::parse_address (host:port, [v6]:port, ws:// and wss:// URLs): what parses prints as a URL that
//    parses back to the same host, port, target and scheme;
//  - kws::url_template: a template that parses expands, for any host, port and node id taken from the input,
//    to a URL that parse_address accepts (hosts that are valid names) or rejects cleanly;
//  - the forward proxy settings: parse_proxy_url's authority() is exactly host:port (no user info), and
//    redact_proxy_url takes any text; no_proxy_list::parse never fails and matches() is total.
#include "fuzz_check.hpp"

#include <kws/address.hpp>
#include <kws/errc.hpp>
#include <kws/forward_proxy.hpp>

#include <fuzzer/FuzzedDataProvider.h>

#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  const bool tls = in.ConsumeBool();
  const auto port = in.ConsumeIntegral<std::uint16_t>();
  const auto node = in.ConsumeIntegral<std::int32_t>();
  const auto host = in.ConsumeRandomLengthString(64);
  const auto rest = in.ConsumeRemainingBytes<char>();
  const std::string text(rest.begin(), rest.end());

  boost::system::error_code ec;
  const auto url = kws::parse_address(text, tls, ec);
  if (!ec) {
    KWS_FUZZ_CHECK(!url.host.empty());
    KWS_FUZZ_CHECK(url.port != 0);
    KWS_FUZZ_CHECK(!url.target.empty() && url.target.front() == '/');
    const auto again = kws::parse_address(url.str(), !tls, ec);  // a URL carries its own scheme
    KWS_FUZZ_CHECK(!ec);
    KWS_FUZZ_CHECK(again.host == url.host && again.port == url.port && again.target == url.target &&
                   again.secure == url.secure);
  } else {
    KWS_FUZZ_CHECK(ec == kws::errc::invalid_address);
  }

  const auto templ = kws::url_template::parse(text, ec);
  if (!ec) {
    const auto expanded = templ.expand(host, port, node);
    kws::parse_address(expanded, false, ec);  // may fail for a host that is no name; must not crash
    KWS_FUZZ_CHECK(!ec || ec == kws::errc::invalid_address);
    KWS_FUZZ_CHECK(templ.uses_node_id() == (text.find("{node_id}") != std::string::npos));
  } else {
    KWS_FUZZ_CHECK(ec == kws::errc::invalid_address);
  }

  const auto proxy = kws::parse_proxy_url(text, ec);
  if (!ec) {
    // authority() is exactly host:port (the host in brackets when it holds a colon): no room for the user
    // info, whatever characters the password shares with the host or the port.
    const bool v6 = proxy.host.find(':') != std::string::npos;
    KWS_FUZZ_CHECK(proxy.authority() ==
                   (v6 ? "[" + proxy.host + "]" : proxy.host) + ":" + std::to_string(proxy.port));
    KWS_FUZZ_CHECK(!proxy.host.empty());
  } else {
    KWS_FUZZ_CHECK(ec == kws::errc::invalid_proxy_url);
  }
  (void)kws::redact_proxy_url(text);

  const auto list = kws::no_proxy_list::parse(text);
  (void)list.matches(host, port);
  (void)list.matches(url.host, url.port);
  return 0;
}
