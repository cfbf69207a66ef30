/*
 * pkgconfig/host.c - a C host found through pkg-config.
 *
 *     python -m fastlsm.capi install --prefix P
 *     cc host.c $(PKG_CONFIG_PATH=P/lib/pkgconfig pkg-config --cflags --libs fastlsm) -o host
 *     ./host        # prints the float32 bits of log_softmax([1, 2, 3, 4])
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <fastlsm.h>

int main(void)
{
    const float x[4] = {1.0f, 2.0f, 3.0f, 4.0f};
    float y[4];
    if (fastlsm_version_number() / 10000 != FASTLSM_VERSION_MAJOR ||
        fastlsm_version_number() < FASTLSM_VERSION_NUMBER) {
        fprintf(stderr, "libfastlsm %s is not compatible with fastlsm.h %s\n",
                fastlsm_version_string(), FASTLSM_VERSION_STRING);
        return 1;
    }
    int st = fastlsm_log_softmax_f32(x, y, 1, 4);
    if (st != FASTLSM_OK) {
        fprintf(stderr, "%s: %s\n", fastlsm_strerror(st), fastlsm_last_error());
        return 1;
    }
    printf("pkgconfig %s", fastlsm_version_string());
    for (int i = 0; i < 4; i++) {
        uint32_t bits;
        memcpy(&bits, &y[i], sizeof bits);
        printf(" %08x", bits);
    }
    printf("\n");
    return 0;
}
