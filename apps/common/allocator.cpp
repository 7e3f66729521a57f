// jemalloc's settings for the servers that link it (apps/CMakeLists.txt, KWS_WITH_JEMALLOC): read by jemalloc
// when it starts, from this symbol of the executable. `MALLOC_CONF` in the environment still overrides them.
//
// Freed pages go back to the system at once (no decay): an idle connection's memory is what it holds, not
// what a burst of connections left behind for the next ten seconds. The hot paths allocate almost nothing
// (read buffers are kept per thread, see src/read_buffer.hpp), so the purging costs them nothing measurable;
// docs/benchmarks.md has the figures.
extern "C" {
// NOLINTNEXTLINE(cppcoreguidelines-avoid-non-const-global-variables): jemalloc's interface
extern const char* malloc_conf;
const char* malloc_conf = "dirty_decay_ms:0,muzzy_decay_ms:0";
}
