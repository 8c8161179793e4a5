//! The AVX-512 kernel of md5x: sixteen MD5 streams at once, one per 32-bit lane of a zmm
//! register. The `unsafe` here is the loads and stores of 64-byte arrays, each on a
//! reference of exactly that size; `compress` itself may only be called once
//! `available()` said yes.

use core::arch::x86_64::{
    __m512i, _mm512_add_epi32, _mm512_loadu_si512, _mm512_rol_epi32, _mm512_set1_epi32, _mm512_shuffle_i32x4,
    _mm512_storeu_si512, _mm512_ternarylogic_epi32, _mm512_unpackhi_epi32, _mm512_unpackhi_epi64,
    _mm512_unpacklo_epi32, _mm512_unpacklo_epi64,
};

use super::{LaneState, LANES};

/// Whether this CPU has the instructions `compress` uses (AVX-512 Foundation).
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// The block an idle lane hashes; its result is never read.
static IDLE: [u8; 64] = [0; 64];

#[inline]
#[target_feature(enable = "avx512f")]
fn load_block(block: &[u8; 64]) -> __m512i {
    // SAFETY: reads 64 bytes from a reference to 64 bytes; loadu has no alignment demand.
    unsafe { _mm512_loadu_si512(block.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn load_words(words: &[u32; 16]) -> __m512i {
    // SAFETY: reads 64 bytes from a reference to 16 u32s (64 bytes); no alignment demand.
    unsafe { _mm512_loadu_si512(words.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn store_words(words: &mut [u32; 16], v: __m512i) {
    // SAFETY: writes 64 bytes through a unique reference to 16 u32s (64 bytes).
    unsafe { _mm512_storeu_si512(words.as_mut_ptr().cast(), v) }
}

/// Turns sixteen blocks (one per lane, row l = lane l's 16 message words) into sixteen
/// vectors of one message word each (row w = word w of every lane): a 16x16 transpose of
/// 32-bit words in four rounds of shuffles.
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose(r: [__m512i; 16]) -> [__m512i; 16] {
    // Pairs of rows interleaved by 32-bit word, then by 64 bits: u[4g + j] holds, in each
    // 128-bit quarter q, word 4q + j of rows 4g..4g+4.
    let mut t = r;
    for p in 0..8 {
        t[2 * p] = _mm512_unpacklo_epi32(r[2 * p], r[2 * p + 1]);
        t[2 * p + 1] = _mm512_unpackhi_epi32(r[2 * p], r[2 * p + 1]);
    }
    let mut u = t;
    for g in 0..4 {
        let (lo, hi) = (t[4 * g], t[4 * g + 1]);
        let (lo2, hi2) = (t[4 * g + 2], t[4 * g + 3]);
        u[4 * g] = _mm512_unpacklo_epi64(lo, lo2);
        u[4 * g + 1] = _mm512_unpackhi_epi64(lo, lo2);
        u[4 * g + 2] = _mm512_unpacklo_epi64(hi, hi2);
        u[4 * g + 3] = _mm512_unpackhi_epi64(hi, hi2);
    }
    // Gather the quarters: word 4q + j of all sixteen rows is quarter q of u[j], u[4 + j],
    // u[8 + j] and u[12 + j].
    let mut out = u;
    for j in 0..4 {
        let low_a = _mm512_shuffle_i32x4::<0x44>(u[j], u[4 + j]);
        let high_a = _mm512_shuffle_i32x4::<0xEE>(u[j], u[4 + j]);
        let low_b = _mm512_shuffle_i32x4::<0x44>(u[8 + j], u[12 + j]);
        let high_b = _mm512_shuffle_i32x4::<0xEE>(u[8 + j], u[12 + j]);
        out[j] = _mm512_shuffle_i32x4::<0x88>(low_a, low_b);
        out[4 + j] = _mm512_shuffle_i32x4::<0xDD>(low_a, low_b);
        out[8 + j] = _mm512_shuffle_i32x4::<0x88>(high_a, high_b);
        out[12 + j] = _mm512_shuffle_i32x4::<0xDD>(high_a, high_b);
    }
    out
}

/// The round functions as ternary-logic truth tables (operand order b, c, d unless noted):
/// F = b ? c : d, G = d ? b : c, H = b ^ c ^ d, I = c ^ (b | !d).
macro_rules! round_fn {
    (f, $b:ident, $c:ident, $d:ident) => {
        _mm512_ternarylogic_epi32::<0xCA>($b, $c, $d)
    };
    (g, $b:ident, $c:ident, $d:ident) => {
        _mm512_ternarylogic_epi32::<0xCA>($d, $b, $c)
    };
    (h, $b:ident, $c:ident, $d:ident) => {
        _mm512_ternarylogic_epi32::<0x96>($b, $c, $d)
    };
    (i, $b:ident, $c:ident, $d:ident) => {
        _mm512_ternarylogic_epi32::<0x39>($b, $c, $d)
    };
}

macro_rules! vector_step {
    ($f:ident, $m:ident, $a:ident, $b:ident, $c:ident, $d:ident, $g:literal, $k:literal, $s:literal) => {
        let t = _mm512_add_epi32($a, _mm512_add_epi32($m[$g], _mm512_set1_epi32($k as i32)));
        let t = _mm512_add_epi32(t, round_fn!($f, $b, $c, $d));
        $a = _mm512_add_epi32($b, _mm512_rol_epi32::<$s>(t));
    };
}

/// Advances every busy lane by `blocks` blocks: lane l reads `lanes[l][..blocks * 64]`; an
/// idle lane (an empty slice) hashes zeros, and its state is not to be read. The caller
/// gives every busy lane at least `blocks * 64` bytes.
#[target_feature(enable = "avx512f")]
pub fn compress(state: &mut LaneState, lanes: &[&[u8]; LANES], blocks: usize) {
    let mut a = load_words(&state[0]);
    let mut b = load_words(&state[1]);
    let mut c = load_words(&state[2]);
    let mut d = load_words(&state[3]);
    for n in 0..blocks {
        let mut rows = [a; 16];
        for (row, lane) in rows.iter_mut().zip(lanes) {
            let block = match lane.get(n * 64..n * 64 + 64) {
                Some(bytes) => bytes.try_into().unwrap_or(&IDLE),
                None => &IDLE,
            };
            *row = load_block(block);
        }
        let m = transpose(rows);
        let (a0, b0, c0, d0) = (a, b, c, d);
        md5_steps!(vector_step, m, a, b, c, d);
        a = _mm512_add_epi32(a, a0);
        b = _mm512_add_epi32(b, b0);
        c = _mm512_add_epi32(c, c0);
        d = _mm512_add_epi32(d, d0);
    }
    store_words(&mut state[0], a);
    store_words(&mut state[1], b);
    store_words(&mut state[2], c);
    store_words(&mut state[3], d);
}
