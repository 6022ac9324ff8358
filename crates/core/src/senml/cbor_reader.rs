//! A pull reader over CBOR input (RFC 8949), for SenML CBOR and plain CBOR alike.

use std::borrow::Cow;

use ciborium_ll::Header;

use super::record::Value;
use crate::decode::{ContentFormat, DecodeError};

/// Deepest CBOR nesting walked while skipping an ignored value. SenML has no nesting of its own,
/// so this only bounds the work an extension label can cause.
const MAX_CBOR_DEPTH: usize = 32;

/// CBOR tag for decimal fractions, which RFC 8428 §6 allows for numbers.
const TAG_DECIMAL_FRACTION: u64 = 4;

/// A container being skipped by [`CborReader::skip`].
#[derive(Debug, Clone, Copy)]
enum Open {
    /// Definite length: items still expected (a map counts keys and values).
    Items(usize),
    /// Indefinite-length array: ends at a break.
    IndefiniteArray,
    /// Indefinite-length map: ends at a break, which must not follow a lone key.
    IndefiniteMap { odd: bool },
}

/// Reads CBOR items straight from the input: ciborium-ll decodes each item header (including
/// half-precision floats), and string contents are borrowed from the slice. Nothing recurses.
#[derive(Debug)]
pub(crate) struct CborReader<'a> {
    body: &'a [u8],
    pos: usize,
    format: ContentFormat,
}

impl<'a> CborReader<'a> {
    pub(crate) fn new(body: &'a [u8], format: ContentFormat) -> Self {
        CborReader {
            body,
            pos: 0,
            format,
        }
    }

    pub(super) fn malformed(&self, what: &str) -> DecodeError {
        DecodeError::Malformed {
            format: self.format,
            detail: format!("{what} at byte {}", self.pos),
        }
    }

    pub(crate) fn header(&mut self) -> Result<Header, DecodeError> {
        let rest = self.body.get(self.pos..).unwrap_or_default();
        let mut decoder = ciborium_ll::Decoder::from(rest);
        match decoder.pull() {
            Ok(header) => {
                self.pos += decoder.offset();
                Ok(header)
            }
            Err(ciborium_ll::Error::Io(_)) => Err(self.malformed("unexpected end of input")),
            Err(ciborium_ll::Error::Syntax(_)) => Err(self.malformed("invalid CBOR item")),
        }
    }

    /// The next header after any tags (e.g. the self-described CBOR tag 55799).
    pub(crate) fn header_skipping_tags(&mut self) -> Result<Header, DecodeError> {
        loop {
            match self.header()? {
                Header::Tag(_) => continue,
                header => return Ok(header),
            }
        }
    }

