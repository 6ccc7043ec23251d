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
