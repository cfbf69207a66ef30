// main.cpp - a C++ host: fastlsm.h from C++, errors as exceptions, RAII buffers.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "fastlsm.h"

static void check(int status)
{
    if (status != FASTLSM_OK)
        throw std::runtime_error(std::string(fastlsm_strerror(status)) + ": " +
                                 fastlsm_last_error());
}

int main()
{
    static_assert(FASTLSM_VERSION_NUMBER >= 100, "fastlsm.h too old");
    if (fastlsm_version_number() / 10000 != FASTLSM_VERSION_MAJOR ||
        fastlsm_version_number() < FASTLSM_VERSION_NUMBER) {
        std::fprintf(stderr, "libfastlsm %s does not match fastlsm.h %s\n",
                     fastlsm_version_string(), FASTLSM_VERSION_STRING);
        return 1;
    }
    try {
        std::vector<float> x{1.0f, 2.0f, 3.0f, 4.0f}, y(4);
        check(fastlsm_log_softmax_f32(x.data(), y.data(), 1, 4));
        std::printf("cmake %s", fastlsm_version_string());
        for (float v : y) {
            std::uint32_t bits;
            std::memcpy(&bits, &v, sizeof bits);
            std::printf(" %08x", bits);
        }
        std::printf("\n");
        std::vector<std::int32_t> target{7};  // out of range for 4 classes
        float loss = 0;
        fastlsm_cross_entropy_options opt = fastlsm_cross_entropy_default_options();
        check(fastlsm_cross_entropy_ex_f32(x.data(), target.data(), FASTLSM_TARGET_INT32, 1, 4,
                                           nullptr, nullptr, nullptr, &opt, &loss, nullptr,
                                           nullptr));
        std::printf("no exception\n");
    } catch (const std::runtime_error &e) {
        std::printf("exception %s\n", e.what());
    }
    return 0;
}
