// jemalloc's settings for the servers that link it (apps/CMakeLists.txt, KWS_WITH_JEMALLOC): read by jemalloc
// when it starts, from this symbol of the executable. `MALLOC_CONF` in the environment still overrides them.
//
// A background thread of jemalloc's gives freed pages back to the system within about a second
// (dirty_decay_ms), also while the process is idle: the memory of idle connections is what they hold, not
// what a burst of connections left behind. Giving pages back at once (dirty_decay_ms:0) measured the same
// idle memory but made every 100 KiB frame cost two more system calls (an madvise as its buffer was freed)
// and 50 to 80 % more CPU; docs/benchmarks.md has the figures.
extern "C" {
// NOLINTNEXTLINE(cppcoreguidelines-avoid-non-const-global-variables): jemalloc's interface
extern const char* malloc_conf;
const char* malloc_conf = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0";
}
