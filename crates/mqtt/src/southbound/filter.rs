//! Topic filters of the southbound subscriber, pure: which configured filter a topic matches,
//! the device id at the configured level, and the payload format when it is sniffed.

use wardgate_core::MessageClass;
use wardgate_core::payload::ContentFormat;
use wardgate_core::reading::valid_device_id;

use super::config::{PayloadFormat, TopicConfig};

/// MQTT's limit on a topic filter's length in bytes.
const MAX_FILTER_LEN: usize = 65_535;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    /// `+`: exactly one level.
    Plus,
    /// `#`: this level and every one below (also none: `a/#` matches `a`).
    Hash,
}

/// A parsed `topics` entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TopicFilter {
    /// The filter as configured (what is subscribed to).
    pub(crate) filter: String,
    levels: Vec<Level>,
    /// 0-based index of the level holding the device id.
    device_index: usize,
    pub(crate) format: PayloadFormat,
    pub(crate) class: MessageClass,
}

/// What a topic is, for the subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TopicMatch<'t> {
    /// It matches and names this device.
    Device(&'t str),
    /// It matches, but the device level is missing, empty or not a valid device id.
    BadDeviceId,
    /// It does not match.
    NoMatch,
}

impl TopicFilter {
    /// Parses and checks one `topics` entry. The error says what is wrong, in words.
    pub(crate) fn parse(t: &TopicConfig) -> Result<TopicFilter, String> {
        let f = &t.filter;
        if f.is_empty() {
            return Err("the filter is empty".into());
        }
        if f.len() > MAX_FILTER_LEN {
            return Err("the filter is longer than 65535 bytes".into());
        }
        if f.contains('\0') {
            return Err("the filter contains a NUL character".into());
        }
        // A shared subscription (`$share/<group>/<filter>`, MQTT 5 §4.8.2, which Mosquitto,
        // EMQX and HiveMQ also offer to 3.1.1 clients): the broker hands each message to one
        // subscriber of the group. Topics are matched against the filter after the group.
        let matched = match f.strip_prefix("$share/") {
            Some(rest) => {
                let (group, filter) = rest.split_once('/').unwrap_or((rest, ""));
                if group.is_empty() || group.contains(['+', '#']) {
                    return Err("a shared subscription is $share/<group>/<filter>, the group without wildcards".into());
                }
                if filter.is_empty() {
                    return Err("the shared subscription has no filter after its group".into());
                }
                filter
            }
            None => f.as_str(),
        };
        let parts: Vec<&str> = matched.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        for (i, p) in parts.iter().enumerate() {
            levels.push(match *p {
                "+" => Level::Plus,
                "#" if i + 1 == parts.len() => Level::Hash,
                "#" => return Err("'#' may only be the last level".into()),
                p if p.contains(['+', '#']) => {
                    return Err("'+' and '#' must fill a whole level".into());
                }
                p => Level::Literal(p.to_owned()),
            });
        }
        if t.device_level == 0 {
            return Err("device_level counts from 1 (the first level of the topic)".into());
        }
        let device_index = t.device_level - 1;
        let hash_at = levels.iter().position(|l| *l == Level::Hash);
        match (levels.get(device_index), hash_at) {
            (Some(Level::Plus), _) => {}
            (_, Some(h)) if device_index >= h => {}
            (Some(Level::Literal(l)), _) => {
                return Err(format!(
                    "device_level {} is the fixed level {l:?}: every message would claim the same device; point it at a '+' level",
                    t.device_level
                ));
            }
            _ => {
                return Err(format!(
                    "device_level {} is beyond the filter's {} levels",
                    t.device_level,
                    levels.len()
                ));
            }
        }
        Ok(TopicFilter {
            filter: f.clone(),
            levels,
            device_index,
            format: t.format,
            class: t.class,
        })
    }

    /// Whether `topic` matches this filter and, if so, the device it names.
    pub(crate) fn classify<'t>(&self, topic: &'t str) -> TopicMatch<'t> {
        // MQTT 3.1.1 §4.7.2: a filter starting with a wildcard does not match `$` topics.
        // (`levels` is the filter after a `$share/<group>/` prefix.)
        if topic.starts_with('$') && !matches!(self.levels.first(), Some(Level::Literal(_))) {
            return TopicMatch::NoMatch;
        }
        let mut device = None;
        let mut parts = topic.split('/');
        for (i, level) in self.levels.iter().enumerate() {
            match level {
                Level::Hash => {
                    // Matches the rest, however many levels; the device level may be among them.
                    if let Some(n) = self.device_index.checked_sub(i) {
                        device = parts.nth(n);
                    }
                    return verdict(device);
                }
                Level::Plus => match parts.next() {
                    Some(part) if i == self.device_index => device = Some(part),
                    Some(_) => {}
                    None => return TopicMatch::NoMatch,
                },
                Level::Literal(l) => {
                    if parts.next() != Some(l.as_str()) {
                        return TopicMatch::NoMatch;
                    }
                }
            }
        }
        if parts.next().is_some() {
            return TopicMatch::NoMatch;
        }
        verdict(device)
    }
}

fn verdict(device: Option<&str>) -> TopicMatch<'_> {
    match device {
        Some(d) if valid_device_id(d.as_bytes()) => TopicMatch::Device(d),
        _ => TopicMatch::BadDeviceId,
    }
}

