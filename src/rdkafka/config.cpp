// The kws.* properties: parsing and checking, with no librdkafka and no I/O beyond loading a CA file and a
// client certificate.
#include <kws/address.hpp>
#include <kws/rdkafka.hpp>
#include <kws/tls_socket.hpp>

#include <boost/asio/system_executor.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>

namespace kws::rdkafka {
namespace {

using namespace std::chrono_literals;

constexpr std::string_view header_prefix = "kws.header.";

bool iequals(std::string_view a, std::string_view b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
  });
}

// librdkafka's own spelling of a bad value, so that kws.* errors read like every other property's.
std::string invalid(std::string_view name, std::string_view value, std::string_view why) {
  return "Invalid value \"" + std::string(value) + "\" for configuration property \"" + std::string(name) +
         "\": " + std::string(why);
}

// As librdkafka reads booleans: true, t, 1 / false, f, 0 (case-insensitive).
std::optional<bool> parse_bool(std::string_view v) {
  if (iequals(v, "true") || iequals(v, "t") || v == "1") return true;
  if (iequals(v, "false") || iequals(v, "f") || v == "0") return false;
  return std::nullopt;
}

std::optional<long long> parse_int(std::string_view v, long long lo, long long hi) {
  long long n = 0;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || end != v.data() + v.size() || n < lo || n > hi) return std::nullopt;
  return n;
}

// RFC 9110 token characters: what an HTTP field name may hold.
bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
  });
}

bool is_field_value(std::string_view s) {
  return std::none_of(s.begin(), s.end(), [](char c) { return c == '\r' || c == '\n' || c == '\0'; });
}

std::optional<log_level> parse_level(std::string_view v) {
  static constexpr std::pair<std::string_view, log_level> levels[] = {
      {"trace", log_level::trace}, {"debug", log_level::debug},  {"info", log_level::info},
      {"warn", log_level::warn},   {"warning", log_level::warn}, {"error", log_level::error}};
  for (const auto& [n, l] : levels)
    if (iequals(v, n)) return l;
  return std::nullopt;
}

bool check_template(std::string_view t, std::string& why) {
  if (t.empty()) return true;
  boost::system::error_code ec;
  url_template::parse(t, ec);
  if (ec) why = "expected a ws:// or wss:// URL with only {host}, {port} and {node_id} in it";
  return !ec;
}

// Loading the file into a TLS context is the only check that tells an unreadable file, a directory and a
// file without certificates apart from a good one.
bool check_ca_file(const std::string& path, std::string& why) {
  if (path.empty()) return true;
  try {
    dialer probe(boost::asio::system_executor(), dialer_config{.tls = true, .ca_file = path});
    return true;
  } catch (const std::exception& e) {
    why = std::string("cannot load CA certificates: ") + e.what();
    return false;
  }
}

// The client certificate and its key: each loaded as it is set, and once both are there, checked to belong
// together.
bool check_client_certificate(const std::string& cert, const std::string& key, std::string& why) {
  if (cert.empty() && key.empty()) return true;
  try {
    make_client_tls_context(tls_client_options{.ca_file = {}, .cert_file = cert, .key_file = key});
    return true;
  } catch (const std::exception& e) {
    why = std::string("cannot load the client certificate: ") + e.what();
    return false;
  }
}

void set_header(dialer_config& d, std::string_view name, const char* value) {
  auto& hs = d.headers;
  hs.erase(std::remove_if(hs.begin(), hs.end(), [&](const auto& h) { return iequals(h.first, name); }),
           hs.end());
  if (value) hs.emplace_back(std::string(name), value);
}

}  // namespace

dialer_config default_dialer_config() {
  dialer_config d;
  d.idle_timeout = 60s;
  d.keepalive_pings = true;
  return d;
}

