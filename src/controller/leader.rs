//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go does it,
//! so that with several replicas exactly one makes IM calls and writes status.
//!
//! Every `retry_period` each candidate reads the Lease. It takes the Lease
//! when it is free or has expired, and the leader renews it, both with a
//! `resourceVersion` precondition: of two candidates racing, the API server
//! lets one write and answers 409 to the other. A Lease expires
//! `leaseDurationSeconds` after a candidate *saw* its record last change
//! (its own clock, never the holder's, so clock skew between nodes does not
//! matter).
//!
//! A leader steps down as soon as it has not renewed for `renew_deadline`
//! (shorter than the lease duration): it stops starting calls while the
//! Lease is still its own, so a standby, which must wait out the whole
//! duration, never calls in the same second. On shutdown the leader hands
//! the Lease back (empty holder), so a standby takes over at its next retry
//! rather than after the whole duration.
//!
//! (kube-lease-manager was the other option. Its watch loop logs renewal
//! errors and retries without ever reporting the lock lost, so a leader cut
//! off from the API server would keep calling while a standby takes over.)

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

/// Where the Lease is and how it is held.
#[derive(Debug, Clone)]
pub struct ElectionConfig {
    pub lease_name: String,
    pub namespace: String,
    /// This candidate's name in `holderIdentity`.
    pub identity: String,
    /// How long a Lease not renewed stays another candidate's.
    pub lease_duration: Duration,
    /// The leader steps down when it has not renewed for this long.
    pub renew_deadline: Duration,
    /// How often candidates try, and the leader renews.
    pub retry_period: Duration,
}

impl ElectionConfig {
    /// client-go's defaults: 15 s, 10 s, 2 s.
    pub fn new(lease_name: &str, namespace: &str, identity: &str) -> Self {
        Self {
            lease_name: lease_name.to_string(),
            namespace: namespace.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// The part of a Lease the election reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub holder: String,
    pub renew_time: Option<String>,
    pub duration: Duration,
}

impl Record {
    fn of(lease: &Lease) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        Self {
            holder: spec.holder_identity.unwrap_or_default(),
            renew_time: spec.renew_time.map(|t| t.0.to_string()),
            duration: Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64),
        }
    }
}

/// What a candidate does after reading the Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Write the Lease with us as holder (take it or renew it).
    Claim,
    /// Another candidate holds a Lease that has not expired.
    Wait,
}

/// Pure: what `me` does with `record`, which was last seen to change at
/// `observed`. Free (empty holder), ours, or expired by our own clock:
/// claim it.
pub fn decide(record: &Record, me: &str, observed: Instant, now: Instant) -> Step {
    let free = record.holder.is_empty();
    let ours = record.holder == me;
    let expired = now >= observed + record.duration;
    if free || ours || expired { Step::Claim } else { Step::Wait }
}