    /// Fails unless the whole input has been read.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.pos < self.body.len() {
            return Err(self.malformed("trailing bytes"));
        }
        Ok(())
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        let bytes = self
            .pos
            .checked_add(len)
            .and_then(|end| self.body.get(self.pos..end))
            .ok_or_else(|| self.malformed("string runs past the end of input"))?;
        self.pos += len;
        Ok(bytes)
    }

    fn utf8(&self, bytes: &'a [u8]) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(bytes).map_err(|_| self.malformed("text string is not UTF-8"))
    }

    pub(crate) fn text(&mut self, len: Option<usize>) -> Result<Cow<'a, str>, DecodeError> {
        if let Some(len) = len {
            let bytes = self.take(len)?;
            return self.utf8(bytes).map(Cow::Borrowed);
        }
        // Indefinite length: definite-length text chunks, each valid UTF-8 (RFC 8949 §3.2.3).
        let mut text = String::new();
        loop {
            match self.header()? {
                Header::Break => return Ok(Cow::Owned(text)),
                Header::Text(Some(len)) => {
                    let bytes = self.take(len)?;
                    text.push_str(self.utf8(bytes)?);
                }
                _ => return Err(self.malformed("bad chunk in an indefinite-length text string")),
            }
        }
    }

    fn bytes(&mut self, len: Option<usize>) -> Result<Cow<'a, [u8]>, DecodeError> {
        if let Some(len) = len {
            return self.take(len).map(Cow::Borrowed);
        }
        let mut bytes = Vec::new();
        loop {
            match self.header()? {
                Header::Break => return Ok(Cow::Owned(bytes)),
                Header::Bytes(Some(len)) => bytes.extend_from_slice(self.take(len)?),
                _ => return Err(self.malformed("bad chunk in an indefinite-length byte string")),
            }
        }
    }

    /// Skips the item that starts with `first`, iteratively, up to [`MAX_CBOR_DEPTH`] levels.
    pub(super) fn skip(&mut self, first: Header) -> Result<(), DecodeError> {
        let mut open: Vec<Open> = Vec::new();
        // A tag and the item it tags are one item: a tag must be followed by an item, not a
        // break.
        let mut tagged = false;
        let mut header = first;
        loop {
            if tagged && matches!(header, Header::Break) {
                return Err(self.malformed("tag without content"));
            }
            tagged = false;
            let item_done = match header {
                Header::Tag(_) => {
                    tagged = true;
                    false
                }
                Header::Bytes(len) => {
                    self.bytes(len)?;
                    true
                }
                Header::Text(len) => {
                    self.text(len)?;
                    true
                }
                Header::Array(Some(0)) | Header::Map(Some(0)) => true,
                Header::Array(len) | Header::Map(len) => {
                    if open.len() >= MAX_CBOR_DEPTH {
                        return Err(self.malformed("nesting deeper than 32 levels"));
                    }
                    open.push(match (header, len) {
                        (Header::Map(_), Some(n)) => Open::Items(
                            n.checked_mul(2)
                                .ok_or_else(|| self.malformed("map too large"))?,
                        ),
                        (Header::Map(_), None) => Open::IndefiniteMap { odd: false },
                        (_, Some(n)) => Open::Items(n),
                        (_, None) => Open::IndefiniteArray,
                    });
                    false
                }
                Header::Break => match open.pop() {
                    Some(Open::IndefiniteArray | Open::IndefiniteMap { odd: false }) => true,
                    Some(Open::IndefiniteMap { odd: true }) => {
                        return Err(self.malformed("map key without a value"));
                    }
                    _ => return Err(self.malformed("unexpected break")),
                },
                Header::Positive(_) | Header::Negative(_) | Header::Float(_) => true,
                Header::Simple(_) => true,
            };
            if item_done {
                // Count the item in its container; a full container is an item of its parent.
                loop {
                    match open.last_mut() {
                        None => return Ok(()),
                        Some(Open::Items(left)) => {
                            *left = left.saturating_sub(1);
                            if *left == 0 {
                                open.pop();
                                continue;
                            }
                            break;
                        }
                        Some(Open::IndefiniteMap { odd }) => {
                            *odd = !*odd;
                            break;
                        }
                        Some(Open::IndefiniteArray) => break,
                    }
                }
            }
            header = self.header()?;
        }
    }

    /// Reads the value that starts with `first`. Containers and unknown tags are skipped and
    /// reported as such, so the label's type check can name what it found.
    pub(crate) fn value(&mut self, first: Header) -> Result<Value<'a>, DecodeError> {
        Ok(match first {
            Header::Positive(x) => Value::Uint(x),
            Header::Negative(x) => match i64::try_from(x) {
                Ok(x) => Value::Int(-1 - x),
                Err(_) => Value::Float(-1.0 - x as f64),
            },
            Header::Float(x) => Value::Float(x),
            Header::Simple(ciborium_ll::simple::FALSE) => Value::Bool(false),
            Header::Simple(ciborium_ll::simple::TRUE) => Value::Bool(true),
            Header::Simple(ciborium_ll::simple::NULL | ciborium_ll::simple::UNDEFINED) => {
                Value::Null
            }
            Header::Simple(_) => Value::Unsupported,
            Header::Text(len) => Value::Text(self.text(len)?),
            Header::Bytes(len) => Value::Bytes(self.bytes(len)?),
            Header::Array(_) | Header::Map(_) => {
                self.skip(first)?;
                Value::Nested
            }
            Header::Tag(TAG_DECIMAL_FRACTION) => self.decimal_fraction()?,
            Header::Tag(_) => {
                let tagged = self.header()?;
                self.skip(tagged)?;
                Value::Unsupported
            }
            Header::Break => return Err(self.malformed("unexpected break")),
        })
    }

    /// A decimal fraction (RFC 8949 §3.4.4): `[exponent, mantissa]`, value = mantissa × 10^exponent.
    fn decimal_fraction(&mut self) -> Result<Value<'a>, DecodeError> {
        let invalid = || {
            DecodeError::Invalid(
                "a decimal fraction (CBOR tag 4) must be [exponent, mantissa] with integer parts"
                    .into(),
            )
        };
        if !matches!(self.header()?, Header::Array(Some(2))) {
            return Err(invalid());
        }
        let exponent = cbor_integer(self.header()?).ok_or_else(invalid)?;
        let mantissa = cbor_integer(self.header()?).ok_or_else(invalid)?;
        // The decimal text is parsed with correct rounding; huge exponents give 0 or infinity,
        // and the label's check rejects the latter.
        let x: f64 = format!("{mantissa}e{exponent}")
            .parse()
            .map_err(|_| invalid())?;
        Ok(Value::Float(x))
    }
}

fn cbor_integer(header: Header) -> Option<i128> {
    match header {
        Header::Positive(x) => Some(i128::from(x)),
        Header::Negative(x) => Some(-1 - i128::from(x)),
        _ => None,
    }
}

/// For error messages.
pub(crate) fn header_kind(header: &Header) -> &'static str {
    match header {
        Header::Positive(_) | Header::Negative(_) => "an integer",
        Header::Float(_) => "a float",
        Header::Simple(_) => "a simple value",
        Header::Tag(_) => "a tag",
        Header::Break => "a break",
        Header::Bytes(_) => "a byte string",
        Header::Text(_) => "a text string",
        Header::Array(_) => "an array",
        Header::Map(_) => "a map",
    }
}

#[cfg(test)]
mod tests {
    use crate::decode::DecodeError;
    use crate::senml::test_support::{RFC_CBOR_EXAMPLE, cbor, hex};

