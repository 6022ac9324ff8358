//! CBOR (RFC 8949) for the three CBOR formats: a pull reader that borrows strings from the input
//! and never allocates from a declared length before the bytes are there, and a writer.
//! ciborium-ll decodes item headers (half, single and double floats included).

use std::borrow::Cow;

use ciborium_ll::Header;

use super::value::{Num, Raw};
use super::{Format, FormatError, Limits, invalid, malformed};

/// CBOR tag 1: epoch-based date/time.
pub(crate) const TAG_EPOCH_TIME: u64 = 1;

#[derive(Debug)]
pub(crate) struct Reader<'a> {
    body: &'a [u8],
    pos: usize,
    format: Format,
    limits: Limits,
}

/// A container being skipped.
#[derive(Debug, Clone, Copy)]
enum Open {
    /// Definite length: items still expected (a map counts keys and values).
    Items(u128),
    /// Indefinite-length array or map (a map must not end after a key).
    Indefinite { map: bool, odd: bool },
}

impl<'a> Reader<'a> {
    pub(crate) fn new(body: &'a [u8], format: Format, limits: Limits) -> Reader<'a> {
        Reader {
            body,
            pos: 0,
            format,
            limits,
        }
    }

    pub(crate) fn malformed(&self, what: &str) -> FormatError {
        malformed(self.format, format!("{what} at byte {}", self.pos))
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.body.len()
    }

    pub(crate) fn header(&mut self) -> Result<Header, FormatError> {
        let rest = self.body.get(self.pos..).unwrap_or_default();
        let mut decoder = ciborium_ll::Decoder::from(rest);
        match decoder.pull() {
            Ok(h) => {
                self.pos += decoder.offset();
                Ok(h)
            }
            Err(ciborium_ll::Error::Io(_)) => Err(self.malformed("unexpected end of input")),
            Err(ciborium_ll::Error::Syntax(_)) => Err(self.malformed("invalid CBOR item")),
        }
    }

    /// Fails unless the whole input has been read.
    pub(crate) fn finish(&self) -> Result<(), FormatError> {
        if self.at_end() {
            Ok(())
        } else {
            Err(self.malformed("trailing bytes"))
        }
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], FormatError> {
        let bytes = self
            .pos
            .checked_add(len)
            .and_then(|end| self.body.get(self.pos..end))
            .ok_or_else(|| self.malformed("a string runs past the end of input"))?;
        self.pos += len;
        Ok(bytes)
    }

    /// A text string's contents after its header's length (`None`: indefinite, in chunks).
    pub(crate) fn text(&mut self, len: Option<usize>) -> Result<Cow<'a, str>, FormatError> {
        let utf8 =
            |r: &Self, b| std::str::from_utf8(b).map_err(|_| r.malformed("text is not UTF-8"));
        if let Some(len) = len {
            self.value_len(len)?;
            let bytes = self.take(len)?;
            return utf8(self, bytes).map(Cow::Borrowed);
        }
        let mut text = String::new();
        loop {
            match self.header()? {
                Header::Break => return Ok(Cow::Owned(text)),
                Header::Text(Some(len)) => {
                    self.value_len(text.len().saturating_add(len))?;
                    let bytes = self.take(len)?;
                    text.push_str(utf8(self, bytes)?);
                }
                _ => return Err(self.malformed("a bad chunk in an indefinite-length text")),
            }
        }
    }

