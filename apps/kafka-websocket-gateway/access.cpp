#include "access.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace kws::gateway {
namespace {

std::string digest(std::string_view s) {
  std::string out(SHA256_DIGEST_LENGTH, '\0');
  SHA256(reinterpret_cast<const unsigned char*>(s.data()), s.size(),
         reinterpret_cast<unsigned char*>(out.data()));
  return out;
}

std::string_view trim(std::string_view s) {
  const auto first = s.find_first_not_of(" \t\r");
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(" \t\r") - first + 1);
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

// RFC 4648 section 5, without padding (a subprotocol is an HTTP token: no '=').
std::optional<std::string> base64url_decode(std::string_view in) {
  if (in.size() % 4 == 1) return std::nullopt;
  std::string b64(in);
  for (auto& c : b64) {
    if (c == '-') {
      c = '+';
    } else if (c == '_') {
      c = '/';
    } else if (!std::isalnum(static_cast<unsigned char>(c))) {
      return std::nullopt;
    }
  }
  const auto pad = (4 - b64.size() % 4) % 4;
  b64.append(pad, '=');
  std::string out(b64.size() / 4 * 3, '\0');
  const int n =
      EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                      reinterpret_cast<const unsigned char*>(b64.data()), static_cast<int>(b64.size()));
  if (n < 0) return std::nullopt;
  out.resize(static_cast<std::size_t>(n) - pad);
  return out;
}

}  // namespace

token_set::token_set(const std::vector<std::string>& tokens) {
  for (const auto& t : tokens)
    if (!trim(t).empty()) digests_.push_back(digest(trim(t)));
}

token_set token_set::from_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read the token file " + path);
  std::vector<std::string> tokens;
  for (std::string line; std::getline(in, line);) tokens.push_back(line);
  token_set set(tokens);
  if (set.empty()) throw std::runtime_error("the token file " + path + " holds no token");
  return set;
}

bool token_set::allows(std::string_view authorization) const {
  constexpr std::string_view scheme = "Bearer ";
  if (authorization.size() < scheme.size() || !iequals(authorization.substr(0, scheme.size()), scheme))
    return false;
  // Digests have one length whatever the token's, so comparing them leaks neither a token's length nor
  // where it differs; every token is compared, so neither does which one matched.
  return allows_token(authorization.substr(scheme.size()));
}

bool token_set::allows_token(std::string_view token) const {
  const auto given = digest(trim(token));
  bool ok = false;
  for (const auto& d : digests_) ok |= CRYPTO_memcmp(d.data(), given.data(), d.size()) == 0;
  return ok;
}

subprotocol_offer parse_subprotocols(const std::vector<std::pair<std::string, std::string>>& headers) {
  constexpr std::string_view bearer_prefix = "bearer.";
  subprotocol_offer offer;
  for (const auto& [name, value] : headers) {
    if (name != "sec-websocket-protocol") continue;
    std::string_view rest = value;
    while (!rest.empty()) {
      const auto comma = rest.find(',');
      const auto item = trim(rest.substr(0, comma));
      rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
      if (item == "kafka") {
        offer.kafka = true;
      } else if (item.starts_with(bearer_prefix)) {
        if (offer.bearer) {
          offer.error = "more than one bearer subprotocol";
          return offer;
        }
        offer.bearer = base64url_decode(item.substr(bearer_prefix.size()));
        if (!offer.bearer || offer.bearer->empty()) {
          offer.error = "the bearer subprotocol is not bearer.<token in base64url>";
          return offer;
        }
      }
    }
  }
  if (offer.bearer && !offer.kafka)
    offer.error = "a bearer subprotocol needs the kafka subprotocol offered with it";
  return offer;
}

bool origin_allowed(const std::vector<std::string>& allowed, const std::string* origin) {
  if (allowed.empty() || !origin) return true;
  return std::any_of(allowed.begin(), allowed.end(),
                     [&](const std::string& a) { return iequals(a, *origin); });
}