    #[test]
    fn cbor_accepts_indefinite_lengths_and_decimal_fractions() {
        // [_ {_ 0: (_ "te", "mp"), 2: 4([-1, 236])}, {0: "b", 8: (_ h'01', h'02')}]
        let bytes = hex("9f bf 00 7f 62 74 65 62 6d 70 ff 02 c4 82 20 18 ec ff
             a2 00 61 62 08 5f 41 01 41 02 ff ff");
        let records = cbor(&bytes).expect("indefinite forms decode");
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].n, "temp");
        assert_eq!(records[0].v, Some(23.6));
        assert_eq!(records[1].vd.as_deref(), Some("AQI"));
    }

    #[test]
    fn cbor_truncation_and_garbage_are_malformed() {
        let bytes = hex(RFC_CBOR_EXAMPLE);
        for cut in [1, 2, 10, 50, bytes.len() - 1] {
            let err = cbor(&bytes[..cut]).expect_err("truncated");
            assert_eq!(err.reason(), "malformed", "cut at {cut}: {err}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(cbor(&trailing).expect_err("trailing").reason(), "malformed");
        // A text string claiming 2^63 bytes.
        let err = cbor(&hex("81 a1 00 7b 80 00 00 00 00 00 00 00")).expect_err("huge");
        assert_eq!(err.reason(), "malformed");
        // Reserved additional information 28.
        assert_eq!(
            cbor(&hex("1c")).expect_err("reserved").reason(),
            "malformed"
        );
        assert_eq!(cbor(&[]), Err(DecodeError::Empty));
        assert_eq!(cbor(&hex("80")), Err(DecodeError::Empty));
    }

    #[test]
    fn malformed_cbor_inside_an_ignored_label_is_still_malformed() {
        // [{0: "a", 2: 1, 99: [_ 1(<break>)]}]: a tag with nothing to tag.
        let err = cbor(&hex("81 a3 00 61 61 02 01 18 63 9f c1 ff")).expect_err("empty tag");
        assert_eq!(err.reason(), "malformed", "{err}");
        // [{0: "a", 2: 1, 99: {_ 1: 2, 3 <break>}}]: a key without a value.
        let err = cbor(&hex("81 a3 00 61 61 02 01 18 63 bf 01 02 03 ff")).expect_err("odd map");
        assert_eq!(err.reason(), "malformed", "{err}");
        // The well-formed versions of both are skipped.
        assert!(cbor(&hex("81 a3 00 61 61 02 01 18 63 9f c1 00 ff")).is_ok());
        assert!(cbor(&hex("81 a3 00 61 61 02 01 18 63 bf 01 02 03 04 ff")).is_ok());
        // A lone break where a pack should start.
        assert_eq!(cbor(&hex("ff")).expect_err("break").reason(), "malformed");
    }

    #[test]
    fn decimal_fractions_with_extreme_exponents_do_not_panic() {
        // [{0: "a", 2: 4([-18446744073709551616, 1])}] = 1e-18446744073709551616, which is 0.
        let tiny = cbor(&hex(
            "81 a2 00 61 61 02 c4 82 3b ff ff ff ff ff ff ff ff 01",
        ));
        assert_eq!(tiny.expect("underflows to zero")[0].v, Some(0.0));
        // [{0: "a", 2: 4([18446744073709551615, 1])}] overflows to infinity: rejected.
        let huge = cbor(&hex(
            "81 a2 00 61 61 02 c4 82 1b ff ff ff ff ff ff ff ff 01",
        ));
        assert_eq!(huge.expect_err("overflows").reason(), "invalid");
        // [{0: "a", 2: 4([1, 1.5])}]: the mantissa must be an integer.
        let float = cbor(&hex("81 a2 00 61 61 02 c4 82 01 f9 3e 00"));
        assert_eq!(float.expect_err("float mantissa").reason(), "invalid");
    }

    #[test]
    fn deeply_nested_cbor_is_an_error_not_a_crash() {
        let mut top = vec![0x81; 100_000];
        top.push(0x01);
        assert_eq!(cbor(&top).expect_err("nested pack").reason(), "invalid");
        // [{0: "a", 2: 1, 99: [[[...]]]}] inside an ignored label
        let mut ignored = hex("81 a3 00 61 61 02 01 18 63");
        ignored.extend(std::iter::repeat_n(0x81, 100_000));
        ignored.push(0x01);
        let err = cbor(&ignored).expect_err("too deep");
        assert!(err.to_string().contains("nesting"), "{err}");
        // Indefinite arrays, never closed.
        let mut open = hex("81 a3 00 61 61 02 01 18 63");
        open.extend(std::iter::repeat_n(0x9f, 100_000));
        assert!(cbor(&open).is_err());
        // Within the depth limit, nesting in an ignored label is skipped.
        let mut shallow = hex("81 a3 00 61 61 02 01 18 63");
        shallow.extend(std::iter::repeat_n(0x81, 20));
        shallow.push(0x01);
        assert!(cbor(&shallow).is_ok());
    }
}