void log_to_stderr(log_level level, std::string_view client, std::string_view text) {
  // syslog levels, as librdkafka prints them: 7 debug, 6 info, 4 warning, 3 error.
  static constexpr int syslog[] = {7, 7, 6, 4, 3};
  const long long now = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
  std::fprintf(stderr, "%%%d|%lld.%03lld|KWS|%.*s| %.*s\n", syslog[static_cast<int>(level)], now / 1000,
               now % 1000, static_cast<int>(client.size()), client.data(), static_cast<int>(text.size()),
               text.data());
}

forward_proxy_settings environment_forward_proxy() {
  return forward_proxy_from_environment([](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    return v ? std::optional<std::string>(v) : std::nullopt;
  });
}

property_result set_property(config& cfg, std::string_view name, const char* value, std::string& error) {
  const config defaults;
  const std::string_view v = value ? std::string_view(value) : std::string_view();
  std::string why;
  auto fail = [&](std::string_view reason) {
    error = invalid(name, v, reason);
    return property_result::invalid;
  };

  if (name.starts_with(header_prefix)) {
    const auto header = name.substr(header_prefix.size());
    if (!is_token(header)) {
      error = "Invalid configuration property \"" + std::string(name) + "\": \"" + std::string(header) +
              "\" is not an HTTP header name";
      return property_result::invalid;
    }
    if (!is_field_value(v)) return fail("a header value cannot hold CR, LF or NUL");
    set_header(cfg.dialer, header, value);
    return property_result::ok;
  }
  if (name == "kws.url.template" || name == "kws.bootstrap.url.template") {
    if (!check_template(v, why)) return fail(why);
    (name == "kws.url.template" ? cfg.url_template : cfg.bootstrap_url_template) = std::string(v);
    return property_result::ok;
  }
  if (name == "kws.tls" || name == "kws.insecure") {
    const auto b = value ? parse_bool(v) : std::optional<bool>(false);
    if (!b) return fail("expected true or false");
    (name == "kws.tls" ? cfg.dialer.tls : cfg.dialer.insecure_skip_verify) = *b;
    return property_result::ok;
  }
  if (name == "kws.ca.file") {
    if (!check_ca_file(std::string(v), why)) return fail(why);
    cfg.dialer.ca_file = std::string(v);
    return property_result::ok;
  }
  if (name == "kws.cert.file" || name == "kws.key.file") {
    const bool cert = name == "kws.cert.file";
    const std::string path(v);
    if (!check_client_certificate(cert ? path : cfg.dialer.cert_file, cert ? cfg.dialer.key_file : path, why))
      return fail(why);
    (cert ? cfg.dialer.cert_file : cfg.dialer.key_file) = path;
    return property_result::ok;
  }
  if (name == "kws.broker.api") {
    if (!value || iequals(v, "auto")) {
      cfg.broker_api = kafka::broker_api::negotiate;
    } else if (v == "0.8" || v == "0.8.0" || v == "0.8.2") {
      cfg.broker_api = kafka::broker_api::kafka_0_8;
    } else {
      return fail("expected auto or 0.8");
    }
    return property_result::ok;
  }
  if (name == "kws.api.versions.timeout.ms") {
    const auto n = value ? parse_int(v, 0, 60000) : defaults.api_versions_timeout.count();
    if (!n) return fail("expected milliseconds from 0 (never) to 60000");
    cfg.api_versions_timeout = std::chrono::milliseconds(*n);
    return property_result::ok;
  }
  if (name == "kws.handshake.timeout.ms") {
    const auto n = value ? parse_int(v, 1, 300000) : defaults.dialer.handshake_timeout.count();
    if (!n) return fail("expected milliseconds from 1 to 300000");
    cfg.dialer.handshake_timeout = std::chrono::milliseconds(*n);
    return property_result::ok;
  }
  if (name == "kws.ping.interval.ms") {
    const auto n = value ? parse_int(v, 0, 3600000) : defaults.dialer.idle_timeout.count() / 2;
    if (!n) return fail("expected milliseconds from 0 (no pings) to 3600000");
    // As the proxy's --ping-interval: a ping after this long without traffic, the end after twice it.
    cfg.dialer.idle_timeout = std::chrono::milliseconds(2 * *n);
    cfg.dialer.keepalive_pings = *n > 0;
    return property_result::ok;
  }
  if (name == "kws.max.frame.bytes") {
    const auto n = value ? parse_int(v, 1024, 1000000000)
                         : std::optional<long long>(static_cast<long long>(defaults.dialer.max_frame_bytes));
    if (!n) return fail("expected bytes from 1024 to 1000000000");
    cfg.dialer.max_frame_bytes = static_cast<std::size_t>(*n);
    return property_result::ok;
  }
  if (name == "kws.max.in.flight") {
    const auto n = value ? parse_int(v, 1, 1000000)
                         : std::optional<long long>(static_cast<long long>(defaults.max_in_flight));
    if (!n) return fail("expected a count from 1 to 1000000");
    cfg.max_in_flight = static_cast<std::size_t>(*n);
    return property_result::ok;
  }
  if (name == "kws.broker.max.in.flight") {
    if (!value) {
      cfg.broker_max_in_flight.reset();  // the default of the broker api
      return property_result::ok;
    }
    const auto n = parse_int(v, 0, 1000000);
    if (!n) return fail("expected a count from 0 (no limit) to 1000000");
    cfg.broker_max_in_flight = static_cast<std::size_t>(*n);
    return property_result::ok;
  }
  if (name == "kws.http.proxy") {
    forward_proxy_settings fp;
    if (value && iequals(v, "env")) {
      fp = environment_forward_proxy();
    } else if (value && !v.empty() && !iequals(v, "none")) {
      fp = forward_proxy_settings::through(std::string(v));
    }
    boost::system::error_code ec;
    std::string what;
    forward_proxy_rules::compile(fp, ec, &what);
    // The value is not echoed: a proxy URL may carry credentials.
    if (ec) {
      error = "Invalid value for configuration property \"kws.http.proxy\": " + what +
              " (expected none, env or http://[user:password@]host[:port])";
      return property_result::invalid;
    }
    cfg.dialer.forward_proxy = std::move(fp);
    return property_result::ok;
  }
  if (name == "kws.log.level") {
    if (value && iequals(v, "off")) {
      cfg.log = nullptr;
      return property_result::ok;
    }
    const auto l = value ? parse_level(v) : std::optional<log_level>(defaults.min_log_level);
    if (!l) return fail("expected trace, debug, info, warn, error or off");
    cfg.min_log_level = *l;
    if (!cfg.log) cfg.log = log_to_stderr;
    return property_result::ok;
  }
  return property_result::unknown;
}

