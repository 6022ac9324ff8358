//! RFC 8428 §4.6 resolution: base name, time, unit, value and sum applied to each record as it
//! arrives, and the checks on what comes out (names, lengths, finite numbers, versions).

use std::borrow::Cow;
use std::fmt;

use super::base64url::{base64url_decoded_len, base64url_encode};
use super::record::{Data, RawRecord};
use crate::decode::{DecodeContext, DecodeError, Limits};
use crate::reading::{Record, epoch_seconds};

/// SenML times below 2^28 s are relative to "now" (RFC 8428 §4.5.3).
pub(crate) const RELATIVE_TIME_LIMIT: f64 = 268_435_456.0;

/// The SenML version RFC 8428 defines; newer packs must not be used (§4.4).
const SENML_VERSION: u64 = 10;

/// Applies base values to records as they arrive (RFC 8428 §4.6) and collects the result.
#[derive(Debug)]
pub(super) struct Resolver<'a> {
    now: f64,
    limits: Limits,
    bver: Option<u64>,
    bn: Cow<'a, str>,
    bt: Option<f64>,
    bu: Option<Cow<'a, str>>,
    bv: Option<f64>,
    bs: Option<f64>,
    records: Vec<Record>,
}

impl<'a> Resolver<'a> {
    /// `expected` is how many records the pack seems to hold: room is made for that many, up to
    /// the record limit, so the output is allocated once.
    pub(super) fn new(ctx: &DecodeContext<'_>, expected: usize) -> Self {
        Resolver {
            now: epoch_seconds(ctx.now),
            limits: ctx.limits,
            bver: None,
            bn: Cow::Borrowed(""),
            bt: None,
            bu: None,
            bv: None,
            bs: None,
            records: Vec::with_capacity(expected.min(ctx.limits.max_records)),
        }
    }

    /// Whether the record at `index` would exceed [`Limits::max_records`].
    pub(super) fn limit_reached(&self, index: usize) -> bool {
        index >= self.limits.max_records
    }

    pub(super) fn too_many(&self) -> DecodeError {
        DecodeError::TooManyRecords(self.limits.max_records)
    }

    pub(super) fn push(&mut self, raw: RawRecord<'a>, index: usize) -> Result<(), DecodeError> {
        if let Some(version) = raw.bver {
            if version > SENML_VERSION {
                return Err(DecodeError::Invalid(format!(
                    "record {index}: SenML version {version} is newer than the supported \
                     version {SENML_VERSION}"
                )));
            }
            if self.bver.is_some_and(|earlier| earlier != version) {
                return Err(DecodeError::Invalid(format!(
                    "record {index}: \"bver\" differs from an earlier record; a pack has one version"
                )));
            }
            self.bver = Some(version);
        }
        // Base fields apply to the record that carries them and to every record after it.
        let base_only = !raw.has_regular_fields() && raw.has_base_fields();
        if let Some(bn) = raw.bn {
            self.bn = bn;
        }
        if let Some(bu) = raw.bu {
            self.bu = Some(bu);
        }
        self.bt = raw.bt.or(self.bt);
        self.bv = raw.bv.or(self.bv);
        self.bs = raw.bs.or(self.bs);
        if base_only {
            return Ok(());
        }

        let values = [
            raw.v.is_some(),
            raw.vs.is_some(),
            raw.vb.is_some(),
            raw.vd.is_some(),
        ]
        .into_iter()
        .filter(|present| *present)
        .count();
        if values > 1 {
            return Err(DecodeError::Invalid(format!(
                "record {index}: has more than one of \"v\", \"vs\", \"vb\", \"vd\""
            )));
        }
        let s = add_base(self.bs, raw.s);
        if values == 0 && s.is_none() {
            return Err(DecodeError::Invalid(format!(
                "record {index}: has no value (\"v\", \"vs\", \"vb\" or \"vd\") and no sum"
            )));
        }

        let n = self.name(raw.n.as_deref(), index)?;
        let u = match (raw.u, &self.bu) {
            (Some(u), _) => Some(self.unit(u)?),
            (None, Some(bu)) => Some(self.unit(Cow::Borrowed(bu.as_ref()))?),
            (None, None) => None,
        };
        let v = match raw.v {
            Some(v) => Some(finite(self.bv.map_or(v, |bv| bv + v), "v", index)?),
            None => None,
        };
        let vs = match raw.vs {
            Some(vs) if vs.len() > self.limits.max_value_len => {
                return Err(DecodeError::TooLong("string value"));
            }
            Some(vs) => Some(vs.into_owned()),
            None => None,
        };
        let vd = match raw.vd {
            Some(data) => Some(self.data(data, index)?),
            None => None,
        };
        let s = match s {
            Some(s) => Some(finite(s, "s", index)?),
            None => None,
        };
        let t = finite(add_base(self.bt, raw.t).unwrap_or(0.0), "t", index)?;
        if raw.ut.is_some_and(|ut| ut < 0.0) {
            return Err(DecodeError::Invalid(format!(
                "record {index}: \"ut\" is negative"
            )));
        }
        self.records.push(Record {
            n,
            u,
            v,
            vs,
            vb: raw.vb,
            vd,
            s,
            t: resolve_time(t, self.now),
            ut: raw.ut,
            path: None,
        });
        Ok(())
    }

