// What trm's C++ shims over libtorch share: errors are returned as a code and a message, and no
// C++ exception ever crosses into Rust.
#pragma once

#include <cstdio>
#include <exception>

namespace trm_shim {

inline void set_error(char* err, size_t len, const char* what) {
  if (err != nullptr && len > 0) std::snprintf(err, len, "%s", what);
}

// Runs `body` (which returns 0, or 1 after set_error) with no exception crossing into Rust.
template <typename Body>
int guarded(char* err, size_t err_len, Body body) {
  try {
    return body();
  } catch (const std::exception& e) {
    set_error(err, err_len, e.what());
  } catch (...) {
    set_error(err, err_len, "an exception that is no std::exception");
  }
  return 1;
}

}  // namespace trm_shim
