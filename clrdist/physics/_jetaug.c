/* Fused CPU kernel for the JetCLR augmentations of clrdist.physics.augment.
 *
 * One call applies an ordered list of steps (collinear_split, rotate, smear_soft, translate) to
 * every jet of a batch, jet by jet, with the jet in cache: no pass over the whole batch per step and
 * no per-operation overhead. The maths is that of the torch path in augment.py (same distributions,
 * same conservation laws); only the random numbers differ, because they come from a counter-based
 * generator here: step s of output row g draws from the stream keyed by (seed_s, g), so a view
 * gives bit for bit what its steps give when called one at a time with the same seeds.
 *
 * Layout: x (B, P, F) float32 contiguous, feature 0 = pT (GeV), 1 = eta, 2 = phi, further features
 * carried; mask (B, P) bytes 0/1. Output row g = r * B + b (r < reps) is an augmented copy of input
 * row b, zero on padding.
 *
 * Built and loaded by clrdist/physics/kernel.py with the system C compiler (plain C11, no torch
 * headers). Compiled without -ffast-math and with -ffp-contract=off, so that results do not depend
 * on the instruction set the compiler targets.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

enum { OP_COLLINEAR_SPLIT = 1, OP_ROTATE = 2, OP_SMEAR_SOFT = 3, OP_TRANSLATE = 4 };

/* ---- random numbers: SplitMix64 streams ------------------------------------------------------ */

typedef struct { uint64_t s; } rng_t;

static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline uint64_t next64(rng_t *r) { return mix64(r->s += 0x9E3779B97F4A7C15ULL); }

static inline rng_t stream(uint64_t seed, uint64_t row) {
    rng_t r = { mix64(seed ^ mix64(row + 0x632BE59BD9B4E019ULL)) };
    return r;
}

/* uniform in the open interval (0, 1), 53 bits (signed conversions: one instruction on x86-64) */
static inline double uniform(rng_t *r) {
    return ((double)(int64_t)(next64(r) >> 11) + 0.5) * 0x1.0p-53;
}

/* uniform integer in [0, n), n < 2^32 (multiply-shift; bias < n / 2^32) */
static inline uint32_t below(rng_t *r, uint32_t n) {
    return (uint32_t)(((next64(r) >> 32) * (uint64_t)n) >> 32);
}

#define PI 3.14159265358979323846

/* ---- standard normals: Box-Muller without branches, so that the compiler vectorises it ---------
 * Draw i of a stream is the SplitMix64 output mix64(s + (i + 1) gamma), computed without a
 * loop-carried dependency. Its top 31 bits give u1 in (0, 1), bits 8..31 give v in [0, 1); then
 * sqrt(-2 ln u1) (cos, sin)(2 pi v) are two independent standard normals. The smallest u1 is
 * 2^-32, so |z| < 6.67 (the normal tail beyond has probability 3e-11). log and sincos are Cephes'
 * single-precision polynomials (errors ~1e-7), written branch-free. */

/* ln x for x in (0, 1] */
static inline float log_nb(float x) {
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    int32_t e = (int32_t)((b >> 23) & 0xFF) - 126; /* x = m 2^e, m in [1/2, 1) */
    b = (b & 0x007FFFFFu) | 0x3F000000u;
    float m;
    memcpy(&m, &b, sizeof m);
    int32_t low = m < 0.70710678f; /* -> m in [sqrt(1/2), sqrt(2)) */
    e -= low;
    m = low ? m + m : m;
    float t = m - 1.0f, z = t * t, fe = (float)e;
    float y = ((((((((7.0376836292e-2f * t - 1.1514610310e-1f) * t + 1.1676998740e-1f) * t
                   - 1.2420140846e-1f) * t + 1.4249322787e-1f) * t - 1.6668057665e-1f) * t
                 + 2.0000714765e-1f) * t - 2.4999993993e-1f) * t + 3.3333331174e-1f) * t * z;
    y += -2.12194440e-4f * fe - 0.5f * z;
    return t + y + 0.693359375f * fe;
}

/* cos and sin of t for |t| <= pi/4 */
static inline void sincos_small(float t, float *c, float *s) {
    float z = t * t;
    *s = ((-1.9515295891e-4f * z + 8.3321608736e-3f) * z - 1.6666654611e-1f) * z * t + t;
    *c = ((2.443315711809948e-5f * z - 1.388731625493765e-3f) * z + 4.166664568298827e-2f) * z * z
         - 0.5f * z + 1.0f;
}

