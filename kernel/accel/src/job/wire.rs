//! Little-endian reader and writer shared by the job decoders. The reader never
//! panics: every read checks the remaining length and names what was missing.

use super::{Angle, JobError};
use alloc::vec::Vec;

pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(crate) fn take<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], JobError> {
        let end = self.pos.checked_add(N).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(JobError::Truncated {
                what,
                offset: self.pos,
            });
        };
        let mut out = [0u8; N];
        out.copy_from_slice(&self.bytes[self.pos..end]);
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, JobError> {
        Ok(self.take::<1>(what)?[0])
    }
    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, JobError> {
        Ok(u16::from_le_bytes(self.take(what)?))
    }
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, JobError> {
        Ok(u32::from_le_bytes(self.take(what)?))
    }
    pub(crate) fn i32(&mut self, what: &'static str) -> Result<i32, JobError> {
        Ok(i32::from_le_bytes(self.take(what)?))
    }
    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, JobError> {
        Ok(u64::from_le_bytes(self.take(what)?))
    }
    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64, JobError> {
        Ok(i64::from_le_bytes(self.take(what)?))
    }

    pub(crate) fn angle(&mut self) -> Result<Angle, JobError> {
        let pn = self.i64("angle")?;
        let pd = self.u64("angle")?;
        let rn = self.i64("angle")?;
        let rd = self.u64("angle")?;
        Angle::from_raw(pn, pd, rn, rd)
    }

    /// Checks magic and version.
    pub(crate) fn header(&mut self, magic: [u8; 2]) -> Result<(), JobError> {
        let got = self.take::<2>("magic")?;
        if got != magic {
            return Err(JobError::BadMagic {
                expected: magic,
                got,
            });
        }
        let version = self.u8("version")?;
        if version != VERSION {
            return Err(JobError::UnsupportedVersion { version });
        }
        Ok(())
    }

    /// Fails unless `n` items of `item_bytes` each can still be read (so a
    /// decoder never allocates more than the input can fill).
    pub(crate) fn expect_items(
        &self,
        n: usize,
        item_bytes: usize,
        what: &'static str,
    ) -> Result<(), JobError> {
        match n.checked_mul(item_bytes) {
            Some(need) if need <= self.remaining() => Ok(()),
            _ => Err(JobError::Truncated {
                what,
                offset: self.pos,
            }),
        }
    }

    pub(crate) fn finish(self) -> Result<(), JobError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(JobError::TrailingBytes { count }),
        }
    }
}

/// The one encoding version of every job message.
pub(crate) const VERSION: u8 = 1;

pub(crate) fn header(out: &mut Vec<u8>, magic: [u8; 2]) {
    out.extend_from_slice(&magic);
    out.push(VERSION);
}

pub(crate) fn angle(out: &mut Vec<u8>, a: &Angle) {
    out.extend_from_slice(&a.pi_num().to_le_bytes());
    out.extend_from_slice(&a.pi_den().to_le_bytes());
    out.extend_from_slice(&a.rad_num().to_le_bytes());
    out.extend_from_slice(&a.rad_den().to_le_bytes());
}