/// The content format a topic's payloads are decoded with. `Auto` looks at the first byte:
/// SenML is always an array, plain readings are an object or map, so `[` / `{` (after JSON
/// white space) and a CBOR array / map head tell the four apart. `None`: nothing recognisable
/// (refused as an unsupported format).
pub(crate) fn content_format(format: PayloadFormat, body: &[u8]) -> Option<ContentFormat> {
    match format {
        PayloadFormat::SenmlJson => Some(ContentFormat::SenmlJson),
        PayloadFormat::SenmlCbor => Some(ContentFormat::SenmlCbor),
        PayloadFormat::Json => Some(ContentFormat::Json),
        PayloadFormat::Cbor => Some(ContentFormat::Cbor),
        // Not decoded: forwarded as a normalized reading (`IngestPipeline::forward`).
        PayloadFormat::Reading => None,
        PayloadFormat::Auto => {
            let first_json = body
                .iter()
                .find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
            match (first_json, body.first()) {
                (Some(b'['), _) => Some(ContentFormat::SenmlJson),
                (Some(b'{'), _) => Some(ContentFormat::Json),
                // CBOR major type 4 (array) and 5 (map), any length encoding.
                (_, Some(0x80..=0x9f)) => Some(ContentFormat::SenmlCbor),
                (_, Some(0xa0..=0xbf)) => Some(ContentFormat::Cbor),
                _ => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(f: &str, level: usize) -> Result<TopicFilter, String> {
        TopicFilter::parse(&TopicConfig {
            filter: f.into(),
            device_level: level,
            format: PayloadFormat::Auto,
            class: MessageClass::Vital,
        })
    }

    #[test]
    fn the_device_comes_from_the_configured_plus_level() {
        let f = filter("ward/+/senml", 2).unwrap();
        assert_eq!(
            f.classify("ward/bed-12/senml"),
            TopicMatch::Device("bed-12")
        );
        assert_eq!(f.classify("ward/bed-12/other"), TopicMatch::NoMatch);
        assert_eq!(f.classify("ward/bed-12/senml/x"), TopicMatch::NoMatch);
        assert_eq!(f.classify("ward/senml"), TopicMatch::NoMatch);
        assert_eq!(f.classify("ward//senml"), TopicMatch::BadDeviceId);
        assert_eq!(f.classify("ward/b d/senml"), TopicMatch::BadDeviceId);
    }

    #[test]
    fn a_shared_subscription_matches_topics_after_its_group() {
        let f = filter("$share/uplinks/ward/+/senml", 2).unwrap();
        assert_eq!(
            f.filter, "$share/uplinks/ward/+/senml",
            "subscribed as written"
        );
        assert_eq!(
            f.classify("ward/bed-12/senml"),
            TopicMatch::Device("bed-12")
        );
        assert_eq!(
            f.classify("$share/uplinks/ward/bed-12/senml"),
            TopicMatch::NoMatch
        );
        for (bad, why) in [
            ("$share//ward/+", "group"),
            ("$share/g+/ward/+", "group"),
            ("$share/uplinks", "no filter"),
            ("$share/uplinks/", "no filter"),
        ] {
            let e = filter(bad, 2).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn a_device_level_under_a_hash_is_taken_from_the_topic() {
        let f = filter("sensors/#", 3).unwrap();
        assert_eq!(
            f.classify("sensors/ward-3/bed-7/spo2"),
            TopicMatch::Device("bed-7")
        );
        assert_eq!(f.classify("sensors/ward-3"), TopicMatch::BadDeviceId);
        assert_eq!(f.classify("other/ward-3/bed-7"), TopicMatch::NoMatch);
        let f = filter("sensors/#", 2).unwrap();
        assert_eq!(f.classify("sensors/bed-1"), TopicMatch::Device("bed-1"));
        assert_eq!(f.classify("sensors"), TopicMatch::BadDeviceId);
        let f = filter("+/#", 1).unwrap();
        assert_eq!(f.classify("bed-2/x/y"), TopicMatch::Device("bed-2"));
        assert_eq!(f.classify("$SYS/broker"), TopicMatch::NoMatch);
    }

    #[test]
    fn filters_that_cannot_name_a_device_are_refused_with_a_reason() {
        for (f, level, why) in [
            ("ward/+/senml", 0, "counts from 1"),
            ("ward/+/senml", 1, "fixed level"),
            ("ward/+/senml", 4, "beyond"),
            ("ward/#/x", 2, "last level"),
            ("ward/b+/x", 2, "whole level"),
            ("", 1, "empty"),
        ] {
            let e = filter(f, level).expect_err(f);
            assert!(e.contains(why), "{f} {level}: {e}");
        }
    }

    #[test]
    fn auto_tells_senml_from_plain_json_and_cbor_by_the_first_byte() {
        let auto = |b: &[u8]| content_format(PayloadFormat::Auto, b);
        assert_eq!(auto(b" \n[{\"v\":1}]"), Some(ContentFormat::SenmlJson));
        assert_eq!(auto(b"{\"spo2\":97}"), Some(ContentFormat::Json));
        assert_eq!(auto(&[0x81, 0xa1]), Some(ContentFormat::SenmlCbor));
        assert_eq!(auto(&[0xa1, 0x61]), Some(ContentFormat::Cbor));
        assert_eq!(auto(b"97.5"), None);
        assert_eq!(auto(b""), None);
        assert_eq!(
            content_format(PayloadFormat::Json, b"[1]"),
            Some(ContentFormat::Json)
        );
    }
}