std::optional<route> parse_route(std::string_view target) {
  target = target.substr(0, target.find('?'));
  if (target == "/" || target == "/kafka" || target == "/kafka/") return route{};
  constexpr std::string_view prefix = "/kafka/";
  if (!target.starts_with(prefix)) return std::nullopt;
  auto id = target.substr(prefix.size());
  if (id.ends_with('/')) id.remove_suffix(1);
  std::int32_t node = -1;
  const auto [end, err] = std::from_chars(id.data(), id.data() + id.size(), node);
  if (id.empty() || err != std::errc{} || end != id.data() + id.size() || node < 0) return std::nullopt;
  return route{false, node};
}

host_pattern::host_pattern(std::string pattern) {
  if (pattern.find("{node_id}") != std::string::npos) pattern_ = std::move(pattern);
}

std::optional<std::int32_t> host_pattern::node_of(std::string_view host) const {
  constexpr std::string_view slot = "{node_id}";
  const auto at = pattern_.find(slot);
  if (at == std::string::npos || host.size() <= at || !iequals(host.substr(0, at), pattern_.substr(0, at)))
    return std::nullopt;
  const auto digits = host.substr(at);
  std::int32_t node = -1;
  const auto [end, err] = std::from_chars(digits.data(), digits.data() + digits.size(), node);
  const auto length = static_cast<std::size_t>(end - digits.data());
  if (err != std::errc{} || node < 0 || length == 0 || (length > 1 && digits[0] == '0')) return std::nullopt;
  // The whole name again, with this node id: every other `{node_id}` must hold the same one.
  std::string expected = pattern_;
  const auto id = std::to_string(node);
  for (auto p = expected.find(slot); p != std::string::npos; p = expected.find(slot, p + id.size()))
    expected.replace(p, slot.size(), id);
  if (!iequals(host, expected)) return std::nullopt;
  return node;
}

std::string_view host_without_port(std::string_view host_header) {
  host_header = trim(host_header);
  if (host_header.starts_with('[')) return host_header.substr(0, host_header.find(']') + 1);
  return host_header.substr(0, host_header.find(':'));
}

routing route_request(const host_pattern& names, std::string_view target, const std::string* host,
                      std::string_view server_name) {
  const auto path = parse_route(target);
  if (!path)
    return {std::nullopt, 404, "no such path; use / or /kafka for bootstrap, /kafka/{node_id} for a broker"};
  if (names.empty()) return {path};
  const auto by_host = host ? names.node_of(host_without_port(*host)) : std::nullopt;
  const auto node_text = [](const std::optional<std::int32_t>& n) {
    return n ? "node " + std::to_string(*n) : std::string("no broker");
  };
  if (!server_name.empty()) {
    if (const auto by_sni = names.node_of(server_name); by_sni != by_host) {
      return {std::nullopt, 421,
              "the TLS server name " + std::string(server_name) + " names " + node_text(by_sni) +
                  " and the Host header " + (host ? *host : std::string("(none)")) + " names " +
                  node_text(by_host)};
    }
  }
  if (!by_host) return {path};
  if (path->bootstrap) return {route{false, *by_host}};
  if (path->node_id != *by_host) {
    return {std::nullopt, 421,
            "the path names node " + std::to_string(path->node_id) + " and the Host header " + *host +
                " names node " + std::to_string(*by_host)};
  }
  return {path};
}

}  // namespace kws::gateway

namespace kws::gateway {

kafka::sasl::credentials load_upstream_credentials(const std::string& path) {
  const auto where = "--upstream-sasl-file " + path + ": ";
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw std::runtime_error(where + "is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(where + "cannot read it (" + std::strerror(errno) + ")");
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) throw std::runtime_error(where + "cannot read it");
  try {
    return kafka::sasl::parse_credentials(text.str());
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(where + e.what());
  }
}

}  // namespace kws::gateway
