//! CBOR (60): one resource (instance) value (OMA LwM2M TS Core 1.1 §7.4.6): an integer, float
//! (half, single or double), boolean, text string, byte string, a time as tag 1 on a number
//! (a bare integer is accepted for a time resource too), an object link as text `"oid:iid"`.

use super::cbor_io::{Reader, Writer};
use super::value;
use super::{Ctx, Format, FormatError, single_entry, single_value_base};
use crate::node::{Entry, Path};

pub(super) fn decode(ctx: &Ctx<'_>, body: &[u8]) -> Result<Vec<Entry>, FormatError> {
    single_value_base(ctx)?;
    let mut r = Reader::new(body, Format::Cbor, ctx.limits);
    let h = r.header()?;
    let raw = r.value(h)?;
    r.finish()?;
    let ids = ctx.base.ids();
    let value = value::typed(raw, ctx.types.resource_type(ids[0], ids[2]))?;
    Ok(vec![Entry {
        path: ctx.base,
        value,
        time: None,
    }])
}

pub(super) fn encode(base: &Path, entries: &[Entry]) -> Result<Vec<u8>, FormatError> {
    let e = single_entry(Format::Cbor, base, entries)?;
    let mut w = Writer::default();
    w.value(&e.value);
    Ok(w.into_bytes())
}