    /// Base name + name, checked against RFC 8428 §4.5.1 and the length limit.
    fn name(&self, n: Option<&str>, index: usize) -> Result<String, DecodeError> {
        let n = n.unwrap_or("");
        let len = self.bn.len().saturating_add(n.len());
        if len > self.limits.max_name_len {
            return Err(DecodeError::TooLong("record name"));
        }
        let mut name = String::with_capacity(len);
        name.push_str(&self.bn);
        name.push_str(n);
        check_name(&name, &self.limits, &format_args!("record {index}"))?;
        Ok(name)
    }

    fn unit(&self, u: Cow<'_, str>) -> Result<String, DecodeError> {
        // Units are registry names of a few characters; the name limit is a generous bound.
        if u.len() > self.limits.max_name_len {
            return Err(DecodeError::TooLong("unit"));
        }
        Ok(u.into_owned())
    }

    fn data(&self, data: Data<'_>, index: usize) -> Result<String, DecodeError> {
        match data {
            Data::Raw(bytes) => {
                if bytes.len() > self.limits.max_value_len {
                    return Err(DecodeError::TooLong("data value"));
                }
                Ok(base64url_encode(&bytes))
            }
            Data::Base64(text) => {
                let trimmed = text.trim_end_matches('=');
                let decoded_len = match base64url_decoded_len(trimmed) {
                    Some(len) if text.len() - trimmed.len() <= 2 => len,
                    _ => {
                        return Err(DecodeError::Invalid(format!(
                            "record {index}: \"vd\" is not base64url (RFC 4648 §5)"
                        )));
                    }
                };
                if decoded_len > self.limits.max_value_len {
                    return Err(DecodeError::TooLong("data value"));
                }
                if trimmed.len() == text.len() {
                    Ok(text.into_owned())
                } else {
                    Ok(trimmed.to_owned())
                }
            }
        }
    }

    pub(super) fn finish(self) -> Result<Vec<Record>, DecodeError> {
        if self.records.is_empty() {
            return Err(DecodeError::Empty);
        }
        Ok(self.records)
    }
}

/// Base + field, where a missing one counts as zero and both missing means absent. Adding only
/// what is present keeps values exact (and the sign of a lone `-0.0`).
fn add_base(base: Option<f64>, value: Option<f64>) -> Option<f64> {
    match (base, value) {
        (Some(b), Some(v)) => Some(b + v),
        (Some(x), None) | (None, Some(x)) => Some(x),
        (None, None) => None,
    }
}

fn finite(x: f64, label: &str, index: usize) -> Result<f64, DecodeError> {
    if x.is_finite() {
        Ok(x)
    } else {
        Err(DecodeError::Invalid(format!(
            "record {index}: resolved \"{label}\" is not a finite number"
        )))
    }
}

/// RFC 8428 §4.5.3: times below 2^28 are seconds relative to now (0 = now); others are absolute.
pub(crate) fn resolve_time(t: f64, now: f64) -> f64 {
    if t < RELATIVE_TIME_LIMIT { now + t } else { t }
}

