#include "forward_proxy_process.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>

#include <regex>
#include <stdexcept>

#ifndef KWS_TINYPROXY_PATH
#error "tests/support/CMakeLists.txt defines KWS_TINYPROXY_PATH"
#endif

namespace kws::test {
namespace {

std::string regex_escape(const std::string& s) {
  static const std::regex special(R"([.^$|()\[\]{}*+?\\])");
  return std::regex_replace(s, special, R"(\$&)");
}

}  // namespace

forward_proxy_process::forward_proxy_process(forward_proxy_options options) {
  std::string failures;
  for (int attempt = 0; attempt < 3; ++attempt) {
    // tinyproxy takes no port 0: pick a free one, and start again should another process take it first.
    port_ = free_port();
    std::string conf = "Port " + std::to_string(port_) +
                       "\n"
                       "Listen 127.0.0.1\n"
                       "Timeout 60\n"
                       "MaxClients 100\n"
                       "Allow 127.0.0.1\n"
                       "DisableViaHeader Yes\n"
                       // Info: the CONNECT request lines, and the line that says it accepts connections.
                       "LogLevel Info\n";
    for (auto p : options.connect_ports) conf += "ConnectPort " + std::to_string(p) + "\n";
    if (!options.user.empty()) conf += "BasicAuth " + options.user + " " + options.password + "\n";
    const auto path = dir_ / ("tinyproxy-" + std::to_string(attempt) + ".conf");
    write_file(path, conf);
    proc_ = std::make_unique<child_process>(std::vector<std::string>{KWS_TINYPROXY_PATH, "-d", "-c", path});
    if (proc_->wait_for_output(std::regex("Accepting connections"))) return;
    failures += "attempt " + std::to_string(attempt + 1) + ", port " + std::to_string(port_) + ":\n" +
                proc_->output() + "\n";
    proc_.reset();
  }
  throw std::runtime_error("tinyproxy did not start:\n" + failures);
}

void forward_proxy_process::sync() const {
  // tinyproxy logs each request as it reads it, and its log reaches us through a pipe a little later: once a
  // request sent now is in, so is everything logged before it.
  const std::string marker = "127.0.0.1:1";
  const int before = count(marker);
  boost::asio::io_context ioc;
  boost::asio::ip::tcp::socket s(ioc);
  s.connect({boost::asio::ip::make_address("127.0.0.1"), port_});
  boost::asio::write(
      s, boost::asio::buffer(std::string("CONNECT " + marker + " HTTP/1.1\r\nHost: " + marker + "\r\n\r\n")));
  if (!wait_for_connects(marker, before + 1))
    throw std::runtime_error("tinyproxy did not log a request within 10 s:\n" + log());
}

int forward_proxy_process::connects_to(const std::string& target) const {
  sync();
  return count(target);
}

int forward_proxy_process::count(const std::string& target) const {
  const auto out = log();
  const std::regex line("Request \\(file descriptor \\d+\\): CONNECT " + regex_escape(target) +
                        " HTTP/1\\.1");
  return static_cast<int>(
      std::distance(std::sregex_iterator(out.begin(), out.end(), line), std::sregex_iterator()));
}

bool forward_proxy_process::wait_for_connects(const std::string& target, int n,
                                              std::chrono::milliseconds limit) const {
  std::string pattern;
  for (int i = 0; i < n; ++i) pattern += "CONNECT " + regex_escape(target) + " HTTP/1\\.1[\\s\\S]*";
  return proc_->wait_for_output(std::regex(pattern), limit).has_value();
}

}  // namespace kws::test
