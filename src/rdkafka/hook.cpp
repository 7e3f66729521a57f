// How the hook sits in librdkafka:
//
// - Configuration: interceptors on the rd_kafka_conf_t (on_conf_set for the kws.* properties, on_conf_dup so
//   that copies keep the hook, on_conf_destroy, on_new), plus resolve_cb and connect_cb.
// - Client: on_new starts one engine per rd_kafka_t (a loopback listener and a relay thread) and adds the
//   on_broker_state_change and on_destroy interceptors to the client.
// - Connection: connect_cb is given only librdkafka's broker name and the application's opaque, so the
//   client and the node id come from on_broker_state_change, which librdkafka calls on the same broker
//   thread just before it resolves and connects ("CONNECT"). resolve_cb answers every broker name with the
//   loopback listener (the name need not resolve here: only the WebSocket URL is dialled), and connect_cb
//   connects librdkafka's socket to it at once; the engine dials the WebSocket asynchronously, so the broker
//   thread (which holds the broker's lock inside connect_cb) never waits on the network.
// - Teardown: on_destroy refuses new connections; the relays end as librdkafka closes its sockets. The
//   configuration's destruction (after librdkafka has joined its broker threads, before it unloads plugins)
//   closes what is left and joins the engine's thread.
#include "hook.hpp"

#include "engine.hpp"

#include <librdkafka/rdkafkacpp.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <netdb.h>

