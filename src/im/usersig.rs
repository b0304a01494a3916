//! UserSig generation and verification (TLSSigAPIv2, HMAC-SHA256).
//!
//! The algorithm follows the official ports (Python, Go, Java, Node, C++):
//! HMAC-SHA256 over a fixed line format, a JSON document holding the MAC,
//! zlib compression, then base64 with `+/=` replaced by `*-_`.
//!
//! Ports differ in JSON key order and zlib level, so verification parses the
//! JSON and recomputes the MAC instead of comparing bytes. The checks run in
//! the Go port's order, so a simulator built on [`verify`] answers with the
//! same ErrorCode the real gateway gives for the same fault.

use std::io::{Read, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use flate2::Compression;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// A decoded UserSig never needs more than a few hundred bytes; the cap keeps
/// a hostile "zip bomb" signature from exhausting memory in the simulator.
const MAX_INFLATED_BYTES: u64 = 16 * 1024;

/// What goes into a signature besides the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigRequest<'a> {
    pub sdkappid: u64,
    pub identifier: &'a str,
    /// Unix seconds at signing (`TLS.time`).
    pub time: u64,
    /// Seconds of validity after `time` (`TLS.expire`).
    pub expire: u64,
    pub userbuf: Option<&'a [u8]>,
}

/// The fields of a decoded UserSig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedUserSig {
    pub version: String,
    pub identifier: String,
    pub sdkappid: u64,
    pub time: u64,
    pub expire: u64,
    pub userbuf: Option<Vec<u8>>,
    /// Standard base64 of the 32-byte MAC, as carried in `TLS.sig`.
    pub sig: String,
}

impl DecodedUserSig {
    /// The last Unix second at which the signature is still valid.
    pub fn valid_until(&self) -> u64 {
        self.time.saturating_add(self.expire)
    }
}

/// Why a UserSig was refused, in the order the reference verifier checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserSigError {
    #[error("usersig is empty")]
    Empty,
    #[error("usersig is malformed: {0}")]
    Malformed(&'static str),
    #[error("usersig was issued for another sdkappid")]
    SdkAppIdMismatch,
    #[error("usersig was issued for another identifier")]
    IdentifierMismatch,
    #[error("usersig expired")]
    Expired,
    #[error("usersig userbuf does not match")]
    UserbufMismatch,
    #[error("usersig signature does not match the secret key")]
    BadSignature,
}

impl UserSigError {
    /// The ErrorCode the IM gateway answers for this fault.
    pub fn error_code(&self) -> i64 {
        match self {
            UserSigError::Empty => 70002,
            UserSigError::Malformed(_) => 70003,
            UserSigError::SdkAppIdMismatch => 70014,
            UserSigError::IdentifierMismatch => 70013,
            UserSigError::Expired => 70001,
            UserSigError::UserbufMismatch | UserSigError::BadSignature => 70009,
        }
    }
}

/// Why a UserSig could not be made. Encoding a document of strings and
/// integers into memory does not fail in practice; if it ever did, the
/// caller says so rather than send an empty signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode a UserSig: {0}")]
pub struct SignError(String);

/// Generates a UserSig the way the official Python port does (same JSON key
/// order and zlib level), so its output is accepted by every verifier.
pub fn generate(secret_key: &str, request: &SigRequest<'_>) -> Result<String, SignError> {
    let userbuf = request.userbuf.map(|buf| STANDARD.encode(buf));
    let sig = mac_base64(secret_key, request, userbuf.as_deref());

    // Field order follows Python's json.dumps of the reference dict.
    #[derive(Serialize)]
    struct Document<'a> {
        #[serde(rename = "TLS.ver")]
        ver: &'a str,
        #[serde(rename = "TLS.identifier")]
        identifier: &'a str,
        #[serde(rename = "TLS.sdkappid")]
        sdkappid: u64,
        #[serde(rename = "TLS.expire")]
        expire: u64,
        #[serde(rename = "TLS.time")]
        time: u64,
        #[serde(rename = "TLS.userbuf", skip_serializing_if = "Option::is_none")]
        userbuf: Option<&'a str>,
        #[serde(rename = "TLS.sig")]
        sig: &'a str,
    }
    let document = Document {
        ver: "2.0",
        identifier: request.identifier,
        sdkappid: request.sdkappid,
        expire: request.expire,
        time: request.time,
        userbuf: userbuf.as_deref(),
        sig: &sig,
    };
    let json = serde_json::to_vec(&document).map_err(|e| SignError(e.to_string()))?;
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(&json).map_err(|e| SignError(e.to_string()))?;
    let compressed = encoder.finish().map_err(|e| SignError(e.to_string()))?;
    Ok(to_url_alphabet(&STANDARD.encode(compressed)))
}

