//! The CoAP messages of the load generator, built for speed: the options of a device's request
//! are encoded once with coap-lite, and each request only patches the Message ID and token and
//! appends its payload. Responses are classified from the fixed header and the token without
//! building a `Packet`, which keeps the receive path cheap at 100k responses per second.

use coap_lite::{CoapOption, ContentFormat, MessageClass, MessageType, Packet, RequestType};

/// Token length used for every request: the token is the big-endian sequence number.
pub const TOKEN_LEN: usize = 4;

/// Confirmable or non-confirmable requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MsgType {
    /// CON: the answer is piggybacked in the ACK (or an empty ACK then a separate response).
    Con,
    /// NON: the answer is a NON response matched by token.
    Non,
}

/// The part of a request that is the same for every request of one client socket.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    /// Header + token placeholder + options, without payload marker.
    prefix: Vec<u8>,
}

impl RequestTemplate {
    /// POST `path` (slash separated, optionally `?a=b&c=d`: one Uri-Query option per pair) with
    /// the given Content-Format.
    pub fn new(msg_type: MsgType, path: &str, content_format: u16) -> Self {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let mut p = Packet::new();
        p.header.set_version(1);
        p.header.set_type(match msg_type {
            MsgType::Con => MessageType::Confirmable,
            MsgType::Non => MessageType::NonConfirmable,
        });
        p.header.code = MessageClass::Request(RequestType::Post);
        p.set_token(vec![0; TOKEN_LEN]);
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
        }
        for q in query.split('&').filter(|s| !s.is_empty()) {
            p.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
        }
        let cf = match content_format {
            110 => ContentFormat::ApplicationSenmlJSON,
            112 => ContentFormat::ApplicationSenmlCBOR,
            _ => ContentFormat::ApplicationOctetStream,
        };
        p.set_content_format(cf);
        // A request with a few short options always fits the default size limit.
        let prefix = p.to_bytes().unwrap_or_default();
        RequestTemplate { prefix }
    }

    /// Writes the full request datagram into `out`.
    pub fn write(&self, out: &mut Vec<u8>, message_id: u16, token: u32, payload: &[u8]) {
        out.clear();
        out.extend_from_slice(&self.prefix);
        if out.len() >= 4 + TOKEN_LEN {
            out[2..4].copy_from_slice(&message_id.to_be_bytes());
            out[4..4 + TOKEN_LEN].copy_from_slice(&token.to_be_bytes());
        }
        if !payload.is_empty() {
            out.push(0xFF);
            out.extend_from_slice(payload);
        }
    }
}

/// What a datagram from the server means to the load generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// A response (piggybacked ACK, NON, or separate CON/NON) for the request with this token.
    Response {
        /// The request's sequence number.
        token: u32,
        /// Response code class (2, 4, 5).
        class: u8,
        /// Response code detail (e.g. 1 for 2.01).
        detail: u8,
        /// A separate CON response: it must be acknowledged with this Message ID.
        needs_ack: Option<u16>,
    },
    /// An empty ACK: the server will answer separately.
    EmptyAck {
        /// Message ID of the acknowledged request.
        message_id: u16,
    },
    /// A reset, a request, or something unparseable.
    Other,
}

/// Classifies one datagram. Never panics on short or hostile input.
pub fn classify(buf: &[u8]) -> Incoming {
    let [b0, code, mid_hi, mid_lo, rest @ ..] = buf else {
        return Incoming::Other;
    };
    if b0 >> 6 != 1 {
        return Incoming::Other;
    }
    let msg_type = (b0 >> 4) & 0x3;
    let tkl = usize::from(b0 & 0x0F);
    let message_id = u16::from_be_bytes([*mid_hi, *mid_lo]);
    let class = code >> 5;
    let detail = code & 0x1F;
    if *code == 0 {
        return if msg_type == 2 && tkl == 0 {
            Incoming::EmptyAck { message_id }
        } else {
            Incoming::Other
        };
    }
    if !(2..=5).contains(&class) || tkl != TOKEN_LEN {
        return Incoming::Other;
    }
    let Some(tok) = rest.get(..TOKEN_LEN) else {
        return Incoming::Other;
    };
    let token = u32::from_be_bytes([tok[0], tok[1], tok[2], tok[3]]);
    Incoming::Response {
        token,
        class,
        detail,
        needs_ack: (msg_type == 0).then_some(message_id),
    }
}

