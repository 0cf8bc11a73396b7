/* rng.c — xoshiro256** seeded with splitmix64: fast, small state, and the
 * same sequence on every platform, so every run is reproducible from a seed. */
#include "fkd_common.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void fkd_rng_seed(fkd_rng *rng, uint64_t seed)
{
    for (int i = 0; i < 4; i++) rng->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t fkd_rng_u64(fkd_rng *rng)
{
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint32_t fkd_rng_below(fkd_rng *rng, uint32_t n)
{
    if (n == 0) return 0;
    /* Lemire's multiply-shift with rejection: unbiased. */
    uint64_t m = (uint64_t)(uint32_t)fkd_rng_u64(rng) * n;
    uint32_t low = (uint32_t)m;
    if (low < n) {
        uint32_t threshold = (uint32_t)(-n) % n;
        while (low < threshold) {
            m = (uint64_t)(uint32_t)fkd_rng_u64(rng) * n;
            low = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

float fkd_rng_uniform(fkd_rng *rng) { return (float)(fkd_rng_u64(rng) >> 40) / 16777216.0f; }

float fkd_rng_normal(fkd_rng *rng)
{
    /* Box-Muller; the second value is dropped to keep no hidden state. */
    double u1 = ((double)(fkd_rng_u64(rng) >> 11) + 1.0) / 9007199254740993.0;
    double u2 = (double)(fkd_rng_u64(rng) >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

double fkd_rng_gamma(fkd_rng *rng, double shape)
{
    /* Marsaglia-Tsang; shape < 1 by the boost U^(1/shape). */
    if (shape < 1.0) {
        double u = ((double)(fkd_rng_u64(rng) >> 11) + 1.0) / 9007199254740993.0;
        return fkd_rng_gamma(rng, shape + 1.0) * pow(u, 1.0 / shape);
    }
    double d = shape - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x = fkd_rng_normal(rng), v = 1.0 + c * x;
        if (v <= 0) continue;
        v = v * v * v;
        double u = ((double)(fkd_rng_u64(rng) >> 11) + 1.0) / 9007199254740993.0;
        if (log(u) < 0.5 * x * x + d - d * v + d * log(v)) return d * v;
    }
}
