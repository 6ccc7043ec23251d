//! Runtime symbols the precompiled host-triple `core`/`alloc` expect from libc and
//! the unwinder.
//!
//! The memory routines move 32 bytes per loop iteration through four general
//! registers, then 8, then single bytes, in inline assembly (so the compiler cannot
//! turn the loops back into calls to themselves). They used `rep movsb`/`rep stosb`/
//! `repe cmpsb`, which QEMU's TCG runs one byte per translated-block iteration: a
//! 2.5 MiB memset of the transport's socket buffers took milliseconds of boot, and
//! every packet copy paid per byte. `tests/tests/kernel.rs` runs `test=mem`, which
//! checks every routine against a byte-at-a-time reference over lengths 0..=200,
//! every alignment 0..8 and overlapping moves both ways.

use core::arch::asm;

/// Copies `n` bytes forward from `src` to `dest`: 32-byte blocks (all four loads of a
/// block before its stores), then 8-byte words, then bytes. Forward order is also a
/// correct `memmove` when `dest` is below `src`.
///
/// # Safety
/// `dest` and `src` valid for `n` bytes; if they overlap, `dest <= src`.
unsafe fn copy_forward(dest: *mut u8, src: *const u8, n: usize) {
    // SAFETY: the caller guarantees both ranges; every access is inside them (the
    // loops run while at least the accessed width remains).
    unsafe {
        asm!(
            "cmp {n}, 32",
            "jb 3f",
            "2:",
            "mov {a}, qword ptr [{s}]",
            "mov {b}, qword ptr [{s} + 8]",
            "mov {c}, qword ptr [{s} + 16]",
            "mov {d}, qword ptr [{s} + 24]",
            "mov qword ptr [{t}], {a}",
            "mov qword ptr [{t} + 8], {b}",
            "mov qword ptr [{t} + 16], {c}",
            "mov qword ptr [{t} + 24], {d}",
            "add {s}, 32",
            "add {t}, 32",
            "sub {n}, 32",
            "cmp {n}, 32",
            "jae 2b",
            "3:",
            "cmp {n}, 8",
            "jb 5f",
            "4:",
            "mov {a}, qword ptr [{s}]",
            "mov qword ptr [{t}], {a}",
            "add {s}, 8",
            "add {t}, 8",
            "sub {n}, 8",
            "cmp {n}, 8",
            "jae 4b",
            "5:",
            "test {n}, {n}",
            "jz 7f",
            "6:",
            "mov {a:l}, byte ptr [{s}]",
            "mov byte ptr [{t}], {a:l}",
            "add {s}, 1",
            "add {t}, 1",
            "sub {n}, 1",
            "jnz 6b",
            "7:",
            n = inout(reg) n => _,
            s = inout(reg) src => _,
            t = inout(reg) dest => _,
            a = out(reg) _,
            b = out(reg) _,
            c = out(reg) _,
            d = out(reg) _,
            options(nostack),
        );
    }
}

/// Copies `n` bytes backward (from the last byte down), in the same block sizes.
///
/// # Safety
/// `dest` and `src` valid for `n` bytes (they may overlap with `dest` above `src`).
unsafe fn copy_backward(dest: *mut u8, src: *const u8, n: usize) {
    // SAFETY: the pointers start one past each range's end and move down by at most
    // what remains, so every access is inside the ranges; within a block all loads
    // come before the stores, so an overlap with `dest` above `src` reads each source
    // byte before it is overwritten.
    unsafe {
        asm!(
            "add {s}, {n}",
            "add {t}, {n}",
            "cmp {n}, 32",
            "jb 3f",
            "2:",
            "sub {s}, 32",
            "sub {t}, 32",
            "mov {a}, qword ptr [{s}]",
            "mov {b}, qword ptr [{s} + 8]",
            "mov {c}, qword ptr [{s} + 16]",
            "mov {d}, qword ptr [{s} + 24]",
            "mov qword ptr [{t}], {a}",
            "mov qword ptr [{t} + 8], {b}",
            "mov qword ptr [{t} + 16], {c}",
            "mov qword ptr [{t} + 24], {d}",
            "sub {n}, 32",
            "cmp {n}, 32",
            "jae 2b",
            "3:",
            "cmp {n}, 8",
            "jb 5f",
            "4:",
            "sub {s}, 8",
            "sub {t}, 8",
            "mov {a}, qword ptr [{s}]",
            "mov qword ptr [{t}], {a}",
            "sub {n}, 8",
            "cmp {n}, 8",
            "jae 4b",
            "5:",
            "test {n}, {n}",
            "jz 7f",
            "6:",
            "sub {s}, 1",
            "sub {t}, 1",
            "mov {a:l}, byte ptr [{s}]",
            "mov byte ptr [{t}], {a:l}",
            "sub {n}, 1",
            "jnz 6b",
            "7:",
            n = inout(reg) n => _,
            s = inout(reg) src => _,
            t = inout(reg) dest => _,
            a = out(reg) _,
            b = out(reg) _,
            c = out(reg) _,
            d = out(reg) _,
            options(nostack),
        );
    }
}