/// Runs the election until `release` turns true; publishes whether this
/// candidate leads on the returned channel, and calls `on_round` with
/// whether each round reached the API server. When released, hands the
/// Lease back if it holds it. The caller releases only once its work has
/// drained, so the Lease stays its own (renewed) meanwhile.
pub fn spawn(
    client: Client,
    config: ElectionConfig,
    mut release: watch::Receiver<bool>,
    on_round: impl Fn(bool) + Send + 'static,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (leading_tx, leading) = watch::channel(false);
    let task = tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &config.namespace);
        let mut observed: Option<(Record, Instant)> = None;
        let mut last_renewal: Option<Instant> = None;
        let mut last_problem = String::new();
        loop {
            let now = Instant::now();
            // A leader's round may not outlast its deadline: a hung request
            // must not keep it leading while a standby takes over.
            let budget = match last_renewal {
                Some(at) => (at + config.renew_deadline).saturating_duration_since(now),
                None => config.renew_deadline,
            };
            let round = tokio::time::timeout(budget, try_claim(&api, &config, &mut observed, now)).await;
            let problem = match round {
                Ok(Ok(true)) => {
                    last_renewal = Some(now);
                    None
                }
                Ok(Ok(false)) => {
                    last_renewal = None;
                    None
                }
                Ok(Err(error)) => Some(crate::error_chain(&error)),
                Err(_) => Some(format!("no answer within {budget:?}")),
            };
            on_round(problem.is_none());
            match problem {
                Some(problem) if problem != last_problem => {
                    warn!(lease = %config.lease_name, namespace = %config.namespace, %problem, "Cannot read or write the leader Lease");
                    last_problem = problem;
                }
                Some(_) => {}
                None => last_problem.clear(),
            }
            // Leading means: renewed within the deadline.
            let leads = last_renewal.is_some_and(|at| Instant::now() < at + config.renew_deadline);
            if leads != *leading_tx.borrow() {
                if leads {
                    info!(lease = %config.lease_name, identity = %config.identity, "Became the leader");
                } else {
                    warn!(lease = %config.lease_name, identity = %config.identity, "Not the leader any more: stopped making calls");
                }
                leading_tx.send_replace(leads);
            }
            if !leads {
                last_renewal = None;
            }
            // Wake at the next retry, or at the deadline if that comes first.
            let next = Instant::now() + config.retry_period;
            let deadline = last_renewal.map(|at| at + config.renew_deadline).unwrap_or(next);
            tokio::select! {
                _ = release.wait_for(|stop| *stop) => break,
                () = tokio::time::sleep_until(next.min(deadline)) => {}
            }
        }
        if *leading_tx.borrow() {
            leading_tx.send_replace(false);
            match tokio::time::timeout(config.retry_period, release_lease(&api, &config)).await {
                Ok(Ok(())) => info!(lease = %config.lease_name, "Handed the Lease back"),
                _ => warn!("Could not hand the Lease back; a standby takes over when it expires"),
            }
        }
    });
    (leading, task)
}