/// Decodes a UserSig without checking it: url-base64, zlib, JSON.
pub fn decode(usersig: &str) -> Result<DecodedUserSig, UserSigError> {
    if usersig.is_empty() {
        return Err(UserSigError::Empty);
    }
    let compressed =
        STANDARD.decode(from_url_alphabet(usersig.trim())).map_err(|_| UserSigError::Malformed("not url-base64"))?;
    let mut json = Vec::new();
    ZlibDecoder::new(compressed.as_slice())
        .take(MAX_INFLATED_BYTES)
        .read_to_end(&mut json)
        .map_err(|_| UserSigError::Malformed("not zlib data"))?;
    let value: serde_json::Value = serde_json::from_slice(&json).map_err(|_| UserSigError::Malformed("not JSON"))?;
    let object = value.as_object().ok_or(UserSigError::Malformed("not a JSON object"))?;

    let text = |key: &'static str| -> Result<String, UserSigError> {
        object.get(key).and_then(|v| v.as_str()).map(str::to_owned).ok_or(UserSigError::Malformed(key))
    };
    // Ports write the numbers as JSON numbers; accept numeric strings too.
    let number = |key: &'static str| -> Result<u64, UserSigError> {
        match object.get(key) {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.parse().ok(),
            _ => None,
        }
        .ok_or(UserSigError::Malformed(key))
    };
    let userbuf = match object.get("TLS.userbuf") {
        None => None,
        Some(serde_json::Value::String(s)) => {
            Some(STANDARD.decode(s).map_err(|_| UserSigError::Malformed("TLS.userbuf"))?)
        }
        Some(_) => return Err(UserSigError::Malformed("TLS.userbuf")),
    };
    Ok(DecodedUserSig {
        version: text("TLS.ver")?,
        identifier: text("TLS.identifier")?,
        sdkappid: number("TLS.sdkappid")?,
        time: number("TLS.time")?,
        expire: number("TLS.expire")?,
        userbuf,
        sig: text("TLS.sig")?,
    })
}

/// What a verifier expects of a UserSig.
#[derive(Debug, Clone, Copy)]
pub struct Expectation<'a> {
    pub sdkappid: u64,
    pub identifier: &'a str,
    /// The userbuf the signature must carry; `None` accepts any.
    pub userbuf: Option<&'a [u8]>,
    /// Unix seconds now.
    pub now: u64,
}

/// Verifies a UserSig against the secret key, in the reference order:
/// decode, sdkappid, identifier, expiry, userbuf, then the MAC.
pub fn verify(secret_key: &str, usersig: &str, expected: &Expectation<'_>) -> Result<DecodedUserSig, UserSigError> {
    let decoded = decode(usersig)?;
    if decoded.sdkappid != expected.sdkappid {
        return Err(UserSigError::SdkAppIdMismatch);
    }
    if decoded.identifier != expected.identifier {
        return Err(UserSigError::IdentifierMismatch);
    }
    // Valid through `time + expire` inclusive, as in the Go port.
    if expected.now > decoded.valid_until() {
        return Err(UserSigError::Expired);
    }
    if let Some(wanted) = expected.userbuf
        && decoded.userbuf.as_deref() != Some(wanted)
    {
        return Err(UserSigError::UserbufMismatch);
    }
    let carried_mac = STANDARD.decode(&decoded.sig).map_err(|_| UserSigError::Malformed("TLS.sig"))?;
    let userbuf = decoded.userbuf.as_ref().map(|buf| STANDARD.encode(buf));
    let request = SigRequest {
        sdkappid: decoded.sdkappid,
        identifier: &decoded.identifier,
        time: decoded.time,
        expire: decoded.expire,
        userbuf: None,
    };
    signing_mac(secret_key, &request, userbuf.as_deref())
        .verify_slice(&carried_mac)
        .map_err(|_| UserSigError::BadSignature)?;
    Ok(decoded)
}

/// The exact text the MAC covers. Note `time` precedes `expire` here, whatever
/// order the JSON document uses.
pub fn signed_text(request: &SigRequest<'_>, userbuf_base64: Option<&str>) -> String {
    let mut text = format!(
        "TLS.identifier:{}\nTLS.sdkappid:{}\nTLS.time:{}\nTLS.expire:{}\n",
        request.identifier, request.sdkappid, request.time, request.expire
    );
    if let Some(userbuf) = userbuf_base64 {
        text.push_str("TLS.userbuf:");
        text.push_str(userbuf);
        text.push('\n');
    }
    text
}