    /// A byte string's contents after its header's length.
    pub(crate) fn bytes(&mut self, len: Option<usize>) -> Result<Cow<'a, [u8]>, FormatError> {
        if let Some(len) = len {
            self.value_len(len)?;
            return self.take(len).map(Cow::Borrowed);
        }
        let mut bytes = Vec::new();
        loop {
            match self.header()? {
                Header::Break => return Ok(Cow::Owned(bytes)),
                Header::Bytes(Some(len)) => {
                    self.value_len(bytes.len().saturating_add(len))?;
                    bytes.extend_from_slice(self.take(len)?);
                }
                _ => return Err(self.malformed("a bad chunk in an indefinite-length byte string")),
            }
        }
    }

    fn value_len(&self, len: usize) -> Result<(), FormatError> {
        if len > self.limits.max_value_len {
            return Err(FormatError::TooLarge("a value's length"));
        }
        Ok(())
    }

    /// Skips the item that starts with `first`, iteratively, nesting at most `max_depth`.
    pub(crate) fn skip(&mut self, first: Header) -> Result<(), FormatError> {
        let mut open: Vec<Open> = Vec::new();
        let mut header = first;
        loop {
            let done = match header {
                Header::Tag(_) => {
                    // A tag and its item are one item.
                    header = self.header()?;
                    if matches!(header, Header::Break) {
                        return Err(self.malformed("a tag without content"));
                    }
                    continue;
                }
                Header::Bytes(len) => self.bytes(len).map(|_| true)?,
                Header::Text(len) => self.text(len).map(|_| true)?,
                Header::Array(Some(0)) | Header::Map(Some(0)) => true,
                Header::Array(len) | Header::Map(len) => {
                    if open.len() >= self.limits.max_depth {
                        return Err(FormatError::TooLarge("CBOR nesting"));
                    }
                    let map = matches!(header, Header::Map(_));
                    open.push(match len {
                        Some(n) => Open::Items(n as u128 * if map { 2 } else { 1 }),
                        None => Open::Indefinite { map, odd: false },
                    });
                    false
                }
                Header::Break => match open.pop() {
                    Some(Open::Indefinite { odd: false, .. }) => true,
                    Some(Open::Indefinite { odd: true, .. }) => {
                        return Err(self.malformed("a map key without a value"));
                    }
                    _ => return Err(self.malformed("an unexpected break")),
                },
                Header::Positive(_) | Header::Negative(_) | Header::Float(_) => true,
                Header::Simple(_) => true,
            };
            if done {
                loop {
                    match open.last_mut() {
                        None => return Ok(()),
                        Some(Open::Items(left)) => {
                            *left -= 1;
                            if *left == 0 {
                                open.pop();
                                continue;
                            }
                            break;
                        }
                        Some(Open::Indefinite { map, odd }) => {
                            if *map {
                                *odd = !*odd;
                            }
                            break;
                        }
                    }
                }
            }
            header = self.header()?;
        }
    }

    /// A value that starts with `first`: a number, boolean, text, bytes or tag-1 time.
    pub(crate) fn value(&mut self, first: Header) -> Result<Raw<'a>, FormatError> {
        Ok(match first {
            Header::Positive(_) | Header::Negative(_) | Header::Float(_) => {
                Raw::Num(self.number(first)?)
            }
            Header::Simple(ciborium_ll::simple::FALSE) => Raw::Bool(false),
            Header::Simple(ciborium_ll::simple::TRUE) => Raw::Bool(true),
            Header::Simple(ciborium_ll::simple::NULL | ciborium_ll::simple::UNDEFINED) => {
                return Err(invalid(
                    "a null value (deletion in composite writes) is not supported",
                ));
            }
            Header::Text(len) => Raw::Text(self.text(len)?),
            Header::Bytes(len) => Raw::Bytes(self.bytes(len)?),
            Header::Tag(TAG_EPOCH_TIME) => {
                let h = self.header()?;
                Raw::Time(self.number(h)?)
            }
            Header::Tag(_) => return Err(invalid("a CBOR tag other than 1 (time) for a value")),
            Header::Array(_) | Header::Map(_) => {
                return Err(invalid("an array or map where a value is expected"));
            }
            Header::Simple(_) => return Err(invalid("an unassigned CBOR simple value")),
            Header::Break => return Err(self.malformed("an unexpected break")),
        })
    }

    pub(crate) fn number(&mut self, h: Header) -> Result<Num, FormatError> {
        match h {
            Header::Positive(u) => Ok(Num::Uint(u)),
            // -1 - n: below i64::MIN it no longer fits any LwM2M integer type.
            Header::Negative(n) => i64::try_from(n)
                .map(|n| Num::Int(-1 - n))
                .map_err(|_| invalid("a negative integer below -2^63")),
            Header::Float(f) => Ok(Num::Float(f)),
            Header::Break => Err(self.malformed("an unexpected break")),
            _ => Err(invalid("a number is expected")),
        }
    }
}

/// Writes CBOR into a `Vec`.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// A major type with its argument in the shortest form (RFC 8949 §4.2.1).
    fn head(&mut self, major: u8, arg: u64) {
        let m = major << 5;
        match arg {
            0..=23 => self.buf.push(m | arg as u8),
            24..=0xff => self.buf.extend_from_slice(&[m | 24, arg as u8]),
            0x100..=0xffff => {
                self.buf.push(m | 25);
                self.buf.extend_from_slice(&(arg as u16).to_be_bytes());
            }
            0x1_0000..=0xffff_ffff => {
                self.buf.push(m | 26);
                self.buf.extend_from_slice(&(arg as u32).to_be_bytes());
            }
            _ => {
                self.buf.push(m | 27);
                self.buf.extend_from_slice(&arg.to_be_bytes());
            }
        }
    }

    pub(crate) fn uint(&mut self, u: u64) {
        self.head(0, u);
    }

    pub(crate) fn int(&mut self, i: i64) {
        if i < 0 {
            self.head(1, !(i as u64));
        } else {
            self.head(0, i as u64);
        }
    }

    /// A float in the shortest width that holds it exactly (half, single, double).
    pub(crate) fn float(&mut self, f: f64) {
        let single = f as f32;
        if let Some(half) = f16_bits(f) {
            self.buf.push(0xf9);
            self.buf.extend_from_slice(&half.to_be_bytes());
        } else if f64::from(single).to_bits() == f.to_bits() {
            self.buf.push(0xfa);
            self.buf.extend_from_slice(&single.to_be_bytes());
        } else {
            self.buf.push(0xfb);
            self.buf.extend_from_slice(&f.to_be_bytes());
        }
    }

    pub(crate) fn bool(&mut self, b: bool) {
        self.buf.push(if b { 0xf5 } else { 0xf4 });
    }

    pub(crate) fn text(&mut self, s: &str) {
        self.head(3, s.len() as u64);
        self.buf.extend_from_slice(s.as_bytes());
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.head(2, b.len() as u64);
        self.buf.extend_from_slice(b);
    }

    pub(crate) fn array(&mut self, n: usize) {
        self.head(4, n as u64);
    }

    pub(crate) fn map(&mut self, n: usize) {
        self.head(5, n as u64);
    }

    pub(crate) fn tag(&mut self, t: u64) {
        self.head(6, t);
    }

    /// A resource value as the CBOR formats write it: numbers, booleans, text, bytes, a time
    /// as tag 1 on an integer, an object link as text `"oid:iid"`.
    pub(crate) fn value(&mut self, v: &crate::node::Value) {
        use crate::node::Value;
        match v {
            Value::Integer(i) => self.int(*i),
            Value::Unsigned(u) => self.uint(*u),
            Value::Float(f) => self.float(*f),
            Value::Boolean(b) => self.bool(*b),
            Value::String(s) | Value::Corelnk(s) => self.text(s),
            Value::Opaque(b) => self.bytes(b),
            Value::Time(t) => {
                self.tag(TAG_EPOCH_TIME);
                self.int(*t);
            }
            Value::Objlnk(o, i) => self.text(&super::value::objlnk_text(*o, *i)),
        }
    }
}

