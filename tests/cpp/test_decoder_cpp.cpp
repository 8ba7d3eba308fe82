// The C++ interface (vlmc_decoder.hpp) without a model: failures become vlmc::DecodeError with the
// library's code and message. Its decoding is tested through an installed copy with a real model
// (tests/test_c_decoder.py: a C++ user program).
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "check.h"
#include "vlmc_decoder.hpp"

static_assert(!std::is_copy_constructible_v<vlmc::Decoder> && std::is_nothrow_move_constructible_v<vlmc::Decoder>,
              "a Decoder owns its handle: it moves, it does not copy");

namespace {

// the DecodeError opening path throws, or code 0 and "" if none
std::pair<int, std::string> open_error(const std::string &path) {
    try {
        vlmc::Decoder dec(path);
    } catch (const vlmc::DecodeError &e) {
        return {e.code(), e.what()};
    }
    return {0, ""};
}

}  // namespace

int main(int argc, char **argv) {
    const auto missing = open_error("/nonexistent/decoder_model.vlmd");
    CHECK_NOTE(missing.first == VLMC_DEC_ERR_BAD_MODEL_FILE, "code %d", missing.first);
    CHECK_NOTE(missing.second.find("cannot open") != std::string::npos, "message '%s'", missing.second.c_str());
    const char *junk_path = argc > 1 ? argv[1] : "vlmc_decoder_cpp_junk.vlmd";
    if (std::FILE *f = std::fopen(junk_path, "wb")) {
        std::fputs("not a decoder model", f);
        std::fclose(f);
        const auto junk = open_error(junk_path);
        CHECK_NOTE(junk.first == VLMC_DEC_ERR_BAD_MODEL_FILE && junk.second.find("bad magic") != std::string::npos,
                   "code %d, message '%s'", junk.first, junk.second.c_str());
    }
    try {
        const std::vector<uint8_t> junk{'n', 'o', 't', ' ', 'a', ' ', 'm', 'o', 'd', 'e', 'l', '!', '!', '!', '!', '!'};
        vlmc::Decoder::from_memory(junk);
        CHECK_NOTE(false, "junk bytes opened");
    } catch (const vlmc::DecodeError &e) {
        CHECK_NOTE(e.code() == VLMC_DEC_ERR_BAD_MODEL_FILE && std::strstr(e.what(), "bad magic"), "code %d, '%s'",
                   e.code(), e.what());
    }
    return check_report("test_decoder_cpp");
}