/* (cos, sin) of a quarter turn q (0..3) plus (c, s) */
static inline void quadrant(int32_t q, float c, float s, float *cq, float *sq) {
    float cc = (q & 1) ? s : c, ss = (q & 1) ? c : s;
    *cq = (q == 1 || q == 2) ? -cc : cc;
    *sq = (q >= 2) ? -ss : ss;
}

static void normals(rng_t *r, int64_t n, float *a, float *b) {
    uint64_t s = r->s;
    for (int64_t i = 0; i < n; i++) {
        uint64_t u = mix64(s + (uint64_t)(i + 1) * 0x9E3779B97F4A7C15ULL);
        float u1 = ((float)(int32_t)(u >> 33) + 0.5f) * 0x1.0p-31f;
        float v = (float)(int32_t)((uint32_t)u >> 8) * 0x1.0p-24f;
        float q = nearbyintf(4.0f * v), c, sn, cq, sq;
        sincos_small((v - 0.25f * q) * 6.28318530717958648f, &c, &sn); /* exact reduction */
        quadrant((int32_t)q & 3, c, sn, &cq, &sq);
        float rad = sqrtf(-2.0f * log_nb(u1));
        a[i] = rad * cq;
        b[i] = rad * sq;
    }
    r->s = s + (uint64_t)n * 0x9E3779B97F4A7C15ULL;
}

/* ---- one jet, struct of arrays ------------------------------------------------------------------
 * pt, eta, phi: the first three features of every slot; mf: the mask as 0/1 floats. The arrays
 * hold PV = P rounded up to a multiple of 16 slots; padding (and slots P..PV-1) holds zeros, so sums
 * over slots need no mask and affine maps add their constant times mf. W is one past the last real
 * slot (n for the usual prefix masks): loops run over the first W8 slots, W rounded up to a
 * multiple of 8, in vector registers. Arithmetic is float32, as in the torch path. */
#define LANES 8
#define BLOCK 16 /* normals are drawn in whole blocks of 16 (vector width), the extras unused */

typedef struct {
    float *pt, *eta, *phi, *mf, *ne, *np; /* ne, np: normals for smear_soft */
    int32_t *idx;
    int64_t P, PV, W;
} jet_t;

static inline int64_t W8(const jet_t *J) { return (J->W + LANES - 1) / LANES * LANES; }

/* Sums over slots go to 8 interleaved partial sums, added up in a fixed order: the compiler keeps
 * them in one vector register, and the result is the same with or without vector instructions. */
static float sum8(const float *acc) {
    float t = acc[0];
    for (int k = 1; k < LANES; k++) t += acc[k];
    return t;
}

/* cos and sin of an angle a (|a| < 2^20), branch-free: libm's sincos branches on the range of
 * its argument, which for random angles the CPU mispredicts */
static inline void sincos_nb(double a, float *c, float *s) {
    double q = nearbyint(a * (2.0 / PI));
    float ct, st;
    sincos_small((float)(a - q * (PI / 2.0)), &ct, &st);
    quadrant((int32_t)((int64_t)q & 3), ct, st, c, s);
}

static void rotate(jet_t *J, rng_t *r, double strength) {
    int64_t w8 = W8(J);
    float c, s;
    sincos_nb((uniform(r) - 0.5) * 2.0 * PI * strength, &c, &s);
    float spt[LANES] = {0}, se[LANES] = {0}, sp[LANES] = {0};
    for (int64_t j0 = 0; j0 < w8; j0 += LANES)
        for (int k = 0; k < LANES; k++) {
            spt[k] += J->pt[j0 + k];
            se[k] += J->pt[j0 + k] * J->eta[j0 + k];
            sp[k] += J->pt[j0 + k] * J->phi[j0 + k];
        }
    float tpt = sum8(spt), ce = tpt > 0.0f ? sum8(se) / tpt : 0.0f, cp = tpt > 0.0f ? sum8(sp) / tpt : 0.0f;
    /* (eta, phi) -> R ((eta, phi) - centroid) + centroid = R (eta, phi) + b on real slots */
    float b0 = ce - c * ce + s * cp, b1 = cp - s * ce - c * cp;
    for (int64_t j = 0; j < w8; j++) {
        float e = J->eta[j], p = J->phi[j];
        J->eta[j] = c * e - s * p + J->mf[j] * b0;
        J->phi[j] = s * e + c * p + J->mf[j] * b1;
    }
}

static void smear_soft(jet_t *J, rng_t *r, double width, double pt_clip_min) {
    int64_t w8 = W8(J);
    float w = (float)width, clip = (float)pt_clip_min;
    normals(r, (J->W + BLOCK - 1) / BLOCK * BLOCK, J->ne, J->np); /* beyond W: times mf = 0 */
    for (int64_t j = 0; j < w8; j++) {
        float pt = J->pt[j] > clip ? J->pt[j] : clip;
        float a = J->mf[j] * w / pt;
        J->eta[j] += a * J->ne[j];
        J->phi[j] += a * J->np[j];
    }
}