/// The IEEE half-precision bits of `f` if it holds `f` exactly (finite values only).
fn f16_bits(f: f64) -> Option<u16> {
    let bits = f.to_bits();
    let sign = ((bits >> 48) & 0x8000) as u16;
    if f == 0.0 {
        return Some(sign);
    }
    if !f.is_finite() {
        return None;
    }
    let exp = ((bits >> 52) & 0x7ff) as i32 - 1023;
    let mant = bits & ((1 << 52) - 1);
    if (-14..=15).contains(&exp) {
        // Normal half: 10 mantissa bits, the other 42 must be zero.
        (mant & ((1 << 42) - 1) == 0)
            .then(|| sign | (((exp + 15) as u16) << 10) | (mant >> 42) as u16)
    } else if (-24..-14).contains(&exp) {
        // Subnormal half: f = m * 2^-24 with m < 1024.
        let full = (1u64 << 52) | mant;
        let shift = (28 - exp) as u32;
        (full & ((1 << shift) - 1) == 0).then(|| sign | (full >> shift) as u16)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(b: &[u8]) -> Reader<'_> {
        Reader::new(b, Format::Cbor, Limits::default())
    }

    #[test]
    fn floats_are_written_in_the_shortest_exact_width() {
        let mut w = Writer::default();
        w.float(1.5);
        w.float(1.0e10);
        w.float(0.1);
        let b = w.into_bytes();
        assert_eq!(&b[..3], &[0xf9, 0x3e, 0x00]);
        for x in [
            0.0,
            -0.0,
            1.0,
            65504.0,
            -2.0,
            5.960464477539063e-8,
            6.103515625e-5,
            0.5,
        ] {
            let mut w = Writer::default();
            w.float(x);
            let b = w.into_bytes();
            assert_eq!(b.len(), 3, "{x} fits a half");
            let mut r = reader(&b);
            assert_eq!(r.header().unwrap(), Header::Float(x));
        }
        for x in [65520.0, 1e-8, 1.0009765625 + 1e-7, 3.0e-8] {
            let mut w = Writer::default();
            w.float(x);
            let b = w.into_bytes();
            assert!(b.len() > 3, "{x} does not fit a half");
            let mut r = reader(&b);
            assert_eq!(r.header().unwrap(), Header::Float(x));
        }
        assert_eq!(b[3], 0xfa);
        assert_eq!(b[8], 0xfb);
    }

    #[test]
    fn declared_lengths_beyond_the_input_are_malformed_not_allocated() {
        // A byte string claiming 2^63 bytes, then one claiming 300 KiB.
        let mut r = reader(&[0x5b, 0x80, 0, 0, 0, 0, 0, 0, 0]);
        let h = r.header().unwrap();
        assert!(matches!(r.value(h), Err(FormatError::TooLarge(_))));
        let mut r = reader(&[0x5a, 0, 0, 0x10, 0]);
        let h = r.header().unwrap();
        assert!(matches!(r.value(h), Err(FormatError::Malformed { .. })));
    }

    #[test]
    fn skipping_bounds_nesting_and_rejects_broken_containers() {
        let mut deep = vec![0x81; 100];
        deep.push(0);
        let mut r = reader(&deep);
        let h = r.header().unwrap();
        assert_eq!(r.skip(h), Err(FormatError::TooLarge("CBOR nesting")));
        for bad in [&[0xbf, 0x01, 0xff][..], &[0xff], &[0x9f, 0xc1, 0xff]] {
            let mut r = reader(bad);
            let h = r.header().unwrap();
            assert!(r.skip(h).is_err(), "{bad:x?}");
        }
        let mut r = reader(&[0xbf, 0x01, 0x9f, 0x02, 0xff, 0xff]);
        let h = r.header().unwrap();
        assert_eq!(r.skip(h), Ok(()));
        assert!(r.at_end());
    }
}
