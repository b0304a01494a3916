//! Keeping the UserSig out of anything the gateway sends back: a gateway
//! that echoes the request URL (whole, cut short or re-encoded) must not
//! get the signature into a status, the state file or a log.

/// The shortest piece of a UserSig that is hidden when found alone. A UserSig
/// is a few hundred characters; 12 of them match ordinary text by chance
/// practically never, and give an attacker nothing a brute force could use.
pub const MIN_REDACTED_FRAGMENT: usize = 12;

/// `text` with every run of at least [`MIN_REDACTED_FRAGMENT`] characters
/// that also occurs in the UserSig, as generated or percent-encoded (`*`
/// as `%2A` or `%2a`, as strict encoders write it), replaced by
/// `<redacted>`. Catches a gateway that echoes the URL, a cut-short copy,
/// or one re-encoded on the way.
pub fn redact_usersig(text: &str, usersig: &str) -> String {
    // Every answer passes through here, most with an empty ErrorInfo or
    // "OK": nothing that short can hold a fragment.
    if text.len() < MIN_REDACTED_FRAGMENT {
        return text.to_string();
    }
    let encode = |upper: bool| -> String {
        const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";
        const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";
        let hex = if upper { HEX_UPPER } else { HEX_LOWER };
        let mut encoded = String::with_capacity(usersig.len() * 3);
        for b in usersig.bytes() {
            if b.is_ascii_alphanumeric() {
                encoded.push(char::from(b));
            } else {
                encoded.push('%');
                encoded.push(char::from(hex[usize::from(b >> 4)]));
                encoded.push(char::from(hex[usize::from(b & 0xf)]));
            }
        }
        encoded
    };
    let (upper, lower) = (encode(true), encode(false));
    let forms = [usersig.as_bytes(), upper.as_bytes(), lower.as_bytes()];
    let bytes = text.as_bytes();
    let mut hidden = vec![false; bytes.len()];
    for form in forms {
        for start in 0..bytes.len() {
            let longest = (0..form.len())
                .map(|from| bytes[start..].iter().zip(&form[from..]).take_while(|(a, b)| a == b).count())
                .max()
                .unwrap_or(0);
            if longest >= MIN_REDACTED_FRAGMENT {
                hidden[start..start + longest].iter_mut().for_each(|h| *h = true);
            }
        }
    }
    if !hidden.contains(&true) {
        return text.to_string();
    }
    // Hidden runs are ASCII (a UserSig and its encoding are), so cutting at
    // their edges keeps every other character whole.
    let mut out = String::with_capacity(text.len());
    let mut in_run = false;
    for (index, ch) in text.char_indices() {
        if hidden[index] {
            if !in_run {
                out.push_str("<redacted>");
            }
            in_run = true;
        } else {
            out.push(ch);
            in_run = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SIG: &str = "eJwtzEELgjAYxvHvsvMQ3W2u*Z7Ds-ZNBCtjKsqhHFPRS-9w*yu*a*vhXqVQ";

    #[test]
    fn a_usersig_is_hidden_whole_cut_short_or_percent_encoded() {
        let encoded = SIG.replace('*', "%2A").replace('-', "%2D");
        for echoed in [SIG.to_string(), SIG[..20].to_string(), SIG[7..40].to_string(), encoded[3..30].to_string()] {
            let text = format!("bad sig usersig={echoed}&random=1 (é)");
            let redacted = redact_usersig(&text, SIG);
            assert!(!redacted.contains(&echoed[..MIN_REDACTED_FRAGMENT]), "{redacted}");
            assert!(redacted.starts_with("bad sig usersig=<redacted>&random=1 (é)"), "{redacted}");
        }
        let unrelated = "group eJw not found: 10010";
        assert_eq!(redact_usersig(unrelated, SIG), unrelated);
        // A text that is nothing but the shortest fragment hidden.
        assert_eq!(redact_usersig(&SIG[5..5 + MIN_REDACTED_FRAGMENT], SIG), "<redacted>");
        assert_eq!(redact_usersig(&SIG[..MIN_REDACTED_FRAGMENT - 1], SIG), &SIG[..MIN_REDACTED_FRAGMENT - 1]);
    }

    proptest! {
        /// Whatever surrounds it, no piece of the UserSig of redactable
        /// length survives, and text without one comes back unchanged.
        #[test]
        fn no_fragment_survives_redaction(
            before in ".{0,40}",
            after in ".{0,40}",
            from in 0usize..40,
            length in MIN_REDACTED_FRAGMENT..30,
        ) {
            let fragment = &SIG[from..(from + length).min(SIG.len())];
            let redacted = redact_usersig(&format!("{before}{fragment}{after}"), SIG);
            if fragment.len() >= MIN_REDACTED_FRAGMENT {
                prop_assert!(!redacted.contains(fragment), "{}", redacted);
            }
            prop_assert_eq!(redact_usersig(&before, "x".repeat(64).as_str()), before.clone());
        }
    }
}
