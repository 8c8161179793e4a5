//! The AVX2 kernel of md5x, for CPUs without AVX-512 (AMD before Zen 4, older Intel): the
//! sixteen lanes as two groups of eight, one stream per 32-bit lane of a ymm register. The
//! two groups' steps alternate, two independent chains for the CPU to overlap. AVX2 has no
//! ternary logic and no rotate, so each round function is two or three operations and each
//! rotation three. The `unsafe` here is the loads and stores of 32-byte arrays, each within
//! a reference at least that large; `compress` itself may only be called once `available()`
//! said yes.

use core::arch::x86_64::{
    __m256i, _mm256_add_epi32, _mm256_and_si256, _mm256_loadu_si256, _mm256_or_si256, _mm256_permute2x128_si256,
    _mm256_set1_epi32, _mm256_setzero_si256, _mm256_slli_epi32, _mm256_srli_epi32, _mm256_storeu_si256,
    _mm256_unpackhi_epi32, _mm256_unpackhi_epi64, _mm256_unpacklo_epi32, _mm256_unpacklo_epi64, _mm256_xor_si256,
};

use super::{LaneState, LANES};

/// Lanes per ymm register.
const GROUP: usize = 8;

/// Whether this CPU has the instructions `compress` uses.
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

/// The block an idle lane hashes; its result is never read.
static IDLE: [u8; 64] = [0; 64];

/// Half of a block: its message words 0..8 (`high` false) or 8..16.
#[inline]
#[target_feature(enable = "avx2")]
fn load_half(block: &[u8; 64], high: bool) -> __m256i {
    let offset = if high { 32 } else { 0 };
    // SAFETY: reads bytes offset..offset + 32 of a 64-byte array; loadu has no alignment demand.
    unsafe { _mm256_loadu_si256(block.as_ptr().add(offset).cast()) }
}