/// One round: read the Lease (create it if missing), and claim it when
/// [`decide`] says so. Ok(true) when we hold it now.
async fn try_claim(
    api: &Api<Lease>,
    config: &ElectionConfig,
    observed: &mut Option<(Record, Instant)>,
    now: Instant,
) -> Result<bool, kube::Error> {
    let Some(lease) = api.get_opt(&config.lease_name).await? else {
        let lease = Lease {
            metadata: ObjectMeta { name: Some(config.lease_name.clone()), ..Default::default() },
            spec: Some(claimed_spec(None, config)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        };
    };
    let record = Record::of(&lease);
    if observed.as_ref().is_none_or(|(seen, _)| *seen != record) {
        *observed = Some((record.clone(), now));
    }
    let since = observed.as_ref().map_or(now, |(_, at)| *at);
    if decide(&record, &config.identity, since, now) == Step::Wait {
        return Ok(false);
    }
    let mut claimed = lease.clone();
    claimed.spec = Some(claimed_spec(lease.spec.as_ref(), config));
    // The resourceVersion read above is the precondition: a candidate that
    // wrote in between wins, and we get 409.
    match api.replace(&config.lease_name, &PostParams::default(), &claimed).await {
        Ok(written) => {
            *observed = Some((Record::of(&written), now));
            Ok(true)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

/// The spec with us as holder, renewed now; acquired now unless we held it.
fn claimed_spec(current: Option<&LeaseSpec>, config: &ElectionConfig) -> LeaseSpec {
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let held = current.is_some_and(|spec| spec.holder_identity.as_deref() == Some(config.identity.as_str()));
    let transitions = current.and_then(|spec| spec.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        // Rounded up: a Lease shorter than configured could expire before
        // the leader's renew deadline.
        lease_duration_seconds: Some(whole_seconds_up(config.lease_duration)),
        acquire_time: if held { current.and_then(|spec| spec.acquire_time.clone()) } else { Some(now.clone()) },
        renew_time: Some(now),
        lease_transitions: Some(if held { transitions } else { transitions.saturating_add(1) }),
        ..Default::default()
    }
}

fn whole_seconds_up(duration: Duration) -> i32 {
    let seconds = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    seconds.min(i32::MAX as u64) as i32
}

/// Hands the Lease back: empty holder, duration 1 s (client-go's release).
async fn release_lease(api: &Api<Lease>, config: &ElectionConfig) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(&config.lease_name).await? else { return Ok(()) };
    let Some(spec) = lease.spec.as_mut() else { return Ok(()) };
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
    api.replace(&config.lease_name, &PostParams::default(), &lease).await.map(|_| ())
}

/// The operator's own namespace, for its Lease: `POD_NAMESPACE` (the chart
/// sets it), else the service account's namespace file, else `fallback`
/// (the kubeconfig context's namespace).
pub fn own_namespace(fallback: &str) -> String {
    const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
    if let Ok(namespace) = std::env::var("POD_NAMESPACE")
        && !namespace.trim().is_empty()
    {
        return namespace.trim().to_string();
    }
    // A tiny file; bounded anyway.
    let from_file = std::fs::File::open(SERVICE_ACCOUNT_NAMESPACE).ok().and_then(|file| {
        use std::io::Read;
        let mut text = String::new();
        file.take(256).read_to_string(&mut text).ok()?;
        Some(text.trim().to_string()).filter(|t| !t.is_empty())
    });
    from_file.unwrap_or_else(|| fallback.to_string())
}

/// This candidate's identity: `POD_NAME`, else the host name with a random
/// suffix, so two processes on one host (a laptop, a test) never share one.
pub fn own_identity() -> String {
    if let Ok(name) = std::env::var("POD_NAME")
        && !name.trim().is_empty()
    {
        return name.trim().to_string();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().chars().take(200).collect::<String>())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "groupban-operator".to_string());
    format!("{host}_{:08x}", rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(holder: &str, seconds: u64) -> Record {
        Record { holder: holder.into(), renew_time: Some("t".into()), duration: Duration::from_secs(seconds) }
    }

    #[test]
    fn free_own_and_expired_leases_are_claimed_others_waited_for() {
        let seen = Instant::now();
        assert_eq!(decide(&record("", 15), "me", seen, seen), Step::Claim);
        assert_eq!(decide(&record("me", 15), "me", seen, seen), Step::Claim);
        assert_eq!(decide(&record("other", 15), "me", seen, seen + Duration::from_secs(14)), Step::Wait);
        assert_eq!(decide(&record("other", 15), "me", seen, seen + Duration::from_secs(15)), Step::Claim);
    }

    proptest! {
        /// Another holder's Lease is never claimed before its whole
        /// duration has passed on our own clock since we saw it change.
        #[test]
        fn another_holders_lease_is_claimed_only_once_expired(
            duration in 1u64..120,
            elapsed_ms in 0u64..200_000,
        ) {
            let seen = Instant::now();
            let now = seen + Duration::from_millis(elapsed_ms);
            let step = decide(&record("other", duration), "me", seen, now);
            prop_assert_eq!(step == Step::Claim, elapsed_ms >= duration * 1000);
        }
    }

    #[test]
    fn a_claim_keeps_acquire_time_only_when_we_held_it() {
        let config = ElectionConfig::new("l", "ns", "me");
        let theirs = LeaseSpec {
            holder_identity: Some("other".into()),
            lease_transitions: Some(3),
            acquire_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
            ..Default::default()
        };
        let taken = claimed_spec(Some(&theirs), &config);
        assert_eq!(taken.holder_identity.as_deref(), Some("me"));
        assert_eq!(taken.lease_transitions, Some(4));
        assert_ne!(taken.acquire_time, theirs.acquire_time);
        assert!(taken.acquire_time.is_some() && taken.renew_time.is_some(), "taken now, renewed now");
        let renewed = claimed_spec(Some(&taken), &config);
        assert!(renewed.renew_time.is_some() && renewed.renew_time >= taken.renew_time);
        assert_eq!(renewed.lease_transitions, Some(4));
        assert_eq!(renewed.acquire_time, taken.acquire_time);
        assert_eq!(renewed.lease_duration_seconds, Some(15));
        let odd = ElectionConfig { lease_duration: Duration::from_millis(10_200), ..config };
        assert_eq!(claimed_spec(None, &odd).lease_duration_seconds, Some(11), "never shorter than configured");
    }
}
