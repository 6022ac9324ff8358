//! text/plain (0) and opaque (42): one resource (instance) value each (OMA LwM2M TS Core 1.1
//! §7.4.1, §7.4.2).
//!
//! text/plain is read by the model's type: integers and times in decimal, floats in decimal
//! (with an optional exponent; `inf`/`NaN` refused), booleans `0`/`1`, object links `oid:iid`,
//! opaque values in base64; without a known type the text is a string. Opaque is the raw bytes of
//! an opaque resource.

use super::value::{self, Num, Raw};
use super::{Ctx, Format, FormatError, invalid, single_entry, single_value_base};
use crate::node::{Entry, Path, ResourceType, Value};

pub(super) fn decode_text(ctx: &Ctx<'_>, body: &[u8]) -> Result<Vec<Entry>, FormatError> {
    single_value_base(ctx)?;
    ctx.check_value_len(body.len())?;
    let text = std::str::from_utf8(body).map_err(|_| ctx.malformed("the text is not UTF-8"))?;
    let ids = ctx.base.ids();
    let ty = ctx.types.resource_type(ids[0], ids[2]);
    let value = parse(text, ty)?;
    Ok(vec![Entry {
        path: ctx.base,
        value,
        time: None,
    }])
}

fn parse(text: &str, ty: Option<ResourceType>) -> Result<Value, FormatError> {
    use ResourceType as T;
    let number = |what: &str| invalid(format!("the text is not {what}"));
    match ty {
        None | Some(T::String) => Ok(Value::String(text.to_owned())),
        Some(T::Corelnk) => Ok(Value::Corelnk(text.to_owned())),
        Some(T::Integer | T::Time) => {
            let i = parse_decimal(text)
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| number("a 64-bit integer"))?;
            value::typed(Raw::Num(Num::Int(i)), ty)
        }
        Some(T::Unsigned) => parse_decimal(text)
            .filter(|s| !s.starts_with('-'))
            .and_then(|s| s.parse::<u64>().ok())
            .map(Value::Unsigned)
            .ok_or_else(|| number("an unsigned 64-bit integer")),
        Some(T::Float) => {
            // Rust also reads "inf", "NaN" and "infinity": only digits, sign, '.', 'e' pass.
            let plain = !text.is_empty()
                && text
                    .bytes()
                    .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'));
            let f = plain
                .then(|| text.parse::<f64>().ok())
                .flatten()
                .ok_or_else(|| number("a decimal number"))?;
            value::finite(f).map(Value::Float)
        }
        Some(T::Boolean) => match text {
            "0" => Ok(Value::Boolean(false)),
            "1" => Ok(Value::Boolean(true)),
            _ => Err(number("a boolean 0 or 1")),
        },
        Some(T::Objlnk) => value::objlnk(text),
        Some(T::Opaque) => super::base64::decode(text)
            .map(Value::Opaque)
            .ok_or_else(|| number("base64")),
        Some(T::None) => Err(invalid("an executable resource has no value")),
    }
}

/// An optionally signed run of decimal digits.
fn parse_decimal(text: &str) -> Option<&str> {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(text)
}

pub(super) fn encode_text(base: &Path, entries: &[Entry]) -> Result<Vec<u8>, FormatError> {
    let e = single_entry(Format::Text, base, entries)?;
    let text = match &e.value {
        Value::String(s) | Value::Corelnk(s) => s.clone(),
        Value::Integer(i) | Value::Time(i) => i.to_string(),
        Value::Unsigned(u) => u.to_string(),
        // Display writes the shortest decimal that reads back to the same float.
        Value::Float(f) => f.to_string(),
        Value::Boolean(b) => u8::from(*b).to_string(),
        Value::Objlnk(o, i) => value::objlnk_text(*o, *i),
        Value::Opaque(b) => super::base64::encode_standard(b),
    };
    Ok(text.into_bytes())
}

pub(super) fn decode_opaque(ctx: &Ctx<'_>, body: &[u8]) -> Result<Vec<Entry>, FormatError> {
    single_value_base(ctx)?;
    ctx.check_value_len(body.len())?;
    let ids = ctx.base.ids();
    match ctx.types.resource_type(ids[0], ids[2]) {
        None | Some(ResourceType::Opaque) => Ok(vec![Entry {
            path: ctx.base,
            value: Value::Opaque(body.to_vec()),
            time: None,
        }]),
        Some(t) => Err(invalid(format!(
            "opaque content for a {t:?} resource (only opaque resources take it)"
        ))),
    }
}

pub(super) fn encode_opaque(base: &Path, entries: &[Entry]) -> Result<Vec<u8>, FormatError> {
    match &single_entry(Format::Opaque, base, entries)?.value {
        Value::Opaque(b) => Ok(b.clone()),
        _ => Err(FormatError::Unsupported(Format::Opaque)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_numbers_refuse_words_and_blanks() {
        let f = Some(ResourceType::Float);
        assert_eq!(parse("21.5", f), Ok(Value::Float(21.5)));
        assert_eq!(parse("-1e3", f), Ok(Value::Float(-1000.0)));
        for bad in ["inf", "NaN", "infinity", "", " 1", "1e999", "0x10"] {
            assert!(parse(bad, f).is_err(), "{bad}");
        }
        let i = Some(ResourceType::Integer);
        assert_eq!(parse("-42", i), Ok(Value::Integer(-42)));
        for bad in ["", "-", "1.0", "9223372036854775808", " 1", "1_0"] {
            assert!(parse(bad, i).is_err(), "{bad}");
        }
        let u = Some(ResourceType::Unsigned);
        assert_eq!(
            parse("18446744073709551615", u),
            Ok(Value::Unsigned(u64::MAX))
        );
        assert!(parse("-0", u).is_err());
    }
}