#[inline]
#[target_feature(enable = "avx2")]
fn load_words(words: &[u32; GROUP]) -> __m256i {
    // SAFETY: reads 32 bytes from a reference to 8 u32s (32 bytes); no alignment demand.
    unsafe { _mm256_loadu_si256(words.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2")]
fn store_words(words: &mut [u32; GROUP], v: __m256i) {
    // SAFETY: writes 32 bytes through a unique reference to 8 u32s (32 bytes).
    unsafe { _mm256_storeu_si256(words.as_mut_ptr().cast(), v) }
}

/// Group `g`'s eight lanes of one state word.
fn group_of(words: &[u32; LANES], g: usize) -> &[u32; GROUP] {
    words[g * GROUP..][..GROUP].try_into().expect("a group is GROUP words")
}

fn group_of_mut(words: &mut [u32; LANES], g: usize) -> &mut [u32; GROUP] {
    (&mut words[g * GROUP..][..GROUP]).try_into().expect("a group is GROUP words")
}

/// Turns eight rows (row l = eight message words of lane l) into eight vectors of one word
/// each (vector w = word w of every lane): an 8x8 transpose of 32-bit words.
#[inline]
#[target_feature(enable = "avx2")]
fn transpose(r: [__m256i; GROUP]) -> [__m256i; GROUP] {
    // Rows interleaved in pairs by 32-bit word, then in fours by 64 bits: in u[j] (and
    // u[4 + j] for rows 4..8), the low 128 bits hold word j of rows 0..4, the high word 4 + j.
    let mut t = r;
    for p in 0..4 {
        t[2 * p] = _mm256_unpacklo_epi32(r[2 * p], r[2 * p + 1]);
        t[2 * p + 1] = _mm256_unpackhi_epi32(r[2 * p], r[2 * p + 1]);
    }
    let mut u = t;
    for g in 0..2 {
        let (lo, hi, lo2, hi2) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
        u[4 * g] = _mm256_unpacklo_epi64(lo, lo2);
        u[4 * g + 1] = _mm256_unpackhi_epi64(lo, lo2);
        u[4 * g + 2] = _mm256_unpacklo_epi64(hi, hi2);
        u[4 * g + 3] = _mm256_unpackhi_epi64(hi, hi2);
    }
    let mut out = u;
    for j in 0..4 {
        out[j] = _mm256_permute2x128_si256::<0x20>(u[j], u[4 + j]);
        out[4 + j] = _mm256_permute2x128_si256::<0x31>(u[j], u[4 + j]);
    }
    out
}

/// F = b ? c : d, G = d ? b : c, H = b ^ c ^ d, I = c ^ (b | !d).
macro_rules! round_fn {
    (f, $b:expr, $c:expr, $d:expr) => {
        _mm256_xor_si256($d, _mm256_and_si256($b, _mm256_xor_si256($c, $d)))
    };
    (g, $b:expr, $c:expr, $d:expr) => {
        _mm256_xor_si256($c, _mm256_and_si256($d, _mm256_xor_si256($b, $c)))
    };
    (h, $b:expr, $c:expr, $d:expr) => {
        _mm256_xor_si256(_mm256_xor_si256($b, $c), $d)
    };
    (i, $b:expr, $c:expr, $d:expr) => {
        _mm256_xor_si256($c, _mm256_or_si256($b, _mm256_xor_si256($d, _mm256_set1_epi32(-1))))
    };
}

macro_rules! vector_step {
    ($f:ident, $m:ident, $a:ident, $b:ident, $c:ident, $d:ident, $g:literal, $k:literal, $s:literal) => {
        let k = _mm256_set1_epi32($k as i32);
        for grp in 0..$a.len() {
            let t = _mm256_add_epi32($a[grp], _mm256_add_epi32($m[grp][$g], k));
            let t = _mm256_add_epi32(t, round_fn!($f, $b[grp], $c[grp], $d[grp]));
            let rotated = _mm256_or_si256(_mm256_slli_epi32::<$s>(t), _mm256_srli_epi32::<{ 32 - $s }>(t));
            $a[grp] = _mm256_add_epi32($b[grp], rotated);
        }
    };
}

/// Advances every busy lane by `blocks` blocks, with the contract of `avx512::compress`: lane
/// l reads `lanes[l][..blocks * 64]`; an idle lane (an empty slice) hashes zeros, and its
/// state is not to be read. A group of eight lanes that are all idle is skipped (a core with
/// eight streams or fewer often leaves one so).
#[target_feature(enable = "avx2")]
pub fn compress(state: &mut LaneState, lanes: &[&[u8]; LANES], blocks: usize) {
    let busy = |g: usize| lanes[g * GROUP..][..GROUP].iter().any(|l| !l.is_empty());
    match (busy(0), busy(1)) {
        (true, true) => compress_groups::<2>(state, lanes, blocks, 0),
        (true, false) => compress_groups::<1>(state, lanes, blocks, 0),
        (false, true) => compress_groups::<1>(state, lanes, blocks, 1),
        (false, false) => {}
    }
}

/// `compress` for the `G` groups from group `first` on.
#[inline]
#[target_feature(enable = "avx2")]
fn compress_groups<const G: usize>(state: &mut LaneState, lanes: &[&[u8]; LANES], blocks: usize, first: usize) {
    let mut words = [[_mm256_setzero_si256(); G]; 4];
    for (w, v) in words.iter_mut().enumerate() {
        for (g, half) in v.iter_mut().enumerate() {
            *half = load_words(group_of(&state[w], first + g));
        }
    }
    let [mut a, mut b, mut c, mut d] = words;
    for n in 0..blocks {
        let mut m = [[_mm256_setzero_si256(); 16]; G];
        for (g, words) in m.iter_mut().enumerate() {
            for high in [false, true] {
                let mut rows = [_mm256_setzero_si256(); GROUP];
                for (row, lane) in rows.iter_mut().zip(&lanes[(first + g) * GROUP..][..GROUP]) {
                    let block = match lane.get(n * 64..n * 64 + 64) {
                        Some(bytes) => bytes.try_into().unwrap_or(&IDLE),
                        None => &IDLE,
                    };
                    *row = load_half(block, high);
                }
                let at = if high { GROUP } else { 0 };
                words[at..at + GROUP].copy_from_slice(&transpose(rows));
            }
        }
        let (a0, b0, c0, d0) = (a, b, c, d);
        md5_steps!(vector_step, m, a, b, c, d);
        for g in 0..G {
            a[g] = _mm256_add_epi32(a[g], a0[g]);
            b[g] = _mm256_add_epi32(b[g], b0[g]);
            c[g] = _mm256_add_epi32(c[g], c0[g]);
            d[g] = _mm256_add_epi32(d[g], d0[g]);
        }
    }
    for (w, v) in [a, b, c, d].into_iter().enumerate() {
        for (g, half) in v.into_iter().enumerate() {
            store_words(group_of_mut(&mut state[w], first + g), half);
        }
    }
}