static void translate(jet_t *J, rng_t *r, double width) {
    int64_t w8 = W8(J);
    float lo_e[LANES], hi_e[LANES], lo_p[LANES], hi_p[LANES];
    for (int k = 0; k < LANES; k++) {
        lo_e[k] = lo_p[k] = INFINITY;
        hi_e[k] = hi_p[k] = -INFINITY;
    }
    for (int64_t j0 = 0; j0 < w8; j0 += LANES)
        for (int k = 0; k < LANES; k++) { /* ranges over real slots only */
            int real = J->mf[j0 + k] > 0.0f;
            float e = J->eta[j0 + k], p = J->phi[j0 + k];
            float e_lo = real ? e : INFINITY, e_hi = real ? e : -INFINITY;
            float p_lo = real ? p : INFINITY, p_hi = real ? p : -INFINITY;
            lo_e[k] = e_lo < lo_e[k] ? e_lo : lo_e[k];
            hi_e[k] = e_hi > hi_e[k] ? e_hi : hi_e[k];
            lo_p[k] = p_lo < lo_p[k] ? p_lo : lo_p[k];
            hi_p[k] = p_hi > hi_p[k] ? p_hi : hi_p[k];
        }
    for (int k = 1; k < LANES; k++) {
        lo_e[0] = lo_e[k] < lo_e[0] ? lo_e[k] : lo_e[0];
        hi_e[0] = hi_e[k] > hi_e[0] ? hi_e[k] : hi_e[0];
        lo_p[0] = lo_p[k] < lo_p[0] ? lo_p[k] : lo_p[0];
        hi_p[0] = hi_p[k] > hi_p[0] ? hi_p[k] : hi_p[0];
    }
    double ue = uniform(r), up = uniform(r); /* drawn for every jet: streams stay aligned */
    if (!(hi_e[0] >= lo_e[0])) return; /* no real constituent */
    float se = (float)((ue - 0.5) * ((double)hi_e[0] - lo_e[0]) * 2.0 * width);
    float sp = (float)((up - 0.5) * ((double)hi_p[0] - lo_p[0]) * 2.0 * width);
    for (int64_t j = 0; j < w8; j++) {
        J->eta[j] += J->mf[j] * se;
        J->phi[j] += J->mf[j] * sp;
    }
}

/* k = max(n, fill P) - n splits (times strength, rounded half to even), at most n and P - n:
 * as _split_counts in augment.py. k distinct sources drawn uniformly among the real slots (partial
 * Fisher-Yates); the source keeps r pT, r ~ U(0, 1), and the child, (1 - r) pT with the source's
 * other features (y: the jet's output row, for features beyond the third), goes to the next empty
 * slot in index order. */
static void collinear_split(jet_t *J, float *y, int64_t F, rng_t *r, double strength, double fill) {
    int64_t w8 = W8(J);
    int64_t P = J->P;
    float count[LANES] = {0};
    for (int64_t j0 = 0; j0 < w8; j0 += LANES)
        for (int k = 0; k < LANES; k++) count[k] += J->mf[j0 + k];
    int64_t n = (int64_t)sum8(count);
    int64_t k = (int64_t)(fill * (double)P) - n;
    if (k < 0) k = 0;
    if (strength != 1.0) {
        k = (int64_t)nearbyint((double)k * strength);
        if (k < 0) k = 0;
    }
    if (k > n) k = n;
    if (k > P - n) k = P - n;
    if (k == 0) return; /* most jets: n >= fill P already */
    n = 0;
    for (int64_t j = 0; j < J->W; j++)
        if (J->mf[j] > 0.0f) J->idx[n++] = (int32_t)j;
    int64_t slot = 0; /* scans for empty slots */
    for (int64_t c = 0; c < k; c++) {
        int64_t t = c + below(r, (uint32_t)(n - c));
        int32_t src = J->idx[t];
        J->idx[t] = J->idx[c];
        J->idx[c] = src;
        float u = (float)uniform(r);
        while (J->mf[slot] > 0.0f) slot++; /* k <= P - n: an empty slot below P exists */
        float child = J->pt[src] * (1.0f - u);
        J->pt[slot] = child;
        J->pt[src] = J->pt[src] - child;
        J->eta[slot] = J->eta[src];
        J->phi[slot] = J->phi[src];
        J->mf[slot] = 1.0f;
        if (F > 3) memcpy(y + slot * F + 3, y + (int64_t)src * F + 3, (size_t)(F - 3) * sizeof(float));
        if (slot >= J->W) J->W = slot + 1;
    }
}

