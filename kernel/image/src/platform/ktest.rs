//! In-kernel tests, selected with `test=<name>` on the command line. Each prints
//! `xdv-test: start <name>`, then `xdv-test: pass <name>` (exit PASS) or
//! `xdv-test: fail <name>: <reason>` (exit FAIL). Fault tests end in the exception
//! handler (exit FAULT) and the host harness checks the report.

use crate::arch::{self, exit_code};
use crate::mem::{frames, heap};
use crate::println;
use alloc::string::String;
use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};
use xdv_types::rng::SplitMix64;

pub type TestFn = fn() -> Result<(), String>;

/// The platform's own tests; the services add theirs through `run`'s `more`.
static TESTS: &[(&str, TestFn)] = &[
    ("boot", || Ok(())),
    ("heap", heap_stress),
    ("mem", mem_routines),
    ("breakpoint", breakpoint),
    ("pagefault", pagefault),
    ("stackoverflow", stackoverflow),
];

pub fn run(name: &str, more: &[(&'static str, TestFn)]) -> ! {
    println!("xdv-test: start {name}");
    let all = || TESTS.iter().chain(more.iter());
    let Some((_, f)) = all().find(|(n, _)| *n == name) else {
        let names: Vec<&str> = all().map(|(n, _)| *n).collect();
        println!(
            "xdv-test: fail {name}: no such test (have: {})",
            names.join(", ")
        );
        arch::exit_qemu(exit_code::FAIL)
    };
    match f() {
        Ok(()) => {
            println!("xdv-test: pass {name}");
            arch::exit_qemu(exit_code::PASS)
        }
        Err(reason) => {
            println!("xdv-test: fail {name}: {reason}");
            arch::exit_qemu(exit_code::FAIL)
        }
    }
}

#[macro_export]
macro_rules! check {
    ($cond:expr, $($msg:tt)*) => {
        if !$cond {
            return Err(alloc::format!($($msg)*));
        }
    };
}

/// A byte of `buf` read without the compiler turning the loop into a call to the
/// routines under test.
fn vget(buf: &[u8], i: usize) -> u8 {
    // SAFETY: `&buf[i]` is a valid, aligned reference.
    unsafe { core::ptr::read_volatile(&buf[i]) }
}

fn vset(buf: &mut [u8], i: usize, v: u8) {
    // SAFETY: `&mut buf[i]` is a valid, aligned, exclusive reference.
    unsafe { core::ptr::write_volatile(&mut buf[i], v) }
}

fn vfill(buf: &mut [u8], rng: &mut SplitMix64) {
    for i in 0..buf.len() {
        vset(buf, i, rng.next_u64() as u8);
    }
}

/// `want[..span]` = `buf[..span]` (the expectation starts as the untouched bytes).
fn vcopy_all(want: &mut [u8], buf: &[u8], span: usize) {
    for i in 0..span {
        vset(want, i, vget(buf, i));
    }
}

/// The first index below `span` where `got` and `want` differ.
fn first_diff(got: &[u8], want: &[u8], span: usize) -> Option<usize> {
    (0..span).find(|&i| vget(got, i) != vget(want, i))
}

/// `memcpy`, `memmove` (both directions, overlapping), `memset`, `memcmp` and `bcmp`
/// against byte-at-a-time references: lengths 0..=200 and a few long ones, every
/// source and destination alignment 0..8; bytes outside the range must not change.
fn mem_routines() -> Result<(), String> {
    use crate::rt::{bcmp, memcmp, memcpy, memmove, memset};
    const SPAN: usize = 4096 + 64;
    let mut rng = SplitMix64::new(0x6d65_6d73);
    let mut src = alloc::vec![0u8; SPAN];
    let mut dst = alloc::vec![0u8; SPAN];
    let mut want = alloc::vec![0u8; SPAN];
    let lens = (0..=200usize).chain([255, 256, 257, 1000, 4096 + 7]);
    let mut cases = 0u32;
    for len in lens {
        // The bytes that matter: the range at the largest offset and 16 beyond it.
        let span = (len + 8 + 16).min(SPAN);
        let move_span = (len + 104 + 16).min(SPAN);
        for sa in 0..8 {
            for da in 0..8 {
                vfill(&mut src[..span], &mut rng);
                vfill(&mut dst[..span], &mut rng);
                vcopy_all(&mut want, &dst, span);
                for i in 0..len {
                    vset(&mut want, da + i, vget(&src, sa + i));
                }
                // SAFETY: both ranges lie inside their SPAN-byte buffers (8 + 4103 < SPAN).
                unsafe { memcpy(dst.as_mut_ptr().add(da), src.as_ptr().add(sa), len) };
                if let Some(i) = first_diff(&dst, &want, span) {
                    return Err(alloc::format!(
                        "memcpy len {len} src+{sa} dst+{da}: byte {i} wrong"
                    ));
                }
                // memcmp/bcmp: equal, then one byte changed at each end.
                // SAFETY: as above.
                let same = unsafe { memcmp(dst.as_ptr().add(da), src.as_ptr().add(sa), len) };
                check!(same == 0, "memcmp len {len}: equal ranges gave {same}");
                if len > 0 {
                    for k in [0, len / 2, len - 1] {
                        let old = vget(&dst, da + k);
                        vset(&mut dst, da + k, old.wrapping_add(1));
                        let want_sign = i32::from(old.wrapping_add(1)) - i32::from(old);
                        // SAFETY: as above.
                        let (c, b) = unsafe {
                            (
                                memcmp(dst.as_ptr().add(da), src.as_ptr().add(sa), len),
                                bcmp(dst.as_ptr().add(da), src.as_ptr().add(sa), len),
                            )
                        };
                        check!(
                            c.signum() == want_sign.signum() && b != 0,
                            "memcmp len {len} differing at {k}: got {c}, bcmp {b}"
                        );
                        vset(&mut dst, da + k, old);
                    }
                }
                cases += 1;
            }
            // memset at this alignment.
            for v in [0u8, 0xa5] {
                vfill(&mut dst[..span], &mut rng);
                vcopy_all(&mut want, &dst, span);
                for i in 0..len {
                    vset(&mut want, sa + i, v);
                }
                // SAFETY: sa + len < SPAN.
                unsafe { memset(dst.as_mut_ptr().add(sa), i32::from(v), len) };
                if let Some(i) = first_diff(&dst, &want, span) {
                    return Err(alloc::format!(
                        "memset len {len} +{sa} value {v:#x}: byte {i} wrong"
                    ));
                }
            }
        }
        // memmove inside one buffer, the destination up to 40 bytes either side.
        if len <= 1000 {
            for delta in -40i64..=40 {
                let from = 64usize;
                let to = (from as i64 + delta) as usize;
                vfill(&mut dst[..move_span], &mut rng);
                vcopy_all(&mut want, &dst, move_span);
                for i in 0..len {
                    vset(&mut want, to + i, vget(&dst, from + i));
                }
                // SAFETY: from, to <= 104 and len <= 1000, inside SPAN.
                unsafe { memmove(dst.as_mut_ptr().add(to), dst.as_ptr().add(from), len) };
                if let Some(i) = first_diff(&dst, &want, move_span) {
                    return Err(alloc::format!(
                        "memmove len {len} by {delta}: byte {i} wrong"
                    ));
                }
            }
        }
    }
    println!("mem test: {cases} copy/compare cases, memset and memmove ok");
    // What the routines buy under emulation: 1 MiB set and copied by them and by the
    // `rep stosb`/`rep movsb` they replaced (informational; the host test does not
    // judge times).
    let mut big = alloc::vec![0u8; 1 << 20];
    let mut other = alloc::vec![1u8; 1 << 20];
    let time = |f: &mut dyn FnMut()| {
        let t0 = crate::arch::rdtsc();
        f();
        crate::time::cycles_to_ns(crate::arch::rdtsc() - t0) / 1000
    };
    let (p, q, n) = (big.as_mut_ptr(), other.as_mut_ptr(), big.len());
    // SAFETY: p and q are distinct 1 MiB buffers; DF is clear.
    let ours_set = time(&mut || unsafe {
        memset(p, 7, n);
    });
    // SAFETY: as above.
    let rep_set = time(&mut || unsafe {
        core::arch::asm!("rep stosb", inout("rcx") n => _, inout("rdi") p => _, in("al") 7u8,
             options(nostack, preserves_flags));
    });
    // SAFETY: as above.
    let ours_copy = time(&mut || unsafe {
        memcpy(q, p, n);
    });
    // SAFETY: as above.
    let rep_copy = time(&mut || unsafe {
        core::arch::asm!("rep movsb", inout("rcx") n => _, inout("rdi") q => _, inout("rsi") p => _,
             options(nostack, preserves_flags));
    });
    println!(
        "mem test: 1 MiB memset {ours_set} us (rep stosb {rep_set} us), memcpy {ours_copy} us (rep movsb {rep_copy} us)"
    );
    Ok(())
}

/// `frames::set_bits` (a word at a time) against setting the bits one by one: random
/// ranges over a small map, both directions, the counts and every word compared.
fn set_bits_as_bit_by_bit() -> Result<(), String> {
    let mut rng = SplitMix64::new(0x5e7_b175);
    let (mut fast, mut slow) = ([0u64; 8], [0u64; 8]);
    for i in 0..2000 {
        let a = (rng.next_u64() % 512) as usize;
        let b = (rng.next_u64() % 512) as usize;
        let (first, end) = (a.min(b), a.max(b) + (i % 3));
        let end = end.min(512);
        let used = rng.next_u64() & 1 == 1;
        let got = frames::set_bits(&mut fast, first, end, used);
        let mut want = (0, 0);
        for f in first..end {
            let bit = 1u64 << (f % 64);
            let was = slow[f / 64] & bit != 0;
            match (used, was) {
                (true, false) => want.1 += 1,
                (false, true) => want.0 += 1,
                _ => {}
            }
            if used {
                slow[f / 64] |= bit;
            } else {
                slow[f / 64] &= !bit;
            }
        }
        check!(
            got == want && fast == slow,
            "set_bits({first}, {end}, {used}) gave {got:?}, bit by bit {want:?}"
        );
    }
    Ok(())
}

fn heap_stress() -> Result<(), String> {
    // Memory map and frame allocator.
    let info = crate::boot_info();
    check!(!info.regions().is_empty(), "empty memory map");
    let (free0, total) = frames::stats();
    check!(
        free0 > 0 && free0 <= total,
        "frame stats free={free0} total={total}"
    );
    let a = frames::alloc(4).ok_or_else(|| String::from("4 contiguous frames unavailable"))?;
    let b = frames::alloc_zeroed(1).ok_or_else(|| String::from("1 frame unavailable"))?;
    check!(
        a % 4096 == 0 && b % 4096 == 0 && (b < a || b >= a + 4 * 4096),
        "overlapping frames {a:#x} {b:#x}"
    );
    // SAFETY: `b` is a frame we own, identity-mapped.
    let zero = unsafe { core::slice::from_raw_parts(b as *const u8, 4096) }
        .iter()
        .all(|&x| x == 0);
    check!(zero, "alloc_zeroed frame not zeroed");
    frames::free(a, 4);
    frames::free(b, 1);
    check!(
        frames::stats().0 == free0,
        "frames leaked: {} != {free0}",
        frames::stats().0
    );
    println!("heap test: frame allocator ok ({free0} of {total} frames free)");
    set_bits_as_bit_by_bit()?;

    // Heap: many sizes and alignments, three free patterns, contents verified.
    let (used0, _, size) = heap::usage();
    let mut rng = SplitMix64::new(0x9e37_79b9_7f4a_7c15);
    for pattern in 0..3 {
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        for i in 0..600 {
            let len = 1 + rng.below(if i % 50 == 0 { 256 * 1024 } else { 2048 }) as usize;
            let fill = (i % 251) as u8;
            let mut v = Vec::with_capacity(len);
            v.resize(len, fill);
            blocks.push(v);
        }
        for (i, v) in blocks.iter().enumerate() {
            let fill = (i % 251) as u8;
            check!(
                v.iter().all(|&x| x == fill),
                "block {i} corrupted (pattern {pattern})"
            );
        }
        match pattern {
            0 => drop(blocks), // in allocation order
            1 => {
                // LIFO
                while blocks.pop().is_some() {}
                drop(blocks);
            }
            _ => {
                // Interleaved: free every other block, then the rest.
                let mut keep = Vec::new();
                for (i, v) in blocks.into_iter().enumerate() {
                    if i % 2 == 0 { drop(v) } else { keep.push(v) }
                }
                drop(keep);
            }
        }
        check!(
            heap::usage().0 == used0,
            "heap leaked after pattern {pattern}: used {} != {used0}",
            heap::usage().0
        );
    }
    for align in [8usize, 64, 4096, 65536] {
        let layout = Layout::from_size_align(100, align).map_err(|e| alloc::format!("{e}"))?;
        // SAFETY: valid non-zero layout; freed with the same layout below.
        let p = unsafe { heap::HEAP.alloc(layout) };
        check!(
            !p.is_null() && (p as usize).is_multiple_of(align),
            "aligned alloc {align} gave {p:p}"
        );
        // SAFETY: `p` came from this allocator with `layout`.
        unsafe { heap::HEAP.dealloc(p, layout) };
    }
    println!("heap test: 1800 blocks in 3 free patterns and 4 alignments ok (heap {size} bytes)");

    // Exhaustion: a request larger than the whole heap fails, is reported, and the heap
    // keeps working afterwards.
    let failures0 = heap::failures();
    let huge = Layout::from_size_align(size * 2, 8).map_err(|e| alloc::format!("{e}"))?;
    // SAFETY: valid layout; a null result is the expected outcome and is not used.
    let p = unsafe { heap::HEAP.alloc(huge) };
    check!(p.is_null(), "allocation of twice the heap succeeded");
    check!(heap::failures() == failures0 + 1, "failure not counted");
    // Fill the heap with 64 KiB blocks until it refuses, then free everything.
    let mut hog: Vec<Vec<u8>> = Vec::with_capacity(size / 65536 + 16);
    let block = Layout::from_size_align(65536, 8).map_err(|e| alloc::format!("{e}"))?;
    loop {
        // SAFETY: valid layout; non-null results are freed below with the same layout.
        let p = unsafe { heap::HEAP.alloc(block) };
        if p.is_null() {
            break;
        }
        // SAFETY: `p` is a fresh 64 KiB block; we record it for freeing.
        hog.push(unsafe { Vec::from_raw_parts(p, 0, 65536) });
        check!(
            hog.len() <= size / 65536 + 1,
            "heap handed out more than its size"
        );
    }
    let got = hog.len();
    drop(hog);
    check!(
        heap::usage().0 == used0,
        "heap not restored after exhaustion"
    );
    let v: Vec<u64> = (0..1000).collect();
    check!(
        v.iter().sum::<u64>() == 499_500,
        "heap unusable after exhaustion"
    );
    println!("heap test: out of memory reported after {got} x 64 KiB blocks; heap usable again");
    Ok(())
}

fn breakpoint() -> Result<(), String> {
    let before = arch::idt::BREAKPOINTS.load(core::sync::atomic::Ordering::SeqCst);
    // SAFETY: int3 traps to our breakpoint handler, which logs and returns.
    unsafe { core::arch::asm!("int3") };
    let after = arch::idt::BREAKPOINTS.load(core::sync::atomic::Ordering::SeqCst);
    check!(
        after == before + 1,
        "breakpoint handler ran {} times",
        after - before
    );
    println!("breakpoint test: int3 returned");
    Ok(())
}

fn pagefault() -> Result<(), String> {
    let addr = 0x0dea_dbee_f000_u64 as *const u64;
    // SAFETY: deliberately reads an unmapped address; the page-fault handler reports
    // it and ends the run, so the value is never used.
    let v = unsafe { core::ptr::read_volatile(addr) };
    Err(alloc::format!(
        "read of unmapped {addr:p} returned {v:#x} instead of faulting"
    ))
}

// Unbounded on purpose: the test exists to overflow the stack into its guard page.
#[allow(unconditional_recursion)]
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let pad = [depth; 64];
    core::hint::black_box(&pad);
    core::hint::black_box(recurse(depth + 1)) + pad[3]
}

fn stackoverflow() -> Result<(), String> {
    let (bottom, top) = arch::paging::boot_stack();
    println!(
        "stackoverflow test: recursing on the boot stack {bottom:#x}..{top:#x}, guard page {:#x}",
        arch::paging::guard_page()
    );
    let r = recurse(0);
    Err(alloc::format!(
        "recursion returned {r} instead of overflowing"
    ))
}