/// Checks a resolved record name: non-empty, within the length limit, and RFC 8428 §4.5.1's
/// character rules. `what` names the record in the message (never the name itself: it is device
/// input and could be anything).
pub(crate) fn check_name(
    name: &str,
    limits: &Limits,
    what: &dyn fmt::Display,
) -> Result<(), DecodeError> {
    if name.is_empty() {
        return Err(DecodeError::Invalid(format!("{what}: has no name")));
    }
    if name.len() > limits.max_name_len {
        return Err(DecodeError::TooLong("record name"));
    }
    if !is_senml_name(name) {
        return Err(DecodeError::Invalid(format!(
            "{what}: name must use only A-Z a-z 0-9 - : . / _ and start with a letter or digit \
             (RFC 8428 §4.5.1)"
        )));
    }
    Ok(())
}

/// RFC 8428 §4.5.1: `[A-Za-z0-9][A-Za-z0-9:./_-]*`.
pub(crate) fn is_senml_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.iter().all(|b| NAME_CHAR[usize::from(*b)])
}

/// The characters RFC 8428 §4.5.1 allows in a name, as a table: names are checked once per
/// record on the ingest path.
const NAME_CHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b':' | b'.' | b'/' | b'_');
        b += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::senml::decode_json;
    use crate::senml::test_support::{
        NOW, RFC_5_1_2_TIMED, ctx, json, rec, rfc_5_1_2_timed_resolved,
    };

    #[test]
    fn rfc8428_single_datapoint_is_stamped_now() {
        let records = json(r#"[{"n":"urn:dev:ow:10e2073a01080063","u":"Cel","v":23.1}]"#)
            .expect("RFC 8428 §5.1.1 decodes");
        assert_eq!(
            records,
            vec![rec("urn:dev:ow:10e2073a01080063", Some("Cel"), 23.1, NOW)]
        );
    }

    #[test]
    fn rfc8428_multiple_datapoints_concatenate_base_name() {
        let records = json(
            r#"[{"bn":"urn:dev:ow:10e2073a01080063:","n":"voltage","u":"V","v":120.1},
                {"n":"current","u":"A","v":1.2}]"#,
        )
        .expect("RFC 8428 §5.1.2 decodes");
        assert_eq!(
            records,
            vec![
                rec("urn:dev:ow:10e2073a01080063:voltage", Some("V"), 120.1, NOW),
                rec("urn:dev:ow:10e2073a01080063:current", Some("A"), 1.2, NOW),
            ]
        );
    }

    #[test]
    fn rfc8428_base_time_and_base_unit_apply_to_following_records() {
        assert_eq!(
            json(RFC_5_1_2_TIMED).expect("RFC 8428 §5.1.2 decodes"),
            rfc_5_1_2_timed_resolved()
        );
    }

    const RFC_5_1_3: &str = r#"[
        {"bn":"urn:dev:ow:10e2073a01080063","bt":1.320067464e+09,
         "bu":"%RH","v":20},
        {"u":"lon","v":24.30621},
        {"u":"lat","v":60.07965},
        {"t":60,"v":20.3},
        {"u":"lon","t":60,"v":24.30622},
        {"u":"lat","t":60,"v":60.07965},
        {"t":120,"v":20.7},
        {"u":"lon","t":120,"v":24.30623},
        {"u":"lat","t":120,"v":60.07966},
        {"u":"%EL","t":150,"v":98},
        {"t":180,"v":21.2},
        {"u":"lon","t":180,"v":24.30628},
        {"u":"lat","t":180,"v":60.07967}
    ]"#;

    const RFC_5_1_4: &str = r#"[
        {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067464e+09,"v":20},
        {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067464e+09,"v":24.30621},
        {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067464e+09,"v":60.07965},
        {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067524e+09,"v":20.3},
        {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067524e+09,"v":24.30622},
        {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067524e+09,"v":60.07965},
        {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067584e+09,"v":20.7},
        {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067584e+09,"v":24.30623},
        {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067584e+09,"v":60.07966},
        {"n":"urn:dev:ow:10e2073a01080063","u":"%EL","t":1.320067614e+09,"v":98},
        {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067644e+09,"v":21.2},
        {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067644e+09,"v":24.30628},
        {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067644e+09,"v":60.07967}
    ]"#;

    #[test]
    fn rfc8428_multiple_measurements_resolve_to_the_rfc_resolved_form() {
        let resolved = json(RFC_5_1_4).expect("RFC 8428 §5.1.4 decodes");
        let packed = json(RFC_5_1_3).expect("RFC 8428 §5.1.3 decodes");
        assert_eq!(packed, resolved);
        assert_eq!(packed.len(), 13);
        let name = "urn:dev:ow:10e2073a01080063";
        assert_eq!(packed[0], rec(name, Some("%RH"), 20.0, 1_320_067_464.0));
        assert_eq!(packed[9], rec(name, Some("%EL"), 98.0, 1_320_067_614.0));
        assert_eq!(
            packed[12],
            rec(name, Some("lat"), 60.07967, 1_320_067_644.0)
        );
    }

    #[test]
    fn rfc8428_multiple_data_types_keep_their_kind() {
        let records = json(
            r#"[{"bn":"urn:dev:ow:10e2073a01080063:","n":"temp","u":"Cel","v":23.1},
                {"n":"label","vs":"Machine Room"},
                {"n":"open","vb":false},
                {"n":"nfv-reader","vd":"aGkgCg"}]"#,
        )
        .expect("RFC 8428 §5.1.5 decodes");
        assert_eq!(records[1].vs.as_deref(), Some("Machine Room"));
        assert_eq!(records[2].vb, Some(false));
        assert_eq!(records[3].vd.as_deref(), Some("aGkgCg"));
        assert!(records[1..].iter().all(|r| r.v.is_none() && r.u.is_none()));
    }

    #[test]
    fn rfc8428_collection_switches_base_name_but_keeps_base_time() {
        let records = json(
            r#"[{"bn":"2001:db8::2/","bt":1.320078429e+09,"n":"temperature","u":"Cel","v":25.2},
                {"n":"humidity","u":"%RH","v":30},
                {"bn":"2001:db8::1/","n":"temperature","u":"Cel","v":12.3},
                {"n":"humidity","u":"%RH","v":67}]"#,
        )
        .expect("RFC 8428 §5.1.6 decodes");
        let names: Vec<&str> = records.iter().map(|r| r.n.as_str()).collect();
        assert_eq!(
            names,
            [
                "2001:db8::2/temperature",
                "2001:db8::2/humidity",
                "2001:db8::1/temperature",
                "2001:db8::1/humidity"
            ]
        );
        assert!(records.iter().all(|r| r.t == 1_320_078_429.0));
    }

    #[test]
    fn base_only_record_sets_bases_and_yields_nothing() {
        let records = json(
            r#"[{"bn":"urn:dev:ow:10e2073a01080063:"},
                {"n":"temp","u":"Cel","v":23.1},
                {"n":"heat","u":"/","v":1},
                {"n":"fan","u":"/","v":0}]"#,
        )
        .expect("RFC 8428 §5.1.7 decodes");
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].n, "urn:dev:ow:10e2073a01080063:temp");
        assert_eq!(records[2].v, Some(0.0));
    }

    #[test]
    fn relative_times_are_offsets_from_now_and_large_times_are_absolute() {
        let records = json(
            r#"[{"n":"a","v":1,"t":-10},{"n":"b","v":1,"t":0.5},{"n":"c","v":1,"t":268435456}]"#,
        )
        .expect("decodes");
        assert_eq!(records[0].t, NOW - 10.0);
        assert_eq!(records[1].t, NOW + 0.5);
        assert_eq!(records[2].t, RELATIVE_TIME_LIMIT);
    }

    #[test]
    fn base_value_and_base_sum_add_to_the_record() {
        let records = json(
            r#"[{"bn":"m/","bv":100,"bs":1000,"n":"a","v":1.5},{"n":"b","s":5},{"n":"c","vs":"x"}]"#,
        )
        .expect("decodes");
        assert_eq!(records[0].v, Some(101.5));
        assert_eq!(records[0].s, Some(1000.0));
        assert_eq!(records[1].v, None);
        assert_eq!(records[1].s, Some(1005.0));
        assert_eq!(records[2].vs.as_deref(), Some("x"));
        assert_eq!(records[2].v, None, "bv never turns a string record numeric");
    }

    #[test]
    fn version_newer_than_10_or_inconsistent_is_rejected() {
        assert!(json(r#"[{"bver":10,"n":"a","v":1}]"#).is_ok());
        let err = json(r#"[{"bver":11,"n":"a","v":1}]"#).expect_err("bver 11");
        assert!(err.to_string().contains("version 11"), "{err}");
        assert!(json(r#"[{"bver":5,"n":"a","v":1},{"bver":6,"n":"b","v":1}]"#).is_err());
        assert!(json(r#"[{"bver":"10","n":"a","v":1}]"#).is_err());
        assert!(json(r#"[{"bver":-1,"n":"a","v":1}]"#).is_err());
    }

    #[test]
    fn records_need_exactly_one_value_or_a_sum() {
        assert!(json(r#"[{"n":"a","s":3}]"#).is_ok());
        let none = json(r#"[{"n":"a","u":"Cel"}]"#).expect_err("no value");
        assert!(none.to_string().contains("no value"), "{none}");
        let two = json(r#"[{"n":"a","v":1,"vs":"1"}]"#).expect_err("two values");
        assert!(two.to_string().contains("more than one"), "{two}");
        assert!(
            json(r#"[{"n":"a","v":1,"v":2}]"#).is_err(),
            "duplicate label"
        );
        assert_eq!(
            json(r#"[{}]"#).expect_err("empty record").reason(),
            "invalid"
        );
    }

    #[test]
    fn names_follow_rfc8428_character_rules() {
        assert!(json(r#"[{"n":"A-z0:9./_","v":1}]"#).is_ok());
        for bad in [
            r#""""#,
            r#""-lead""#,
            r#""has space""#,
            r#""ü""#,
            r#""a?b""#,
        ] {
            let text = format!(r#"[{{"n":{bad},"v":1}}]"#);
            assert_eq!(json(&text).expect_err(&text).reason(), "invalid", "{text}");
        }
        assert_eq!(
            json(r#"[{"v":1}]"#).expect_err("no name at all").reason(),
            "invalid"
        );
    }

    #[test]
    fn limits_bound_records_names_and_values() {
        let mut c = ctx();
        c.limits = Limits {
            max_records: 2,
            max_name_len: 8,
            max_value_len: 4,
        };
        let d = |s: &str| decode_json(s.as_bytes(), &c);
        assert!(d(r#"[{"n":"a","v":1},{"n":"b","v":2}]"#).is_ok());
        assert_eq!(
            d(r#"[{"n":"a","v":1},{"n":"b","v":2},{"n":"c","v":3}]"#),
            Err(DecodeError::TooManyRecords(2))
        );
        assert_eq!(
            d(r#"[{"bn":"abcde","n":"fghi","v":1}]"#),
            Err(DecodeError::TooLong("record name"))
        );
        assert_eq!(
            d(r#"[{"n":"a","vs":"abcde"}]"#),
            Err(DecodeError::TooLong("string value"))
        );
        assert!(d(r#"[{"n":"a","vd":"AAAAAA"}]"#).is_ok(), "4 bytes");
        assert_eq!(
            d(r#"[{"n":"a","vd":"AAAAAAA"}]"#),
            Err(DecodeError::TooLong("data value"))
        );
        assert_eq!(
            d(r#"[{"n":"a","u":"abcdefghi","v":1}]"#),
            Err(DecodeError::TooLong("unit"))
        );
    }

    #[test]
    fn data_values_must_be_base64url() {
        assert_eq!(
            json(r#"[{"n":"a","vd":"Zh"}]"#)
                .expect_err("non-zero spare bits")
                .reason(),
            "invalid"
        );
        assert!(
            json(r#"[{"n":"a","vd":"Zm9"}]"#).is_err(),
            "non-zero spare bits"
        );
        assert!(
            json(r#"[{"n":"a","vd":"Zm8"}]"#).is_ok(),
            "canonical \"fo\""
        );
        assert!(
            json(r#"[{"n":"a","vd":"a+b/"}]"#).is_err(),
            "standard alphabet"
        );
        assert!(
            json(r#"[{"n":"a","vd":"abcde"}]"#).is_err(),
            "impossible length"
        );
        let padded = json(r#"[{"n":"a","vd":"aGkgCg=="}]"#).expect("padding tolerated");
        assert_eq!(padded[0].vd.as_deref(), Some("aGkgCg"));
    }

    #[test]
    fn non_finite_resolved_values_are_rejected() {
        let err = json(r#"[{"bv":1e308,"n":"a","v":1e308}]"#).expect_err("overflow");
        assert!(err.to_string().contains("finite"), "{err}");
        let err = json(r#"[{"bt":1e308,"n":"a","v":1,"t":1e308}]"#).expect_err("overflow");
        assert!(err.to_string().contains("finite"), "{err}");
        assert!(json(r#"[{"n":"a","v":1,"ut":-1}]"#).is_err(), "negative ut");
    }
}