/* ---- rows in and out ---------------------------------------------------------------------------- */

/* Row x (P, F) into J; padding values are zeroed whatever the input holds there. F == 3 gets its
 * own copy so that the compiler sees the stride. */
static inline void load_any(jet_t *J, const float *x, const uint8_t *mb, int64_t F) {
    int32_t W = 0;
    for (int64_t j = 0; j < J->P; j++) { /* mask bytes are 0 or 1 (torch.bool) */
        J->mf[j] = (float)mb[j];
        int32_t end = (int32_t)mb[j] * ((int32_t)j + 1);
        W = end > W ? end : W;
    }
    J->W = W;
    for (int64_t j = 0; j < J->P; j++) {
        J->pt[j] = J->mf[j] * x[j * F];
        J->eta[j] = J->mf[j] * x[j * F + 1];
        J->phi[j] = J->mf[j] * x[j * F + 2];
    }
}

static void load3(jet_t *J, const float *x, const uint8_t *mb) { load_any(J, x, mb, 3); }

static inline void store_any(const jet_t *J, float *y, uint8_t *m, int64_t F) {
    for (int64_t j = 0; j < J->P; j++) {
        y[j * F] = J->pt[j];
        y[j * F + 1] = J->eta[j];
        y[j * F + 2] = J->phi[j];
        m[j] = J->mf[j] > 0.0f;
    }
}

static void store3(const jet_t *J, float *y, uint8_t *m) { store_any(J, y, m, 3); }

/* ---- entry points ------------------------------------------------------------------------------ */

/* Rows [row0, row1) of the output. scratch: room for 8 PV floats, PV = P rounded up to a multiple
 * of 16 (one scratch per thread). Returns 0, or -1 on a bad op code. */
int clrdist_jet_steps(const float *x, const uint8_t *mask, int64_t B, int64_t P, int64_t F,
                      float *out, uint8_t *out_mask, int64_t row0, int64_t row1,
                      int32_t nsteps, const int32_t *ops, const double *params,
                      const uint64_t *seeds, double strength, float *scratch) {
    for (int32_t s = 0; s < nsteps; s++)
        if (ops[s] < OP_COLLINEAR_SPLIT || ops[s] > OP_TRANSLATE) return -1;
    jet_t J;
    J.P = P;
    J.PV = (P + BLOCK - 1) / BLOCK * BLOCK;
    J.pt = scratch;
    J.eta = J.pt + J.PV;
    J.phi = J.eta + J.PV;
    J.mf = J.phi + J.PV;
    J.ne = J.mf + J.PV;
    J.np = J.ne + J.PV;
    J.idx = (int32_t *)(J.np + J.PV);
    memset(scratch, 0, (size_t)(8 * J.PV) * sizeof(float)); /* slots P..PV-1 stay zero */
    for (int64_t g = row0; g < row1; g++) {
        int64_t b = g % B;
        const float *xb = x + b * P * F;
        const uint8_t *mb = mask + b * P;
        float *y = out + g * P * F;
        uint8_t *m = out_mask + g * P;
        if (F == 3) {
            load3(&J, xb, mb);
        } else { /* the features beyond the third are carried in y */
            memcpy(y, xb, (size_t)(P * F) * sizeof(float));
            load_any(&J, xb, mb, F);
        }
        for (int32_t s = 0; s < nsteps; s++) {
            rng_t r = stream(seeds[s], (uint64_t)g);
            const double *p = params + 2 * s;
            switch (ops[s]) {
            case OP_COLLINEAR_SPLIT: collinear_split(&J, y, F, &r, strength, p[0]); break;
            case OP_ROTATE: rotate(&J, &r, strength); break;
            case OP_SMEAR_SOFT: smear_soft(&J, &r, p[0] * strength, p[1]); break;
            case OP_TRANSLATE: translate(&J, &r, p[0] * strength); break;
            }
        }
        if (F == 3) {
            store3(&J, y, m);
        } else {
            store_any(&J, y, m, F);
            for (int64_t j = 0; j < P; j++) /* padding: zero in every feature */
                if (!m[j]) memset(y + j * F, 0, (size_t)F * sizeof(float));
        }
    }
    return 0;
}

/* 2 n standard normals of the stream (seed, row), as smear_soft draws them: n into a, n into b.
 * For testing the generator itself. */
void clrdist_normals(uint64_t seed, uint64_t row, int64_t n, float *a, float *b) {
    rng_t r = stream(seed, row);
    normals(&r, n, a, b);
}
