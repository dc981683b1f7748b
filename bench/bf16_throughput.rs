// How many bfloat16 dot products (VDPBF16PS, AVX512-BF16) this core runs per second, next to
// float32 FMAs (VFMADD231PS) on the same 512-bit registers: the question behind `--precision
// bfloat16-avx512`. It beats float32 only where the first FLOP rate is above the second (on the
// Intel Xeon of docs/benchmarks.md they are equal: VDPBF16PS issues at half the rate of an FMA).
//
//   rustc -O --edition 2021 bench/bf16_throughput.rs -o /tmp/bf16_throughput && /tmp/bf16_throughput
use std::arch::x86_64::*;
use std::time::Instant;

const CHAINS: usize = 12; // independent accumulators, more than latency x issue rate

#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn dot(n: usize) -> f32 {
    let mut acc = [_mm512_setzero_ps(); CHAINS];
    let a: __m512bh = std::mem::transmute(_mm512_set1_epi32(0x3f80_3f80));
    let b: __m512bh = std::mem::transmute(_mm512_set1_epi32(0x3f80_3f80));
    for _ in 0..n {
        for x in acc.iter_mut() {
            *x = _mm512_dpbf16_ps(*x, a, std::hint::black_box(b));
        }
    }
    acc.iter().map(|&x| _mm512_reduce_add_ps(x)).sum()
}

#[target_feature(enable = "avx512f")]
unsafe fn fma(n: usize) -> f32 {
    let mut acc = [_mm512_setzero_ps(); CHAINS];
    let (a, b) = (_mm512_set1_ps(1.0), _mm512_set1_ps(1.0));
    for _ in 0..n {
        for x in acc.iter_mut() {
            *x = _mm512_fmadd_ps(a, std::hint::black_box(b), *x);
        }
    }
    acc.iter().map(|&x| _mm512_reduce_add_ps(x)).sum()
}

fn rate(f: unsafe fn(usize) -> f32, flops_per_instr: f64) -> f64 {
    let n = 20_000_000;
    (0..3)
        .map(|_| {
            let t = Instant::now();
            // SAFETY: the features were checked in main.
            std::hint::black_box(unsafe { f(n) });
            (CHAINS * n) as f64 * flops_per_instr / t.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}

fn main() {
    if !is_x86_feature_detected!("avx512f") || !is_x86_feature_detected!("avx512bf16") {
        println!("this CPU has no AVX512-BF16: --precision bfloat16-avx512 is refused here");
        return;
    }
    // VDPBF16PS: 16 lanes x 2 products x (multiply + add); VFMADD231PS: 16 lanes x 2.
    let (d, f) = (rate(dot, 64.0), rate(fma, 32.0));
    println!("one core: VDPBF16PS {d:.1} GFLOP/s, VFMADD231PS {f:.1} GFLOP/s, ratio {:.2}", d / f);
}
