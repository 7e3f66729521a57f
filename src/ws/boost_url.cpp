// Boost.URL compiled into kws_shim (its documented header-only mode) rather than linked as libboost_url.so:
// the librdkafka plugin keeps every Boost symbol inside it (-Wl,--exclude-libs,ALL), which a shared
// libboost_url would escape, and Debian's libboost_url.a is not built as position-independent code, so it
// cannot go into the plugin either. The packages and the FROM-scratch image need no new library this way.
#include <boost/url/src.hpp>
