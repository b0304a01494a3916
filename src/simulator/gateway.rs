//! The REST gateway's checks on the query string, in the order the real
//! gateway applies them: the app, then (after the rate limit, which the
//! server applies between the two) the UserSig and the admin identifier.

use std::collections::HashMap;

use super::groups::ServiceAnswer;
use crate::im::usersig::{self, Expectation};
use crate::secret::Redacted;

/// The one app the simulator serves.
#[derive(Debug, Clone)]
pub struct AppIdentity {
    pub sdkappid: u64,
    /// The App admin account.
    pub identifier: String,
    pub secret_key: Redacted<String>,
}

/// Percent-decoded query parameters; the first of a repeated name wins.
/// Real clients percent-encode `*` in the UserSig (`%2A`), others don't.
pub fn parse_query(raw: Option<&str>) -> HashMap<String, String> {
    let mut params = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        params.entry(name.into_owned()).or_insert_with(|| value.into_owned());
    }
    params
}

/// `sdkappid`, `contenttype` and `random`: 60012, 60006 and 60002.
pub fn check_app(params: &HashMap<String, String>, app: &AppIdentity) -> Result<(), ServiceAnswer> {
    let Some(sdkappid) = params.get("sdkappid") else {
        return Err(ServiceAnswer::error(60012, "sdkappid is required in the URL"));
    };
    if sdkappid.parse::<u64>().ok() != Some(app.sdkappid) {
        return Err(ServiceAnswer::error(60006, format!("invalid sdkappid {sdkappid:?}")));
    }
    match params.get("contenttype").map(String::as_str) {
        Some("json") => {}
        _ => {
            return Err(ServiceAnswer::error(60002, "contenttype=json is required in the URL"));
        }
    }
    // `random` must be a u32; repeating one is fine (one real client does).
    if params.get("random").and_then(|r| r.parse::<u32>().ok()).is_none() {
        return Err(ServiceAnswer::error(60002, "random must be an unsigned 32-bit integer"));
    }
    Ok(())
}

/// `identifier` and `usersig`: 60004, the 700xx signature codes, then 60010
/// when a validly signed identifier is not the App admin. Returns the last
/// second the signature stays valid.
fn check_auth(params: &HashMap<String, String>, app: &AppIdentity, now: u64) -> Result<u64, ServiceAnswer> {
    let Some(identifier) = params.get("identifier").filter(|i| !i.is_empty()) else {
        return Err(ServiceAnswer::error(60004, "identifier is required in the URL"));
    };
    let usersig = params.get("usersig").map(String::as_str).unwrap_or_default();
    let expected = Expectation { sdkappid: app.sdkappid, identifier, userbuf: None, now };
    let decoded = usersig::verify(app.secret_key.expose(), usersig, &expected)
        .map_err(|error| ServiceAnswer::error(error.error_code(), error.to_string()))?;
    if *identifier != app.identifier {
        return Err(ServiceAnswer::error(60010, format!("identifier {identifier:?} is not an App admin")));
    }
    Ok(decoded.valid_until())
}

/// Admin UserSigs that passed [`check_auth`], with the last second each stays
/// valid. A client signs once and reuses the signature for every call, so
/// verifying it again (base64, inflate, JSON, HMAC) on each of 50,000 calls
/// is wasted work; the answer for a remembered signature is the one a full
/// check gives, expiry included. The app (and so the key) never changes
/// while the simulator runs.
#[derive(Debug, Default)]
pub struct VerifiedSigs {
    valid_until: HashMap<String, u64>,
}

impl VerifiedSigs {
    /// Signatures remembered at most; past it the memory starts over.
    const CAPACITY: usize = 256;