/// The 4-byte empty ACK for a separate CON response.
pub fn empty_ack(message_id: u16) -> [u8; 4] {
    let [hi, lo] = message_id.to_be_bytes();
    [0x60, 0x00, hi, lo]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_request_round_trips_through_coap_lite() {
        let t = RequestTemplate::new(MsgType::Con, "v1/readings/bench-1", 110);
        let mut out = Vec::new();
        t.write(&mut out, 0xBEEF, 0x0102_0304, b"[{\"n\":\"seq\",\"v\":1}]");
        let p = Packet::from_bytes(&out).expect("request parses");
        assert_eq!(p.header.get_type(), MessageType::Confirmable);
        assert_eq!(p.header.message_id, 0xBEEF);
        assert_eq!(p.get_token(), &[1, 2, 3, 4]);
        assert_eq!(p.header.code, MessageClass::Request(RequestType::Post));
        let path: Vec<String> = p
            .get_option(CoapOption::UriPath)
            .expect("uri path")
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        assert_eq!(path, ["v1", "readings", "bench-1"]);
        assert_eq!(
            p.get_content_format(),
            Some(ContentFormat::ApplicationSenmlJSON)
        );
        assert_eq!(p.payload, b"[{\"n\":\"seq\",\"v\":1}]");
    }

    #[test]
    fn a_query_after_the_path_becomes_uri_query_options() {
        let t = RequestTemplate::new(MsgType::Con, "v1/readings/bed-1?class=alarm&x=1", 110);
        let mut out = Vec::new();
        t.write(&mut out, 1, 1, b"[]");
        let p = Packet::from_bytes(&out).expect("request parses");
        let opt = |o| -> Vec<String> {
            p.get_option(o)
                .expect("option present")
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        };
        assert_eq!(opt(CoapOption::UriPath), ["v1", "readings", "bed-1"]);
        assert_eq!(opt(CoapOption::UriQuery), ["class=alarm", "x=1"]);
    }

    #[test]
    fn piggybacked_created_is_a_response_for_its_token() {
        // ACK, TKL 4, 2.01, MID 0x1234, token 7.
        let ack = [0x64, 0x41, 0x12, 0x34, 0, 0, 0, 7];
        assert_eq!(
            classify(&ack),
            Incoming::Response {
                token: 7,
                class: 2,
                detail: 1,
                needs_ack: None
            }
        );
    }

    #[test]
    fn separate_con_response_must_be_acknowledged() {
        let con = [0x44, 0xA3, 0x00, 0x09, 0, 0, 1, 0];
        assert_eq!(
            classify(&con),
            Incoming::Response {
                token: 256,
                class: 5,
                detail: 3,
                needs_ack: Some(9)
            }
        );
        assert_eq!(empty_ack(9), [0x60, 0, 0, 9]);
    }

    #[test]
    fn empty_ack_and_garbage_are_not_responses() {
        assert_eq!(
            classify(&[0x60, 0, 0, 5]),
            Incoming::EmptyAck { message_id: 5 }
        );
        assert_eq!(classify(&[]), Incoming::Other);
        assert_eq!(
            classify(&[0x64, 0x41, 0, 1, 0]),
            Incoming::Other,
            "truncated token"
        );
        assert_eq!(classify(&[0x70, 0, 0, 1]), Incoming::Other, "reset");
        assert_eq!(classify(&[0xFF; 16]), Incoming::Other);
    }
}
