//! From an LwM2M resource path to a normalized reading name and SenML unit, used when a
//! notification or a Send becomes readings (SenML `n` and `u`).
//!
//! Rules ([`ObjectModel::reading_name`]):
//! - The object part is the object's name in snake case ([`snake_case`]: `Temperature` →
//!   `temperature`, `On/Off switch` → `on_off_switch`), followed by `/{iid}` when the instance id is not 0
//!   (most devices have one instance 0, so the common name stays stable: `/3303/0/5700` →
//!   `temperature`, `/3303/1/5700` → `temperature/1`).
//! - IPSO sensor objects (every object with a Sensor Value resource 5700): the sensor value is
//!   the object part alone (`temperature`). Every other resource, in every object, adds the
//!   resource's name in snake case (`/3/0/9` → `device/battery_level`,
//!   `/3303/0/5601` → `temperature/min_measured_value`).
//! - A resource instance always adds `/{riid}` (`/3/0/7/1` → `device/power_source_voltage/1`);
//!   the sensor value's short form applies only to the resource itself.
//! - Unknown objects and resources fall back to the path without its leading slash
//!   (`3442/0/1`, `3/0/65`).
//! - Names use only `a-z`, `0-9`, `_` and `/` (valid SenML names); a name with no ASCII letter
//!   or digit is replaced by its id.
//!
//! Units: the resource's DDF `Units`, mapped to a SenML symbol by [`senml_unit`]; for a sensor
//! object's value-like resources (5700, 5601–5604) without DDF units, a default per object
//! (3303 `Cel`, 3304 `%RH`, 3316 `V`, 3323 `Pa`, 3301 `lx`; none for 3300 and 3346, whose units
//! only the device knows). A device's own Sensor Units (5701) override the default:
//! [`ReadingName::with_sensor_units`] or [`ObjectModel::reading_name_with_units`].

use super::ObjectModel;
use crate::node::Path;

/// IPSO Sensor Value.
pub const SENSOR_VALUE: u16 = 5700;
/// IPSO Sensor Units (the device's own units of 5700 and its min/max resources).
pub const SENSOR_UNITS: u16 = 5701;
/// Resources measured in the sensor's units: value, min/max measured, min/max range.
const SENSOR_UNIT_RESOURCES: [u16; 5] = [5700, 5601, 5602, 5603, 5604];

/// A reading's normalized name and unit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReadingName {
    /// `temperature`, `temperature/1`, `device/battery_level`, `3442/0/1`.
    pub name: String,
    /// SenML unit symbol (`Cel`), or a unit kept as the DDF or device gave it.
    pub unit: Option<String>,
    /// Whether the instance's Sensor Units (5701), when the device reports it, is this reading's
    /// unit.
    pub sensor_units_apply: bool,
}

impl ReadingName {
    /// This name with the unit the device reported in its Sensor Units resource (5701), when
    /// that resource applies to this reading; an empty report keeps the default.
    pub fn with_sensor_units(mut self, reported: &str) -> ReadingName {
        if !self.sensor_units_apply {
            return self;
        }
        let unit = senml_unit(reported);
        // IPSO devices often report Celsius as "C" (which SenML reserves for coulomb): in an
        // object whose default is Cel, it means Cel.
        let unit = match (unit.as_str(), self.unit.as_deref()) {
            ("", _) => return self,
            ("C", Some("Cel")) => "Cel".to_owned(),
            _ => unit,
        };
        self.unit = Some(unit);
        self
    }
}

impl ObjectModel {
    /// The reading name and unit of a resource or resource instance path (rules in the
    /// [module docs](self)); `None` for paths above a resource (`/3303/0`).
    pub fn reading_name(&self, path: &Path) -> Option<ReadingName> {
        let oid = path.object_id()?;
        let iid = path.instance_id()?;
        let rid = path.resource_id()?;
        let riid = path.resource_instance_id();
        let (Some(object), Some(resource)) = (self.object(oid), self.resource(oid, rid)) else {
            return Some(ReadingName {
                name: path.to_string().trim_start_matches('/').to_owned(),
                unit: None,
                sensor_units_apply: false,
            });
        };
        let is_sensor = self.resource(oid, SENSOR_VALUE).is_some();

        let mut name = name_or_id(&object.name, oid);
        if iid != 0 {
            name.push_str(&format!("/{iid}"));
        }
        if !(is_sensor && rid == SENSOR_VALUE && riid.is_none()) {
            name.push('/');
            name.push_str(&name_or_id(&resource.name, rid));
        }
        if let Some(riid) = riid {
            name.push_str(&format!("/{riid}"));
        }

        let measured = is_sensor && SENSOR_UNIT_RESOURCES.contains(&rid);
        let unit = resource
            .units
            .as_deref()
            .map(senml_unit)
            .filter(|u| !u.is_empty())
            .or_else(|| {
                measured
                    .then(|| default_sensor_unit(oid))
                    .flatten()
                    .map(str::to_owned)
            });
        Some(ReadingName {
            name,
            unit,
            sensor_units_apply: measured && self.resource(oid, SENSOR_UNITS).is_some(),
        })
    }