namespace kws::rdkafka::detail {

struct client {
  std::shared_ptr<engine> eng;
};

struct conf_state {
  config cfg;
  /// Clients created from this configuration (at most one: rd_kafka_new consumes it).
  std::vector<std::unique_ptr<client>> clients;
};

config& settings(conf_state& state) {
  return state.cfg;
}

namespace {

constexpr const char* ic_name = "kws";

// What the hook knows beyond librdkafka's own objects, for the interceptors that it cannot pass state to.
struct registry {
  std::mutex mu;
  /// The state last attached to each configuration, for enable() on a configuration that has the hook
  /// already (librdkafka refuses the interceptor twice and cannot say with which opaque it has it).
  std::unordered_map<const rd_kafka_conf_t*, conf_state*> by_conf;
  std::unordered_set<const conf_state*> live;
  std::unordered_set<const rd_kafka_t*> clients;
};

registry& reg() {
  // Never destroyed: librdkafka threads may call in while the process exits.
  static auto* r = new registry;
  return *r;
}

// Set by on_broker_state_change("CONNECT") on a broker thread; read by resolve_cb, taken by connect_cb.
struct connect_context {
  std::shared_ptr<engine> eng;
  std::int32_t node_id = -1;
  std::string name;  ///< the broker's original name, should librdkafka's connect_cb name not parse
  std::int32_t port = 0;
  bool tls_protocol = false;  ///< security.protocol ssl or sasl_ssl: cannot be relayed as Kafka frames
};
thread_local connect_context current;

// One allocation per answer, freed when librdkafka hands the list back.
struct resolved {
  addrinfo ai{};
  sockaddr_in addr{};
};

void copy_error(const std::string& text, char* errstr, size_t size) {
  if (errstr && size > 0) std::snprintf(errstr, size, "%s", text.c_str());
}

rd_kafka_conf_res_t on_conf_set(rd_kafka_conf_t*, const char* name, const char* val, char* errstr,
                                size_t errstr_size, void* ic_opaque) {
  if (std::strncmp(name, "kws.", 4) != 0) return RD_KAFKA_CONF_UNKNOWN;
  try {
    std::string error;
    switch (set_property(static_cast<conf_state*>(ic_opaque)->cfg, name, val, error)) {
      case property_result::ok:
        return RD_KAFKA_CONF_OK;
      case property_result::invalid:
        copy_error(error, errstr, errstr_size);
        return RD_KAFKA_CONF_INVALID;
      case property_result::unknown:
        break;
    }
  } catch (const std::exception& e) {
    copy_error(std::string("kws: ") + e.what(), errstr, errstr_size);
    return RD_KAFKA_CONF_INVALID;
  }
  // librdkafka goes on to its own properties and answers "No such configuration property: ..."
  return RD_KAFKA_CONF_UNKNOWN;
}

rd_kafka_resp_err_t on_conf_dup(rd_kafka_conf_t* new_conf, const rd_kafka_conf_t*, size_t, const char**,
                                void* ic_opaque) {
  try {
    std::string error;
    auto* copy = attach(new_conf, error);
    if (!copy) return RD_KAFKA_RESP_ERR__FAIL;
    // Settings made in code (enable) have no properties for librdkafka to replay onto the copy.
    std::lock_guard lock(reg().mu);
    if (reg().live.count(static_cast<conf_state*>(ic_opaque)))
      copy->cfg = static_cast<conf_state*>(ic_opaque)->cfg;
    return RD_KAFKA_RESP_ERR_NO_ERROR;
  } catch (const std::exception&) {
    return RD_KAFKA_RESP_ERR__FAIL;
  }
}

rd_kafka_resp_err_t on_conf_destroy(void* ic_opaque) {
  std::unique_ptr<conf_state> state(static_cast<conf_state*>(ic_opaque));
  {
    std::lock_guard lock(reg().mu);
    reg().live.erase(state.get());
    std::erase_if(reg().by_conf, [&](const auto& e) { return e.second == state.get(); });
  }
  // The client's broker threads are gone by now (librdkafka destroys a client's configuration last), and
  // the plugin may be unloaded next: the engine's thread must end here.
  for (auto& c : state->clients) c->eng->shutdown();
  return RD_KAFKA_RESP_ERR_NO_ERROR;
}

rd_kafka_resp_err_t on_broker_state_change(rd_kafka_t* rk, int32_t broker_id, const char* secproto,
                                           const char* name, int port, const char* state, void* ic_opaque) {
  if (std::strcmp(state, "CONNECT") != 0) return RD_KAFKA_RESP_ERR_NO_ERROR;
  auto& eng = static_cast<client*>(ic_opaque)->eng;
  eng->set_client_name(rd_kafka_name(rk));
  const bool tls = std::strcmp(secproto, "ssl") == 0 || std::strcmp(secproto, "sasl_ssl") == 0;
  current = connect_context{eng, broker_id, name ? name : "", port, tls};
  return RD_KAFKA_RESP_ERR_NO_ERROR;
}

rd_kafka_resp_err_t on_destroy(rd_kafka_t* rk, void* ic_opaque) {
  // librdkafka closes its broker sockets after this returns; the relays end as it does.
  static_cast<client*>(ic_opaque)->eng->stop_connecting();
  std::lock_guard lock(reg().mu);
  reg().clients.erase(rk);
  return RD_KAFKA_RESP_ERR_NO_ERROR;
}

rd_kafka_resp_err_t on_new(rd_kafka_t* rk, const rd_kafka_conf_t*, void* ic_opaque, char* errstr,
                           size_t errstr_size) {
  auto* state = static_cast<conf_state*>(ic_opaque);
  config cfg;
  {
    std::lock_guard lock(reg().mu);
    if (!reg().live.count(state) || !reg().clients.insert(rk).second) return RD_KAFKA_RESP_ERR_NO_ERROR;
    cfg = state->cfg;
  }
  try {
    auto c = std::make_unique<client>();
    c->eng = engine::start(std::move(cfg), rd_kafka_name(rk));
    rd_kafka_interceptor_add_on_broker_state_change(rk, ic_name, on_broker_state_change, c.get());
    rd_kafka_interceptor_add_on_destroy(rk, ic_name, on_destroy, c.get());
    std::lock_guard lock(reg().mu);
    state->clients.push_back(std::move(c));
    return RD_KAFKA_RESP_ERR_NO_ERROR;
  } catch (const std::exception& e) {
    // librdkafka logs this and goes on without the hook: every broker connection then fails to resolve.
    copy_error(std::string("kws: cannot start the WebSocket hook: ") + e.what(), errstr, errstr_size);
    std::lock_guard lock(reg().mu);
    reg().clients.erase(rk);
    return RD_KAFKA_RESP_ERR__FAIL;
  }
}

int resolve_cb(const char* node, const char* service, const struct addrinfo* hints, struct addrinfo** res,
               void*) {
  if (!node && !service && !hints) {
    // librdkafka hands the list back to be freed.
    if (res && *res) delete reinterpret_cast<resolved*>(*res);
    return 0;
  }
  if (!res) return EAI_FAIL;
  if (!current.eng) return EAI_FAIL;
  auto* r = new resolved;
  r->addr = current.eng->listener_address();
  r->ai.ai_family = AF_INET;
  r->ai.ai_socktype = SOCK_STREAM;
  r->ai.ai_protocol = IPPROTO_TCP;
  r->ai.ai_addrlen = sizeof r->addr;
  r->ai.ai_addr = reinterpret_cast<sockaddr*>(&r->addr);
  *res = &r->ai;
  return 0;
}

int connect_cb(int sockfd, const struct sockaddr*, int, const char* id, void*) {
  const auto ctx = std::exchange(current, connect_context{});
  if (!ctx.eng) {
    log_to_stderr(log_level::error, "kws",
                  "a broker connection without the WebSocket hook's client: refused");
    return ECONNREFUSED;
  }
  if (ctx.tls_protocol) {
    ctx.eng->note(log_level::error, [] {
      return std::string(
          "security.protocol ssl and sasl_ssl cannot be carried over WebSocket: use kws.tls=true (wss://)");
    });
    return EPROTONOSUPPORT;
  }
  try {
    broker_target t;
    t.node_id = ctx.node_id;
    if (!id || !parse_broker_name(id, t.host, t.port)) {
      t.host = ctx.name;
      t.port = ctx.port;
    }
    return ctx.eng->connect(sockfd, std::move(t));
  } catch (const std::exception&) {
    return ENOMEM;
  }
}

}  // namespace

conf_state* attach(rd_kafka_conf_t* conf, std::string& error) {
  auto state = std::make_unique<conf_state>();
  const auto err = rd_kafka_conf_interceptor_add_on_conf_set(conf, ic_name, on_conf_set, state.get());
  if (err == RD_KAFKA_RESP_ERR__CONFLICT) {
    std::lock_guard lock(reg().mu);
    if (auto it = reg().by_conf.find(conf); it != reg().by_conf.end()) return it->second;
    error = "kws: the configuration has the WebSocket hook, but not one this library attached";
    return nullptr;
  }
  if (err) {
    error = std::string("kws: cannot add the configuration interceptor: ") + rd_kafka_err2str(err);
    return nullptr;
  }
  rd_kafka_conf_interceptor_add_on_conf_dup(conf, ic_name, on_conf_dup, state.get());
  rd_kafka_conf_interceptor_add_on_conf_destroy(conf, ic_name, on_conf_destroy, state.get());
  rd_kafka_conf_interceptor_add_on_new(conf, ic_name, on_new, state.get());
  rd_kafka_conf_set_resolve_cb(conf, resolve_cb);
  rd_kafka_conf_set_connect_cb(conf, connect_cb);
  std::lock_guard lock(reg().mu);
  reg().by_conf[conf] = state.get();
  reg().live.insert(state.get());
  return state.release();
}

}  // namespace kws::rdkafka::detail

namespace kws::rdkafka {

bool enable(rd_kafka_conf_s* conf, const config& cfg, std::string& error) {
  if (!conf) {
    error = "kws: no configuration";
    return false;
  }
  if (!validate(cfg, error)) return false;
  auto* state = detail::attach(conf, error);
  if (!state) return false;
  detail::settings(*state) = cfg;
  return true;
}

void enable(rd_kafka_conf_s* conf, const config& cfg) {
  std::string error;
  if (!enable(conf, cfg, error)) throw std::invalid_argument(error);
}

bool enable(RdKafka::Conf* conf, const config& cfg, std::string& error) {
  if (!conf || !conf->c_ptr_global()) {
    error = "kws: not a librdkafka++ global configuration";
    return false;
  }
  return enable(conf->c_ptr_global(), cfg, error);
}

void enable(RdKafka::Conf* conf, const config& cfg) {
  std::string error;
  if (!enable(conf, cfg, error)) throw std::invalid_argument(error);
}

}  // namespace kws::rdkafka