    /// The answer [`check_auth`] gives, remembered for admin signatures.
    pub fn check(
        &mut self,
        params: &HashMap<String, String>,
        app: &AppIdentity,
        now: u64,
    ) -> Result<(), ServiceAnswer> {
        let usersig = params.get("usersig").map(String::as_str).unwrap_or_default();
        let is_admin = params.get("identifier").is_some_and(|i| *i == app.identifier);
        if is_admin && self.valid_until.get(usersig).is_some_and(|until| now <= *until) {
            return Ok(());
        }
        let until = check_auth(params, app, now)?;
        if self.valid_until.len() >= Self::CAPACITY {
            self.valid_until.clear();
        }
        self.valid_until.insert(usersig.to_string(), until);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::im::usersig::{SigRequest, generate};

    const NOW: u64 = 1_700_000_000;

    fn app() -> AppIdentity {
        AppIdentity { sdkappid: 1400000000, identifier: "admin".into(), secret_key: Redacted::new("key".into()) }
    }

    fn query_for(identifier: &str, key: &str, time: u64) -> String {
        let sig =
            generate(key, &SigRequest { sdkappid: 1400000000, identifier, time, expire: 60, userbuf: None }).unwrap();
        format!("sdkappid=1400000000&identifier={identifier}&usersig={sig}&random=7&contenttype=json")
    }

    fn check(query: &str) -> Result<(), i64> {
        let params = parse_query(Some(query));
        check_app(&params, &app()).and_then(|_| VerifiedSigs::default().check(&params, &app(), NOW)).map_err(|a| a.code)
    }

    #[test]
    fn a_well_formed_admin_call_passes() {
        assert_eq!(check(&query_for("admin", "key", NOW)), Ok(()));
    }

    /// One real client sends `*` as `%2A`; the gateway must decode it.
    #[test]
    fn percent_encoded_usersig_is_decoded() {
        let query = query_for("admin", "key", NOW).replace('*', "%2A");
        assert_eq!(check(&query), Ok(()));
    }

    #[test]
    fn each_query_fault_gets_its_code() {
        assert_eq!(check("identifier=admin&random=1&contenttype=json"), Err(60012));
        assert_eq!(check(&query_for("admin", "key", NOW).replace("1400000000&", "1400000001&")), Err(60006));
        assert_eq!(check(&query_for("admin", "key", NOW).replace("contenttype=json", "contenttype=xml")), Err(60002));
        assert_eq!(check(&query_for("admin", "key", NOW).replace("random=7", "random=-1")), Err(60002));
        assert_eq!(check(&query_for("admin", "wrong", NOW)), Err(70009));
        assert_eq!(check(&query_for("admin", "key", NOW - 61)), Err(70001));
        assert_eq!(check(&query_for("bob", "key", NOW)), Err(60010));
        assert_eq!(check("sdkappid=1400000000&identifier=admin&usersig=&random=1&contenttype=json"), Err(70002));
        assert_eq!(check("sdkappid=1400000000&identifier=admin&usersig=garbage&random=1&contenttype=json"), Err(70003));
        let mismatch = query_for("bob", "key", NOW).replace("identifier=bob", "identifier=admin");
        assert_eq!(check(&mismatch), Err(70013));
    }

    /// A remembered signature answers as a full check would: it still
    /// expires, it still belongs to the admin alone, and remembering one
    /// signature vouches for no other.
    #[test]
    fn remembered_signatures_answer_as_a_full_check() {
        let mut sigs = VerifiedSigs::default();
        let mut check_at =
            |query: &str, now: u64| sigs.check(&parse_query(Some(query)), &app(), now).map_err(|a| a.code);
        let good = query_for("admin", "key", NOW);
        assert_eq!(check_at(&good, NOW), Ok(()));
        assert_eq!(check_at(&good, NOW + 60), Ok(()));
        assert_eq!(check_at(&good, NOW + 61), Err(70001));
        assert_eq!(check_at(&good.replace("identifier=admin", "identifier=bob"), NOW), Err(70013));
        assert_eq!(check_at(&query_for("admin", "wrong", NOW), NOW), Err(70009));
        // Past its capacity the memory starts over and stays right.
        for time in 0..VerifiedSigs::CAPACITY as u64 + 5 {
            assert_eq!(check_at(&query_for("admin", "key", NOW + time), NOW + time), Ok(()));
        }
        assert_eq!(check_at(&good, NOW + 61), Err(70001));
        assert!(sigs.valid_until.len() <= VerifiedSigs::CAPACITY);
    }
}