    /// [`reading_name`](Self::reading_name) with the device's Sensor Units (5701) of that
    /// instance applied when the server knows it.
    pub fn reading_name_with_units(
        &self,
        path: &Path,
        sensor_units: Option<&str>,
    ) -> Option<ReadingName> {
        let name = self.reading_name(path)?;
        Some(match sensor_units {
            Some(u) => name.with_sensor_units(u),
            None => name,
        })
    }
}

/// The unit of an IPSO sensor object's value when neither the DDF nor the device gives one.
fn default_sensor_unit(oid: u16) -> Option<&'static str> {
    Some(match oid {
        3301 => "lx",
        3303 => "Cel",
        3304 => "%RH",
        3316 => "V",
        3323 => "Pa",
        _ => return None,
    })
}

fn name_or_id(name: &str, id: u16) -> String {
    let s = snake_case(name);
    if s.is_empty() { id.to_string() } else { s }
}

/// `Battery Level` → `battery_level`, `On/Off switch` → `on_off_switch`, `LwM2M Server URI` →
/// `lwm2m_server_uri`: ASCII letters lowercased, digits kept, every other character separates
/// words. CamelCase is not split (`PkgName` → `pkgname`): splitting mangles the registry's
/// acronyms (`IoT`, `CoAP`, `QoS`, `pH`) and a predictable rule matters more for stored names.
pub fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for word in name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push('_');
        }
        out.push_str(&word.to_ascii_lowercase());
    }
    out
}

/// SenML unit symbols (RFC 8428 §12.1, RFC 8798 primary and secondary) that pass unchanged,
/// plus `%`, which LwM2M registry files and devices use for percent.
const SENML_UNITS: &[&str] = &[
    "m", "kg", "g", "s", "A", "K", "cd", "mol", "Hz", "rad", "sr", "N", "Pa", "J", "W", "C", "V",
    "F", "Ohm", "S", "Wb", "T", "H", "Cel", "lm", "lx", "Bq", "Gy", "Sv", "kat", "m2", "m3", "l",
    "m/s", "m/s2", "m3/s", "l/s", "W/m2", "cd/m2", "bit", "bit/s", "lat", "lon", "pH", "dB", "dBW",
    "Bspl", "count", "/", "%RH", "%EL", "EL", "1/s", "1/min", "beat/min", "beats", "S/m", "B",
    "VA", "VAs", "var", "vars", "J/m", "kg/m3", "deg", "NTU", "ms", "min", "h", "MHz", "kW", "kVA",
    "kvar", "Ah", "Wh", "kWh", "varh", "kvarh", "kVAh", "Wh/km", "KiB", "GB", "Mbit/s", "B/s",
    "MB/s", "mV", "mA", "dBm", "ug/m3", "mm/h", "m/h", "ppm", "/1000", "hPa", "mm", "cm", "km",
    "km/h", "%",
];

