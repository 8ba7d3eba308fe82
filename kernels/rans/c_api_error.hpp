// Error reporting shared by the C APIs (vlmc_rans.h, vlmc_decoder.h): an error code returned,
// its message kept per thread, and no C++ exception crossing the C boundary.
#pragma once

#include <exception>
#include <new>
#include <string>

namespace vlmc::c_api {

// Records `what` as the calling thread's message in `slot` and returns `code`; never throws.
inline int fail(std::string &slot, int code, const char *what) noexcept {
    try {
        slot = what;
    } catch (...) {
    }
    return code;
}

// Runs fn with `slot` cleared and returns `ok`; an exception becomes an error code instead:
// `no_memory` for std::bad_alloc, classify(e) for another std::exception (its message kept),
// `internal` for anything else.
template <class Fn, class Classify>
int guarded(std::string &slot, int ok, int no_memory, int internal, Fn fn, Classify classify) {
    try {
        slot.clear();
        fn();
        return ok;
    } catch (const std::bad_alloc &) {
        return fail(slot, no_memory, "out of memory");
    } catch (const std::exception &e) {
        return fail(slot, classify(e), e.what());
    } catch (...) {
        return fail(slot, internal, "unknown error");
    }
}

}  // namespace vlmc::c_api