fn signing_mac(secret_key: &str, request: &SigRequest<'_>, userbuf_base64: Option<&str>) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret_key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(signed_text(request, userbuf_base64).as_bytes());
    mac
}

fn mac_base64(secret_key: &str, request: &SigRequest<'_>, userbuf_base64: Option<&str>) -> String {
    STANDARD.encode(signing_mac(secret_key, request, userbuf_base64).finalize().into_bytes())
}

fn to_url_alphabet(base64: &str) -> String {
    base64
        .chars()
        .map(|c| match c {
            '+' => '*',
            '/' => '-',
            '=' => '_',
            other => other,
        })
        .collect()
}

fn from_url_alphabet(usersig: &str) -> String {
    usersig
        .chars()
        .map(|c| match c {
            '*' => '+',
            '-' => '/',
            '_' => '=',
            other => other,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Official vectors from the fact sheet (tls-sig-api-v2 1.1, time pinned).
    const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
    const SDKAPPID: u64 = 1_400_000_000;
    const TIME: u64 = 1_700_000_000;
    const EXPIRE: u64 = 15_552_000;
    const VECTOR_A: &str = "eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIkElNyM-NgUsUp2YkFBZkpQAlDEwMogMqlVhRkFqWCZExNTY0Q4iWZuWBRczT1xZnpIPONk7NC8vz107199LXdIryCHF2cvQ3DjJNzvMsqzapMfSNz8yxd-SKKw7M9bZVqAWFSMd8_";
    const VECTOR_B: &str = "eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIkElNyM-NgUsUp2YkFBZkpQAlDEwMogMqlVhRkFqWCZExNTY0Q4iWZuWBRczT1pcWpRUmlaSA7IsO9suBWZKaDhEzd9COickuDgkqyLD2cDAyKg0sM8-OzC5wMiiwjM0ID8vKzPC2r9PMKjF1tlWoBNA85MA__";
    const VECTOR_C: &str = "eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIkElNyM-NgUsUp2YkFBZkpQAlDEwMogMqlVhRkFqWCZExNTY0Q4iWZuWBRczT1pcWpRUmlaSA7tPX1tR0dbW3h1mSmg4T9DPPKzU1DHDN9zctzPBLdQoL8XXxKPMpcnMvMTCvKzD0NtLPNnctNDXIdbZVqAdK1OKU_";

    fn expect(now: u64, userbuf: Option<&[u8]>) -> Expectation<'_> {
        Expectation { sdkappid: SDKAPPID, identifier: "admin", userbuf, now }
    }

    fn request(userbuf: Option<&[u8]>) -> SigRequest<'_> {
        SigRequest { sdkappid: SDKAPPID, identifier: "admin", time: TIME, expire: EXPIRE, userbuf }
    }

    /// Vector A decodes to the documented JSON and verifies with the key.
    #[test]
    fn official_vector_a_decodes_and_verifies() {
        let decoded = verify(KEY, VECTOR_A, &expect(TIME, None)).expect("vector A verifies");
        assert_eq!(decoded.version, "2.0");
        assert_eq!(decoded.sig, "3cjTnO/gKL/+FXJRADCK1V3clKvy6z5MYmn9ENXsWkI=");
        assert_eq!(decoded.userbuf, None);
        assert_eq!(
            signed_text(&request(None), None),
            "TLS.identifier:admin\nTLS.sdkappid:1400000000\nTLS.time:1700000000\nTLS.expire:15552000\n"
        );
    }

    #[test]
    fn official_vector_b_carries_userbuf_abc() {
        let decoded = verify(KEY, VECTOR_B, &expect(TIME, Some(b"abc"))).expect("vector B verifies");
        assert_eq!(decoded.userbuf.as_deref(), Some(&b"abc"[..]));
        assert_eq!(decoded.sig, "5F/XZmuRRtj9HB00sSt1ookpB0r9YhUPnojI9z/np3E=");
    }

    /// Vector C's userbuf base64 contains `+`, `/` and `=`, which must survive
    /// the outer alphabet swap untouched.
    #[test]
    fn official_vector_c_keeps_inner_base64_alphabet() {
        let userbuf = [0xfb, 0xff, 0xfe, 0x00];
        let decoded = verify(KEY, VECTOR_C, &expect(TIME, Some(&userbuf))).expect("vector C verifies");
        assert_eq!(decoded.userbuf.as_deref(), Some(&userbuf[..]));
        assert_eq!(decoded.sig, "N1nw75TAiM7wlHaFTRODLtHvDCv65xv7I0+k7Cw50mA=");
    }

    /// Our generator must produce the same MAC and fields as the reference
    /// port; the compressed bytes may differ (zlib implementations differ).
    #[test]
    fn generated_signatures_match_the_official_vectors_field_for_field() {
        for (vector, userbuf) in
            [(VECTOR_A, None), (VECTOR_B, Some(&b"abc"[..])), (VECTOR_C, Some(&[0xfb, 0xff, 0xfe, 0x00][..]))]
        {
            let ours = decode(&generate(KEY, &request(userbuf)).unwrap()).expect("ours decodes");
            let official = decode(vector).expect("vector decodes");
            assert_eq!(ours, official);
        }
    }

    #[test]
    fn vectors_are_valid_through_time_plus_expire_and_not_a_second_longer() {
        assert!(verify(KEY, VECTOR_A, &expect(TIME + EXPIRE, None)).is_ok());
        assert_eq!(verify(KEY, VECTOR_A, &expect(TIME + EXPIRE + 1, None)), Err(UserSigError::Expired));
    }

    #[test]
    fn each_mismatch_maps_to_the_gateway_error_code() {
        let wrong_key = verify("not-the-key", VECTOR_A, &expect(TIME, None)).unwrap_err();
        assert_eq!(wrong_key.error_code(), 70009);
        let other_app = Expectation { sdkappid: 1_400_000_001, ..expect(TIME, None) };
        assert_eq!(verify(KEY, VECTOR_A, &other_app).unwrap_err().error_code(), 70014);
        let other_id = Expectation { identifier: "bob", ..expect(TIME, None) };
        assert_eq!(verify(KEY, VECTOR_A, &other_id).unwrap_err().error_code(), 70013);
        assert_eq!(verify(KEY, "", &expect(TIME, None)).unwrap_err().error_code(), 70002);
        let truncated = &VECTOR_A[..VECTOR_A.len() / 2];
        assert_eq!(verify(KEY, truncated, &expect(TIME, None)).unwrap_err().error_code(), 70003);
        let wrong_buf = verify(KEY, VECTOR_B, &expect(TIME, Some(b"abd"))).unwrap_err();
        assert_eq!(wrong_buf.error_code(), 70009);
    }

    /// A compact JSON with another key order and zlib level 0 (as the Go port
    /// writes it) must verify too: verifiers compare meaning, not bytes.
    #[test]
    fn other_ports_json_order_and_compression_level_verify() {
        let sig = mac_base64(KEY, &request(None), None);
        let json = format!(
            "{{\"TLS.ver\":\"2.0\",\"TLS.sdkappid\":{SDKAPPID},\"TLS.identifier\":\"admin\",\"TLS.time\":{TIME},\"TLS.expire\":{EXPIRE},\"TLS.sig\":\"{sig}\"}}\n"
        );
        let mut encoder = ZlibEncoder::new(Vec::new(), Compression::none());
        encoder.write_all(json.as_bytes()).unwrap();
        let usersig = to_url_alphabet(&STANDARD.encode(encoder.finish().unwrap()));
        assert!(verify(KEY, &usersig, &expect(TIME, None)).is_ok());
    }

    proptest! {
        /// Whatever we sign verifies with the same key and fails with another.
        #[test]
        fn generated_signatures_round_trip(
            identifier in "[ -~]{1,32}",
            sdkappid in 1u64..=u32::MAX as u64,
            time in 0u64..4_000_000_000,
            expire in 1u64..=400 * 86400,
            userbuf in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
            key in "[0-9a-f]{64}",
        ) {
            let req = SigRequest { sdkappid, identifier: &identifier, time, expire, userbuf: userbuf.as_deref() };
            let usersig = generate(&key, &req).unwrap();
            prop_assert!(usersig.chars().all(|c| c.is_ascii_alphanumeric() || "*-_".contains(c)));
            let want = Expectation { sdkappid, identifier: &identifier, userbuf: userbuf.as_deref(), now: time };
            prop_assert!(verify(&key, &usersig, &want).is_ok());
            let other_key = format!("{key}x");
            prop_assert_eq!(verify(&other_key, &usersig, &want), Err(UserSigError::BadSignature));
        }

        /// Arbitrary input never panics the decoder.
        #[test]
        fn decoding_arbitrary_text_never_panics(text in ".{0,300}") {
            let _ = decode(&text);
        }
    }
}