bool validate(const config& cfg, std::string& error) {
  std::string why;
  if (!check_template(cfg.url_template, why)) {
    error = invalid("kws.url.template", cfg.url_template, why);
    return false;
  }
  if (!check_template(cfg.bootstrap_url_template, why)) {
    error = invalid("kws.bootstrap.url.template", cfg.bootstrap_url_template, why);
    return false;
  }
  if (!check_ca_file(cfg.dialer.ca_file, why)) {
    error = invalid("kws.ca.file", cfg.dialer.ca_file, why);
    return false;
  }
  if (cfg.dialer.cert_file.empty() != cfg.dialer.key_file.empty()) {
    const bool no_key = cfg.dialer.key_file.empty();
    error = "Configuration property \"" + std::string(no_key ? "kws.cert.file" : "kws.key.file") +
            "\" needs \"" + (no_key ? "kws.key.file" : "kws.cert.file") + "\" too";
    return false;
  }
  if (!check_client_certificate(cfg.dialer.cert_file, cfg.dialer.key_file, why)) {
    error = invalid("kws.cert.file", cfg.dialer.cert_file, why);
    return false;
  }
  for (const auto& [name, value] : cfg.dialer.headers) {
    if (!is_token(name) || !is_field_value(value)) {
      error = "Invalid configuration property \"kws.header." + name + "\": not a valid HTTP header";
      return false;
    }
  }
  if (cfg.max_in_flight == 0) {
    error = invalid("kws.max.in.flight", "0", "expected a count from 1 to 1000000");
    return false;
  }
  return true;
}

}  // namespace kws::rdkafka
