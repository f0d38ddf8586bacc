//! The inner loops of vector search: dot products and distances over whole vectors.
//!
//! Each is written as plain lane-wise Rust the compiler vectorises, and compiled twice: for
//! the baseline x86-64 (SSE2) and for AVX2 + FMA, picked at run time by `multiversion`. The
//! baseline has no instruction to widen 8-bit integers, so the graph's 8-bit distance was
//! 24–29% of a vector query's CPU in the benchmark's profile; with AVX2 it widens sixteen
//! components per instruction.
//!
//! Results do not depend on the version chosen: integer sums are exact, and floating-point
//! sums keep the same lanes and order (the compiler does not fuse a multiply and an add on
//! its own; and a product of two f32 is exact in f64, fused or not).

use multiversion::multiversion;

/// `Σ a[i]·b[i]` over 8-bit components (equal lengths; a longer slice's excess is ignored).
/// Exact: each product fits 16 bits (|-128·-128| = 16,384), the sums are 32-bit and cannot
/// overflow below 131,000 components. Thirty-two lanes: with AVX2, two 16-bit multiplies
/// and four widening adds per 32 components (12 ns for 384-d here, the baseline 41 ns).
#[multiversion(targets("x86_64+avx2+fma"))]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0i32; 32];
    let (ca, cb) = (a.chunks_exact(32), b.chunks_exact(32));
    let tail: i32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..32 {
            acc[i] += i32::from(i16::from(x[i]) * i16::from(y[i]));
        }
    }
    acc.iter().sum::<i32>() + tail
}

/// `Σ term(a[i], b[i])` in eight f32 lanes.
#[inline(always)]
fn sum8(a: &[f32], b: &[f32], term: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| term(*x, *y))
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += term(x[i], y[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `Σ a[i]·b[i]` in f32 (graph distances: they only order candidates).
#[multiversion(targets("x86_64+avx2+fma"))]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    sum8(a, b, |x, y| x * y)
}

/// `Σ (a[i] - b[i])²` in f32.
#[multiversion(targets("x86_64+avx2+fma"))]
pub fn squared_l2_f32(a: &[f32], b: &[f32]) -> f32 {
    sum8(a, b, |x, y| (x - y) * (x - y))
}

/// `Σ a[i]·b[i]` in f64 over sixteen independent sums (one chain of dependent additions
/// would leave the multipliers idle; sixteen fill four AVX2 registers: 57 ns for 384-d here,
/// eight sums 150 ns): the exact scores, deterministic for given inputs.
#[multiversion(targets("x86_64+avx2+fma"))]
pub fn dot_f64(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f64; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += f64::from(x[i]) * f64::from(y[i]);
        }
    }
    let mut tail = 0f64;
    for (x, y) in ra.iter().zip(rb) {
        tail += f64::from(*x) * f64::from(*y);
    }
    acc.iter().sum::<f64>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random values (xorshift).
    fn values(n: usize, seed: u64) -> Vec<u64> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s
            })
            .collect()
    }

    #[test]
    fn dot_i8_is_exact_at_every_length_and_extreme() {
        for n in [0, 1, 31, 32, 33, 384, 385, 1000] {
            let a: Vec<i8> = values(n, 3).iter().map(|v| *v as i8).collect();
            let b: Vec<i8> = values(n, 5).iter().map(|v| *v as i8).collect();
            let want: i64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| i64::from(*x) * i64::from(*y))
                .sum();
            assert_eq!(i64::from(dot_i8(&a, &b)), want, "n = {n}");
        }
        let lo = vec![i8::MIN; 384];
        assert_eq!(dot_i8(&lo, &lo), 384 * 128 * 128);
        let hi = vec![i8::MAX; 384];
        assert_eq!(dot_i8(&lo, &hi), -384 * 128 * 127);
    }

    #[test]
    fn float_kernels_match_a_plain_loop() {
        for n in [0, 1, 7, 8, 9, 384, 1001] {
            let f = |seed| -> Vec<f32> {
                values(n, seed)
                    .iter()
                    .map(|v| (*v % 2001) as f32 / 1000.0 - 1.0)
                    .collect()
            };
            let (a, b) = (f(7), f(11));
            let exact: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            assert!((dot_f64(&a, &b) - exact).abs() < 1e-9, "n = {n}");
            assert!((f64::from(dot_f32(&a, &b)) - exact).abs() < 1e-3, "n = {n}");
            let l2: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
                .sum();
            assert!(
                (f64::from(squared_l2_f32(&a, &b)) - l2).abs() < 1e-3,
                "n = {n}"
            );
        }
    }
}
