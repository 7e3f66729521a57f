// Umbrella header of the kafka-websocket-shim library.
#pragma once

#include <kws/accept.hpp>
#include <kws/accept_loop.hpp>
#include <kws/address.hpp>
#include <kws/connection.hpp>
#include <kws/dialer.hpp>
#include <kws/errc.hpp>
#include <kws/forward_proxy.hpp>
#include <kws/frame.hpp>
#include <kws/proxy_protocol.hpp>
#include <kws/relay.hpp>
