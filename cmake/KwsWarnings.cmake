# Compiler settings for the project's own targets, kept on INTERFACE targets so that consumers of the
# installed package do not inherit them.
add_library(kws_warnings INTERFACE)
target_compile_options(kws_warnings INTERFACE -Wall -Wextra -Wpedantic)
# GCC 12 reports -Wrestrict inside libstdc++'s std::string concatenation at -O3 where no overlap can happen
# (GCC bug 105651, fixed in GCC 13); it would break Release builds with -Werror.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  target_compile_options(kws_warnings INTERFACE -Wno-restrict)
endif()
if(KWS_WERROR)
  target_compile_options(kws_warnings INTERFACE -Werror)
endif()

add_library(kws_sanitizers INTERFACE)
if(KWS_SANITIZE)
  target_compile_options(kws_sanitizers INTERFACE -fsanitize=address,undefined -fno-sanitize-recover=undefined
                                                  -fno-omit-frame-pointer)
  target_link_options(kws_sanitizers INTERFACE -fsanitize=address,undefined)
endif()

if(KWS_SANITIZE_THREAD)
  if(KWS_SANITIZE)
    message(FATAL_ERROR "KWS_SANITIZE_THREAD and KWS_SANITIZE (ASan) cannot be combined")
  endif()
  target_compile_options(kws_sanitizers INTERFACE -fsanitize=thread -fno-omit-frame-pointer)
  # GCC warns that TSan does not model std::atomic_thread_fence, which Asio's executors use; the fences sit
  # next to atomic operations that TSan does see.
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    target_compile_options(kws_sanitizers INTERFACE -Wno-tsan)
  endif()
  target_link_options(kws_sanitizers INTERFACE -fsanitize=thread)
endif()

add_library(kws_project_options INTERFACE)
target_link_libraries(kws_project_options INTERFACE kws_warnings kws_sanitizers)