/// # Safety
/// Standard `memcpy` contract: `dest` and `src` valid for `n` bytes, not overlapping.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges are valid and disjoint.
    unsafe { copy_forward(dest, src, n) };
    dest
}

/// # Safety
/// Standard `memmove` contract: `dest` and `src` valid for `n` bytes; may overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize) <= (src as usize) || (dest as usize) >= (src as usize).wrapping_add(n) {
        // SAFETY: forward copy is correct when dest is below src or the ranges are disjoint.
        unsafe { copy_forward(dest, src, n) };
    } else {
        // SAFETY: overlapping with dest above src: copy from the end down.
        unsafe { copy_backward(dest, src, n) };
    }
    dest
}

/// # Safety
/// Standard `memset` contract: `dest` valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    let pattern = u64::from(c as u8) * 0x0101_0101_0101_0101;
    // SAFETY: the caller guarantees `dest` is valid for `n` bytes; every store is
    // inside it (the loops run while at least the stored width remains).
    unsafe {
        asm!(
            "cmp {n}, 32",
            "jb 3f",
            "2:",
            "mov qword ptr [{t}], {p}",
            "mov qword ptr [{t} + 8], {p}",
            "mov qword ptr [{t} + 16], {p}",
            "mov qword ptr [{t} + 24], {p}",
            "add {t}, 32",
            "sub {n}, 32",
            "cmp {n}, 32",
            "jae 2b",
            "3:",
            "cmp {n}, 8",
            "jb 5f",
            "4:",
            "mov qword ptr [{t}], {p}",
            "add {t}, 8",
            "sub {n}, 8",
            "cmp {n}, 8",
            "jae 4b",
            "5:",
            "test {n}, {n}",
            "jz 7f",
            "6:",
            "mov byte ptr [{t}], {p:l}",
            "add {t}, 1",
            "sub {n}, 1",
            "jnz 6b",
            "7:",
            n = inout(reg) n => _,
            t = inout(reg) dest => _,
            p = in(reg) pattern,
            options(nostack),
        );
    }
    dest
}

/// The offset of the first 8-byte word at which `a` and `b` differ, or the offset of
/// the tail (fewer than 8 bytes left) if every whole word is equal.
///
/// # Safety
/// `a` and `b` valid for `n` bytes.
unsafe fn first_differing_word(a: *const u8, b: *const u8, n: usize) -> usize {
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n, so both 8-byte reads are inside the ranges.
        let (x, y) = unsafe {
            (
                (a.add(i) as *const u64).read_unaligned(),
                (b.add(i) as *const u64).read_unaligned(),
            )
        };
        if x != y {
            return i;
        }
        i += 8;
    }
    i
}

/// # Safety
/// Standard `memcmp` contract: `a` and `b` valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the caller guarantees both ranges.
    let mut i = unsafe { first_differing_word(a, b, n) };
    while i < n {
        // SAFETY: i < n.
        let (x, y) = unsafe { (a.add(i).read(), b.add(i).read()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// # Safety
/// Standard `bcmp` contract: `a` and `b` valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // Not `memcmp(..) != 0`: LLVM rewrites exactly that into a call to `bcmp`, which
    // here would be this function calling itself (it compiled to a trap).
    // SAFETY: the caller guarantees both ranges.
    let mut i = unsafe { first_differing_word(a, b, n) };
    while i < n {
        // SAFETY: i < n.
        if unsafe { a.add(i).read() != b.add(i).read() } {
            return 1;
        }
        i += 1;
    }
    0
}

/// Never called: the kernel is built with `panic = "abort"`.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}

/// Never called: the kernel is built with `panic = "abort"`.
#[unsafe(no_mangle)]
pub extern "C" fn _Unwind_Resume() -> ! {
    crate::arch::halt_forever()
}
