//! Primitive fields: integers, variable byte integers, length-prefixed strings and binary data.
//!
//! [`Reader`] walks one packet body that has already been split off the read buffer as `Bytes`,
//! so strings and binary fields come out as zero-copy slices of it.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::{DecodeError, EncodeError, PacketId};

/// Largest value a variable byte integer can hold (four bytes of seven bits).
pub const MAX_VAR_INT: u32 = 268_435_455;

/// A cursor over one packet body.
#[derive(Debug)]
pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Self {
        Self { buf }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Fails with [`DecodeError::TrailingBytes`] unless every byte has been read.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        if self.buf.is_empty() {
            return Err(DecodeError::Truncated);
        }
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        if self.buf.len() < 2 {
            return Err(DecodeError::Truncated);
        }
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        if self.buf.len() < 4 {
            return Err(DecodeError::Truncated);
        }
        Ok(self.buf.get_u32())
    }

    pub(crate) fn packet_id(&mut self) -> Result<PacketId, DecodeError> {
        PacketId::new(self.u16()?).ok_or(DecodeError::ZeroPacketId)
    }

    /// A variable byte integer inside a packet (v5 property length, property id, subscription
    /// identifier): at most four bytes and minimally encoded [v5 MQTT-1.5.5-1].
    pub(crate) fn var_int(&mut self) -> Result<u32, DecodeError> {
        match decode_var_int(&self.buf) {
            Ok(Some((value, len))) => {
                if !is_minimal_var_int(&self.buf[..len]) {
                    return Err(DecodeError::MalformedVarInt);
                }
                self.buf.advance(len);
                Ok(value)
            }
            Ok(None) => Err(DecodeError::Truncated),
            Err(_) => Err(DecodeError::MalformedVarInt),
        }
    }

    /// `n` bytes as a zero-copy slice.
    pub(crate) fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        Ok(self.buf.split_to(n))
    }

    /// Everything not yet read.
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// A two-byte-length-prefixed binary field.
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = usize::from(self.u16()?);
        self.take(len)
    }

    /// A UTF-8 string: well-formed [MQTT-1.5.3-1] and free of U+0000 [MQTT-1.5.3-2].
    pub(crate) fn string(&mut self) -> Result<ByteString, DecodeError> {
        utf8(self.binary()?)
    }
}

/// Validates `bytes` as an MQTT UTF-8 string without copying it.
pub fn utf8(bytes: Bytes) -> Result<ByteString, DecodeError> {
    if memchr::memchr(0, &bytes).is_some() {
        return Err(DecodeError::NullCharacter);
    }
    // `std::str::from_utf8` rejects overlong forms and encoded surrogates, as 1.5.3 demands.
    ByteString::try_from(bytes).map_err(|_| DecodeError::InvalidUtf8)
}

/// Decodes a variable byte integer from the front of `buf`: `Ok(None)` when more bytes are
/// needed, otherwise the value and how many bytes it took. A fifth continuation byte is an error.
pub fn decode_var_int(buf: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for (i, &byte) in buf.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 4 {
        Err(DecodeError::MalformedRemainingLength)
    } else {
        Ok(None)
    }
}

/// Whether the encoded variable byte integer `encoded` (as delimited by [`decode_var_int`]) uses
/// the fewest bytes possible: a last byte of zero after a continuation byte only pads.
pub(crate) fn is_minimal_var_int(encoded: &[u8]) -> bool {
    encoded.len() <= 1 || encoded.last() != Some(&0)
}

/// How many bytes `value` takes as a variable byte integer.
pub const fn var_int_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

pub(crate) fn put_var_int(buf: &mut BytesMut, mut value: usize) -> Result<(), EncodeError> {
    if value > MAX_VAR_INT as usize {
        return Err(EncodeError::PacketTooLarge(value));
    }
    loop {
        let mut byte = (value & 0x7F) as u8;
        value >>= 7;
        if value > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if value == 0 {
            return Ok(());
        }
    }
}

pub(crate) fn put_binary(buf: &mut BytesMut, bytes: &[u8]) -> Result<(), EncodeError> {
    let len = u16::try_from(bytes.len()).map_err(|_| EncodeError::FieldTooLong(bytes.len()))?;
    buf.put_u16(len);
    buf.put_slice(bytes);
    Ok(())
}

/// Length of a length-prefixed field on the wire.
pub(crate) const fn field_len(bytes: &[u8]) -> usize {
    2 + bytes.len()
}
