//! The kernel's boot image: its ELF without the sections nothing loads.
//!
//! The kernel is built with debug information (about 38 MB, for `addr2line` and
//! `tools/profile-guest.py`), but a loader needs only the ELF header, the program
//! headers and the bytes the segments name: about 4 MB. QEMU's `-kernel` took 4–5 ms
//! longer to reach the kernel's ready line with the full file (the same kernel, debug
//! sections stripped or not, alternating runs), and a PXE boot moves the file over
//! TFTP.
//! [`boot_image`] keeps the file up to the end of the last segment and drops the
//! section header table (`e_shoff`, `e_shnum`, `e_shstrndx` zero: "no sections"),
//! so every byte a loader reads is unchanged.

use anyhow::{Result, bail};

const EHDR_BYTES: usize = 64;
const PHDR_BYTES: usize = 56;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// `elf` (a little-endian ELF64 executable) cut after the last byte any program
/// header names, without its section header table. Errors name what is malformed.
pub fn boot_image(elf: &[u8]) -> Result<Vec<u8>> {
    if elf.len() < EHDR_BYTES {
        bail!(
            "not an ELF image: {} bytes, a header is {EHDR_BYTES}",
            elf.len()
        );
    }
    if elf[..4] != [0x7f, b'E', b'L', b'F'] {
        bail!("not an ELF image: bad magic {:02x?}", &elf[..4]);
    }
    if elf[4] != 2 || elf[5] != 1 {
        bail!(
            "not a little-endian ELF64 image (class {}, data {})",
            elf[4],
            elf[5]
        );
    }
    let phoff = u64_at(elf, 0x20);
    let phentsize = u16_at(elf, 0x36) as usize;
    let phnum = u16_at(elf, 0x38) as u64;
    if phnum == 0 {
        bail!("the ELF image has no program headers");
    }
    if phentsize != PHDR_BYTES {
        bail!("program header entries of {phentsize} bytes (ELF64 has {PHDR_BYTES})");
    }
    let table_end = phoff
        .checked_add(phnum * PHDR_BYTES as u64)
        .filter(|&e| e <= elf.len() as u64)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the program header table ({phnum} at {phoff:#x}) runs past the file's {} bytes",
                elf.len()
            )
        })?;
    let mut end = table_end.max(EHDR_BYTES as u64);
    for i in 0..phnum {
        let h = (phoff + i * PHDR_BYTES as u64) as usize;
        let (offset, filesz) = (u64_at(elf, h + 8), u64_at(elf, h + 32));
        let seg_end = offset
            .checked_add(filesz)
            .filter(|&e| e <= elf.len() as u64)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "program header {i}: {filesz} bytes at {offset:#x} run past the file's {} bytes",
                    elf.len()
                )
            })?;
        end = end.max(seg_end);
    }
    let mut out = elf[..end as usize].to_vec();
    out[0x28..0x30].fill(0); // e_shoff
    out[0x3c..0x3e].fill(0); // e_shnum
    out[0x3e..0x40].fill(0); // e_shstrndx
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ELF64 with two program headers (a load segment and a note inside it),
    /// followed by 1000 bytes of "debug sections" and a section header table.
    fn sample() -> (Vec<u8>, usize) {
        let mut b = vec![0u8; EHDR_BYTES];
        b[..4].copy_from_slice(&[0x7f, b'E', b'L', b'F']);
        b[4] = 2;
        b[5] = 1;
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
        let seg_off = 64 + 2 * 56;
        let phdr = |b: &mut Vec<u8>, ty: u32, off: u64, size: u64| {
            let mut h = vec![0u8; 56];
            h[..4].copy_from_slice(&ty.to_le_bytes());
            h[8..16].copy_from_slice(&off.to_le_bytes());
            h[32..40].copy_from_slice(&size.to_le_bytes());
            h[40..48].copy_from_slice(&size.to_le_bytes());
            b.extend_from_slice(&h);
        };
        phdr(&mut b, 1, seg_off as u64, 300);
        phdr(&mut b, 4, seg_off as u64 + 10, 20);
        b.extend((0..300).map(|i| i as u8));
        let end = b.len();
        b.extend(std::iter::repeat_n(0xdb, 1000));
        let shoff = b.len() as u64;
        b.extend(std::iter::repeat_n(0x5e, 64 * 3));
        b[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        b[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        b[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        b[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
        (b, end)
    }

    #[test]
    fn the_boot_image_keeps_every_loaded_byte_and_drops_the_sections() {
        let (elf, end) = sample();
        let out = boot_image(&elf).unwrap();
        assert_eq!(out.len(), end);
        // Header except the section fields, program headers, segment bytes: unchanged.
        assert_eq!(out[..0x28], elf[..0x28]);
        assert_eq!(out[0x30..0x3c], elf[0x30..0x3c]);
        assert_eq!(out[0x40..], elf[0x40..end]);
        assert_eq!(u64_at(&out, 0x28), 0);
        assert_eq!((u16_at(&out, 0x3c), u16_at(&out, 0x3e)), (0, 0));
        // Stripping twice changes nothing.
        assert_eq!(boot_image(&out).unwrap(), out);
    }

    #[test]
    fn malformed_images_are_refused_with_what_is_wrong() {
        let (elf, end) = sample();
        let err = |b: &[u8]| boot_image(b).unwrap_err().to_string();
        // The error for `elf` with byte `at` set to `v`.
        let with = |at: usize, v: u8| {
            let mut m = elf.clone();
            m[at] = v;
            err(&m)
        };
        assert!(err(&elf[..10]).contains("a header is 64"));
        assert!(with(1, b'X').contains("bad magic"));
        assert!(with(4, 1).contains("ELF64"));
        assert!(with(0x38, 0).contains("no program headers"));
        assert!(with(0x36, 32).contains("entries of 32 bytes"));
        assert!(with(0x38, 200).contains("runs past the file"));
        // A segment past the end of the file.
        assert!(err(&elf[..end - 1]).contains("program header 0"));
    }
}