/// Free-text spellings (compared lowercase) and their SenML symbol.
const UNIT_ALIASES: &[(&str, &str)] = &[
    ("°c", "Cel"),
    ("℃", "Cel"),
    ("degc", "Cel"),
    ("deg c", "Cel"),
    ("celsius", "Cel"),
    ("degree celsius", "Cel"),
    ("degrees celsius", "Cel"),
    ("cel", "Cel"),
    ("kelvin", "K"),
    ("/100", "%"),
    ("percent", "%"),
    ("pct", "%"),
    ("rh", "%RH"),
    ("%rh", "%RH"),
    ("% rh", "%RH"),
    ("relative humidity", "%RH"),
    ("volt", "V"),
    ("volts", "V"),
    ("millivolt", "mV"),
    ("millivolts", "mV"),
    ("amp", "A"),
    ("amps", "A"),
    ("ampere", "A"),
    ("amperes", "A"),
    ("milliamp", "mA"),
    ("milliamps", "mA"),
    ("watt", "W"),
    ("watts", "W"),
    ("pascal", "Pa"),
    ("pascals", "Pa"),
    ("hpa", "hPa"),
    ("meter", "m"),
    ("meters", "m"),
    ("metre", "m"),
    ("metres", "m"),
    ("sec", "s"),
    ("secs", "s"),
    ("second", "s"),
    ("seconds", "s"),
    ("msec", "ms"),
    ("millisecond", "ms"),
    ("milliseconds", "ms"),
    ("minute", "min"),
    ("minutes", "min"),
    ("hour", "h"),
    ("hours", "h"),
    ("hertz", "Hz"),
    ("hz", "Hz"),
    ("lux", "lx"),
    ("bpm", "beat/min"),
    ("beats/min", "beat/min"),
    ("beat per minute", "beat/min"),
    ("beats per minute", "beat/min"),
    ("degree", "deg"),
    ("degrees", "deg"),
    ("°", "deg"),
    ("byte", "B"),
    ("bytes", "B"),
    ("db", "dB"),
    ("dbm", "dBm"),
    ("counts", "count"),
    ("ppm", "ppm"),
];

/// A free-text unit as a SenML unit symbol when it is a known spelling (`°C` → `Cel`,
/// `percent` → `%`, `bpm` → `beat/min`); other units are kept as given (trimmed), so `mmHg`
/// stays `mmHg`. The empty string means no unit.
pub fn senml_unit(raw: &str) -> String {
    let raw = raw.trim();
    if SENML_UNITS.contains(&raw) {
        return raw.to_owned();
    }
    let lower = raw.to_lowercase();
    UNIT_ALIASES
        .iter()
        .find(|(alias, _)| *alias == lower)
        .map_or_else(|| raw.to_owned(), |(_, symbol)| (*symbol).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_handles_registry_names() {
        for (name, want) in [
            ("Battery Level", "battery_level"),
            ("On/Off switch", "on_off_switch"),
            ("Temperature", "temperature"),
            ("Generic Sensor", "generic_sensor"),
            ("LWM2M  Server URI", "lwm2m_server_uri"),
            ("LwM2M Server", "lwm2m_server"),
            ("PkgName", "pkgname"),
            ("ExtDevInfo", "extdevinfo"),
            ("SignalSNR", "signalsnr"),
            ("SMCC", "smcc"),
            (
                "Supported NB-IoT Band Information",
                "supported_nb_iot_band_information",
            ),
            ("CoAP Config", "coap_config"),
            ("pH", "ph"),
            ("IP Addresses", "ip_addresses"),
            ("SMS Binding Secret Key(s)", "sms_binding_secret_key_s"),
            ("DTLS/TLS Ciphersuite", "dtls_tls_ciphersuite"),
            ("Bootstrap-Server", "bootstrap_server"),
            ("Multi-state Output", "multi_state_output"),
            ("X Coordinate", "x_coordinate"),
            ("TLS 1.3 Features", "tls_1_3_features"),
            ("SpO2 Level", "spo2_level"),
            ("CO2", "co2"),
            ("Température", "temp_rature"),
            ("√∞", ""),
        ] {
            assert_eq!(snake_case(name), want, "{name}");
        }
    }

    #[test]
    fn units_map_to_senml_symbols_and_keep_unknown_ones() {
        for (raw, want) in [
            ("Cel", "Cel"),
            ("°C", "Cel"),
            (" celsius ", "Cel"),
            ("/100", "%"),
            ("%", "%"),
            ("RH", "%RH"),
            ("%rh", "%RH"),
            ("volts", "V"),
            ("hPa", "hPa"),
            ("Pa", "Pa"),
            ("lux", "lx"),
            ("bpm", "beat/min"),
            ("BPM", "beat/min"),
            ("mmHg", "mmHg"),
            ("mg/dL", "mg/dL"),
            ("C", "C"),
            ("", ""),
        ] {
            assert_eq!(senml_unit(raw), want, "{raw:?}");
        }
    }
}
