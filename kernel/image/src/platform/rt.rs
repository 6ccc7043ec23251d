//! Runtime symbols the precompiled host-triple `core`/`alloc` expect from libc and
//! the unwinder. The memory routines use `rep movsb`/`rep stosb`/`repe cmpsb` in
//! inline assembly so the compiler cannot turn them back into calls to themselves.

use core::arch::asm;

/// # Safety
/// Standard `memcpy` contract: `dest` and `src` valid for `n` bytes, not overlapping.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges are valid and disjoint; DF is clear
    // (the ABI requires it on function entry).
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _, inout("rsi") src => _,
             options(nostack, preserves_flags));
    }
    dest
}

/// # Safety
/// Standard `memmove` contract: `dest` and `src` valid for `n` bytes; may overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize) <= (src as usize) || (dest as usize) >= (src as usize).wrapping_add(n) {
        // SAFETY: forward copy is correct when dest is below src or the ranges are disjoint.
        unsafe { memcpy(dest, src, n) };
    } else if n > 0 {
        // SAFETY: overlapping with dest above src: copy backwards from the last byte
        // with DF set, and clear DF again before returning as the ABI requires.
        unsafe {
            asm!("std", "rep movsb", "cld",
                 inout("rcx") n => _, inout("rdi") dest.add(n - 1) => _,
                 inout("rsi") src.add(n - 1) => _, options(nostack));
        }
    }
    dest
}

/// # Safety
/// Standard `memset` contract: `dest` valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees `dest` is valid for `n` bytes; DF is clear.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dest => _, in("al") c as u8,
             options(nostack, preserves_flags));
    }
    dest
}

/// # Safety
/// Standard `memcmp` contract: `a` and `b` valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    if n == 0 {
        return 0;
    }
    let (pa, pb): (*const u8, *const u8);
    let equal: u8;
    // SAFETY: both ranges are valid for `n` bytes; `repe cmpsb` stops after the first
    // differing byte (or after n bytes) leaving rsi/rdi one past it; DF is clear.
    unsafe {
        asm!("repe cmpsb", "sete {eq}", eq = out(reg_byte) equal,
             inout("rcx") n => _, inout("rsi") a => pa, inout("rdi") b => pb,
             options(nostack, readonly));
    }
    if equal != 0 {
        return 0;
    }
    // SAFETY: the instruction advanced both pointers past the differing byte, which
    // lies inside the ranges.
    let (x, y) = unsafe { (pa.sub(1).read(), pb.sub(1).read()) };
    i32::from(x) - i32::from(y)
}

/// # Safety
/// Standard `bcmp` contract: `a` and `b` valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    if n == 0 {
        return 0;
    }
    let last_equal: u8;
    // SAFETY: both ranges are valid for `n` bytes; DF is clear.
    unsafe {
        asm!("repe cmpsb", "sete {eq}", eq = out(reg_byte) last_equal,
             inout("rcx") n => _, inout("rsi") a => _, inout("rdi") b => _,
             options(nostack, readonly));
    }
    i32::from(last_equal == 0)
}

/// Never called: the kernel is built with `panic = "abort"`.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}

/// Never called: the kernel is built with `panic = "abort"`.
#[unsafe(no_mangle)]
pub extern "C" fn _Unwind_Resume() -> ! {
    crate::arch::halt_forever()
}
