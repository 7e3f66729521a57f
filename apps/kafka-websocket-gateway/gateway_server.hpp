// kafka-websocket-gateway's server: a WebSocket listener (ws, or wss with a certificate), one relay per
// accepted connection to a broker of a TCP Kafka cluster, chosen by the URL path; the mirror image of the
// proxy, on the same relay and the same Kafka frame pipeline.
#pragma once

#include "access.hpp"
#include "runtime.hpp"

#include <kws/accept.hpp>
#include <kws/relay.hpp>
#include <kws/tls_socket.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kws::gateway {

struct gateway_config {
  /// Empty: every interface (IPv6 and IPv4 where the machine has IPv6).
  std::string listen_host;
  std::uint16_t port = 8787;
  /// The cluster's bootstrap servers, host:port each.
  std::vector<std::string> upstreams;
  /// wss when both are set.
  std::string tls_cert;
  std::string tls_key;
  /// With wss: a client certificate that a CA of this PEM file vouches for is required of every client, in
  /// the TLS handshake, before any byte reaches the cluster; its subject is on the connection's lines. With
  /// `tokens` too, a client needs both.
  std::string client_ca_file;
  /// The public address clients reach the gateway at: every broker in a response is advertised there (node
  /// ids kept), so that a client-side template like wss://gw.example.com/kafka/{node_id} reaches each one.
  /// `{node_id}` in the host gives each broker a name of its own (kafka-{node_id}.gw.example.com): clients
  /// that tell brokers apart by address (librdkafka) need that; the names need not resolve, since clients
  /// reach them through the template. Empty host: the listen address when it is specific, else localhost;
  /// port 0: the bound port.
  std::string advertise_host;
  std::uint16_t advertise_port = 0;
  /// Bearer tokens of which the upgrade must carry one (empty: no check).
  token_set tokens;
  /// Where `tokens` came from (empty: given otherwise, or none); read again on SIGHUP and when it changes.
  std::string token_file;
  /// Origins browsers may connect from (empty: any).
  std::vector<std::string> allowed_origins;
  /// Upgraded WebSocket connections at once; more get 503.
  std::size_t max_connections = 10000;
  /// Handshakes under way at once (TLS, the HTTP request, the decision and the upgrade), and from one client
  /// address; a socket over either is closed as it is accepted, before any byte is read.
  std::size_t max_handshakes = 1024;
  std::size_t max_handshakes_per_address = 64;
  /// Every connection starts with a PROXY protocol header (v2 or v1) from a load balancer, whose client
  /// address then stands for the socket's peer; without one it is refused.
  bool proxy_protocol = false;
  /// Keep-alive and TCP_USER_TIMEOUT on accepted client sockets.
  app::client_socket_options client_socket;
  kws::accept_config accept;
  kws::relay_options relay;
  /// TLS to the cluster: every broker (the bootstrap servers, those learned from Metadata, the gateway's own
  /// Metadata lookups) is dialled with TLS, SNI and the certificate's name checked against the host as
  /// dialled (the bootstrap host, or the host a broker advertises).
  bool upstream_tls = false;
  /// Trusted CAs (empty: the system store), and a client certificate for mutual TLS.
  kws::tls_client_options upstream_tls_files;
  /// Do not verify the cluster's certificates (testing only).
  bool upstream_insecure = false;
  /// Credentials for the gateway's own Metadata lookups (a node id it has not seen in a relayed response):
  /// SaslHandshake v1 and SaslAuthenticate before the request, for a cluster that requires SASL. Empty: the
  /// lookup is unauthenticated. Clients' connections never use them: clients authenticate themselves.
  std::optional<kafka::sasl::credentials> upstream_sasl;
  /// Where upstream_sasl was read from (read again on SIGHUP and when it changes); empty: none.
  std::string upstream_sasl_file;
  /// Bound on connecting to a broker of the cluster (and, apart, on its TLS handshake).
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(5)};
  /// Bound on the whole shutdown after SIGINT/SIGTERM (app::response_wait divides it).
  std::chrono::milliseconds drain_timeout{std::chrono::seconds(8)};
  unsigned threads = 1;
  /// Rewrite broker addresses to the advertised one (off: relay byte for byte; node routing then relies on
  /// clients that know the cluster's node ids).
  bool rewrite = true;
  /// HOST:PORT of the metrics and health endpoint; empty: none.
  std::string metrics_listen;
};

/// Runs until SIGINT or SIGTERM, then drains and returns the exit code. Throws on start-up errors.
int run(const gateway_config& config);

}  // namespace kws::gateway
