// The dev broker's listeners and connections: WebSocket (one Kafka frame per binary message) and, optionally,
// TCP (the Kafka byte stream), plain or with TLS. All Beast and Asio code lives in server.cpp.
#pragma once

#include "broker.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace boost::asio {
class io_context;
}

namespace kws::devbroker {

namespace sasl {
class users;
}

struct server_config {
  endpoint ws_listen{"127.0.0.1", 8787};
  std::optional<endpoint> tcp_listen;
  /// Advertised in Metadata on the WebSocket listeners; default: the bound WebSocket addresses.
  std::optional<endpoint> ws_advertise;
  /// Advertised in Metadata on the TCP listeners; default: the bound TCP addresses.
  std::optional<endpoint> tcp_advertise;
  /// TLS (1.2 or later) on the TCP listeners: PEM certificate chain and private key files. Empty: plain TCP.
  /// Metadata advertises the same addresses either way.
  std::string tcp_tls_cert;
  std::string tcp_tls_key;
  /// With TLS: a PEM bundle of CAs; every TCP client must present a certificate one of them vouches for.
  std::string tcp_tls_client_ca;
  /// SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) required on the TCP listeners; null: none. The broker's
  /// config must have sasl_on_tcp set to match, so that ApiVersions lists the SASL APIs there.
  std::shared_ptr<const sasl::users> sasl_users;
  std::size_t max_frame_bytes = 100u * 1024u * 1024u;
  /// WebSocket connections only: close (code 1000) one that has had no request for this long while none was
  /// being answered, as edge platforms recycle idle connections. Zero: never.
  std::chrono::milliseconds ws_close_idle_after{0};
};

class server {
 public:
  /// `b` must outlive the server and every connection (the io_context's handlers). Throws when the TLS
  /// certificate, key or client CA file cannot be loaded.
  server(boost::asio::io_context& ioc, std::shared_ptr<broker> b, server_config config);
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  /// Binds one WebSocket (and TCP) listener per node and starts accepting; throws on bind errors.
  void start();
  /// `listening ws=HOST:PORT[,HOST:PORT...] [tcp=HOST:PORT[,...]]` with the bound ports.
  std::string listening_line() const;
  /// Closes the listeners; connections end when the io_context stops.
  void stop();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace kws::devbroker
