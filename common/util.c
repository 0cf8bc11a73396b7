/* util.c — clock, peak memory, CRC-32, fp16 conversion, progress line. */
#define _GNU_SOURCE
#include "fkd_common.h"

#include <math.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

double fkd_time_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

double fkd_cpu_time_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

double fkd_peak_rss_mb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0; /* Linux reports KiB */
}

/* CRC-32 (IEEE 802.3, reflected), computed bytewise from a table built on
 * first use; the table is derived data, identical on every call. */
uint32_t fkd_crc32(uint32_t crc, const void *data, size_t bytes)
{
    static uint32_t table[256];
    static int ready;
    if (!ready) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        ready = 1;
    }
    const uint8_t *p = data;
    crc = ~crc;
    for (size_t i = 0; i < bytes; i++) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

uint16_t fkd_fp32_to_fp16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t exp = (x >> 23) & 0xffu;
    uint32_t mant = x & 0x7fffffu;
    if (exp == 0xff) return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u : 0)); /* inf / nan */
    int e = (int)exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00u);                            /* overflow */
    if (e <= 0) {                                                              /* subnormal */
        if (e < -10) return (uint16_t)sign;
        mant |= 0x800000u;
        int shift = 14 - e;
        uint32_t half = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = sign | ((uint32_t)e << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (half & 1))) half++; /* may carry into exp: correct */
    return (uint16_t)half;
}

float fkd_fp16_to_fp32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t x;
    if (exp == 0) {
        if (mant == 0) {
            x = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do { mant <<= 1; e++; } while (!(mant & 0x400u));
            x = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        x = sign | 0x7f800000u | (mant << 13);
    } else {
        x = sign | ((exp - 15 + 127) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}

void fkd_progress_begin(fkd_progress *p, const char *label, int64_t total)
{
    p->label = label;
    p->total = total;
    p->start_ms = fkd_time_ms();
    p->last_draw_ms = 0;
    p->enabled = isatty(STDERR_FILENO);
}

void fkd_progress_update(fkd_progress *p, int64_t done, const char *extra)
{
    if (!p->enabled) return;
    double now = fkd_time_ms();
    if (now - p->last_draw_ms < 100 && done < p->total) return;
    p->last_draw_ms = now;
    double elapsed_s = (now - p->start_ms) / 1e3;
    double eta_s = done > 0 ? elapsed_s * (double)(p->total - done) / (double)done : 0;
    int pct = p->total > 0 ? (int)(100 * done / p->total) : 0;
    fprintf(stderr, "\r\033[K%s %3d%% %lld/%lld  %.0fs elapsed, ETA %.0fs  %s", p->label, pct,
            (long long)done, (long long)p->total, elapsed_s, eta_s, extra ? extra : "");
    fflush(stderr);
}

void fkd_progress_end(fkd_progress *p)
{
    if (!p->enabled) return;
    fprintf(stderr, "\n");
    fflush(stderr);
}
